/*
 * cli_admin.c - the admin command line. Each command opens the store, does
 * one thing in it, and prints what a script needs: the new key, the new
 * agent ids, one line per listed item.
 */
#include "cli_admin.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "clock.h"
#include "keys.h"
#include "provider.h"
#include "providers_file.h"
#include "store.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define IMPORT_MAX_BYTES (16 * 1024 * 1024)

void cli_admin_print_usage(void)
{
    fprintf(stderr,
            "usage: pushaid [--db PATH] admin COMMAND\n"
            "\n"
            "commands:\n"
            "  org create SLUG [--name NAME]\n"
            "  key create --org SLUG [--label TEXT]       prints the new key (shown only this once)\n"
            "  key list --org SLUG                        KEY_ID, active|revoked, created, label\n"
            "  key regenerate KEY_ID_OR_KEY               prints the new key; the old one stops working\n"
            "  key revoke KEY_ID_OR_KEY\n"
            "  agent import --org SLUG FILE [--provider NAME] [--model NAME] [--providers FILE]\n"
            "                                             FILE is JSON (- for stdin); prints one id per line;\n"
            "                                             --providers (default $PUSHAI_PROVIDERS) names the\n"
            "                                             named-providers file whose names agents may use\n"
            "  agent list --org SLUG                      ID, published|draft, name\n"
            "  agent publish AGENT_ID\n"
            "  agent unpublish AGENT_ID\n");
}

/* Flags of the form --name VALUE after the positional words. */
typedef struct {
    const char *org;
    const char *name;
    const char *label;
    const char *provider;
    const char *model;
    const char *providers; /* named-providers file */
    const char *positional[2];
    int n_positional;
} admin_args_t;

static int parse_args(int argc, char **argv, admin_args_t *args)
{
    memset(args, 0, sizeof(*args));
    for (int i = 0; i < argc; i++) {
        const char **slot = NULL;

        if (strcmp(argv[i], "--org") == 0)
            slot = &args->org;
        else if (strcmp(argv[i], "--name") == 0)
            slot = &args->name;
        else if (strcmp(argv[i], "--label") == 0)
            slot = &args->label;
        else if (strcmp(argv[i], "--provider") == 0)
            slot = &args->provider;
        else if (strcmp(argv[i], "--model") == 0)
            slot = &args->model;
        else if (strcmp(argv[i], "--providers") == 0)
            slot = &args->providers;

        if (slot != NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pushaid: missing value for %s\n", argv[i]);
                return -1;
            }
            *slot = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "pushaid: unknown option %s\n", argv[i]);
            return -1;
        } else if (args->n_positional < 2) {
            args->positional[args->n_positional++] = argv[i];
        } else {
            fprintf(stderr, "pushaid: unexpected argument %s\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static int find_org(store_t *store, const char *slug, int64_t *org_id)
{
    store_rc_t rc;

    if (slug == NULL) {
        fprintf(stderr, "pushaid: missing --org SLUG\n");
        return -1;
    }
    rc = store_org_find(store, slug, org_id);
    if (rc == STORE_NOT_FOUND) {
        fprintf(stderr, "pushaid: organization \"%s\" not found (create it with: pushaid admin org create %s)\n",
                slug, slug);
        return -1;
    }
    return rc == STORE_OK ? 0 : -1;
}

/* Accepts a key id or a whole key and writes the key id. */
static int key_id_from_arg(const char *arg, char key_id[KEY_ID_LEN + 1])
{
    char secret[KEY_SECRET_LEN + 1];
    size_t len = arg != NULL ? strlen(arg) : 0;

    if (arg == NULL) {
        fprintf(stderr, "pushaid: missing KEY_ID_OR_KEY\n");
        return -1;
    }
    if (key_id_valid(arg, len)) {
        memcpy(key_id, arg, KEY_ID_LEN + 1);
        return 0;
    }
    if (key_parse(arg, len, key_id, secret) == 0) {
        sodium_memzero(secret, sizeof(secret));
        return 0;
    }
    fprintf(stderr, "pushaid: \"%s\" is neither a key id (%d characters a-z, 2-7) nor a key (pai_<id>_<secret>)\n",
            len > 64 ? "(long argument)" : arg, KEY_ID_LEN);
    return -1;
}

static int org_create(store_t *store, const admin_args_t *args)
{
    const char *slug = args->positional[0];
    int64_t org_id;
    store_rc_t rc;

    if (slug == NULL || slug[0] == '\0' || strlen(slug) > 64 || strspn(slug, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(slug)) {
        fprintf(stderr, "pushaid: invalid organization slug: use 1 to 64 characters a-z, 0-9, - and _\n");
        return EXIT_USAGE;
    }
    rc = store_org_create(store, slug, args->name, &org_id);
    if (rc == STORE_CONFLICT) {
        fprintf(stderr, "pushaid: organization \"%s\" already exists\n", slug);
        return EXIT_FAILED;
    }
    if (rc != STORE_OK)
        return EXIT_FAILED;
    printf("%s\n", slug);
    return 0;
}

/* Creates a key with a fresh id; retries the rare id collision. */
static int key_create(store_t *store, const admin_args_t *args)
{
    api_key_t key;
    char secret[KEY_SECRET_LEN + 1];
    char text[KEY_TEXT_LEN + 1];
    store_rc_t rc = STORE_CONFLICT;

    memset(&key, 0, sizeof(key));
    if (find_org(store, args->org, &key.org_id) != 0)
        return EXIT_FAILED;
    key.label = (char *)args->label;
    key.created_at_ms = clock_now_ms();
    for (int attempt = 0; attempt < 5 && rc == STORE_CONFLICT; attempt++) {
        key_generate_id(key.key_id);
        key_generate_secret(secret);
        key_hash_secret(key.key_id, secret, key.secret_hash);
        rc = store_key_create(store, &key);
    }
    if (rc != STORE_OK) {
        fprintf(stderr, "pushaid: could not create the key\n");
        return EXIT_FAILED;
    }
    key_format(key.key_id, secret, text);
    printf("%s\n", text);
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(text, sizeof(text));
    fprintf(stderr, "pushaid: created key %s for %s; it is shown only this once\n", key.key_id, args->org);
    return 0;
}

static int key_list(store_t *store, const admin_args_t *args)
{
    int64_t org_id;
    api_key_t *keys = NULL;
    size_t n = 0;

    if (find_org(store, args->org, &org_id) != 0)
        return EXIT_FAILED;
    if (store_key_list(store, org_id, &keys, &n) != STORE_OK)
        return EXIT_FAILED;
    for (size_t i = 0; i < n; i++) {
        char created[RFC3339_MS_LEN + 1];
        clock_format_rfc3339(keys[i].created_at_ms, created);
        printf("%s\t%s\t%s\t%s\n", keys[i].key_id, keys[i].revoked_at_ms != 0 ? "revoked" : "active", created,
               keys[i].label != NULL ? keys[i].label : "");
    }
    store_key_list_free(keys, n);
    return 0;
}

static int key_regenerate(store_t *store, const admin_args_t *args)
{
    char key_id[KEY_ID_LEN + 1];
    char secret[KEY_SECRET_LEN + 1];
    char text[KEY_TEXT_LEN + 1];
    uint8_t hash[KEY_HASH_LEN];
    store_rc_t rc;

    if (key_id_from_arg(args->positional[0], key_id) != 0)
        return EXIT_USAGE;
    key_generate_secret(secret);
    key_hash_secret(key_id, secret, hash);
    rc = store_key_replace_secret(store, key_id, hash);
    if (rc == STORE_NOT_FOUND) {
        fprintf(stderr, "pushaid: key %s not found\n", key_id);
        return EXIT_FAILED;
    }
    if (rc == STORE_CONFLICT) {
        fprintf(stderr, "pushaid: key %s is revoked; create a new key instead\n", key_id);
        return EXIT_FAILED;
    }
    if (rc != STORE_OK)
        return EXIT_FAILED;
    key_format(key_id, secret, text);
    printf("%s\n", text);
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(text, sizeof(text));
    fprintf(stderr, "pushaid: regenerated key %s; the previous secret no longer works\n", key_id);
    return 0;
}

static int key_revoke(store_t *store, const admin_args_t *args)
{
    char key_id[KEY_ID_LEN + 1];
    store_rc_t rc;

    if (key_id_from_arg(args->positional[0], key_id) != 0)
        return EXIT_USAGE;
    rc = store_key_revoke(store, key_id, clock_now_ms());
    if (rc == STORE_NOT_FOUND) {
        fprintf(stderr, "pushaid: key %s not found\n", key_id);
        return EXIT_FAILED;
    }
    if (rc != STORE_OK)
        return EXIT_FAILED;
    printf("%s\n", key_id);
    fprintf(stderr, "pushaid: revoked key %s\n", key_id);
    return 0;
}

/* Reads a whole file, or stdin for "-"; NULL with a message on failure. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *text = NULL;
    size_t used = 0, cap = 0;

    if (f == NULL) {
        fprintf(stderr, "pushaid: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        size_t got;
        if (used + 4096 + 1 > cap) {
            char *grown;
            cap = cap == 0 ? 65536 : cap * 2;
            if (cap > IMPORT_MAX_BYTES + 1) {
                fprintf(stderr, "pushaid: %s is larger than %d bytes\n", path, IMPORT_MAX_BYTES);
                goto fail;
            }
            grown = realloc(text, cap);
            if (grown == NULL)
                goto fail;
            text = grown;
        }
        got = fread(text + used, 1, cap - used - 1, f);
        used += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "pushaid: cannot read %s: %s\n", path, strerror(errno));
        goto fail;
    }
    if (f != stdin)
        fclose(f);
    text[used] = '\0';
    *len = used;
    return text;

fail:
    if (f != stdin)
        fclose(f);
    free(text);
    return NULL;
}

/* The named providers of the import in progress, for provider_known_here():
 * agent_import_options_t takes a plain function, and the command is one-shot. */
static const providers_file_t *import_named_providers;

static int provider_known_here(const char *name)
{
    return provider_known(name) || providers_file_has(import_named_providers, name);
}

static int agent_import(store_t *store, const admin_args_t *args)
{
    int64_t org_id;
    char *text;
    size_t len = 0;
    agent_t *agents = NULL;
    size_t n = 0;
    char err[1024];
    agent_import_options_t options;
    providers_file_t named = {NULL, 0};
    const char *providers_path = args->providers != NULL ? args->providers : getenv(PROVIDERS_FILE_ENV);
    int status = EXIT_FAILED;

    if (args->positional[0] == NULL) {
        fprintf(stderr, "pushaid: missing FILE (a path, or - for stdin)\n");
        return EXIT_USAGE;
    }
    /* only the names are needed here, so the keys' variables may be unset */
    if (providers_path != NULL && providers_path[0] != '\0' &&
        providers_file_load(providers_path, 0, &named, err, sizeof(err)) != 0) {
        fprintf(stderr, "pushaid: %s\n", err);
        return EXIT_FAILED;
    }
    import_named_providers = &named;
    if (args->provider != NULL && !provider_known_here(args->provider)) {
        fprintf(stderr, "pushaid: unknown provider \"%s\" for --provider\n", args->provider);
        status = EXIT_USAGE;
        goto out;
    }
    if (find_org(store, args->org, &org_id) != 0)
        goto out;
    if ((text = read_file(args->positional[0], &len)) == NULL)
        goto out;
    options.provider_known = provider_known_here;
    options.provider_override = args->provider;
    options.model_override = args->model;
    if (agent_import_parse(text, len, &options, &agents, &n, err, sizeof(err)) != 0) {
        fprintf(stderr, "pushaid: %s: %s\n", args->positional[0], err);
        free(text);
        goto out;
    }
    free(text);

    for (size_t i = 0; i < n; i++)
        agents[i].org_id = org_id;
    if (store_agents_import(store, org_id, agents, n) != STORE_OK)
        goto out;
    for (size_t i = 0; i < n; i++)
        printf("%lld\n", (long long)agents[i].id);
    fprintf(stderr, "pushaid: imported %zu agent%s into %s\n", n, n == 1 ? "" : "s", args->org);
    status = 0;

out:
    for (size_t i = 0; i < n; i++)
        agent_free(&agents[i]);
    free(agents);
    import_named_providers = NULL;
    providers_file_free(&named);
    return status;
}

static int agent_list(store_t *store, const admin_args_t *args)
{
    int64_t org_id;
    agent_t *agents = NULL;
    size_t n = 0;
    int64_t total = 0;

    if (find_org(store, args->org, &org_id) != 0)
        return EXIT_FAILED;
    if (store_agents_list_all(store, org_id, &agents, &n) != STORE_OK)
        return EXIT_FAILED;
    (void)total;
    for (size_t i = 0; i < n; i++)
        printf("%lld\t%s\t%s\n", (long long)agents[i].id, agents[i].published ? "published" : "draft",
               agents[i].name);
    store_agent_list_free(agents, n);
    return 0;
}

static int agent_set_published(store_t *store, const admin_args_t *args, int published)
{
    const char *arg = args->positional[0];
    char *end = NULL;
    long long id;
    store_rc_t rc;

    errno = 0;
    id = arg != NULL ? strtoll(arg, &end, 10) : 0;
    if (arg == NULL || errno != 0 || end == arg || *end != '\0' || id <= 0) {
        fprintf(stderr, "pushaid: expected a positive integer AGENT_ID\n");
        return EXIT_USAGE;
    }
    rc = store_agent_set_published(store, id, published);
    if (rc == STORE_NOT_FOUND) {
        fprintf(stderr, "pushaid: agent %lld not found\n", id);
        return EXIT_FAILED;
    }
    if (rc != STORE_OK)
        return EXIT_FAILED;
    printf("%lld\n", id);
    fprintf(stderr, "pushaid: agent %lld is now %s\n", id, published ? "published" : "unpublished");
    return 0;
}

typedef int (*admin_command_fn)(store_t *store, const admin_args_t *args);

static int cmd_agent_publish(store_t *store, const admin_args_t *args)
{
    return agent_set_published(store, args, 1);
}

static int cmd_agent_unpublish(store_t *store, const admin_args_t *args)
{
    return agent_set_published(store, args, 0);
}

static const struct {
    const char *noun;
    const char *verb;
    admin_command_fn fn;
} admin_commands[] = {
    {"org", "create", org_create},
    {"key", "create", key_create},
    {"key", "list", key_list},
    {"key", "regenerate", key_regenerate},
    {"key", "revoke", key_revoke},
    {"agent", "import", agent_import},
    {"agent", "list", agent_list},
    {"agent", "publish", cmd_agent_publish},
    {"agent", "unpublish", cmd_agent_unpublish},
};

int cli_admin_main(const char *db_uri, int argc, char **argv)
{
    admin_args_t args;
    store_t *store = NULL;
    int status;

    if (argc < 2) {
        cli_admin_print_usage();
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(admin_commands) / sizeof(admin_commands[0]); i++) {
        if (strcmp(argv[0], admin_commands[i].noun) != 0 || strcmp(argv[1], admin_commands[i].verb) != 0)
            continue;
        if (parse_args(argc - 2, argv + 2, &args) != 0)
            return EXIT_USAGE;
        if (store_open(db_uri, &store) != STORE_OK) {
            fprintf(stderr, "pushaid: cannot open the database %s (the log line above says why)\n",
                    strstr(db_uri, "://") != NULL ? "at the given URI" : db_uri);
            return EXIT_FAILED;
        }
        status = admin_commands[i].fn(store, &args);
        store_close(store);
        return status;
    }
    fprintf(stderr, "pushaid: unknown admin command \"%s %s\"\n", argv[0], argv[1]);
    cli_admin_print_usage();
    return EXIT_USAGE;
}

/*
 * main.c - the pushaid command: `serve` runs the server, `admin` manages
 * organizations, keys and agents. --db (or $PUSHAI_DB, else ./pushai.db)
 * names the database for every command and may stand anywhere on the line.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli_admin.h"
#include "config.h"
#include "engine.h"
#include "http.h"
#include "log.h"
#include "providers_file.h"
#include "store.h"

#define PUSHAI_VERSION "0.1.0"
#define DEFAULT_DB "./pushai.db"

static void print_usage(void)
{
    fprintf(stderr,
            "pushaid %s - the Push AI Agents API server\n"
            "\n"
            "usage: pushaid [--db PATH] serve [options]     run the server (pushaid serve --help lists options)\n"
            "       pushaid [--db PATH] admin COMMAND       manage organizations, keys and agents\n"
            "       pushaid --version\n"
            "\n"
            "--db defaults to $PUSHAI_DB, else %s.\n",
            PUSHAI_VERSION, DEFAULT_DB);
}

/* Removes --db PATH / --db=PATH from argv wherever it stands. */
static int take_db_flag(int *argc, char **argv, const char **db_uri)
{
    int out = 0;

    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--db") == 0) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "pushaid: missing value for --db\n");
                return -1;
            }
            *db_uri = argv[++i];
        } else if (strncmp(argv[i], "--db=", 5) == 0) {
            *db_uri = argv[i] + 5;
        } else {
            argv[out++] = argv[i];
        }
    }
    *argc = out;
    return 0;
}

static void default_node_id(char *out, size_t size)
{
    char host[128] = "localhost";
    uint32_t tag = randombytes_random();

    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(out, size, "%s:%d:%08x", host, (int)getpid(), tag);
}

/*
 * Raises the soft limit on open files to the hard limit: every provider
 * transfer holds a socket, so the default soft limit (often 1024) would cap
 * the runs in flight. Logs the limit in force either way.
 */
static void raise_open_files_limit(void)
{
    struct rlimit limit;
    rlim_t before;

    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
        log_warn("msg=\"cannot read the open files limit\" error=\"%s\"", strerror(errno));
        return;
    }
    before = limit.rlim_cur;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
            log_warn("msg=\"cannot raise the open files limit\" soft=%llu hard=%llu error=\"%s\"",
                     (unsigned long long)before, (unsigned long long)limit.rlim_max, strerror(errno));
            return;
        }
    }
    log_info("msg=\"open files limit\" soft=%llu previous_soft=%llu", (unsigned long long)limit.rlim_cur,
             (unsigned long long)before);
}

static int serve(const char *db_uri, int argc, char **argv)
{
    server_config_t config;
    char err[512];
    char node_id[192];
    sigset_t signals;
    int signal_number = 0;
    store_t *store = NULL;
    engine_t *engine = NULL;
    http_server_t *server = NULL;
    providers_file_t providers = {NULL, 0};
    int status = 1;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            config_print_serve_usage();
            return 0;
        }
    }
    config_defaults(&config, db_uri);
    if (config_parse_serve(&config, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "pushaid: %s\n", err);
        return 2;
    }
    log_set_level(config.log_level);
    if (config.engine.node_id == NULL) {
        default_node_id(node_id, sizeof(node_id));
        config.engine.node_id = node_id;
    }
    if (config.providers_path != NULL) {
        if (providers_file_load(config.providers_path, 1, &providers, err, sizeof(err)) != 0) {
            fprintf(stderr, "pushaid: %s\n", err);
            return 2;
        }
        config.engine.providers = providers.providers;
        config.engine.n_providers = providers.n;
        log_info("msg=\"named providers loaded\" file=\"%s\" providers=%zu", config.providers_path, providers.n);
    }
    raise_open_files_limit();

    /* the signals that stop the server are taken by sigwait() in this thread
     * alone; every thread started below inherits the mask */
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* create and migrate the database once, before any thread opens it */
    if (store_open(db_uri, &store) != STORE_OK) {
        fprintf(stderr, "pushaid: cannot open the database %s (the log line above says why)\n",
                    strstr(db_uri, "://") != NULL ? "at the given URI" : db_uri);
        goto out;
    }
    store_close(store);

    if (config.engine_enabled && engine_start(&config.engine, &engine) != 0) {
        fprintf(stderr, "pushaid: cannot start the run engine\n");
        goto out;
    }
    if (http_server_start(&config, engine, &server) != 0) {
        if (engine != NULL)
            engine_stop(engine, 0);
        goto out;
    }

    sigwait(&signals, &signal_number);
    log_info("msg=\"shutting down\" signal=%s grace_ms=%lld", signal_number == SIGINT ? "SIGINT" : "SIGTERM",
             (long long)config.shutdown_grace_ms);
    http_server_stop(server, config.shutdown_grace_ms);
    if (engine != NULL)
        engine_stop(engine, config.shutdown_grace_ms);
    log_info("msg=stopped");
    status = 0;

out:
    providers_file_free(&providers);
    return status;
}

int main(int argc, char **argv)
{
    const char *db_uri = getenv("PUSHAI_DB");
    int status;

    if (db_uri == NULL || db_uri[0] == '\0')
        db_uri = DEFAULT_DB;
    argc--;
    argv++;
    if (take_db_flag(&argc, argv, &db_uri) != 0)
        return 2;
    if (argc == 0 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "help") == 0) {
        print_usage();
        return argc == 0 ? 2 : 0;
    }
    if (strcmp(argv[0], "--version") == 0) {
        printf("pushaid %s\n", PUSHAI_VERSION);
        return 0;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "pushaid: libsodium failed to initialize\n");
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "pushaid: libcurl failed to initialize\n");
        return 1;
    }

    if (strcmp(argv[0], "serve") == 0) {
        status = serve(db_uri, argc - 1, argv + 1);
    } else if (strcmp(argv[0], "admin") == 0) {
        status = cli_admin_main(db_uri, argc - 1, argv + 1);
    } else {
        fprintf(stderr, "pushaid: unknown command \"%s\"\n", argv[0]);
        print_usage();
        status = 2;
    }
    curl_global_cleanup();
    return status;
}

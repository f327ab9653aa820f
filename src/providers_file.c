/*
 * providers_file.c - reads the named-providers file described in
 * providers_file.h. The whole file is validated before anything is kept, so
 * a server never starts with half of its providers.
 */
#include "providers_file.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROVIDER_NAME_MAX_LEN 64
#define ENV_NAME_MAX_LEN 128

static void set_error(char *err, size_t err_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t err_size, const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

static int name_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > PROVIDER_NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

static int env_name_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > ENV_NAME_MAX_LEN || (name[0] >= '0' && name[0] <= '9'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Reads an optional string member; -1 when it is present but not a string. */
static int optional_string(const json_t *entry, const char *member, const char **out)
{
    const json_t *value = json_object_get(entry, member);

    *out = NULL;
    if (value == NULL || json_is_null(value))
        return 0;
    if (!json_is_string(value))
        return -1;
    *out = json_string_value(value);
    return 0;
}

/* Checks entry number index (from 0) and copies it into *out. */
static int load_entry(const char *path, size_t index, const json_t *entry, int resolve_keys,
                      engine_provider_config_t *out, char *err, size_t err_size)
{
    const char *name, *kind, *base_url, *api_key_env;
    const char *member;
    const json_t *value;

    if (!json_is_object(entry)) {
        set_error(err, err_size, "%s: providers[%zu] must be an object", path, index);
        return -1;
    }
    json_object_foreach((json_t *)entry, member, value) {
        if (strcmp(member, "api_key") == 0) {
            set_error(err, err_size,
                      "%s: providers[%zu].api_key: keys are not read from this file; put the key in an "
                      "environment variable and name it with \"api_key_env\"",
                      path, index);
            return -1;
        }
        if (strcmp(member, "name") != 0 && strcmp(member, "kind") != 0 && strcmp(member, "base_url") != 0 &&
            strcmp(member, "api_key_env") != 0) {
            set_error(err, err_size,
                      "%s: providers[%zu].%s: unknown member (expected name, kind, base_url, api_key_env)", path,
                      index, member);
            return -1;
        }
    }

    if (optional_string(entry, "name", &name) != 0 || name == NULL || !name_valid(name)) {
        set_error(err, err_size, "%s: providers[%zu].name: expected 1 to %d characters of A-Z, a-z, 0-9, _, . or -",
                  path, index, PROVIDER_NAME_MAX_LEN);
        return -1;
    }
    if (optional_string(entry, "kind", &kind) != 0 || kind == NULL ||
        (strcmp(kind, "openai") != 0 && strcmp(kind, "anthropic") != 0)) {
        set_error(err, err_size, "%s: providers[%zu].kind (provider \"%s\"): expected \"openai\" or \"anthropic\"",
                  path, index, name);
        return -1;
    }
    if (optional_string(entry, "base_url", &base_url) != 0 ||
        (base_url != NULL && strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0)) {
        set_error(err, err_size,
                  "%s: providers[%zu].base_url (provider \"%s\"): expected a URL starting with http:// or https://",
                  path, index, name);
        return -1;
    }
    if (optional_string(entry, "api_key_env", &api_key_env) != 0 ||
        (api_key_env != NULL && !env_name_valid(api_key_env))) {
        set_error(err, err_size,
                  "%s: providers[%zu].api_key_env (provider \"%s\"): expected the name of an environment variable",
                  path, index, name);
        return -1;
    }

    out->name = strdup(name);
    out->kind = strdup(kind);
    out->base_url = base_url ? strdup(base_url) : NULL;
    if (!out->name || !out->kind || (base_url && !out->base_url)) {
        set_error(err, err_size, "%s: out of memory", path);
        return -1;
    }
    if (resolve_keys && api_key_env != NULL) {
        const char *key = getenv(api_key_env);

        if (key == NULL || key[0] == '\0') {
            set_error(err, err_size,
                      "%s: provider \"%s\": the environment variable %s named by api_key_env is not set", path,
                      name, api_key_env);
            return -1;
        }
        out->api_key = strdup(key);
        if (!out->api_key) {
            set_error(err, err_size, "%s: out of memory", path);
            return -1;
        }
    }
    return 0;
}

int providers_file_load(const char *path, int resolve_keys, providers_file_t *out, char *err, size_t err_size)
{
    json_error_t parse_error;
    json_t *root;
    size_t n;

    out->providers = NULL;
    out->n = 0;
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &parse_error);
    if (root == NULL) {
        if (parse_error.line <= 0)
            set_error(err, err_size, "%s: %s", path, parse_error.text);
        else
            set_error(err, err_size, "%s: line %d, column %d: %s", path, parse_error.line, parse_error.column,
                      parse_error.text);
        return -1;
    }
    if (!json_is_array(root)) {
        set_error(err, err_size, "%s: expected a JSON array of providers", path);
        goto fail;
    }
    n = json_array_size(root);
    if (n > PROVIDERS_FILE_MAX_ENTRIES) {
        set_error(err, err_size, "%s: %zu providers, more than the limit of %d", path, n,
                  PROVIDERS_FILE_MAX_ENTRIES);
        goto fail;
    }
    if (n == 0) {
        json_decref(root);
        return 0;
    }
    out->providers = calloc(n, sizeof(*out->providers));
    if (out->providers == NULL) {
        set_error(err, err_size, "%s: out of memory", path);
        goto fail;
    }

    for (size_t i = 0; i < n; i++) {
        engine_provider_config_t *entry = &out->providers[i];

        out->n = i + 1; /* so providers_file_free() releases a half-filled entry */
        if (load_entry(path, i, json_array_get(root, i), resolve_keys, entry, err, err_size) != 0)
            goto fail;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(out->providers[j].name, entry->name) == 0) {
                set_error(err, err_size, "%s: providers[%zu].name: \"%s\" is already used by providers[%zu]", path,
                          i, entry->name, j);
                goto fail;
            }
        }
    }
    json_decref(root);
    return 0;

fail:
    json_decref(root);
    providers_file_free(out);
    return -1;
}

void providers_file_free(providers_file_t *file)
{
    for (size_t i = 0; i < file->n; i++) {
        engine_provider_config_t *entry = &file->providers[i];

        free((char *)entry->name);
        free((char *)entry->kind);
        free((char *)entry->base_url);
        if (entry->api_key) {
            explicit_bzero((char *)entry->api_key, strlen(entry->api_key));
            free((char *)entry->api_key);
        }
    }
    free(file->providers);
    file->providers = NULL;
    file->n = 0;
}

int providers_file_has(const providers_file_t *file, const char *name)
{
    for (size_t i = 0; file && name && i < file->n; i++) {
        if (strcmp(file->providers[i].name, name) == 0)
            return 1;
    }
    return 0;
}

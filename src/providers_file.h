/*
 * providers_file.h - named providers read from a JSON file, so that agents
 * can reach more than one OpenAI-compatible or Anthropic endpoint:
 *
 *   [{"name": "local-llama", "kind": "openai",
 *     "base_url": "http://127.0.0.1:8081/v1", "api_key_env": "LLAMA_KEY"},
 *    {"name": "claude-eu", "kind": "anthropic", "api_key_env": "CLAUDE_EU_KEY"}]
 *
 * name     1 to 64 characters of [A-Za-z0-9_.-]; unique in the file; may
 *          shadow a built-in name ("openai") to change where it points.
 * kind     "openai" or "anthropic": the wire protocol.
 * base_url optional, http:// or https://; the kind's default when absent.
 * api_key_env optional: the name of the environment variable that holds the
 *          API key. Keys never sit in the file, so "api_key" is rejected, as
 *          is any other unknown member (a typo should not pass silently).
 *
 * `pushaid serve --providers FILE` and `pushaid admin agent import
 * --providers FILE` read it; both default to $PUSHAI_PROVIDERS.
 */
#ifndef PUSHAI_PROVIDERS_FILE_H
#define PUSHAI_PROVIDERS_FILE_H

#include <stddef.h>

#include "engine.h"

#define PROVIDERS_FILE_ENV "PUSHAI_PROVIDERS"
#define PROVIDERS_FILE_MAX_BYTES (1024 * 1024)
#define PROVIDERS_FILE_MAX_ENTRIES 256

typedef struct {
    engine_provider_config_t *providers; /* every string is heap memory owned here */
    size_t n;
} providers_file_t;

/*
 * Reads and validates the file at path into *out. With resolve_keys, each
 * api_key_env must name a variable that is set and not empty, and its value
 * becomes api_key; without it (the admin CLI, which needs only the names),
 * api_key stays NULL. Returns 0, or -1 with a message naming the file, the
 * entry and the field in err (err_size bytes, always NUL-terminated). On
 * failure *out is empty.
 */
int providers_file_load(const char *path, int resolve_keys, providers_file_t *out, char *err, size_t err_size);

/* Releases what providers_file_load() stored, wiping the keys; leaves *file empty. */
void providers_file_free(providers_file_t *file);

/* Returns 1 when file names a provider called name, else 0. file may be NULL. */
int providers_file_has(const providers_file_t *file, const char *name);

#endif

/*
 * provider.h - the model providers that execute runs, and the rules they share.
 *
 * A provider is a table of functions with no I/O of its own: it builds the
 * HTTP request for a run and parses the reply, event by event for a stream or
 * whole for a plain JSON body. The engine owns the transfers, the timers and
 * the retries, so everything here can be tested without a network.
 *
 * Built-in providers: "echo" (local: the output is the prompt), "openai"
 * (POST {base}/chat/completions, OpenAI-compatible servers) and "anthropic"
 * (POST {base}/v1/messages, the Messages API). Both HTTP providers ask for a
 * stream.
 */
#ifndef PUSHAI_PROVIDER_H
#define PUSHAI_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "model.h"
#include "sse.h"

#define PROVIDER_OPENAI_DEFAULT_BASE_URL "https://api.openai.com/v1"
#define PROVIDER_ANTHROPIC_DEFAULT_BASE_URL "https://api.anthropic.com"
#define PROVIDER_ANTHROPIC_VERSION "2023-06-01"
/* The Messages API requires max_tokens; this is sent when the agent sets none. */
#define PROVIDER_ANTHROPIC_DEFAULT_MAX_TOKENS 4096

/* Limit on the text a reply may produce, so a faulty server cannot exhaust memory. */
#define PROVIDER_MAX_OUTPUT_BYTES (8u * 1024 * 1024)
/* Maximum bytes of a provider message copied into a run's error. */
#define PROVIDER_MAX_MESSAGE_BYTES 500

/* Retry policy shared by every HTTP provider (see provider_backoff_ceiling_ms). */
#define PROVIDER_MAX_ATTEMPTS 4
#define PROVIDER_BACKOFF_BASE_MS 500
#define PROVIDER_BACKOFF_CAP_MS 30000

/* Where an HTTP provider sends its requests. Strings are borrowed. */
typedef struct {
    const char *base_url; /* NULL for the provider's default; a trailing '/' is ignored */
    const char *api_key;  /* NULL or "" sends no credentials (local servers need none) */
} provider_endpoint_t;

#define PROVIDER_MAX_HEADERS 6

/* One HTTP request; every member is heap memory freed by provider_request_free(). */
typedef struct {
    char *url;
    char *headers[PROVIDER_MAX_HEADERS]; /* "Name: value" lines */
    size_t n_headers;
    char *body;                          /* JSON, NUL-terminated */
    size_t body_len;
} provider_request_t;

/* Wipes the header lines (they may hold the API key) and frees every member. */
void provider_request_free(provider_request_t *req);

/* What a reply has delivered so far; members are heap memory owned by it. */
typedef struct {
    char *text;            /* the output collected so far, NUL-terminated; NULL before any */
    size_t text_len;
    size_t text_cap;
    char *finish_reason;   /* e.g. "stop", "length", "end_turn"; NULL until one arrived */
    int complete;          /* 1 once the reply is whole: a finish reason arrived, or a full body parsed */
    int done;              /* 1 once the stream's end marker came ("[DONE]", message_stop) */
    int has_usage;
    int64_t input_tokens;
    int64_t output_tokens;
    char *error_code;      /* set with error_message when a parse function returned -1 */
    char *error_message;   /* the provider's own message, or what was wrong with the reply */
    int provider_sent_error; /* 1 when error_message came from the provider, 0 when it describes a broken reply */
} provider_reply_t;

void provider_reply_free(provider_reply_t *reply);

typedef struct provider {
    const char *name;

    /* Local providers fill reply at once and return 0 (-1 when out of memory);
     * NULL for HTTP providers. */
    int (*run_local)(const run_t *run, provider_reply_t *reply);

    /* Builds the request for run into *req (zeroed first). Returns 0, or -1
     * when a text is not valid UTF-8 or memory ran out. */
    int (*build_request)(const provider_endpoint_t *endpoint, const run_t *run, provider_request_t *req);

    /* Folds one stream event into reply. Returns 0, or -1 when the provider
     * sent an error or a broken chunk (error_message describes it). */
    int (*parse_event)(provider_reply_t *reply, const sse_event_t *event);

    /* Parses a whole non-streaming JSON body of a 2xx reply into reply.
     * Returns 0, or -1 with error_message set. */
    int (*parse_body)(provider_reply_t *reply, const char *body, size_t len);
} provider_t;

extern const provider_t provider_echo;
extern const provider_t provider_openai;
extern const provider_t provider_anthropic;

/* The built-in provider called name, or NULL. */
const provider_t *provider_find(const char *name);
/* Returns 1 for "echo", "openai" and "anthropic", else 0. */
int provider_known(const char *name);

/* ---- helpers for provider implementations ---- */

/* Adds a copy of the header line "Name: value". Returns 0, or -1 when the
 * request is full or memory ran out. */
int provider_request_add_header(provider_request_t *req, const char *line);
/* Copies the error of a decoded chunk or body into reply (see
 * provider_error_from_json). Returns 1 when root has an "error" member, else 0. */
int provider_reply_take_error(provider_reply_t *reply, const json_t *root);

/* Appends text to reply->text. Returns 0, or -1 with error_message set when
 * the output would exceed PROVIDER_MAX_OUTPUT_BYTES or memory ran out. */
int provider_reply_append(provider_reply_t *reply, const char *text, size_t len);
/* Replaces the reply's error code (may be NULL) and message. */
void provider_reply_set_error(provider_reply_t *reply, const char *code, const char *message);
/* Reads a provider error from a decoded JSON body: {"error": {...}} in the
 * OpenAI and Anthropic forms, {"error": "text"} (Ollama), top-level
 * "message"/"type"/"code" (vLLM) and {"detail": ...} (FastAPI). Sets *code
 * and *message to heap strings or NULL. Returns 1 when a message was found. */
int provider_error_from_json(const json_t *root, char **code, char **message);
/* Joins base (or fallback when base is NULL or "") and path, dropping the
 * trailing slashes of base and keeping a query string of base at the end
 * ("https://h/d?api-version=1" + "/x" is "https://h/d/x?api-version=1").
 * Returns a heap string, NULL when out of memory. */
char *provider_join_url(const char *base, const char *fallback, const char *path);
/* Returns 1 when url's host is an Azure OpenAI resource (*.openai.azure.com,
 * *.cognitiveservices.azure.com), which takes its key in an "api-key" header. */
int provider_url_is_azure(const char *url);

/* ---- retry rules and run errors ---- */

/* Returns 1 for the HTTP statuses worth retrying (429, 500, 502, 503, 504, 529). */
int provider_status_retryable(long status);
/* Returns 1 for error codes that a provider sends inside a 2xx stream for a
 * passing condition (server_error, overloaded_error, rate_limit_error, ...). */
int provider_error_code_retryable(const char *code);

/* Upper bound of the full-jitter delay before the retry that follows attempt
 * number attempt (1-based): min(cap, base * 2^(attempt-1)) in milliseconds.
 * The engine waits a uniform random time in [0, ceiling]. */
int64_t provider_backoff_ceiling_ms(int attempt);

/*
 * Describes a non-2xx reply for a run's error: "provider returned 404
 * model_not_found after 1 attempt: The model 'x' does not exist", "provider
 * returned 502 with a non-JSON body after 4 attempts". The provider's message
 * is cut to PROVIDER_MAX_MESSAGE_BYTES, has control bytes replaced by spaces
 * and every occurrence of secret (when at least 4 bytes) replaced by
 * "[redacted]". Returns a heap string, NULL when out of memory.
 */
char *provider_describe_status(long status, const char *body, size_t body_len, int attempts,
                               const char *secret);

/* Returns a heap copy of text, cut to max_bytes on a UTF-8 boundary, with
 * control bytes replaced by spaces and secret (when at least 4 bytes)
 * replaced by "[redacted]". NULL when out of memory. */
char *provider_clean_message(const char *text, size_t max_bytes, const char *secret);

/* " after 1 attempt" or " after N attempts". */
const char *provider_attempts_phrase(int attempts, char *buf, size_t buf_size);

#endif

/*
 * provider.c - the registry of built-in providers, the helpers they share,
 * the retry rules and the wording of provider errors in a run's error.
 */
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const provider_t *const builtin_providers[] = {
    &provider_echo,
    &provider_openai,
    &provider_anthropic,
};

const provider_t *provider_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof(builtin_providers) / sizeof(builtin_providers[0]); i++) {
        if (strcmp(builtin_providers[i]->name, name) == 0)
            return builtin_providers[i];
    }
    return NULL;
}

int provider_known(const char *name)
{
    return provider_find(name) != NULL;
}

void provider_request_free(provider_request_t *req)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (req->headers[i]) {
            explicit_bzero(req->headers[i], strlen(req->headers[i]));
            free(req->headers[i]);
        }
    }
    free(req->url);
    free(req->body);
    memset(req, 0, sizeof(*req));
}

void provider_reply_free(provider_reply_t *reply)
{
    free(reply->text);
    free(reply->finish_reason);
    free(reply->error_code);
    free(reply->error_message);
    memset(reply, 0, sizeof(*reply));
}

void provider_reply_set_error(provider_reply_t *reply, const char *code, const char *message)
{
    free(reply->error_code);
    free(reply->error_message);
    reply->error_code = code ? strdup(code) : NULL;
    reply->error_message = message ? strdup(message) : NULL;
    reply->provider_sent_error = 0;
}

int provider_reply_append(provider_reply_t *reply, const char *text, size_t len)
{
    size_t need;

    if (len > PROVIDER_MAX_OUTPUT_BYTES || reply->text_len > PROVIDER_MAX_OUTPUT_BYTES - len) {
        provider_reply_set_error(reply, NULL, "provider reply exceeds the output limit of 8 MiB");
        return -1;
    }
    need = reply->text_len + len + 1;
    if (need > reply->text_cap) {
        size_t cap = reply->text_cap ? reply->text_cap : 256;
        char *grown;

        while (cap < need)
            cap *= 2;
        grown = realloc(reply->text, cap);
        if (!grown) {
            provider_reply_set_error(reply, NULL, "out of memory while reading the provider reply");
            return -1;
        }
        reply->text = grown;
        reply->text_cap = cap;
    }
    memcpy(reply->text + reply->text_len, text, len);
    reply->text_len += len;
    reply->text[reply->text_len] = '\0';
    return 0;
}

static char *json_text_or_dump(const json_t *value)
{
    if (json_is_string(value))
        return strdup(json_string_value(value));
    if (json_is_object(value) || json_is_array(value))
        return json_dumps(value, JSON_COMPACT);
    return NULL;
}

int provider_error_from_json(const json_t *root, char **code, char **message)
{
    const json_t *error;
    const json_t *holder = NULL; /* the object that carries message, code and type */

    *code = NULL;
    *message = NULL;
    if (!json_is_object(root))
        return 0;

    error = json_object_get(root, "error");
    if (json_is_object(error)) {
        holder = error;
    } else if (json_is_string(error)) {
        *message = strdup(json_string_value(error));
        return *message != NULL;
    } else if (json_is_string(json_object_get(root, "message"))) {
        holder = root;
    } else if (json_object_get(root, "detail")) {
        *message = json_text_or_dump(json_object_get(root, "detail"));
        return *message != NULL;
    } else {
        return 0;
    }

    /* OpenAI puts the precise reason in "code" and a class in "type";
     * Anthropic has only "type", e.g. "not_found_error" */
    if (json_is_string(json_object_get(holder, "code")))
        *code = strdup(json_string_value(json_object_get(holder, "code")));
    else if (json_is_string(json_object_get(holder, "type")))
        *code = strdup(json_string_value(json_object_get(holder, "type")));
    if (json_is_string(json_object_get(holder, "message")))
        *message = strdup(json_string_value(json_object_get(holder, "message")));
    return *message != NULL;
}

int provider_request_add_header(provider_request_t *req, const char *line)
{
    if (req->n_headers >= PROVIDER_MAX_HEADERS)
        return -1;
    req->headers[req->n_headers] = strdup(line);
    if (!req->headers[req->n_headers])
        return -1;
    req->n_headers++;
    return 0;
}

int provider_reply_take_error(provider_reply_t *reply, const json_t *root)
{
    char *code = NULL;
    char *message = NULL;

    if (!json_object_get(root, "error"))
        return 0;
    if (!provider_error_from_json(root, &code, &message)) {
        free(message);
        message = json_dumps(json_object_get(root, "error"), JSON_COMPACT);
    }
    provider_reply_set_error(reply, code, message ? message : "provider sent an error without a message");
    reply->provider_sent_error = 1;
    free(code);
    free(message);
    return 1;
}

char *provider_join_url(const char *base, const char *fallback, const char *path)
{
    const char *query;
    size_t base_len;
    size_t query_len;
    size_t path_len = strlen(path);
    char *url;

    if (!base || !base[0])
        base = fallback;
    query = strchr(base, '?');
    base_len = query ? (size_t)(query - base) : strlen(base);
    query_len = query ? strlen(query) : 0;
    while (base_len > 0 && base[base_len - 1] == '/')
        base_len--;
    url = malloc(base_len + path_len + query_len + 1);
    if (!url)
        return NULL;
    memcpy(url, base, base_len);
    memcpy(url + base_len, path, path_len);
    memcpy(url + base_len + path_len, query ? query : "", query_len + 1);
    return url;
}

int provider_url_is_azure(const char *url)
{
    static const char *const azure_suffixes[] = {".openai.azure.com", ".cognitiveservices.azure.com"};
    const char *host;
    size_t host_len;

    if (!url)
        return 0;
    host = strstr(url, "://");
    host = host ? host + 3 : url;
    host_len = strcspn(host, ":/?#");
    for (size_t i = 0; i < sizeof(azure_suffixes) / sizeof(azure_suffixes[0]); i++) {
        size_t suffix_len = strlen(azure_suffixes[i]);

        if (host_len > suffix_len &&
            strncasecmp(host + host_len - suffix_len, azure_suffixes[i], suffix_len) == 0)
            return 1;
    }
    return 0;
}

int provider_status_retryable(long status)
{
    switch (status) {
    case 429: /* rate limited */
    case 500:
    case 502:
    case 503:
    case 504:
    case 529: /* Anthropic: overloaded */
        return 1;
    default:
        return 0;
    }
}

int provider_error_code_retryable(const char *code)
{
    static const char *const retryable_codes[] = {
        "server_error",      /* OpenAI */
        "rate_limit_exceeded",
        "api_error",         /* Anthropic */
        "overloaded_error",
        "rate_limit_error",
    };

    for (size_t i = 0; code && i < sizeof(retryable_codes) / sizeof(retryable_codes[0]); i++) {
        if (strcmp(code, retryable_codes[i]) == 0)
            return 1;
    }
    return 0;
}

int64_t provider_backoff_ceiling_ms(int attempt)
{
    int64_t ceiling_ms = PROVIDER_BACKOFF_BASE_MS;

    for (int i = 1; i < attempt && ceiling_ms < PROVIDER_BACKOFF_CAP_MS; i++)
        ceiling_ms *= 2;
    return ceiling_ms < PROVIDER_BACKOFF_CAP_MS ? ceiling_ms : PROVIDER_BACKOFF_CAP_MS;
}

const char *provider_attempts_phrase(int attempts, char *buf, size_t buf_size)
{
    snprintf(buf, buf_size, " after %d attempt%s", attempts, attempts == 1 ? "" : "s");
    return buf;
}

/* Length of the longest prefix of text[0..max_len) that does not split a
 * UTF-8 sequence; text must be longer than max_len. */
static size_t utf8_cut(const char *text, size_t max_len)
{
    size_t cut = max_len;

    /* while the first byte left out continues a sequence, leave out its lead too */
    while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80)
        cut--;
    return cut;
}

char *provider_clean_message(const char *text, size_t max_bytes, const char *secret)
{
    static const char redacted[] = "[redacted]";
    static const char ellipsis[] = "...";
    size_t secret_len = secret ? strlen(secret) : 0;
    size_t text_len = strlen(text);
    size_t n_secrets = 0;
    size_t out_len = 0;
    char *out;

    if (secret_len < 4)
        secret_len = 0; /* too short to tell apart from ordinary text */

    /* scrub the secret from the whole text before cutting, so that no cut
     * can leave a piece of it behind; a server that echoes the key may
     * change its case, so the match ignores case */
    for (size_t i = 0; secret_len && i + secret_len <= text_len; i++) {
        if (strncasecmp(text + i, secret, secret_len) == 0) {
            n_secrets++;
            i += secret_len - 1;
        }
    }
    out = malloc(text_len - n_secrets * secret_len + n_secrets * (sizeof(redacted) - 1) + sizeof(ellipsis));
    if (!out)
        return NULL;
    for (size_t i = 0; i < text_len;) {
        if (secret_len && i + secret_len <= text_len && strncasecmp(text + i, secret, secret_len) == 0) {
            memcpy(out + out_len, redacted, sizeof(redacted) - 1);
            out_len += sizeof(redacted) - 1;
            i += secret_len;
            continue;
        }
        out[out_len++] = text[i++];
    }
    out[out_len] = '\0';

    for (size_t i = 0; i < out_len; i++) {
        unsigned char c = (unsigned char)out[i];

        if (c < 0x20 || c == 0x7f)
            out[i] = ' ';
    }
    if (out_len > max_bytes) {
        size_t cut = utf8_cut(out, max_bytes);

        memcpy(out + cut, ellipsis, sizeof(ellipsis));
    }
    return out;
}

/* Returns 1 when body, after leading white space, starts like a JSON object. */
static int body_looks_like_json(const char *body, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n')
            continue;
        return body[i] == '{';
    }
    return 0;
}

char *provider_describe_status(long status, const char *body, size_t body_len, int attempts,
                               const char *secret)
{
    char phrase[48];
    char *code = NULL;
    char *message = NULL;
    char *clean_code = NULL;
    char *clean_message = NULL;
    char *text = NULL;
    json_t *root = NULL;
    size_t text_len;

    provider_attempts_phrase(attempts, phrase, sizeof(phrase));
    if (body_len == 0) {
        if (asprintf(&text, "provider returned %ld with an empty body%s", status, phrase) < 0)
            text = NULL;
        return text;
    }
    if (body_looks_like_json(body, body_len))
        root = json_loadb(body, body_len, 0, NULL);
    if (!root) {
        if (asprintf(&text, "provider returned %ld with a non-JSON body%s", status, phrase) < 0)
            text = NULL;
        return text;
    }

    if (!provider_error_from_json(root, &code, &message)) {
        /* JSON without a recognisable message: the compact body is the best description */
        free(message);
        message = json_dumps(root, JSON_COMPACT);
    }
    if (code)
        clean_code = provider_clean_message(code, 64, secret);
    if (message)
        clean_message = provider_clean_message(message, PROVIDER_MAX_MESSAGE_BYTES, secret);

    text_len = (size_t)snprintf(NULL, 0, "provider returned %ld%s%s%s%s%s", status, clean_code ? " " : "",
                                clean_code ? clean_code : "", phrase, clean_message ? ": " : "",
                                clean_message ? clean_message : "");
    text = malloc(text_len + 1);
    if (text)
        snprintf(text, text_len + 1, "provider returned %ld%s%s%s%s%s", status, clean_code ? " " : "",
                 clean_code ? clean_code : "", phrase, clean_message ? ": " : "",
                 clean_message ? clean_message : "");

    free(code);
    free(message);
    free(clean_code);
    free(clean_message);
    json_decref(root);
    return text;
}

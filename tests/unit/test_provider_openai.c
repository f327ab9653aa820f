/*
 * Tests of the OpenAI-compatible provider without a network: the request
 * built from a run, the parsing of stream chunks and plain bodies, and the
 * shared rules for retries and error texts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "provider.h"
#include "sse.h"

/* ---- request building ---- */

static run_t full_run(void)
{
    run_t run;

    memset(&run, 0, sizeof(run));
    run.prompt = "Summarize the KPIs for EU.";
    run.system = "You are a concise analyst.";
    run.provider = "openai";
    run.model = "gpt-4o-mini";
    run.temperature = 0.2;
    run.has_temperature = 1;
    run.max_tokens = 800;
    return run;
}

static int has_header(const provider_request_t *req, const char *line)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcmp(req->headers[i], line) == 0)
            return 1;
    }
    return 0;
}

static int has_header_named(const provider_request_t *req, const char *prefix)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strncasecmp(req->headers[i], prefix, strlen(prefix)) == 0)
            return 1;
    }
    return 0;
}

static void request_full_run(void **state)
{
    provider_endpoint_t endpoint = {"http://127.0.0.1:9/v1/", "sk-test-1234"};
    run_t run = full_run();
    provider_request_t req;
    json_t *body;
    json_t *messages;

    assert_int_equal(provider_openai.build_request(&endpoint, &run, &req), 0);
    assert_string_equal(req.url, "http://127.0.0.1:9/v1/chat/completions");
    assert_true(has_header(&req, "Content-Type: application/json"));
    assert_true(has_header(&req, "Authorization: Bearer sk-test-1234"));
    assert_int_equal(strlen(req.body), req.body_len);

    body = json_loads(req.body, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "model")), "gpt-4o-mini");
    messages = json_object_get(body, "messages");
    assert_int_equal(json_array_size(messages), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(messages, 0), "role")), "system");
    assert_string_equal(json_string_value(json_object_get(json_array_get(messages, 0), "content")),
                        "You are a concise analyst.");
    assert_string_equal(json_string_value(json_object_get(json_array_get(messages, 1), "role")), "user");
    assert_string_equal(json_string_value(json_object_get(json_array_get(messages, 1), "content")),
                        "Summarize the KPIs for EU.");
    assert_true(json_real_value(json_object_get(body, "temperature")) == 0.2);
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 800);
    assert_true(json_is_true(json_object_get(body, "stream")));
    assert_true(json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage")));
    /* printed the short way, as a person would write it */
    assert_non_null(strstr(req.body, "\"temperature\":0.2,"));

    json_decref(body);
    provider_request_free(&req);
    assert_null(req.url);
}

static void request_minimal_run(void **state)
{
    provider_endpoint_t endpoint = {NULL, NULL};
    provider_request_t req;
    run_t run;
    json_t *body;
    json_t *messages;

    memset(&run, 0, sizeof(run));
    run.prompt = "hi";
    assert_int_equal(provider_openai.build_request(&endpoint, &run, &req), 0);
    assert_string_equal(req.url, "https://api.openai.com/v1/chat/completions");
    assert_false(has_header_named(&req, "Authorization:"));

    body = json_loads(req.body, 0, NULL);
    assert_non_null(body);
    assert_null(json_object_get(body, "model"));
    assert_null(json_object_get(body, "temperature"));
    assert_null(json_object_get(body, "max_tokens"));
    messages = json_object_get(body, "messages");
    assert_int_equal(json_array_size(messages), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(messages, 0), "role")), "user");
    json_decref(body);
    provider_request_free(&req);
}

static void request_empty_key_sends_none(void **state)
{
    provider_endpoint_t endpoint = {"http://127.0.0.1:9", ""};
    run_t run = full_run();
    provider_request_t req;

    assert_int_equal(provider_openai.build_request(&endpoint, &run, &req), 0);
    assert_string_equal(req.url, "http://127.0.0.1:9/chat/completions");
    assert_false(has_header_named(&req, "Authorization:"));
    provider_request_free(&req);
}

static void request_temperature_zero_sent(void **state)
{
    provider_endpoint_t endpoint = {NULL, NULL};
    run_t run = full_run();
    provider_request_t req;

    run.temperature = 0.0;
    assert_int_equal(provider_openai.build_request(&endpoint, &run, &req), 0);
    assert_non_null(strstr(req.body, "\"temperature\":0.0"));
    provider_request_free(&req);
}

static void request_invalid_utf8_rejected(void **state)
{
    provider_endpoint_t endpoint = {NULL, NULL};
    run_t run = full_run();
    provider_request_t req;

    run.prompt = "bad \xC3 byte";
    assert_int_equal(provider_openai.build_request(&endpoint, &run, &req), -1);
    assert_null(req.url);
    assert_null(req.body);
    assert_int_equal(req.n_headers, 0);
}

static void request_join_url(void **state)
{
    char *url;

    url = provider_join_url("http://h/v1///", "x", "/chat/completions");
    assert_string_equal(url, "http://h/v1/chat/completions");
    free(url);
    url = provider_join_url("", "https://api.openai.com/v1", "/chat/completions");
    assert_string_equal(url, "https://api.openai.com/v1/chat/completions");
    free(url);
    url = provider_join_url("https://r.openai.azure.com/openai/deployments/d/?api-version=2024-06-01", "x",
                            "/chat/completions");
    assert_string_equal(url, "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01");
    free(url);
}

static void request_azure_key_header(void **state)
{
    provider_endpoint_t endpoint = {"https://res.openai.azure.com/openai/deployments/gpt?api-version=2024-06-01",
                                    "azure-key-1"};
    run_t run = full_run();
    provider_request_t req;

    assert_int_equal(provider_openai.build_request(&endpoint, &run, &req), 0);
    assert_true(has_header(&req, "api-key: azure-key-1"));
    assert_false(has_header_named(&req, "Authorization:"));
    provider_request_free(&req);

    assert_true(provider_url_is_azure("https://x.cognitiveservices.azure.com/openai/v1"));
    assert_false(provider_url_is_azure("https://openai.azure.com.evil.example/v1"));
    assert_false(provider_url_is_azure("http://127.0.0.1:8000/v1"));
}

/* ---- stream chunks ---- */

#define MAX_CHUNKS 8

typedef struct {
    const char *name;
    const char *chunks[MAX_CHUNKS]; /* each one event's data; NULL ends the list */
    int fails_at;                   /* index of the chunk that returns -1, or -1 */
    const char *text;               /* expected output, NULL when none was collected */
    const char *finish_reason;
    int complete;
    int done;
    int has_usage;
    int64_t input_tokens;
    int64_t output_tokens;
    const char *error_code;
    const char *error_message;
    int provider_sent_error;
} chunk_case_t;

static const chunk_case_t chunk_cases[] = {
    {"role, content, finish, usage, done",
     {"{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}],\"usage\":null}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}",
      "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}",
      "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}", "[DONE]", NULL},
     -1, "Hello", "stop", 1, 1, 1, 5, 2, NULL, NULL, 0},
    {"first chunk with empty choices",
     {"{\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}", NULL},
     -1, "ok", "stop", 1, 0, 0, 0, 0, NULL, NULL, 0},
    {"llama.cpp timings and usage in the last chunk",
     {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"created\":1,"
      "\"system_fingerprint\":\"b1\",\"object\":\"chat.completion.chunk\"}",
      "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":{\"completion_tokens\":1,"
      "\"prompt_tokens\":3,\"total_tokens\":4},\"timings\":{\"prompt_n\":3,\"predicted_per_second\":50.5}}",
      "[DONE]", NULL},
     -1, "Hi", "length", 1, 1, 1, 3, 1, NULL, NULL, 0},
    {"null content and reasoning deltas ignored",
     {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"reasoning_content\":\"think\"}}]}",
      "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}}]}", NULL},
     -1, "A", NULL, 0, 0, 0, 0, 0, NULL, NULL, 0},
    {"second choice ignored",
     {"{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"B\"}},{\"index\":0,\"delta\":{\"content\":\"A\"}}]}", NULL},
     -1, "A", NULL, 0, 0, 0, 0, 0, NULL, NULL, 0},
    {"error object in the stream",
     {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}",
      "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}", NULL},
     1, "par", NULL, 0, 0, 0, 0, 0, "server_error", "The server had an error", 1},
    {"chunk that is not JSON",
     {"<html><body>502</body></html>", NULL},
     0, NULL, NULL, 0, 0, 0, 0, 0, NULL, "provider sent a stream chunk that is not a JSON object", 0},
    {"chunk that is a JSON array",
     {"[1,2]", NULL},
     0, NULL, NULL, 0, 0, 0, 0, 0, NULL, "provider sent a stream chunk that is not a JSON object", 0},
    {"usage without tokens ignored",
     {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}],\"usage\":{}}", NULL},
     -1, "x", "stop", 1, 0, 0, 0, 0, NULL, NULL, 0},
    {"utf-8 content across chunks",
     {"{\"choices\":[{\"delta\":{\"content\":\"caf\\u00e9 \"}}]}",
      "{\"choices\":[{\"delta\":{\"content\":\"\xE4\xB8\x96\xE7\x95\x8C\"},\"finish_reason\":\"stop\"}]}", NULL},
     -1, "caf\xC3\xA9 \xE4\xB8\x96\xE7\x95\x8C", "stop", 1, 0, 0, 0, 0, NULL, NULL, 0},
    {"done without a finish reason",
     {"{\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}", "[DONE]", NULL},
     -1, "cut", NULL, 0, 1, 0, 0, 0, NULL, NULL, 0},
};

static void check_optional_string(const char *what, const char *case_name, const char *got, const char *want)
{
    if (!want && got)
        fail_msg("case \"%s\": %s \"%s\", expected none", case_name, what, got);
    if (want && (!got || strcmp(got, want) != 0))
        fail_msg("case \"%s\": %s \"%s\", expected \"%s\"", case_name, what, got ? got : "(none)", want);
}

static void chunks_table(void **state)
{
    for (size_t i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++) {
        const chunk_case_t *c = &chunk_cases[i];
        provider_reply_t reply;
        int failed_at = -1;

        memset(&reply, 0, sizeof(reply));
        for (int k = 0; k < MAX_CHUNKS && c->chunks[k]; k++) {
            sse_event_t event = {"message", 7, c->chunks[k], strlen(c->chunks[k]), "", 0};

            if (provider_openai.parse_event(&reply, &event) != 0) {
                failed_at = k;
                break;
            }
        }
        if (failed_at != c->fails_at)
            fail_msg("case \"%s\": failed at chunk %d, expected %d", c->name, failed_at, c->fails_at);
        check_optional_string("text", c->name, reply.text, c->text);
        check_optional_string("finish reason", c->name, reply.finish_reason, c->finish_reason);
        check_optional_string("error code", c->name, reply.error_code, c->error_code);
        check_optional_string("error message", c->name, reply.error_message, c->error_message);
        if (reply.complete != c->complete)
            fail_msg("case \"%s\": complete %d, expected %d", c->name, reply.complete, c->complete);
        if (reply.done != c->done)
            fail_msg("case \"%s\": done %d, expected %d", c->name, reply.done, c->done);
        if (reply.has_usage != c->has_usage || reply.input_tokens != c->input_tokens ||
            reply.output_tokens != c->output_tokens)
            fail_msg("case \"%s\": usage %d %lld/%lld, expected %d %lld/%lld", c->name, reply.has_usage,
                     (long long)reply.input_tokens, (long long)reply.output_tokens, c->has_usage,
                     (long long)c->input_tokens, (long long)c->output_tokens);
        if (reply.provider_sent_error != c->provider_sent_error)
            fail_msg("case \"%s\": provider_sent_error %d, expected %d", c->name, reply.provider_sent_error,
                     c->provider_sent_error);
        provider_reply_free(&reply);
    }
}

/* The chunks of a whole stream, run through the SSE parser cut at every point. */
typedef struct {
    provider_reply_t reply;
    int failed;
} stream_state_t;

static int feed_openai(void *ctx, const sse_event_t *event)
{
    stream_state_t *st = ctx;

    if (provider_openai.parse_event(&st->reply, event) != 0)
        st->failed = 1;
    return st->failed;
}

static void stream_cut_everywhere(void **state)
{
    static const char stream[] =
        ": keep-alive\r\n\r\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Usage arrives \"}}]}\r\n\r\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"last: \xE4\xB8\x96\xE7\x95\x8C.\"}}]}\r\n\r\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7}}\r\n\r\n"
        "data: [DONE]\r\n\r\n";
    size_t len = sizeof(stream) - 1;

    for (size_t cut = 0; cut <= len; cut++) {
        stream_state_t st;
        sse_parser_t parser;

        memset(&st, 0, sizeof(st));
        sse_parser_init(&parser, feed_openai, &st, 0);
        assert_int_equal(sse_parser_feed(&parser, stream, cut), 0);
        assert_int_equal(sse_parser_feed(&parser, stream + cut, len - cut), 0);
        assert_false(st.failed);
        assert_string_equal(st.reply.text, "Usage arrives last: \xE4\xB8\x96\xE7\x95\x8C.");
        assert_string_equal(st.reply.finish_reason, "stop");
        assert_true(st.reply.complete);
        assert_true(st.reply.done);
        assert_int_equal(st.reply.input_tokens, 11);
        assert_int_equal(st.reply.output_tokens, 7);
        sse_parser_free(&parser);
        provider_reply_free(&st.reply);
    }
}

/* ---- non-streaming bodies ---- */

static void body_chat_completion(void **state)
{
    static const char body[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
        "\"assistant\",\"content\":\"Plain reply.\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,"
        "\"completion_tokens\":2,\"total_tokens\":6}}";
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_openai.parse_body(&reply, body, strlen(body)), 0);
    assert_string_equal(reply.text, "Plain reply.");
    assert_string_equal(reply.finish_reason, "stop");
    assert_true(reply.complete);
    assert_true(reply.has_usage);
    assert_int_equal(reply.input_tokens, 4);
    assert_int_equal(reply.output_tokens, 2);
    provider_reply_free(&reply);
}

static void body_null_content(void **state)
{
    static const char body[] =
        "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"refusal\":\"no\"},"
        "\"finish_reason\":\"stop\"}]}";
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_openai.parse_body(&reply, body, strlen(body)), 0);
    assert_string_equal(reply.text, "");
    assert_false(reply.has_usage);
    provider_reply_free(&reply);
}

static void body_error_object(void **state)
{
    static const char body[] =
        "{\"error\":{\"message\":\"Bad things\",\"type\":\"invalid_request_error\",\"code\":null}}";
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_openai.parse_body(&reply, body, strlen(body)), -1);
    assert_string_equal(reply.error_code, "invalid_request_error");
    assert_string_equal(reply.error_message, "Bad things");
    assert_true(reply.provider_sent_error);
    provider_reply_free(&reply);
}

static void body_without_choices(void **state)
{
    static const char body[] = "{\"choices\":[]}";
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_openai.parse_body(&reply, body, strlen(body)), -1);
    assert_string_equal(reply.error_message, "provider reply has no choices[0].message");
    assert_false(reply.provider_sent_error);
    provider_reply_free(&reply);
}

/* ---- error texts of non-2xx replies ---- */

typedef struct {
    const char *name;
    long status;
    const char *body;
    int attempts;
    const char *secret;
    const char *expected;
} status_case_t;

static const status_case_t status_cases[] = {
    {"openai model not found", 404,
     "{\"error\":{\"message\":\"The model 'x' does not exist\",\"type\":\"invalid_request_error\",\"param\":null,"
     "\"code\":\"model_not_found\"}}",
     1, NULL, "provider returned 404 model_not_found after 1 attempt: The model 'x' does not exist"},
    {"openai without code uses type", 400,
     "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"code\":null}}", 1, NULL,
     "provider returned 400 invalid_request_error after 1 attempt: bad"},
    {"html page summarised", 502, "<html>\r\n<head><title>502 Bad Gateway</title></head></html>", 4, NULL,
     "provider returned 502 with a non-JSON body after 4 attempts"},
    {"empty body", 503, "", 4, NULL, "provider returned 503 with an empty body after 4 attempts"},
    {"plain text body", 500, "Internal Server Error", 2, NULL,
     "provider returned 500 with a non-JSON body after 2 attempts"},
    {"ollama error string", 404, "{\"error\":\"model 'llama9' not found\"}", 1, NULL,
     "provider returned 404 after 1 attempt: model 'llama9' not found"},
    {"vllm top-level message", 404,
     "{\"object\":\"error\",\"message\":\"The model `m` does not exist.\",\"type\":\"NotFoundError\",\"param\":null,"
     "\"code\":404}",
     1, NULL, "provider returned 404 NotFoundError after 1 attempt: The model `m` does not exist."},
    {"fastapi detail", 404, "{\"detail\":\"Not Found\"}", 1, NULL, "provider returned 404 after 1 attempt: Not Found"},
    {"anthropic error", 529,
     "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", 4, NULL,
     "provider returned 529 overloaded_error after 4 attempts: Overloaded"},
    {"json without a message", 418, "{\"teapot\":true}", 1, NULL,
     "provider returned 418 after 1 attempt: {\"teapot\":true}"},
    {"api key scrubbed", 401,
     "{\"error\":{\"message\":\"Incorrect API key provided: sk-secret-42. Key sk-secret-42 again.\","
     "\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}",
     1, "sk-secret-42",
     "provider returned 401 invalid_api_key after 1 attempt: Incorrect API key provided: [redacted]. Key [redacted] "
     "again."},
    {"control bytes replaced", 400, "{\"error\":{\"message\":\"line one\\nline two\\ttab\"}}", 1, NULL,
     "provider returned 400 after 1 attempt: line one line two tab"},
};

static void status_texts_table(void **state)
{
    for (size_t i = 0; i < sizeof(status_cases) / sizeof(status_cases[0]); i++) {
        const status_case_t *c = &status_cases[i];
        char *text = provider_describe_status(c->status, c->body, strlen(c->body), c->attempts, c->secret);

        assert_non_null(text);
        if (strcmp(text, c->expected) != 0)
            fail_msg("case \"%s\": \"%s\", expected \"%s\"", c->name, text, c->expected);
        free(text);
    }
}

static void long_message_cut(void **state)
{
    char message[2000];
    char *clean;

    /* a two-byte character straddles the limit: the cut falls before it */
    memset(message, 'a', sizeof(message));
    message[PROVIDER_MAX_MESSAGE_BYTES - 1] = '\xC3';
    message[PROVIDER_MAX_MESSAGE_BYTES] = '\xA9';
    message[sizeof(message) - 1] = '\0';
    clean = provider_clean_message(message, PROVIDER_MAX_MESSAGE_BYTES, NULL);
    assert_non_null(clean);
    assert_int_equal(strlen(clean), PROVIDER_MAX_MESSAGE_BYTES - 1 + 3);
    assert_string_equal(clean + PROVIDER_MAX_MESSAGE_BYTES - 1, "...");
    free(clean);
}

static void secret_scrubbed_before_cut(void **state)
{
    char *clean = provider_clean_message("key=abcdefgh", 6, "abcdefgh");

    /* "key=[redacted]" cut to 6 bytes; no byte of the secret survives */
    assert_string_equal(clean, "key=[r...");
    free(clean);
    clean = provider_clean_message("a abc b", 100, "abc");
    assert_string_equal(clean, "a abc b"); /* secrets under 4 bytes are not searched */
    free(clean);
}

static void secret_scrubbed_any_case(void **state)
{
    char *clean = provider_clean_message("header was bearer SK-TEST-Secret1", 100, "sk-test-SECRET1");

    assert_string_equal(clean, "header was bearer [redacted]");
    free(clean);
}

/* ---- retry rules ---- */

static void retryable_statuses(void **state)
{
    static const long retryable[] = {429, 500, 502, 503, 504, 529};
    static const long final[] = {200, 301, 400, 401, 403, 404, 408, 409, 422, 501, 505};

    for (size_t i = 0; i < sizeof(retryable) / sizeof(retryable[0]); i++) {
        if (!provider_status_retryable(retryable[i]))
            fail_msg("status %ld should be retried", retryable[i]);
    }
    for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++) {
        if (provider_status_retryable(final[i]))
            fail_msg("status %ld should not be retried", final[i]);
    }
    assert_true(provider_error_code_retryable("overloaded_error"));
    assert_true(provider_error_code_retryable("server_error"));
    assert_false(provider_error_code_retryable("invalid_request_error"));
    assert_false(provider_error_code_retryable(NULL));
}

static void backoff_ceilings(void **state)
{
    assert_int_equal(provider_backoff_ceiling_ms(1), 500);
    assert_int_equal(provider_backoff_ceiling_ms(2), 1000);
    assert_int_equal(provider_backoff_ceiling_ms(3), 2000);
    assert_int_equal(provider_backoff_ceiling_ms(4), 4000);
    assert_int_equal(provider_backoff_ceiling_ms(7), 30000);
    assert_int_equal(provider_backoff_ceiling_ms(1000), 30000);
}

static void attempts_phrase(void **state)
{
    char buf[48];

    assert_string_equal(provider_attempts_phrase(1, buf, sizeof(buf)), " after 1 attempt");
    assert_string_equal(provider_attempts_phrase(4, buf, sizeof(buf)), " after 4 attempts");
}

/* ---- registry and echo ---- */

static void registry_names(void **state)
{
    assert_true(provider_known("echo"));
    assert_true(provider_known("openai"));
    assert_true(provider_known("anthropic"));
    assert_false(provider_known("OpenAI"));
    assert_false(provider_known(""));
    assert_false(provider_known(NULL));
    assert_ptr_equal(provider_find("openai"), &provider_openai);
}

static void echo_returns_prompt(void **state)
{
    provider_reply_t reply;
    run_t run;

    memset(&run, 0, sizeof(run));
    memset(&reply, 0, sizeof(reply));
    run.prompt = "  exact {{text}}\n";
    assert_int_equal(provider_echo.run_local(&run, &reply), 0);
    assert_string_equal(reply.text, "  exact {{text}}\n");
    assert_true(reply.complete);
    assert_false(reply.has_usage);
    provider_reply_free(&reply);

    run.prompt = "";
    assert_int_equal(provider_echo.run_local(&run, &reply), 0);
    assert_non_null(reply.text);
    assert_string_equal(reply.text, "");
    provider_reply_free(&reply);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_full_run),
        cmocka_unit_test(request_minimal_run),
        cmocka_unit_test(request_empty_key_sends_none),
        cmocka_unit_test(request_temperature_zero_sent),
        cmocka_unit_test(request_invalid_utf8_rejected),
        cmocka_unit_test(request_join_url),
        cmocka_unit_test(request_azure_key_header),
        cmocka_unit_test(chunks_table),
        cmocka_unit_test(stream_cut_everywhere),
        cmocka_unit_test(body_chat_completion),
        cmocka_unit_test(body_null_content),
        cmocka_unit_test(body_error_object),
        cmocka_unit_test(body_without_choices),
        cmocka_unit_test(status_texts_table),
        cmocka_unit_test(long_message_cut),
        cmocka_unit_test(secret_scrubbed_before_cut),
        cmocka_unit_test(secret_scrubbed_any_case),
        cmocka_unit_test(retryable_statuses),
        cmocka_unit_test(backoff_ceilings),
        cmocka_unit_test(attempts_phrase),
        cmocka_unit_test(registry_names),
        cmocka_unit_test(echo_returns_prompt),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

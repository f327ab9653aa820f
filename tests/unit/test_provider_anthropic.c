/*
 * Tests of the Anthropic Messages provider without a network: the request
 * built from a run, and the parsing of stream events and plain bodies.
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

static int has_header(const provider_request_t *req, const char *line)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcmp(req->headers[i], line) == 0)
            return 1;
    }
    return 0;
}

static void request_full_run(void **state)
{
    provider_endpoint_t endpoint = {"http://127.0.0.1:9/", "ak-test-1234"};
    provider_request_t req;
    json_t *body;
    json_t *message;
    run_t run;

    memset(&run, 0, sizeof(run));
    run.prompt = "Hello";
    run.system = "Be brief.";
    run.model = "claude-test";
    run.temperature = 0.5;
    run.has_temperature = 1;
    run.max_tokens = 100;
    assert_int_equal(provider_anthropic.build_request(&endpoint, &run, &req), 0);
    assert_string_equal(req.url, "http://127.0.0.1:9/v1/messages");
    assert_true(has_header(&req, "x-api-key: ak-test-1234"));
    assert_true(has_header(&req, "anthropic-version: 2023-06-01"));

    body = json_loads(req.body, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "model")), "claude-test");
    assert_string_equal(json_string_value(json_object_get(body, "system")), "Be brief.");
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 100);
    assert_true(json_real_value(json_object_get(body, "temperature")) == 0.5);
    assert_true(json_is_true(json_object_get(body, "stream")));
    assert_int_equal(json_array_size(json_object_get(body, "messages")), 1);
    message = json_array_get(json_object_get(body, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(message, "role")), "user");
    assert_string_equal(json_string_value(json_object_get(message, "content")), "Hello");
    json_decref(body);
    provider_request_free(&req);
}

static void request_defaults(void **state)
{
    provider_endpoint_t endpoint = {NULL, NULL};
    provider_request_t req;
    json_t *body;
    run_t run;

    memset(&run, 0, sizeof(run));
    run.prompt = "Hello";
    assert_int_equal(provider_anthropic.build_request(&endpoint, &run, &req), 0);
    assert_string_equal(req.url, "https://api.anthropic.com/v1/messages");
    for (size_t i = 0; i < req.n_headers; i++)
        assert_null(strstr(req.headers[i], "x-api-key"));

    body = json_loads(req.body, 0, NULL);
    assert_non_null(body);
    /* the API requires max_tokens, so a default is sent */
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), PROVIDER_ANTHROPIC_DEFAULT_MAX_TOKENS);
    assert_null(json_object_get(body, "system"));
    assert_null(json_object_get(body, "temperature"));
    json_decref(body);
    provider_request_free(&req);
}

typedef struct {
    provider_reply_t reply;
    int failed;
} stream_state_t;

static int feed_anthropic(void *ctx, const sse_event_t *event)
{
    stream_state_t *st = ctx;

    if (provider_anthropic.parse_event(&st->reply, event) != 0)
        st->failed = 1;
    return st->failed;
}

static void stream_cut_everywhere(void **state)
{
    static const char stream[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":9,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: ping\n"
        "data: {\"type\": \"ping\"}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"Anthropic \"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"works.\"}}\n\n"
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
        "\"usage\":{\"output_tokens\":4}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    size_t len = sizeof(stream) - 1;

    for (size_t cut = 0; cut <= len; cut++) {
        stream_state_t st;
        sse_parser_t parser;

        memset(&st, 0, sizeof(st));
        sse_parser_init(&parser, feed_anthropic, &st, 0);
        assert_int_equal(sse_parser_feed(&parser, stream, cut), 0);
        assert_int_equal(sse_parser_feed(&parser, stream + cut, len - cut), 0);
        assert_false(st.failed);
        assert_string_equal(st.reply.text, "Anthropic works.");
        assert_string_equal(st.reply.finish_reason, "end_turn");
        assert_true(st.reply.complete);
        assert_true(st.reply.done);
        assert_true(st.reply.has_usage);
        assert_int_equal(st.reply.input_tokens, 9);
        assert_int_equal(st.reply.output_tokens, 4);
        sse_parser_free(&parser);
        provider_reply_free(&st.reply);
    }
}

static void stream_error_event(void **state)
{
    static const char data[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";
    sse_event_t event = {"error", 5, data, sizeof(data) - 1, "", 0};
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_anthropic.parse_event(&reply, &event), -1);
    assert_string_equal(reply.error_code, "overloaded_error");
    assert_string_equal(reply.error_message, "Overloaded");
    assert_true(reply.provider_sent_error);
    assert_true(provider_error_code_retryable(reply.error_code));
    provider_reply_free(&reply);
}

static void stream_ends_without_stop_reason(void **state)
{
    static const char data[] =
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"cut\"}}";
    sse_event_t event = {"content_block_delta", 19, data, sizeof(data) - 1, "", 0};
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_anthropic.parse_event(&reply, &event), 0);
    assert_string_equal(reply.text, "cut");
    assert_false(reply.complete);
    provider_reply_free(&reply);
}

static void body_message(void **state)
{
    static const char body[] =
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\","
        "\"content\":[{\"type\":\"text\",\"text\":\"One \"},"
        "{\"type\":\"tool_use\",\"id\":\"t\"},{\"type\":\"text\",\"text\":\"two.\"}],\"stop_reason\":\"end_turn\","
        "\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}";
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_anthropic.parse_body(&reply, body, strlen(body)), 0);
    assert_string_equal(reply.text, "One two.");
    assert_string_equal(reply.finish_reason, "end_turn");
    assert_true(reply.complete);
    assert_int_equal(reply.input_tokens, 3);
    assert_int_equal(reply.output_tokens, 2);
    provider_reply_free(&reply);
}

static void body_without_content(void **state)
{
    static const char body[] = "{\"type\":\"message\"}";
    provider_reply_t reply;

    memset(&reply, 0, sizeof(reply));
    assert_int_equal(provider_anthropic.parse_body(&reply, body, strlen(body)), -1);
    assert_string_equal(reply.error_message, "provider reply has no content array");
    assert_false(reply.provider_sent_error);
    provider_reply_free(&reply);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_full_run),
        cmocka_unit_test(request_defaults),
        cmocka_unit_test(stream_cut_everywhere),
        cmocka_unit_test(stream_error_event),
        cmocka_unit_test(stream_ends_without_stop_reason),
        cmocka_unit_test(body_message),
        cmocka_unit_test(body_without_content),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

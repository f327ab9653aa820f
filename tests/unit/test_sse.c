/*
 * Tests of the Server-Sent Events parser. Every stream of the table is fed
 * four ways: whole, cut in two at every point, cut in three at every pair of
 * points, and byte by byte. Each way must yield exactly the expected events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sse.h"

#define MAX_EVENTS 8

typedef struct {
    const char *type;
    const char *data;
    size_t data_len; /* 0 means strlen(data) */
    const char *last_id;
} expected_event_t;

typedef struct {
    const char *name;
    const char *stream;
    size_t stream_len; /* 0 means strlen(stream) */
    size_t n_events;
    expected_event_t events[MAX_EVENTS];
} sse_case_t;

#define BYTES(s) s, sizeof(s) - 1

static const sse_case_t cases[] = {
    {"single data line", "data: hello\n\n", 0, 1, {{"message", "hello", 0, ""}}},
    {"no space after colon", "data:hello\n\n", 0, 1, {{"message", "hello", 0, ""}}},
    {"only one space removed", "data:  two\n\n", 0, 1, {{"message", " two", 0, ""}}},
    {"colon inside value", "data: a:b: c\n\n", 0, 1, {{"message", "a:b: c", 0, ""}}},
    {"crlf endings", "data: a\r\n\r\n", 0, 1, {{"message", "a", 0, ""}}},
    {"cr endings", "data: a\r\rdata: b\r\r", 0, 2, {{"message", "a", 0, ""}, {"message", "b", 0, ""}}},
    {"mixed endings", "data: a\r\ndata: b\rdata: c\n\r\n", 0, 1, {{"message", "a\nb\nc", 0, ""}}},
    {"multi-line data", "data: a\ndata: b\ndata:\n\n", 0, 1, {{"message", "a\nb\n", 0, ""}}},
    {"data without colon", "data\n\n", 0, 1, {{"message", "", 0, ""}}},
    {"data with only a space", "data: \n\n", 0, 1, {{"message", "", 0, ""}}},
    {"comment lines", ": keep-alive\n\n:\ndata: x\n: inside\n\n", 0, 1, {{"message", "x", 0, ""}}},
    {"event type", "event: delta\ndata: {}\n\n", 0, 1, {{"delta", "{}", 0, ""}}},
    {"event type reset", "event: a\ndata: 1\n\ndata: 2\n\n", 0, 2, {{"a", "1", 0, ""}, {"message", "2", 0, ""}}},
    {"type without data", "event: ping\n\ndata: x\n\n", 0, 1, {{"message", "x", 0, ""}}},
    {"last event type wins", "event: a\nevent: b\ndata: x\n\n", 0, 1, {{"b", "x", 0, ""}}},
    {"unknown field", "foo: bar\nretry: 10\ndata: x\n\n", 0, 1, {{"message", "x", 0, ""}}},
    {"space before colon", "data : x\n\n", 0, 0, {{0}}},
    {"final event unterminated", "data: a\n\ndata: b\n", 0, 1, {{"message", "a", 0, ""}}},
    {"final line unterminated", "data: a\n\ndata: b", 0, 1, {{"message", "a", 0, ""}}},
    {"extra blank lines", "\n\ndata: a\n\n\n\n", 0, 1, {{"message", "a", 0, ""}}},
    {"id persists", "id: 7\ndata: x\n\ndata: y\n\n", 0, 2, {{"message", "x", 0, "7"}, {"message", "y", 0, "7"}}},
    {"empty id resets", "id: 7\ndata: x\n\nid\ndata: y\n\n", 0, 2, {{"message", "x", 0, "7"}, {"message", "y", 0, ""}}},
    {"id with nul ignored", BYTES("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"), 2,
     {{"message", "a", 0, "1"}, {"message", "b", 0, "1"}}},
    {"nul inside data", BYTES("data: a\0b\n\n"), 1, {{"message", "a\0b", 3, ""}}},
    {"byte order mark", "\xEF\xBB\xBF" "data: a\n\n", 0, 1, {{"message", "a", 0, ""}}},
    {"second bom not stripped", "\xEF\xBB\xBF" "data: a\n\n\xEF\xBB\xBF" "data: b\n\n", 0, 1,
     {{"message", "a", 0, ""}}},
    {"bom then blank line", "\xEF\xBB\xBF\n" "data: a\n\n", 0, 1, {{"message", "a", 0, ""}}},
    {"utf-8 payload", "data: caf\xC3\xA9 \xE2\x82\xAC\n\n", 0, 1, {{"message", "caf\xC3\xA9 \xE2\x82\xAC", 0, ""}}},
    {"openai chunks",
     "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
     "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
     "data: [DONE]\n\n",
     0, 3,
     {{"message", "{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}", 0, ""},
      {"message", "{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}", 0, ""},
      {"message", "[DONE]", 0, ""}}},
    {"anthropic events",
     "event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
     "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n",
     0, 2, {{"message_start", "{\"type\":\"message_start\"}", 0, ""}, {"ping", "{\"type\": \"ping\"}", 0, ""}}},
    {"empty stream", "", 0, 0, {{0}}},
};

typedef struct {
    size_t n;
    char *type[MAX_EVENTS + 1];
    char *data[MAX_EVENTS + 1];
    size_t data_len[MAX_EVENTS + 1];
    char *last_id[MAX_EVENTS + 1];
} collected_t;

static char *copy_bytes(const char *bytes, size_t len)
{
    char *copy = malloc(len + 1);

    assert_non_null(copy);
    memcpy(copy, bytes, len);
    copy[len] = '\0';
    return copy;
}

static int collect_event(void *ctx, const sse_event_t *event)
{
    collected_t *got = ctx;

    assert_true(got->n <= MAX_EVENTS);
    assert_int_equal(strlen(event->type), event->type_len);
    assert_int_equal(strlen(event->last_id), event->last_id_len);
    assert_int_equal(event->data[event->data_len], '\0');
    got->type[got->n] = copy_bytes(event->type, event->type_len);
    got->data[got->n] = copy_bytes(event->data, event->data_len);
    got->data_len[got->n] = event->data_len;
    got->last_id[got->n] = copy_bytes(event->last_id, event->last_id_len);
    got->n++;
    return 0;
}

static void collected_free(collected_t *got)
{
    for (size_t i = 0; i < got->n; i++) {
        free(got->type[i]);
        free(got->data[i]);
        free(got->last_id[i]);
    }
    memset(got, 0, sizeof(*got));
}

static void check_events(const sse_case_t *c, const collected_t *got, const char *how)
{
    if (got->n != c->n_events)
        fail_msg("case \"%s\" fed %s: %zu events, expected %zu", c->name, how, got->n, c->n_events);
    for (size_t i = 0; i < c->n_events; i++) {
        const expected_event_t *want = &c->events[i];
        size_t want_len = want->data_len ? want->data_len : strlen(want->data);

        if (strcmp(got->type[i], want->type) != 0)
            fail_msg("case \"%s\" fed %s: event %zu type \"%s\", expected \"%s\"", c->name, how, i, got->type[i],
                     want->type);
        if (got->data_len[i] != want_len || memcmp(got->data[i], want->data, want_len) != 0)
            fail_msg("case \"%s\" fed %s: event %zu data \"%s\", expected \"%s\"", c->name, how, i, got->data[i],
                     want->data);
        if (strcmp(got->last_id[i], want->last_id) != 0)
            fail_msg("case \"%s\" fed %s: event %zu id \"%s\", expected \"%s\"", c->name, how, i,
                     got->last_id[i], want->last_id);
    }
}

/* Feeds the stream in pieces that end at cut points cuts[0..n_cuts), in order. */
static void run_case_cut(const sse_case_t *c, const size_t *cuts, size_t n_cuts, const char *how)
{
    size_t len = c->stream_len ? c->stream_len : strlen(c->stream);
    collected_t got = {0};
    sse_parser_t parser;
    size_t start = 0;

    sse_parser_init(&parser, collect_event, &got, 0);
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;

        assert_int_equal(sse_parser_feed(&parser, c->stream + start, end - start), 0);
        start = end;
    }
    check_events(c, &got, how);
    collected_free(&got);
    sse_parser_free(&parser);
}

static void sse_table_whole(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case_cut(&cases[i], NULL, 0, "whole");
}

static void sse_table_every_split(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const sse_case_t *c = &cases[i];
        size_t len = c->stream_len ? c->stream_len : strlen(c->stream);

        for (size_t cut = 0; cut <= len; cut++) {
            char how[64];

            snprintf(how, sizeof(how), "cut at %zu", cut);
            run_case_cut(c, &cut, 1, how);
        }
    }
}

static void sse_table_every_two_splits(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const sse_case_t *c = &cases[i];
        size_t len = c->stream_len ? c->stream_len : strlen(c->stream);

        for (size_t a = 0; a <= len; a++) {
            for (size_t b = a; b <= len; b++) {
                size_t cuts[2] = {a, b};
                char how[64];

                snprintf(how, sizeof(how), "cut at %zu and %zu", a, b);
                run_case_cut(c, cuts, 2, how);
            }
        }
    }
}

static void sse_table_byte_by_byte(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const sse_case_t *c = &cases[i];
        size_t len = c->stream_len ? c->stream_len : strlen(c->stream);
        size_t *cuts = calloc(len + 1, sizeof(*cuts));

        assert_non_null(cuts);
        for (size_t k = 0; k < len; k++)
            cuts[k] = k;
        run_case_cut(c, cuts, len, "byte by byte");
        free(cuts);
    }
}

static void sse_retry_field(void **state)
{
    sse_parser_t parser;
    const char *stream = "retry: 1500\nretry: 12x\nretry:\ndata: a\n\n";

    sse_parser_init(&parser, NULL, NULL, 0);
    assert_int_equal(sse_parser_retry_ms(&parser), -1);
    assert_int_equal(sse_parser_feed(&parser, stream, strlen(stream)), 0);
    assert_int_equal(sse_parser_retry_ms(&parser), 1500);
    sse_parser_free(&parser);
}

static void sse_partial_event_reported(void **state)
{
    sse_parser_t parser;

    sse_parser_init(&parser, NULL, NULL, 0);
    assert_int_equal(sse_parser_has_partial_event(&parser), 0);
    assert_int_equal(sse_parser_feed(&parser, "dat", 3), 0);
    assert_int_equal(sse_parser_has_partial_event(&parser), 1);
    assert_int_equal(sse_parser_feed(&parser, "a: x\n", 5), 0);
    assert_int_equal(sse_parser_has_partial_event(&parser), 1);
    assert_int_equal(sse_parser_feed(&parser, "\n", 1), 0);
    assert_int_equal(sse_parser_has_partial_event(&parser), 0);
    assert_int_equal(sse_parser_feed(&parser, ": comment\n", 10), 0);
    assert_int_equal(sse_parser_has_partial_event(&parser), 0);
    sse_parser_free(&parser);
}

static void sse_line_too_large(void **state)
{
    const char *stream = "data: 0123456789abcdef0123456789\n\n";
    size_t len = strlen(stream);

    /* whole, and cut at every point: the limit holds for buffered lines too */
    for (size_t cut = 0; cut <= len; cut++) {
        collected_t got = {0};
        sse_parser_t parser;
        int rc;

        sse_parser_init(&parser, collect_event, &got, 16);
        rc = sse_parser_feed(&parser, stream, cut);
        if (rc == 0)
            rc = sse_parser_feed(&parser, stream + cut, len - cut);
        assert_int_equal(rc, SSE_ERR_TOO_LARGE);
        assert_int_equal(got.n, 0);
        assert_int_equal(sse_parser_feed(&parser, "data: x\n\n", 9), SSE_ERR_TOO_LARGE);
        sse_parser_free(&parser);
    }
}

static void sse_event_data_too_large(void **state)
{
    const char *stream = "data: 0123456789\ndata: 0123456789\n\n";
    collected_t got = {0};
    sse_parser_t parser;

    /* each line fits in 16 bytes, their sum does not */
    sse_parser_init(&parser, collect_event, &got, 16);
    assert_int_equal(sse_parser_feed(&parser, stream, strlen(stream)), SSE_ERR_TOO_LARGE);
    assert_int_equal(got.n, 0);
    sse_parser_free(&parser);
}

static int stop_on_second(void *ctx, const sse_event_t *event)
{
    int *count = ctx;

    (*count)++;
    return *count == 2 ? 7 : 0;
}

static void sse_callback_stops_parser(void **state)
{
    const char *stream = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    sse_parser_t parser;
    int count = 0;

    sse_parser_init(&parser, stop_on_second, &count, 0);
    assert_int_equal(sse_parser_feed(&parser, stream, strlen(stream)), 7);
    assert_int_equal(count, 2);
    assert_int_equal(sse_parser_feed(&parser, "data: 4\n\n", 9), 7);
    assert_int_equal(count, 2);
    sse_parser_free(&parser);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sse_table_whole),
        cmocka_unit_test(sse_table_every_split),
        cmocka_unit_test(sse_table_every_two_splits),
        cmocka_unit_test(sse_table_byte_by_byte),
        cmocka_unit_test(sse_retry_field),
        cmocka_unit_test(sse_partial_event_reported),
        cmocka_unit_test(sse_line_too_large),
        cmocka_unit_test(sse_event_data_too_large),
        cmocka_unit_test(sse_callback_stops_parser),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

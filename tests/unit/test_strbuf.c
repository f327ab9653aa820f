/* Unit tests for the string buffer and the message helpers built on it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strbuf.h"

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static void utf8_sequence_table(void **state)
{
    static const struct {
        const char *bytes;
        size_t avail;
        size_t expected;
    } cases[] = {
        {"a", 1, 1},
        {"\x7f", 1, 1},
        {"\xc3\xa9", 2, 2},
        {"\xe2\x9c\x93", 3, 3},
        {"\xf0\x9f\x98\x80", 4, 4},
        {"\xf4\x8f\xbf\xbf", 4, 4},   /* U+10FFFF */
        {"\xc3\xa9", 1, 0},           /* cut short */
        {"\xe2\x9c", 2, 0},
        {"\x80", 1, 0},               /* continuation byte first */
        {"\xc0\xaf", 2, 0},           /* overlong '/' */
        {"\xc1\xbf", 2, 0},
        {"\xe0\x80\xaf", 3, 0},       /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", 4, 0},   /* overlong, 4 bytes */
        {"\xed\xa0\x80", 3, 0},       /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, 0},   /* U+110000 */
        {"\xf5\x80\x80\x80", 4, 0},
        {"\xff", 1, 0},
        {"\xc3\x28", 2, 0},           /* bad continuation */
        {"", 0, 0},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        size_t got = strbuf_utf8_sequence_length((const unsigned char *)cases[i].bytes, cases[i].avail);

        if (got != cases[i].expected)
            fail_msg("case %zu: length %zu, expected %zu", i, got, cases[i].expected);
    }
}

static void append_grows(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    char *text;
    size_t len = 0;

    for (int i = 0; i < 1000; i++)
        assert_int_equal(strbuf_appendf(&sb, "%d,", i % 10), 0);
    assert_int_equal(strbuf_append(&sb, "end", 3), 0);
    text = strbuf_detach(&sb, &len);
    assert_non_null(text);
    assert_int_equal(len, 2003);
    assert_int_equal(strlen(text), 2003);
    assert_memory_equal(text, "0,1,2,", 6);
    assert_string_equal(text + 2000, "end");
    assert_null(sb.data);
    free(text);
}

static void detach_empty(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    size_t len = 99;
    char *text = strbuf_detach(&sb, &len);

    assert_non_null(text);
    assert_string_equal(text, "");
    assert_int_equal(len, 0);
    free(text);
}

static void quoted_escapes(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    const char text[] = "a\"b\\c\nd\te\rf\x01g\x7fh\xc3\xa9";

    strbuf_append_quoted(&sb, text, sizeof(text) - 1, 100);
    assert_string_equal(sb.data, "\"a\\\"b\\\\c\\nd\\te\\rf\\u0001g\\u007fh\xc3\xa9\"");
    strbuf_free(&sb);
}

static void quoted_cut_at_character(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    /* "x" then 'é' (2 bytes) repeatedly: byte 6 falls inside the third 'é' */
    const char text[] = "x\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";

    strbuf_append_quoted(&sb, text, sizeof(text) - 1, 6);
    assert_string_equal(sb.data, "\"x\xc3\xa9\xc3\xa9\"...");
    strbuf_free(&sb);

    strbuf_append_quoted(&sb, text, sizeof(text) - 1, 5);
    assert_string_equal(sb.data, "\"x\xc3\xa9\xc3\xa9\"...");
    strbuf_free(&sb);

    /* text that fits is not marked */
    strbuf_append_quoted(&sb, text, sizeof(text) - 1, sizeof(text) - 1);
    assert_string_equal(sb.data, "\"x\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"");
    strbuf_free(&sb);
}

static void quoted_list_format(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    char *items[] = {"US", "", "a,b"};

    strbuf_append_quoted_list(&sb, items, COUNT_OF(items), 10);
    assert_string_equal(sb.data, "\"US\", \"\", \"a,b\"");
    strbuf_free(&sb);
}

static void copy_message_sanitizes(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    char out[64];

    strbuf_append_str(&sb, "bad \xff byte, overlong \xc0\xaf, ok \xc3\xa9");
    strbuf_copy_message(&sb, out, sizeof(out));
    assert_string_equal(out, "bad ? byte, overlong ??, ok \xc3\xa9");
    strbuf_free(&sb);
}

static void copy_message_truncates(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    char out[6];
    char one[1] = {'x'};

    /* "ab" + 'é' + 'é': 6 bytes do not fit with the NUL, and half an 'é' is dropped */
    strbuf_append_str(&sb, "ab\xc3\xa9\xc3\xa9");
    strbuf_copy_message(&sb, out, sizeof(out));
    assert_string_equal(out, "ab\xc3\xa9");

    strbuf_copy_message(&sb, one, sizeof(one));
    assert_int_equal(one[0], '\0');

    /* a zero size writes nothing, and an empty buffer gives "" */
    strbuf_copy_message(&sb, NULL, 0);
    strbuf_free(&sb);
    strbuf_copy_message(&sb, out, sizeof(out));
    assert_string_equal(out, "");
}

static void failure_is_sticky(void **state)
{
    strbuf_t sb = STRBUF_INIT;
    char out[32];

    strbuf_append_str(&sb, "partial");
    sb.failed = 1;
    assert_int_equal(strbuf_append_str(&sb, "more"), -1);
    assert_int_equal(strbuf_appendf(&sb, "%d", 5), -1);
    strbuf_copy_message(&sb, out, sizeof(out));
    assert_string_equal(out, "out of memory");
    assert_null(strbuf_detach(&sb, NULL));
    assert_null(sb.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(utf8_sequence_table),
        cmocka_unit_test(append_grows),
        cmocka_unit_test(detach_empty),
        cmocka_unit_test(quoted_escapes),
        cmocka_unit_test(quoted_cut_at_character),
        cmocka_unit_test(quoted_list_format),
        cmocka_unit_test(copy_message_sanitizes),
        cmocka_unit_test(copy_message_truncates),
        cmocka_unit_test(failure_is_sticky),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

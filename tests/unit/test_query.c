/* Unit tests for URL query strings: lookup, percent-decoding, integers and booleans. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "query.h"

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static const char *rc_name(query_rc_t rc)
{
    switch (rc) {
    case QUERY_OK:
        return "QUERY_OK";
    case QUERY_ABSENT:
        return "QUERY_ABSENT";
    case QUERY_INVALID:
        return "QUERY_INVALID";
    }
    return "unknown";
}

/* ---- query_find ---- */

static void find_table(void **state)
{
    static const struct {
        const char *qs;
        const char *name;
        query_rc_t rc;
        const char *value; /* expected value when rc is QUERY_OK */
    } cases[] = {
        {"limit=5", "limit", QUERY_OK, "5"},
        {"offset=1&limit=5", "limit", QUERY_OK, "5"},
        {"limit=5&offset=1", "offset", QUERY_OK, "1"},
        {"", "limit", QUERY_ABSENT, NULL},
        {"&", "limit", QUERY_ABSENT, NULL},
        {"limitx=5", "limit", QUERY_ABSENT, NULL},
        {"xlimit=5", "limit", QUERY_ABSENT, NULL},
        {"Limit=5", "limit", QUERY_ABSENT, NULL},
        {"lim", "limit", QUERY_ABSENT, NULL},
        /* empty values */
        {"a", "a", QUERY_OK, ""},
        {"a=", "a", QUERY_OK, ""},
        {"b=1&a", "a", QUERY_OK, ""},
        {"a&b=1", "a", QUERY_OK, ""},
        /* repeated names, also when spelled differently */
        {"a=1&a=2", "a", QUERY_INVALID, NULL},
        {"a=1&a=1", "a", QUERY_INVALID, NULL},
        {"a&a", "a", QUERY_INVALID, NULL},
        {"a=1&%61=2", "a", QUERY_INVALID, NULL},
        {"a=1&b=2&a=", "a", QUERY_INVALID, NULL},
        /* percent-decoding of names and values */
        {"%6Cimit=5", "limit", QUERY_OK, "5"},
        {"%6cimit=5", "limit", QUERY_OK, "5"},
        {"limit=%35", "limit", QUERY_OK, "5"},
        {"q=a+b", "q", QUERY_OK, "a b"},
        {"q=a%20b", "q", QUERY_OK, "a b"},
        {"q=a%2Bb", "q", QUERY_OK, "a+b"},
        {"q=a%26b=c", "q", QUERY_OK, "a&b=c"},
        {"q=a=b", "q", QUERY_OK, "a=b"},
        {"q=%C3%A9t%C3%A9", "q", QUERY_OK, "\xc3\xa9t\xc3\xa9"},
        {"q=\xc3\xa9", "q", QUERY_OK, "\xc3\xa9"},
        {"my+name=1", "my name", QUERY_OK, "1"},
        /* bad escapes in the value */
        {"q=%2", "q", QUERY_INVALID, NULL},
        {"q=%", "q", QUERY_INVALID, NULL},
        {"q=%zz", "q", QUERY_INVALID, NULL},
        {"q=%2g", "q", QUERY_INVALID, NULL},
        {"q=%g2", "q", QUERY_INVALID, NULL},
        {"q=abc%", "q", QUERY_INVALID, NULL},
        {"q=%2&x=1", "q", QUERY_INVALID, NULL},
        {"q=%00", "q", QUERY_INVALID, NULL},
        {"q=a%00b", "q", QUERY_INVALID, NULL},
        /* a parameter whose name cannot decode names nothing */
        {"limit%zz=5&limit=3", "limit", QUERY_OK, "3"},
        {"limit%=5", "limit", QUERY_ABSENT, NULL},
        {"limit%00=5", "limit", QUERY_ABSENT, NULL},
        /* empty parameters are skipped */
        {"x=1&&q=2&", "q", QUERY_OK, "2"},
        {"&&q=2", "q", QUERY_OK, "2"},
        {"=5", "q", QUERY_ABSENT, NULL},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        char buf[64];
        size_t len = 999;
        query_rc_t rc = query_find(cases[i].qs, strlen(cases[i].qs), cases[i].name, buf, sizeof(buf), &len);

        if (rc != cases[i].rc)
            fail_msg("query \"%s\", name \"%s\": %s, expected %s", cases[i].qs, cases[i].name, rc_name(rc),
                     rc_name(cases[i].rc));
        if (rc != QUERY_OK)
            continue;
        if (strcmp(buf, cases[i].value) != 0)
            fail_msg("query \"%s\", name \"%s\": value \"%s\", expected \"%s\"", cases[i].qs, cases[i].name, buf,
                     cases[i].value);
        if (len != strlen(cases[i].value))
            fail_msg("query \"%s\": length %zu, expected %zu", cases[i].qs, len, strlen(cases[i].value));
    }
}

static void find_buffer_size(void **state)
{
    char buf[4];
    size_t len = 0;

    /* "abc" and its NUL fill the buffer exactly */
    assert_int_equal(query_find("q=abc", 5, "q", buf, sizeof(buf), &len), QUERY_OK);
    assert_string_equal(buf, "abc");
    assert_int_equal(len, 3);

    assert_int_equal(query_find("q=abcd", 6, "q", buf, sizeof(buf), &len), QUERY_INVALID);
    /* the size counts decoded bytes: "%61%62%63" is "abc" */
    assert_int_equal(query_find("q=%61%62%63", 11, "q", buf, sizeof(buf), &len), QUERY_OK);
    assert_string_equal(buf, "abc");
    assert_int_equal(query_find("q=", 2, "q", buf, 0, &len), QUERY_INVALID);
    assert_int_equal(query_find("q=", 2, "q", buf, 1, &len), QUERY_OK);
    assert_string_equal(buf, "");
}

static void find_uses_length_not_nul(void **state)
{
    const char qs[] = "a=1&b=2";
    char buf[16];

    /* only the first 3 bytes are the query string */
    assert_int_equal(query_find(qs, 3, "a", buf, sizeof(buf), NULL), QUERY_OK);
    assert_string_equal(buf, "1");
    assert_int_equal(query_find(qs, 3, "b", buf, sizeof(buf), NULL), QUERY_ABSENT);
    assert_int_equal(query_find(qs, 2, "a", buf, sizeof(buf), NULL), QUERY_OK);
    assert_string_equal(buf, "");
    assert_int_equal(query_find(NULL, 0, "a", buf, sizeof(buf), NULL), QUERY_ABSENT);
}

/* ---- query_int ---- */

static void int_limit_table(void **state)
{
    static const struct {
        const char *qs;
        query_rc_t rc;
        int64_t value; /* expected when rc is QUERY_OK */
    } cases[] = {
        {"", QUERY_OK, 20},
        {"offset=3", QUERY_OK, 20},
        {"limit=1", QUERY_OK, 1},
        {"limit=20", QUERY_OK, 20},
        {"limit=100", QUERY_OK, 100},
        {"limit=007", QUERY_OK, 7},
        {"limit=%35%30", QUERY_OK, 50},
        {"%6Cimit=5", QUERY_OK, 5},
        {"limit=0", QUERY_INVALID, 0},
        {"limit=101", QUERY_INVALID, 0},
        {"limit=-1", QUERY_INVALID, 0},
        {"limit=+5", QUERY_INVALID, 0},
        {"limit=%2B5", QUERY_INVALID, 0},
        {"limit=1.5", QUERY_INVALID, 0},
        {"limit=5.", QUERY_INVALID, 0},
        {"limit=1e2", QUERY_INVALID, 0},
        {"limit=0x10", QUERY_INVALID, 0},
        {"limit=abc", QUERY_INVALID, 0},
        {"limit=5abc", QUERY_INVALID, 0},
        {"limit=", QUERY_INVALID, 0},
        {"limit", QUERY_INVALID, 0},
        {"limit=+", QUERY_INVALID, 0},
        {"limit=%205", QUERY_INVALID, 0},
        {"limit=5%20", QUERY_INVALID, 0},
        {"limit=5+", QUERY_INVALID, 0},
        {"limit=%35%", QUERY_INVALID, 0},
        {"limit=5%00", QUERY_INVALID, 0},
        {"limit=99999999999999999999", QUERY_INVALID, 0},
        {"limit=18446744073709551621", QUERY_INVALID, 0},
        {"limit=5&limit=5", QUERY_INVALID, 0},
        {"limit=\xd9\xa5", QUERY_INVALID, 0},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        int64_t value = -77;
        query_rc_t rc = query_int(cases[i].qs, strlen(cases[i].qs), "limit", 1, 100, 20, &value);

        if (rc != cases[i].rc)
            fail_msg("query \"%s\": %s, expected %s", cases[i].qs, rc_name(rc), rc_name(cases[i].rc));
        if (rc == QUERY_OK && value != cases[i].value)
            fail_msg("query \"%s\": value %lld, expected %lld", cases[i].qs, (long long)value,
                     (long long)cases[i].value);
        if (rc != QUERY_OK && value != -77)
            fail_msg("query \"%s\": output changed on error", cases[i].qs);
    }
}

static void int_offset_bounds(void **state)
{
    int64_t value = -1;

    assert_int_equal(query_int("offset=0", 8, "offset", 0, INT64_MAX, 0, &value), QUERY_OK);
    assert_int_equal(value, 0);
    assert_int_equal(query_int("offset=9223372036854775807", 26, "offset", 0, INT64_MAX, 0, &value), QUERY_OK);
    assert_true(value == INT64_MAX);
    assert_int_equal(query_int("offset=9223372036854775808", 26, "offset", 0, INT64_MAX, 0, &value),
                     QUERY_INVALID);
    assert_int_equal(query_int("offset=-0", 9, "offset", 0, INT64_MAX, 0, &value), QUERY_INVALID);
}

static void int_long_leading_zeros(void **state)
{
    /* 64 digits still fit the internal buffer; 65 do not and are rejected */
    char qs[128];
    int64_t value = 0;

    snprintf(qs, sizeof(qs), "n=%064d", 42);
    assert_int_equal(query_int(qs, strlen(qs), "n", 0, 100, 0, &value), QUERY_OK);
    assert_int_equal(value, 42);
    snprintf(qs, sizeof(qs), "n=%065d", 42);
    assert_int_equal(query_int(qs, strlen(qs), "n", 0, 100, 0, &value), QUERY_INVALID);
}

/* ---- query_bool ---- */

static void bool_table(void **state)
{
    static const struct {
        const char *qs;
        query_rc_t rc;
        int value;
    } cases[] = {
        {"", QUERY_OK, 0},
        {"other=true", QUERY_OK, 0},
        {"dry_run=true", QUERY_OK, 1},
        {"dry_run=false", QUERY_OK, 0},
        {"dry_run=tru%65", QUERY_OK, 1},
        {"x=1&dry_run=true&y=2", QUERY_OK, 1},
        {"dry_run=", QUERY_INVALID, 0},
        {"dry_run", QUERY_INVALID, 0},
        {"dry_run=TRUE", QUERY_INVALID, 0},
        {"dry_run=True", QUERY_INVALID, 0},
        {"dry_run=1", QUERY_INVALID, 0},
        {"dry_run=0", QUERY_INVALID, 0},
        {"dry_run=yes", QUERY_INVALID, 0},
        {"dry_run=truex", QUERY_INVALID, 0},
        {"dry_run=falsey", QUERY_INVALID, 0},
        {"dry_run=true+", QUERY_INVALID, 0},
        {"dry_run=%20true", QUERY_INVALID, 0},
        {"dry_run=true&dry_run=false", QUERY_INVALID, 0},
        {"dry_run=true&dry_run=true", QUERY_INVALID, 0},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        int value = -77;
        query_rc_t rc = query_bool(cases[i].qs, strlen(cases[i].qs), "dry_run", 0, &value);

        if (rc != cases[i].rc)
            fail_msg("query \"%s\": %s, expected %s", cases[i].qs, rc_name(rc), rc_name(cases[i].rc));
        if (rc == QUERY_OK && value != cases[i].value)
            fail_msg("query \"%s\": value %d, expected %d", cases[i].qs, value, cases[i].value);
        if (rc != QUERY_OK && value != -77)
            fail_msg("query \"%s\": output changed on error", cases[i].qs);
    }
}

static void bool_absent_gives_default(void **state)
{
    int value = -1;

    assert_int_equal(query_bool("", 0, "dry_run", 1, &value), QUERY_OK);
    assert_int_equal(value, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(find_table),
        cmocka_unit_test(find_buffer_size),
        cmocka_unit_test(find_uses_length_not_nul),
        cmocka_unit_test(int_limit_table),
        cmocka_unit_test(int_offset_bounds),
        cmocka_unit_test(int_long_leading_zeros),
        cmocka_unit_test(bool_table),
        cmocka_unit_test(bool_absent_gives_default),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

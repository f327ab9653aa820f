/* Unit tests for run ids: random UUID generation and normalization. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "uuid.h"

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static void v4_format(void **state)
{
    /* 1000 ids: a version or variant bit left random would show up in about half of them */
    char previous[RUN_ID_LEN + 1] = "";

    for (int round = 0; round < 1000; round++) {
        char id[RUN_ID_LEN + 1];
        char normalized[RUN_ID_LEN + 1];

        uuid_v4(id);
        assert_int_equal(strlen(id), RUN_ID_LEN);
        for (size_t i = 0; i < RUN_ID_LEN; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23) {
                if (id[i] != '-')
                    fail_msg("id %s: no '-' at %zu", id, i);
            } else if (!strchr("0123456789abcdef", id[i])) {
                fail_msg("id %s: '%c' at %zu is not lowercase hex", id, id[i], i);
            }
        }
        if (id[14] != '4')
            fail_msg("id %s: version is not 4", id);
        if (!strchr("89ab", id[19]))
            fail_msg("id %s: variant is not RFC 4122", id);
        assert_int_equal(uuid_normalize(id, RUN_ID_LEN, normalized), 0);
        assert_string_equal(normalized, id);
        assert_string_not_equal(id, previous);
        memcpy(previous, id, sizeof(previous));
    }
}

static void normalize_valid(void **state)
{
    static const struct {
        const char *text;
        const char *expected;
    } cases[] = {
        {"0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e"},
        {"0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950e"},
        {"0f8FaD5b-D9cb-469F-a165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950e"},
        /* any version and variant */
        {"6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"},
        {"00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"},
        {"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "ffffffff-ffff-ffff-ffff-ffffffffffff"},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        char out[RUN_ID_LEN + 1];

        if (uuid_normalize(cases[i].text, strlen(cases[i].text), out) != 0)
            fail_msg("\"%s\" rejected", cases[i].text);
        if (strcmp(out, cases[i].expected) != 0)
            fail_msg("\"%s\": got \"%s\", expected \"%s\"", cases[i].text, out, cases[i].expected);
    }
}

static void normalize_rejects(void **state)
{
    static const char *const cases[] = {
        "",
        "0",
        "not-a-uuid",
        "0f8fad5b-d9cb-469f-a165-70867728950",
        "0f8fad5b-d9cb-469f-a165-70867728950e0",
        "0f8fad5bd9cb469fa16570867728950e",
        "0f8fad5b-d9cb-469f-a16570867728950e-",
        "0f8fad5-bd9cb-469f-a165-70867728950e",
        "0f8fad5b_d9cb_469f_a165_70867728950e",
        "0f8fad5b-d9cb-469f-a165-70867728950g",
        "g f8fad5b-d9cb-469f-a165-7086772895",
        " 0f8fad5b-d9cb-469f-a165-70867728950",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
        "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
        "0f8fad5b-d9cb-469f-a165-70867728950\xc3\xa9",
        "0f8fad5b+d9cb-469f-a165-70867728950e",
        "-0f8fad5bd9cb-469f-a165-70867728950e",
        "0f8fad5b-d9cb-469f-a165-7086772895 e",
        "12", /* a run id that is an integer */
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        char out[RUN_ID_LEN + 1] = "unchanged";

        if (uuid_normalize(cases[i], strlen(cases[i]), out) != -1)
            fail_msg("\"%s\" accepted", cases[i]);
        if (out[0] != '\0')
            fail_msg("\"%s\": output not emptied", cases[i]);
    }
}

static void normalize_uses_length(void **state)
{
    const char text[] = "0f8fad5b-d9cb-469f-a165-70867728950e-extra";
    char with_nul[RUN_ID_LEN + 1] = "0f8fad5b-d9cb-469f-a165-70867728950e";
    char out[RUN_ID_LEN + 1];

    assert_int_equal(uuid_normalize(text, RUN_ID_LEN, out), 0);
    assert_string_equal(out, "0f8fad5b-d9cb-469f-a165-70867728950e");
    assert_int_equal(uuid_normalize(text, strlen(text), out), -1);

    with_nul[20] = '\0';
    assert_int_equal(uuid_normalize(with_nul, RUN_ID_LEN, out), -1);
    assert_int_equal(uuid_normalize(NULL, 0, out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v4_format),
        cmocka_unit_test(normalize_valid),
        cmocka_unit_test(normalize_rejects),
        cmocka_unit_test(normalize_uses_length),
    };

    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}

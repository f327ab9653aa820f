/* Unit tests for prompt templates: placeholder syntax, literal text and compilation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"
#include "template.h"

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

/* ---- template_name_valid ---- */

static void name_valid_table(void **state)
{
    static const struct {
        const char *name;
        int valid;
    } cases[] = {
        {"a", 1},
        {"_", 1},
        {"region", 1},
        {"Region_2-b", 1},
        {"a-", 1},
        {"_9", 1},
        {"", 0},
        {"9a", 0},
        {"-a", 0},
        {"a b", 0},
        {"a.b", 0},
        {"a\tb", 0},
        {"r\xc3\xa9gion", 0},
        {"a}", 0},
        {"{a", 0},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        int valid = template_name_valid(cases[i].name, strlen(cases[i].name));

        if (valid != cases[i].valid)
            fail_msg("name \"%s\": got %d, expected %d", cases[i].name, valid, cases[i].valid);
    }
}

static void name_valid_length_limit(void **state)
{
    char name[PARAM_NAME_MAX_LEN + 2];

    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    assert_int_equal(template_name_valid(name, PARAM_NAME_MAX_LEN), 1);
    assert_int_equal(template_name_valid(name, PARAM_NAME_MAX_LEN + 1), 0);
}

static void name_valid_uses_length_not_nul(void **state)
{
    /* only the first len bytes count, so a valid prefix of a longer string is valid */
    assert_int_equal(template_name_valid("ab cd", 2), 1);
    assert_int_equal(template_name_valid("ab cd", 3), 0);
    assert_int_equal(template_name_valid(NULL, 0), 0);
}

/* ---- template_each_placeholder ---- */

/* Collects placeholder names as "a,b,c". */
typedef struct {
    char names[4096];
    int calls;
    int stop_at_call; /* return 7 on this call (counted from 1); 0 never stops */
} collect_t;

static int collect_name(void *ctx, const char *name, size_t name_len)
{
    collect_t *collect = ctx;
    size_t used = strlen(collect->names);

    collect->calls++;
    snprintf(collect->names + used, sizeof(collect->names) - used, "%s%.*s", used > 0 ? "," : "", (int)name_len,
             name);
    return collect->calls == collect->stop_at_call ? 7 : 0;
}

static void placeholders_table(void **state)
{
    static const struct {
        const char *template;
        const char *names;
    } cases[] = {
        {"", ""},
        {"no placeholders here", ""},
        {"{{a}}", "a"},
        {"Summarize {{region}} in week {{week}}.", "region,week"},
        {"{{ region }}", "region"},
        {"{{\tregion\t}}", "region"},
        {"{{ \t region \t }}", "region"},
        {"{{region }}", "region"},
        {"{{ region}}", "region"},
        {"{{a}}{{b}}", "a,b"},
        {"{{a}}{{a}}", "a,a"},
        {"{{x-y_z}}", "x-y_z"},
        {"{{_}}", "_"},
        /* literal text */
        {"{{}}", ""},
        {"{{ }}", ""},
        {"{{ a b }}", ""},
        {"{{x", ""},
        {"{{x}", ""},
        {"{{x} }", ""},
        {"{ {x}}", ""},
        {"{x}", ""},
        {"{{9x}}", ""},
        {"{{-x}}", ""},
        {"{{x.y}}", ""},
        {"{{\nx}}", ""},
        {"{{x\n}}", ""},
        {"{{x\r}}", ""},
        {"{{r\xc3\xa9gion}}", ""},
        /* a '{' that starts no placeholder is literal, and scanning resumes after it */
        {"{{{x}}}", "x"},
        {"{{{{x}}}}", "x"},
        {"{{x}}}", "x"},
        {"}}{{a}}{{", "a"},
        {"{{ {{a}} }}", "a"},
        {"{\"region\": \"{{region}}\"}", "region"},
        {"{{a}}{{ b }}{{\tc}}", "a,b,c"},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        collect_t collect = {{0}, 0, 0};
        int rc = template_each_placeholder(cases[i].template, collect_name, &collect);

        if (rc != 0)
            fail_msg("template \"%s\": returned %d", cases[i].template, rc);
        if (strcmp(collect.names, cases[i].names) != 0)
            fail_msg("template \"%s\": names \"%s\", expected \"%s\"", cases[i].template, collect.names,
                     cases[i].names);
    }
}

static void placeholders_name_length_limit(void **state)
{
    char name[PARAM_NAME_MAX_LEN + 2];
    char template[PARAM_NAME_MAX_LEN + 8];
    collect_t collect = {{0}, 0, 0};

    memset(name, 'n', PARAM_NAME_MAX_LEN);
    name[PARAM_NAME_MAX_LEN] = '\0';
    snprintf(template, sizeof(template), "{{%s}}", name);
    assert_int_equal(template_each_placeholder(template, collect_name, &collect), 0);
    assert_string_equal(collect.names, name);

    /* one byte longer: literal text */
    memset(&collect, 0, sizeof(collect));
    strcat(name, "n");
    snprintf(template, sizeof(template), "{{%s}}", name);
    assert_int_equal(template_each_placeholder(template, collect_name, &collect), 0);
    assert_int_equal(collect.calls, 0);
}

static void placeholders_stop_on_nonzero(void **state)
{
    collect_t collect = {{0}, 0, 2};

    assert_int_equal(template_each_placeholder("{{a}} {{b}} {{c}}", collect_name, &collect), 7);
    assert_int_equal(collect.calls, 2);
    assert_string_equal(collect.names, "a,b");
}

/* ---- template_compile ---- */

/* A value table terminated by a NULL name. */
typedef struct {
    const char *name;
    const char *value;
} value_pair_t;

static int lookup_pair(void *ctx, const char *name, size_t name_len, const char **value, size_t *value_len)
{
    const value_pair_t *pairs = ctx;

    for (size_t i = 0; pairs[i].name != NULL; i++) {
        if (strlen(pairs[i].name) == name_len && memcmp(pairs[i].name, name, name_len) == 0) {
            *value = pairs[i].value;
            *value_len = strlen(pairs[i].value);
            return 1;
        }
    }
    return 0;
}

static void compile_table(void **state)
{
    static const value_pair_t region_eu[] = {{"region", "EU"}, {"week", "12"}, {NULL, NULL}};
    static const value_pair_t nested[] = {{"a", "{{b}}"}, {"b", "B"}, {NULL, NULL}};
    static const value_pair_t utf8[] = {{"who", "\xe6\x97\xa5\xe6\x9c\xac"}, {NULL, NULL}};
    static const value_pair_t empty_value[] = {{"a", ""}, {NULL, NULL}};
    static const value_pair_t x_only[] = {{"x", "X"}, {NULL, NULL}};
    static const value_pair_t none[] = {{NULL, NULL}};
    static const value_pair_t braces[] = {{"a", "}}"}, {"b", "{{"}, {NULL, NULL}};
    static const struct {
        const char *template;
        const value_pair_t *values;
        const char *expected;
    } cases[] = {
        {"", none, ""},
        {"plain text", none, "plain text"},
        {"Summarize {{region}} in week {{week}}.", region_eu, "Summarize EU in week 12."},
        {"{{ region }} / {{\tregion\t}} / {{region}}", region_eu, "EU / EU / EU"},
        {"{{region}}{{week}}", region_eu, "EU12"},
        {"[{{missing}}]", region_eu, "[]"},
        {"[{{a}}]", empty_value, "[]"},
        {"x{{a}}y", nested, "x{{b}}y"},
        {"{{a}}{{b}}", braces, "}}{{"},
        {"{{{x}}}", x_only, "{X}"},
        {"{{{{x}}}}", x_only, "{{X}}"},
        {"{{}} {{ a b }} {{x { {x}}", x_only, "{{}} {{ a b }} {{x { {x}}"},
        {"{{x", x_only, "{{x"},
        {"{{x}}}", x_only, "X}"},
        {"Gr\xc3\xbc\xc3\x9f" "e {{who}} \xe2\x9c\x93", utf8, "Gr\xc3\xbc\xc3\x9f" "e \xe6\x97\xa5\xe6\x9c\xac \xe2\x9c\x93"},
        {"{\"region\": \"{{region}}\"}", region_eu, "{\"region\": \"EU\"}"},
        {"{{Region}}", region_eu, ""},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        size_t len = 12345;
        char *out = template_compile(cases[i].template, lookup_pair, (void *)cases[i].values, &len);

        assert_non_null(out);
        if (strcmp(out, cases[i].expected) != 0)
            fail_msg("template \"%s\": compiled \"%s\", expected \"%s\"", cases[i].template, out,
                     cases[i].expected);
        if (len != strlen(cases[i].expected))
            fail_msg("template \"%s\": length %zu, expected %zu", cases[i].template, len,
                     strlen(cases[i].expected));
        if (template_compiled_length(cases[i].template, lookup_pair, (void *)cases[i].values) != len)
            fail_msg("template \"%s\": template_compiled_length differs from the compiled length %zu",
                     cases[i].template, len);
        free(out);
    }
}

static void compile_out_len_optional(void **state)
{
    static const value_pair_t values[] = {{"a", "1"}, {NULL, NULL}};
    char *out = template_compile("{{a}}", lookup_pair, (void *)values, NULL);

    assert_non_null(out);
    assert_string_equal(out, "1");
    free(out);
}

static void compile_many_placeholders(void **state)
{
    static const value_pair_t values[] = {{"a", "xy"}, {NULL, NULL}};
    const size_t count = 10000;
    char *template = malloc(count * 5 + 1);
    size_t len = 0;
    char *out;

    assert_non_null(template);
    for (size_t i = 0; i < count; i++)
        memcpy(template + i * 5, "{{a}}", 5);
    template[count * 5] = '\0';

    out = template_compile(template, lookup_pair, (void *)values, &len);
    assert_non_null(out);
    assert_int_equal(len, count * 2);
    assert_int_equal(strlen(out), count * 2);
    assert_memory_equal(out, "xyxy", 4);
    assert_memory_equal(out + len - 4, "xyxy", 4);
    free(out);
    free(template);
}

static void compile_long_literal_brace_run(void **state)
{
    /* a long run of '{' followed by a long name scans in linear time and stays literal */
    const size_t count = 100000;
    char *template = malloc(count + 1);
    size_t len = 0;
    char *out;

    assert_non_null(template);
    memset(template, '{', count / 2);
    memset(template + count / 2, 'a', count - count / 2);
    template[count] = '\0';

    out = template_compile(template, lookup_pair, (void *)&(value_pair_t){NULL, NULL}, &len);
    assert_non_null(out);
    assert_int_equal(len, count);
    assert_string_equal(out, template);
    free(out);
    free(template);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(name_valid_table),
        cmocka_unit_test(name_valid_length_limit),
        cmocka_unit_test(name_valid_uses_length_not_nul),
        cmocka_unit_test(placeholders_table),
        cmocka_unit_test(placeholders_name_length_limit),
        cmocka_unit_test(placeholders_stop_on_nonzero),
        cmocka_unit_test(compile_table),
        cmocka_unit_test(compile_out_len_optional),
        cmocka_unit_test(compile_many_placeholders),
        cmocka_unit_test(compile_long_literal_brace_run),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

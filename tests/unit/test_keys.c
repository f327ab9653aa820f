/* Unit tests for API keys: generation, text format, parsing and secret hashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "keys.h"

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static const char valid_id[] = "abcdefghijkl";
static const char valid_secret[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char valid_key[] = "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz234567";

static int all_base32(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!strchr("abcdefghijklmnopqrstuvwxyz234567", text[i]) || text[i] == '\0')
            return 0;
    }
    return 1;
}

/* ---- generation ---- */

static void generate_id_format(void **state)
{
    char first[KEY_ID_LEN + 1];
    char second[KEY_ID_LEN + 1];

    key_generate_id(first);
    key_generate_id(second);
    assert_int_equal(strlen(first), KEY_ID_LEN);
    assert_true(all_base32(first, KEY_ID_LEN));
    assert_int_equal(key_id_valid(first, strlen(first)), 1);
    /* 60 random bits: a repeat means the generator is broken */
    assert_string_not_equal(first, second);
}

static void generate_secret_format(void **state)
{
    char first[KEY_SECRET_LEN + 1];
    char second[KEY_SECRET_LEN + 1];

    key_generate_secret(first);
    key_generate_secret(second);
    assert_int_equal(strlen(first), KEY_SECRET_LEN);
    assert_true(all_base32(first, KEY_SECRET_LEN));
    assert_string_not_equal(first, second);
}

static void generate_uses_whole_alphabet(void **state)
{
    /* 200 secrets draw 6400 symbols; each of the 32 should show up */
    int seen[256] = {0};
    char secret[KEY_SECRET_LEN + 1];

    for (int round = 0; round < 200; round++) {
        key_generate_secret(secret);
        for (size_t i = 0; i < KEY_SECRET_LEN; i++)
            seen[(unsigned char)secret[i]] = 1;
    }
    for (const char *c = "abcdefghijklmnopqrstuvwxyz234567"; *c != '\0'; c++) {
        if (!seen[(unsigned char)*c])
            fail_msg("symbol '%c' never generated", *c);
    }
}

/* ---- format and parse ---- */

static void format_layout(void **state)
{
    char key[KEY_TEXT_LEN + 1];

    key_format(valid_id, valid_secret, key);
    assert_string_equal(key, valid_key);
    assert_int_equal(strlen(key), KEY_TEXT_LEN);
    assert_int_equal(KEY_TEXT_LEN, 49);
}

static void parse_round_trip(void **state)
{
    char id[KEY_ID_LEN + 1];
    char secret[KEY_SECRET_LEN + 1];
    char key[KEY_TEXT_LEN + 1];
    char parsed_id[KEY_ID_LEN + 1];
    char parsed_secret[KEY_SECRET_LEN + 1];

    key_generate_id(id);
    key_generate_secret(secret);
    key_format(id, secret, key);
    assert_int_equal(key_parse(key, strlen(key), parsed_id, parsed_secret), 0);
    assert_string_equal(parsed_id, id);
    assert_string_equal(parsed_secret, secret);
}

static void parse_valid_key(void **state)
{
    char id[KEY_ID_LEN + 1];
    char secret[KEY_SECRET_LEN + 1];

    assert_int_equal(key_parse(valid_key, strlen(valid_key), id, secret), 0);
    assert_string_equal(id, valid_id);
    assert_string_equal(secret, valid_secret);
}

static void parse_rejects_malformed(void **state)
{
    static const char *const cases[] = {
        "",
        "pai_",
        "pai__",
        /* prefix */
        "pak_abcdefghijkl_abcdefghijklmnopqrstuvwxyz234567",
        "PAI_abcdefghijkl_abcdefghijklmnopqrstuvwxyz234567",
        "pai-abcdefghijkl_abcdefghijklmnopqrstuvwxyz234567",
        "xpai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz23456",
        /* upper case */
        "pai_Abcdefghijkl_abcdefghijklmnopqrstuvwxyz234567",
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz23456A",
        "pai_ABCDEFGHIJKL_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
        /* lengths */
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz23456",
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz2345677",
        "pai_abcdefghijk_abcdefghijklmnopqrstuvwxyz2345677",
        "pai_abcdefghijklm_abcdefghijklmnopqrstuvwxyz23456",
        "pai_abcdefghijkl",
        "pai_abcdefghijkl_",
        /* separators */
        "pai_abcdefghijkl-abcdefghijklmnopqrstuvwxyz234567",
        "pai_abcdefghijklaabcdefghijklmnopqrstuvwxyz234567",
        "pai_abcdefghijkl__bcdefghijklmnopqrstuvwxyz234567",
        "pai_abcdef_hijkl_abcdefghijklmnopqrstuvwxyz234567",
        "pai_abcdefghijkl_abcdefghijklmnop_rstuvwxyz234567",
        /* characters outside the base32 alphabet */
        "pai_abcdefghijk0_abcdefghijklmnopqrstuvwxyz234567",
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz234561",
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz234568",
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz23456=",
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz23456 ",
        " pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz23456",
        "pai_abcdefghijkl_abcdefghijklmnopqrstuvwxyz2345\xc3\xa9",
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        char id[KEY_ID_LEN + 1] = "unchanged";
        char secret[KEY_SECRET_LEN + 1] = "unchanged";

        if (key_parse(cases[i], strlen(cases[i]), id, secret) != -1)
            fail_msg("key \"%s\" accepted", cases[i]);
        if (id[0] != '\0' || secret[0] != '\0')
            fail_msg("key \"%s\": outputs not emptied", cases[i]);
    }
}

static void parse_uses_length(void **state)
{
    char with_nul[KEY_TEXT_LEN + 1];
    char id[KEY_ID_LEN + 1];
    char secret[KEY_SECRET_LEN + 1];
    char longer[KEY_TEXT_LEN + 8];

    /* a NUL inside the key is a character outside the alphabet */
    memcpy(with_nul, valid_key, sizeof(with_nul));
    with_nul[30] = '\0';
    assert_int_equal(key_parse(with_nul, KEY_TEXT_LEN, id, secret), -1);

    /* a valid key followed by more bytes is valid when len stops at its end */
    snprintf(longer, sizeof(longer), "%sextra", valid_key);
    assert_int_equal(key_parse(longer, KEY_TEXT_LEN, id, secret), 0);
    assert_int_equal(key_parse(longer, strlen(longer), id, secret), -1);
    assert_int_equal(key_parse(NULL, 0, id, secret), -1);
}

static void key_id_valid_table(void **state)
{
    static const struct {
        const char *text;
        int valid;
    } cases[] = {
        {"abcdefghijkl", 1},
        {"234567234567", 1},
        {"", 0},
        {"abcdefghijk", 0},
        {"abcdefghijklm", 0},
        {"Abcdefghijkl", 0},
        {"abcdefghijk1", 0},
        {"abcdefghijk8", 0},
        {"abcdefghijk_", 0},
        {"abcdef ghijk", 0},
        {"pai_abcdefgh", 0},
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        int valid = key_id_valid(cases[i].text, strlen(cases[i].text));

        if (valid != cases[i].valid)
            fail_msg("key id \"%s\": got %d, expected %d", cases[i].text, valid, cases[i].valid);
    }
    assert_int_equal(key_id_valid(NULL, 0), 0);
}

/* ---- hashes ---- */

static void hash_known_answer(void **state)
{
    /* BLAKE2b-256 of the secret keyed with "pai_<key id>", computed independently
       with Python's hashlib.blake2b(secret, key=b"pai_" + key_id, digest_size=32) */
    static const uint8_t expected[KEY_HASH_LEN] = {
        0xb3, 0x0d, 0x4a, 0xf7, 0x4f, 0x8b, 0xe1, 0x62, 0x2a, 0xfc, 0x8b, 0x72, 0x90, 0x06, 0x42, 0xfa,
        0xc9, 0xf1, 0x39, 0x26, 0x53, 0xe8, 0x2e, 0x32, 0x35, 0xfb, 0x5f, 0x55, 0x23, 0x6a, 0xeb, 0x86,
    };
    uint8_t hash[KEY_HASH_LEN];

    key_hash_secret(valid_id, valid_secret, hash);
    assert_memory_equal(hash, expected, KEY_HASH_LEN);
}

static void hash_depends_on_key_id(void **state)
{
    uint8_t first[KEY_HASH_LEN];
    uint8_t second[KEY_HASH_LEN];
    uint8_t again[KEY_HASH_LEN];

    key_hash_secret("abcdefghijkl", valid_secret, first);
    key_hash_secret("234567abcdef", valid_secret, second);
    key_hash_secret("abcdefghijkl", valid_secret, again);
    assert_memory_not_equal(first, second, KEY_HASH_LEN);
    assert_memory_equal(first, again, KEY_HASH_LEN);
}

static void hash_depends_on_secret(void **state)
{
    uint8_t first[KEY_HASH_LEN];
    uint8_t second[KEY_HASH_LEN];

    key_hash_secret(valid_id, "abcdefghijklmnopqrstuvwxyz234567", first);
    key_hash_secret(valid_id, "abcdefghijklmnopqrstuvwxyz234566", second);
    assert_memory_not_equal(first, second, KEY_HASH_LEN);
}

static void secret_matches_cases(void **state)
{
    char id[KEY_ID_LEN + 1];
    char secret[KEY_SECRET_LEN + 1];
    char other_secret[KEY_SECRET_LEN + 1];
    char other_id[KEY_ID_LEN + 1];
    uint8_t hash[KEY_HASH_LEN];

    key_generate_id(id);
    key_generate_secret(secret);
    key_hash_secret(id, secret, hash);
    assert_int_equal(key_secret_matches(id, secret, hash), 1);

    memcpy(other_secret, secret, sizeof(other_secret));
    other_secret[KEY_SECRET_LEN - 1] = other_secret[KEY_SECRET_LEN - 1] == 'a' ? 'b' : 'a';
    assert_int_equal(key_secret_matches(id, other_secret, hash), 0);

    memcpy(other_id, id, sizeof(other_id));
    other_id[0] = other_id[0] == 'a' ? 'b' : 'a';
    assert_int_equal(key_secret_matches(other_id, secret, hash), 0);

    /* a hash that differs in its last bit only */
    hash[KEY_HASH_LEN - 1] ^= 1;
    assert_int_equal(key_secret_matches(id, secret, hash), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_id_format),
        cmocka_unit_test(generate_secret_format),
        cmocka_unit_test(generate_uses_whole_alphabet),
        cmocka_unit_test(format_layout),
        cmocka_unit_test(parse_round_trip),
        cmocka_unit_test(parse_valid_key),
        cmocka_unit_test(parse_rejects_malformed),
        cmocka_unit_test(parse_uses_length),
        cmocka_unit_test(key_id_valid_table),
        cmocka_unit_test(hash_known_answer),
        cmocka_unit_test(hash_depends_on_key_id),
        cmocka_unit_test(hash_depends_on_secret),
        cmocka_unit_test(secret_matches_cases),
    };

    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include "keys.h"

#include <string.h>

#include <sodium.h>

/* Lowercase RFC 4648 base32: 32 symbols, so one random byte & 31 picks one uniformly. */
static const char key_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

#define KEY_HASH_KEY_LEN (sizeof(KEY_PREFIX) - 1 + KEY_ID_LEN)

_Static_assert(KEY_HASH_KEY_LEN >= crypto_generichash_KEYBYTES_MIN, "hash key shorter than BLAKE2b allows");
_Static_assert(KEY_HASH_LEN >= crypto_generichash_BYTES_MIN && KEY_HASH_LEN <= crypto_generichash_BYTES_MAX,
               "unsupported hash length");

static int key_char_valid(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

static int key_chars_valid(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!key_char_valid(text[i]))
            return 0;
    }
    return 1;
}

int key_id_valid(const char *text, size_t len)
{
    return text != NULL && len == KEY_ID_LEN && key_chars_valid(text, len);
}

static void key_generate_text(char *out, size_t len)
{
    unsigned char random[KEY_SECRET_LEN];

    _Static_assert(KEY_ID_LEN <= KEY_SECRET_LEN, "random buffer too small for a key id");
    randombytes_buf(random, len);
    for (size_t i = 0; i < len; i++)
        out[i] = key_alphabet[random[i] & 31];
    out[len] = '\0';
    sodium_memzero(random, sizeof(random));
}

void key_generate_id(char key_id[KEY_ID_LEN + 1])
{
    key_generate_text(key_id, KEY_ID_LEN);
}

void key_generate_secret(char secret[KEY_SECRET_LEN + 1])
{
    key_generate_text(secret, KEY_SECRET_LEN);
}

void key_format(const char *key_id, const char *secret, char out[KEY_TEXT_LEN + 1])
{
    char *p = out;

    memcpy(p, KEY_PREFIX, sizeof(KEY_PREFIX) - 1);
    p += sizeof(KEY_PREFIX) - 1;
    memcpy(p, key_id, KEY_ID_LEN);
    p += KEY_ID_LEN;
    *p++ = '_';
    memcpy(p, secret, KEY_SECRET_LEN);
    p += KEY_SECRET_LEN;
    *p = '\0';
}

int key_parse(const char *text, size_t len, char key_id[KEY_ID_LEN + 1], char secret[KEY_SECRET_LEN + 1])
{
    const char *id_start;
    const char *secret_start;

    key_id[0] = '\0';
    secret[0] = '\0';
    if (text == NULL || len != KEY_TEXT_LEN)
        return -1;
    id_start = text + sizeof(KEY_PREFIX) - 1;
    secret_start = id_start + KEY_ID_LEN + 1;
    if (memcmp(text, KEY_PREFIX, sizeof(KEY_PREFIX) - 1) != 0)
        return -1;
    if (!key_chars_valid(id_start, KEY_ID_LEN) || id_start[KEY_ID_LEN] != '_')
        return -1;
    if (!key_chars_valid(secret_start, KEY_SECRET_LEN))
        return -1;

    memcpy(key_id, id_start, KEY_ID_LEN);
    key_id[KEY_ID_LEN] = '\0';
    memcpy(secret, secret_start, KEY_SECRET_LEN);
    secret[KEY_SECRET_LEN] = '\0';
    return 0;
}

void key_hash_secret(const char *key_id, const char *secret, uint8_t hash[KEY_HASH_LEN])
{
    unsigned char hash_key[KEY_HASH_KEY_LEN];

    memcpy(hash_key, KEY_PREFIX, sizeof(KEY_PREFIX) - 1);
    memcpy(hash_key + sizeof(KEY_PREFIX) - 1, key_id, KEY_ID_LEN);

    /* crypto_generichash fails only on lengths outside BLAKE2b's limits, which the static assertions exclude */
    crypto_generichash(hash, KEY_HASH_LEN, (const unsigned char *)secret, KEY_SECRET_LEN, hash_key,
                       sizeof(hash_key));
}

int key_secret_matches(const char *key_id, const char *secret, const uint8_t hash[KEY_HASH_LEN])
{
    uint8_t computed[KEY_HASH_LEN];
    int equal;

    key_hash_secret(key_id, secret, computed);
    equal = sodium_memcmp(computed, hash, KEY_HASH_LEN) == 0;
    sodium_memzero(computed, sizeof(computed));
    return equal;
}

/*
 * keys.h - API key text, generation and secret hashing.
 *
 * A key reads "pai_<key id>_<secret>". The key id is KEY_ID_LEN characters
 * and the secret KEY_SECRET_LEN characters of the lowercase RFC 4648 base32
 * alphabet (a-z, 2-7), both drawn from libsodium's CSPRNG, so the secret
 * carries 160 bits. Keys are case-sensitive.
 *
 * Only a hash of the secret is stored: BLAKE2b-256 (crypto_generichash) of
 * the secret, keyed with the 16 bytes "pai_<key id>". The key makes equal
 * secrets under different key ids hash differently.
 *
 * Callers call sodium_init() once before using these functions.
 */
#ifndef PUSHAI_KEYS_H
#define PUSHAI_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define KEY_PREFIX "pai_"
#define KEY_SECRET_LEN 32
#define KEY_TEXT_LEN (4 + KEY_ID_LEN + 1 + KEY_SECRET_LEN)

/* Returns 1 when the len bytes at text are a well-formed key id, else 0. */
int key_id_valid(const char *text, size_t len);

/* Write a new random key id or secret, NUL-terminated. */
void key_generate_id(char key_id[KEY_ID_LEN + 1]);
void key_generate_secret(char secret[KEY_SECRET_LEN + 1]);

/* Writes the full key text "pai_<key_id>_<secret>", NUL-terminated. */
void key_format(const char *key_id, const char *secret, char out[KEY_TEXT_LEN + 1]);

/*
 * Splits the full key at text (len bytes) into its key id and secret, each
 * NUL-terminated. Returns 0 when the key is well-formed, or -1 when it is
 * malformed (wrong prefix, length, separator or a character outside the
 * alphabet), in which case key_id and secret are left as empty strings.
 */
int key_parse(const char *text, size_t len, char key_id[KEY_ID_LEN + 1], char secret[KEY_SECRET_LEN + 1]);

/* Computes the stored hash of secret (KEY_SECRET_LEN chars) under key_id (KEY_ID_LEN chars). */
void key_hash_secret(const char *key_id, const char *secret, uint8_t hash[KEY_HASH_LEN]);

/* Returns 1 when secret hashes to hash under key_id, else 0. The comparison
 * takes the same time wherever the hashes differ. */
int key_secret_matches(const char *key_id, const char *secret, const uint8_t hash[KEY_HASH_LEN]);

#endif

/* uuid.h - run ids: random UUIDs (RFC 4122 version 4) as lowercase text. */
#ifndef PUSHAI_UUID_H
#define PUSHAI_UUID_H

#include <stddef.h>

#include "model.h"

/* Writes a new random version 4, variant 1 UUID in lowercase, NUL-terminated.
 * The random bits come from libsodium (call sodium_init() first). */
void uuid_v4(char out[RUN_ID_LEN + 1]);

/*
 * Validates the len bytes at text as a UUID in 8-4-4-4-12 hex form (any case,
 * any version, no braces or "urn:uuid:" prefix) and writes it lowercase,
 * NUL-terminated. Returns 0, or -1 when text is not a UUID (out is then "").
 */
int uuid_normalize(const char *text, size_t len, char out[RUN_ID_LEN + 1]);

#endif

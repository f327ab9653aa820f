/*
 * query.h - lookups in a URL query string ("limit=20&offset=40").
 *
 * Parameters are separated by '&', and empty ones ("a=1&&b=2") are skipped. Names
 * and values are percent-decoded, with '+' meaning a space, so "%6Cimit=5" is
 * the parameter limit. A parameter whose name has a bad percent-escape cannot
 * name anything and is ignored. Names compare exactly (case-sensitive).
 */
#ifndef PUSHAI_QUERY_H
#define PUSHAI_QUERY_H

#include <stddef.h>
#include <stdint.h>

typedef enum { QUERY_OK = 0, QUERY_ABSENT = 1, QUERY_INVALID = -1 } query_rc_t;

/*
 * Finds name in the raw query string qs (qs_len bytes, no leading '?') and
 * decodes its value into buf as a NUL-terminated string, with its length in
 * *value_len (value_len may be NULL). "a" and "a=" both give an empty value.
 * Returns QUERY_ABSENT when name does not occur, and QUERY_INVALID when it
 * occurs more than once or its value has a bad percent-escape ("%2", "%zz"),
 * decodes to a NUL byte ("%00"), or does not fit in buf with its NUL.
 */
query_rc_t query_find(const char *qs, size_t qs_len, const char *name, char *buf, size_t buf_size,
                      size_t *value_len);

/*
 * Reads name as a decimal integer in [min, max] into *out. The value must be
 * 1 to 64 ASCII digits (no sign, spaces, '.' or exponent) that do not overflow
 * int64_t. When name is absent, *out is def and the result is QUERY_OK. Any
 * other value is QUERY_INVALID, and *out is then left unchanged.
 */
query_rc_t query_int(const char *qs, size_t qs_len, const char *name, int64_t min, int64_t max, int64_t def,
                     int64_t *out);

/*
 * Reads name as exactly "true" (1) or "false" (0) into *out. Anything else,
 * including an empty value, is QUERY_INVALID. When name is absent, *out is def
 * and the result is QUERY_OK.
 */
query_rc_t query_bool(const char *qs, size_t qs_len, const char *name, int def, int *out);

#endif

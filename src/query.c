#include "query.h"

#include <string.h>

/* Maximum length of an integer value in bytes: 19 digits hold INT64_MAX, and the rest leaves room for leading zeros. */
#define QUERY_INT_MAX_LEN 64

static int query_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Decodes the byte at s[*pos] (s has len bytes), advancing *pos past it.
 * Returns the decoded byte (0..255), or -1 on a bad percent-escape.
 */
static int query_decode_next(const char *s, size_t len, size_t *pos)
{
    size_t i = *pos;
    int high;
    int low;

    if (s[i] == '+') {
        *pos = i + 1;
        return ' ';
    }
    if (s[i] != '%') {
        *pos = i + 1;
        return (unsigned char)s[i];
    }
    if (len - i < 3)
        return -1;
    high = query_hex_value(s[i + 1]);
    low = query_hex_value(s[i + 2]);
    if (high < 0 || low < 0)
        return -1;
    *pos = i + 3;
    return high * 16 + low;
}

/* Returns 1 when the encoded text (len bytes) decodes exactly to name, else 0. */
static int query_name_equals(const char *encoded, size_t len, const char *name)
{
    size_t pos = 0;
    size_t matched = 0;

    while (pos < len) {
        int c = query_decode_next(encoded, len, &pos);

        if (c < 0 || name[matched] == '\0' || (unsigned char)name[matched] != c)
            return 0;
        matched++;
    }
    return name[matched] == '\0';
}

/* Decodes the encoded value into buf. Returns 0, or -1 when it is invalid, contains a NUL or is too long. */
static int query_decode_value(const char *encoded, size_t len, char *buf, size_t buf_size, size_t *value_len)
{
    size_t pos = 0;
    size_t out = 0;

    if (buf_size == 0)
        return -1;
    while (pos < len) {
        int c = query_decode_next(encoded, len, &pos);

        if (c <= 0 || out + 1 >= buf_size)
            return -1;
        buf[out++] = (char)c;
    }
    buf[out] = '\0';
    if (value_len != NULL)
        *value_len = out;
    return 0;
}

query_rc_t query_find(const char *qs, size_t qs_len, const char *name, char *buf, size_t buf_size,
                      size_t *value_len)
{
    const char *value = NULL;
    size_t value_encoded_len = 0;
    int found = 0;
    size_t start = 0;

    /* find every parameter called name, so that a repeated one is rejected */
    while (qs != NULL && start < qs_len) {
        const char *param = qs + start;
        const char *amp = memchr(param, '&', qs_len - start);
        size_t param_len = amp ? (size_t)(amp - param) : qs_len - start;
        const char *eq = memchr(param, '=', param_len);
        size_t name_len = eq ? (size_t)(eq - param) : param_len;

        start += param_len + 1;
        if (param_len == 0 || !query_name_equals(param, name_len, name))
            continue;
        if (found)
            return QUERY_INVALID;
        found = 1;
        value = eq ? eq + 1 : param + param_len;
        value_encoded_len = eq ? param_len - name_len - 1 : 0;
    }
    if (!found)
        return QUERY_ABSENT;

    if (query_decode_value(value, value_encoded_len, buf, buf_size, value_len) != 0)
        return QUERY_INVALID;
    return QUERY_OK;
}

query_rc_t query_int(const char *qs, size_t qs_len, const char *name, int64_t min, int64_t max, int64_t def,
                     int64_t *out)
{
    char buf[QUERY_INT_MAX_LEN + 1];
    size_t len;
    int64_t value = 0;
    query_rc_t rc;

    rc = query_find(qs, qs_len, name, buf, sizeof(buf), &len);
    if (rc == QUERY_ABSENT) {
        *out = def;
        return QUERY_OK;
    }
    if (rc != QUERY_OK || len == 0)
        return QUERY_INVALID;

    for (size_t i = 0; i < len; i++) {
        int digit;

        if (buf[i] < '0' || buf[i] > '9')
            return QUERY_INVALID;
        digit = buf[i] - '0';
        if (value > (INT64_MAX - digit) / 10)
            return QUERY_INVALID;
        value = value * 10 + digit;
    }
    if (value < min || value > max)
        return QUERY_INVALID;
    *out = value;
    return QUERY_OK;
}

query_rc_t query_bool(const char *qs, size_t qs_len, const char *name, int def, int *out)
{
    char buf[sizeof("false")];
    query_rc_t rc;

    rc = query_find(qs, qs_len, name, buf, sizeof(buf), NULL);
    if (rc == QUERY_ABSENT) {
        *out = def;
        return QUERY_OK;
    }
    if (rc != QUERY_OK)
        return QUERY_INVALID;
    if (strcmp(buf, "true") == 0) {
        *out = 1;
        return QUERY_OK;
    }
    if (strcmp(buf, "false") == 0) {
        *out = 0;
        return QUERY_OK;
    }
    return QUERY_INVALID;
}

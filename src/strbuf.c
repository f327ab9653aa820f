#include "strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int strbuf_reserve(strbuf_t *sb, size_t extra)
{
    size_t need;
    size_t cap;
    char *data;

    if (sb->failed)
        return -1;
    if (extra > SIZE_MAX - sb->len - 1)
        goto fail;
    need = sb->len + extra + 1;
    if (need <= sb->cap)
        return 0;

    cap = sb->cap ? sb->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    data = realloc(sb->data, cap);
    if (data == NULL)
        goto fail;
    sb->data = data;
    sb->cap = cap;
    return 0;

fail:
    sb->failed = 1;
    return -1;
}

int strbuf_append(strbuf_t *sb, const char *text, size_t len)
{
    if (strbuf_reserve(sb, len) != 0)
        return -1;
    if (len > 0)
        memcpy(sb->data + sb->len, text, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
    return 0;
}

int strbuf_append_str(strbuf_t *sb, const char *text)
{
    return strbuf_append(sb, text, strlen(text));
}

int strbuf_appendf(strbuf_t *sb, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sb->failed = 1;
        return -1;
    }
    if (strbuf_reserve(sb, (size_t)n) != 0)
        return -1;

    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
    return 0;
}

size_t strbuf_utf8_sequence_length(const unsigned char *s, size_t avail)
{
    size_t len;
    uint32_t cp;

    if (avail == 0)
        return 0;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (avail < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }

    /* reject overlong forms, UTF-16 surrogates and values above U+10FFFF */
    if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)))
        return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
        return 0;
    return len;
}

int strbuf_append_quoted(strbuf_t *sb, const char *text, size_t len, size_t max_bytes)
{
    size_t shown = len;
    int cut = 0;

    if (shown > max_bytes) {
        shown = max_bytes;
        /* back off to the start of a character so the cut leaves valid UTF-8 */
        while (shown > 0 && ((unsigned char)text[shown] & 0xc0) == 0x80)
            shown--;
        cut = 1;
    }

    strbuf_append(sb, "\"", 1);
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)text[i];

        if (c == '"' || c == '\\') {
            char escaped[2] = {'\\', (char)c};
            strbuf_append(sb, escaped, 2);
        } else if (c == '\n') {
            strbuf_append(sb, "\\n", 2);
        } else if (c == '\t') {
            strbuf_append(sb, "\\t", 2);
        } else if (c == '\r') {
            strbuf_append(sb, "\\r", 2);
        } else if (c < 0x20 || c == 0x7f) {
            strbuf_appendf(sb, "\\u%04x", c);
        } else {
            strbuf_append(sb, (const char *)&text[i], 1);
        }
    }
    strbuf_append(sb, "\"", 1);
    if (cut)
        strbuf_append(sb, "...", 3);
    return sb->failed ? -1 : 0;
}

int strbuf_append_quoted_list(strbuf_t *sb, char *const *items, size_t n_items, size_t max_item_bytes)
{
    for (size_t i = 0; i < n_items; i++) {
        if (i > 0)
            strbuf_append(sb, ", ", 2);
        strbuf_append_quoted(sb, items[i], strlen(items[i]), max_item_bytes);
    }
    return sb->failed ? -1 : 0;
}

char *strbuf_detach(strbuf_t *sb, size_t *len)
{
    char *data;

    if (sb->failed) {
        strbuf_free(sb);
        return NULL;
    }
    if (sb->data == NULL && strbuf_reserve(sb, 0) != 0) {
        strbuf_free(sb);
        return NULL;
    }
    sb->data[sb->len] = '\0';
    data = sb->data;
    if (len != NULL)
        *len = sb->len;
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    return data;
}

void strbuf_free(strbuf_t *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->failed = 0;
}

void strbuf_copy_message(const strbuf_t *sb, char *out, size_t out_size)
{
    const unsigned char *in;
    size_t in_len;
    size_t i = 0;
    size_t o = 0;

    if (out == NULL || out_size == 0)
        return;
    if (sb->failed) {
        snprintf(out, out_size, "out of memory");
        return;
    }

    in = (const unsigned char *)sb->data;
    in_len = sb->data ? sb->len : 0;
    while (i < in_len) {
        size_t seq = strbuf_utf8_sequence_length(in + i, in_len - i);

        if (seq == 0) {
            if (o + 1 >= out_size)
                break;
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + seq >= out_size)
            break;
        memcpy(out + o, in + i, seq);
        o += seq;
        i += seq;
    }
    out[o] = '\0';
}

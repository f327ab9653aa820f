/*
 * sse.c - incremental Server-Sent Events parser.
 *
 * Design: input is scanned for line terminators. A line that lies whole inside
 * one feed is processed in place, without a copy; only the tail of a feed that
 * has no terminator yet is copied into p->line and completed by later feeds.
 * A CR that ends a feed sets after_cr, so an LF that opens the next feed is
 * taken as the second half of a CRLF and not as an empty line.
 *
 * Invariants: p->data contains the pending event's data lines, each followed by
 * "\n"; the "\n" after the last line is dropped at dispatch. p->type and
 * p->data are cleared after every blank line. p->last_id survives dispatches,
 * as the standard says. Every buffer stays NUL-terminated once allocated, so
 * the callback gets C strings.
 */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

static const char empty_text[] = "";

static int sse_buf_append(sse_buf_t *b, const char *bytes, size_t len, size_t max_len)
{
    size_t need;

    if (len > max_len || b->len > max_len - len)
        return SSE_ERR_TOO_LARGE;
    need = b->len + len + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *grown;

        while (cap < need)
            cap *= 2;
        grown = realloc(b->ptr, cap);
        if (!grown)
            return SSE_ERR_NO_MEMORY;
        b->ptr = grown;
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->ptr + b->len, bytes, len);
    b->len += len;
    b->ptr[b->len] = '\0';
    return 0;
}

static void sse_buf_clear(sse_buf_t *b)
{
    b->len = 0;
    if (b->ptr)
        b->ptr[0] = '\0';
}

static const char *sse_buf_text(const sse_buf_t *b)
{
    return b->ptr ? b->ptr : empty_text;
}

void sse_parser_init(sse_parser_t *p, sse_event_fn on_event, void *ctx, size_t max_event_bytes)
{
    memset(p, 0, sizeof(*p));
    p->on_event = on_event;
    p->ctx = ctx;
    p->max_event_bytes = max_event_bytes ? max_event_bytes : SSE_DEFAULT_MAX_EVENT_BYTES;
    p->retry_ms = -1;
    p->bom_pending = 1;
}

void sse_parser_free(sse_parser_t *p)
{
    free(p->line.ptr);
    free(p->data.ptr);
    free(p->type.ptr);
    free(p->last_id.ptr);
    memset(p, 0, sizeof(*p));
}

int sse_parser_has_partial_event(const sse_parser_t *p)
{
    return p->line.len > 0 || p->data.len > 0 || p->type.len > 0;
}

int64_t sse_parser_retry_ms(const sse_parser_t *p)
{
    return p->retry_ms;
}

/* Blank line: hands the pending event to the callback, then clears it. */
static int sse_dispatch(sse_parser_t *p)
{
    sse_event_t event;
    int rc = 0;

    if (p->data.len == 0) {
        sse_buf_clear(&p->type);
        return 0;
    }
    p->data.len--; /* the "\n" after the last data line */
    p->data.ptr[p->data.len] = '\0';

    event.type = p->type.len > 0 ? p->type.ptr : "message";
    event.type_len = p->type.len > 0 ? p->type.len : strlen("message");
    event.data = p->data.ptr;
    event.data_len = p->data.len;
    event.last_id = sse_buf_text(&p->last_id);
    event.last_id_len = p->last_id.len;
    if (p->on_event)
        rc = p->on_event(p->ctx, &event);

    sse_buf_clear(&p->data);
    sse_buf_clear(&p->type);
    return rc;
}

static int sse_field_is(const char *name, size_t name_len, const char *expected)
{
    return name_len == strlen(expected) && memcmp(name, expected, name_len) == 0;
}

/* Applies one field; fields other than data, event, id and retry are ignored. */
static int sse_process_field(sse_parser_t *p, const char *name, size_t name_len, const char *value,
                             size_t value_len)
{
    int rc;

    if (sse_field_is(name, name_len, "data")) {
        rc = sse_buf_append(&p->data, value, value_len, p->max_event_bytes);
        if (rc == 0)
            rc = sse_buf_append(&p->data, "\n", 1, p->max_event_bytes);
        return rc;
    }
    if (sse_field_is(name, name_len, "event")) {
        sse_buf_clear(&p->type);
        return sse_buf_append(&p->type, value, value_len, p->max_event_bytes);
    }
    if (sse_field_is(name, name_len, "id")) {
        if (memchr(value, '\0', value_len))
            return 0; /* the standard ignores an id containing NUL */
        sse_buf_clear(&p->last_id);
        return sse_buf_append(&p->last_id, value, value_len, p->max_event_bytes);
    }
    if (sse_field_is(name, name_len, "retry")) {
        int64_t ms = 0;

        if (value_len == 0 || value_len > 15)
            return 0; /* empty, or too long for milliseconds that make sense */
        for (size_t i = 0; i < value_len; i++) {
            if (value[i] < '0' || value[i] > '9')
                return 0;
            ms = ms * 10 + (value[i] - '0');
        }
        p->retry_ms = ms;
    }
    return 0;
}

/* Processes one complete line, without its terminator. */
static int sse_process_line(sse_parser_t *p, const char *line, size_t len)
{
    const char *colon;
    const char *value;
    size_t name_len;
    size_t value_len;

    if (p->bom_pending) {
        p->bom_pending = 0;
        if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
            line += 3;
            len -= 3;
        }
    }

    if (len == 0)
        return sse_dispatch(p);
    if (line[0] == ':')
        return 0; /* comment, often a keep-alive */

    colon = memchr(line, ':', len);
    if (!colon)
        return sse_process_field(p, line, len, empty_text, 0);
    name_len = (size_t)(colon - line);
    value = colon + 1;
    value_len = len - name_len - 1;
    if (value_len > 0 && value[0] == ' ') {
        value++;
        value_len--;
    }
    return sse_process_field(p, line, name_len, value, value_len);
}

/* Index of the first CR or LF in buf[0..len), or len when there is none. */
static size_t sse_find_eol(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n' || buf[i] == '\r')
            return i;
    }
    return len;
}

int sse_parser_feed(sse_parser_t *p, const char *buf, size_t len)
{
    size_t pos = 0;
    int rc = 0;

    if (p->stop_rc)
        return p->stop_rc;

    while (pos < len) {
        size_t eol;

        /* the LF of a CRLF whose CR ended the previous line */
        if (p->after_cr) {
            p->after_cr = 0;
            if (buf[pos] == '\n') {
                pos++;
                continue;
            }
        }

        eol = pos + sse_find_eol(buf + pos, len - pos);
        if (eol == len) {
            /* no terminator yet: keep the tail for the next feed */
            rc = sse_buf_append(&p->line, buf + pos, len - pos, p->max_event_bytes);
            break;
        }

        if (p->line.len > 0) {
            rc = sse_buf_append(&p->line, buf + pos, eol - pos, p->max_event_bytes);
            if (rc == 0)
                rc = sse_process_line(p, p->line.ptr, p->line.len);
            sse_buf_clear(&p->line);
        } else {
            if (eol - pos > p->max_event_bytes)
                rc = SSE_ERR_TOO_LARGE;
            else
                rc = sse_process_line(p, buf + pos, eol - pos);
        }
        if (rc != 0)
            break;

        if (buf[eol] == '\r')
            p->after_cr = 1;
        pos = eol + 1;
    }

    if (rc != 0)
        p->stop_rc = rc;
    return rc;
}

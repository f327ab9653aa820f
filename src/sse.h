/*
 * sse.h - incremental parser for Server-Sent Events (text/event-stream).
 *
 * Follows the event stream interpretation rules of the WHATWG HTML standard:
 *  - lines end with CRLF, LF or CR, and a leading UTF-8 byte order mark is skipped;
 *  - lines starting with ':' are comments;
 *  - "field:value" drops one space after the colon, and a line without a
 *    colon is a field with an empty value;
 *  - several "data" lines join with "\n";
 *  - a blank line dispatches the event, unless no "data" line came since the
 *    last dispatch.
 * An event that the stream ends in the middle of is never dispatched.
 *
 * Bytes may arrive cut at any point (inside a line, between CR and LF, inside
 * the byte order mark); the parser keeps what it needs between calls.
 */
#ifndef PUSHAI_SSE_H
#define PUSHAI_SSE_H

#include <stddef.h>
#include <stdint.h>

/* Default limit on one line and on the data of one event, in bytes. */
#define SSE_DEFAULT_MAX_EVENT_BYTES (8u * 1024 * 1024)

/* Returns of sse_parser_feed() other than 0 and a callback's own value. */
#define SSE_ERR_TOO_LARGE (-1) /* a line or an event's data exceeded max_event_bytes */
#define SSE_ERR_NO_MEMORY (-2)

/*
 * One dispatched event. Every string is NUL-terminated and also has its length
 * (data may contain NUL bytes only if the stream did). The pointers are valid
 * during the callback only.
 */
typedef struct {
    const char *type;     /* "message" unless an "event" field set it */
    size_t type_len;
    const char *data;     /* the data lines joined with "\n", without a final "\n" */
    size_t data_len;
    const char *last_id;  /* the last "id" field seen in the stream so far, "" if none */
    size_t last_id_len;
} sse_event_t;

/* Called once per dispatched event; a non-zero return stops the parser and
 * becomes the return of sse_parser_feed(). */
typedef int (*sse_event_fn)(void *ctx, const sse_event_t *event);

typedef struct {
    char *ptr;
    size_t len;
    size_t cap;
} sse_buf_t;

/* Parser state; treat the fields as private. */
typedef struct {
    sse_event_fn on_event;
    void *ctx;
    size_t max_event_bytes;
    sse_buf_t line;       /* the current line while it spans several feeds */
    sse_buf_t data;       /* data lines of the pending event, each followed by "\n" */
    sse_buf_t type;       /* event type of the pending event, empty for "message" */
    sse_buf_t last_id;
    int64_t retry_ms;     /* the last valid "retry" field, -1 if none */
    int after_cr;         /* the previous byte was a CR that ended a line */
    int bom_pending;      /* no line was completed yet, so a BOM may still lead */
    int stop_rc;          /* non-zero once a callback stopped the parser or a limit was hit */
} sse_parser_t;

/* Prepares p; max_event_bytes 0 means SSE_DEFAULT_MAX_EVENT_BYTES. */
void sse_parser_init(sse_parser_t *p, sse_event_fn on_event, void *ctx, size_t max_event_bytes);

/*
 * Parses len more bytes of the stream, calling on_event for each event that
 * completes. Returns 0, the callback's non-zero value, SSE_ERR_TOO_LARGE or
 * SSE_ERR_NO_MEMORY. After a non-zero return the parser ignores further input
 * and returns that same value again.
 */
int sse_parser_feed(sse_parser_t *p, const char *buf, size_t len);

/* Returns 1 when bytes of an unfinished event are buffered (so a stream that
 * ends now loses them), else 0. */
int sse_parser_has_partial_event(const sse_parser_t *p);

/* The last valid "retry" field in milliseconds, or -1 when none came. */
int64_t sse_parser_retry_ms(const sse_parser_t *p);

/* Releases the buffers; p may be initialised again afterwards. */
void sse_parser_free(sse_parser_t *p);

#endif

/*
 * strbuf.h - a growable, NUL-terminated byte string, and the helpers that
 * build client-facing messages from untrusted text.
 *
 * Allocation failures are sticky: after one, every append is a no-op that
 * returns -1, and strbuf_detach() returns NULL, so a caller can append a whole
 * message and check once at the end.
 */
#ifndef PUSHAI_STRBUF_H
#define PUSHAI_STRBUF_H

#include <stddef.h>

typedef struct {
    char *data;   /* NUL-terminated once anything was appended; NULL before */
    size_t len;   /* bytes in data, without the NUL */
    size_t cap;   /* bytes allocated for data */
    int failed;   /* 1 after an allocation failed */
} strbuf_t;

#define STRBUF_INIT {NULL, 0, 0, 0}

/* Each append returns 0, or -1 when memory ran out (now or before). */
int strbuf_append(strbuf_t *sb, const char *text, size_t len);
int strbuf_append_str(strbuf_t *sb, const char *text);
int strbuf_appendf(strbuf_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Appends text in double quotes, with '"', '\' and control bytes escaped as
 * in JSON. When text is longer than max_bytes, only its first max_bytes (cut
 * back to a UTF-8 character boundary) are shown, followed by "...".
 */
int strbuf_append_quoted(strbuf_t *sb, const char *text, size_t len, size_t max_bytes);

/* Appends the items quoted as by strbuf_append_quoted(), separated by ", ". */
int strbuf_append_quoted_list(strbuf_t *sb, char *const *items, size_t n_items, size_t max_item_bytes);

/*
 * Returns the string (malloc'd, NUL-terminated; the caller frees it) and sets
 * *len when len is not NULL. The buffer is left empty. Returns NULL when an
 * allocation failed, after releasing the buffer.
 */
char *strbuf_detach(strbuf_t *sb, size_t *len);
void strbuf_free(strbuf_t *sb);

/*
 * Copies the buffer into out as valid UTF-8 (each invalid byte becomes '?'),
 * cut at a character boundary to fit out_size with its NUL. Writes
 * "out of memory" when an allocation failed. Does nothing when out_size is 0.
 */
void strbuf_copy_message(const strbuf_t *sb, char *out, size_t out_size);

/* Returns the length of the valid UTF-8 sequence at s (1 to 4), or 0 when the
 * bytes there are not one (overlong forms and surrogates are invalid). */
size_t strbuf_utf8_sequence_length(const unsigned char *s, size_t avail);

#endif

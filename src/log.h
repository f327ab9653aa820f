/*
 * log.h - structured log lines on stderr.
 *
 * One event per line: "time=... level=... msg=\"...\" key=value ...". The
 * caller writes the key=value pairs with the format string; values that can
 * contain spaces or quotes go through log_quote(). Lines are written with one
 * write(2) each, so lines from several threads never interleave.
 *
 * Never pass a secret (API key, provider key, secret hash) to these functions.
 */
#ifndef PUSHAI_LOG_H
#define PUSHAI_LOG_H

#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level_t;

/*
 * Buffers the calling thread's info and debug lines until log_flush(), so an
 * event loop writes the lines of one loop iteration with one write(2).
 * Warnings and errors are written at once, after what was buffered.
 */
void log_buffer_thread(void);
/* Writes the calling thread's buffered lines. */
void log_flush(void);

/* Lines below this level are dropped; the default is LOG_INFO. */
void log_set_level(log_level_t level);
int log_parse_level(const char *name, log_level_t *out);

/* Writes "time=<RFC 3339> level=<level> " followed by the formatted text. */
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Writes text as a double-quoted logfmt value into buf (escaping quotes,
 * backslashes and control bytes, cutting at buf_size) and returns buf.
 */
const char *log_quote(char *buf, size_t buf_size, const char *text, size_t len);

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

#define LOG_LINE_MAX 4096
#define LOG_BUFFER_BYTES 65536

static log_level_t min_level = LOG_INFO;

/* Lines of a thread that called log_buffer_thread(), and the text of the
 * current second, which most lines share. */
static __thread struct {
    int enabled;
    size_t len;
    char data[LOG_BUFFER_BYTES];
} thread_buffer;

static __thread struct {
    int64_t second;
    char text[RFC3339_MS_LEN + 1];
} thread_clock = {-1, ""};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level_t level)
{
    min_level = level;
}

int log_parse_level(const char *name, log_level_t *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

static void write_all(const char *data, size_t len)
{
    /* a short write to a pipe or terminal is finished, anything else is dropped */
    for (size_t done = 0; done < len;) {
        ssize_t w = write(STDERR_FILENO, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
}

void log_buffer_thread(void)
{
    thread_buffer.enabled = 1;
}

void log_flush(void)
{
    if (thread_buffer.len == 0)
        return;
    write_all(thread_buffer.data, thread_buffer.len);
    thread_buffer.len = 0;
}

/* Writes the current time into out, formatting the date part once a second. */
static void format_now(char out[RFC3339_MS_LEN + 1])
{
    int64_t now_ms = clock_now_ms();
    int64_t second = now_ms / 1000;
    int millis = (int)(now_ms % 1000);

    if (second != thread_clock.second) {
        clock_format_rfc3339(now_ms, thread_clock.text);
        thread_clock.second = second;
    }
    memcpy(out, thread_clock.text, RFC3339_MS_LEN + 1);
    /* "....:SS.mmmZ": the milliseconds sit just before the final Z */
    out[RFC3339_MS_LEN - 4] = (char)('0' + millis / 100);
    out[RFC3339_MS_LEN - 3] = (char)('0' + millis / 10 % 10);
    out[RFC3339_MS_LEN - 2] = (char)('0' + millis % 10);
}

void log_write(log_level_t level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    char now[RFC3339_MS_LEN + 1];
    size_t len;
    int n;
    va_list ap;

    if (level < min_level)
        return;

    format_now(now);
    n = snprintf(line, sizeof(line), "time=%s level=%s ", now, level_names[level]);
    len = (size_t)n;

    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    len += (size_t)n;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2; /* a cut line still ends with its newline */
    line[len++] = '\n';

    /* one write per line (or per buffer) keeps lines whole across threads */
    if (!thread_buffer.enabled || level >= LOG_WARN) {
        log_flush();
        write_all(line, len);
        return;
    }
    if (thread_buffer.len + len > sizeof(thread_buffer.data))
        log_flush();
    memcpy(thread_buffer.data + thread_buffer.len, line, len);
    thread_buffer.len += len;
}

const char *log_quote(char *buf, size_t buf_size, const char *text, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (buf_size < 3) {
        if (buf_size > 0)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        char esc[4];
        size_t esc_len = 0;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc_len = 2;
        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 15];
            esc_len = 4;
        } else {
            esc[0] = (char)c;
            esc_len = 1;
        }
        if (o + esc_len + 2 > buf_size)
            break;
        memcpy(buf + o, esc, esc_len);
        o += esc_len;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

static log_level_t min_level = LOG_INFO;

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

void log_write(log_level_t level, const char *fmt, ...)
{
    char line[4096];
    char now[RFC3339_MS_LEN + 1];
    size_t len;
    int n;
    va_list ap;

    if (level < min_level)
        return;

    clock_format_rfc3339(clock_now_ms(), now);
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

    /* one write per line keeps lines whole across threads; a short write to a
     * pipe or terminal is finished, anything else is dropped */
    for (size_t done = 0; done < len;) {
        ssize_t w = write(STDERR_FILENO, line + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
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

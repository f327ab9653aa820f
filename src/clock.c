#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t clock_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clock_format_rfc3339(int64_t unix_ms, char out[RFC3339_MS_LEN + 1])
{
    time_t seconds;
    int millis;
    struct tm tm;
    char text[64]; /* room for any int the fields could hold, to please -Wformat-truncation */

    if (unix_ms < 0)
        unix_ms = 0;
    seconds = (time_t)(unix_ms / 1000);
    millis = (int)(unix_ms % 1000);
    gmtime_r(&seconds, &tm);
    snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
    memcpy(out, text, RFC3339_MS_LEN);
    out[RFC3339_MS_LEN] = '\0';
}

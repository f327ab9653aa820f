/* clock.h - wall-clock and monotonic time in milliseconds, RFC 3339 text. */
#ifndef PUSHAI_CLOCK_H
#define PUSHAI_CLOCK_H

#include <stdint.h>

#define RFC3339_MS_LEN 24 /* "2026-12-04T19:08:20.123Z" */

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t clock_now_ms(void);
/* Milliseconds on CLOCK_MONOTONIC, for timeouts and durations. */
int64_t clock_mono_ms(void);
/* Formats Unix milliseconds as RFC 3339 UTC with milliseconds. */
void clock_format_rfc3339(int64_t unix_ms, char out[RFC3339_MS_LEN + 1]);

#endif

/*
 * ratelimit.h - token buckets by name (an API key id, a client address).
 *
 * Each name has a bucket of `burst` tokens that refills at `per_minute`
 * tokens a minute; a request takes one token. Buckets live in this process's
 * memory behind striped mutexes, so all HTTP threads of one process share them.
 * An idle bucket refills to full and is then dropped, so memory follows the
 * names seen recently, not all names ever seen.
 */
#ifndef PUSHAI_RATELIMIT_H
#define PUSHAI_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ratelimit ratelimit_t;

typedef struct {
    int allowed;            /* 1 when a token was available */
    int64_t limit;          /* the burst size, for RateLimit-Limit */
    int64_t remaining;      /* whole tokens left after this request */
    int64_t reset_s;        /* seconds until the bucket is full again */
    int64_t retry_after_s;  /* when not allowed: seconds until one token is back (at least 1) */
} ratelimit_result_t;

/* Returns NULL when out of memory. per_minute and burst must be > 0. */
ratelimit_t *ratelimit_create(int64_t per_minute, int64_t burst);
void ratelimit_destroy(ratelimit_t *limiter);

/* Takes one token from name's bucket when there is one. */
void ratelimit_take(ratelimit_t *limiter, const char *name, size_t name_len, int64_t now_ms, ratelimit_result_t *out);
/* Reports whether name's bucket has a token, without taking it. */
void ratelimit_peek(ratelimit_t *limiter, const char *name, size_t name_len, int64_t now_ms, ratelimit_result_t *out);

#endif

/*
 * ratelimit.c - striped hash tables of token buckets.
 *
 * State: RATELIMIT_STRIPES stripes, each a mutex and a chained hash table of
 * buckets. A name hashes to one stripe, so threads contend only when their
 * names share a stripe. A bucket stores its tokens as of updated_ms; reading
 * it first adds the tokens earned since then, capped at the burst.
 *
 * Memory bound: when a stripe holds more than RATELIMIT_STRIPE_MAX buckets, it
 * drops the buckets that are full again (a full bucket and a missing one mean
 * the same thing). If a flood of distinct names keeps every bucket partly
 * used, the stripe is cleared: those names start over with full buckets,
 * which costs a little accuracy and no memory.
 */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RATELIMIT_STRIPES 64
#define RATELIMIT_BUCKETS_PER_STRIPE 256
#define RATELIMIT_STRIPE_MAX 4096
#define RATELIMIT_NAME_MAX 64

typedef struct bucket {
    struct bucket *next;
    uint64_t hash;
    size_t name_len;
    char name[RATELIMIT_NAME_MAX];
    double tokens;
    int64_t updated_ms;
} bucket_t;

typedef struct {
    pthread_mutex_t lock;
    size_t count;
    bucket_t *heads[RATELIMIT_BUCKETS_PER_STRIPE];
} stripe_t;

struct ratelimit {
    double burst;
    double tokens_per_ms;
    stripe_t stripes[RATELIMIT_STRIPES];
};

ratelimit_t *ratelimit_create(int64_t per_minute, int64_t burst)
{
    ratelimit_t *limiter = calloc(1, sizeof(*limiter));

    if (limiter == NULL)
        return NULL;
    limiter->burst = (double)burst;
    limiter->tokens_per_ms = (double)per_minute / 60000.0;
    for (size_t i = 0; i < RATELIMIT_STRIPES; i++)
        pthread_mutex_init(&limiter->stripes[i].lock, NULL);
    return limiter;
}

static void stripe_clear(stripe_t *stripe)
{
    for (size_t i = 0; i < RATELIMIT_BUCKETS_PER_STRIPE; i++) {
        bucket_t *b = stripe->heads[i];
        while (b != NULL) {
            bucket_t *next = b->next;
            free(b);
            b = next;
        }
        stripe->heads[i] = NULL;
    }
    stripe->count = 0;
}

void ratelimit_destroy(ratelimit_t *limiter)
{
    if (limiter == NULL)
        return;
    for (size_t i = 0; i < RATELIMIT_STRIPES; i++) {
        stripe_clear(&limiter->stripes[i]);
        pthread_mutex_destroy(&limiter->stripes[i].lock);
    }
    free(limiter);
}

/* FNV-1a, 64 bits: names are short, and a flood cannot pick the stripe it
 * lands on in a way that matters, because a full stripe is simply cleared */
static uint64_t name_hash(const char *name, size_t len)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static double bucket_tokens_at(const ratelimit_t *limiter, const bucket_t *b, int64_t now_ms)
{
    double tokens = b->tokens;

    if (now_ms > b->updated_ms)
        tokens += (double)(now_ms - b->updated_ms) * limiter->tokens_per_ms;
    return tokens > limiter->burst ? limiter->burst : tokens;
}

static void stripe_drop_full(ratelimit_t *limiter, stripe_t *stripe, int64_t now_ms)
{
    for (size_t i = 0; i < RATELIMIT_BUCKETS_PER_STRIPE; i++) {
        bucket_t **link = &stripe->heads[i];
        while (*link != NULL) {
            bucket_t *b = *link;
            if (bucket_tokens_at(limiter, b, now_ms) >= limiter->burst) {
                *link = b->next;
                free(b);
                stripe->count--;
            } else {
                link = &b->next;
            }
        }
    }
    if (stripe->count > RATELIMIT_STRIPE_MAX)
        stripe_clear(stripe);
}

/* Finds or creates name's bucket; NULL only when out of memory. */
static bucket_t *stripe_bucket(ratelimit_t *limiter, stripe_t *stripe, uint64_t hash, const char *name,
                               size_t name_len, int64_t now_ms)
{
    size_t slot = (size_t)(hash >> 8) % RATELIMIT_BUCKETS_PER_STRIPE;
    bucket_t *b;

    for (b = stripe->heads[slot]; b != NULL; b = b->next) {
        if (b->hash == hash && b->name_len == name_len && memcmp(b->name, name, name_len) == 0)
            return b;
    }

    if (stripe->count >= RATELIMIT_STRIPE_MAX)
        stripe_drop_full(limiter, stripe, now_ms);
    b = malloc(sizeof(*b));
    if (b == NULL)
        return NULL;
    b->hash = hash;
    b->name_len = name_len;
    memcpy(b->name, name, name_len);
    b->tokens = limiter->burst;
    b->updated_ms = now_ms;
    b->next = stripe->heads[slot];
    stripe->heads[slot] = b;
    stripe->count++;
    return b;
}

static void fill_result(const ratelimit_t *limiter, double tokens, int allowed, ratelimit_result_t *out)
{
    double per_s = limiter->tokens_per_ms * 1000.0;

    out->allowed = allowed;
    out->limit = (int64_t)limiter->burst;
    out->remaining = tokens > 0 ? (int64_t)floor(tokens) : 0;
    out->reset_s = (int64_t)ceil((limiter->burst - tokens) / per_s);
    out->retry_after_s = 0;
    if (!allowed) {
        out->retry_after_s = (int64_t)ceil((1.0 - tokens) / per_s);
        if (out->retry_after_s < 1)
            out->retry_after_s = 1;
    }
}

static void bucket_access(ratelimit_t *limiter, const char *name, size_t name_len, int64_t now_ms, int take,
                          ratelimit_result_t *out)
{
    uint64_t hash;
    stripe_t *stripe;
    bucket_t *b;
    double tokens;
    int allowed;

    if (name_len > RATELIMIT_NAME_MAX)
        name_len = RATELIMIT_NAME_MAX;
    hash = name_hash(name, name_len);
    stripe = &limiter->stripes[hash % RATELIMIT_STRIPES];

    pthread_mutex_lock(&stripe->lock);
    b = stripe_bucket(limiter, stripe, hash, name, name_len, now_ms);
    if (b == NULL) {
        /* out of memory: let the request through rather than fail it */
        pthread_mutex_unlock(&stripe->lock);
        fill_result(limiter, limiter->burst, 1, out);
        return;
    }
    tokens = bucket_tokens_at(limiter, b, now_ms);
    allowed = tokens >= 1.0;
    if (allowed && take)
        tokens -= 1.0;
    if (take) {
        b->tokens = tokens;
        b->updated_ms = now_ms > b->updated_ms ? now_ms : b->updated_ms;
    }
    pthread_mutex_unlock(&stripe->lock);

    fill_result(limiter, tokens, allowed, out);
}

void ratelimit_take(ratelimit_t *limiter, const char *name, size_t name_len, int64_t now_ms, ratelimit_result_t *out)
{
    bucket_access(limiter, name, name_len, now_ms, 1, out);
}

void ratelimit_peek(ratelimit_t *limiter, const char *name, size_t name_len, int64_t now_ms, ratelimit_result_t *out)
{
    bucket_access(limiter, name, name_len, now_ms, 0, out);
}

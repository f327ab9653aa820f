/*
 * http.h - the HTTP front: listeners, event-loop threads, routing, request
 * ids, authentication, rate limits, the error envelope and the access log.
 *
 * Each thread runs its own h2o event loop with its own SO_REUSEPORT listener
 * and its own store connection, so threads share nothing on the request path
 * but the rate-limit tables. Handlers (api.c) run on the loop thread and
 * answer through http_send_json() or http_send_error(), exactly once.
 */
#ifndef PUSHAI_HTTP_H
#define PUSHAI_HTTP_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <stdint.h>

#include "config.h"
#include "engine.h"
#include "errors.h"
#include "model.h"
#include "ratelimit.h"
#include "store.h"

typedef struct http_server http_server_t;
typedef struct http_thread http_thread_t;

#define HTTP_REQUEST_ID_LEN 24 /* "req_" and 20 characters */
#define HTTP_MAX_PATH_PARAMS 2

/* One request as the handlers see it; lives in the request's memory pool. */
typedef struct {
    h2o_req_t *req;
    http_thread_t *thread;
    store_t *store;                  /* the thread's connection */
    const server_config_t *config;
    engine_t *engine;                /* NULL when the engine is off */
    char request_id[HTTP_REQUEST_ID_LEN + 1];
    int authenticated;
    api_key_t key;                   /* the caller's key when authenticated; label not loaded */
    int has_rate;
    ratelimit_result_t rate;         /* the key's bucket after this request */
    h2o_iovec_t params[HTTP_MAX_PATH_PARAMS]; /* path segments matched by "{...}" */
    h2o_iovec_t query;               /* raw query string without '?', or empty */
} http_call_t;

/* Binds the listeners and starts the threads; prints "listening on
 * http://HOST:PORT" once every thread accepts. 0, or -1 after logging why. */
int http_server_start(const server_config_t *config, engine_t *engine, http_server_t **out);
/* Stops accepting, gives open requests up to grace_ms, joins the threads and frees. */
void http_server_stop(http_server_t *server, int64_t grace_ms);

/* Sends status with a JSON body (copied). extra_headers: pairs of name and
 * value, NULL-terminated, or NULL. */
void http_send_json(http_call_t *call, int status, const char *body, size_t len, const char *const *extra_headers);
/* Sends the error envelope with a printf-style message. */
void http_send_error(http_call_t *call, api_error_t error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same, with extra headers as for http_send_json(). */
void http_send_error_with(http_call_t *call, api_error_t error, const char *const *extra_headers, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Looks up a request header by lowercase name; 1 when found. */
int http_find_header(const http_call_t *call, const char *lowercase_name, h2o_iovec_t *value);

/* The agent-list response cache of the calling thread (see api.c). */
typedef struct {
    int64_t org_id;
    int64_t agents_rev;
    int64_t limit;
    int64_t offset;
    char *body; /* malloc, NULL when the slot is empty */
    size_t len;
} http_cache_slot_t;

#define HTTP_CACHE_SLOTS 64
http_cache_slot_t *http_thread_cache(http_thread_t *thread);

#endif

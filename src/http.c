/*
 * http.c - the HTTP front of pushaid.
 *
 * Threads: config->threads event loops, each an h2o evloop with its own
 * listening socket bound with SO_REUSEPORT to the same address, its own store
 * connection and its own response cache. The kernel spreads connections over
 * the listeners; a connection stays on the thread that accepted it.
 *
 * A request goes through, in this order: request id, routing (404 not_found,
 * 405 method_not_allowed with Allow), authentication when the route needs it
 * (401, with failures throttled per client address), the key's rate limit
 * (429), then the route's handler. Every reply leaves through send_reply(),
 * which adds X-Request-Id, the RateLimit-* headers of an authenticated call
 * and the access-log line. Replies that h2o builds itself (a body over the
 * size limit, a malformed request line) are rewritten into the error envelope
 * by an output filter, so no client ever sees an error in another shape.
 *
 * Shutdown: http_server_stop() raises a flag that every loop checks at least
 * every LOOP_TICK_MS; a loop then closes its listener, runs for DRAIN_MS so
 * responses in flight reach their clients, and ends its thread.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <h2o/socket/evloop.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "clock.h"
#include "keys.h"
#include "log.h"

#define LOOP_TICK_MS 100
#define DRAIN_MS 500
#define LISTEN_BACKLOG 4096
#define ADDRESS_TEXT_MAX 64
/* Request headers beyond this many bytes (names and values) are rejected
 * with 400 before routing. h2o itself answers a plain 400 and closes the
 * connection for a request head it cannot buffer (somewhere above 64 KiB). */
#define MAX_HEADER_BYTES 16384
#define LIMIT_FAILURE_LOG_INTERVAL_MS 10000

struct http_thread {
    h2o_context_t ctx; /* first, so a context pointer is a thread pointer */
    h2o_accept_ctx_t accept_ctx;
    http_server_t *server;
    pthread_t tid;
    int index;
    int listen_fd;
    h2o_socket_t *listener;
    size_t open_connections;
    store_t *store;
    char request_id_prefix[11];
    uint64_t request_counter;
    http_cache_slot_t cache[HTTP_CACHE_SLOTS];
};

struct http_server {
    server_config_t config;
    engine_t *engine;
    h2o_globalconf_t globalconf;
    ratelimit_t *key_limiter;  /* NULL when rate limiting is off */
    ratelimit_t *auth_limiter; /* NULL when auth throttling is off */
    atomic_int stopping;
    int n_threads;
    http_thread_t *threads;

    /* start-up handshake: each thread reports whether it came up */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    int threads_started;
    int threads_failed;
};

typedef void (*route_handler_t)(http_call_t *call);

typedef struct {
    const char *pattern; /* segments; "{}" matches one non-empty segment */
    int needs_auth;
    route_handler_t get; /* also serves HEAD */
    route_handler_t post;
    const char *allow;   /* the Allow header for 405 */
} route_t;

/* The routing table: the one place that maps paths and methods to handlers. */
static const route_t routes[] = {
    {"/api/v1/agents", 1, api_list_agents, NULL, "GET, HEAD"},
    {"/api/v1/agents/{}/runs", 1, NULL, api_create_run, "POST"},
    {"/api/v1/agents/{}/runs/{}", 1, api_get_run, NULL, "GET, HEAD"},
    {"/api/v1/agents/{}/runs/{}/cancel", 1, NULL, api_cancel_run, "POST"},
    {"/healthz", 0, api_healthz, NULL, "GET, HEAD"},
    {"/readyz", 0, api_readyz, NULL, "GET, HEAD"},
};

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* ---- request ids ---- */

static const char base32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

/* "req_" + a random per-thread prefix + a per-thread counter: unique within
 * the process without a system call per request. */
static void make_request_id(http_thread_t *thread, char out[HTTP_REQUEST_ID_LEN + 1])
{
    uint64_t n = ++thread->request_counter;

    memcpy(out, "req_", 4);
    memcpy(out + 4, thread->request_id_prefix, 10);
    for (int i = HTTP_REQUEST_ID_LEN - 1; i >= 14; i--) {
        out[i] = base32_alphabet[n & 31];
        n >>= 5;
    }
    out[HTTP_REQUEST_ID_LEN] = '\0';
}

/* ---- replies ---- */

static void add_header(h2o_req_t *req, const char *name, const char *value, size_t value_len)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 1, NULL, value, value_len);
}

static void add_header_int(h2o_req_t *req, const char *name, int64_t value)
{
    char text[24];
    int n = snprintf(text, sizeof(text), "%lld", (long long)value);

    add_header(req, name, h2o_strdup(&req->pool, text, (size_t)n).base, (size_t)n);
}

static void log_access(http_call_t *call, int status)
{
    char path[256];
    h2o_req_t *req = call->req;
    double duration_ms = 0;
    struct timeval now;

    if (!call->config->access_log)
        return;
    gettimeofday(&now, NULL);
    duration_ms = (double)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000.0 +
                  (double)(now.tv_usec - req->timestamps.request_begin_at.tv_usec) / 1000.0;
    log_info("msg=request request_id=%s method=%.*s path=%s status=%d duration_ms=%.3f key_id=%s", call->request_id,
             (int)req->method.len, req->method.base, log_quote(path, sizeof(path), req->path.base, req->path.len),
             status, duration_ms, call->authenticated ? call->key.key_id : "-");
}

static void send_reply(http_call_t *call, int status, const char *reason, const char *body, size_t len,
                       const char *const *extra_headers)
{
    h2o_req_t *req = call->req;

    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    add_header(req, "x-request-id", call->request_id, HTTP_REQUEST_ID_LEN);
    if (call->has_rate) {
        add_header_int(req, "ratelimit-limit", call->rate.limit);
        add_header_int(req, "ratelimit-remaining", call->rate.remaining);
        add_header_int(req, "ratelimit-reset", call->rate.reset_s);
    }
    for (size_t i = 0; extra_headers != NULL && extra_headers[i] != NULL; i += 2)
        add_header(req, extra_headers[i], extra_headers[i + 1], strlen(extra_headers[i + 1]));

    log_access(call, status);
    h2o_send_inline(req, body, len);
}

static const char *status_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 503:
        return "Service Unavailable";
    default:
        return "OK";
    }
}

void http_send_json(http_call_t *call, int status, const char *body, size_t len, const char *const *extra_headers)
{
    send_reply(call, status, status_reason(status), body, len, extra_headers);
}

static void send_error_headers(http_call_t *call, api_error_t error, const char *const *extra_headers,
                               const char *fmt, va_list ap)
{
    const api_error_info_t *info = api_error_info(error);
    char message[1024];
    char *body;
    size_t len = 0;

    vsnprintf(message, sizeof(message), fmt, ap);
    body = api_error_body(error, message, call->request_id, &len);
    if (body == NULL) {
        static const char fallback[] = "{\"error\":{\"code\":\"internal_error\",\"message\":\"Out of memory.\"}}";
        send_reply(call, 500, "Internal Server Error", fallback, sizeof(fallback) - 1, NULL);
        return;
    }
    send_reply(call, info->status, info->reason, body, len, extra_headers);
    free(body);
}

void http_send_error_with(http_call_t *call, api_error_t error, const char *const *extra_headers, const char *fmt,
                            ...)
{
    va_list ap;

    va_start(ap, fmt);
    send_error_headers(call, error, extra_headers, fmt, ap);
    va_end(ap);
}

void http_send_error(http_call_t *call, api_error_t error, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    send_error_headers(call, error, NULL, fmt, ap);
    va_end(ap);
}

int http_find_header(const http_call_t *call, const char *lowercase_name, h2o_iovec_t *value)
{
    ssize_t i = h2o_find_header_by_str(&call->req->headers, lowercase_name, strlen(lowercase_name), -1);

    h2o_iovec_t v;

    if (i < 0)
        return 0;
    /* spaces and tabs around a field value are not part of it (RFC 9110,
     * section 5.5), and h2o 2.2 leaves trailing ones in place */
    v = call->req->headers.entries[i].value;
    while (v.len > 0 && (v.base[0] == ' ' || v.base[0] == '\t')) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
        v.len--;
    *value = v;
    return 1;
}

http_cache_slot_t *http_thread_cache(http_thread_t *thread)
{
    return thread->cache;
}

/* ---- routing ---- */

/* Matches path against pattern, collecting "{}" segments; 1 on a match. */
static int route_match(const char *pattern, const char *path, size_t path_len, h2o_iovec_t *params)
{
    size_t p = 0;
    size_t n_params = 0;
    const char *pat = pattern;

    while (*pat != '\0') {
        if (pat[0] == '{' && pat[1] == '}') {
            size_t start = p;
            while (p < path_len && path[p] != '/')
                p++;
            if (p == start || n_params == HTTP_MAX_PATH_PARAMS)
                return 0;
            params[n_params++] = h2o_iovec_init(path + start, p - start);
            pat += 2;
        } else {
            if (p >= path_len || path[p] != *pat)
                return 0;
            p++;
            pat++;
        }
    }
    return p == path_len;
}

static const route_t *find_route(const h2o_req_t *req, h2o_iovec_t *params)
{
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (route_match(routes[i].pattern, req->path_normalized.base, req->path_normalized.len, params))
            return &routes[i];
    }
    return NULL;
}

/* ---- authentication and limits ---- */

static void client_address(h2o_req_t *req, char out[ADDRESS_TEXT_MAX])
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);

    out[0] = '\0';
    if (len == 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, ADDRESS_TEXT_MAX);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, ADDRESS_TEXT_MAX);
}

typedef enum { AUTH_OK, AUTH_MISSING, AUTH_INVALID, AUTH_ERROR } auth_result_t;

static auth_result_t check_api_key(http_call_t *call)
{
    h2o_iovec_t header;
    char key_id[KEY_ID_LEN + 1];
    char secret[KEY_SECRET_LEN + 1];
    store_rc_t rc;
    int matches;

    if (!http_find_header(call, "x-api-key", &header) || header.len == 0)
        return AUTH_MISSING;
    if (key_parse(header.base, header.len, key_id, secret) != 0)
        return AUTH_INVALID;

    rc = store_key_get(call->store, key_id, &call->key);
    if (rc == STORE_NOT_FOUND)
        return AUTH_INVALID;
    if (rc != STORE_OK)
        return AUTH_ERROR;
    free(call->key.label);
    call->key.label = NULL;
    matches = key_secret_matches(key_id, secret, call->key.secret_hash);
    sodium_memzero(secret, sizeof(secret)); /* the secret goes no further than this frame */
    if (call->key.revoked_at_ms != 0 || !matches)
        return AUTH_INVALID;
    return AUTH_OK;
}

/*
 * Takes a token from name's bucket (take 1) or reads whether it has one
 * (take 0). When several processes serve the API from one database
 * (store_shares_limits), the bucket is a row that every process updates, so
 * the limit holds per key across nodes. Its clock is then the wall clock,
 * which the nodes share within their clock skew. Otherwise the bucket is in
 * limiter. A database failure lets the request through, as ratelimit.c does
 * when memory runs out. Every authenticated request also reads its key from
 * the database, so a database that fails here fails that read too, except
 * for a fault that falls between the two calls.
 */
static void limit_access(http_call_t *call, ratelimit_t *limiter, const char *scope, const char *name,
                         int64_t per_minute, int take, ratelimit_result_t *out)
{
    char bucket[ADDRESS_TEXT_MAX + 16];

    if (!store_shares_limits(call->store)) {
        if (take)
            ratelimit_take(limiter, name, strlen(name), clock_mono_ms(), out);
        else
            ratelimit_peek(limiter, name, strlen(name), clock_mono_ms(), out);
        return;
    }
    snprintf(bucket, sizeof(bucket), "%s:%s", scope, name);
    if (store_ratelimit_take(call->store, bucket, per_minute, per_minute, clock_now_ms(), take, out) != STORE_OK) {
        /* during a database outage every request gets here: one line per
         * thread every LIMIT_FAILURE_LOG_INTERVAL_MS */
        static __thread int64_t logged_mono_ms;

        if (logged_mono_ms == 0 || clock_mono_ms() - logged_mono_ms >= LIMIT_FAILURE_LOG_INTERVAL_MS) {
            log_warn("msg=\"rate limit not checked: the database failed\" request_id=%s scope=%s",
                     call->request_id, scope);
            logged_mono_ms = clock_mono_ms();
        }
        memset(out, 0, sizeof(*out));
        out->allowed = 1;
        out->limit = per_minute;
        out->remaining = per_minute;
    }
}

/* Authenticates and applies the key's rate limit; 0 to go on to the handler,
 * -1 when a reply was sent. */
static int authenticate(http_call_t *call)
{
    http_server_t *server = call->thread->server;
    char address[ADDRESS_TEXT_MAX];
    ratelimit_result_t throttle;
    auth_result_t result;

    /* failed authentications are throttled per client address, so a throttled
     * address is told to wait before its key is even looked at */
    if (server->auth_limiter != NULL) {
        client_address(call->req, address);
        limit_access(call, server->auth_limiter, "address", address, server->config.auth_rate_limit_per_min, 0,
                     &throttle);
        if (!throttle.allowed) {
            char retry[24];
            snprintf(retry, sizeof(retry), "%lld", (long long)throttle.retry_after_s);
            const char *headers[] = {"retry-after", retry, NULL};
            http_send_error_with(call, API_ERR_RATE_LIMITED, headers,
                            "Too many failed authentications from this address. Retry after %lld seconds.",
                            (long long)throttle.retry_after_s);
            return -1;
        }
    }

    result = check_api_key(call);
    if (result == AUTH_ERROR) {
        http_send_error(call, API_ERR_INTERNAL_ERROR, "The server could not check the API key. Request id %s.",
                        call->request_id);
        return -1;
    }
    if (result != AUTH_OK) {
        if (server->auth_limiter != NULL)
            limit_access(call, server->auth_limiter, "address", address, server->config.auth_rate_limit_per_min, 1,
                         &throttle);
        if (result == AUTH_MISSING)
            http_send_error(call, API_ERR_MISSING_API_KEY, "Missing API key: send it in the x-api-key header.");
        else
            http_send_error(call, API_ERR_INVALID_API_KEY, "Invalid API key.");
        return -1;
    }
    call->authenticated = 1;

    if (server->key_limiter != NULL) {
        limit_access(call, server->key_limiter, "key", call->key.key_id, server->config.rate_limit_per_min, 1,
                     &call->rate);
        call->has_rate = 1;
        if (!call->rate.allowed) {
            char retry[24];
            snprintf(retry, sizeof(retry), "%lld", (long long)call->rate.retry_after_s);
            const char *headers[] = {"retry-after", retry, NULL};
            http_send_error_with(call, API_ERR_RATE_LIMITED, headers,
                            "Rate limit of %lld requests per minute exceeded. Retry after %lld seconds.",
                            (long long)server->config.rate_limit_per_min, (long long)call->rate.retry_after_s);
            return -1;
        }
    }
    return 0;
}

/* ---- the request handler ---- */

static http_call_t *call_new(h2o_req_t *req)
{
    http_thread_t *thread = (http_thread_t *)req->conn->ctx;
    http_call_t *call = h2o_mem_alloc_pool(&req->pool, sizeof(*call));

    memset(call, 0, sizeof(*call));
    call->req = req;
    call->thread = thread;
    call->store = thread->store;
    call->config = &thread->server->config;
    call->engine = thread->server->engine;
    make_request_id(thread, call->request_id);
    if (req->query_at != SIZE_MAX)
        call->query = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    return call;
}

static size_t header_bytes(const h2o_req_t *req)
{
    size_t total = req->path.len;

    for (size_t i = 0; i < req->headers.size; i++)
        total += req->headers.entries[i].name->len + req->headers.entries[i].value.len;
    return total;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_call_t *call = call_new(req);
    const route_t *route;
    route_handler_t handler = NULL;

    if (header_bytes(req) > MAX_HEADER_BYTES) {
        req->http1_is_persistent = 0;
        http_send_error(call, API_ERR_INVALID_REQUEST, "Request headers and path are larger than %d bytes.",
                        MAX_HEADER_BYTES);
        return 0;
    }

    route = find_route(req, call->params);
    if (route == NULL) {
        char path[128];
        http_send_error(call, API_ERR_NOT_FOUND, "No route for %.*s %s.", (int)req->method.len, req->method.base,
                        log_quote(path, sizeof(path), req->path_normalized.base, req->path_normalized.len));
        return 0;
    }
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        handler = route->get;
    else if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")))
        handler = route->post;
    if (handler == NULL) {
        const char *headers[] = {"allow", route->allow, NULL};
        http_send_error_with(call, API_ERR_METHOD_NOT_ALLOWED, headers, "Method %.*s is not allowed here; use %s.",
                        (int)req->method.len, req->method.base, route->allow);
        return 0;
    }

    if (route->needs_auth && authenticate(call) != 0)
        return 0;
    handler(call);
    return 0;
}

/* ---- the envelope filter for replies that h2o builds itself ---- */

typedef struct {
    h2o_ostream_t super;
    h2o_iovec_t body;
} envelope_ostream_t;

static void envelope_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                             h2o_send_state_t state)
{
    envelope_ostream_t *os = (envelope_ostream_t *)self;

    /* h2o's own error bodies come in one final piece; the envelope replaces it */
    if (h2o_send_state_is_in_progress(state)) {
        h2o_ostream_send_next(&os->super, req, NULL, 0, state);
        return;
    }
    h2o_ostream_send_next(&os->super, req, &os->body, os->body.len != 0 ? 1 : 0, state);
}

static api_error_t error_for_status(int status)
{
    switch (status) {
    case 400:
        return API_ERR_INVALID_REQUEST;
    case 404:
        return API_ERR_NOT_FOUND;
    case 405:
        return API_ERR_METHOD_NOT_ALLOWED;
    case 413:
        return API_ERR_PAYLOAD_TOO_LARGE;
    case 415:
        return API_ERR_UNSUPPORTED_MEDIA_TYPE;
    default:
        return API_ERR_INTERNAL_ERROR;
    }
}

static void envelope_on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    http_thread_t *thread = (http_thread_t *)req->conn->ctx;
    char request_id[HTTP_REQUEST_ID_LEN + 1];
    api_error_t error;
    const char *message;
    char text[128];
    char *body;
    size_t len = 0;
    envelope_ostream_t *os;

    /* our own replies carry a request id; everything else is h2o's */
    if (req->res.status < 400 || h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) >= 0) {
        h2o_setup_next_ostream(req, slot);
        return;
    }

    make_request_id(thread, request_id);
    error = error_for_status(req->res.status);
    switch (error) {
    case API_ERR_PAYLOAD_TOO_LARGE:
        snprintf(text, sizeof(text), "Request body is larger than the limit of %zu bytes.",
                 thread->server->config.max_body_bytes);
        message = text;
        break;
    case API_ERR_INVALID_REQUEST:
        message = "Malformed HTTP request.";
        break;
    default:
        message = api_error_info(error)->reason;
        break;
    }
    body = api_error_body(error, message, request_id, &len);
    os = (envelope_ostream_t *)h2o_add_ostream(req, sizeof(*os), slot);
    os->super.do_send = envelope_do_send;
    os->body = body != NULL ? h2o_strdup(&req->pool, body, len) : h2o_iovec_init(NULL, 0);
    free(body);

    req->res.status = api_error_info(error)->status;
    req->res.reason = api_error_info(error)->reason;
    req->res.content_length = os->body.len;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("application/json"), 1);
    add_header(req, "x-request-id", h2o_strdup(&req->pool, request_id, HTTP_REQUEST_ID_LEN).base,
               HTTP_REQUEST_ID_LEN);
    log_info("msg=request request_id=%s status=%d error=%s", request_id, req->res.status, api_error_info(error)->code);

    slot = &os->super.next;
    h2o_setup_next_ostream(req, slot);
}

/* ---- listeners and threads ---- */

static void on_connection_close(void *data)
{
    http_thread_t *thread = data;

    thread->open_connections--;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    http_thread_t *thread = listener->data;
    h2o_socket_t *sock;

    if (err != NULL)
        return;
    /* accept a batch per wake-up; h2o's listener is non-blocking */
    for (int i = 0; i < 64; i++) {
        if ((sock = h2o_evloop_socket_accept(listener)) == NULL)
            return;
        thread->open_connections++;
        sock->on_close.cb = on_connection_close;
        sock->on_close.data = thread;
        h2o_accept(&thread->accept_ctx, sock);
    }
}

static int open_listener(const server_config_t *config, int port, int *out_fd, int *out_port)
{
    struct addrinfo hints, *res = NULL;
    char port_text[8];
    int fd = -1, on = 1, rc;
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof(bound);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    snprintf(port_text, sizeof(port_text), "%d", port);
    if ((rc = getaddrinfo(config->listen_host, port_text, &hints, &res)) != 0) {
        log_error("msg=\"cannot resolve listen address\" host=%s error=\"%s\"", config->listen_host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &bound_len) != 0) {
        log_error("msg=\"cannot listen\" host=%s port=%d error=\"%s\"", config->listen_host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    *out_fd = fd;
    *out_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

static void report_start(http_server_t *server, int ok)
{
    pthread_mutex_lock(&server->start_lock);
    if (ok)
        server->threads_started++;
    else
        server->threads_failed++;
    pthread_cond_broadcast(&server->start_cond);
    pthread_mutex_unlock(&server->start_lock);
}

/* Frees the socket buffers that h2o keeps for reuse in this thread's
 * storage, which would otherwise leak when the thread ends. */
static void release_thread_buffers(void)
{
    h2o_mem_recycle_t *recycle = &h2o_socket_buffer_prototype.allocator;

    while (recycle->cnt > 0)
        free(h2o_mem_alloc_recycle(recycle, 0));
}

static void *thread_main(void *arg)
{
    http_thread_t *thread = arg;
    http_server_t *server = thread->server;
    int64_t drain_until;

    if (store_open(server->config.db_uri, &thread->store) != STORE_OK) {
        report_start(server, 0);
        return NULL;
    }
    h2o_context_init(&thread->ctx, h2o_evloop_create(), &server->globalconf);
    thread->accept_ctx.ctx = &thread->ctx;
    thread->accept_ctx.hosts = server->globalconf.hosts;
    thread->listener = h2o_evloop_socket_create(thread->ctx.loop, thread->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    thread->listener->data = thread;
    h2o_socket_read_start(thread->listener, on_accept);
    report_start(server, 1);

    /* access-log lines of one loop iteration leave in one write */
    log_buffer_thread();
    while (!atomic_load(&server->stopping)) {
        h2o_evloop_run(thread->ctx.loop, LOOP_TICK_MS);
        log_flush();
    }

    /* stop accepting, ask h2o to close idle keep-alive connections, and
     * let replies in flight reach their clients */
    h2o_socket_read_stop(thread->listener);
    h2o_socket_close(thread->listener);
    thread->listener = NULL;
    h2o_context_request_shutdown(&thread->ctx);
    drain_until = clock_mono_ms() + DRAIN_MS;
    while (thread->open_connections > 0 && clock_mono_ms() < drain_until) {
        h2o_evloop_run(thread->ctx.loop, 50);
        log_flush();
    }

    /* h2o cannot dispose of a context that still has connections, so a
     * client that keeps one open past the drain leaves it to process exit */
    if (thread->open_connections == 0) {
        /* the shutdown request armed HTTP/2's graceful-shutdown timer, and a
         * context cannot be disposed of with a timer still armed */
        if (h2o_timeout_is_linked(&thread->ctx.http2._graceful_shutdown_timeout))
            h2o_timeout_unlink(&thread->ctx.http2._graceful_shutdown_timeout);
        h2o_context_dispose(&thread->ctx);
        h2o_evloop_destroy(thread->ctx.loop);
        release_thread_buffers();
    } else {
        log_warn("msg=\"connections still open at shutdown\" thread=%d connections=%zu", thread->index,
                 thread->open_connections);
    }

    store_close(thread->store);
    thread->store = NULL;
    return NULL;
}

static void setup_globalconf(http_server_t *server)
{
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    h2o_handler_t *handler;
    h2o_filter_t *filter;

    h2o_config_init(&server->globalconf);
    /* h2o rejects a chunked body that reaches its limit, one that merely
     * equals it included; one byte more lets a body of exactly
     * max_body_bytes through, and api.c rejects anything longer */
    server->globalconf.max_request_entity_size = server->config.max_body_bytes + 1;
    server->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("pushaid"));
    host = h2o_config_register_host(&server->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    path = h2o_config_register_path(host, "/", 0);
    handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;

    /* errors that h2o sends before routing use the host's fallback path */
    filter = h2o_create_filter(path, sizeof(*filter));
    filter->on_setup_ostream = envelope_on_setup_ostream;
    filter = h2o_create_filter(&host->fallback_path, sizeof(*filter));
    filter->on_setup_ostream = envelope_on_setup_ostream;
}

int http_server_start(const server_config_t *config, engine_t *engine, http_server_t **out)
{
    http_server_t *server = calloc(1, sizeof(*server));
    int port = config->listen_port;

    if (server == NULL)
        return -1;
    server->config = *config;
    server->engine = engine;
    server->n_threads = config->threads;
    pthread_mutex_init(&server->start_lock, NULL);
    pthread_cond_init(&server->start_cond, NULL);
    if (config->rate_limit_per_min > 0)
        server->key_limiter = ratelimit_create(config->rate_limit_per_min, config->rate_limit_per_min);
    if (config->auth_rate_limit_per_min > 0)
        server->auth_limiter = ratelimit_create(config->auth_rate_limit_per_min, config->auth_rate_limit_per_min);
    setup_globalconf(server);

    server->threads = calloc((size_t)server->n_threads, sizeof(*server->threads));
    if (server->threads == NULL)
        goto fail;

    /* bind every listener before any thread starts: the first one picks the
     * port when the configured port is 0, the others share it */
    for (int i = 0; i < server->n_threads; i++) {
        http_thread_t *thread = &server->threads[i];
        thread->server = server;
        thread->index = i;
        thread->listen_fd = -1;
        randombytes_buf(thread->request_id_prefix, 10);
        for (int c = 0; c < 10; c++)
            thread->request_id_prefix[c] = base32_alphabet[(unsigned char)thread->request_id_prefix[c] & 31];
        thread->request_id_prefix[10] = '\0';
        if (open_listener(config, port, &thread->listen_fd, &port) != 0)
            goto fail;
    }

    for (int i = 0; i < server->n_threads; i++) {
        if (pthread_create(&server->threads[i].tid, NULL, thread_main, &server->threads[i]) != 0) {
            log_error("msg=\"cannot start HTTP thread\" error=\"%s\"", strerror(errno));
            atomic_store(&server->stopping, 1);
            for (int j = 0; j < i; j++)
                pthread_join(server->threads[j].tid, NULL);
            goto fail;
        }
    }

    pthread_mutex_lock(&server->start_lock);
    while (server->threads_started + server->threads_failed < server->n_threads)
        pthread_cond_wait(&server->start_cond, &server->start_lock);
    pthread_mutex_unlock(&server->start_lock);
    if (server->threads_failed > 0) {
        log_error("msg=\"HTTP threads failed to start\" failed=%d", server->threads_failed);
        http_server_stop(server, 0);
        return -1;
    }

    if (strchr(config->listen_host, ':') != NULL)
        log_info("msg=\"listening on http://[%s]:%d\" threads=%d", config->listen_host, port, server->n_threads);
    else
        log_info("msg=\"listening on http://%s:%d\" threads=%d", config->listen_host, port, server->n_threads);
    *out = server;
    return 0;

fail:
    for (int i = 0; server->threads != NULL && i < server->n_threads; i++) {
        if (server->threads[i].listen_fd >= 0)
            close(server->threads[i].listen_fd);
    }
    free(server->threads);
    ratelimit_destroy(server->key_limiter);
    ratelimit_destroy(server->auth_limiter);
    h2o_config_dispose(&server->globalconf);
    free(server);
    return -1;
}

void http_server_stop(http_server_t *server, int64_t grace_ms)
{
    if (server == NULL)
        return;
    atomic_store(&server->stopping, 1);
    for (int i = 0; i < server->n_threads; i++)
        pthread_join(server->threads[i].tid, NULL);
    for (int i = 0; i < server->n_threads; i++) {
        for (int s = 0; s < HTTP_CACHE_SLOTS; s++)
            free(server->threads[i].cache[s].body);
    }
    free(server->threads);
    h2o_config_dispose(&server->globalconf);
    ratelimit_destroy(server->key_limiter);
    ratelimit_destroy(server->auth_limiter);
    free(server);
}

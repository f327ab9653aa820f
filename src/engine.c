/*
 * engine.c - the run engine.
 *
 * Loop. One thread owns everything here: a store_t of its own, a libcurl
 * multi handle driven by curl_multi_socket_action(), an epoll set holding
 * curl's sockets and an eventfd for engine_notify(), and a min-heap of timers.
 * Each turn waits in epoll_wait() for the earliest deadline among curl's
 * timer, the first heap timer, the next claim (poll_interval_ms after the
 * last), the next lease renewal (every lease_ms/3 while the engine owns runs)
 * and, when stopping, the end of the grace period. Then it hands ready sockets
 * and an expired timer to curl, finishes the transfers curl reports done,
 * fires due heap timers, renews leases and claims runs. No run has a thread
 * of its own, and no store call is made from a curl callback. A store with a
 * notification descriptor (PostgreSQL) has it in the epoll set too, so a run
 * created or cancelled through another process wakes the loop at once.
 *
 * Why socket_action with epoll rather than curl_multi_poll(): with
 * curl_multi_poll() every wake-up rebuilds a pollfd array of all transfers and
 * curl_multi_perform() visits every transfer, so a turn costs O(transfers).
 * With socket_action a turn costs O(ready sockets). Measured with libcurl
 * 7.88.1 on 2 cores: N HTTP/1.1 streams from a local server, each sending 50
 * SSE chunks 200 ms apart, drained by a bare loop of each kind; client CPU
 * time, two runs each: N=1000 poll 2.3-2.5 s, epoll 0.6-0.7 s; N=2000 poll
 * 3.9-5.3 s, epoll 1.2-1.3 s. So epoll costs about a quarter of the CPU.
 *
 * Run states (engine_run_t.state). A claimed run is resolved to a provider;
 * an unknown name fails it at once, and a local provider (echo) completes it
 * at once. An HTTP run goes
 *
 *     ATTEMPT --(retryable failure, time left)--> BACKOFF --(timer)--> ATTEMPT
 *     ATTEMPT --(success, or final failure)--> written with store_run_complete
 *     written --(store error)--> COMPLETING --(timer, 1 s)--> written again
 *
 * Retries. These failures are retried: connect, send and receive errors
 * before a 2xx reply began, idle timeouts (no byte for idle_timeout_ms, seen
 * by the progress callback), the statuses of provider_status_retryable(), and
 * error objects with a code of provider_error_code_retryable() inside a 2xx
 * stream. Other 4xx and 5xx statuses, a 2xx reply that breaks off or ends
 * before a finish reason, and a reply that cannot be parsed fail at once.
 * There are at most PROVIDER_MAX_ATTEMPTS attempts. The wait before the next
 * one is Retry-After (plus up to 10 % jitter) when the provider sent it, else
 * a full-jitter delay in [0, provider_backoff_ceiling_ms(attempt)]. Every
 * attempt is bounded by what is left of the run's deadline (agent timeout_ms,
 * else default_timeout_ms, counted from the claim). A retry that could not
 * start before the deadline is not waited for: the run fails with the last
 * failure instead.
 *
 * Leases. store_runs_claim() gives each run a lease of lease_ms; every
 * lease_ms/3 the engine extends all of its leases at once with
 * store_runs_renew(). A run whose lease lapsed (the loop stalled, the store
 * was unreachable) can be claimed by another engine; our completion then gets
 * STORE_NOT_FOUND and our result is dropped. If our own claim returns a run
 * this engine still executes, the copy is dropped (engine.in_flight lookup).
 * Because a renewal extends every lease of this engine, a claimed run must
 * never be dropped silently: even out of memory it is failed in the store
 * (engine_reject_claimed), and a result the store did not take waits in
 * COMPLETING until it does or the engine stops.
 *
 * Ownership. The claimed run_t is moved into an engine_run_t, which owns it
 * and everything of its attempt (easy handle, request, reply, SSE parser,
 * body buffer) until engine_run_finish() frees it. The engine owns the
 * engine_run_t from claim to finish; curl only holds its pointer as
 * CURLOPT_PRIVATE while a transfer is added.
 *
 * Limits. A claim asks for at most max_in_flight minus the runs held, and
 * passes max_per_org and max_per_agent to the store, which counts them over
 * every process on the database and lets organizations take turns. When a
 * limit held runs back, every run that ends here triggers another claim, so
 * a freed slot is filled at once; a slot freed by another process is seen
 * at the next poll_interval_ms.
 *
 * Cancellation. store_run_cancel() marks a running run in the store. The
 * engine that holds it learns of it from engine_cancel() (the API in the
 * same process: a queue of run ids and a wake-up) or from
 * store_runs_cancel_requested(), asked every ENGINE_CANCEL_POLL_MS while the
 * engine holds runs (any process). A run in ATTEMPT has its transfer removed
 * from the multi handle, a run in BACKOFF leaves the heap, and either is
 * completed as cancelled with the text received so far as its output. A run
 * in COMPLETING already has its result, which it keeps. Failed runs keep
 * that text as well, though the API shows it only for cancelled ones.
 *
 * Stop. engine_stop() sets a flag and wakes the loop, which stops claiming
 * and keeps running until no run is left or grace_ms has passed. Transfers
 * still going are then aborted, their runs freed and handed back as pending
 * with store_runs_release() (which ends runs marked for cancellation as
 * cancelled), and the thread ends.
 */
#include "engine.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "model.h"
#include "provider.h"
#include "sse.h"
#include "store.h"

#define ENGINE_CLAIM_BATCH_MAX 256       /* runs per store_runs_claim call */
#define ENGINE_COMPLETE_RETRY_MS 1000    /* wait before writing a result again after a store error */
#define ENGINE_MAX_ERROR_BODY_BYTES (64u * 1024)
#define ENGINE_MAX_JSON_BODY_BYTES (16u * 1024 * 1024)
#define ENGINE_MAX_EPOLL_EVENTS 256
#define ENGINE_DEADLINE_SLACK_MS 100     /* curl's timeout can fire this much early */
#define ENGINE_MAX_ERROR_TEXT_BYTES 1000
#define ENGINE_CANCEL_QUEUE_MAX 1024     /* engine_cancel() ids waiting; past this the poll finds them */
#define ENGINE_CANCEL_BATCH_MAX 256      /* ids per store_runs_cancel_requested call */
/* Idle provider connections kept for reuse. libcurl's default is four per
 * transfer added, so after a burst of 10,000 runs it would keep every one of
 * their connections (a socket and its buffers each) until libcurl's maximum
 * idle age, 118 s in libcurl 7.88. */
#define ENGINE_MAX_IDLE_CONNECTIONS 256L
/* libcurl's receive buffer per transfer (its default is 16 KiB). A stream
 * that arrives faster than the loop reads it fills the whole buffer on every
 * read, so with thousands of transfers these buffers dominate the memory.
 * Stream events are a few hundred bytes, so 4 KiB still takes many per read.
 * Measured with bench/engine.py, 10,000 runs in flight: peak RSS 262 to 293
 * MB with 16 KiB, 179 MB with 4 KiB. */
#define ENGINE_RECEIVE_BUFFER_BYTES 4096L

typedef enum {
    ENGINE_RUN_ATTEMPT = 0,  /* a transfer is in the multi handle */
    ENGINE_RUN_BACKOFF,      /* waiting in the heap for the next attempt */
    ENGINE_RUN_COMPLETING    /* result ready, waiting in the heap to write it again */
} engine_run_state_t;

typedef enum {
    BODY_UNKNOWN = 0, /* no byte of the body yet */
    BODY_SSE,         /* 2xx event stream, fed to the SSE parser */
    BODY_JSON,        /* 2xx plain JSON, parsed whole at the end */
    BODY_ERROR        /* non-2xx, kept (up to a limit) for the error text */
} body_kind_t;

/* What went wrong with an attempt; decides the retry and the error text. */
typedef enum {
    FAILURE_NONE = 0,
    FAILURE_STATUS,      /* non-2xx reply */
    FAILURE_TRANSPORT,   /* could not connect, send or receive */
    FAILURE_IDLE,        /* no byte for idle_timeout_ms */
    FAILURE_DEADLINE,    /* the run's total deadline passed */
    FAILURE_INCOMPLETE,  /* the stream ended before a finish reason */
    FAILURE_EMPTY,       /* a 2xx reply without a body */
    FAILURE_PROVIDER,    /* the provider sent an error object in a 2xx reply */
    FAILURE_BAD_REPLY,   /* the reply could not be understood */
    FAILURE_INTERNAL     /* this process could not start the transfer */
} failure_kind_t;

/* What to do with a run after one of its transfers ended. */
typedef enum {
    VERDICT_SUCCEED = 0,
    VERDICT_FAIL,
    VERDICT_RETRY
} verdict_t;

typedef struct engine_run {
    run_t run;                      /* owned */
    const provider_t *provider;
    provider_endpoint_t endpoint;   /* strings borrowed from the engine's config */
    engine_run_state_t state;
    int attempt;                    /* attempts started since the claim, 1-based */
    int64_t started_mono_ms;
    int64_t deadline_mono_ms;
    int64_t timeout_ms;             /* the run's total deadline */
    int64_t idle_timeout_ms;        /* copied from the engine for the progress callback */
    int64_t wake_mono_ms;           /* heap key in BACKOFF and COMPLETING */
    size_t heap_index;              /* SIZE_MAX when not in the heap */

    /* the current attempt */
    CURL *easy;
    struct curl_slist *headers;
    provider_request_t request;     /* built once, sent by every attempt */
    provider_reply_t reply;
    sse_parser_t sse;
    body_kind_t body_kind;
    char *body;                     /* BODY_JSON and BODY_ERROR bytes */
    size_t body_len;
    size_t body_cap;
    int body_truncated;             /* an error body went over its limit */
    int write_failed;               /* the write callback stopped the transfer */
    int idle_expired;               /* the progress callback stopped an idle transfer */
    curl_off_t seen_bytes;          /* bytes sent and received, as of the last progress call */
    int64_t last_activity_mono_ms;  /* when seen_bytes last grew */
    char curl_error[CURL_ERROR_SIZE];

    /* the last failure, for the final error text */
    failure_kind_t failure;
    long failure_status;
    char *failure_detail;           /* curl's message, or the parse error */

    struct engine_run *prev;
    struct engine_run *next;
} engine_run_t;

typedef struct {
    char *name;
    const provider_t *provider;
    provider_endpoint_t endpoint;   /* strings owned by the engine */
} engine_route_t;

struct engine {
    /* settings, copied */
    char *db_uri;
    char *node_id;
    size_t max_in_flight;
    int64_t lease_ms;
    int max_attempts;
    int64_t default_timeout_ms;
    int64_t poll_interval_ms;
    int64_t connect_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t max_per_org;
    int64_t max_per_agent;
    engine_route_t *routes;         /* named providers first, then the built-ins */
    size_t n_routes;

    /* shared with other threads */
    pthread_t thread;
    int thread_started;
    int wake_fd;
    atomic_int wake_pending;
    atomic_int stop_requested;
    _Atomic int64_t grace_ms;
    pthread_mutex_t start_mutex;
    pthread_cond_t start_cond;
    int start_result;               /* 0 while starting, 1 running, -1 failed */
    pthread_mutex_t cancel_mutex;   /* guards the cancel queue */
    char (*cancel_queue)[RUN_ID_LEN + 1]; /* ids from engine_cancel(), ENGINE_CANCEL_QUEUE_MAX slots */
    size_t cancel_queue_len;
    atomic_int cancel_queued;       /* cancel_queue_len > 0, readable without the mutex */

    /* engine thread only */
    store_t *store;
    int epoll_fd;
    int store_fd;                   /* store_notify_fd(), -1 when the store has none */
    CURLM *multi;
    int64_t curl_timer_mono_ms;     /* -1 when curl wants no timer */
    engine_run_t *runs;             /* every run held, in a doubly linked list */
    size_t n_runs;
    void *in_flight;                /* tsearch tree of held runs by id */
    engine_run_t **heap;            /* timers: a min-heap on wake_mono_ms */
    size_t heap_len;
    size_t heap_cap;
    int claim_soon;                 /* notified, or the last claim filled its batch */
    int claim_blocked;              /* the last claim found no free slot */
    int claim_held_back;            /* the last claim may have left runs pending for a per-org or
                                       per-agent limit */
    int64_t next_cancel_poll_mono_ms;
    int64_t next_claim_mono_ms;
    int64_t next_renew_mono_ms;
    int stopping;
    int64_t grace_end_mono_ms;
};

static void engine_attempt_start(engine_t *e, engine_run_t *r);
static void engine_run_finish(engine_t *e, engine_run_t *r);

/* ---- configuration ---- */

void engine_config_defaults(engine_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_in_flight = 1000;
    cfg->lease_ms = 30000;
    cfg->max_attempts = 3;
    cfg->default_timeout_ms = 300000;
    cfg->poll_interval_ms = 1000;
    cfg->connect_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
}

static char *engine_strdup_or_null(const char *text)
{
    return text ? strdup(text) : NULL;
}

static void engine_routes_free(engine_t *e)
{
    for (size_t i = 0; i < e->n_routes; i++) {
        engine_route_t *route = &e->routes[i];

        free(route->name);
        free((char *)route->endpoint.base_url);
        if (route->endpoint.api_key) {
            explicit_bzero((char *)route->endpoint.api_key, strlen(route->endpoint.api_key));
            free((char *)route->endpoint.api_key);
        }
    }
    free(e->routes);
    e->routes = NULL;
    e->n_routes = 0;
}

static int engine_route_add(engine_t *e, const char *name, const provider_t *provider, const char *base_url,
                            const char *api_key)
{
    engine_route_t *route = &e->routes[e->n_routes];

    route->name = strdup(name);
    route->provider = provider;
    route->endpoint.base_url = engine_strdup_or_null(base_url);
    route->endpoint.api_key = api_key && api_key[0] ? strdup(api_key) : NULL;
    e->n_routes++;
    if (!route->name || (base_url && !route->endpoint.base_url) ||
        (api_key && api_key[0] && !route->endpoint.api_key))
        return -1;
    return 0;
}

/* Copies the settings of cfg into e; -1 after logging an invalid one. */
static int engine_configure(engine_t *e, const engine_config_t *cfg)
{
    engine_config_t defaults;

    engine_config_defaults(&defaults);
    if (!cfg->db_uri || !cfg->node_id || !cfg->node_id[0]) {
        log_error("msg=\"engine not started: db_uri and node_id are required\"");
        return -1;
    }
    e->db_uri = strdup(cfg->db_uri);
    e->node_id = strdup(cfg->node_id);
    if (!e->db_uri || !e->node_id)
        return -1;
    e->max_in_flight = cfg->max_in_flight ? cfg->max_in_flight : defaults.max_in_flight;
    e->lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : defaults.lease_ms;
    e->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : defaults.max_attempts;
    e->default_timeout_ms = cfg->default_timeout_ms > 0 ? cfg->default_timeout_ms : defaults.default_timeout_ms;
    e->poll_interval_ms = cfg->poll_interval_ms > 0 ? cfg->poll_interval_ms : defaults.poll_interval_ms;
    e->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : defaults.connect_timeout_ms;
    e->idle_timeout_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : defaults.idle_timeout_ms;
    e->max_per_org = cfg->max_per_org > 0 ? cfg->max_per_org : 0;
    e->max_per_agent = cfg->max_per_agent > 0 ? cfg->max_per_agent : 0;

    e->routes = calloc(cfg->n_providers + 3, sizeof(*e->routes));
    if (!e->routes)
        return -1;
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const engine_provider_config_t *named = &cfg->providers[i];
        const provider_t *kind = named->kind ? provider_find(named->kind) : NULL;

        if (!named->name || !named->name[0] || !kind || !kind->build_request) {
            log_error("msg=\"engine not started: provider %s has kind %s, expected openai or anthropic\"",
                      named->name ? named->name : "(unnamed)", named->kind ? named->kind : "(none)");
            return -1;
        }
        if (engine_route_add(e, named->name, kind, named->base_url, named->api_key) != 0)
            return -1;
    }
    if (engine_route_add(e, "echo", &provider_echo, NULL, NULL) != 0 ||
        engine_route_add(e, "openai", &provider_openai, cfg->openai_base_url, cfg->openai_api_key) != 0 ||
        engine_route_add(e, "anthropic", &provider_anthropic, cfg->anthropic_base_url, cfg->anthropic_api_key) != 0)
        return -1;
    return 0;
}

static const engine_route_t *engine_route_find(const engine_t *e, const char *name)
{
    for (size_t i = 0; name && i < e->n_routes; i++) {
        if (strcmp(e->routes[i].name, name) == 0)
            return &e->routes[i];
    }
    return NULL;
}

/* ---- timer heap ---- */

static void engine_heap_swap(engine_t *e, size_t a, size_t b)
{
    engine_run_t *tmp = e->heap[a];

    e->heap[a] = e->heap[b];
    e->heap[b] = tmp;
    e->heap[a]->heap_index = a;
    e->heap[b]->heap_index = b;
}

static void engine_heap_up(engine_t *e, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (e->heap[parent]->wake_mono_ms <= e->heap[i]->wake_mono_ms)
            break;
        engine_heap_swap(e, parent, i);
        i = parent;
    }
}

static void engine_heap_down(engine_t *e, size_t i)
{
    for (;;) {
        size_t left = 2 * i + 1;
        size_t right = left + 1;
        size_t smallest = i;

        if (left < e->heap_len && e->heap[left]->wake_mono_ms < e->heap[smallest]->wake_mono_ms)
            smallest = left;
        if (right < e->heap_len && e->heap[right]->wake_mono_ms < e->heap[smallest]->wake_mono_ms)
            smallest = right;
        if (smallest == i)
            return;
        engine_heap_swap(e, i, smallest);
        i = smallest;
    }
}

/* Makes room for one timer per run the engine owns, so engine_heap_push() cannot fail. */
static int engine_heap_reserve(engine_t *e, size_t n_runs)
{
    size_t cap = e->heap_cap ? e->heap_cap : 64;
    engine_run_t **grown;

    if (n_runs <= e->heap_cap)
        return 0;
    while (cap < n_runs)
        cap *= 2;
    grown = realloc(e->heap, cap * sizeof(*grown));
    if (!grown)
        return -1;
    e->heap = grown;
    e->heap_cap = cap;
    return 0;
}

static void engine_heap_push(engine_t *e, engine_run_t *r)
{
    assert(e->heap_len < e->heap_cap); /* engine_run_begin() reserved a slot for every run */
    r->heap_index = e->heap_len;
    e->heap[e->heap_len++] = r;
    engine_heap_up(e, r->heap_index);
}

static void engine_heap_remove(engine_t *e, engine_run_t *r)
{
    size_t i = r->heap_index;

    if (i == SIZE_MAX)
        return;
    e->heap_len--;
    if (i != e->heap_len) {
        e->heap[i] = e->heap[e->heap_len];
        e->heap[i]->heap_index = i;
        engine_heap_down(e, i);
        engine_heap_up(e, i);
    }
    r->heap_index = SIZE_MAX;
}

/* ---- the set of held runs ---- */

static int engine_run_id_compare(const void *a, const void *b)
{
    const engine_run_t *ra = a;
    const engine_run_t *rb = b;

    return strcmp(ra->run.id, rb->run.id);
}

/* ---- error text ---- */

/* Log names of failure_kind_t, in its order. */
static const char *const engine_failure_names[] = {
    "none", "status", "transport", "idle", "deadline", "incomplete", "empty", "provider_error", "bad_reply", "internal",
};

static void engine_format_seconds(int64_t ms, char *buf, size_t buf_size)
{
    if (ms % 1000 == 0)
        snprintf(buf, buf_size, "%lld s", (long long)(ms / 1000));
    else
        snprintf(buf, buf_size, "%.1f s", (double)ms / 1000.0);
}

/* The run's error for its last failure, cleaned of the API key; NULL when out of memory. */
static char *engine_failure_text(const engine_t *e, const engine_run_t *r)
{
    const char *detail = r->failure_detail ? r->failure_detail : "";
    const char *secret = r->endpoint.api_key;
    char seconds[32];
    char phrase[48];
    char *text = NULL;
    char *clean;
    int n = 0;

    provider_attempts_phrase(r->attempt, phrase, sizeof(phrase));
    switch (r->failure) {
    case FAILURE_STATUS:
        return provider_describe_status(r->failure_status, r->body, r->body_len, r->attempt, secret);
    case FAILURE_TRANSPORT:
        n = asprintf(&text, "connection to provider failed: %s (%s)", detail, phrase + 1);
        break;
    case FAILURE_IDLE:
        engine_format_seconds(e->idle_timeout_ms, seconds, sizeof(seconds));
        n = asprintf(&text, "provider sent no data for %s (%s)", seconds, phrase + 1);
        break;
    case FAILURE_DEADLINE:
        engine_format_seconds(r->timeout_ms, seconds, sizeof(seconds));
        if (r->attempt > 1)
            n = asprintf(&text, "provider timed out after %s and %d attempts", seconds, r->attempt);
        else
            n = asprintf(&text, "provider timed out after %s", seconds);
        break;
    case FAILURE_INCOMPLETE:
        n = asprintf(&text, "%s",
                     r->failure_detail ? r->failure_detail : "provider stream ended before a finish reason");
        break;
    case FAILURE_EMPTY:
        n = asprintf(&text, "provider returned %ld with an empty body", r->failure_status);
        break;
    case FAILURE_PROVIDER:
        n = asprintf(&text, "provider sent an error%s%s%s: %s", r->reply.error_code ? " " : "",
                     r->reply.error_code ? r->reply.error_code : "", phrase, detail);
        break;
    case FAILURE_BAD_REPLY:
    case FAILURE_INTERNAL:
        n = asprintf(&text, "%s", detail);
        break;
    case FAILURE_NONE:
        n = asprintf(&text, "run failed for an unknown reason");
        break;
    }
    if (n < 0 || !text)
        return NULL;
    clean = provider_clean_message(text, ENGINE_MAX_ERROR_TEXT_BYTES, secret);
    free(text);
    return clean;
}

static void engine_set_failure(engine_run_t *r, failure_kind_t kind, long status, const char *detail)
{
    r->failure = kind;
    r->failure_status = status;
    free(r->failure_detail);
    r->failure_detail = detail ? strdup(detail) : NULL;
}

/* ---- finishing runs ---- */

/* Frees what the current attempt holds, keeping the request and the last failure. */
static void engine_attempt_cleanup(engine_t *e, engine_run_t *r)
{
    if (r->easy) {
        curl_multi_remove_handle(e->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    sse_parser_free(&r->sse);
    r->write_failed = 0;
    r->idle_expired = 0;
    r->seen_bytes = 0;
    r->body_kind = BODY_UNKNOWN;
    r->body_truncated = 0;
}

static void engine_run_free(engine_t *e, engine_run_t *r)
{
    engine_attempt_cleanup(e, r);
    engine_heap_remove(e, r);
    tdelete(r, &e->in_flight, engine_run_id_compare);
    if (r->prev)
        r->prev->next = r->next;
    else
        e->runs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    e->n_runs--;
    if (e->claim_blocked || e->claim_held_back) {
        e->claim_blocked = 0;
        e->claim_soon = 1;
    }

    provider_request_free(&r->request);
    provider_reply_free(&r->reply);
    free(r->body);
    free(r->failure_detail);
    run_free(&r->run);
    free(r);
}

/*
 * Writes the run's result; on a store error the run waits to write it again.
 * NOTE: the write is one synchronous transaction on the loop thread, so a slow
 * database stalls every transfer meanwhile. Batching the completions of one
 * loop turn into one transaction would need a store call that takes several.
 */
static void engine_run_finish(engine_t *e, engine_run_t *r)
{
    int64_t duration_ms = clock_mono_ms() - r->started_mono_ms;
    char quoted[1200];
    store_rc_t rc;

    r->run.completed_at_ms = clock_now_ms();
    rc = store_run_complete(e->store, r->run.id, e->node_id, &r->run);
    if (rc == STORE_ERROR) {
        log_error("msg=\"run result not stored, retrying\" run_id=%s retry_in_ms=%d", r->run.id,
                  ENGINE_COMPLETE_RETRY_MS);
        engine_attempt_cleanup(e, r);
        r->state = ENGINE_RUN_COMPLETING;
        r->wake_mono_ms = clock_mono_ms() + ENGINE_COMPLETE_RETRY_MS;
        engine_heap_push(e, r);
        return;
    }
    if (rc == STORE_NOT_FOUND) {
        log_warn("msg=\"run result dropped: the run's lease has passed to another engine\" run_id=%s duration_ms=%lld",
                 r->run.id, (long long)duration_ms);
    } else if (r->run.status == RUN_CANCELLED) {
        log_info("msg=\"run cancelled\" run_id=%s provider=%s attempt=%d duration_ms=%lld output_bytes=%zu",
                 r->run.id, r->run.provider ? r->run.provider : "", r->attempt, (long long)duration_ms,
                 r->run.output ? strlen(r->run.output) : (size_t)0);
    } else if (r->run.status == RUN_SUCCEEDED) {
        if (r->run.has_usage)
            log_info("msg=\"run succeeded\" run_id=%s provider=%s attempt=%d duration_ms=%lld finish_reason=%s "
                     "input_tokens=%lld output_tokens=%lld",
                     r->run.id, r->run.provider, r->attempt, (long long)duration_ms,
                     r->reply.finish_reason ? r->reply.finish_reason : "none", (long long)r->run.input_tokens,
                     (long long)r->run.output_tokens);
        else
            log_info("msg=\"run succeeded\" run_id=%s provider=%s attempt=%d duration_ms=%lld finish_reason=%s",
                     r->run.id, r->run.provider, r->attempt, (long long)duration_ms,
                     r->reply.finish_reason ? r->reply.finish_reason : "none");
    } else {
        const char *error = r->run.error ? r->run.error : "";

        log_warn("msg=\"run failed\" run_id=%s provider=%s attempt=%d status=%ld duration_ms=%lld error=%s",
                 r->run.id, r->run.provider ? r->run.provider : "", r->attempt, r->failure_status,
                 (long long)duration_ms, log_quote(quoted, sizeof(quoted), error, strlen(error)));
    }
    engine_run_free(e, r);
}

static void engine_run_succeed(engine_t *e, engine_run_t *r)
{
    engine_attempt_cleanup(e, r);
    r->run.status = RUN_SUCCEEDED;
    free(r->run.output);
    r->run.output = r->reply.text ? r->reply.text : strdup("");
    r->reply.text = NULL;
    r->reply.text_len = 0;
    r->reply.text_cap = 0;
    r->run.has_usage = r->reply.has_usage;
    r->run.input_tokens = r->reply.input_tokens;
    r->run.output_tokens = r->reply.output_tokens;
    if (!r->run.output) {
        r->run.status = RUN_FAILED;
        r->run.error = strdup("out of memory while storing the output");
    }
    engine_run_finish(e, r);
}

/* Moves the text received so far, if any, into the run's output. */
static void engine_keep_partial_output(engine_run_t *r)
{
    free(r->run.output);
    r->run.output = r->reply.text_len > 0 ? r->reply.text : NULL;
    if (r->run.output)
        r->reply.text = NULL;
    provider_reply_free(&r->reply);
}

/* Fails the run with the text of its last failure (see engine_set_failure),
 * keeping the text received so far. */
static void engine_run_fail(engine_t *e, engine_run_t *r)
{
    engine_attempt_cleanup(e, r);
    r->run.status = RUN_FAILED;
    r->run.has_usage = 0;
    free(r->run.error);
    r->run.error = engine_failure_text(e, r);
    if (!r->run.error)
        r->run.error = strdup("run failed (out of memory while describing the error)");
    engine_keep_partial_output(r);
    engine_run_finish(e, r);
}

/*
 * Ends a run whose cancellation was requested: its transfer or its wait for
 * the next attempt stops, and it is completed as cancelled with the text
 * received so far. Not for a run in COMPLETING, whose result is decided.
 */
static void engine_run_cancel(engine_t *e, engine_run_t *r)
{
    assert(r->state != ENGINE_RUN_COMPLETING); /* engine_cancel_held() leaves those alone */
    engine_attempt_cleanup(e, r);
    engine_heap_remove(e, r);
    r->run.status = RUN_CANCELLED;
    free(r->run.error);
    r->run.error = NULL;
    r->run.has_usage = r->reply.has_usage;
    r->run.input_tokens = r->reply.input_tokens;
    r->run.output_tokens = r->reply.output_tokens;
    engine_keep_partial_output(r);
    engine_run_finish(e, r);
}

/* ---- transfers ---- */

static int engine_sse_event(void *ctx, const sse_event_t *event)
{
    engine_run_t *r = ctx;

    return r->provider->parse_event(&r->reply, event) == 0 ? 0 : 1;
}

static int engine_body_append(engine_run_t *r, const char *data, size_t len, size_t max_len)
{
    size_t need;

    if (len > max_len - r->body_len || r->body_len > max_len)
        return -1;
    need = r->body_len + len + 1;
    if (need > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        char *grown;

        while (cap < need)
            cap *= 2;
        grown = realloc(r->body, cap);
        if (!grown)
            return -1;
        r->body = grown;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

/* Picks how to read a 2xx body from its Content-Type, else from its first byte. */
static body_kind_t engine_body_kind(const char *content_type, const char *data, size_t len)
{
    if (content_type && strcasestr(content_type, "event-stream"))
        return BODY_SSE;
    if (content_type && strcasestr(content_type, "json"))
        return BODY_JSON;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')
            continue;
        return data[i] == '{' ? BODY_JSON : BODY_SSE;
    }
    return BODY_SSE;
}

/* CURLOPT_WRITEFUNCTION: routes body bytes by the kind of reply. */
static size_t engine_on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    engine_run_t *r = userp;
    size_t len = size * nmemb;
    int rc;

    if (r->body_kind == BODY_UNKNOWN) {
        long status = 0;
        char *content_type = NULL;

        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &content_type);
        if (status >= 200 && status < 300)
            r->body_kind = engine_body_kind(content_type, data, len);
        else
            r->body_kind = BODY_ERROR;
        if (r->body_kind == BODY_SSE)
            sse_parser_init(&r->sse, engine_sse_event, r, 0);
    }

    switch (r->body_kind) {
    case BODY_SSE:
        rc = sse_parser_feed(&r->sse, data, len);
        if (rc == 0)
            return len;
        if (rc == SSE_ERR_TOO_LARGE)
            provider_reply_set_error(&r->reply, NULL, "provider sent a stream event larger than 8 MiB");
        else if (rc == SSE_ERR_NO_MEMORY)
            provider_reply_set_error(&r->reply, NULL, "out of memory while reading the provider stream");
        r->write_failed = 1;
        return 0;
    case BODY_JSON:
        if (engine_body_append(r, data, len, ENGINE_MAX_JSON_BODY_BYTES) == 0)
            return len;
        provider_reply_set_error(&r->reply, NULL, "provider reply exceeds 16 MiB");
        r->write_failed = 1;
        return 0;
    case BODY_ERROR:
        /* keep the start of an error body, drop the rest */
        if (!r->body_truncated && engine_body_append(r, data, len, ENGINE_MAX_ERROR_BODY_BYTES) != 0)
            r->body_truncated = 1;
        return len;
    case BODY_UNKNOWN:
        break;
    }
    return 0;
}

/* CURLOPT_XFERINFOFUNCTION: stops a transfer that moved no byte for idle_timeout_ms.
 * curl calls it on every transfer step and, thanks to the low-speed options,
 * at least once a second while the transfer is idle. */
static int engine_on_progress(void *userp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    engine_run_t *r = userp;
    int64_t now_ms = clock_mono_ms();

    if (dlnow + ulnow != r->seen_bytes) {
        r->seen_bytes = dlnow + ulnow;
        r->last_activity_mono_ms = now_ms;
        return 0;
    }
    if (now_ms - r->last_activity_mono_ms < r->idle_timeout_ms)
        return 0;
    r->idle_expired = 1;
    return 1;
}

static int engine_set_options(engine_t *e, engine_run_t *r, int64_t remaining_ms)
{
    CURL *easy = r->easy;
    long idle_s = (long)((e->idle_timeout_ms + 999) / 1000);
    int bad = 0;

    for (size_t i = 0; i < r->request.n_headers; i++) {
        struct curl_slist *list = curl_slist_append(r->headers, r->request.headers[i]);

        if (!list)
            return -1;
        r->headers = list;
    }
    /* no "Expect: 100-continue" round trip before large bodies */
    r->headers = curl_slist_append(r->headers, "Expect:");
    if (!r->headers)
        return -1;

    bad |= curl_easy_setopt(easy, CURLOPT_URL, r->request.url) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_POSTFIELDS, r->request.body) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->request.body_len) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, engine_on_body) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_PRIVATE, r) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, r->curl_error) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)e->connect_timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)remaining_ms) != CURLE_OK;
    /* the progress callback enforces the idle limit to the second; curl's
     * low-speed check, which averages over a few seconds, is the backstop */
    bad |= curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, engine_on_progress) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_XFERINFODATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, idle_s) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, ENGINE_RECEIVE_BUFFER_BYTES) != CURLE_OK;
    /* Over TLS, transfers wait for a connection that may turn out to speak
     * HTTP/2 instead of each opening one. Plain HTTP gets no PIPEWAIT because
     * curl 7.88 then queued transfers behind a busy HTTP/1.1 connection. */
    if (strncasecmp(r->request.url, "https:", 6) == 0)
        bad |= curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK;
    bad |= curl_easy_setopt(easy, CURLOPT_USERAGENT, "pushaid") != CURLE_OK;
    return bad ? -1 : 0;
}

/* Starts (or restarts) the run's transfer; fails the run when it cannot. */
static void engine_attempt_start(engine_t *e, engine_run_t *r)
{
    int64_t remaining_ms = r->deadline_mono_ms - clock_mono_ms();

    if (remaining_ms <= 0) {
        engine_set_failure(r, FAILURE_DEADLINE, 0, NULL);
        engine_run_fail(e, r);
        return;
    }
    r->attempt++;
    r->state = ENGINE_RUN_ATTEMPT;
    r->last_activity_mono_ms = clock_mono_ms();
    r->idle_timeout_ms = e->idle_timeout_ms;
    provider_reply_free(&r->reply);
    r->body_len = 0;
    r->curl_error[0] = '\0';

    if (!r->request.url && r->provider->build_request(&r->endpoint, &r->run, &r->request) != 0) {
        engine_set_failure(r, FAILURE_INTERNAL, 0,
                           "could not build the provider request: the prompt or system text is not valid UTF-8");
        engine_run_fail(e, r);
        return;
    }
    r->easy = curl_easy_init();
    if (!r->easy || engine_set_options(e, r, remaining_ms) != 0 ||
        curl_multi_add_handle(e->multi, r->easy) != CURLM_OK) {
        log_error("msg=\"provider request not started: libcurl setup failed\" run_id=%s", r->run.id);
        engine_set_failure(r, FAILURE_INTERNAL, 0, "internal error: could not start the provider request");
        engine_run_fail(e, r);
        return;
    }
}

/* Returns 1 for the curl results worth another attempt. */
static int engine_transport_retryable(CURLcode result)
{
    switch (result) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default:
        return 0;
    }
}

/* Client-facing words for a transfer that failed below HTTP. */
static void engine_transport_reason(const engine_t *e, engine_run_t *r, CURLcode result, int connected,
                                    char *buf, size_t buf_size)
{
    long os_errno = 0;
    char seconds[32];

    curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
    if (result == CURLE_OPERATION_TIMEDOUT && !connected) {
        engine_format_seconds(e->connect_timeout_ms, seconds, sizeof(seconds));
        snprintf(buf, buf_size, "connection timed out after %s", seconds);
    } else if (result == CURLE_PARTIAL_FILE) {
        snprintf(buf, buf_size, "the connection closed in the middle of the reply");
    } else if (result == CURLE_GOT_NOTHING) {
        snprintf(buf, buf_size, "the provider closed the connection without replying");
    } else if (os_errno != 0) {
        snprintf(buf, buf_size, "%s", strerror((int)os_errno));
    } else {
        snprintf(buf, buf_size, "%s", curl_easy_strerror(result));
    }
}

/* Records what the finished transfer produced and decides what comes next. */
static verdict_t engine_classify(const engine_t *e, engine_run_t *r, CURLcode result, long status, int64_t now_ms)
{
    /* the write callback stopped the transfer: a provider error or a broken reply */
    if (r->write_failed) {
        if (r->reply.provider_sent_error) {
            engine_set_failure(r, FAILURE_PROVIDER, status, r->reply.error_message);
            return provider_error_code_retryable(r->reply.error_code) ? VERDICT_RETRY : VERDICT_FAIL;
        }
        engine_set_failure(r, FAILURE_BAD_REPLY, status, r->reply.error_message);
        return VERDICT_FAIL;
    }

    if (result != CURLE_OK) {
        curl_off_t pretransfer_us = 0;
        char reason[256];

        /* the end marker came, so a broken connection afterwards loses nothing */
        if (r->body_kind == BODY_SSE && r->reply.complete && r->reply.done)
            return VERDICT_SUCCEED;
        if (result == CURLE_OPERATION_TIMEDOUT && now_ms + ENGINE_DEADLINE_SLACK_MS >= r->deadline_mono_ms) {
            engine_set_failure(r, FAILURE_DEADLINE, status, NULL);
            return VERDICT_FAIL;
        }
        /* a 2xx reply that broke off is not retried: the provider already
         * spent the tokens, and a cut stream is no connect error */
        if (result != CURLE_OPERATION_TIMEDOUT && !r->idle_expired && status >= 200 && status < 300 &&
            r->body_kind != BODY_UNKNOWN) {
            engine_set_failure(r, FAILURE_INCOMPLETE, status,
                               r->body_kind == BODY_SSE ? "provider stream ended before a finish reason"
                                                        : "provider reply was cut off before its end");
            return VERDICT_FAIL;
        }
        curl_easy_getinfo(r->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us);
        if (r->idle_expired || (result == CURLE_OPERATION_TIMEDOUT && pretransfer_us > 0)) {
            engine_set_failure(r, FAILURE_IDLE, status, NULL);
        } else {
            engine_transport_reason(e, r, result, pretransfer_us > 0, reason, sizeof(reason));
            engine_set_failure(r, FAILURE_TRANSPORT, status, reason);
        }
        return r->idle_expired || engine_transport_retryable(result) ? VERDICT_RETRY : VERDICT_FAIL;
    }

    if (status < 200 || status >= 300) {
        engine_set_failure(r, FAILURE_STATUS, status, NULL);
        return provider_status_retryable(status) ? VERDICT_RETRY : VERDICT_FAIL;
    }
    if (r->body_kind == BODY_UNKNOWN) {
        engine_set_failure(r, FAILURE_EMPTY, status, NULL);
        return VERDICT_FAIL;
    }
    if (r->body_kind == BODY_JSON) {
        if (r->provider->parse_body(&r->reply, r->body, r->body_len) == 0)
            return VERDICT_SUCCEED;
        engine_set_failure(r, r->reply.provider_sent_error ? FAILURE_PROVIDER : FAILURE_BAD_REPLY, status,
                           r->reply.error_message);
        return VERDICT_FAIL;
    }
    if (!r->reply.complete) {
        engine_set_failure(r, FAILURE_INCOMPLETE, status, "provider stream ended before a finish reason");
        return VERDICT_FAIL;
    }
    return VERDICT_SUCCEED;
}

/* Delay before the next attempt: Retry-After plus up to 10 %, else full jitter. */
static int64_t engine_retry_delay_ms(const engine_run_t *r, curl_off_t retry_after_s)
{
    if (retry_after_s > 0) {
        /* a day is past any run's deadline, and keeps the product in range */
        int64_t wait_ms = (int64_t)(retry_after_s < 86400 ? retry_after_s : 86400) * 1000;

        return wait_ms + (int64_t)randombytes_uniform((uint32_t)(wait_ms / 10 + 1));
    }
    return (int64_t)randombytes_uniform((uint32_t)provider_backoff_ceiling_ms(r->attempt) + 1);
}

/* A transfer ended: succeed, fail, or schedule the next attempt. */
static void engine_attempt_done(engine_t *e, engine_run_t *r, CURLcode result)
{
    int64_t now_ms = clock_mono_ms();
    curl_off_t retry_after_s = 0;
    long status = 0;
    int64_t delay_ms;
    verdict_t verdict;
    char quoted[CURL_ERROR_SIZE + 64];

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &retry_after_s);

    verdict = engine_classify(e, r, result, status, now_ms);
    if (result != CURLE_OK && verdict != VERDICT_SUCCEED) {
        /* curl's text names hosts and URLs only, but a key could sit in a URL */
        char *curl_error = provider_clean_message(r->curl_error, CURL_ERROR_SIZE, r->endpoint.api_key);

        log_info("msg=\"provider transfer failed\" run_id=%s attempt=%d curl_error=%s", r->run.id, r->attempt,
                 curl_error ? log_quote(quoted, sizeof(quoted), curl_error, strlen(curl_error)) : "\"\"");
        free(curl_error);
    }
    if (verdict == VERDICT_SUCCEED) {
        engine_run_succeed(e, r);
        return;
    }
    if (verdict == VERDICT_FAIL || r->attempt >= PROVIDER_MAX_ATTEMPTS) {
        engine_run_fail(e, r);
        return;
    }

    delay_ms = engine_retry_delay_ms(r, retry_after_s);
    if (now_ms + delay_ms >= r->deadline_mono_ms) {
        log_info("msg=\"run not retried: the wait would pass its deadline\" run_id=%s attempt=%d delay_ms=%lld",
                 r->run.id, r->attempt, (long long)delay_ms);
        engine_run_fail(e, r);
        return;
    }
    engine_attempt_cleanup(e, r);
    r->state = ENGINE_RUN_BACKOFF;
    r->wake_mono_ms = now_ms + delay_ms;
    engine_heap_push(e, r);
    log_warn("msg=\"run retrying\" run_id=%s attempt=%d status=%ld delay_ms=%lld failure=%s", r->run.id, r->attempt,
             status, (long long)delay_ms, engine_failure_names[r->failure]);
}

/* ---- curl callbacks ---- */

/* CURLMOPT_SOCKETFUNCTION: mirrors curl's interest in a socket into the epoll set. */
static int engine_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    engine_t *e = userp;
    struct epoll_event event = {0};

    if (what == CURL_POLL_REMOVE) {
        /* ENOENT or EBADF: the socket is already gone from the set */
        epoll_ctl(e->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    event.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    event.data.fd = fd;
    if (epoll_ctl(e->epoll_fd, EPOLL_CTL_MOD, fd, &event) == 0)
        return 0;
    if (errno == ENOENT && epoll_ctl(e->epoll_fd, EPOLL_CTL_ADD, fd, &event) == 0)
        return 0;
    log_error("msg=\"epoll_ctl failed for a provider connection\" fd=%d error=\"%s\"", (int)fd, strerror(errno));
    return -1;
}

/* CURLMOPT_TIMERFUNCTION: records when curl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT). */
static int engine_on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    engine_t *e = userp;

    e->curl_timer_mono_ms = timeout_ms < 0 ? -1 : clock_mono_ms() + timeout_ms;
    return 0;
}

static void engine_socket_action(engine_t *e, curl_socket_t fd, int flags)
{
    int running = 0;
    CURLMcode rc = curl_multi_socket_action(e->multi, fd, flags, &running);

    if (rc != CURLM_OK)
        log_error("msg=\"curl_multi_socket_action failed\" error=\"%s\"", curl_multi_strerror(rc));
}

static void engine_collect_done(engine_t *e)
{
    CURLMsg *msg;
    int left = 0;

    while ((msg = curl_multi_info_read(e->multi, &left))) {
        char *private_data = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &private_data);
        if (private_data)
            engine_attempt_done(e, (engine_run_t *)private_data, msg->data.result);
    }
}

/* ---- claiming ---- */

/*
 * Fails a claimed run that the engine could not take on, and frees it. The
 * run must not stay behind under this engine's lease, which the renewals
 * would extend for as long as the process lives.
 */
static void engine_reject_claimed(engine_t *e, run_t *run)
{
    static char error[] = "internal error: the run engine ran out of memory";

    log_error("msg=\"claimed run not started: out of memory\" run_id=%s", run->id);
    free(run->output);
    free(run->error);
    run->output = NULL;
    run->error = error;
    run->status = RUN_FAILED;
    run->has_usage = 0;
    run->completed_at_ms = clock_now_ms();
    if (store_run_complete(e->store, run->id, e->node_id, run) == STORE_ERROR)
        log_error("msg=\"run left running until this process stops\" run_id=%s", run->id);
    run->error = NULL; /* static, not for run_free() */
    run_free(run);
}

/* Takes ownership of *claimed (leaving it zeroed) and starts executing it. */
static void engine_run_begin(engine_t *e, run_t *claimed)
{
    engine_run_t *r = NULL;
    const engine_route_t *route;
    engine_run_t **found;
    char quoted[200];

    if (engine_heap_reserve(e, e->n_runs + 1) != 0 || !(r = calloc(1, sizeof(*r)))) {
        engine_reject_claimed(e, claimed);
        return;
    }
    r->run = *claimed;
    memset(claimed, 0, sizeof(*claimed));
    r->heap_index = SIZE_MAX;

    /* a run claimed again while this engine still executes it (its lease
     * lapsed): the first execution goes on and the copy is dropped */
    found = tsearch(r, &e->in_flight, engine_run_id_compare);
    if (!found) {
        engine_reject_claimed(e, &r->run);
        free(r);
        return;
    }
    if (*found != r) {
        log_warn("msg=\"run claimed again while still executing, copy ignored\" run_id=%s", r->run.id);
        run_free(&r->run);
        free(r);
        return;
    }
    r->next = e->runs;
    if (e->runs)
        e->runs->prev = r;
    e->runs = r;
    e->n_runs++;

    r->started_mono_ms = clock_mono_ms();
    r->timeout_ms = r->run.timeout_ms > 0 ? r->run.timeout_ms : e->default_timeout_ms;
    r->deadline_mono_ms = r->started_mono_ms + r->timeout_ms;
    log_info("msg=\"run started\" run_id=%s provider=%s model=%s claim=%d timeout_ms=%lld", r->run.id,
             r->run.provider ? r->run.provider : "",
             r->run.model ? log_quote(quoted, sizeof(quoted), r->run.model, strlen(r->run.model)) : "none",
             r->run.attempts, (long long)r->timeout_ms);

    route = engine_route_find(e, r->run.provider);
    if (!route) {
        char *detail = NULL;

        if (asprintf(&detail, "unknown provider '%s': use echo, openai, anthropic or a provider of the config file",
                     r->run.provider ? r->run.provider : "") < 0)
            detail = NULL;
        engine_set_failure(r, FAILURE_INTERNAL, 0, detail ? detail : "unknown provider");
        free(detail);
        engine_run_fail(e, r);
        return;
    }
    r->provider = route->provider;
    r->endpoint = route->endpoint;

    if (r->provider->run_local) {
        r->attempt = 1;
        if (r->provider->run_local(&r->run, &r->reply) == 0) {
            engine_run_succeed(e, r);
            return;
        }
        engine_set_failure(r, FAILURE_INTERNAL, 0, "out of memory while running the local provider");
        engine_run_fail(e, r);
        return;
    }
    engine_attempt_start(e, r);
}

static void engine_claim(engine_t *e)
{
    size_t capacity = e->max_in_flight > e->n_runs ? e->max_in_flight - e->n_runs : 0;
    size_t batch = capacity < ENGINE_CLAIM_BATCH_MAX ? capacity : ENGINE_CLAIM_BATCH_MAX;
    store_claim_limits_t limits = {0, 0, 0};
    run_t *claimed = NULL;
    size_t n = 0;

    e->claim_soon = 0;
    e->next_claim_mono_ms = clock_mono_ms() + e->poll_interval_ms;
    if (batch == 0) {
        e->claim_blocked = 1; /* engine_run_free() requests a claim when a slot opens */
        return;
    }
    limits.max = batch;
    limits.max_per_org = e->max_per_org;
    limits.max_per_agent = e->max_per_agent;
    if (store_runs_claim(e->store, e->node_id, clock_now_ms(), e->lease_ms, e->max_attempts, &limits, &claimed, &n) !=
        STORE_OK)
        return; /* already logged by the store; the next poll tries again */
    e->claim_held_back = n < batch && (e->max_per_org > 0 || e->max_per_agent > 0);

    /* the renewal clock starts with the first lease held */
    if (e->n_runs == 0)
        e->next_renew_mono_ms = clock_mono_ms() + e->lease_ms / 3;
    for (size_t i = 0; i < n; i++)
        engine_run_begin(e, &claimed[i]);
    store_run_list_free(claimed, n);
    if (n == batch)
        e->claim_soon = 1; /* more may be waiting */
}

static void engine_renew(engine_t *e)
{
    e->next_renew_mono_ms = clock_mono_ms() + e->lease_ms / 3;
    if (e->n_runs == 0)
        return;
    if (store_runs_renew(e->store, e->node_id, clock_now_ms() + e->lease_ms) != STORE_OK)
        log_error("msg=\"leases not renewed, retrying at the next renewal\" runs=%zu", e->n_runs);
}

/* ---- cancellation ---- */

/* Cancels the run id if this engine holds it and its result is not decided
 * yet; returns 1 when it did. */
static int engine_cancel_held(engine_t *e, const char *id)
{
    engine_run_t key;
    engine_run_t **found;

    snprintf(key.run.id, sizeof(key.run.id), "%s", id);
    found = tfind(&key, &e->in_flight, engine_run_id_compare);
    if (!found || (*found)->state == ENGINE_RUN_COMPLETING)
        return 0;
    log_info("msg=\"run cancellation received\" run_id=%s", id);
    engine_run_cancel(e, *found);
    return 1;
}

/* Takes the ids that engine_cancel() queued and cancels those held here. */
static void engine_drain_cancel_queue(engine_t *e)
{
    char ids[ENGINE_CANCEL_BATCH_MAX][RUN_ID_LEN + 1];
    size_t n;

    do {
        pthread_mutex_lock(&e->cancel_mutex);
        n = e->cancel_queue_len < ENGINE_CANCEL_BATCH_MAX ? e->cancel_queue_len : ENGINE_CANCEL_BATCH_MAX;
        e->cancel_queue_len -= n;
        memcpy(ids, e->cancel_queue + e->cancel_queue_len, n * sizeof(ids[0]));
        atomic_store(&e->cancel_queued, e->cancel_queue_len > 0);
        pthread_mutex_unlock(&e->cancel_mutex);
        for (size_t i = 0; i < n; i++)
            engine_cancel_held(e, ids[i]);
    } while (n == ENGINE_CANCEL_BATCH_MAX);
}

/* Asks the store which held runs were marked for cancellation (by any process). */
static void engine_poll_cancels(engine_t *e)
{
    char ids[ENGINE_CANCEL_BATCH_MAX][RUN_ID_LEN + 1];
    size_t n = 0;

    e->next_cancel_poll_mono_ms = clock_mono_ms() + ENGINE_CANCEL_POLL_MS;
    if (e->n_runs == 0)
        return;
    if (store_runs_cancel_requested(e->store, e->node_id, ids, ENGINE_CANCEL_BATCH_MAX, &n) != STORE_OK)
        return; /* logged by the store; the next poll asks again */
    for (size_t i = 0; i < n; i++)
        engine_cancel_held(e, ids[i]);
}

/* ---- the loop ---- */

static void engine_fire_timers(engine_t *e, int64_t now_ms)
{
    while (e->heap_len > 0 && e->heap[0]->wake_mono_ms <= now_ms) {
        engine_run_t *r = e->heap[0];

        engine_heap_remove(e, r);
        if (r->state == ENGINE_RUN_COMPLETING)
            engine_run_finish(e, r);
        else
            engine_attempt_start(e, r);
    }
}

static int64_t engine_min_time(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* epoll_wait timeout until the earliest thing the loop has to do, in ms. */
static int engine_wait_ms(const engine_t *e, int64_t now_ms)
{
    int64_t next_ms = e->curl_timer_mono_ms;
    int64_t wait_ms;

    if (e->heap_len > 0)
        next_ms = engine_min_time(next_ms, e->heap[0]->wake_mono_ms);
    if (e->n_runs > 0) {
        next_ms = engine_min_time(next_ms, e->next_renew_mono_ms);
        next_ms = engine_min_time(next_ms, e->next_cancel_poll_mono_ms);
    }
    if (e->stopping)
        next_ms = engine_min_time(next_ms, e->grace_end_mono_ms);
    else
        next_ms = engine_min_time(next_ms, e->claim_soon ? now_ms : e->next_claim_mono_ms);
    wait_ms = next_ms - now_ms;
    if (wait_ms < 0)
        return 0;
    return wait_ms > 60000 ? 60000 : (int)wait_ms;
}

static void engine_drain_wake(engine_t *e)
{
    uint64_t count;

    atomic_store(&e->wake_pending, 0);
    while (read(e->wake_fd, &count, sizeof(count)) < 0 && errno == EINTR)
        ;
}

static void engine_loop(engine_t *e)
{
    struct epoll_event events[ENGINE_MAX_EPOLL_EVENTS];

    e->next_claim_mono_ms = clock_mono_ms();
    e->next_renew_mono_ms = clock_mono_ms() + e->lease_ms / 3;
    e->next_cancel_poll_mono_ms = clock_mono_ms() + ENGINE_CANCEL_POLL_MS;
    for (;;) {
        int64_t now_ms = clock_mono_ms();
        int n;

        if (!e->stopping && atomic_load(&e->stop_requested)) {
            e->stopping = 1;
            e->grace_end_mono_ms = now_ms + atomic_load(&e->grace_ms);
            log_info("msg=\"engine stopping\" runs=%zu grace_ms=%lld", e->n_runs, (long long)atomic_load(&e->grace_ms));
        }
        if (e->stopping && (e->n_runs == 0 || now_ms >= e->grace_end_mono_ms))
            return;

        n = epoll_wait(e->epoll_fd, events, ENGINE_MAX_EPOLL_EVENTS, engine_wait_ms(e, now_ms));
        if (n < 0 && errno != EINTR) {
            log_error("msg=\"epoll_wait failed, engine stopping\" error=\"%s\"", strerror(errno));
            return;
        }
        for (int i = 0; i < n; i++) {
            uint32_t ready = events[i].events;
            int flags = 0;

            if (events[i].data.fd == e->wake_fd) {
                engine_drain_wake(e);
                e->claim_soon = 1;
                continue;
            }
            if (events[i].data.fd == e->store_fd) {
                /* a run created, handed back or marked for cancellation elsewhere */
                store_notifications_drain(e->store);
                e->claim_soon = 1;
                e->next_cancel_poll_mono_ms = clock_mono_ms();
                continue;
            }
            if (ready & (EPOLLIN | EPOLLHUP))
                flags |= CURL_CSELECT_IN;
            if (ready & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
            if (ready & EPOLLERR)
                flags |= CURL_CSELECT_ERR;
            engine_socket_action(e, events[i].data.fd, flags);
        }

        now_ms = clock_mono_ms();
        if (e->curl_timer_mono_ms >= 0 && now_ms >= e->curl_timer_mono_ms) {
            e->curl_timer_mono_ms = -1;
            engine_socket_action(e, CURL_SOCKET_TIMEOUT, 0);
        }
        engine_collect_done(e);
        engine_fire_timers(e, now_ms);
        if (atomic_load(&e->cancel_queued))
            engine_drain_cancel_queue(e);
        if (e->n_runs > 0 && now_ms >= e->next_cancel_poll_mono_ms)
            engine_poll_cancels(e);
        if (e->n_runs > 0 && now_ms >= e->next_renew_mono_ms)
            engine_renew(e);
        if (!e->stopping && (e->claim_soon || now_ms >= e->next_claim_mono_ms))
            engine_claim(e);
    }
}

/* Aborts what is still executing and hands those runs back to the store. */
static void engine_hand_back(engine_t *e)
{
    size_t handed_back = e->n_runs;

    while (e->runs)
        engine_run_free(e, e->runs);
    if (handed_back > 0 && store_runs_release(e->store, e->node_id) != STORE_OK)
        log_error("msg=\"runs not handed back; they run again once their leases expire\" runs=%zu", handed_back);
    log_info("msg=\"engine stopped\" runs_handed_back=%zu", handed_back);
}

/*
 * Adds the store's notification descriptor, when it has one (PostgreSQL), to
 * the epoll set: another process's new run or cancellation then wakes this
 * loop at once instead of at the next poll. Edge-triggered, so a descriptor
 * that stays readable (its connection lost) cannot spin the loop; the polls
 * still find everything.
 */
static void engine_watch_store(engine_t *e)
{
    struct epoll_event event = {0};

    e->store_fd = store_notify_fd(e->store);
    if (e->store_fd < 0)
        return;
    event.events = EPOLLIN | EPOLLET;
    event.data.fd = e->store_fd;
    if (epoll_ctl(e->epoll_fd, EPOLL_CTL_ADD, e->store_fd, &event) != 0) {
        log_warn("msg=\"store notifications not watched; runs of other processes wait for the next poll\""
                 " error=\"%s\"",
                 strerror(errno));
        e->store_fd = -1;
    }
}

static void engine_signal_start(engine_t *e, int result)
{
    pthread_mutex_lock(&e->start_mutex);
    e->start_result = result;
    pthread_cond_signal(&e->start_cond);
    pthread_mutex_unlock(&e->start_mutex);
}

static void *engine_thread_main(void *arg)
{
    engine_t *e = arg;

    if (store_open(e->db_uri, &e->store) != STORE_OK) {
        log_error("msg=\"engine not started: the store could not be opened\"");
        engine_signal_start(e, -1);
        return NULL;
    }
    engine_signal_start(e, 1);
    log_info("msg=\"engine started\" node_id=%s max_in_flight=%zu lease_ms=%lld poll_interval_ms=%lld", e->node_id,
             e->max_in_flight, (long long)e->lease_ms, (long long)e->poll_interval_ms);
    engine_watch_store(e);

    engine_loop(e);
    engine_hand_back(e);
    store_close(e->store);
    e->store = NULL;
    return NULL;
}

/* ---- public functions ---- */

static void engine_free_nothing(void *node)
{
    (void)node;
}

static void engine_free(engine_t *e)
{
    if (e->multi)
        curl_multi_cleanup(e->multi);
    if (e->epoll_fd >= 0)
        close(e->epoll_fd);
    if (e->wake_fd >= 0)
        close(e->wake_fd);
    tdestroy(e->in_flight, engine_free_nothing); /* empty once every run is freed */
    free(e->heap);
    engine_routes_free(e);
    free(e->db_uri);
    free(e->node_id);
    free(e->cancel_queue);
    pthread_mutex_destroy(&e->cancel_mutex);
    pthread_mutex_destroy(&e->start_mutex);
    pthread_cond_destroy(&e->start_cond);
    free(e);
    curl_global_cleanup();
}

int engine_start(const engine_config_t *cfg, engine_t **out)
{
    struct epoll_event wake_event = {0};
    sigset_t all_signals;
    sigset_t old_signals;
    engine_t *e;
    int rc;

    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("msg=\"engine not started: curl_global_init failed\"");
        return -1;
    }
    if (sodium_init() < 0) {
        log_error("msg=\"engine not started: sodium_init failed\"");
        curl_global_cleanup();
        return -1;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        log_error("msg=\"engine not started: out of memory\"");
        curl_global_cleanup();
        return -1;
    }
    e->epoll_fd = -1;
    e->wake_fd = -1;
    e->store_fd = -1;
    e->curl_timer_mono_ms = -1;
    pthread_mutex_init(&e->start_mutex, NULL);
    pthread_cond_init(&e->start_cond, NULL);
    pthread_mutex_init(&e->cancel_mutex, NULL);
    e->cancel_queue = calloc(ENGINE_CANCEL_QUEUE_MAX, sizeof(*e->cancel_queue));
    if (!e->cancel_queue || engine_configure(e, cfg) != 0) {
        log_error("msg=\"engine not started: invalid settings or out of memory\"");
        goto fail;
    }

    e->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    e->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->epoll_fd < 0 || e->wake_fd < 0) {
        log_error("msg=\"engine not started: epoll or eventfd failed\" error=\"%s\"", strerror(errno));
        goto fail;
    }
    wake_event.events = EPOLLIN;
    wake_event.data.fd = e->wake_fd;
    if (epoll_ctl(e->epoll_fd, EPOLL_CTL_ADD, e->wake_fd, &wake_event) != 0) {
        log_error("msg=\"engine not started: epoll_ctl failed\" error=\"%s\"", strerror(errno));
        goto fail;
    }

    e->multi = curl_multi_init();
    if (!e->multi || curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, engine_on_socket) != CURLM_OK ||
        curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e) != CURLM_OK ||
        curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, engine_on_timer) != CURLM_OK ||
        curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e) != CURLM_OK ||
        curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, ENGINE_MAX_IDLE_CONNECTIONS) != CURLM_OK) {
        log_error("msg=\"engine not started: curl_multi setup failed\"");
        goto fail;
    }

    /* the thread blocks every signal, so process signals (SIGTERM, SIGPIPE)
     * go to the threads that handle them */
    sigfillset(&all_signals);
    pthread_sigmask(SIG_SETMASK, &all_signals, &old_signals);
    rc = pthread_create(&e->thread, NULL, engine_thread_main, e);
    pthread_sigmask(SIG_SETMASK, &old_signals, NULL);
    if (rc != 0) {
        log_error("msg=\"engine not started: pthread_create failed\" error=\"%s\"", strerror(rc));
        goto fail;
    }
    e->thread_started = 1;

    pthread_mutex_lock(&e->start_mutex);
    while (e->start_result == 0)
        pthread_cond_wait(&e->start_cond, &e->start_mutex);
    pthread_mutex_unlock(&e->start_mutex);
    if (e->start_result < 0) {
        pthread_join(e->thread, NULL);
        goto fail;
    }
    *out = e;
    return 0;

fail:
    engine_free(e);
    return -1;
}

void engine_notify(engine_t *engine)
{
    uint64_t one = 1;

    if (!engine || atomic_exchange(&engine->wake_pending, 1))
        return; /* a wake-up is already on its way */
    /* EAGAIN only when the counter is full, and then the loop wakes anyway */
    while (write(engine->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void engine_cancel(engine_t *engine, const char *run_id)
{
    uint64_t one = 1;
    int queued = 0;

    if (!engine || !run_id || strlen(run_id) != RUN_ID_LEN)
        return;
    pthread_mutex_lock(&engine->cancel_mutex);
    if (engine->cancel_queue_len < ENGINE_CANCEL_QUEUE_MAX) {
        memcpy(engine->cancel_queue[engine->cancel_queue_len++], run_id, RUN_ID_LEN + 1);
        atomic_store(&engine->cancel_queued, 1);
        queued = 1;
    }
    pthread_mutex_unlock(&engine->cancel_mutex);
    if (!queued)
        return; /* the store still has the mark: the next poll finds it */
    while (write(engine->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void engine_stop(engine_t *engine, int64_t grace_ms)
{
    uint64_t one = 1;

    if (!engine)
        return;
    atomic_store(&engine->grace_ms, grace_ms > 0 ? grace_ms : 0);
    atomic_store(&engine->stop_requested, 1);
    while (write(engine->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    pthread_join(engine->thread, NULL);
    engine_free(engine);
}

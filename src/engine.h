/*
 * engine.h - the run engine: claims pending runs from the store and executes
 * them against their providers on one thread of its own, many at a time.
 *
 * The API handlers store a run and call engine_notify(), so no HTTP request
 * waits for a provider. Several processes may run engines on one database: the store's
 * leases decide which engine executes which run.
 */
#ifndef PUSHAI_ENGINE_H
#define PUSHAI_ENGINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct engine engine_t;

/* A named provider from the config file: agents that name it are sent to
 * base_url with the wire protocol of kind. */
typedef struct {
    const char *name;     /* the agent's "provider" value; may shadow a built-in name */
    const char *kind;     /* "openai" or "anthropic" */
    const char *base_url; /* NULL for the kind's default */
    const char *api_key;  /* NULL sends no credentials */
} engine_provider_config_t;

/* Strings are copied by engine_start(), so the caller may free them after. */
typedef struct {
    const char *db_uri;           /* the engine opens its own store_t on its own thread */
    const char *node_id;          /* lease owner name, unique per process (e.g. hostname:pid:random) */
    size_t max_in_flight;         /* runs executing at once in this process (default 1000) */
    int64_t lease_ms;             /* default 30000; renewed every lease_ms/3 */
    int max_attempts;             /* claims before an interrupted run is failed (default 3) */
    int64_t default_timeout_ms;   /* total run deadline when the agent sets none (default 300000) */
    int64_t poll_interval_ms;     /* claim even without a notify, for expired leases and other
                                     processes (default 1000) */
    int64_t connect_timeout_ms;   /* per provider connection (default 10000) */
    int64_t idle_timeout_ms;      /* an attempt that receives no byte for this long fails (default 60000,
                                     whole seconds are used) */
    int64_t max_per_org;          /* runs running at once per organization over every process on the
                                     database; 0 = no limit (default 0) */
    int64_t max_per_agent;        /* the same per agent; 0 = no limit (default 0) */
    const char *openai_base_url;  /* PUSHAI_OPENAI_BASE_URL, default https://api.openai.com/v1 */
    const char *openai_api_key;   /* may be NULL: then no Authorization header is sent */
    const char *anthropic_base_url, *anthropic_api_key;
    const engine_provider_config_t *providers; /* named providers, may be NULL */
    size_t n_providers;
} engine_config_t;

/* Zeroes cfg and sets the defaults above; db_uri and node_id stay NULL. */
void engine_config_defaults(engine_config_t *cfg);

/*
 * Starts the engine's thread, which opens the store at cfg->db_uri and begins
 * to claim runs. Returns 0 with *out set, or -1 after logging why (the store
 * could not be opened, an invalid setting, no resources).
 * Calls curl_global_init(), so it must not race with other libcurl setup.
 */
int engine_start(const engine_config_t *cfg, engine_t **out);

/* Asks the engine to claim runs soon because one was created. Thread-safe,
 * cheap and never blocks; must not be called once engine_stop() has begun. */
void engine_notify(engine_t *engine);

/*
 * Asks the engine to abort run_id at once, after store_run_cancel() marked
 * it. When this engine executes the run, its transfer is aborted on the
 * engine's thread and the run completed as cancelled with the output received
 * so far; a run whose result is already decided keeps it. Otherwise nothing
 * happens. Without this call the engine still finds the mark within
 * ENGINE_CANCEL_POLL_MS (so a cancellation made through another process
 * lands too); this only saves that wait. Thread-safe and never blocks; when
 * many calls queue up at once, the ones past the queue's limit are left to
 * the poll. Must not be called once engine_stop() has begun.
 */
void engine_cancel(engine_t *engine, const char *run_id);

/* How often the engine looks for cancellations of the runs it executes. */
#define ENGINE_CANCEL_POLL_MS 300

/*
 * Stops claiming, lets the runs in flight finish for up to grace_ms, hands the
 * rest back to the store as pending (store_runs_release), joins the thread and
 * frees the engine. engine may be NULL.
 */
void engine_stop(engine_t *engine, int64_t grace_ms);

#endif

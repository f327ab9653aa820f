/*
 * store.h - durable state: organizations, API keys, agents and runs.
 *
 * One interface with one implementation per database. store_open() picks the
 * implementation from the URI: a "postgresql://" or "postgres://" URI selects
 * PostgreSQL, anything else is a SQLite file path. Opening creates the
 * database when missing and applies pending schema migrations.
 *
 * A store_t is one database connection and is not thread-safe: every thread
 * opens its own. Every function returns a store_rc_t. On STORE_ERROR the store
 * has already logged the database's message with its context, so callers only
 * decide what to tell their own client.
 *
 * Times are Unix milliseconds. Strings handed in are copied; structs handed
 * out own their members and are released with the *_free functions of
 * model.h.
 *
 * Agent revision: every organization carries a counter that changes whenever
 * one of its agents is inserted, updated or deleted, by any process. The key
 * lookup returns it, so the API can cache an organization's agent list and
 * still serve the next request after a change from fresh data.
 *
 * Runs and leases: the engine claims a run by setting it to running with a
 * lease (owner name and expiry) that it renews while the run executes. A
 * running run whose lease has expired belongs to an engine that died; the next
 * claim takes it up again, or fails it once it has been claimed max_attempts
 * times. So no run stays running forever, and none that was stored is lost.
 */
#ifndef PUSHAI_STORE_H
#define PUSHAI_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "ratelimit.h"

typedef struct store store_t;

typedef enum {
    STORE_OK = 0,
    STORE_NOT_FOUND = 1,  /* no such row (or not visible to the caller) */
    STORE_CONFLICT = 2,   /* a unique value is taken, or the row's state forbids the change */
    STORE_DUPLICATE = 3,  /* idempotent replay: the same request was stored before */
    STORE_LIMIT = 4,      /* a configured limit would be exceeded */
    STORE_ERROR = -1      /* database failure, already logged */
} store_rc_t;

/* Opens (creating and migrating when needed) the database at uri. */
store_rc_t store_open(const char *uri, store_t **out);
void store_close(store_t *store);

/* Checks that the database answers; used by /readyz. */
store_rc_t store_ping(store_t *store);

/* ---- organizations ---- */

/* STORE_CONFLICT when the slug exists. name may be NULL (the slug is used). */
store_rc_t store_org_create(store_t *store, const char *slug, const char *name, int64_t *org_id);
store_rc_t store_org_find(store_t *store, const char *slug, int64_t *org_id);

/* ---- API keys ---- */

/* STORE_CONFLICT when key->key_id is taken. */
store_rc_t store_key_create(store_t *store, const api_key_t *key);
/* Fills out (with the org's agent revision) for any key, revoked or not. */
store_rc_t store_key_get(store_t *store, const char *key_id, api_key_t *out);
/* All keys of an org, oldest first; *out is an array of *n keys to release
 * with store_key_list_free(). */
store_rc_t store_key_list(store_t *store, int64_t org_id, api_key_t **out, size_t *n);
void store_key_list_free(api_key_t *keys, size_t n);
/* Replaces the secret hash. STORE_CONFLICT when the key is revoked. */
store_rc_t store_key_replace_secret(store_t *store, const char *key_id, const uint8_t hash[KEY_HASH_LEN]);
/* Revokes the key; revoking a revoked key is STORE_OK. */
store_rc_t store_key_revoke(store_t *store, const char *key_id, int64_t now_ms);

/* ---- agents ---- */

/* Inserts the agents in one transaction and sets agents[i].id. */
store_rc_t store_agents_import(store_t *store, int64_t org_id, agent_t *agents, size_t n);
store_rc_t store_agent_set_published(store_t *store, int64_t agent_id, int published);
/* A published agent of org_id; STORE_NOT_FOUND for unknown, unpublished or
 * another org's agent alike. */
store_rc_t store_agent_get(store_t *store, int64_t org_id, int64_t agent_id, agent_t *out);
/* One page of org_id's published agents by id ascending, and their total.
 * *out is an array of *n agents to release with store_agent_list_free(). */
store_rc_t store_agents_list(store_t *store, int64_t org_id, int64_t limit, int64_t offset,
                             agent_t **out, size_t *n, int64_t *total);
void store_agent_list_free(agent_t *agents, size_t n);
/* Every agent of org_id, published or not, by id ascending (admin listing). */
store_rc_t store_agents_list_all(store_t *store, int64_t org_id, agent_t **out, size_t *n);

/* ---- runs ---- */

/*
 * Stores a new pending run durably before returning.
 *
 * max_in_flight: when > 0 and run->key_id already has that many runs pending
 * or running, nothing is stored and the result is STORE_LIMIT.
 *
 * idempotency_key: when not NULL, the pair (run->key_id, idempotency_key) is
 * remembered with request_hash. A later call with the same pair and the same
 * hash stores nothing, copies the first run's id into existing_id and returns
 * STORE_DUPLICATE; with another hash it returns STORE_CONFLICT.
 */
store_rc_t store_run_create(store_t *store, const run_t *run, int64_t max_in_flight,
                            const char *idempotency_key, const uint8_t request_hash[32],
                            char existing_id[RUN_ID_LEN + 1]);
/* The run run_id (lowercase) of agent_id in org_id, else STORE_NOT_FOUND. */
store_rc_t store_run_get(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, run_t *out);

/* Limits that a claim respects, so one busy tenant cannot take every slot. */
typedef struct {
    size_t max;            /* runs to claim in this call */
    int64_t max_per_org;   /* runs running at once per organization, over all engines; 0 = no limit */
    int64_t max_per_agent; /* runs running at once per agent, over all engines; 0 = no limit */
} store_claim_limits_t;

/*
 * Claims up to limits->max runs for owner: pending runs, and running runs
 * whose lease expired before now_ms. Each slot goes to the organization
 * with the fewest runs running over all engines, ties to the one whose
 * oldest claimable run is oldest, so a flooding organization cannot starve
 * another; within one organization runs go oldest first. Runs that would
 * exceed a per-organization or per-agent limit stay pending. Each claimed run becomes
 * running with attempts + 1, started_at set on the first claim, and a lease
 * until now_ms + lease_ms. An expired run that was already claimed
 * max_attempts times is failed instead, with an error saying it was
 * interrupted. A pending run whose cancellation was requested is never
 * claimed. *out is an array of *n runs to release with store_run_list_free().
 */
store_rc_t store_runs_claim(store_t *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                            int max_attempts, const store_claim_limits_t *limits, run_t **out, size_t *n);
void store_run_list_free(run_t *runs, size_t n);
/* Extends every lease that owner holds to lease_until_ms. */
store_rc_t store_runs_renew(store_t *store, const char *owner, int64_t lease_until_ms);
/*
 * Records the end of a run that owner holds: result->status (succeeded or
 * failed), output, error, usage and completed_at_ms. STORE_NOT_FOUND when
 * owner no longer holds the run (its lease expired and another engine took
 * it), in which case nothing changes.
 */
store_rc_t store_run_complete(store_t *store, const char *run_id, const char *owner, const run_t *result);
/* Hands owner's running runs back as pending (graceful shutdown). */
store_rc_t store_runs_release(store_t *store, const char *owner);

/*
 * Records a cancellation of run_id (lowercase) of agent_id in org_id and
 * fills out with the run as it then stands. A pending run becomes cancelled
 * at once (completed_at now_ms) and never starts. A running run keeps
 * running, marked for cancellation: the engine that holds it aborts it and
 * completes it as cancelled, keeping the partial output. Cancelling a
 * cancelled or cancel-marked run again is STORE_OK. A run that already
 * succeeded or failed is STORE_CONFLICT (out is still filled). Unknown:
 * STORE_NOT_FOUND.
 */
store_rc_t store_run_cancel(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, int64_t now_ms,
                            run_t *out);
/* Writes into ids (up to max) the runs that owner holds and whose
 * cancellation was requested; *n is how many. */
store_rc_t store_runs_cancel_requested(store_t *store, const char *owner, char (*ids)[RUN_ID_LEN + 1], size_t max,
                                       size_t *n);

/* ---- coordination between processes sharing one database ---- */

/*
 * Whether rate limits must be kept in the database because several
 * processes serve the same keys (PostgreSQL). With SQLite one process serves
 * the API, so limits stay in its memory (ratelimit.h) and this returns 0.
 */
int store_shares_limits(store_t *store);
/*
 * Takes one token from name's bucket (per_minute tokens a minute, burst at
 * most) as of now_ms, atomically across every process on the database.
 * Only for stores where store_shares_limits() is 1.
 */
store_rc_t store_ratelimit_take(store_t *store, const char *name, int64_t per_minute, int64_t burst, int64_t now_ms,
                                int take, ratelimit_result_t *out);
/*
 * A descriptor that becomes readable when another process created a run
 * (PostgreSQL LISTEN), or -1 when the store has none (SQLite: the engine in
 * the same process is woken directly). After it polls readable, call
 * store_notifications_drain().
 */
int store_notify_fd(store_t *store);
/* Consumes pending notifications; returns how many arrived. */
int store_notifications_drain(store_t *store);

#endif

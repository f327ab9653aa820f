/*
 * store_impl.h - the private contract between store.c and the database
 * implementations behind store.h.
 *
 * Every implementation defines its own connection struct whose first member
 * is a store_t, fills one static store_ops_t, and exposes one open function
 * that store_open() calls for the URIs it owns. store.c forwards every public
 * call through store->ops, so an entry here has exactly the contract of the
 * store.h function of the same name (minus the "store_" prefix).
 */
#ifndef PUSHAI_STORE_IMPL_H
#define PUSHAI_STORE_IMPL_H

#include "store.h"

typedef struct store_ops {
    /* Closes the connection and frees the store itself. */
    void (*close)(store_t *store);
    store_rc_t (*ping)(store_t *store);

    store_rc_t (*org_create)(store_t *store, const char *slug, const char *name, int64_t *org_id);
    store_rc_t (*org_find)(store_t *store, const char *slug, int64_t *org_id);

    store_rc_t (*key_create)(store_t *store, const api_key_t *key);
    store_rc_t (*key_get)(store_t *store, const char *key_id, api_key_t *out);
    store_rc_t (*key_list)(store_t *store, int64_t org_id, api_key_t **out, size_t *n);
    store_rc_t (*key_replace_secret)(store_t *store, const char *key_id, const uint8_t hash[KEY_HASH_LEN]);
    store_rc_t (*key_revoke)(store_t *store, const char *key_id, int64_t now_ms);

    store_rc_t (*agents_import)(store_t *store, int64_t org_id, agent_t *agents, size_t n);
    store_rc_t (*agent_set_published)(store_t *store, int64_t agent_id, int published);
    store_rc_t (*agent_get)(store_t *store, int64_t org_id, int64_t agent_id, agent_t *out);
    store_rc_t (*agents_list)(store_t *store, int64_t org_id, int64_t limit, int64_t offset,
                              agent_t **out, size_t *n, int64_t *total);
    store_rc_t (*agents_list_all)(store_t *store, int64_t org_id, agent_t **out, size_t *n);

    store_rc_t (*run_create)(store_t *store, const run_t *run, int64_t max_in_flight,
                             const char *idempotency_key, const uint8_t request_hash[32],
                             char existing_id[RUN_ID_LEN + 1]);
    store_rc_t (*run_get)(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, run_t *out);
    store_rc_t (*runs_claim)(store_t *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                             int max_attempts, const store_claim_limits_t *limits, run_t **out, size_t *n);
    store_rc_t (*runs_renew)(store_t *store, const char *owner, int64_t lease_until_ms);
    store_rc_t (*run_complete)(store_t *store, const char *run_id, const char *owner, const run_t *result);
    store_rc_t (*runs_release)(store_t *store, const char *owner);
    store_rc_t (*run_cancel)(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, int64_t now_ms,
                             run_t *out);
    store_rc_t (*runs_cancel_requested)(store_t *store, const char *owner, char (*ids)[RUN_ID_LEN + 1], size_t max,
                                        size_t *n);

    /* NULL in stores where one process serves the API (see store_shares_limits) */
    store_rc_t (*ratelimit_take)(store_t *store, const char *name, int64_t per_minute, int64_t burst, int64_t now_ms,
                                 int take, ratelimit_result_t *out);
    /* NULL in stores without cross-process notifications */
    int (*notify_fd)(store_t *store);
    int (*notifications_drain)(store_t *store);
} store_ops_t;

/* The first member of every connection, and the only part that store.c reads. */
struct store {
    const store_ops_t *ops;
};

/*
 * Opens the SQLite database file at path, creating it (mode 0600) and
 * applying migrations when needed. On success *out is a store to close with
 * store_close(). On failure *out is NULL and the reason has been logged.
 */
store_rc_t store_sqlite_open(const char *path, store_t **out);

/*
 * Opens a connection to the PostgreSQL database at uri (a libpq
 * "postgresql://" or "postgres://" URI), applying migrations when needed
 * under an advisory lock, so that several processes may open it at once.
 * On success *out is a store to close with store_close(). On failure *out is
 * NULL and the reason has been logged (without the password).
 */
store_rc_t store_pg_open(const char *uri, store_t **out);

#endif

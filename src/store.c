/*
 * store.c - picks the database implementation for a URI and forwards every
 * store.h call to it through the store's ops table (store_impl.h).
 */
#include "store.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_impl.h"

static int has_prefix(const char *text, const char *prefix)
{
    return strncmp(text, prefix, strlen(prefix)) == 0;
}

store_rc_t store_open(const char *uri, store_t **out)
{
    *out = NULL;
    if (uri == NULL || uri[0] == '\0') {
        log_error("msg=\"cannot open the database: no path or URI given\"");
        return STORE_ERROR;
    }

    /* The same two schemes that libpq accepts, compared as libpq does. */
    if (has_prefix(uri, "postgresql://") || has_prefix(uri, "postgres://"))
        return store_pg_open(uri, out);
    return store_sqlite_open(uri, out);
}

void store_close(store_t *store)
{
    if (store != NULL)
        store->ops->close(store);
}

store_rc_t store_ping(store_t *store)
{
    return store->ops->ping(store);
}

store_rc_t store_org_create(store_t *store, const char *slug, const char *name, int64_t *org_id)
{
    return store->ops->org_create(store, slug, name, org_id);
}

store_rc_t store_org_find(store_t *store, const char *slug, int64_t *org_id)
{
    return store->ops->org_find(store, slug, org_id);
}

store_rc_t store_key_create(store_t *store, const api_key_t *key)
{
    return store->ops->key_create(store, key);
}

store_rc_t store_key_get(store_t *store, const char *key_id, api_key_t *out)
{
    return store->ops->key_get(store, key_id, out);
}

store_rc_t store_key_list(store_t *store, int64_t org_id, api_key_t **out, size_t *n)
{
    return store->ops->key_list(store, org_id, out, n);
}

void store_key_list_free(api_key_t *keys, size_t n)
{
    if (keys == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        api_key_free(&keys[i]);
    free(keys);
}

store_rc_t store_key_replace_secret(store_t *store, const char *key_id, const uint8_t hash[KEY_HASH_LEN])
{
    return store->ops->key_replace_secret(store, key_id, hash);
}

store_rc_t store_key_revoke(store_t *store, const char *key_id, int64_t now_ms)
{
    return store->ops->key_revoke(store, key_id, now_ms);
}

store_rc_t store_agents_import(store_t *store, int64_t org_id, agent_t *agents, size_t n)
{
    return store->ops->agents_import(store, org_id, agents, n);
}

store_rc_t store_agent_set_published(store_t *store, int64_t agent_id, int published)
{
    return store->ops->agent_set_published(store, agent_id, published);
}

store_rc_t store_agent_get(store_t *store, int64_t org_id, int64_t agent_id, agent_t *out)
{
    return store->ops->agent_get(store, org_id, agent_id, out);
}

store_rc_t store_agents_list(store_t *store, int64_t org_id, int64_t limit, int64_t offset,
                             agent_t **out, size_t *n, int64_t *total)
{
    return store->ops->agents_list(store, org_id, limit, offset, out, n, total);
}

store_rc_t store_agents_list_all(store_t *store, int64_t org_id, agent_t **out, size_t *n)
{
    return store->ops->agents_list_all(store, org_id, out, n);
}

void store_agent_list_free(agent_t *agents, size_t n)
{
    if (agents == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        agent_free(&agents[i]);
    free(agents);
}

store_rc_t store_run_create(store_t *store, const run_t *run, int64_t max_in_flight,
                            const char *idempotency_key, const uint8_t request_hash[32],
                            char existing_id[RUN_ID_LEN + 1])
{
    return store->ops->run_create(store, run, max_in_flight, idempotency_key, request_hash, existing_id);
}

store_rc_t store_run_get(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, run_t *out)
{
    return store->ops->run_get(store, org_id, agent_id, run_id, out);
}

store_rc_t store_runs_claim(store_t *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                            int max_attempts, const store_claim_limits_t *limits, run_t **out, size_t *n)
{
    return store->ops->runs_claim(store, owner, now_ms, lease_ms, max_attempts, limits, out, n);
}

void store_run_list_free(run_t *runs, size_t n)
{
    if (runs == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        run_free(&runs[i]);
    free(runs);
}

store_rc_t store_runs_renew(store_t *store, const char *owner, int64_t lease_until_ms)
{
    return store->ops->runs_renew(store, owner, lease_until_ms);
}

store_rc_t store_run_complete(store_t *store, const char *run_id, const char *owner, const run_t *result)
{
    return store->ops->run_complete(store, run_id, owner, result);
}

store_rc_t store_runs_release(store_t *store, const char *owner)
{
    return store->ops->runs_release(store, owner);
}

store_rc_t store_run_cancel(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, int64_t now_ms,
                            run_t *out)
{
    return store->ops->run_cancel(store, org_id, agent_id, run_id, now_ms, out);
}

store_rc_t store_runs_cancel_requested(store_t *store, const char *owner, char (*ids)[RUN_ID_LEN + 1], size_t max,
                                       size_t *n)
{
    return store->ops->runs_cancel_requested(store, owner, ids, max, n);
}

int store_shares_limits(store_t *store)
{
    return store->ops->ratelimit_take != NULL;
}

store_rc_t store_ratelimit_take(store_t *store, const char *name, int64_t per_minute, int64_t burst, int64_t now_ms,
                                int take, ratelimit_result_t *out)
{
    if (store->ops->ratelimit_take == NULL)
        return STORE_ERROR;
    return store->ops->ratelimit_take(store, name, per_minute, burst, now_ms, take, out);
}

int store_notify_fd(store_t *store)
{
    return store->ops->notify_fd != NULL ? store->ops->notify_fd(store) : -1;
}

int store_notifications_drain(store_t *store)
{
    return store->ops->notifications_drain != NULL ? store->ops->notifications_drain(store) : 0;
}

/*
 * api.c - the handlers of /api/v1 and the health probes.
 *
 * Handlers run on an HTTP loop thread with that thread's store connection,
 * after http.c has routed and authenticated the call. Each one parses its
 * input with the module that owns the rule (query.c, bindings.c, uuid.c),
 * talks to the store, and replies once.
 *
 * Agent-list cache: each thread keeps the serialized pages it served, keyed by
 * (org, limit, offset) and tagged with the org's agent revision. The
 * revision comes with the key lookup that every request makes anyway, and
 * changes with any change to the org's agents in any process, so a cached
 * page is served only while it is still exactly what the database holds.
 */
#include "api.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent.h"
#include "bindings.h"
#include "clock.h"
#include "log.h"
#include "query.h"
#include "uuid.h"

#define AGENTS_DEFAULT_LIMIT 20
#define AGENTS_MAX_LIMIT 100
#define AGENTS_MAX_OFFSET 1000000000
#define IDEMPOTENCY_KEY_MAX_LEN 255
#define CONCURRENCY_RETRY_AFTER_S "1"

static void send_json_value(http_call_t *call, int status, json_t *value, const char *const *extra_headers)
{
    char *text = value != NULL ? json_dumps(value, JSON_COMPACT) : NULL;

    if (text == NULL) {
        http_send_error(call, API_ERR_INTERNAL_ERROR, "Out of memory. Request id %s.", call->request_id);
        return;
    }
    http_send_json(call, status, text, strlen(text), extra_headers);
    free(text);
}

/* Parses a path segment as an agent id: 1 to 18 decimal digits, not 0. */
static int parse_agent_id(h2o_iovec_t segment, int64_t *out)
{
    int64_t v = 0;

    if (segment.len == 0 || segment.len > 18)
        return -1;
    for (size_t i = 0; i < segment.len; i++) {
        if (segment.base[i] < '0' || segment.base[i] > '9')
            return -1;
        v = v * 10 + (segment.base[i] - '0');
    }
    if (v == 0)
        return -1;
    *out = v;
    return 0;
}

static void send_agent_not_found(http_call_t *call, h2o_iovec_t segment)
{
    char quoted[80];
    int64_t id;

    if (parse_agent_id(segment, &id) == 0) {
        http_send_error(call, API_ERR_AGENT_NOT_FOUND, "Agent %lld not found or not published.", (long long)id);
        return;
    }
    http_send_error(call, API_ERR_AGENT_NOT_FOUND, "Agent %s not found or not published.",
                    log_quote(quoted, sizeof(quoted), segment.base, segment.len));
}

/* ---- GET /api/v1/agents ---- */

static http_cache_slot_t *cache_slot(http_call_t *call, int64_t limit, int64_t offset)
{
    uint64_t h = (uint64_t)call->key.org_id * 0x9e3779b97f4a7c15ULL;

    h ^= (uint64_t)limit * 0xbf58476d1ce4e5b9ULL;
    h ^= (uint64_t)offset * 0x94d049bb133111ebULL;
    return &http_thread_cache(call->thread)[(h >> 32) % HTTP_CACHE_SLOTS];
}

static char *render_agent_page(http_call_t *call, int64_t limit, int64_t offset, size_t *len)
{
    agent_t *agents = NULL;
    size_t n = 0;
    int64_t total = 0;
    json_t *list, *page;
    char *text;

    if (store_agents_list(call->store, call->key.org_id, limit, offset, &agents, &n, &total) != STORE_OK)
        return NULL;

    list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, agent_to_api_json(&agents[i]));
    store_agent_list_free(agents, n);

    page = json_pack("{s:o, s:{s:I, s:I, s:I}}", "agents", list, "pagination", "total", (json_int_t)total, "limit",
                     (json_int_t)limit, "offset", (json_int_t)offset);
    text = page != NULL ? json_dumps(page, JSON_COMPACT) : NULL;
    json_decref(page);
    if (text != NULL)
        *len = strlen(text);
    return text;
}

void api_list_agents(http_call_t *call)
{
    int64_t limit, offset;
    http_cache_slot_t *slot;

    if (query_int(call->query.base, call->query.len, "limit", 1, AGENTS_MAX_LIMIT, AGENTS_DEFAULT_LIMIT, &limit) !=
        QUERY_OK) {
        http_send_error(call, API_ERR_INVALID_REQUEST, "Invalid limit: expected an integer from 1 to %d.",
                        AGENTS_MAX_LIMIT);
        return;
    }
    if (query_int(call->query.base, call->query.len, "offset", 0, AGENTS_MAX_OFFSET, 0, &offset) != QUERY_OK) {
        http_send_error(call, API_ERR_INVALID_REQUEST, "Invalid offset: expected an integer from 0 to %d.",
                        AGENTS_MAX_OFFSET);
        return;
    }

    slot = cache_slot(call, limit, offset);
    if (slot->body == NULL || slot->org_id != call->key.org_id || slot->agents_rev != call->key.agents_rev ||
        slot->limit != limit || slot->offset != offset) {
        size_t len = 0;
        char *body = render_agent_page(call, limit, offset, &len);
        if (body == NULL) {
            http_send_error(call, API_ERR_INTERNAL_ERROR, "The agent list could not be read. Request id %s.",
                            call->request_id);
            return;
        }
        free(slot->body);
        slot->body = body;
        slot->len = len;
        slot->org_id = call->key.org_id;
        slot->agents_rev = call->key.agents_rev;
        slot->limit = limit;
        slot->offset = offset;
    }
    http_send_json(call, 200, slot->body, slot->len, NULL);
}

/* ---- POST /api/v1/agents/{agent_id}/runs ---- */

/* Whether a Content-Type names application/json, with any parameters. */
static int is_json_media_type(h2o_iovec_t value)
{
    static const char json_type[] = "application/json";
    size_t n = sizeof(json_type) - 1;
    size_t i;

    if (value.len < n || strncasecmp(value.base, json_type, n) != 0)
        return 0;
    for (i = n; i < value.len && (value.base[i] == ' ' || value.base[i] == '\t'); i++)
        ;
    return i == value.len || value.base[i] == ';';
}

static int idempotency_key_valid(h2o_iovec_t value)
{
    if (value.len == 0 || value.len > IDEMPOTENCY_KEY_MAX_LEN)
        return 0;
    for (size_t i = 0; i < value.len; i++) {
        unsigned char c = (unsigned char)value.base[i];
        if (c < 0x21 || c > 0x7e)
            return 0;
    }
    return 1;
}

static void send_dry_run(http_call_t *call, const agent_t *agent, compiled_run_t *compiled)
{
    json_t *reply = json_pack("{s:b, s:I, s:s%, s:s?, s:O}", "dry_run", 1, "agent_id", (json_int_t)agent->id,
                              "prompt", compiled->prompt, compiled->prompt_len, "system", compiled->system,
                              "parameters", compiled->parameters);

    send_json_value(call, 200, reply, NULL);
    json_decref(reply);
}

static void send_accepted(http_call_t *call, int64_t agent_id, const char *run_id, const char *status, int replayed)
{
    char location[128];
    json_t *reply = json_pack("{s:s, s:s}", "run_id", run_id, "status", status);
    const char *headers[] = {"location", location, replayed ? "idempotent-replayed" : NULL, "true", NULL};

    snprintf(location, sizeof(location), "/api/v1/agents/%lld/runs/%s", (long long)agent_id, run_id);
    send_json_value(call, 202, reply, headers);
    json_decref(reply);
}

static api_error_t bind_error(bind_rc_t rc)
{
    switch (rc) {
    case BIND_UNKNOWN_PARAMETER:
        return API_ERR_UNKNOWN_PARAMETER;
    case BIND_INVALID_VALUE:
        return API_ERR_INVALID_PARAMETER_VALUE;
    case BIND_MISSING_PARAMETER:
        return API_ERR_MISSING_PARAMETER;
    case BIND_OUT_OF_MEMORY:
        return API_ERR_INTERNAL_ERROR;
    default:
        return API_ERR_INVALID_REQUEST;
    }
}

/* Stores the run and replies 202, or with the reason it was not stored. */
static void store_new_run(http_call_t *call, const agent_t *agent, compiled_run_t *compiled)
{
    h2o_req_t *req = call->req;
    run_t run;
    h2o_iovec_t idem_header;
    char idem_key[IDEMPOTENCY_KEY_MAX_LEN + 1];
    const char *idem = NULL;
    uint8_t request_hash[32];
    char existing_id[RUN_ID_LEN + 1] = "";
    store_rc_t rc;

    if (http_find_header(call, "idempotency-key", &idem_header)) {
        crypto_generichash_state state;
        if (!idempotency_key_valid(idem_header)) {
            http_send_error(call, API_ERR_INVALID_REQUEST,
                            "Invalid Idempotency-Key: expected 1 to %d visible ASCII characters.",
                            IDEMPOTENCY_KEY_MAX_LEN);
            return;
        }
        memcpy(idem_key, idem_header.base, idem_header.len);
        idem_key[idem_header.len] = '\0';
        idem = idem_key;

        /* the same key means the same request: the agent and the exact body */
        crypto_generichash_init(&state, NULL, 0, sizeof(request_hash));
        crypto_generichash_update(&state, (const unsigned char *)&agent->id, sizeof(agent->id));
        crypto_generichash_update(&state, (const unsigned char *)req->entity.base, req->entity.len);
        crypto_generichash_final(&state, request_hash, sizeof(request_hash));
    }

    memset(&run, 0, sizeof(run));
    uuid_v4(run.id);
    run.org_id = agent->org_id;
    run.agent_id = agent->id;
    memcpy(run.key_id, call->key.key_id, sizeof(run.key_id));
    run.status = RUN_PENDING;
    run.created_at_ms = clock_now_ms();
    run.prompt = compiled->prompt;
    run.system = compiled->system;
    run.provider = agent->provider;
    run.model = agent->model;
    run.temperature = agent->temperature;
    run.has_temperature = agent->has_temperature;
    run.max_tokens = agent->max_tokens;
    run.timeout_ms = agent->timeout_ms;

    rc = store_run_create(call->store, &run, call->config->max_runs_per_key, idem, request_hash, existing_id);
    switch (rc) {
    case STORE_OK:
        if (call->engine != NULL)
            engine_notify(call->engine);
        send_accepted(call, agent->id, run.id, "pending", 0);
        return;
    case STORE_DUPLICATE: {
        run_t first;
        if (store_run_get(call->store, agent->org_id, agent->id, existing_id, &first) != STORE_OK) {
            http_send_error(call, API_ERR_INTERNAL_ERROR, "The earlier run could not be read. Request id %s.",
                            call->request_id);
            return;
        }
        send_accepted(call, agent->id, first.id, run_status_name(first.status), 1);
        run_free(&first);
        return;
    }
    case STORE_CONFLICT:
        http_send_error(call, API_ERR_IDEMPOTENCY_KEY_REUSED,
                        "Idempotency-Key \"%s\" was already used with a different request.", idem);
        return;
    case STORE_LIMIT: {
        const char *headers[] = {"retry-after", CONCURRENCY_RETRY_AFTER_S, NULL};
        http_send_error_with(call, API_ERR_CONCURRENCY_LIMIT_EXCEEDED, headers,
                             "This API key already has %lld runs pending or running; retry when some have finished.",
                             (long long)call->config->max_runs_per_key);
        return;
    }
    default:
        http_send_error(call, API_ERR_INTERNAL_ERROR, "The run could not be stored. Request id %s.",
                        call->request_id);
        return;
    }
}

void api_create_run(http_call_t *call)
{
    h2o_req_t *req = call->req;
    int64_t agent_id;
    agent_t agent;
    int dry_run = 0;
    h2o_iovec_t content_type;
    compiled_run_t compiled;
    char message[1024];
    bind_rc_t brc;
    store_rc_t rc;

    if (parse_agent_id(call->params[0], &agent_id) != 0) {
        send_agent_not_found(call, call->params[0]);
        return;
    }
    if (query_bool(call->query.base, call->query.len, "dry_run", 0, &dry_run) != QUERY_OK) {
        http_send_error(call, API_ERR_INVALID_REQUEST, "Invalid dry_run: expected true or false.");
        return;
    }
    if (req->entity.len > call->config->max_body_bytes) {
        http_send_error(call, API_ERR_PAYLOAD_TOO_LARGE, "Request body is larger than the limit of %zu bytes.",
                        call->config->max_body_bytes);
        return;
    }
    if (req->entity.len > 0) {
        if (!http_find_header(call, "content-type", &content_type) || !is_json_media_type(content_type)) {
            http_send_error(call, API_ERR_UNSUPPORTED_MEDIA_TYPE,
                            "Request body must be JSON, sent with Content-Type: application/json.");
            return;
        }
    }

    memset(&agent, 0, sizeof(agent));
    rc = store_agent_get(call->store, call->key.org_id, agent_id, &agent);
    if (rc == STORE_NOT_FOUND) {
        send_agent_not_found(call, call->params[0]);
        return;
    }
    if (rc != STORE_OK) {
        http_send_error(call, API_ERR_INTERNAL_ERROR, "The agent could not be read. Request id %s.",
                        call->request_id);
        return;
    }

    memset(&compiled, 0, sizeof(compiled));
    brc = bindings_compile(&agent, req->entity.base, req->entity.len, &compiled, message, sizeof(message));
    if (brc != BIND_OK) {
        http_send_error(call, bind_error(brc), "%s", message);
    } else if (dry_run) {
        send_dry_run(call, &agent, &compiled);
    } else {
        store_new_run(call, &agent, &compiled);
    }
    compiled_run_free(&compiled);
    agent_free(&agent);
}

/* ---- GET /api/v1/agents/{agent_id}/runs/{run_id} ---- */

static json_t *time_or_null(int64_t unix_ms)
{
    char text[RFC3339_MS_LEN + 1];

    if (unix_ms == 0)
        return json_null();
    clock_format_rfc3339(unix_ms, text);
    return json_string(text);
}

static json_t *run_to_json(const run_t *run)
{
    json_t *usage = json_null();

    if (run->has_usage)
        usage = json_pack("{s:I, s:I}", "input_tokens", (json_int_t)run->input_tokens, "output_tokens",
                          (json_int_t)run->output_tokens);
    return json_pack("{s:s, s:I, s:s, s:o, s:o, s:o, s:s?, s:s?, s:o}", "run_id", run->id, "agent_id",
                     (json_int_t)run->agent_id, "status", run_status_name(run->status), "created_at",
                     time_or_null(run->created_at_ms), "started_at", time_or_null(run->started_at_ms),
                     "completed_at", time_or_null(run->completed_at_ms), "output",
                     run->status == RUN_SUCCEEDED ? run->output : NULL, "error",
                     run->status == RUN_FAILED ? run->error : NULL, "usage", usage);
}

/* Sends 200 with the run object. */
static void send_run(http_call_t *call, const run_t *run)
{
    json_t *reply = run_to_json(run);

    send_json_value(call, 200, reply, NULL);
    json_decref(reply);
}

/* Parses the {agent_id} and {run_id} of a run's path. Returns 0, or -1 after
 * answering 404 run_not_found: a malformed id names no run of the caller. */
static int parse_run_path(http_call_t *call, int64_t *agent_id, char run_id[RUN_ID_LEN + 1])
{
    char quoted[96];

    if (uuid_normalize(call->params[1].base, call->params[1].len, run_id) != 0 ||
        parse_agent_id(call->params[0], agent_id) != 0) {
        http_send_error(call, API_ERR_RUN_NOT_FOUND, "Run %s not found.",
                        log_quote(quoted, sizeof(quoted), call->params[1].base, call->params[1].len));
        return -1;
    }
    return 0;
}

void api_get_run(http_call_t *call)
{
    int64_t agent_id;
    char run_id[RUN_ID_LEN + 1];
    run_t run;
    store_rc_t rc;

    if (parse_run_path(call, &agent_id, run_id) != 0)
        return;

    memset(&run, 0, sizeof(run));
    rc = store_run_get(call->store, call->key.org_id, agent_id, run_id, &run);
    if (rc == STORE_NOT_FOUND) {
        http_send_error(call, API_ERR_RUN_NOT_FOUND, "Run %s not found.", run_id);
        return;
    }
    if (rc != STORE_OK) {
        http_send_error(call, API_ERR_INTERNAL_ERROR, "The run could not be read. Request id %s.", call->request_id);
        return;
    }
    send_run(call, &run);
    run_free(&run);
}

/* ---- POST /api/v1/agents/{agent_id}/runs/{run_id}/cancel ---- */

/*
 * Records the cancellation and replies 200 with the run as it then is: a
 * pending run is already cancelled, a running one still shows running until
 * the engine that executes it has stopped it (within about a second). A run
 * that had already succeeded or failed is 409 run_not_cancellable.
 */
void api_cancel_run(http_call_t *call)
{
    int64_t agent_id;
    char run_id[RUN_ID_LEN + 1];
    run_t run;
    store_rc_t rc;

    if (parse_run_path(call, &agent_id, run_id) != 0)
        return;

    memset(&run, 0, sizeof(run));
    rc = store_run_cancel(call->store, call->key.org_id, agent_id, run_id, clock_now_ms(), &run);
    switch (rc) {
    case STORE_OK:
        if (run.status == RUN_RUNNING && call->engine != NULL)
            engine_cancel(call->engine, run.id);
        send_run(call, &run);
        break;
    case STORE_CONFLICT:
        http_send_error(call, API_ERR_RUN_NOT_CANCELLABLE, "Run %s already %s and cannot be cancelled.", run_id,
                        run_status_name(run.status));
        break;
    case STORE_NOT_FOUND:
        http_send_error(call, API_ERR_RUN_NOT_FOUND, "Run %s not found.", run_id);
        break;
    default:
        http_send_error(call, API_ERR_INTERNAL_ERROR, "The run could not be cancelled. Request id %s.",
                        call->request_id);
        break;
    }
    run_free(&run);
}

/* ---- probes ---- */

void api_healthz(http_call_t *call)
{
    static const char body[] = "{\"status\":\"ok\"}";

    http_send_json(call, 200, body, sizeof(body) - 1, NULL);
}

void api_readyz(http_call_t *call)
{
    static const char ready[] = "{\"status\":\"ready\"}";
    static const char unavailable[] = "{\"status\":\"unavailable\",\"reason\":\"the database does not answer\"}";

    if (store_ping(call->store) == STORE_OK)
        http_send_json(call, 200, ready, sizeof(ready) - 1, NULL);
    else
        http_send_json(call, 503, unavailable, sizeof(unavailable) - 1, NULL);
}

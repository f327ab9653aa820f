/*
 * store_pg.c - the store on a PostgreSQL database, shared by any number of
 * pushaid processes.
 *
 * Schema (migration 1 in migrations[] below; every time is a bigint of Unix
 * milliseconds, written by the process that makes the change):
 *   orgs              one row per organization. agents_rev is the agent
 *                     revision of store.h: a row trigger on agents adds 1 to
 *                     it on every insert, update and delete of its agents.
 *   api_keys          one row per key: the public key_id, the BLAKE2b hash of
 *                     the secret, revoked_at NULL while the key is active.
 *   agents            one row per agent; id comes from an identity sequence,
 *                     so it is never reused. params is the JSON text of
 *                     agent_params_to_text().
 *   runs              one row per run; id is a uuid, seq (an identity) is the
 *                     insertion order that breaks ties between equal
 *                     created_at. cancel_requested_at is set by
 *                     store_run_cancel(). runs has no foreign keys: a foreign
 *                     key would take a KEY SHARE lock on the org, agent and
 *                     key rows for every insert, which turns into MultiXact
 *                     traffic on the few hot rows that every node writes
 *                     through. The insert checks that the agent and the key
 *                     exist instead.
 *   idempotency_keys  (key_id, idem_key) -> the hash of the first request and
 *                     its run. NOTE: rows are never deleted yet.
 *   rate_limit_buckets  one token bucket per name (store_ratelimit_take).
 *                     UNLOGGED: no WAL is written for it, so a crash of the
 *                     database empties it (every bucket starts full again)
 *                     and standbys do not have it.
 * schema_migrations holds one row per applied migration. store_pg_open()
 * applies the missing ones in one transaction that first takes
 * pg_advisory_xact_lock(MIGRATION_LOCK_KEY), so when many nodes start at
 * once, one migrates and the others wait for it and then find nothing to do.
 *
 * Connection. A store_t is one libpq connection, used by one thread, with
 * every statement of stmt_sql[] prepared on it. Before each call,
 * connection_ready() checks it: a connection that libpq already knows is
 * broken, or whose socket became readable while idle (the server sends a
 * FATAL message and closes when it shuts down), is reset once and its
 * statements prepared again. When that reset fails the call returns
 * STORE_ERROR, and for RECONNECT_BACKOFF_MS after it calls fail at once
 * instead of trying again, so a database outage costs a failed request and
 * not a connect timeout each. When a statement finds the connection broken
 * outside a transaction and running it twice is harmless (a read, a lease
 * renewal: stmt_repeatable()), it is sent once more on a new connection.
 * Any other call whose connection breaks returns STORE_ERROR, because a
 * write may or may not have been committed, and the next call resets. The
 * connection URI may set any libpq parameter; connect_timeout and TCP
 * keepalives have defaults here that the URI overrides.
 *
 * Clocks. Times come from the clock of the node that writes them, and a
 * claim on one node compares its clock with leases written by another, as
 * the shared rate-limit buckets do. Nodes therefore need synchronized clocks
 * (NTP): a node whose clock runs s ahead takes over leases s early.
 *
 * Transactions. The server runs at READ COMMITTED. A function that writes
 * more than one statement runs them in one transaction: store_agents_import,
 * store_run_create when it checks an idempotency key or the in-flight cap,
 * and store_runs_claim when it enforces per-organization or per-agent caps.
 * Everything else is one statement. Nothing is cached between calls, so a
 * revoked key or a changed agent is seen by the next read on any node.
 *
 * Queue. A claim (store_runs_claim) first ends the expired runs that cannot
 * run again (cancel requested, or max_attempts reached), then picks and
 * claims in one statement (STMT_RUNS_CLAIM). The candidates are the running
 * runs whose lease expired and, for each organization with pending runs
 * (found by a loose scan of runs_pending, one index probe per organization),
 * its oldest pending runs; all are locked with FOR UPDATE SKIP LOCKED, so
 * engines claiming at once take different rows. Within an organization the
 * expired runs come first, then the pending ones, each oldest first; an
 * organization's n-th run is taken in turn n, and within a turn the
 * organizations go in the order of their oldest candidate. Caps drop the
 * candidates that would exceed a per-agent, then a per-organization count
 * of runs running under a live lease. Two engines could both count the same
 * running runs and together exceed a cap, so when a cap is set the claim
 * first takes the transaction-level advisory lock CLAIM_LOCK_KEY: claims
 * with caps run one at a time across all nodes, each seeing the runs the
 * previous one took. With K organizations waiting, each offers at most
 * max + 1 - K pending runs, and at least one: enough to fill max slots when
 * every other organization takes one. A claim so reads at most
 * max(K, (max + 1)^2 / 4) pending rows, not K * max. A cap can leave a slot
 * of this claim empty; the next claim fills it.
 *
 * In-flight cap. store_run_create with max_in_flight > 0 locks the key's row
 * (FOR NO KEY UPDATE) and counts the key's pending and running runs in the
 * next statement, so creations for one key are serialized across nodes and
 * each sees the runs the others stored. The lock is held until the commit,
 * so one key creates runs at most at the rate of one commit at a time.
 *
 * Idempotency. The (key_id, idem_key) row is inserted first with ON
 * CONFLICT DO NOTHING: when another request holds that pair, the insert
 * waits for it to commit, then finds the row, and the call returns
 * STORE_DUPLICATE or STORE_CONFLICT from the stored hash.
 *
 * Notifications. Triggers on runs send NOTIFY on channel NOTIFY_CHANNEL in
 * the transaction that inserts a run, hands a run back as pending, or
 * requests the cancellation of a running run; PostgreSQL delivers it at
 * commit, to every listening connection of the database. The first call of
 * store_notify_fd() opens a second connection that only LISTENs, and
 * returns an epoll descriptor that holds that connection's socket. The
 * descriptor stays the same when the connection is replaced after a
 * failure, so a caller can keep it in its own epoll set; it polls readable
 * when a notification (or the end of the connection) arrives, and
 * store_notifications_drain() consumes it. A lost listening connection is
 * reopened by the drain, or by the next claim when the drain cannot run
 * because the descriptor holds no socket.
 * NOTE: PostgreSQL serializes the commits of all transactions that sent a
 * NOTIFY, cluster-wide, on one heavyweight lock that it holds until after
 * the commit record is flushed (PreCommit_Notify in
 * src/backend/commands/async.c), so run creations commit one at a time.
 * docs/SCALING.md gives the measured cost and the way out.
 *
 * Connections per process: one per store_t (each HTTP thread and the
 * engine open one) plus the engine's listening connection.
 */
#include "store_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <postgresql/libpq-fe.h> /* Debian puts libpq-fe.h under postgresql/ */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "agent.h"
#include "clock.h"
#include "log.h"

/* pg_advisory_xact_lock() keys: "pushai" in ASCII, then a tag byte. */
#define MIGRATION_LOCK_KEY INT64_C(0x7075736861690001)
#define CLAIM_LOCK_KEY INT64_C(0x7075736861690002)

#define NOTIFY_CHANNEL "pushai_wake"
#define RECONNECT_BACKOFF_MS 250
#define RECONNECT_LOG_INTERVAL_MS 10000
/* How often each connection deletes the rate-limit buckets that are full again. */
#define BUCKET_SWEEP_INTERVAL_MS 60000
#define MAX_PARAMS 20
#define NUMBER_TEXT_MAX 32

/* ---- schema ---- */

static const char *const migrations[] = {
    /* 1: the initial schema */
    "CREATE TABLE orgs ("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  slug text NOT NULL UNIQUE,"
    "  name text NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  agents_rev bigint NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE api_keys ("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  key_id text NOT NULL UNIQUE,"
    "  org_id bigint NOT NULL REFERENCES orgs(id),"
    "  label text,"
    "  secret_hash bytea NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  revoked_at bigint"
    ");"
    "CREATE INDEX api_keys_org ON api_keys (org_id, created_at, id);"
    "CREATE TABLE agents ("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  org_id bigint NOT NULL REFERENCES orgs(id),"
    "  name text NOT NULL,"
    "  description text,"
    "  published boolean NOT NULL DEFAULT false,"
    "  system text,"
    "  prompt text NOT NULL,"
    "  provider text NOT NULL,"
    "  model text,"
    "  temperature double precision,"
    "  max_tokens bigint,"
    "  timeout_ms bigint,"
    "  params text NOT NULL DEFAULT '[]',"
    "  created_at bigint NOT NULL,"
    "  updated_at bigint NOT NULL"
    ");"
    "CREATE INDEX agents_org_published ON agents (org_id, published, id);"
    "CREATE FUNCTION pushai_agents_rev() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  IF TG_OP <> 'INSERT' THEN"
    "   UPDATE orgs SET agents_rev = agents_rev + 1 WHERE id = OLD.org_id;"
    "  END IF;"
    "  IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.org_id <> OLD.org_id) THEN"
    "   UPDATE orgs SET agents_rev = agents_rev + 1 WHERE id = NEW.org_id;"
    "  END IF;"
    "  RETURN NULL;"
    " END $$;"
    "CREATE TRIGGER agents_rev AFTER INSERT OR UPDATE OR DELETE ON agents"
    "  FOR EACH ROW EXECUTE FUNCTION pushai_agents_rev();"
    "CREATE TABLE runs ("
    "  seq bigint GENERATED ALWAYS AS IDENTITY,"
    "  id uuid PRIMARY KEY,"
    "  org_id bigint NOT NULL,"
    "  agent_id bigint NOT NULL,"
    "  key_id text NOT NULL,"
    "  status text NOT NULL"
    "    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),"
    "  created_at bigint NOT NULL,"
    "  started_at bigint,"
    "  completed_at bigint,"
    "  output text,"
    "  error text,"
    "  input_tokens bigint,"
    "  output_tokens bigint,"
    "  prompt text NOT NULL,"
    "  system text,"
    "  provider text NOT NULL,"
    "  model text,"
    "  temperature double precision,"
    "  max_tokens bigint,"
    "  timeout_ms bigint,"
    "  attempts integer NOT NULL DEFAULT 0,"
    "  lease_owner text,"
    "  lease_until bigint,"
    "  cancel_requested_at bigint"
    ");"
    /* claiming: the organizations with pending runs, and each one's oldest */
    "CREATE INDEX runs_pending ON runs (org_id, created_at, seq) WHERE status = 'pending';"
    /* claiming and ending: running runs whose lease expired */
    "CREATE INDEX runs_lease_until ON runs (lease_until) WHERE status = 'running';"
    /* claim caps: running runs per organization and per agent */
    "CREATE INDEX runs_running_org ON runs (org_id, agent_id) WHERE status = 'running';"
    "CREATE INDEX runs_running_agent ON runs (agent_id) WHERE status = 'running';"
    /* renew, complete, release and cancellation checks by owner */
    "CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;"
    /* a key's runs in flight */
    "CREATE INDEX runs_key_in_flight ON runs (key_id) WHERE status IN ('pending', 'running');"
    "CREATE FUNCTION pushai_wake() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  PERFORM pg_notify('" NOTIFY_CHANNEL "', TG_ARGV[0]);"
    "  RETURN NULL;"
    " END $$;"
    "CREATE TRIGGER runs_wake_created AFTER INSERT ON runs"
    "  FOR EACH STATEMENT EXECUTE FUNCTION pushai_wake('created');"
    "CREATE TRIGGER runs_wake_released AFTER UPDATE OF status ON runs"
    "  FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending')"
    "  EXECUTE FUNCTION pushai_wake('released');"
    "CREATE TRIGGER runs_wake_cancel AFTER UPDATE OF cancel_requested_at ON runs"
    "  FOR EACH ROW WHEN (OLD.cancel_requested_at IS NULL AND NEW.cancel_requested_at IS NOT NULL"
    "                     AND NEW.status = 'running')"
    "  EXECUTE FUNCTION pushai_wake('cancel');"
    "CREATE TABLE idempotency_keys ("
    "  key_id text NOT NULL,"
    "  idem_key text NOT NULL,"
    "  request_hash bytea NOT NULL,"
    "  run_id uuid NOT NULL,"
    "  created_at bigint NOT NULL,"
    "  PRIMARY KEY (key_id, idem_key)"
    ");"
    "CREATE UNLOGGED TABLE rate_limit_buckets ("
    "  name text PRIMARY KEY,"
    "  tokens double precision NOT NULL,"
    "  updated_at bigint NOT NULL,"
    "  full_at bigint NOT NULL,"
    "  allowed boolean NOT NULL"
    ") WITH (fillfactor = 50);",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- prepared statements ---- */

typedef enum {
    STMT_PING,
    STMT_ORG_INSERT,
    STMT_ORG_FIND,
    STMT_KEY_INSERT,
    STMT_KEY_GET,
    STMT_KEY_LIST,
    STMT_KEY_REPLACE_SECRET,
    STMT_KEY_REVOKE,
    STMT_KEY_REVOKED_AT,
    STMT_AGENT_INSERT,
    STMT_AGENT_SET_PUBLISHED,
    STMT_AGENT_GET,
    STMT_AGENTS_PAGE,
    STMT_AGENTS_ALL,
    STMT_IDEM_INSERT,
    STMT_IDEM_GET,
    STMT_KEY_LOCK,
    STMT_RUNS_IN_FLIGHT,
    STMT_RUN_INSERT,
    STMT_RUN_GET,
    STMT_CLAIM_LOCK,
    STMT_RUNS_END_EXPIRED,
    STMT_RUNS_CLAIM,
    STMT_RUNS_RENEW,
    STMT_RUN_COMPLETE,
    STMT_RUNS_RELEASE,
    STMT_RUN_CANCEL,
    STMT_RUNS_CANCEL_REQUESTED,
    STMT_RATELIMIT_TAKE,
    STMT_RATELIMIT_PEEK,
    STMT_RATELIMIT_SWEEP,
    STMT_COUNT
} stmt_id_t;

/* Column lists shared by the statements that return whole rows. The column
 * indexes in read_key(), read_agent() and read_run() follow them. */
#define KEY_COLUMNS "k.key_id, k.org_id, k.label, k.secret_hash, k.created_at, k.revoked_at, o.agents_rev"
#define AGENT_COLUMNS                                                                           \
    "id, org_id, name, description, published, system, prompt, provider, model, temperature, " \
    "max_tokens, timeout_ms, params"
#define RUN_COLUMNS                                                                                       \
    "runs.id, runs.org_id, runs.agent_id, runs.key_id, runs.status, runs.created_at, runs.started_at, "  \
    "runs.completed_at, runs.output, runs.error, runs.input_tokens, runs.output_tokens, runs.prompt, "    \
    "runs.system, runs.provider, runs.model, runs.temperature, runs.max_tokens, runs.timeout_ms, "        \
    "runs.attempts"
#define RUN_COLUMN_COUNT 20

/* The messages of a run that the claim fails because its lease expired once
 * too often; %s is the number of attempts. */
#define INTERRUPTED_ONCE "The run was interrupted once before it could finish. Create a new run to try again."
#define INTERRUPTED_TIMES "The run was interrupted %s times before it could finish. Create a new run to try again."

static const char *const stmt_sql[STMT_COUNT] = {
    [STMT_PING] = "SELECT 1",

    [STMT_ORG_INSERT] = "INSERT INTO orgs (slug, name, created_at) VALUES ($1, $2, $3) RETURNING id",
    [STMT_ORG_FIND] = "SELECT id FROM orgs WHERE slug = $1",

    [STMT_KEY_INSERT] = "INSERT INTO api_keys (key_id, org_id, label, secret_hash, created_at, revoked_at)"
                        " VALUES ($1, $2, $3, $4, $5, $6)",
    [STMT_KEY_GET] = "SELECT " KEY_COLUMNS " FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.key_id = $1",
    [STMT_KEY_LIST] = "SELECT " KEY_COLUMNS " FROM api_keys k JOIN orgs o ON o.id = k.org_id"
                      " WHERE k.org_id = $1 ORDER BY k.created_at, k.id",
    [STMT_KEY_REPLACE_SECRET] = "UPDATE api_keys SET secret_hash = $2 WHERE key_id = $1 AND revoked_at IS NULL",
    [STMT_KEY_REVOKE] = "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
    [STMT_KEY_REVOKED_AT] = "SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1",

    [STMT_AGENT_INSERT] = "INSERT INTO agents (org_id, name, description, published, system, prompt, provider,"
                          " model, temperature, max_tokens, timeout_ms, params, created_at, updated_at)"
                          " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) RETURNING id",
    [STMT_AGENT_SET_PUBLISHED] = "UPDATE agents SET published = $2, updated_at = $3 WHERE id = $1",
    [STMT_AGENT_GET] = "SELECT " AGENT_COLUMNS " FROM agents WHERE id = $1 AND org_id = $2 AND published",
    /* one statement, so the total and the page come from one snapshot; the
     * first row always exists and carries the total, with NULL agent
     * columns when the page is empty */
    [STMT_AGENTS_PAGE] = "WITH page AS (SELECT " AGENT_COLUMNS " FROM agents WHERE org_id = $1 AND published"
                         "              ORDER BY id LIMIT $2 OFFSET $3)"
                         " SELECT page.*, t.total FROM"
                         " (SELECT count(*) AS total FROM agents WHERE org_id = $1 AND published) t"
                         " LEFT JOIN page ON true ORDER BY page.id",
    [STMT_AGENTS_ALL] = "SELECT " AGENT_COLUMNS " FROM agents WHERE org_id = $1 ORDER BY id",

    [STMT_IDEM_INSERT] = "INSERT INTO idempotency_keys (key_id, idem_key, request_hash, run_id, created_at)"
                         " VALUES ($1, $2, $3, $4::uuid, $5) ON CONFLICT DO NOTHING RETURNING 1",
    [STMT_IDEM_GET] = "SELECT request_hash, run_id FROM idempotency_keys WHERE key_id = $1 AND idem_key = $2",
    [STMT_KEY_LOCK] = "SELECT 1 FROM api_keys WHERE key_id = $1 FOR NO KEY UPDATE",
    /* counts at most $2 rows: enough to compare with the limit */
    [STMT_RUNS_IN_FLIGHT] = "SELECT count(*) FROM (SELECT 1 FROM runs"
                            " WHERE key_id = $1 AND status IN ('pending', 'running') LIMIT $2) r",
    /* inserts nothing when the agent is not org $2's or the key does not exist */
    [STMT_RUN_INSERT] =
        "INSERT INTO runs (id, org_id, agent_id, key_id, status, created_at, prompt, system, provider, model,"
        " temperature, max_tokens, timeout_ms, attempts)"
        " SELECT $1::uuid, $2::bigint, $3::bigint, $4::text, 'pending', $5::bigint, $6::text, $7::text,"
        "  $8::text, $9::text, $10::double precision, $11::bigint, $12::bigint, 0"
        " WHERE EXISTS (SELECT 1 FROM agents WHERE id = $3::bigint AND org_id = $2::bigint)"
        "   AND EXISTS (SELECT 1 FROM api_keys WHERE key_id = $4::text)",
    [STMT_RUN_GET] = "SELECT " RUN_COLUMNS " FROM runs WHERE id = $1::uuid AND org_id = $2 AND agent_id = $3",

    [STMT_CLAIM_LOCK] = "SELECT pg_advisory_xact_lock($1)",
    /* $1 now, $2 max_attempts: expired runs whose cancellation was requested
     * end cancelled, those out of attempts end failed */
    [STMT_RUNS_END_EXPIRED] =
        "UPDATE runs SET"
        " status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'failed' END,"
        " completed_at = $1, lease_owner = NULL, lease_until = NULL,"
        " error = CASE WHEN cancel_requested_at IS NOT NULL THEN NULL"
        "              WHEN attempts = 1 THEN '" INTERRUPTED_ONCE "'"
        "              ELSE format('" INTERRUPTED_TIMES "', attempts) END"
        " WHERE id IN (SELECT id FROM runs WHERE status = 'running' AND lease_until < $1"
        "              AND (cancel_requested_at IS NOT NULL OR attempts >= $2) FOR UPDATE SKIP LOCKED)"
        " RETURNING id, attempts, status",
    /* $1 now, $2 owner, $3 lease_until, $4 max, $5 max_per_org, $6
     * max_per_agent (0 = no cap); "Queue" in the design note explains the
     * steps. kind 0 marks an expired run, 1 a pending one. */
    [STMT_RUNS_CLAIM] =
        "WITH RECURSIVE waiting(org_id) AS ("
        "   (SELECT org_id FROM runs WHERE status = 'pending' ORDER BY org_id LIMIT 1)"
        "   UNION ALL"
        "   SELECT (SELECT r.org_id FROM runs r WHERE r.status = 'pending' AND r.org_id > w.org_id"
        "           ORDER BY r.org_id LIMIT 1)"
        "   FROM waiting w WHERE w.org_id IS NOT NULL"
        " ),"
        " pending AS ("
        "   SELECT c.* FROM waiting w CROSS JOIN LATERAL ("
        "     SELECT r.id, r.org_id, r.agent_id, r.created_at, r.seq, 1 AS kind FROM runs r"
        "     WHERE r.org_id = w.org_id AND r.status = 'pending' AND r.cancel_requested_at IS NULL"
        "     ORDER BY r.created_at, r.seq"
        "     LIMIT greatest(1, $4 + 1 - (SELECT count(*) FROM waiting WHERE org_id IS NOT NULL))"
        "     FOR UPDATE SKIP LOCKED) c"
        "   WHERE w.org_id IS NOT NULL"
        " ),"
        " expired AS ("
        "   SELECT r.id, r.org_id, r.agent_id, r.created_at, r.seq, 0 AS kind FROM runs r"
        "   WHERE r.status = 'running' AND r.lease_until < $1"
        "   ORDER BY r.lease_until LIMIT $4 FOR UPDATE SKIP LOCKED"
        " ),"
        " candidates AS (SELECT * FROM pending UNION ALL SELECT * FROM expired),"
        " org_running AS ("
        "   SELECT r.org_id, count(*) AS n FROM runs r"
        "   WHERE $5 > 0 AND r.status = 'running' AND r.lease_until >= $1"
        "     AND r.org_id IN (SELECT org_id FROM candidates)"
        "   GROUP BY r.org_id"
        " ),"
        " agent_running AS ("
        "   SELECT r.agent_id, count(*) AS n FROM runs r"
        "   WHERE $6 > 0 AND r.status = 'running' AND r.lease_until >= $1"
        "     AND r.agent_id IN (SELECT agent_id FROM candidates)"
        "   GROUP BY r.agent_id"
        " ),"
        " agent_ranked AS ("
        "   SELECT c.*, row_number() OVER (PARTITION BY c.agent_id ORDER BY c.kind, c.created_at, c.seq)"
        "          AS agent_rank"
        "   FROM candidates c"
        " ),"
        " agent_allowed AS ("
        "   SELECT a.* FROM agent_ranked a LEFT JOIN agent_running ar ON ar.agent_id = a.agent_id"
        "   WHERE $6 = 0 OR a.agent_rank + coalesce(ar.n, 0) <= $6"
        " ),"
        " org_ranked AS ("
        "   SELECT a.*, row_number() OVER (PARTITION BY a.org_id ORDER BY a.kind, a.created_at, a.seq) AS org_rank,"
        "          first_value(a.created_at) OVER head AS head_created_at, first_value(a.seq) OVER head AS head_seq"
        "   FROM agent_allowed a"
        "   WINDOW head AS (PARTITION BY a.org_id ORDER BY a.created_at, a.seq)"
        " ),"
        " picked AS ("
        "   SELECT o.id, o.org_rank, o.head_created_at, o.head_seq"
        "   FROM org_ranked o LEFT JOIN org_running r ON r.org_id = o.org_id"
        "   WHERE $5 = 0 OR o.org_rank + coalesce(r.n, 0) <= $5"
        "   ORDER BY o.org_rank, o.head_created_at, o.head_seq LIMIT $4"
        " )"
        " UPDATE runs SET status = 'running', attempts = runs.attempts + 1,"
        "  started_at = coalesce(runs.started_at, $1), lease_owner = $2, lease_until = $3"
        " FROM picked WHERE runs.id = picked.id"
        " RETURNING " RUN_COLUMNS ", picked.org_rank, picked.head_created_at, picked.head_seq",
    [STMT_RUNS_RENEW] = "UPDATE runs SET lease_until = $2 WHERE lease_owner = $1 AND status = 'running'",
    [STMT_RUN_COMPLETE] = "UPDATE runs SET status = $3, completed_at = $4, output = $5, error = $6,"
                          " input_tokens = $7, output_tokens = $8, lease_owner = NULL, lease_until = NULL"
                          " WHERE id = $1::uuid AND lease_owner = $2 AND status = 'running'",
    /* a run whose cancellation was requested is not handed back: it ends
     * cancelled, because it must never start again */
    [STMT_RUNS_RELEASE] =
        "UPDATE runs SET"
        " status = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,"
        " started_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE started_at END,"
        " completed_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE $2::bigint END,"
        " attempts = CASE WHEN cancel_requested_at IS NULL THEN greatest(attempts - 1, 0) ELSE attempts END,"
        " lease_owner = NULL, lease_until = NULL"
        " WHERE lease_owner = $1 AND status = 'running'",
    /* $1 id, $2 org, $3 agent, $4 now: a pending run ends cancelled at once,
     * a running one is marked for its engine */
    [STMT_RUN_CANCEL] =
        "UPDATE runs SET"
        " status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,"
        " completed_at = CASE WHEN status = 'pending' THEN $4::bigint ELSE completed_at END,"
        " cancel_requested_at = coalesce(cancel_requested_at, $4::bigint)"
        " WHERE id = $1::uuid AND org_id = $2 AND agent_id = $3 AND status IN ('pending', 'running')"
        " RETURNING " RUN_COLUMNS,
    [STMT_RUNS_CANCEL_REQUESTED] = "SELECT id FROM runs WHERE lease_owner = $1 AND status = 'running'"
                                   " AND cancel_requested_at IS NOT NULL ORDER BY id LIMIT $2",

    /* $1 name, $2 tokens per ms, $3 burst, $4 now, $5 tokens to take (0 or
     * 1). The bucket is read, refilled, taken from and written in one
     * statement, under the row lock of the upsert, so nodes never lose
     * each other's takes. */
    [STMT_RATELIMIT_TAKE] =
        "INSERT INTO rate_limit_buckets AS b (name, tokens, updated_at, full_at, allowed)"
        " VALUES ($1, $3::float8 - $5::float8, $4, $4 + ceil($5::float8 / $2::float8)::bigint, $3::float8 >= 1)"
        " ON CONFLICT (name) DO UPDATE SET"
        "  tokens = least($3, b.tokens + greatest($4 - b.updated_at, 0) * $2)"
        "           - CASE WHEN least($3, b.tokens + greatest($4 - b.updated_at, 0) * $2) >= 1 THEN $5 ELSE 0 END,"
        "  allowed = least($3, b.tokens + greatest($4 - b.updated_at, 0) * $2) >= 1,"
        "  updated_at = greatest(b.updated_at, $4),"
        "  full_at = greatest(b.updated_at, $4) + ceil(($3 - (least($3, b.tokens + greatest($4 - b.updated_at, 0) * $2)"
        "           - CASE WHEN least($3, b.tokens + greatest($4 - b.updated_at, 0) * $2) >= 1 THEN $5 ELSE 0 END))"
        "           / $2)::bigint"
        " RETURNING tokens, allowed",
    /* the same arithmetic without a write; no row means a full bucket */
    [STMT_RATELIMIT_PEEK] = "SELECT least($3::float8, tokens + greatest($4::bigint - updated_at, 0) * $2::float8)"
                            " FROM rate_limit_buckets WHERE name = $1",
    [STMT_RATELIMIT_SWEEP] = "DELETE FROM rate_limit_buckets WHERE full_at < $1",
};

/* ---- connection state ---- */

typedef struct {
    store_t base; /* first, so a store_t pointer is a pg_store_t pointer */
    char *uri;
    char where[256];  /* host, port, database and user, for log lines (never the password) */
    PGconn *conn;
    int64_t retry_after_mono_ms; /* no reset before this, after one failed */
    int64_t failure_logged_mono_ms;
    int64_t sweep_after_mono_ms;
    int in_transaction; /* between tx_begin() and the commit or rollback */

    /* notifications: listen_conn's socket sits in notify_epoll_fd */
    int notify_epoll_fd; /* -1 until store_notify_fd() is first called */
    PGconn *listen_conn;
    int listen_socket;   /* the socket registered in notify_epoll_fd, -1 when none */
    int64_t listen_retry_after_mono_ms;
} pg_store_t;

static pg_store_t *to_pg(store_t *store)
{
    return (pg_store_t *)store;
}

static store_rc_t out_of_memory(const char *op)
{
    log_error("msg=\"out of memory\" db=postgresql op=%s", op);
    return STORE_ERROR;
}

/* Routes the server's notices and warnings to the log instead of stderr. */
static void log_notice(void *arg, const char *message)
{
    const pg_store_t *s = arg;
    char quoted[512];
    size_t len = strlen(message);

    while (len > 0 && message[len - 1] == '\n')
        len--;
    log_info("msg=\"database notice\" db=postgresql %s notice=%s", s->where,
             log_quote(quoted, sizeof(quoted), message, len));
}

/* Logs a failed connection or statement with its context: the server's
 * primary message and SQLSTATE when there is a result, else libpq's
 * connection message. Values (DETAIL lines) are left out on purpose, because
 * they can contain keys or hashes. */
static store_rc_t db_error(pg_store_t *s, const PGresult *res, const char *op)
{
    const char *message = NULL;
    const char *state = NULL;
    char quoted[512];
    size_t len;

    if (res != NULL) {
        message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    }
    if (message == NULL)
        message = s->conn != NULL ? PQerrorMessage(s->conn) : "no connection";
    len = strlen(message);
    while (len > 0 && message[len - 1] == '\n')
        len--;
    log_error("msg=\"database call failed\" db=postgresql op=%s %s sqlstate=%s error=%s", op, s->where,
              state != NULL ? state : "-", log_quote(quoted, sizeof(quoted), message, len));
    return STORE_ERROR;
}

/* ---- statement parameters and results ---- */

/* Parameters of one statement in libpq's arrays: text values, except for
 * bytea values sent in binary. Numbers are formatted into numbers[]. */
typedef struct {
    int n;
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS];
    int formats[MAX_PARAMS];
    char numbers[MAX_PARAMS][NUMBER_TEXT_MAX];
} params_t;

static void param_text(params_t *p, const char *text)
{
    p->values[p->n] = text; /* NULL is SQL NULL */
    p->lengths[p->n] = 0;
    p->formats[p->n] = 0;
    p->n++;
}

static void param_int(params_t *p, int64_t value)
{
    snprintf(p->numbers[p->n], NUMBER_TEXT_MAX, "%" PRId64, value);
    param_text(p, p->numbers[p->n]);
}

/* Adds value, or NULL when present is 0. */
static void param_int_opt(params_t *p, int64_t value, int present)
{
    if (present)
        param_int(p, value);
    else
        param_text(p, NULL);
}

static void param_double(params_t *p, double value)
{
    /* 17 significant digits read back as the same double */
    snprintf(p->numbers[p->n], NUMBER_TEXT_MAX, "%.17g", value);
    param_text(p, p->numbers[p->n]);
}

static void param_double_opt(params_t *p, double value, int present)
{
    if (present)
        param_double(p, value);
    else
        param_text(p, NULL);
}

static void param_bytes(params_t *p, const void *data, int len)
{
    p->values[p->n] = data;
    p->lengths[p->n] = len;
    p->formats[p->n] = 1;
    p->n++;
}

static int is_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col);
}

static int64_t get_int64(const PGresult *res, int row, int col)
{
    return is_null(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static int get_bool(const PGresult *res, int row, int col)
{
    return !is_null(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

/* Copies a text column into *out (NULL for SQL NULL). Returns 0, or -1 when
 * memory ran out. */
static int get_strdup(const PGresult *res, int row, int col, char **out)
{
    *out = NULL;
    if (is_null(res, row, col))
        return 0;
    *out = strdup(PQgetvalue(res, row, col));
    return *out != NULL ? 0 : -1;
}

/* Copies a text column into a buffer of size bytes. Returns 0, or -1 when the
 * column is NULL or does not fit. */
static int get_copy(const PGresult *res, int row, int col, char *buf, size_t size)
{
    size_t len;

    buf[0] = '\0';
    if (is_null(res, row, col))
        return -1;
    len = (size_t)PQgetlength(res, row, col);
    if (len >= size)
        return -1;
    memcpy(buf, PQgetvalue(res, row, col), len + 1);
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes a bytea column in the server's hex output ("\x0a1b...") into
 * exactly size bytes. Returns 0, or -1 when it is NULL or another length. */
static int get_bytes(const PGresult *res, int row, int col, uint8_t *out, size_t size)
{
    const char *text;

    if (is_null(res, row, col) || (size_t)PQgetlength(res, row, col) != 2 + 2 * size)
        return -1;
    text = PQgetvalue(res, row, col);
    if (text[0] != '\\' || text[1] != 'x')
        return -1;
    for (size_t i = 0; i < size; i++) {
        int high = hex_value(text[2 + 2 * i]), low = hex_value(text[3 + 2 * i]);

        if (high < 0 || low < 0)
            return -1;
        out[i] = (uint8_t)(high << 4 | low);
    }
    return 0;
}

/* Whether text is a UUID in the 8-4-4-4-12 hex form, so that comparing it
 * with a uuid column cannot fail on the cast. */
static int is_uuid_text(const char *text)
{
    if (text == NULL || strlen(text) != RUN_ID_LEN)
        return 0;
    for (int i = 0; i < RUN_ID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return 0;
        } else if (hex_value(text[i]) < 0) {
            return 0;
        }
    }
    return 1;
}

/* ---- connecting ---- */

/* Fills s->where from the URI's host, port, database and user. */
static void describe_uri(pg_store_t *s)
{
    PQconninfoOption *options = PQconninfoParse(s->uri, NULL);
    const char *host = "-", *port = "-", *dbname = "-", *user = "-";

    for (PQconninfoOption *o = options; o != NULL && o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0 || (strcmp(o->keyword, "hostaddr") == 0 && strcmp(host, "-") == 0))
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    snprintf(s->where, sizeof(s->where), "host=%s port=%s database=%s user=%s", host, port, dbname, user);
    PQconninfoFree(options);
}

/*
 * Opens a connection to s->uri. The keywords before "dbname" are defaults
 * that the URI overrides, because libpq keeps the last value of a repeated
 * keyword and expands the URI in dbname's place. Returns NULL after logging.
 */
static PGconn *connect_uri(pg_store_t *s, const char *op)
{
    static const char *const keywords[] = {"connect_timeout", "keepalives", "keepalives_idle",
                                           "keepalives_interval", "keepalives_count", "application_name",
                                           "dbname", NULL};
    const char *values[] = {"5", "1", "30", "10", "3", "pushaid", s->uri, NULL};
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    PGresult *res;

    if (conn == NULL) {
        out_of_memory(op);
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        int64_t now = clock_mono_ms();

        /* an outage fails every call, so the log gets one line per interval */
        if (s->failure_logged_mono_ms == 0 || now - s->failure_logged_mono_ms >= RECONNECT_LOG_INTERVAL_MS) {
            const char *message = PQerrorMessage(conn);
            char quoted[512];
            size_t len = strlen(message);

            while (len > 0 && message[len - 1] == '\n')
                len--;
            log_error("msg=\"connecting to the database failed; check the --db URI and that PostgreSQL is up\""
                      " db=postgresql op=%s %s error=%s",
                      op, s->where,
                      log_quote(quoted, sizeof(quoted), message, len));
            s->failure_logged_mono_ms = now;
        }
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, log_notice, s);

    /* Every statement is prepared once and run many times with parameters
     * that do not change the best plan, and planning the claim statement
     * costs more than running it on an empty queue (0.7 to 2 ms against 0.1
     * to 0.5 ms, measured with EXPLAIN ANALYZE on PostgreSQL 15), so plans
     * are made once per connection. The setting exists from PostgreSQL 12 on; older
     * servers keep their own choice. */
    res = PQexec(conn, "SET plan_cache_mode = force_generic_plan");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        log_info("msg=\"the database keeps choosing plans per execution: plan_cache_mode is unknown\""
                 " db=postgresql %s",
                 s->where);
    PQclear(res);
    return conn;
}

static store_rc_t prepare_statements(pg_store_t *s)
{
    for (int i = 0; i < STMT_COUNT; i++) {
        char name[16];
        PGresult *res;

        snprintf(name, sizeof(name), "s%d", i);
        res = PQprepare(s->conn, name, stmt_sql[i], 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            char quoted[1024];

            log_error("msg=\"preparing a statement failed\" db=postgresql sql=%s",
                      log_quote(quoted, sizeof(quoted), stmt_sql[i], strlen(stmt_sql[i])));
            db_error(s, res, "prepare");
            PQclear(res);
            return STORE_ERROR;
        }
        PQclear(res);
    }
    return STORE_OK;
}

/* Replaces a broken connection (prepared statements included). Fails at once
 * within RECONNECT_BACKOFF_MS of a failed attempt. */
static store_rc_t reconnect(pg_store_t *s, const char *op)
{
    int64_t now = clock_mono_ms();
    int was_connected = s->conn != NULL;

    s->in_transaction = 0;
    if (now < s->retry_after_mono_ms)
        return STORE_ERROR;
    if (s->conn != NULL) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
    s->conn = connect_uri(s, op);
    if (s->conn != NULL && prepare_statements(s) != STORE_OK) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
    if (s->conn == NULL) {
        s->retry_after_mono_ms = clock_mono_ms() + RECONNECT_BACKOFF_MS;
        return STORE_ERROR;
    }
    if (was_connected || s->failure_logged_mono_ms != 0)
        log_info("msg=\"reconnected to the database\" db=postgresql op=%s %s", op, s->where);
    s->failure_logged_mono_ms = 0;
    s->retry_after_mono_ms = 0;
    return STORE_OK;
}

/* Whether fd has something to read now (data, an error or the end). */
static int socket_readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int rc;

    do {
        rc = poll(&pfd, 1, 0);
    } while (rc < 0 && errno == EINTR);
    return rc > 0;
}

/*
 * Makes s->conn usable for the next call: resets it when libpq reports it
 * broken or when the server has closed it while it was idle (an idle
 * connection has nothing to read unless the server sent a message before
 * closing), and ends a transaction that an earlier failure left open.
 */
static store_rc_t connection_ready(pg_store_t *s, const char *op)
{
    if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK)
        return reconnect(s, op);

    /* the FATAL message and the end of the stream can arrive in two reads */
    for (int reads = 0; reads < 4 && socket_readable(PQsocket(s->conn)); reads++) {
        PGnotify *notify;

        if (!PQconsumeInput(s->conn) || PQstatus(s->conn) != CONNECTION_OK) {
            log_warn("msg=\"the database closed the connection, reconnecting\" db=postgresql op=%s %s", op,
                     s->where);
            return reconnect(s, op);
        }
        while ((notify = PQnotifies(s->conn)) != NULL)
            PQfreemem(notify);
    }
    s->in_transaction = 0;
    if (PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PGresult *res = PQexec(s->conn, "ROLLBACK");

        PQclear(res);
        if (PQstatus(s->conn) != CONNECTION_OK || PQtransactionStatus(s->conn) != PQTRANS_IDLE)
            return reconnect(s, op);
    }
    return STORE_OK;
}

/* ---- running statements ---- */

/* Whether running the statement twice has the effect of running it once, so
 * that it can be sent again on a new connection when the old one broke
 * outside a transaction. */
static int stmt_repeatable(stmt_id_t id)
{
    switch (id) {
    case STMT_PING:
    case STMT_ORG_FIND:
    case STMT_KEY_GET:
    case STMT_KEY_LIST:
    case STMT_KEY_REVOKED_AT:
    case STMT_AGENT_GET:
    case STMT_AGENTS_PAGE:
    case STMT_AGENTS_ALL:
    case STMT_RUN_GET:
    case STMT_RUNS_RENEW:
    case STMT_RUNS_CANCEL_REQUESTED:
    case STMT_RATELIMIT_PEEK:
        return 1;
    default:
        return 0;
    }
}

/*
 * Runs the prepared statement id with params (NULL for none). On success
 * returns STORE_OK with the result in *out (the caller PQclear()s it; out may
 * be NULL to discard it). A unique violation returns STORE_CONFLICT and a
 * foreign key violation STORE_NOT_FOUND, both unlogged; anything else is
 * logged and returns STORE_ERROR.
 */
static store_rc_t exec_stmt(pg_store_t *s, stmt_id_t id, const params_t *params, const char *op, PGresult **out)
{
    char name[16];
    PGresult *res;
    ExecStatusType status;
    const char *sqlstate;
    store_rc_t rc;

    if (out != NULL)
        *out = NULL;
    snprintf(name, sizeof(name), "s%d", (int)id);
    res = PQexecPrepared(s->conn, name, params != NULL ? params->n : 0, params != NULL ? params->values : NULL,
                         params != NULL ? params->lengths : NULL, params != NULL ? params->formats : NULL, 0);
    status = PQresultStatus(res);

    /* a connection that broke before a read reached the server (the
     * database restarted while the connection was idle) gets one retry */
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && PQstatus(s->conn) != CONNECTION_OK &&
        !s->in_transaction && stmt_repeatable(id)) {
        log_warn("msg=\"the database connection broke, reconnecting to retry\" db=postgresql op=%s %s", op,
                 s->where);
        PQclear(res);
        if (reconnect(s, op) != STORE_OK)
            return STORE_ERROR;
        res = PQexecPrepared(s->conn, name, params != NULL ? params->n : 0,
                             params != NULL ? params->values : NULL, params != NULL ? params->lengths : NULL,
                             params != NULL ? params->formats : NULL, 0);
        status = PQresultStatus(res);
    }
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        if (out != NULL)
            *out = res;
        else
            PQclear(res);
        return STORE_OK;
    }

    sqlstate = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (sqlstate == NULL)
        sqlstate = "";
    if (strcmp(sqlstate, "23505") == 0)
        rc = STORE_CONFLICT;
    else if (strcmp(sqlstate, "23503") == 0)
        rc = STORE_NOT_FOUND;
    else
        rc = db_error(s, res, op);
    PQclear(res);
    return rc;
}

/* Runs a statement that takes no parameters and returns nothing (BEGIN,
 * COMMIT, ROLLBACK) with the simple protocol. */
static store_rc_t exec_plain(pg_store_t *s, const char *sql, const char *op)
{
    PGresult *res = PQexec(s->conn, sql);
    store_rc_t rc = STORE_OK;

    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = db_error(s, res, op);
    PQclear(res);
    return rc;
}

static store_rc_t tx_begin(pg_store_t *s, const char *op)
{
    store_rc_t rc = exec_plain(s, "BEGIN", op);

    s->in_transaction = rc == STORE_OK;
    return rc;
}

/* Rolls back the open transaction, if there is one and the connection still
 * works. */
static void tx_rollback(pg_store_t *s, const char *op)
{
    s->in_transaction = 0;
    if (PQstatus(s->conn) != CONNECTION_OK || PQtransactionStatus(s->conn) == PQTRANS_IDLE)
        return;
    exec_plain(s, "ROLLBACK", op);
}

/* Commits; a commit that the server turns into a rollback (the transaction
 * had failed) is an error too. */
static store_rc_t tx_commit(pg_store_t *s, const char *op)
{
    PGresult *res = PQexec(s->conn, "COMMIT");
    store_rc_t rc = STORE_OK;

    s->in_transaction = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = db_error(s, res, op);
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        log_error("msg=\"the transaction was rolled back instead of committed\" db=postgresql op=%s %s", op,
                  s->where);
        rc = STORE_ERROR;
    }
    PQclear(res);
    tx_rollback(s, op);
    return rc;
}

/* The number of rows an UPDATE, INSERT or DELETE changed. */
static int64_t rows_changed(const PGresult *res)
{
    return strtoll(PQcmdTuples((PGresult *)res), NULL, 10);
}

/* ---- open, migrate, close ---- */

/* Applies the missing migrations in one transaction under the migration lock. */
static store_rc_t migrate(pg_store_t *s)
{
    PGresult *res = NULL;
    int version = 0;
    char sql[160];

    if (tx_begin(s, "migrate") != STORE_OK)
        return STORE_ERROR;
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%" PRId64 ")", MIGRATION_LOCK_KEY);
    /* SET LOCAL: no notice when schema_migrations exists already */
    if (exec_plain(s, sql, "migrate") != STORE_OK ||
        exec_plain(s, "SET LOCAL client_min_messages = warning", "migrate") != STORE_OK ||
        exec_plain(s,
                   "CREATE TABLE IF NOT EXISTS schema_migrations ("
                   "  version integer PRIMARY KEY, applied_at bigint NOT NULL)",
                   "migrate") != STORE_OK)
        goto fail;

    res = PQexec(s->conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error(s, res, "migrate");
        goto fail;
    }
    version = (int)get_int64(res, 0, 0);
    PQclear(res);
    res = NULL;
    if (version > SCHEMA_VERSION) {
        log_error("msg=\"the database was written by a newer pushaid: upgrade pushaid to open it\""
                  " db=postgresql schema_version=%d supported_version=%d",
                  version, SCHEMA_VERSION);
        goto fail;
    }

    for (int next = version + 1; next <= SCHEMA_VERSION; next++) {
        if (exec_plain(s, migrations[next - 1], "migrate") != STORE_OK)
            goto fail;
        snprintf(sql, sizeof(sql), "INSERT INTO schema_migrations (version, applied_at) VALUES (%d, %" PRId64 ")",
                 next, clock_now_ms());
        if (exec_plain(s, sql, "migrate") != STORE_OK)
            goto fail;
    }
    if (tx_commit(s, "migrate") != STORE_OK)
        return STORE_ERROR;
    if (version < SCHEMA_VERSION)
        log_info("msg=\"database schema migrated\" db=postgresql %s from_version=%d schema_version=%d", s->where,
                 version, SCHEMA_VERSION);
    return STORE_OK;

fail:
    PQclear(res);
    tx_rollback(s, "migrate");
    return STORE_ERROR;
}

static void close_listener(pg_store_t *s)
{
    if (s->listen_socket >= 0 && s->notify_epoll_fd >= 0)
        epoll_ctl(s->notify_epoll_fd, EPOLL_CTL_DEL, s->listen_socket, NULL);
    s->listen_socket = -1;
    if (s->listen_conn != NULL)
        PQfinish(s->listen_conn);
    s->listen_conn = NULL;
}

static void pg_close(store_t *store)
{
    pg_store_t *s = to_pg(store);

    close_listener(s);
    if (s->notify_epoll_fd >= 0)
        close(s->notify_epoll_fd);
    if (s->conn != NULL)
        PQfinish(s->conn);
    free(s->uri);
    free(s);
}

static const store_ops_t pg_ops;

store_rc_t store_pg_open(const char *uri, store_t **out)
{
    pg_store_t *s;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return out_of_memory("open");
    s->base.ops = &pg_ops;
    s->notify_epoll_fd = -1;
    s->listen_socket = -1;
    s->uri = strdup(uri);
    if (s->uri == NULL) {
        free(s);
        return out_of_memory("open");
    }
    describe_uri(s);

    s->conn = connect_uri(s, "open");
    if (s->conn == NULL || migrate(s) != STORE_OK || prepare_statements(s) != STORE_OK)
        goto fail;
    s->sweep_after_mono_ms = clock_mono_ms() + BUCKET_SWEEP_INTERVAL_MS;
    *out = &s->base;
    return STORE_OK;

fail:
    pg_close(&s->base);
    return STORE_ERROR;
}

static store_rc_t pg_ping(store_t *store)
{
    pg_store_t *s = to_pg(store);

    if (connection_ready(s, "ping") != STORE_OK)
        return STORE_ERROR;
    return exec_stmt(s, STMT_PING, NULL, "ping", NULL);
}

/* ---- organizations ---- */

static store_rc_t pg_org_create(store_t *store, const char *slug, const char *name, int64_t *org_id)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    if (connection_ready(s, "org_create") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, slug);
    param_text(&p, name != NULL ? name : slug);
    param_int(&p, clock_now_ms());
    rc = exec_stmt(s, STMT_ORG_INSERT, &p, "org_create", &res);
    if (rc != STORE_OK)
        return rc; /* STORE_CONFLICT: the slug is taken */
    if (org_id != NULL)
        *org_id = get_int64(res, 0, 0);
    PQclear(res);
    return STORE_OK;
}

static store_rc_t pg_org_find(store_t *store, const char *slug, int64_t *org_id)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    if (connection_ready(s, "org_find") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, slug);
    if (exec_stmt(s, STMT_ORG_FIND, &p, "org_find", &res) != STORE_OK)
        return STORE_ERROR;
    rc = PQntuples(res) > 0 ? STORE_OK : STORE_NOT_FOUND;
    if (rc == STORE_OK)
        *org_id = get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

/* ---- API keys ---- */

/* Fills out from row of a KEY_COLUMNS result. Returns 0, or -1 after logging. */
static int read_key(const PGresult *res, int row, api_key_t *out, const char *op)
{
    memset(out, 0, sizeof(*out));
    if (get_copy(res, row, 0, out->key_id, sizeof(out->key_id)) != 0) {
        log_error("msg=\"stored API key id is invalid\" db=postgresql op=%s", op);
        return -1;
    }
    out->org_id = get_int64(res, row, 1);
    if (get_strdup(res, row, 2, &out->label) != 0) {
        out_of_memory(op);
        return -1;
    }
    if (get_bytes(res, row, 3, out->secret_hash, KEY_HASH_LEN) != 0) {
        log_error("msg=\"stored secret hash has the wrong length\" db=postgresql op=%s key_id=%s", op, out->key_id);
        api_key_free(out);
        return -1;
    }
    out->created_at_ms = get_int64(res, row, 4);
    out->revoked_at_ms = get_int64(res, row, 5);
    out->agents_rev = get_int64(res, row, 6);
    return 0;
}

static store_rc_t pg_key_create(store_t *store, const api_key_t *key)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};

    if (connection_ready(s, "key_create") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, key->key_id);
    param_int(&p, key->org_id);
    param_text(&p, key->label);
    param_bytes(&p, key->secret_hash, KEY_HASH_LEN);
    param_int(&p, key->created_at_ms > 0 ? key->created_at_ms : clock_now_ms());
    param_int_opt(&p, key->revoked_at_ms, key->revoked_at_ms != 0);
    /* STORE_CONFLICT: the key id is taken; STORE_NOT_FOUND: no such org */
    return exec_stmt(s, STMT_KEY_INSERT, &p, "key_create", NULL);
}

static store_rc_t pg_key_get(store_t *store, const char *key_id, api_key_t *out)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    if (connection_ready(s, "key_get") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, key_id);
    if (exec_stmt(s, STMT_KEY_GET, &p, "key_get", &res) != STORE_OK)
        return STORE_ERROR;
    if (PQntuples(res) == 0)
        rc = STORE_NOT_FOUND;
    else
        rc = read_key(res, 0, out, "key_get") == 0 ? STORE_OK : STORE_ERROR;
    PQclear(res);
    return rc;
}

static store_rc_t pg_key_list(store_t *store, int64_t org_id, api_key_t **out, size_t *n)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    api_key_t *keys = NULL;
    int rows;
    int count = 0;

    *out = NULL;
    *n = 0;
    if (connection_ready(s, "key_list") != STORE_OK)
        return STORE_ERROR;
    param_int(&p, org_id);
    if (exec_stmt(s, STMT_KEY_LIST, &p, "key_list", &res) != STORE_OK)
        return STORE_ERROR;
    rows = PQntuples(res);
    if (rows > 0) {
        keys = calloc((size_t)rows, sizeof(*keys));
        if (keys == NULL) {
            PQclear(res);
            return out_of_memory("key_list");
        }
    }
    for (count = 0; count < rows; count++) {
        if (read_key(res, count, &keys[count], "key_list") != 0) {
            PQclear(res);
            store_key_list_free(keys, (size_t)count);
            return STORE_ERROR;
        }
    }
    PQclear(res);
    *out = keys;
    *n = (size_t)count;
    return STORE_OK;
}

/* After an update of key_id that changed nothing: STORE_CONFLICT when the
 * key is revoked, else STORE_NOT_FOUND; revoked_result replaces
 * STORE_CONFLICT. */
static store_rc_t key_unchanged_reason(pg_store_t *s, const char *key_id, store_rc_t revoked_result, const char *op)
{
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    param_text(&p, key_id);
    if (exec_stmt(s, STMT_KEY_REVOKED_AT, &p, op, &res) != STORE_OK)
        return STORE_ERROR;
    if (PQntuples(res) == 0)
        rc = STORE_NOT_FOUND;
    else
        rc = get_bool(res, 0, 0) ? revoked_result : STORE_NOT_FOUND;
    PQclear(res);
    return rc;
}

static store_rc_t pg_key_replace_secret(store_t *store, const char *key_id, const uint8_t hash[KEY_HASH_LEN])
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    int64_t changed;

    if (connection_ready(s, "key_replace_secret") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, key_id);
    param_bytes(&p, hash, KEY_HASH_LEN);
    if (exec_stmt(s, STMT_KEY_REPLACE_SECRET, &p, "key_replace_secret", &res) != STORE_OK)
        return STORE_ERROR;
    changed = rows_changed(res);
    PQclear(res);
    if (changed > 0)
        return STORE_OK;
    /* nothing changed, so the key is revoked or missing */
    return key_unchanged_reason(s, key_id, STORE_CONFLICT, "key_replace_secret");
}

static store_rc_t pg_key_revoke(store_t *store, const char *key_id, int64_t now_ms)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    int64_t changed;

    if (connection_ready(s, "key_revoke") != STORE_OK)
        return STORE_ERROR;
    /* a revoked_at of 0 would read back as an active key */
    param_text(&p, key_id);
    param_int(&p, now_ms > 0 ? now_ms : clock_now_ms());
    if (exec_stmt(s, STMT_KEY_REVOKE, &p, "key_revoke", &res) != STORE_OK)
        return STORE_ERROR;
    changed = rows_changed(res);
    PQclear(res);
    if (changed > 0)
        return STORE_OK;
    /* nothing changed, so the key was revoked before (which is fine) or is missing */
    return key_unchanged_reason(s, key_id, STORE_OK, "key_revoke");
}

/* ---- agents ---- */

/* Fills out from row of an AGENT_COLUMNS result. Returns 0, or -1 after
 * logging. */
static int read_agent(const PGresult *res, int row, agent_t *out, const char *op)
{
    memset(out, 0, sizeof(*out));
    out->id = get_int64(res, row, 0);
    out->org_id = get_int64(res, row, 1);
    out->published = get_bool(res, row, 4);
    if (get_strdup(res, row, 2, &out->name) != 0 || get_strdup(res, row, 3, &out->description) != 0 ||
        get_strdup(res, row, 5, &out->system) != 0 || get_strdup(res, row, 6, &out->prompt) != 0 ||
        get_strdup(res, row, 7, &out->provider) != 0 || get_strdup(res, row, 8, &out->model) != 0) {
        agent_free(out);
        out_of_memory(op);
        return -1;
    }
    out->has_temperature = !is_null(res, row, 9);
    out->temperature = out->has_temperature ? strtod(PQgetvalue(res, row, 9), NULL) : 0.0;
    out->max_tokens = get_int64(res, row, 10);
    out->timeout_ms = get_int64(res, row, 11);
    if (is_null(res, row, 12) || agent_params_from_text(PQgetvalue(res, row, 12), out) != 0) {
        log_error("msg=\"stored agent parameters are invalid or memory ran out\" db=postgresql op=%s"
                  " agent_id=%" PRId64,
                  op, out->id);
        agent_free(out);
        return -1;
    }
    return 0;
}

/* Reads every row of res into a new array of agents. */
static store_rc_t read_agents(const PGresult *res, int first_row, int rows, agent_t **out, size_t *n, const char *op)
{
    agent_t *agents;

    *out = NULL;
    *n = 0;
    if (rows <= first_row)
        return STORE_OK;
    agents = calloc((size_t)(rows - first_row), sizeof(*agents));
    if (agents == NULL)
        return out_of_memory(op);
    for (int row = first_row; row < rows; row++) {
        if (read_agent(res, row, &agents[row - first_row], op) != 0) {
            store_agent_list_free(agents, (size_t)(row - first_row));
            return STORE_ERROR;
        }
    }
    *out = agents;
    *n = (size_t)(rows - first_row);
    return STORE_OK;
}

static store_rc_t insert_agent(pg_store_t *s, int64_t org_id, agent_t *agent, int64_t now_ms)
{
    char *params_text = agent_params_to_text(agent);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    if (params_text == NULL)
        return out_of_memory("agents_import");
    param_int(&p, org_id);
    param_text(&p, agent->name);
    param_text(&p, agent->description);
    param_text(&p, agent->published ? "true" : "false");
    param_text(&p, agent->system);
    param_text(&p, agent->prompt);
    param_text(&p, agent->provider);
    param_text(&p, agent->model);
    param_double_opt(&p, agent->temperature, agent->has_temperature);
    param_int_opt(&p, agent->max_tokens, agent->max_tokens > 0);
    param_int_opt(&p, agent->timeout_ms, agent->timeout_ms > 0);
    param_text(&p, params_text);
    param_int(&p, now_ms);
    rc = exec_stmt(s, STMT_AGENT_INSERT, &p, "agents_import", &res);
    free(params_text);
    if (rc == STORE_CONFLICT) {
        log_error("msg=\"agent insert hit a unique constraint\" db=postgresql op=agents_import");
        return STORE_ERROR;
    }
    if (rc != STORE_OK)
        return rc; /* STORE_NOT_FOUND: no such org */
    agent->id = get_int64(res, 0, 0);
    PQclear(res);
    return STORE_OK;
}

static store_rc_t pg_agents_import(store_t *store, int64_t org_id, agent_t *agents, size_t n)
{
    pg_store_t *s = to_pg(store);
    int64_t now_ms = clock_now_ms();
    store_rc_t rc = STORE_OK;

    if (n == 0)
        return STORE_OK;
    if (connection_ready(s, "agents_import") != STORE_OK || tx_begin(s, "agents_import") != STORE_OK)
        return STORE_ERROR;
    for (size_t i = 0; i < n && rc == STORE_OK; i++)
        rc = insert_agent(s, org_id, &agents[i], now_ms);
    if (rc == STORE_OK)
        rc = tx_commit(s, "agents_import");
    else
        tx_rollback(s, "agents_import");
    if (rc != STORE_OK) {
        for (size_t i = 0; i < n; i++)
            agents[i].id = 0;
    }
    return rc;
}

static store_rc_t pg_agent_set_published(store_t *store, int64_t agent_id, int published)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    int64_t changed;

    if (connection_ready(s, "agent_set_published") != STORE_OK)
        return STORE_ERROR;
    param_int(&p, agent_id);
    param_text(&p, published ? "true" : "false");
    param_int(&p, clock_now_ms());
    if (exec_stmt(s, STMT_AGENT_SET_PUBLISHED, &p, "agent_set_published", &res) != STORE_OK)
        return STORE_ERROR;
    changed = rows_changed(res);
    PQclear(res);
    return changed > 0 ? STORE_OK : STORE_NOT_FOUND;
}

static store_rc_t pg_agent_get(store_t *store, int64_t org_id, int64_t agent_id, agent_t *out)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    if (connection_ready(s, "agent_get") != STORE_OK)
        return STORE_ERROR;
    param_int(&p, agent_id);
    param_int(&p, org_id);
    if (exec_stmt(s, STMT_AGENT_GET, &p, "agent_get", &res) != STORE_OK)
        return STORE_ERROR;
    if (PQntuples(res) == 0)
        rc = STORE_NOT_FOUND;
    else
        rc = read_agent(res, 0, out, "agent_get") == 0 ? STORE_OK : STORE_ERROR;
    PQclear(res);
    return rc;
}

static store_rc_t pg_agents_list(store_t *store, int64_t org_id, int64_t limit, int64_t offset, agent_t **out,
                                 size_t *n, int64_t *total)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    int rows;
    store_rc_t rc;

    *out = NULL;
    *n = 0;
    *total = 0;
    if (offset < 0)
        offset = 0;
    if (limit < 0)
        limit = 0;
    if (connection_ready(s, "agents_list") != STORE_OK)
        return STORE_ERROR;
    param_int(&p, org_id);
    param_int(&p, limit);
    param_int(&p, offset);
    if (exec_stmt(s, STMT_AGENTS_PAGE, &p, "agents_list", &res) != STORE_OK)
        return STORE_ERROR;

    /* the total is in the last column of every row; an empty page is one
     * row whose agent columns are NULL */
    rows = PQntuples(res);
    if (rows == 0) {
        PQclear(res);
        log_error("msg=\"agent page query returned no total\" db=postgresql op=agents_list");
        return STORE_ERROR;
    }
    *total = get_int64(res, 0, PQnfields(res) - 1);
    if (is_null(res, 0, 0))
        rows = 0;
    rc = read_agents(res, 0, rows, out, n, "agents_list");
    PQclear(res);
    if (rc != STORE_OK)
        *total = 0;
    return rc;
}

static store_rc_t pg_agents_list_all(store_t *store, int64_t org_id, agent_t **out, size_t *n)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    *out = NULL;
    *n = 0;
    if (connection_ready(s, "agents_list_all") != STORE_OK)
        return STORE_ERROR;
    param_int(&p, org_id);
    if (exec_stmt(s, STMT_AGENTS_ALL, &p, "agents_list_all", &res) != STORE_OK)
        return STORE_ERROR;
    rc = read_agents(res, 0, PQntuples(res), out, n, "agents_list_all");
    PQclear(res);
    return rc;
}

/* ---- runs ---- */

/* Fills out from row of a RUN_COLUMNS result. Returns 0, or -1 after
 * logging. */
static int read_run(const PGresult *res, int row, run_t *out, const char *op)
{
    memset(out, 0, sizeof(*out));
    if (get_copy(res, row, 0, out->id, sizeof(out->id)) != 0 ||
        get_copy(res, row, 3, out->key_id, sizeof(out->key_id)) != 0) {
        log_error("msg=\"stored run id or key id is invalid\" db=postgresql op=%s", op);
        return -1;
    }
    out->org_id = get_int64(res, row, 1);
    out->agent_id = get_int64(res, row, 2);
    if (run_status_parse(PQgetvalue(res, row, 4), &out->status) != 0) {
        log_error("msg=\"stored run status is invalid\" db=postgresql op=%s run_id=%s", op, out->id);
        return -1;
    }
    out->created_at_ms = get_int64(res, row, 5);
    out->started_at_ms = get_int64(res, row, 6);
    out->completed_at_ms = get_int64(res, row, 7);
    if (get_strdup(res, row, 8, &out->output) != 0 || get_strdup(res, row, 9, &out->error) != 0)
        goto nomem;
    out->has_usage = !is_null(res, row, 10);
    out->input_tokens = get_int64(res, row, 10);
    out->output_tokens = get_int64(res, row, 11);
    if (get_strdup(res, row, 12, &out->prompt) != 0 || get_strdup(res, row, 13, &out->system) != 0 ||
        get_strdup(res, row, 14, &out->provider) != 0 || get_strdup(res, row, 15, &out->model) != 0)
        goto nomem;
    out->has_temperature = !is_null(res, row, 16);
    out->temperature = out->has_temperature ? strtod(PQgetvalue(res, row, 16), NULL) : 0.0;
    out->max_tokens = get_int64(res, row, 17);
    out->timeout_ms = get_int64(res, row, 18);
    out->attempts = (int)get_int64(res, row, 19);
    return 0;

nomem:
    run_free(out);
    out_of_memory(op);
    return -1;
}

/*
 * Inside the caller's transaction, records (run->key_id, idempotency_key)
 * for run->id, unless the pair is taken. Returns STORE_OK when it was new;
 * for a pair used before, STORE_DUPLICATE (with the first run's id in
 * existing_id) for the same request_hash, else STORE_CONFLICT.
 */
static store_rc_t claim_idempotency_key(pg_store_t *s, const run_t *run, const char *idempotency_key,
                                        const uint8_t request_hash[32], char existing_id[RUN_ID_LEN + 1])
{
    params_t p = {0};
    PGresult *res;
    uint8_t stored_hash[32];
    store_rc_t rc;
    int inserted;

    param_text(&p, run->key_id);
    param_text(&p, idempotency_key);
    param_bytes(&p, request_hash, 32);
    param_text(&p, run->id);
    param_int(&p, clock_now_ms());
    if (exec_stmt(s, STMT_IDEM_INSERT, &p, "run_create", &res) != STORE_OK)
        return STORE_ERROR;
    inserted = PQntuples(res) > 0;
    PQclear(res);
    if (inserted)
        return STORE_OK;

    /* the pair was taken, by a request that has committed by now */
    p.n = 2;
    if (exec_stmt(s, STMT_IDEM_GET, &p, "run_create", &res) != STORE_OK)
        return STORE_ERROR;
    if (PQntuples(res) == 0) {
        log_error("msg=\"idempotency key not found after its insert conflicted\" db=postgresql op=run_create");
        rc = STORE_ERROR;
    } else if (get_bytes(res, 0, 0, stored_hash, sizeof(stored_hash)) != 0 ||
               memcmp(stored_hash, request_hash, sizeof(stored_hash)) != 0) {
        rc = STORE_CONFLICT;
    } else {
        rc = STORE_DUPLICATE;
        if (existing_id != NULL && get_copy(res, 0, 1, existing_id, RUN_ID_LEN + 1) != 0) {
            log_error("msg=\"stored run id is invalid\" db=postgresql op=run_create");
            rc = STORE_ERROR;
        }
    }
    PQclear(res);
    return rc;
}

/* Inside the caller's transaction, locks the key's row and returns
 * STORE_LIMIT when the key has max_in_flight runs pending or running. The
 * count is a statement of its own, so its snapshot is taken after the lock
 * was granted and includes the runs of the transaction that held it. */
static store_rc_t check_in_flight(pg_store_t *s, const char *key_id, int64_t max_in_flight)
{
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    param_text(&p, key_id);
    if (exec_stmt(s, STMT_KEY_LOCK, &p, "run_create", &res) != STORE_OK)
        return STORE_ERROR;
    rc = PQntuples(res) > 0 ? STORE_OK : STORE_NOT_FOUND;
    PQclear(res);
    if (rc != STORE_OK)
        return rc;

    param_int(&p, max_in_flight);
    if (exec_stmt(s, STMT_RUNS_IN_FLIGHT, &p, "run_create", &res) != STORE_OK)
        return STORE_ERROR;
    rc = get_int64(res, 0, 0) >= max_in_flight ? STORE_LIMIT : STORE_OK;
    PQclear(res);
    return rc;
}

static store_rc_t insert_run(pg_store_t *s, const run_t *run)
{
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;
    int64_t inserted;

    if (!is_uuid_text(run->id)) {
        log_error("msg=\"invalid run id: expected a UUID\" db=postgresql op=run_create");
        return STORE_ERROR;
    }
    param_text(&p, run->id);
    param_int(&p, run->org_id);
    param_int(&p, run->agent_id);
    param_text(&p, run->key_id);
    param_int(&p, run->created_at_ms > 0 ? run->created_at_ms : clock_now_ms());
    param_text(&p, run->prompt);
    param_text(&p, run->system);
    param_text(&p, run->provider);
    param_text(&p, run->model);
    param_double_opt(&p, run->temperature, run->has_temperature);
    param_int_opt(&p, run->max_tokens, run->max_tokens > 0);
    param_int_opt(&p, run->timeout_ms, run->timeout_ms > 0);
    rc = exec_stmt(s, STMT_RUN_INSERT, &p, "run_create", &res);
    if (rc != STORE_OK)
        return rc; /* STORE_CONFLICT: the run id is taken */
    inserted = rows_changed(res);
    PQclear(res);
    return inserted > 0 ? STORE_OK : STORE_NOT_FOUND; /* no such agent in the org, or no such key */
}

static store_rc_t pg_run_create(store_t *store, const run_t *run, int64_t max_in_flight, const char *idempotency_key,
                                const uint8_t request_hash[32], char existing_id[RUN_ID_LEN + 1])
{
    static const uint8_t no_hash[32];
    pg_store_t *s = to_pg(store);
    store_rc_t rc = STORE_OK;

    if (existing_id != NULL)
        existing_id[0] = '\0';
    if (request_hash == NULL)
        request_hash = no_hash;
    if (connection_ready(s, "run_create") != STORE_OK)
        return STORE_ERROR;

    /* the common case is one statement in autocommit mode */
    if (idempotency_key == NULL && max_in_flight <= 0)
        return insert_run(s, run);

    if (tx_begin(s, "run_create") != STORE_OK)
        return STORE_ERROR;
    /* a replay returns the first run even when the key is at its limit now */
    if (idempotency_key != NULL)
        rc = claim_idempotency_key(s, run, idempotency_key, request_hash, existing_id);
    if (rc == STORE_OK && max_in_flight > 0)
        rc = check_in_flight(s, run->key_id, max_in_flight);
    if (rc == STORE_OK)
        rc = insert_run(s, run);
    if (rc == STORE_OK)
        return tx_commit(s, "run_create");
    tx_rollback(s, "run_create");
    return rc;
}

static store_rc_t pg_run_get(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, run_t *out)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    if (!is_uuid_text(run_id))
        return STORE_NOT_FOUND;
    if (connection_ready(s, "run_get") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, run_id);
    param_int(&p, org_id);
    param_int(&p, agent_id);
    if (exec_stmt(s, STMT_RUN_GET, &p, "run_get", &res) != STORE_OK)
        return STORE_ERROR;
    if (PQntuples(res) == 0)
        rc = STORE_NOT_FOUND;
    else
        rc = read_run(res, 0, out, "run_get") == 0 ? STORE_OK : STORE_ERROR;
    PQclear(res);
    return rc;
}

/* Ends the expired runs that must not run again: cancelled when their
 * cancellation was requested, failed when they ran out of attempts. */
static store_rc_t end_expired_runs(pg_store_t *s, int64_t now_ms, int max_attempts)
{
    params_t p = {0};
    PGresult *res;

    param_int(&p, now_ms);
    param_int(&p, max_attempts);
    if (exec_stmt(s, STMT_RUNS_END_EXPIRED, &p, "runs_claim", &res) != STORE_OK)
        return STORE_ERROR;
    for (int row = 0; row < PQntuples(res); row++) {
        if (strcmp(PQgetvalue(res, row, 2), "failed") == 0)
            log_warn("msg=\"failed a run whose lease expired on every attempt\" run_id=%s attempts=%s",
                     PQgetvalue(res, row, 0), PQgetvalue(res, row, 1));
        else
            log_info("msg=\"cancelled a run whose engine stopped holding it\" run_id=%s",
                     PQgetvalue(res, row, 0));
    }
    PQclear(res);
    return STORE_OK;
}

typedef struct {
    run_t run;
    int64_t org_rank;        /* the turn in which its organization gets it */
    int64_t head_created_at; /* the organization's oldest claimable run orders the turn */
    int64_t head_seq;
} claimed_run_t;

static int compare_claimed(const void *a, const void *b)
{
    const claimed_run_t *x = a, *y = b;

    if (x->org_rank != y->org_rank)
        return x->org_rank < y->org_rank ? -1 : 1;
    if (x->head_created_at != y->head_created_at)
        return x->head_created_at < y->head_created_at ? -1 : 1;
    return x->head_seq < y->head_seq ? -1 : x->head_seq > y->head_seq;
}

/* Reads the claimed rows into *out in turn order (RETURNING has none). */
static store_rc_t read_claimed(const PGresult *res, run_t **out, size_t *n)
{
    int rows = PQntuples(res);
    claimed_run_t *claimed;
    run_t *runs;
    int count;

    if (rows == 0)
        return STORE_OK;
    claimed = calloc((size_t)rows, sizeof(*claimed));
    runs = calloc((size_t)rows, sizeof(*runs));
    if (claimed == NULL || runs == NULL) {
        free(claimed);
        free(runs);
        /* NOTE: the runs stay claimed until their lease expires, and then the
         * next claim takes them up again. */
        return out_of_memory("runs_claim");
    }
    for (count = 0; count < rows; count++) {
        if (read_run(res, count, &claimed[count].run, "runs_claim") != 0)
            break;
        claimed[count].org_rank = get_int64(res, count, RUN_COLUMN_COUNT);
        claimed[count].head_created_at = get_int64(res, count, RUN_COLUMN_COUNT + 1);
        claimed[count].head_seq = get_int64(res, count, RUN_COLUMN_COUNT + 2);
    }
    if (count < rows) {
        for (int i = 0; i < count; i++)
            run_free(&claimed[i].run);
        free(claimed);
        free(runs);
        return STORE_ERROR;
    }
    qsort(claimed, (size_t)rows, sizeof(*claimed), compare_claimed);
    for (int i = 0; i < rows; i++)
        runs[i] = claimed[i].run; /* ownership moves to runs */
    free(claimed);
    *out = runs;
    *n = (size_t)rows;
    return STORE_OK;
}

static int listener_repair(pg_store_t *s);

static store_rc_t pg_runs_claim(store_t *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                                int max_attempts, const store_claim_limits_t *limits, run_t **out, size_t *n)
{
    pg_store_t *s = to_pg(store);
    int capped = limits->max_per_org > 0 || limits->max_per_agent > 0;
    params_t p = {0};
    PGresult *res = NULL;
    store_rc_t rc;

    *out = NULL;
    *n = 0;
    listener_repair(s);
    if (limits->max == 0)
        return STORE_OK;
    if (max_attempts < 1)
        max_attempts = 1; /* every claim counts one attempt, so fewer than one cannot be honoured */
    if (connection_ready(s, "runs_claim") != STORE_OK)
        return STORE_ERROR;

    /* with caps, claims take turns across all nodes (see the design note) */
    if (capped) {
        if (tx_begin(s, "runs_claim") != STORE_OK)
            return STORE_ERROR;
        param_int(&p, CLAIM_LOCK_KEY);
        rc = exec_stmt(s, STMT_CLAIM_LOCK, &p, "runs_claim", NULL);
        if (rc != STORE_OK)
            goto out;
        p.n = 0;
    }

    rc = end_expired_runs(s, now_ms, max_attempts);
    if (rc != STORE_OK)
        goto out;
    param_int(&p, now_ms);
    param_text(&p, owner);
    param_int(&p, now_ms + lease_ms);
    param_int(&p, limits->max > INT64_MAX ? INT64_MAX : (int64_t)limits->max);
    param_int(&p, limits->max_per_org > 0 ? limits->max_per_org : 0);
    param_int(&p, limits->max_per_agent > 0 ? limits->max_per_agent : 0);
    rc = exec_stmt(s, STMT_RUNS_CLAIM, &p, "runs_claim", &res);
    if (rc != STORE_OK)
        goto out;
    if (capped)
        rc = tx_commit(s, "runs_claim");
    if (rc == STORE_OK)
        rc = read_claimed(res, out, n);

out:
    if (rc != STORE_OK && capped)
        tx_rollback(s, "runs_claim");
    PQclear(res);
    return rc == STORE_OK ? STORE_OK : STORE_ERROR;
}

static store_rc_t pg_runs_renew(store_t *store, const char *owner, int64_t lease_until_ms)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};

    if (connection_ready(s, "runs_renew") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, owner);
    param_int(&p, lease_until_ms);
    return exec_stmt(s, STMT_RUNS_RENEW, &p, "runs_renew", NULL);
}

static store_rc_t pg_run_complete(store_t *store, const char *run_id, const char *owner, const run_t *result)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    int64_t changed;

    if (result->status != RUN_SUCCEEDED && result->status != RUN_FAILED && result->status != RUN_CANCELLED) {
        log_error("msg=\"cannot complete a run with a status that is not final\" db=postgresql op=run_complete"
                  " run_id=%s status=%s",
                  run_id, run_status_name(result->status));
        return STORE_ERROR;
    }
    if (!is_uuid_text(run_id))
        return STORE_NOT_FOUND;
    if (connection_ready(s, "run_complete") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, run_id);
    param_text(&p, owner);
    param_text(&p, run_status_name(result->status));
    param_int(&p, result->completed_at_ms > 0 ? result->completed_at_ms : clock_now_ms());
    param_text(&p, result->output);
    param_text(&p, result->error);
    param_int_opt(&p, result->input_tokens, result->has_usage);
    param_int_opt(&p, result->output_tokens, result->has_usage);
    if (exec_stmt(s, STMT_RUN_COMPLETE, &p, "run_complete", &res) != STORE_OK)
        return STORE_ERROR;
    changed = rows_changed(res);
    PQclear(res);
    return changed > 0 ? STORE_OK : STORE_NOT_FOUND;
}

static store_rc_t pg_runs_release(store_t *store, const char *owner)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};

    if (connection_ready(s, "runs_release") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, owner);
    param_int(&p, clock_now_ms());
    return exec_stmt(s, STMT_RUNS_RELEASE, &p, "runs_release", NULL);
}

static store_rc_t pg_run_cancel(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, int64_t now_ms,
                                run_t *out)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    store_rc_t rc;

    memset(out, 0, sizeof(*out));
    if (!is_uuid_text(run_id))
        return STORE_NOT_FOUND;
    if (connection_ready(s, "run_cancel") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, run_id);
    param_int(&p, org_id);
    param_int(&p, agent_id);
    param_int(&p, now_ms > 0 ? now_ms : clock_now_ms());
    if (exec_stmt(s, STMT_RUN_CANCEL, &p, "run_cancel", &res) != STORE_OK)
        return STORE_ERROR;
    if (PQntuples(res) > 0) {
        rc = read_run(res, 0, out, "run_cancel") == 0 ? STORE_OK : STORE_ERROR;
        PQclear(res);
        return rc;
    }
    PQclear(res);

    /* nothing changed: the run is missing or already finished */
    p.n = 3;
    if (exec_stmt(s, STMT_RUN_GET, &p, "run_cancel", &res) != STORE_OK)
        return STORE_ERROR;
    if (PQntuples(res) == 0)
        rc = STORE_NOT_FOUND;
    else if (read_run(res, 0, out, "run_cancel") != 0)
        rc = STORE_ERROR;
    else
        rc = out->status == RUN_CANCELLED ? STORE_OK : STORE_CONFLICT;
    PQclear(res);
    return rc;
}

static store_rc_t pg_runs_cancel_requested(store_t *store, const char *owner, char (*ids)[RUN_ID_LEN + 1],
                                           size_t max, size_t *n)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    size_t count = 0;

    *n = 0;
    if (max == 0)
        return STORE_OK;
    if (connection_ready(s, "runs_cancel_requested") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, owner);
    param_int(&p, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    if (exec_stmt(s, STMT_RUNS_CANCEL_REQUESTED, &p, "runs_cancel_requested", &res) != STORE_OK)
        return STORE_ERROR;
    for (int row = 0; row < PQntuples(res) && count < max; row++) {
        if (get_copy(res, row, 0, ids[count], RUN_ID_LEN + 1) == 0)
            count++;
    }
    PQclear(res);
    *n = count;
    return STORE_OK;
}

/* ---- rate limits ---- */

/* Fills out like ratelimit.c does for a bucket left with tokens. */
static void fill_rate_result(double tokens, int allowed, int64_t per_minute, int64_t burst, ratelimit_result_t *out)
{
    double per_s = (double)per_minute / 60.0;

    out->allowed = allowed;
    out->limit = burst;
    out->remaining = tokens > 0 ? (int64_t)floor(tokens) : 0;
    out->reset_s = (int64_t)ceil(((double)burst - tokens) / per_s);
    if (out->reset_s < 0)
        out->reset_s = 0;
    out->retry_after_s = 0;
    if (!allowed) {
        out->retry_after_s = (int64_t)ceil((1.0 - tokens) / per_s);
        if (out->retry_after_s < 1)
            out->retry_after_s = 1;
    }
}

/* Deletes, at most once per BUCKET_SWEEP_INTERVAL_MS per connection, the
 * buckets that have refilled: a full bucket and a missing one mean the same. */
static void sweep_buckets(pg_store_t *s, int64_t now_ms)
{
    params_t p = {0};

    if (clock_mono_ms() < s->sweep_after_mono_ms)
        return;
    s->sweep_after_mono_ms = clock_mono_ms() + BUCKET_SWEEP_INTERVAL_MS;
    param_int(&p, now_ms);
    exec_stmt(s, STMT_RATELIMIT_SWEEP, &p, "ratelimit_sweep", NULL);
}

static store_rc_t pg_ratelimit_take(store_t *store, const char *name, int64_t per_minute, int64_t burst,
                                    int64_t now_ms, int take, ratelimit_result_t *out)
{
    pg_store_t *s = to_pg(store);
    params_t p = {0};
    PGresult *res;
    double tokens;
    int allowed;

    if (per_minute <= 0 || burst <= 0) {
        log_error("msg=\"rate limit needs a positive rate and burst\" db=postgresql per_minute=%" PRId64
                  " burst=%" PRId64,
                  per_minute, burst);
        return STORE_ERROR;
    }
    if (connection_ready(s, "ratelimit_take") != STORE_OK)
        return STORE_ERROR;
    param_text(&p, name);
    param_double(&p, (double)per_minute / 60000.0);
    param_int(&p, burst);
    param_int(&p, now_ms);
    if (!take) {
        if (exec_stmt(s, STMT_RATELIMIT_PEEK, &p, "ratelimit_peek", &res) != STORE_OK)
            return STORE_ERROR;
        tokens = PQntuples(res) > 0 ? strtod(PQgetvalue(res, 0, 0), NULL) : (double)burst;
        PQclear(res);
        fill_rate_result(tokens, tokens >= 1.0, per_minute, burst, out);
        return STORE_OK;
    }

    param_int(&p, 1);
    if (exec_stmt(s, STMT_RATELIMIT_TAKE, &p, "ratelimit_take", &res) != STORE_OK)
        return STORE_ERROR;
    tokens = strtod(PQgetvalue(res, 0, 0), NULL);
    allowed = get_bool(res, 0, 1);
    PQclear(res);
    fill_rate_result(tokens, allowed, per_minute, burst, out);
    sweep_buckets(s, now_ms);
    return STORE_OK;
}

/* ---- notifications ---- */

/* Opens the listening connection and puts its socket into the epoll set.
 * Fails at once within RECONNECT_BACKOFF_MS of a failed attempt. */
static int listener_open(pg_store_t *s)
{
    struct epoll_event event = {.events = EPOLLIN};
    PGresult *res;

    if (clock_mono_ms() < s->listen_retry_after_mono_ms)
        return -1;
    close_listener(s);
    s->listen_conn = connect_uri(s, "listen");
    if (s->listen_conn == NULL)
        goto fail;
    res = PQexec(s->listen_conn, "LISTEN " NOTIFY_CHANNEL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        PGconn *main_conn = s->conn;

        s->conn = s->listen_conn; /* db_error() reads the connection's message */
        db_error(s, res, "listen");
        s->conn = main_conn;
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    if (PQsetnonblocking(s->listen_conn, 1) != 0)
        goto fail;
    s->listen_socket = PQsocket(s->listen_conn);
    event.data.fd = s->listen_socket;
    if (epoll_ctl(s->notify_epoll_fd, EPOLL_CTL_ADD, s->listen_socket, &event) != 0) {
        log_error("msg=\"cannot watch the listening connection\" db=postgresql error=\"%s\"", strerror(errno));
        s->listen_socket = -1;
        goto fail;
    }
    s->listen_retry_after_mono_ms = 0;
    return 0;

fail:
    close_listener(s);
    s->listen_retry_after_mono_ms = clock_mono_ms() + RECONNECT_BACKOFF_MS;
    return -1;
}

/* Reopens the listening connection when store_notify_fd() was called and
 * the connection is gone. Returns 1 when it reopened one, because
 * notifications may have been missed and the caller should look for work,
 * else 0. */
static int listener_repair(pg_store_t *s)
{
    if (s->notify_epoll_fd < 0)
        return 0;
    if (s->listen_conn != NULL && PQstatus(s->listen_conn) == CONNECTION_OK)
        return 0;
    if (listener_open(s) != 0)
        return 0;
    log_info("msg=\"listening for notifications again\" db=postgresql %s", s->where);
    return 1;
}

static int pg_notify_fd(store_t *store)
{
    pg_store_t *s = to_pg(store);

    if (s->notify_epoll_fd < 0) {
        s->notify_epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (s->notify_epoll_fd < 0) {
            log_error("msg=\"cannot create the notification descriptor\" db=postgresql error=\"%s\"",
                      strerror(errno));
            return -1;
        }
        /* a failure here is repaired by the next drain or claim */
        listener_open(s);
    }
    return s->notify_epoll_fd;
}

static int pg_notifications_drain(store_t *store)
{
    pg_store_t *s = to_pg(store);
    struct epoll_event events[4];
    PGnotify *notify;
    int count = 0;

    if (s->notify_epoll_fd < 0)
        return 0;
    /* empties the inner ready list; readiness is level-triggered either way */
    while (epoll_wait(s->notify_epoll_fd, events, 4, 0) < 0 && errno == EINTR)
        ;
    if (s->listen_conn != NULL && PQstatus(s->listen_conn) == CONNECTION_OK) {
        if (!PQconsumeInput(s->listen_conn) || PQstatus(s->listen_conn) != CONNECTION_OK) {
            log_warn("msg=\"the listening connection to the database was lost\" db=postgresql %s", s->where);
            close_listener(s);
        }
    }
    if (s->listen_conn != NULL) {
        while ((notify = PQnotifies(s->listen_conn)) != NULL) {
            count++;
            PQfreemem(notify);
        }
    }
    return count + listener_repair(s);
}

static const store_ops_t pg_ops = {
    .close = pg_close,
    .ping = pg_ping,
    .org_create = pg_org_create,
    .org_find = pg_org_find,
    .key_create = pg_key_create,
    .key_get = pg_key_get,
    .key_list = pg_key_list,
    .key_replace_secret = pg_key_replace_secret,
    .key_revoke = pg_key_revoke,
    .agents_import = pg_agents_import,
    .agent_set_published = pg_agent_set_published,
    .agent_get = pg_agent_get,
    .agents_list = pg_agents_list,
    .agents_list_all = pg_agents_list_all,
    .run_create = pg_run_create,
    .run_get = pg_run_get,
    .runs_claim = pg_runs_claim,
    .runs_renew = pg_runs_renew,
    .run_complete = pg_run_complete,
    .runs_release = pg_runs_release,
    .run_cancel = pg_run_cancel,
    .runs_cancel_requested = pg_runs_cancel_requested,
    .ratelimit_take = pg_ratelimit_take,
    .notify_fd = pg_notify_fd,
    .notifications_drain = pg_notifications_drain,
};

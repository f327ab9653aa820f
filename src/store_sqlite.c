/*
 * store_sqlite.c - the store on one SQLite file.
 *
 * Schema (migration 1 in migrations[] below, with times in Unix milliseconds):
 *   orgs              one row per organization. agents_rev is the agent
 *                     revision of store.h: triggers on agents add 1 to it on
 *                     every insert, update and delete of one of its agents.
 *   api_keys          one row per key: the public key_id, the BLAKE2b hash of
 *                     the secret, revoked_at NULL while the key is active.
 *   agents            one row per agent. id (AUTOINCREMENT, so never reused)
 *                     is the id the API shows. params is the JSON text of the
 *                     parameter list (agent_params_to_text()). An unset
 *                     temperature, max_tokens or timeout_ms is NULL.
 *   runs              one row per run: the request as compiled at creation,
 *                     the state (status, attempts, lease_owner, lease_until)
 *                     and the result. id is the lowercase UUID text.
 *   idempotency_keys  (key_id, idem_key) -> the hash of the first request and
 *                     the run it created. NOTE: rows are never deleted yet.
 * Migration 2 adds runs.cancel_requested (1 once a cancellation was recorded)
 * and the indexes that fair claiming and cancellation read: pending runs by
 * organization, running runs by organization and by agent, and the running
 * runs marked for cancellation by owner.
 * Migrations are numbered by PRAGMA user_version. store_sqlite_open() applies
 * the missing ones, each in its own BEGIN IMMEDIATE transaction that first
 * reads user_version again, so when two processes open a fresh file at once
 * the second waits for the first and then skips what is already applied.
 *
 * Durability: journal_mode=WAL with synchronous=FULL, so every commit is
 * fsync'ed to the WAL before sqlite3_step() returns. A run that
 * store_run_create() reported stored survives kill -9 of the process and a
 * power loss (on storage that honours fsync). A new database file gets mode
 * 0600 and its directory is synced once.
 * NOTE: every write transaction pays its own fsync. Batching concurrent run
 * creations into one transaction (group commit) would need a batch call in
 * store.h.
 *
 * Transactions: a function that writes more than one statement, or reads
 * before it writes, runs in one BEGIN IMMEDIATE transaction. That takes the
 * write lock up front, so two connections never both hold a read snapshot
 * and then fail to upgrade it (SQLITE_BUSY_SNAPSHOT). These functions are
 * store_agents_import(), store_run_create() (idempotency check, in-flight
 * count, insert) and store_runs_claim() (end expired runs that cannot go on,
 * then pick and claim).
 * store_agents_list() reads its total and its page in one read transaction so
 * both come from the same snapshot. Everything else is a single statement in
 * autocommit mode. Waiting for another connection's lock is left to
 * busy_timeout (BUSY_TIMEOUT_MS), so contention from other processes shows up
 * as latency, and as STORE_ERROR only after that wait. Nothing is cached
 * between calls: a revoked key or a changed agent is seen by the next read on
 * any connection.
 *
 * Leases: store_runs_claim() sets a claimed run to running with lease_owner
 * and lease_until = now + lease_ms and adds 1 to attempts. The owner extends
 * the lease with store_runs_renew(). store_run_complete() changes the run only
 * while it is running under that owner. A running run whose lease_until has
 * passed is claimed again by the next store_runs_claim(), or failed there if
 * it already has max_attempts attempts, or cancelled there if its
 * cancellation was requested. store_runs_release() (graceful shutdown) sets
 * the owner's runs back to pending and takes back the attempt it counted,
 * because the run was not interrupted by a fault; a run marked for
 * cancellation is cancelled instead.
 *
 * Fair claiming: store_runs_claim() reads, inside its transaction, the
 * organizations that have claimable runs (a loose scan of runs_pending_org,
 * one index seek per organization, plus the runs whose lease expired), and
 * pages through each organization's runs oldest first. Organizations then
 * take turns: each next run goes to the organization with the fewest runs
 * running under a live lease in the whole database (plus those this call
 * picked), the one with the oldest claimable run among equals. So when all
 * start at zero they alternate run by run, and a slot that frees up while
 * one organization fills the others goes to an organization that waits with
 * fewer. A run is skipped when its organization or agent already has
 * max_per_org or max_per_agent runs running under a live lease. Within an
 * organization, runs taken over from an expired lease come before pending
 * runs, each group oldest first. The picked runs are then updated one by one
 * by rowid.
 *
 * Cancellation: store_run_cancel() is one UPDATE ... RETURNING. A pending run
 * becomes cancelled at once; a running run only gets cancel_requested = 1,
 * and its owner finds it with store_runs_cancel_requested() and completes it
 * as cancelled. A pending run with cancel_requested = 1 cannot arise (the
 * same statement cancels it), and the claim's index excludes it anyway.
 *
 * Statements: every statement is prepared once per connection at open
 * (stmt_sql[]) and reused: after each use it is reset and its bindings
 * cleared, which also ends the implicit read transaction of a SELECT.
 */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "clock.h"
#include "log.h"

#define BUSY_TIMEOUT_MS 5000
#define JOURNAL_MODE_RETRY_US 10000
/* WAL size kept on disk after a checkpoint resets it. */
#define JOURNAL_SIZE_LIMIT_BYTES (64 * 1024 * 1024)

/* ---- schema ---- */

static const char *const migrations[] = {
    /* 1: the initial schema */
    "CREATE TABLE orgs ("
    "  id INTEGER PRIMARY KEY,"
    "  slug TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  agents_rev INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE api_keys ("
    "  id INTEGER PRIMARY KEY,"
    "  key_id TEXT NOT NULL UNIQUE,"
    "  org_id INTEGER NOT NULL REFERENCES orgs(id),"
    "  label TEXT,"
    "  secret_hash BLOB NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  revoked_at INTEGER"
    ");"
    "CREATE INDEX api_keys_org ON api_keys(org_id, created_at);"
    "CREATE TABLE agents ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  org_id INTEGER NOT NULL REFERENCES orgs(id),"
    "  name TEXT NOT NULL,"
    "  description TEXT,"
    "  published INTEGER NOT NULL DEFAULT 0 CHECK (published IN (0, 1)),"
    "  system TEXT,"
    "  prompt TEXT NOT NULL,"
    "  provider TEXT NOT NULL,"
    "  model TEXT,"
    "  temperature REAL,"
    "  max_tokens INTEGER,"
    "  timeout_ms INTEGER,"
    "  params TEXT NOT NULL DEFAULT '[]',"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX agents_org_published ON agents(org_id, published, id);"
    "CREATE TRIGGER agents_rev_insert AFTER INSERT ON agents BEGIN"
    "  UPDATE orgs SET agents_rev = agents_rev + 1 WHERE id = NEW.org_id;"
    " END;"
    "CREATE TRIGGER agents_rev_update AFTER UPDATE ON agents BEGIN"
    "  UPDATE orgs SET agents_rev = agents_rev + 1 WHERE id IN (OLD.org_id, NEW.org_id);"
    " END;"
    "CREATE TRIGGER agents_rev_delete AFTER DELETE ON agents BEGIN"
    "  UPDATE orgs SET agents_rev = agents_rev + 1 WHERE id = OLD.org_id;"
    " END;"
    "CREATE TABLE runs ("
    "  id TEXT PRIMARY KEY,"
    "  org_id INTEGER NOT NULL REFERENCES orgs(id),"
    "  agent_id INTEGER NOT NULL REFERENCES agents(id),"
    "  key_id TEXT NOT NULL REFERENCES api_keys(key_id),"
    "  status TEXT NOT NULL"
    "    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER,"
    "  completed_at INTEGER,"
    "  output TEXT,"
    "  error TEXT,"
    "  input_tokens INTEGER,"
    "  output_tokens INTEGER,"
    "  prompt TEXT NOT NULL,"
    "  system TEXT,"
    "  provider TEXT NOT NULL,"
    "  model TEXT,"
    "  temperature REAL,"
    "  max_tokens INTEGER,"
    "  timeout_ms INTEGER,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  lease_owner TEXT,"
    "  lease_until INTEGER"
    ");"
    /* claiming: pending runs oldest first */
    "CREATE INDEX runs_pending ON runs(created_at) WHERE status = 'pending';"
    /* claiming and failing: running runs whose lease expired */
    "CREATE INDEX runs_lease_until ON runs(lease_until) WHERE status = 'running';"
    /* renew, complete and release by owner */
    "CREATE INDEX runs_lease_owner ON runs(lease_owner) WHERE lease_owner IS NOT NULL;"
    /* a key's runs in flight */
    "CREATE INDEX runs_key_status ON runs(key_id, status);"
    "CREATE TABLE idempotency_keys ("
    "  key_id TEXT NOT NULL REFERENCES api_keys(key_id),"
    "  idem_key TEXT NOT NULL,"
    "  request_hash BLOB NOT NULL,"
    "  run_id TEXT NOT NULL REFERENCES runs(id),"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (key_id, idem_key)"
    ") WITHOUT ROWID;",

    /* 2: cancellation, and the indexes of fair claiming */
    "ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0"
    "  CHECK (cancel_requested IN (0, 1));"
    /* replaced by runs_pending_org */
    "DROP INDEX runs_pending;"
    /* claiming: each organization's claimable pending runs, oldest first */
    "CREATE INDEX runs_pending_org ON runs(org_id, created_at) WHERE status = 'pending' AND cancel_requested = 0;"
    /* per-organization and per-agent limits: running runs with a live lease */
    "CREATE INDEX runs_running_org ON runs(org_id, lease_until) WHERE status = 'running';"
    "CREATE INDEX runs_running_agent ON runs(agent_id, lease_until) WHERE status = 'running';"
    /* an owner's runs to abort */
    "CREATE INDEX runs_cancel_requested ON runs(lease_owner) WHERE status = 'running' AND cancel_requested = 1;",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- prepared statements ---- */

typedef enum {
    STMT_BEGIN_IMMEDIATE,
    STMT_BEGIN_READ,
    STMT_COMMIT,
    STMT_ROLLBACK,
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
    STMT_AGENTS_COUNT,
    STMT_AGENTS_PAGE,
    STMT_AGENTS_ALL,
    STMT_IDEM_GET,
    STMT_IDEM_INSERT,
    STMT_RUNS_IN_FLIGHT,
    STMT_RUN_INSERT,
    STMT_RUN_GET,
    STMT_RUNS_CANCEL_EXPIRED,
    STMT_RUNS_FAIL_EXHAUSTED,
    STMT_RUNS_EXPIRED,
    STMT_PENDING_NEXT_ORG,
    STMT_PENDING_PAGE,
    STMT_ORG_RUNNING,
    STMT_AGENT_RUNNING,
    STMT_RUN_CLAIM,
    STMT_RUNS_RENEW,
    STMT_RUN_COMPLETE,
    STMT_RUNS_RELEASE,
    STMT_RUN_CANCEL,
    STMT_RUNS_CANCEL_REQUESTED,
    STMT_COUNT
} stmt_id_t;

/* Column lists shared by the statements that return whole rows. The column
 * indexes in read_key(), read_agent() and read_run() follow them. */
#define KEY_COLUMNS "k.key_id, k.org_id, k.label, k.secret_hash, k.created_at, k.revoked_at, o.agents_rev"
#define AGENT_COLUMNS                                                                           \
    "id, org_id, name, description, published, system, prompt, provider, model, temperature, " \
    "max_tokens, timeout_ms, params"
#define RUN_COLUMNS                                                                                  \
    "id, org_id, agent_id, key_id, status, created_at, started_at, completed_at, output, error, "    \
    "input_tokens, output_tokens, prompt, system, provider, model, temperature, max_tokens, "       \
    "timeout_ms, attempts"

static const char *const stmt_sql[STMT_COUNT] = {
    [STMT_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [STMT_BEGIN_READ] = "BEGIN",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_PING] = "SELECT 1 FROM orgs LIMIT 1",

    [STMT_ORG_INSERT] = "INSERT INTO orgs (slug, name, created_at) VALUES (?1, ?2, ?3)",
    [STMT_ORG_FIND] = "SELECT id FROM orgs WHERE slug = ?1",

    [STMT_KEY_INSERT] = "INSERT INTO api_keys (key_id, org_id, label, secret_hash, created_at, revoked_at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [STMT_KEY_GET] = "SELECT " KEY_COLUMNS " FROM api_keys k JOIN orgs o ON o.id = k.org_id"
                     " WHERE k.key_id = ?1",
    [STMT_KEY_LIST] = "SELECT " KEY_COLUMNS " FROM api_keys k JOIN orgs o ON o.id = k.org_id"
                      " WHERE k.org_id = ?1 ORDER BY k.created_at, k.id",
    [STMT_KEY_REPLACE_SECRET] = "UPDATE api_keys SET secret_hash = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
    [STMT_KEY_REVOKE] = "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
    [STMT_KEY_REVOKED_AT] = "SELECT revoked_at FROM api_keys WHERE key_id = ?1",

    [STMT_AGENT_INSERT] = "INSERT INTO agents (org_id, name, description, published, system, prompt, provider,"
                          " model, temperature, max_tokens, timeout_ms, params, created_at, updated_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
    [STMT_AGENT_SET_PUBLISHED] = "UPDATE agents SET published = ?2, updated_at = ?3 WHERE id = ?1",
    [STMT_AGENT_GET] = "SELECT " AGENT_COLUMNS " FROM agents WHERE id = ?1 AND org_id = ?2 AND published = 1",
    [STMT_AGENTS_COUNT] = "SELECT count(*) FROM agents WHERE org_id = ?1 AND published = 1",
    [STMT_AGENTS_PAGE] = "SELECT " AGENT_COLUMNS " FROM agents WHERE org_id = ?1 AND published = 1"
                         " ORDER BY id LIMIT ?2 OFFSET ?3",
    [STMT_AGENTS_ALL] = "SELECT " AGENT_COLUMNS " FROM agents WHERE org_id = ?1 ORDER BY id",

    [STMT_IDEM_GET] = "SELECT request_hash, run_id FROM idempotency_keys WHERE key_id = ?1 AND idem_key = ?2",
    [STMT_IDEM_INSERT] = "INSERT INTO idempotency_keys (key_id, idem_key, request_hash, run_id, created_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5)",
    /* counts at most ?2 rows: enough to compare with the limit */
    [STMT_RUNS_IN_FLIGHT] = "SELECT count(*) FROM (SELECT 1 FROM runs"
                            " WHERE key_id = ?1 AND status IN ('pending', 'running') LIMIT ?2)",
    [STMT_RUN_INSERT] = "INSERT INTO runs (id, org_id, agent_id, key_id, status, created_at, prompt, system,"
                        " provider, model, temperature, max_tokens, timeout_ms, attempts)"
                        " VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)",
    [STMT_RUN_GET] = "SELECT " RUN_COLUMNS " FROM runs WHERE id = ?1 AND org_id = ?2 AND agent_id = ?3",

    /* ?1 now: expired runs whose cancellation was requested end cancelled */
    [STMT_RUNS_CANCEL_EXPIRED] =
        "UPDATE runs SET status = 'cancelled', completed_at = ?1, lease_owner = NULL, lease_until = NULL"
        " WHERE status = 'running' AND lease_until < ?1 AND cancel_requested = 1",
    /* ?1 now, ?2 max_attempts */
    [STMT_RUNS_FAIL_EXHAUSTED] =
        "UPDATE runs SET status = 'failed', completed_at = ?1, lease_owner = NULL, lease_until = NULL,"
        " error = CASE attempts WHEN 1"
        "   THEN 'The run was interrupted once before it could finish. Create a new run to try again.'"
        "   ELSE printf('The run was interrupted %d times before it could finish."
        " Create a new run to try again.', attempts) END"
        " WHERE status = 'running' AND lease_until < ?1 AND attempts >= ?2"
        " RETURNING id, attempts",
    /* ?1 now: running runs whose owner stopped renewing, to take over */
    [STMT_RUNS_EXPIRED] = "SELECT rowid, org_id, agent_id, created_at FROM runs"
                          " WHERE status = 'running' AND lease_until < ?1 ORDER BY created_at, rowid",
    /* ?1 the previous org id: the next organization with a claimable pending
     * run, one seek on runs_pending_org */
    [STMT_PENDING_NEXT_ORG] = "SELECT org_id FROM runs WHERE status = 'pending' AND cancel_requested = 0"
                              " AND org_id > ?1 ORDER BY org_id LIMIT 1",
    /* ?1 org, (?2 created_at, ?3 rowid) the last run read, ?4 page size */
    [STMT_PENDING_PAGE] = "SELECT rowid, agent_id, created_at FROM runs"
                          " WHERE status = 'pending' AND cancel_requested = 0 AND org_id = ?1"
                          " AND (created_at, rowid) > (?2, ?3) ORDER BY created_at, rowid LIMIT ?4",
    /* ?1 org or agent, ?2 now: runs running under a live lease */
    [STMT_ORG_RUNNING] = "SELECT count(*) FROM runs WHERE status = 'running' AND org_id = ?1 AND lease_until >= ?2",
    [STMT_AGENT_RUNNING] =
        "SELECT count(*) FROM runs WHERE status = 'running' AND agent_id = ?1 AND lease_until >= ?2",
    /* ?1 now, ?2 owner, ?3 lease_until, ?4 rowid. now is read before the
     * write lock is taken, so a run committed meanwhile can be newer. */
    [STMT_RUN_CLAIM] =
        "UPDATE runs SET status = 'running', attempts = attempts + 1,"
        " started_at = coalesce(started_at, max(?1, created_at)),"
        " lease_owner = ?2, lease_until = ?3 WHERE rowid = ?4 RETURNING " RUN_COLUMNS,
    [STMT_RUNS_RENEW] = "UPDATE runs SET lease_until = ?2 WHERE lease_owner = ?1 AND status = 'running'",
    [STMT_RUN_COMPLETE] = "UPDATE runs SET status = ?3, completed_at = ?4, output = ?5, error = ?6,"
                          " input_tokens = ?7, output_tokens = ?8, lease_owner = NULL, lease_until = NULL"
                          " WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
    /* ?1 owner, ?2 now; a run marked for cancellation ends cancelled instead */
    [STMT_RUNS_RELEASE] =
        "UPDATE runs SET status = CASE cancel_requested WHEN 1 THEN 'cancelled' ELSE 'pending' END,"
        " started_at = CASE cancel_requested WHEN 1 THEN started_at ELSE NULL END,"
        " completed_at = CASE cancel_requested WHEN 1 THEN ?2 ELSE NULL END,"
        " attempts = CASE cancel_requested WHEN 1 THEN attempts ELSE max(attempts - 1, 0) END,"
        " lease_owner = NULL, lease_until = NULL"
        " WHERE lease_owner = ?1 AND status = 'running'",
    /* ?1 id, ?2 org, ?3 agent, ?4 now. The SET expressions read the old
     * status: a pending run ends cancelled, a running one is only marked. */
    [STMT_RUN_CANCEL] =
        "UPDATE runs SET cancel_requested = 1,"
        " status = CASE status WHEN 'pending' THEN 'cancelled' ELSE status END,"
        " completed_at = CASE status WHEN 'pending' THEN max(?4, created_at) ELSE completed_at END"
        " WHERE id = ?1 AND org_id = ?2 AND agent_id = ?3 AND status IN ('pending', 'running')"
        " RETURNING " RUN_COLUMNS,
    /* ?1 owner, ?2 max */
    [STMT_RUNS_CANCEL_REQUESTED] = "SELECT id FROM runs WHERE lease_owner = ?1 AND status = 'running'"
                                   " AND cancel_requested = 1 LIMIT ?2",
};

typedef struct {
    store_t base; /* first, so a store_t * is a sqlite_store_t * */
    sqlite3 *db;
    sqlite3_stmt *stmts[STMT_COUNT];
} sqlite_store_t;

static const store_ops_t sqlite_ops;

static sqlite_store_t *to_sqlite(store_t *store)
{
    return (sqlite_store_t *)store;
}

/* ---- errors ---- */

/* Logs the connection's current error for op and returns STORE_ERROR. */
static store_rc_t db_error(sqlite_store_t *s, const char *op)
{
    const char *message = sqlite3_errmsg(s->db);
    char quoted[512];

    log_error("msg=\"database operation failed\" db=sqlite op=%s code=%d error=%s", op,
              sqlite3_extended_errcode(s->db), log_quote(quoted, sizeof(quoted), message, strlen(message)));
    return STORE_ERROR;
}

static store_rc_t out_of_memory(const char *op)
{
    log_error("msg=\"out of memory\" db=sqlite op=%s", op);
    return STORE_ERROR;
}

/* ---- statement helpers ---- */

static sqlite3_stmt *stmt_get(sqlite_store_t *s, stmt_id_t id)
{
    return s->stmts[id];
}

/* Makes st ready for its next use and ends its read of the database. */
static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Steps st to its end, then resets it. Returns SQLITE_DONE on success, else
 * the error code, with the message still in sqlite3_errmsg(). */
static int stmt_exec(sqlite3_stmt *st)
{
    int rc;

    do {
        rc = sqlite3_step(st);
    } while (rc == SQLITE_ROW);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int bind_text(sqlite3_stmt *st, int index, const char *text)
{
    if (text == NULL)
        return sqlite3_bind_null(st, index);
    return sqlite3_bind_text(st, index, text, -1, SQLITE_STATIC);
}

/* Binds value, or NULL when present is 0. */
static int bind_int64_opt(sqlite3_stmt *st, int index, int64_t value, int present)
{
    if (!present)
        return sqlite3_bind_null(st, index);
    return sqlite3_bind_int64(st, index, value);
}

static int bind_double_opt(sqlite3_stmt *st, int index, double value, int present)
{
    if (!present)
        return sqlite3_bind_null(st, index);
    return sqlite3_bind_double(st, index, value);
}

/* Copies a text column into *out (NULL for SQL NULL). Returns 0, or -1 when
 * memory ran out. */
static int column_strdup(sqlite3_stmt *st, int col, char **out)
{
    const unsigned char *text;
    int len;

    *out = NULL;
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return 0;
    text = sqlite3_column_text(st, col);
    if (text == NULL)
        return -1;
    len = sqlite3_column_bytes(st, col);
    *out = malloc((size_t)len + 1);
    if (*out == NULL)
        return -1;
    memcpy(*out, text, (size_t)len);
    (*out)[len] = '\0';
    return 0;
}

/* Copies a text column into a fixed buffer of size bytes. Returns 0, or -1
 * when the column is NULL or does not fit. */
static int column_copy(sqlite3_stmt *st, int col, char *buf, size_t size)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    size_t len;

    buf[0] = '\0';
    if (text == NULL)
        return -1;
    len = (size_t)sqlite3_column_bytes(st, col);
    if (len >= size)
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    return 0;
}

static int64_t column_int64_or_zero(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, col);
}

/* ---- transactions ---- */

static store_rc_t tx_begin(sqlite_store_t *s, stmt_id_t begin, const char *op)
{
    if (stmt_exec(stmt_get(s, begin)) != SQLITE_DONE)
        return db_error(s, op);
    return STORE_OK;
}

/* Rolls back the open transaction, if SQLite has not already done so. */
static void tx_rollback(sqlite_store_t *s, const char *op)
{
    if (sqlite3_get_autocommit(s->db))
        return;
    if (stmt_exec(stmt_get(s, STMT_ROLLBACK)) != SQLITE_DONE)
        db_error(s, op);
}

static store_rc_t tx_commit(sqlite_store_t *s, const char *op)
{
    if (stmt_exec(stmt_get(s, STMT_COMMIT)) != SQLITE_DONE) {
        store_rc_t rc = db_error(s, op);

        tx_rollback(s, op);
        return rc;
    }
    return STORE_OK;
}

/* ---- open, migrate, close ---- */

/* Syncs the directory of path so that a new file's name survives a power
 * loss. SQLite does the same for its WAL file and ignores a failure, so a
 * failure here is only logged. */
static void sync_parent_directory(const char *path)
{
    char *copy = strdup(path);
    int fd = -1;

    if (copy != NULL)
        fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        log_warn("msg=\"cannot sync the directory of the new database file\" error=\"%s\"", strerror(errno));
    if (fd >= 0)
        close(fd);
    free(copy);
}

/*
 * Creates path with mode 0600 when it does not exist, so the database (and
 * the -wal and -shm files, which SQLite gives the same mode) is private to
 * the server's user. Names that SQLite interprets itself (":memory:", "file:"
 * URIs) are left to it. Returns 0, or -1 after logging.
 */
static int create_private_file(const char *path)
{
    int fd;

    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
        return 0;
    do {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0 && errno == EEXIST)
        return 0;
    if (fd < 0) {
        int err = errno;
        char quoted[512];

        log_error("msg=\"cannot create the database file\" path=%s error=\"%s\"",
                  log_quote(quoted, sizeof(quoted), path, strlen(path)), strerror(err));
        return -1;
    }
    close(fd);
    sync_parent_directory(path);
    return 0;
}

static store_rc_t exec_sql(sqlite_store_t *s, const char *sql, const char *op)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(s, op);
    return STORE_OK;
}

static int read_user_version(sqlite_store_t *s, int *version)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *version = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK)
        db_error(s, "read_schema_version");
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : -1;
}

static store_rc_t check_version_known(int version)
{
    if (version > SCHEMA_VERSION) {
        log_error("msg=\"the database was written by a newer pushaid: upgrade pushaid to open it\""
                  " schema_version=%d supported_version=%d",
                  version, SCHEMA_VERSION);
        return STORE_ERROR;
    }
    return STORE_OK;
}

/* Applies the migrations after the file's user_version, each in one
 * BEGIN IMMEDIATE transaction. */
static store_rc_t migrate(sqlite_store_t *s)
{
    int version;

    if (read_user_version(s, &version) != 0)
        return STORE_ERROR;
    if (check_version_known(version) != STORE_OK)
        return STORE_ERROR;

    while (version < SCHEMA_VERSION) {
        char set_version[64];
        int next;

        if (exec_sql(s, "BEGIN IMMEDIATE", "migrate") != STORE_OK)
            return STORE_ERROR;

        /* another process may have migrated while this one waited for the lock */
        if (read_user_version(s, &version) != 0 || check_version_known(version) != STORE_OK)
            goto fail;
        if (version >= SCHEMA_VERSION) {
            exec_sql(s, "ROLLBACK", "migrate");
            break;
        }

        next = version + 1;
        snprintf(set_version, sizeof(set_version), "PRAGMA user_version = %d", next);
        if (exec_sql(s, migrations[next - 1], "migrate") != STORE_OK ||
            exec_sql(s, set_version, "migrate") != STORE_OK || exec_sql(s, "COMMIT", "migrate") != STORE_OK)
            goto fail;
        log_info("msg=\"database schema migrated\" db=sqlite schema_version=%d", next);
        version = next;
    }
    return STORE_OK;

fail:
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return STORE_ERROR;
}

static int copy_journal_mode(void *mode_out, int n_columns, char **values, char **names)
{
    char *out = mode_out;

    if (n_columns > 0 && values[0] != NULL)
        snprintf(out, 16, "%s", values[0]);
    return 0;
}

static store_rc_t configure(sqlite_store_t *s, const char *path)
{
    char mode[16] = "";
    char pragmas[256];
    int64_t deadline_ms;
    int rc;

    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);

    /* Switching a new file to WAL needs an exclusive lock. When several
     * processes open the file at once, SQLite can return SQLITE_BUSY here
     * without calling the busy handler (it would deadlock otherwise), so the
     * wait is done here, up to the same timeout. */
    deadline_ms = clock_mono_ms() + BUSY_TIMEOUT_MS;
    while ((rc = sqlite3_exec(s->db, "PRAGMA journal_mode = WAL", copy_journal_mode, mode, NULL)) != SQLITE_OK) {
        if ((rc & 0xff) != SQLITE_BUSY || clock_mono_ms() >= deadline_ms)
            return db_error(s, "set_journal_mode");
        usleep(JOURNAL_MODE_RETRY_US);
    }
    if (strcmp(mode, "wal") != 0 && strcmp(path, ":memory:") != 0) {
        log_error("msg=\"the database cannot use WAL journaling\" db=sqlite journal_mode=%s", mode);
        return STORE_ERROR;
    }

    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = %d;",
             JOURNAL_SIZE_LIMIT_BYTES);
    return exec_sql(s, pragmas, "configure");
}

static store_rc_t prepare_statements(sqlite_store_t *s)
{
    for (int i = 0; i < STMT_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[i], NULL) !=
            SQLITE_OK) {
            const char *message = sqlite3_errmsg(s->db);
            char quoted_sql[1024], quoted_message[256];

            log_error("msg=\"cannot prepare a statement\" db=sqlite sql=%s error=%s",
                      log_quote(quoted_sql, sizeof(quoted_sql), stmt_sql[i], strlen(stmt_sql[i])),
                      log_quote(quoted_message, sizeof(quoted_message), message, strlen(message)));
            return STORE_ERROR;
        }
    }
    return STORE_OK;
}

static void sqlite_close(store_t *store)
{
    sqlite_store_t *s = to_sqlite(store);

    for (int i = 0; i < STMT_COUNT; i++)
        sqlite3_finalize(s->stmts[i]);
    if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
        db_error(s, "close");
    free(s);
}

store_rc_t store_sqlite_open(const char *path, store_t **out)
{
    sqlite_store_t *s;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return out_of_memory("open");
    s->base.ops = &sqlite_ops;

    if (create_private_file(path) != 0)
        goto fail;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        /* sqlite3_open_v2() leaves db NULL only when memory ran out */
        const char *message = s->db != NULL ? sqlite3_errmsg(s->db) : "out of memory";
        char quoted_path[512], quoted_message[256];

        log_error("msg=\"cannot open the database\" db=sqlite path=%s error=%s",
                  log_quote(quoted_path, sizeof(quoted_path), path, strlen(path)),
                  log_quote(quoted_message, sizeof(quoted_message), message, strlen(message)));
        goto fail;
    }
    if (configure(s, path) != STORE_OK || migrate(s) != STORE_OK || prepare_statements(s) != STORE_OK)
        goto fail;

    *out = &s->base;
    return STORE_OK;

fail:
    sqlite_close(&s->base);
    return STORE_ERROR;
}

static store_rc_t sqlite_ping(store_t *store)
{
    sqlite_store_t *s = to_sqlite(store);
    int rc = stmt_exec(stmt_get(s, STMT_PING));

    return rc == SQLITE_DONE ? STORE_OK : db_error(s, "ping");
}

/* ---- organizations ---- */

static store_rc_t sqlite_org_create(store_t *store, const char *slug, const char *name, int64_t *org_id)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_ORG_INSERT);
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, slug);
    rc |= bind_text(st, 2, name != NULL ? name : slug);
    rc |= sqlite3_bind_int64(st, 3, clock_now_ms());
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "org_create");
    }
    rc = stmt_exec(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        return STORE_CONFLICT;
    if (rc != SQLITE_DONE)
        return db_error(s, "org_create");
    if (org_id != NULL)
        *org_id = sqlite3_last_insert_rowid(s->db);
    return STORE_OK;
}

static store_rc_t sqlite_org_find(store_t *store, const char *slug, int64_t *org_id)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_ORG_FIND);
    store_rc_t result;
    int rc;

    if (bind_text(st, 1, slug) != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "org_find");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *org_id = sqlite3_column_int64(st, 0);
        result = STORE_OK;
    } else if (rc == SQLITE_DONE) {
        result = STORE_NOT_FOUND;
    } else {
        result = db_error(s, "org_find");
    }
    stmt_done(st);
    return result;
}

/* ---- API keys ---- */

/* Fills out from a row of KEY_COLUMNS. Returns 0, or -1 after logging. */
static int read_key(sqlite3_stmt *st, api_key_t *out, const char *op)
{
    const void *hash;

    memset(out, 0, sizeof(*out));
    if (column_copy(st, 0, out->key_id, sizeof(out->key_id)) != 0) {
        log_error("msg=\"stored API key id is invalid\" db=sqlite op=%s", op);
        return -1;
    }
    out->org_id = sqlite3_column_int64(st, 1);
    if (column_strdup(st, 2, &out->label) != 0) {
        out_of_memory(op);
        return -1;
    }
    hash = sqlite3_column_blob(st, 3);
    if (hash == NULL || sqlite3_column_bytes(st, 3) != KEY_HASH_LEN) {
        log_error("msg=\"stored secret hash has the wrong length\" db=sqlite op=%s key_id=%s", op, out->key_id);
        api_key_free(out);
        return -1;
    }
    memcpy(out->secret_hash, hash, KEY_HASH_LEN);
    out->created_at_ms = sqlite3_column_int64(st, 4);
    out->revoked_at_ms = column_int64_or_zero(st, 5);
    out->agents_rev = sqlite3_column_int64(st, 6);
    return 0;
}

static store_rc_t sqlite_key_create(store_t *store, const api_key_t *key)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_KEY_INSERT);
    int64_t created_at_ms = key->created_at_ms > 0 ? key->created_at_ms : clock_now_ms();
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, key->key_id);
    rc |= sqlite3_bind_int64(st, 2, key->org_id);
    rc |= bind_text(st, 3, key->label);
    rc |= sqlite3_bind_blob(st, 4, key->secret_hash, KEY_HASH_LEN, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(st, 5, created_at_ms);
    rc |= bind_int64_opt(st, 6, key->revoked_at_ms, key->revoked_at_ms != 0);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "key_create");
    }
    rc = stmt_exec(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        return STORE_CONFLICT;
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return STORE_NOT_FOUND; /* no such org */
    if (rc != SQLITE_DONE)
        return db_error(s, "key_create");
    return STORE_OK;
}

static store_rc_t sqlite_key_get(store_t *store, const char *key_id, api_key_t *out)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_KEY_GET);
    store_rc_t result;
    int rc;

    if (bind_text(st, 1, key_id) != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "key_get");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        result = read_key(st, out, "key_get") == 0 ? STORE_OK : STORE_ERROR;
    else if (rc == SQLITE_DONE)
        result = STORE_NOT_FOUND;
    else
        result = db_error(s, "key_get");
    stmt_done(st);
    return result;
}

static store_rc_t sqlite_key_list(store_t *store, int64_t org_id, api_key_t **out, size_t *n)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_KEY_LIST);
    api_key_t *keys = NULL;
    size_t count = 0, capacity = 0;
    store_rc_t result = STORE_OK;
    int rc;

    *out = NULL;
    *n = 0;
    if (sqlite3_bind_int64(st, 1, org_id) != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "key_list");
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == capacity) {
            size_t new_capacity = capacity ? capacity * 2 : 8;
            api_key_t *grown = realloc(keys, new_capacity * sizeof(*grown));

            if (grown == NULL) {
                result = out_of_memory("key_list");
                break;
            }
            keys = grown;
            capacity = new_capacity;
        }
        if (read_key(st, &keys[count], "key_list") != 0) {
            result = STORE_ERROR;
            break;
        }
        count++;
    }
    if (result == STORE_OK && rc != SQLITE_DONE)
        result = db_error(s, "key_list");
    stmt_done(st);

    if (result != STORE_OK) {
        store_key_list_free(keys, count);
        return result;
    }
    *out = keys;
    *n = count;
    return STORE_OK;
}

typedef enum { KEY_MISSING, KEY_ACTIVE, KEY_REVOKED } key_state_t;

/* Reads whether key_id exists and is revoked. */
static store_rc_t read_key_state(sqlite_store_t *s, const char *key_id, key_state_t *state, const char *op)
{
    sqlite3_stmt *st = stmt_get(s, STMT_KEY_REVOKED_AT);
    store_rc_t result = STORE_OK;
    int rc;

    if (bind_text(st, 1, key_id) != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, op);
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *state = sqlite3_column_type(st, 0) == SQLITE_NULL ? KEY_ACTIVE : KEY_REVOKED;
    else if (rc == SQLITE_DONE)
        *state = KEY_MISSING;
    else
        result = db_error(s, op);
    stmt_done(st);
    return result;
}

static store_rc_t sqlite_key_replace_secret(store_t *store, const char *key_id, const uint8_t hash[KEY_HASH_LEN])
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_KEY_REPLACE_SECRET);
    key_state_t state;
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, key_id);
    rc |= sqlite3_bind_blob(st, 2, hash, KEY_HASH_LEN, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "key_replace_secret");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "key_replace_secret");
    if (sqlite3_changes(s->db) > 0)
        return STORE_OK;

    /* nothing changed, so the key is revoked or missing */
    if (read_key_state(s, key_id, &state, "key_replace_secret") != STORE_OK)
        return STORE_ERROR;
    return state == KEY_REVOKED ? STORE_CONFLICT : STORE_NOT_FOUND;
}

static store_rc_t sqlite_key_revoke(store_t *store, const char *key_id, int64_t now_ms)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_KEY_REVOKE);
    key_state_t state;
    int rc = SQLITE_OK;

    /* a revoked_at of 0 would read back as an active key */
    rc |= bind_text(st, 1, key_id);
    rc |= sqlite3_bind_int64(st, 2, now_ms > 0 ? now_ms : clock_now_ms());
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "key_revoke");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "key_revoke");
    if (sqlite3_changes(s->db) > 0)
        return STORE_OK;

    /* nothing changed, so the key was revoked before (which is fine) or is missing */
    if (read_key_state(s, key_id, &state, "key_revoke") != STORE_OK)
        return STORE_ERROR;
    return state == KEY_REVOKED ? STORE_OK : STORE_NOT_FOUND;
}

/* ---- agents ---- */

/* Fills out from a row of AGENT_COLUMNS. Returns 0, or -1 after logging. */
static int read_agent(sqlite3_stmt *st, agent_t *out, const char *op)
{
    const unsigned char *params;

    memset(out, 0, sizeof(*out));
    out->id = sqlite3_column_int64(st, 0);
    out->org_id = sqlite3_column_int64(st, 1);
    out->published = sqlite3_column_int(st, 4);
    if (column_strdup(st, 2, &out->name) != 0 || column_strdup(st, 3, &out->description) != 0 ||
        column_strdup(st, 5, &out->system) != 0 || column_strdup(st, 6, &out->prompt) != 0 ||
        column_strdup(st, 7, &out->provider) != 0 || column_strdup(st, 8, &out->model) != 0)
        goto nomem;
    out->has_temperature = sqlite3_column_type(st, 9) != SQLITE_NULL;
    out->temperature = out->has_temperature ? sqlite3_column_double(st, 9) : 0.0;
    out->max_tokens = column_int64_or_zero(st, 10);
    out->timeout_ms = column_int64_or_zero(st, 11);

    params = sqlite3_column_text(st, 12);
    if (params == NULL)
        goto nomem; /* the column is NOT NULL */
    if (agent_params_from_text((const char *)params, out) != 0) {
        log_error("msg=\"stored agent parameters are invalid or memory ran out\" db=sqlite op=%s agent_id=%lld",
                  op, (long long)out->id);
        agent_free(out);
        return -1;
    }
    return 0;

nomem:
    agent_free(out);
    out_of_memory(op);
    return -1;
}

static int bind_agent(sqlite3_stmt *st, int64_t org_id, const agent_t *agent, const char *params, int64_t now_ms)
{
    int rc = SQLITE_OK;

    rc |= sqlite3_bind_int64(st, 1, org_id);
    rc |= bind_text(st, 2, agent->name);
    rc |= bind_text(st, 3, agent->description);
    rc |= sqlite3_bind_int(st, 4, agent->published ? 1 : 0);
    rc |= bind_text(st, 5, agent->system);
    rc |= bind_text(st, 6, agent->prompt);
    rc |= bind_text(st, 7, agent->provider);
    rc |= bind_text(st, 8, agent->model);
    rc |= bind_double_opt(st, 9, agent->temperature, agent->has_temperature);
    rc |= bind_int64_opt(st, 10, agent->max_tokens, agent->max_tokens > 0);
    rc |= bind_int64_opt(st, 11, agent->timeout_ms, agent->timeout_ms > 0);
    rc |= bind_text(st, 12, params);
    rc |= sqlite3_bind_int64(st, 13, now_ms);
    return rc;
}

static store_rc_t sqlite_agents_import(store_t *store, int64_t org_id, agent_t *agents, size_t n)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_AGENT_INSERT);
    int64_t now_ms = clock_now_ms();
    store_rc_t result = STORE_OK;
    size_t i;

    if (n == 0)
        return STORE_OK;
    if (tx_begin(s, STMT_BEGIN_IMMEDIATE, "agents_import") != STORE_OK)
        return STORE_ERROR;

    for (i = 0; i < n; i++) {
        char *params = agent_params_to_text(&agents[i]);
        int rc;

        if (params == NULL) {
            result = out_of_memory("agents_import");
            break;
        }
        if (bind_agent(st, org_id, &agents[i], params, now_ms) != SQLITE_OK) {
            result = db_error(s, "agents_import");
            stmt_done(st);
            free(params);
            break;
        }
        rc = stmt_exec(st);
        free(params);
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
            result = STORE_NOT_FOUND; /* no such org */
            break;
        }
        if (rc != SQLITE_DONE) {
            result = db_error(s, "agents_import");
            break;
        }
        agents[i].id = sqlite3_last_insert_rowid(s->db);
    }
    if (result == STORE_OK)
        result = tx_commit(s, "agents_import");
    else
        tx_rollback(s, "agents_import");

    if (result != STORE_OK) {
        for (i = 0; i < n; i++)
            agents[i].id = 0;
    }
    return result;
}

static store_rc_t sqlite_agent_set_published(store_t *store, int64_t agent_id, int published)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_AGENT_SET_PUBLISHED);
    int rc = SQLITE_OK;

    rc |= sqlite3_bind_int64(st, 1, agent_id);
    rc |= sqlite3_bind_int(st, 2, published ? 1 : 0);
    rc |= sqlite3_bind_int64(st, 3, clock_now_ms());
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "agent_set_published");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "agent_set_published");
    return sqlite3_changes(s->db) > 0 ? STORE_OK : STORE_NOT_FOUND;
}

static store_rc_t sqlite_agent_get(store_t *store, int64_t org_id, int64_t agent_id, agent_t *out)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_AGENT_GET);
    store_rc_t result;
    int rc = SQLITE_OK;

    rc |= sqlite3_bind_int64(st, 1, agent_id);
    rc |= sqlite3_bind_int64(st, 2, org_id);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "agent_get");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        result = read_agent(st, out, "agent_get") == 0 ? STORE_OK : STORE_ERROR;
    else if (rc == SQLITE_DONE)
        result = STORE_NOT_FOUND;
    else
        result = db_error(s, "agent_get");
    stmt_done(st);
    return result;
}

/* Reads the number of published agents of org_id into *total. */
static store_rc_t count_published_agents(sqlite_store_t *s, int64_t org_id, int64_t *total)
{
    sqlite3_stmt *st = stmt_get(s, STMT_AGENTS_COUNT);
    store_rc_t result = STORE_OK;

    if (sqlite3_bind_int64(st, 1, org_id) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
        result = db_error(s, "agents_list");
    else
        *total = sqlite3_column_int64(st, 0);
    stmt_done(st);
    return result;
}

static store_rc_t sqlite_agents_list(store_t *store, int64_t org_id, int64_t limit, int64_t offset,
                                     agent_t **out, size_t *n, int64_t *total)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_AGENTS_PAGE);
    agent_t *agents = NULL;
    size_t count = 0, capacity = 0;
    store_rc_t result;
    int rc = SQLITE_OK;

    *out = NULL;
    *n = 0;
    *total = 0;
    if (offset < 0)
        offset = 0;

    /* one read transaction, so the total and the page agree */
    if (tx_begin(s, STMT_BEGIN_READ, "agents_list") != STORE_OK)
        return STORE_ERROR;
    result = count_published_agents(s, org_id, total);
    if (result != STORE_OK)
        goto out;

    /* the page cannot hold more than what is left after offset */
    if (limit > 0 && offset < *total)
        capacity = (size_t)(limit < *total - offset ? limit : *total - offset);
    if (capacity == 0)
        goto out;
    agents = calloc(capacity, sizeof(*agents));
    if (agents == NULL) {
        result = out_of_memory("agents_list");
        goto out;
    }

    rc |= sqlite3_bind_int64(st, 1, org_id);
    rc |= sqlite3_bind_int64(st, 2, limit);
    rc |= sqlite3_bind_int64(st, 3, offset);
    if (rc != SQLITE_OK) {
        result = db_error(s, "agents_list");
        stmt_done(st);
        goto out;
    }
    while (count < capacity && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (read_agent(st, &agents[count], "agents_list") != 0) {
            result = STORE_ERROR;
            break;
        }
        count++;
    }
    if (result == STORE_OK && count < capacity && rc != SQLITE_DONE)
        result = db_error(s, "agents_list");
    stmt_done(st);

out:
    if (result == STORE_OK)
        result = tx_commit(s, "agents_list");
    else
        tx_rollback(s, "agents_list");
    if (result != STORE_OK) {
        store_agent_list_free(agents, count);
        *total = 0;
        return result;
    }
    if (count == 0) {
        free(agents);
        agents = NULL;
    }
    *out = agents;
    *n = count;
    return STORE_OK;
}

static store_rc_t sqlite_agents_list_all(store_t *store, int64_t org_id, agent_t **out, size_t *n)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_AGENTS_ALL);
    agent_t *agents = NULL;
    size_t count = 0, capacity = 0;
    store_rc_t result = STORE_OK;
    int rc;

    *out = NULL;
    *n = 0;
    if (sqlite3_bind_int64(st, 1, org_id) != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "agents_list_all");
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == capacity) {
            size_t new_capacity = capacity ? capacity * 2 : 16;
            agent_t *grown = realloc(agents, new_capacity * sizeof(*grown));

            if (grown == NULL) {
                result = out_of_memory("agents_list_all");
                break;
            }
            agents = grown;
            capacity = new_capacity;
        }
        if (read_agent(st, &agents[count], "agents_list_all") != 0) {
            result = STORE_ERROR;
            break;
        }
        count++;
    }
    if (result == STORE_OK && rc != SQLITE_DONE)
        result = db_error(s, "agents_list_all");
    stmt_done(st);

    if (result != STORE_OK) {
        store_agent_list_free(agents, count);
        return result;
    }
    *out = agents;
    *n = count;
    return STORE_OK;
}

/* ---- runs ---- */

/* Fills out from a row of RUN_COLUMNS. Returns 0, or -1 after logging. */
static int read_run(sqlite3_stmt *st, run_t *out, const char *op)
{
    memset(out, 0, sizeof(*out));
    if (column_copy(st, 0, out->id, sizeof(out->id)) != 0 ||
        column_copy(st, 3, out->key_id, sizeof(out->key_id)) != 0) {
        log_error("msg=\"stored run id or key id is invalid\" db=sqlite op=%s", op);
        return -1;
    }
    out->org_id = sqlite3_column_int64(st, 1);
    out->agent_id = sqlite3_column_int64(st, 2);
    if (run_status_parse((const char *)sqlite3_column_text(st, 4), &out->status) != 0) {
        log_error("msg=\"stored run status is invalid\" db=sqlite op=%s run_id=%s", op, out->id);
        return -1;
    }
    out->created_at_ms = sqlite3_column_int64(st, 5);
    out->started_at_ms = column_int64_or_zero(st, 6);
    out->completed_at_ms = column_int64_or_zero(st, 7);
    if (column_strdup(st, 8, &out->output) != 0 || column_strdup(st, 9, &out->error) != 0)
        goto nomem;
    out->has_usage = sqlite3_column_type(st, 10) != SQLITE_NULL;
    out->input_tokens = column_int64_or_zero(st, 10);
    out->output_tokens = column_int64_or_zero(st, 11);
    if (column_strdup(st, 12, &out->prompt) != 0 || column_strdup(st, 13, &out->system) != 0 ||
        column_strdup(st, 14, &out->provider) != 0 || column_strdup(st, 15, &out->model) != 0)
        goto nomem;
    out->has_temperature = sqlite3_column_type(st, 16) != SQLITE_NULL;
    out->temperature = out->has_temperature ? sqlite3_column_double(st, 16) : 0.0;
    out->max_tokens = column_int64_or_zero(st, 17);
    out->timeout_ms = column_int64_or_zero(st, 18);
    out->attempts = sqlite3_column_int(st, 19);
    return 0;

nomem:
    run_free(out);
    out_of_memory(op);
    return -1;
}

/*
 * Looks up (run->key_id, idempotency_key) inside the caller's transaction.
 * Returns STORE_OK when the pair is new. A pair used before returns
 * STORE_DUPLICATE (with the first run's id in existing_id) for the same
 * request_hash, else STORE_CONFLICT.
 */
static store_rc_t check_idempotency_key(sqlite_store_t *s, const run_t *run, const char *idempotency_key,
                                        const uint8_t request_hash[32], char existing_id[RUN_ID_LEN + 1])
{
    sqlite3_stmt *st = stmt_get(s, STMT_IDEM_GET);
    store_rc_t result;
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, run->key_id);
    rc |= bind_text(st, 2, idempotency_key);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "run_create");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        result = STORE_OK;
    } else if (rc != SQLITE_ROW) {
        result = db_error(s, "run_create");
    } else if (sqlite3_column_bytes(st, 0) != 32 || memcmp(sqlite3_column_blob(st, 0), request_hash, 32) != 0) {
        result = STORE_CONFLICT;
    } else {
        result = STORE_DUPLICATE;
        if (existing_id != NULL && column_copy(st, 1, existing_id, RUN_ID_LEN + 1) != 0) {
            log_error("msg=\"stored run id is invalid\" db=sqlite op=run_create");
            result = STORE_ERROR;
        }
    }
    stmt_done(st);
    return result;
}

/* STORE_LIMIT when run->key_id has max_in_flight runs pending or running. */
static store_rc_t check_in_flight(sqlite_store_t *s, const char *key_id, int64_t max_in_flight)
{
    sqlite3_stmt *st = stmt_get(s, STMT_RUNS_IN_FLIGHT);
    store_rc_t result;
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, key_id);
    rc |= sqlite3_bind_int64(st, 2, max_in_flight);
    if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
        result = db_error(s, "run_create");
    else
        result = sqlite3_column_int64(st, 0) >= max_in_flight ? STORE_LIMIT : STORE_OK;
    stmt_done(st);
    return result;
}

static store_rc_t insert_run(sqlite_store_t *s, const run_t *run)
{
    sqlite3_stmt *st = stmt_get(s, STMT_RUN_INSERT);
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, run->id);
    rc |= sqlite3_bind_int64(st, 2, run->org_id);
    rc |= sqlite3_bind_int64(st, 3, run->agent_id);
    rc |= bind_text(st, 4, run->key_id);
    rc |= sqlite3_bind_int64(st, 5, run->created_at_ms > 0 ? run->created_at_ms : clock_now_ms());
    rc |= bind_text(st, 6, run->prompt);
    rc |= bind_text(st, 7, run->system);
    rc |= bind_text(st, 8, run->provider);
    rc |= bind_text(st, 9, run->model);
    rc |= bind_double_opt(st, 10, run->temperature, run->has_temperature);
    rc |= bind_int64_opt(st, 11, run->max_tokens, run->max_tokens > 0);
    rc |= bind_int64_opt(st, 12, run->timeout_ms, run->timeout_ms > 0);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "run_create");
    }
    rc = stmt_exec(st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
        return STORE_CONFLICT; /* the run id is taken */
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return STORE_NOT_FOUND; /* no such org, agent or key */
    if (rc != SQLITE_DONE)
        return db_error(s, "run_create");
    return STORE_OK;
}

static store_rc_t remember_idempotency_key(sqlite_store_t *s, const run_t *run, const char *idempotency_key,
                                           const uint8_t request_hash[32])
{
    sqlite3_stmt *st = stmt_get(s, STMT_IDEM_INSERT);
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, run->key_id);
    rc |= bind_text(st, 2, idempotency_key);
    rc |= sqlite3_bind_blob(st, 3, request_hash, 32, SQLITE_STATIC);
    rc |= bind_text(st, 4, run->id);
    rc |= sqlite3_bind_int64(st, 5, clock_now_ms());
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "run_create");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "run_create");
    return STORE_OK;
}

static store_rc_t sqlite_run_create(store_t *store, const run_t *run, int64_t max_in_flight,
                                    const char *idempotency_key, const uint8_t request_hash[32],
                                    char existing_id[RUN_ID_LEN + 1])
{
    static const uint8_t no_hash[32];
    sqlite_store_t *s = to_sqlite(store);
    store_rc_t result;

    if (existing_id != NULL)
        existing_id[0] = '\0';
    if (request_hash == NULL)
        request_hash = no_hash;

    if (tx_begin(s, STMT_BEGIN_IMMEDIATE, "run_create") != STORE_OK)
        return STORE_ERROR;

    /* a replay returns the first run even when the key is at its limit now */
    result = STORE_OK;
    if (idempotency_key != NULL)
        result = check_idempotency_key(s, run, idempotency_key, request_hash, existing_id);
    if (result == STORE_OK && max_in_flight > 0)
        result = check_in_flight(s, run->key_id, max_in_flight);
    if (result == STORE_OK)
        result = insert_run(s, run);
    if (result == STORE_OK && idempotency_key != NULL)
        result = remember_idempotency_key(s, run, idempotency_key, request_hash);

    if (result == STORE_OK)
        return tx_commit(s, "run_create");
    tx_rollback(s, "run_create");
    return result;
}

static store_rc_t sqlite_run_get(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id, run_t *out)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_RUN_GET);
    store_rc_t result;
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, run_id);
    rc |= sqlite3_bind_int64(st, 2, org_id);
    rc |= sqlite3_bind_int64(st, 3, agent_id);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "run_get");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        result = read_run(st, out, "run_get") == 0 ? STORE_OK : STORE_ERROR;
    else if (rc == SQLITE_DONE)
        result = STORE_NOT_FOUND;
    else
        result = db_error(s, "run_get");
    stmt_done(st);
    return result;
}

typedef struct {
    char id[RUN_ID_LEN + 1];
    int attempts;
} failed_run_t;

/*
 * Fails the expired running runs that already have max_attempts attempts,
 * inside the caller's transaction. Their ids go to *failed (malloc'd, *n_failed
 * entries) so the caller can log them once the transaction has committed.
 */
static store_rc_t fail_exhausted_runs(sqlite_store_t *s, int64_t now_ms, int max_attempts, failed_run_t **failed,
                                      size_t *n_failed)
{
    sqlite3_stmt *st = stmt_get(s, STMT_RUNS_FAIL_EXHAUSTED);
    size_t capacity = 0;
    store_rc_t result = STORE_OK;
    int rc = SQLITE_OK;

    *failed = NULL;
    *n_failed = 0;
    rc |= sqlite3_bind_int64(st, 1, now_ms);
    rc |= sqlite3_bind_int(st, 2, max_attempts);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "runs_claim");
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n_failed == capacity) {
            size_t new_capacity = capacity ? capacity * 2 : 8;
            failed_run_t *grown = realloc(*failed, new_capacity * sizeof(*grown));

            if (grown == NULL) {
                result = out_of_memory("runs_claim");
                break;
            }
            *failed = grown;
            capacity = new_capacity;
        }
        column_copy(st, 0, (*failed)[*n_failed].id, RUN_ID_LEN + 1);
        (*failed)[*n_failed].attempts = sqlite3_column_int(st, 1);
        (*n_failed)++;
    }
    if (result == STORE_OK && rc != SQLITE_DONE)
        result = db_error(s, "runs_claim");
    stmt_done(st);
    return result;
}

/* Cancels, inside the caller's transaction, the expired running runs whose
 * cancellation was requested: their owner is gone, so nothing else ends them. */
static store_rc_t cancel_expired_runs(sqlite_store_t *s, int64_t now_ms)
{
    sqlite3_stmt *st = stmt_get(s, STMT_RUNS_CANCEL_EXPIRED);

    if (sqlite3_bind_int64(st, 1, now_ms) != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "runs_claim");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "runs_claim");
    return STORE_OK;
}

/* ---- fair claiming (see "Fair claiming" at the top) ---- */

#define CLAIM_FIRST_PAGE_ROWS 16
#define CLAIM_MAX_PAGE_ROWS 512

/* A run that a claim may pick. */
typedef struct {
    int64_t rowid;
    int64_t org_id;
    int64_t agent_id;
    int64_t created_at_ms;
} claim_candidate_t;

/* One organization's claimable runs: its expired runs, then its pending runs
 * read page by page. */
typedef struct {
    int64_t org_id;
    int64_t running;                  /* runs under a live lease, plus those this claim picked */
    const claim_candidate_t *expired; /* this organization's part of claim_plan_t.expired */
    size_t n_expired;
    size_t next_expired;
    claim_candidate_t *page;          /* the pending runs read by the last page */
    size_t n_page;
    size_t next_page;
    size_t page_rows;                 /* rows the next page asks for */
    int pending_exhausted;            /* the last page came back short */
    int64_t after_created_at_ms;      /* keyset cursor: the last pending run read */
    int64_t after_rowid;
    int64_t head_created_at_ms;       /* the oldest claimable run, for the turn order */
    int64_t head_rowid;
    int active;
} claim_org_t;

typedef struct {
    int64_t agent_id;
    int64_t running; /* runs under a live lease, plus those this claim picked */
} claim_agent_t;

typedef struct {
    sqlite_store_t *s;
    int64_t now_ms;
    const store_claim_limits_t *limits;
    claim_candidate_t *expired; /* running runs whose lease expired, by org, then oldest first */
    size_t n_expired;
    claim_org_t *orgs;
    size_t n_orgs;
    claim_agent_t *agents;
    size_t n_agents;
    size_t cap_agents;
    int64_t *picked; /* rowids in the order of the turns */
    size_t n_picked;
} claim_plan_t;

static void claim_plan_free(claim_plan_t *p)
{
    for (size_t i = 0; i < p->n_orgs; i++)
        free(p->orgs[i].page);
    free(p->orgs);
    free(p->expired);
    free(p->agents);
    free(p->picked);
}

static int compare_candidates_by_org(const void *a, const void *b)
{
    const claim_candidate_t *x = a, *y = b;

    if (x->org_id != y->org_id)
        return x->org_id < y->org_id ? -1 : 1;
    if (x->created_at_ms != y->created_at_ms)
        return x->created_at_ms < y->created_at_ms ? -1 : 1;
    return x->rowid < y->rowid ? -1 : x->rowid > y->rowid;
}

/* Whether x gets the next run before y: fewer runs running first, then the
 * older oldest claimable run. */
static int claim_org_first(const claim_org_t *x, const claim_org_t *y)
{
    if (x->running != y->running)
        return x->running < y->running;
    if (x->head_created_at_ms != y->head_created_at_ms)
        return x->head_created_at_ms < y->head_created_at_ms;
    return x->head_rowid < y->head_rowid;
}

/* Reads one count(*) of st, bound to (id, now_ms), into *count. */
static store_rc_t claim_count_running(sqlite_store_t *s, stmt_id_t id_stmt, int64_t id, int64_t now_ms,
                                      int64_t *count)
{
    sqlite3_stmt *st = stmt_get(s, id_stmt);
    store_rc_t result = STORE_OK;

    if (sqlite3_bind_int64(st, 1, id) != SQLITE_OK || sqlite3_bind_int64(st, 2, now_ms) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        result = db_error(s, "runs_claim");
    else
        *count = sqlite3_column_int64(st, 0);
    stmt_done(st);
    return result;
}

/* Reads every running run whose lease expired into p->expired, grouped by organization. */
static store_rc_t claim_load_expired(claim_plan_t *p)
{
    sqlite3_stmt *st = stmt_get(p->s, STMT_RUNS_EXPIRED);
    size_t capacity = 0;
    store_rc_t result = STORE_OK;
    int rc;

    if (sqlite3_bind_int64(st, 1, p->now_ms) != SQLITE_OK) {
        stmt_done(st);
        return db_error(p->s, "runs_claim");
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        claim_candidate_t *c;

        if (p->n_expired == capacity) {
            size_t new_capacity = capacity ? capacity * 2 : 16;
            claim_candidate_t *grown = realloc(p->expired, new_capacity * sizeof(*grown));

            if (grown == NULL) {
                result = out_of_memory("runs_claim");
                break;
            }
            p->expired = grown;
            capacity = new_capacity;
        }
        c = &p->expired[p->n_expired++];
        c->rowid = sqlite3_column_int64(st, 0);
        c->org_id = sqlite3_column_int64(st, 1);
        c->agent_id = sqlite3_column_int64(st, 2);
        c->created_at_ms = sqlite3_column_int64(st, 3);
    }
    if (result == STORE_OK && rc != SQLITE_DONE)
        result = db_error(p->s, "runs_claim");
    stmt_done(st);
    if (result == STORE_OK && p->n_expired > 1)
        qsort(p->expired, p->n_expired, sizeof(*p->expired), compare_candidates_by_org);
    return result;
}

/* Appends an organization with nothing read yet; returns it, or NULL when out of memory. */
static claim_org_t *claim_add_org(claim_plan_t *p, size_t *capacity, int64_t org_id)
{
    claim_org_t *org;

    if (p->n_orgs == *capacity) {
        size_t new_capacity = *capacity ? *capacity * 2 : 16;
        claim_org_t *grown = realloc(p->orgs, new_capacity * sizeof(*grown));

        if (grown == NULL)
            return NULL;
        p->orgs = grown;
        *capacity = new_capacity;
    }
    org = &p->orgs[p->n_orgs++];
    memset(org, 0, sizeof(*org));
    org->org_id = org_id;
    org->page_rows = CLAIM_FIRST_PAGE_ROWS;
    org->after_created_at_ms = INT64_MIN;
    org->after_rowid = INT64_MIN;
    org->active = 1;
    return org;
}

/*
 * Lists the organizations with claimable runs in p->orgs, by org id: those
 * with expired runs (p->expired must be loaded) and those with pending runs,
 * found by a loose index scan that seeks once per organization.
 */
static store_rc_t claim_list_orgs(claim_plan_t *p)
{
    sqlite3_stmt *st = stmt_get(p->s, STMT_PENDING_NEXT_ORG);
    size_t capacity = 0;
    size_t next_expired = 0;
    int64_t last_org_id = INT64_MIN;

    for (;;) {
        int64_t pending_org_id = INT64_MAX;
        int has_pending = 0;
        int64_t org_id;
        claim_org_t *org;
        int rc;

        if (sqlite3_bind_int64(st, 1, last_org_id) != SQLITE_OK) {
            stmt_done(st);
            return db_error(p->s, "runs_claim");
        }
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            pending_org_id = sqlite3_column_int64(st, 0);
            has_pending = 1;
        }
        stmt_done(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return db_error(p->s, "runs_claim");

        /* merge with the organizations of the expired runs, also by id */
        if (next_expired < p->n_expired && p->expired[next_expired].org_id <= pending_org_id)
            org_id = p->expired[next_expired].org_id;
        else if (has_pending)
            org_id = pending_org_id;
        else
            return STORE_OK;

        org = claim_add_org(p, &capacity, org_id);
        if (org == NULL)
            return out_of_memory("runs_claim");
        org->pending_exhausted = !has_pending || pending_org_id != org_id;
        if (next_expired < p->n_expired && p->expired[next_expired].org_id == org_id) {
            org->expired = &p->expired[next_expired];
            while (next_expired < p->n_expired && p->expired[next_expired].org_id == org_id) {
                next_expired++;
                org->n_expired++;
            }
        }
        last_org_id = org_id;
    }
}

/* Reads the organization's next page of pending runs, oldest first. */
static store_rc_t claim_read_page(claim_plan_t *p, claim_org_t *org)
{
    sqlite3_stmt *st = stmt_get(p->s, STMT_PENDING_PAGE);
    claim_candidate_t *page;
    store_rc_t result = STORE_OK;
    int rc = SQLITE_OK;

    page = realloc(org->page, org->page_rows * sizeof(*page));
    if (page == NULL)
        return out_of_memory("runs_claim");
    org->page = page;
    org->n_page = 0;
    org->next_page = 0;

    rc |= sqlite3_bind_int64(st, 1, org->org_id);
    rc |= sqlite3_bind_int64(st, 2, org->after_created_at_ms);
    rc |= sqlite3_bind_int64(st, 3, org->after_rowid);
    rc |= sqlite3_bind_int64(st, 4, (int64_t)org->page_rows);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(p->s, "runs_claim");
    }
    while (org->n_page < org->page_rows && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        claim_candidate_t *c = &page[org->n_page++];

        c->rowid = sqlite3_column_int64(st, 0);
        c->org_id = org->org_id;
        c->agent_id = sqlite3_column_int64(st, 1);
        c->created_at_ms = sqlite3_column_int64(st, 2);
    }
    if (org->n_page < org->page_rows && rc != SQLITE_DONE)
        result = db_error(p->s, "runs_claim");
    stmt_done(st);
    if (result != STORE_OK)
        return result;

    if (org->n_page < org->page_rows)
        org->pending_exhausted = 1;
    if (org->n_page > 0) {
        org->after_created_at_ms = page[org->n_page - 1].created_at_ms;
        org->after_rowid = page[org->n_page - 1].rowid;
    }
    if (org->page_rows < CLAIM_MAX_PAGE_ROWS)
        org->page_rows *= 2;
    return STORE_OK;
}

/* Points *next at the organization's next claimable run without taking it,
 * or at NULL when it has none left. */
static store_rc_t claim_peek(claim_plan_t *p, claim_org_t *org, const claim_candidate_t **next)
{
    *next = NULL;
    if (org->next_expired < org->n_expired) {
        *next = &org->expired[org->next_expired];
        return STORE_OK;
    }
    if (org->next_page == org->n_page) {
        store_rc_t rc;

        if (org->pending_exhausted)
            return STORE_OK;
        if ((rc = claim_read_page(p, org)) != STORE_OK)
            return rc;
    }
    if (org->next_page < org->n_page)
        *next = &org->page[org->next_page];
    return STORE_OK;
}

static void claim_consume(claim_org_t *org)
{
    if (org->next_expired < org->n_expired)
        org->next_expired++;
    else
        org->next_page++;
}

/* The running count of agent_id, read from the database on first use. */
static store_rc_t claim_agent(claim_plan_t *p, int64_t agent_id, claim_agent_t **out)
{
    claim_agent_t *agent;

    /* NOTE: a linear search, because a claim meets few distinct agents; a
     * claim over thousands of agents would want a hash table here. */
    for (size_t i = 0; i < p->n_agents; i++) {
        if (p->agents[i].agent_id == agent_id) {
            *out = &p->agents[i];
            return STORE_OK;
        }
    }
    if (p->n_agents == p->cap_agents) {
        size_t new_capacity = p->cap_agents ? p->cap_agents * 2 : 16;
        claim_agent_t *grown = realloc(p->agents, new_capacity * sizeof(*grown));

        if (grown == NULL)
            return out_of_memory("runs_claim");
        p->agents = grown;
        p->cap_agents = new_capacity;
    }
    agent = &p->agents[p->n_agents];
    agent->agent_id = agent_id;
    if (claim_count_running(p->s, STMT_AGENT_RUNNING, agent_id, p->now_ms, &agent->running) != STORE_OK)
        return STORE_ERROR;
    p->n_agents++;
    *out = agent;
    return STORE_OK;
}

/* Gives org its turn: picks its oldest run that the limits allow and moves
 * its head to the next one, or deactivates org when it has none. */
static store_rc_t claim_take_turn(claim_plan_t *p, claim_org_t *org)
{
    int64_t max_per_org = p->limits->max_per_org;
    int64_t max_per_agent = p->limits->max_per_agent;
    const claim_candidate_t *next;
    store_rc_t rc;

    for (;;) {
        claim_agent_t *agent = NULL;

        if ((rc = claim_peek(p, org, &next)) != STORE_OK)
            return rc;
        if (next == NULL) {
            org->active = 0;
            return STORE_OK;
        }
        if (max_per_agent > 0 && (rc = claim_agent(p, next->agent_id, &agent)) != STORE_OK)
            return rc;
        claim_consume(org);
        if (agent != NULL && agent->running >= max_per_agent)
            continue; /* this agent is at its limit; its later runs are skipped as well */
        if (agent != NULL)
            agent->running++;
        org->running++;
        p->picked[p->n_picked++] = next->rowid;
        break;
    }

    if (max_per_org > 0 && org->running >= max_per_org) {
        org->active = 0;
        return STORE_OK;
    }
    if ((rc = claim_peek(p, org, &next)) != STORE_OK)
        return rc;
    if (next == NULL) {
        org->active = 0;
        return STORE_OK;
    }
    org->head_created_at_ms = next->created_at_ms;
    org->head_rowid = next->rowid;
    return STORE_OK;
}

/* Decides which runs to claim, in turn order, into p->picked (room for max). */
static store_rc_t claim_plan(claim_plan_t *p, size_t max)
{
    int count_running = p->limits->max_per_org > 0;
    store_rc_t rc;

    if ((rc = claim_load_expired(p)) != STORE_OK || (rc = claim_list_orgs(p)) != STORE_OK)
        return rc;

    /* Each organization's running count (needed for the order of turns only
     * when several compete) and its oldest claimable run. */
    count_running |= p->n_orgs > 1;
    for (size_t i = 0; i < p->n_orgs; i++) {
        claim_org_t *org = &p->orgs[i];
        const claim_candidate_t *head;

        if (count_running &&
            (rc = claim_count_running(p->s, STMT_ORG_RUNNING, org->org_id, p->now_ms, &org->running)) != STORE_OK)
            return rc;
        if (p->limits->max_per_org > 0 && org->running >= p->limits->max_per_org) {
            org->active = 0;
            continue;
        }
        if ((rc = claim_peek(p, org, &head)) != STORE_OK)
            return rc;
        if (head == NULL) {
            org->active = 0;
            continue;
        }
        org->head_created_at_ms = head->created_at_ms;
        org->head_rowid = head->rowid;
    }

    p->picked = malloc(max * sizeof(*p->picked));
    if (p->picked == NULL)
        return out_of_memory("runs_claim");

    /* NOTE: a linear search for the next organization per run picked, so a
     * claim costs O(max x organizations); a heap would make it O(max log
     * organizations) if thousands of organizations ever compete at once. */
    while (p->n_picked < max) {
        claim_org_t *next = NULL;

        for (size_t i = 0; i < p->n_orgs; i++) {
            if (p->orgs[i].active && (next == NULL || claim_org_first(&p->orgs[i], next)))
                next = &p->orgs[i];
        }
        if (next == NULL)
            break;
        if ((rc = claim_take_turn(p, next)) != STORE_OK)
            return rc;
    }
    return STORE_OK;
}

/* Claims the planned runs for owner into runs[] (room for p->n_picked). */
static store_rc_t claim_picked(claim_plan_t *p, const char *owner, int64_t lease_until_ms, run_t *runs, size_t *n)
{
    sqlite3_stmt *st = stmt_get(p->s, STMT_RUN_CLAIM);

    *n = 0;
    for (size_t i = 0; i < p->n_picked; i++) {
        int rc = SQLITE_OK;

        rc |= sqlite3_bind_int64(st, 1, p->now_ms);
        rc |= bind_text(st, 2, owner);
        rc |= sqlite3_bind_int64(st, 3, lease_until_ms);
        rc |= sqlite3_bind_int64(st, 4, p->picked[i]);
        if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
            store_rc_t result = db_error(p->s, "runs_claim");

            stmt_done(st);
            return result;
        }
        if (read_run(st, &runs[*n], "runs_claim") != 0) {
            stmt_done(st);
            return STORE_ERROR;
        }
        (*n)++;
        stmt_done(st);
    }
    return STORE_OK;
}

static store_rc_t sqlite_runs_claim(store_t *store, const char *owner, int64_t now_ms, int64_t lease_ms,
                                    int max_attempts, const store_claim_limits_t *limits, run_t **out, size_t *n)
{
    sqlite_store_t *s = to_sqlite(store);
    claim_plan_t plan;
    failed_run_t *failed = NULL;
    size_t n_failed = 0;
    run_t *runs = NULL;
    size_t n_claimed = 0;
    store_rc_t result;

    *out = NULL;
    *n = 0;
    if (limits->max == 0)
        return STORE_OK;
    if (max_attempts < 1)
        max_attempts = 1; /* every claim counts one attempt, so fewer than one cannot be honoured */
    memset(&plan, 0, sizeof(plan));
    plan.s = s;
    plan.now_ms = now_ms;
    plan.limits = limits;

    if (tx_begin(s, STMT_BEGIN_IMMEDIATE, "runs_claim") != STORE_OK)
        return STORE_ERROR;

    /* expired runs that cannot go on end first: cancelled ones, then those out of attempts */
    result = cancel_expired_runs(s, now_ms);
    if (result == STORE_OK)
        result = fail_exhausted_runs(s, now_ms, max_attempts, &failed, &n_failed);
    if (result == STORE_OK)
        result = claim_plan(&plan, limits->max);
    if (result == STORE_OK && plan.n_picked > 0) {
        runs = calloc(plan.n_picked, sizeof(*runs));
        if (runs == NULL)
            result = out_of_memory("runs_claim");
    }
    if (result == STORE_OK)
        result = claim_picked(&plan, owner, now_ms + lease_ms, runs, &n_claimed);
    if (result == STORE_OK)
        result = tx_commit(s, "runs_claim");
    else
        tx_rollback(s, "runs_claim");

    if (result == STORE_OK) {
        for (size_t i = 0; i < n_failed; i++)
            log_warn("msg=\"failed a run whose lease expired on every attempt\" run_id=%s attempts=%d",
                     failed[i].id, failed[i].attempts);
        if (n_claimed > 0) {
            *out = runs;
            *n = n_claimed;
            runs = NULL;
        }
    }
    store_run_list_free(runs, n_claimed);
    claim_plan_free(&plan);
    free(failed);
    return result;
}

static store_rc_t sqlite_runs_renew(store_t *store, const char *owner, int64_t lease_until_ms)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_RUNS_RENEW);
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, owner);
    rc |= sqlite3_bind_int64(st, 2, lease_until_ms);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "runs_renew");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "runs_renew");
    return STORE_OK;
}

static store_rc_t sqlite_run_complete(store_t *store, const char *run_id, const char *owner, const run_t *result)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_RUN_COMPLETE);
    int rc = SQLITE_OK;

    if (result->status != RUN_SUCCEEDED && result->status != RUN_FAILED && result->status != RUN_CANCELLED) {
        log_error("msg=\"cannot complete a run with a status that is not final\" db=sqlite op=run_complete"
                  " run_id=%s status=%s",
                  run_id, run_status_name(result->status));
        return STORE_ERROR;
    }

    rc |= bind_text(st, 1, run_id);
    rc |= bind_text(st, 2, owner);
    rc |= sqlite3_bind_text(st, 3, run_status_name(result->status), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(st, 4, result->completed_at_ms > 0 ? result->completed_at_ms : clock_now_ms());
    rc |= bind_text(st, 5, result->output);
    rc |= bind_text(st, 6, result->error);
    rc |= bind_int64_opt(st, 7, result->input_tokens, result->has_usage);
    rc |= bind_int64_opt(st, 8, result->output_tokens, result->has_usage);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "run_complete");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "run_complete");
    return sqlite3_changes(s->db) > 0 ? STORE_OK : STORE_NOT_FOUND;
}

static store_rc_t sqlite_runs_release(store_t *store, const char *owner)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_RUNS_RELEASE);
    int rc = SQLITE_OK;

    rc |= bind_text(st, 1, owner);
    rc |= sqlite3_bind_int64(st, 2, clock_now_ms());
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "runs_release");
    }
    if (stmt_exec(st) != SQLITE_DONE)
        return db_error(s, "runs_release");
    return STORE_OK;
}

static store_rc_t sqlite_run_cancel(store_t *store, int64_t org_id, int64_t agent_id, const char *run_id,
                                    int64_t now_ms, run_t *out)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_RUN_CANCEL);
    store_rc_t result;
    int rc = SQLITE_OK;

    memset(out, 0, sizeof(*out));
    rc |= bind_text(st, 1, run_id);
    rc |= sqlite3_bind_int64(st, 2, org_id);
    rc |= sqlite3_bind_int64(st, 3, agent_id);
    rc |= sqlite3_bind_int64(st, 4, now_ms > 0 ? now_ms : clock_now_ms());
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "run_cancel");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        result = read_run(st, out, "run_cancel") == 0 ? STORE_OK : STORE_ERROR;
    else if (rc == SQLITE_DONE)
        result = STORE_NOT_FOUND; /* not pending or running: looked at below */
    else
        result = db_error(s, "run_cancel");
    stmt_done(st);
    if (result != STORE_NOT_FOUND)
        return result;

    /* Nothing changed, so the run is missing or already ended, and an ended
     * run never changes again: this read cannot race with the update. */
    result = sqlite_run_get(store, org_id, agent_id, run_id, out);
    if (result != STORE_OK)
        return result;
    return out->status == RUN_CANCELLED ? STORE_OK : STORE_CONFLICT;
}

static store_rc_t sqlite_runs_cancel_requested(store_t *store, const char *owner, char (*ids)[RUN_ID_LEN + 1],
                                               size_t max, size_t *n)
{
    sqlite_store_t *s = to_sqlite(store);
    sqlite3_stmt *st = stmt_get(s, STMT_RUNS_CANCEL_REQUESTED);
    store_rc_t result = STORE_OK;
    int rc = SQLITE_OK;

    *n = 0;
    if (max == 0)
        return STORE_OK;
    rc |= bind_text(st, 1, owner);
    rc |= sqlite3_bind_int64(st, 2, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    if (rc != SQLITE_OK) {
        stmt_done(st);
        return db_error(s, "runs_cancel_requested");
    }
    while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (column_copy(st, 0, ids[*n], RUN_ID_LEN + 1) != 0) {
            log_error("msg=\"stored run id is invalid\" db=sqlite op=runs_cancel_requested");
            result = STORE_ERROR;
            break;
        }
        (*n)++;
    }
    if (result == STORE_OK && *n < max && rc != SQLITE_DONE)
        result = db_error(s, "runs_cancel_requested");
    stmt_done(st);
    if (result != STORE_OK)
        *n = 0;
    return result;
}

static const store_ops_t sqlite_ops = {
    .close = sqlite_close,
    .ping = sqlite_ping,
    .org_create = sqlite_org_create,
    .org_find = sqlite_org_find,
    .key_create = sqlite_key_create,
    .key_get = sqlite_key_get,
    .key_list = sqlite_key_list,
    .key_replace_secret = sqlite_key_replace_secret,
    .key_revoke = sqlite_key_revoke,
    .agents_import = sqlite_agents_import,
    .agent_set_published = sqlite_agent_set_published,
    .agent_get = sqlite_agent_get,
    .agents_list = sqlite_agents_list,
    .agents_list_all = sqlite_agents_list_all,
    .run_create = sqlite_run_create,
    .run_get = sqlite_run_get,
    .runs_claim = sqlite_runs_claim,
    .runs_renew = sqlite_runs_renew,
    .run_complete = sqlite_run_complete,
    .runs_release = sqlite_runs_release,
    .run_cancel = sqlite_run_cancel,
    .runs_cancel_requested = sqlite_runs_cancel_requested,
};

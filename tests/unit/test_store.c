/*
 * Tests of the store contract (store.h) that run the same cases against every
 * implementation: SQLite on a file in a temporary directory, and PostgreSQL
 * on a database that the tests create and drop.
 *
 * PostgreSQL needs PUSHAI_TEST_PG_URL, a postgresql:// URI of a role that may
 * create databases (scripts/pg.sh start prints one); without it those cases
 * are skipped with a message. The PostgreSQL cases share one database that is
 * emptied before each case, and add the cases that only a shared database
 * has: notifications, rate limits and reconnecting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <poll.h>
#include <postgresql/libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "model.h"
#include "store.h"

/* Fake clock for runs: created_at and claim times are set by the tests. */
#define T0 1000000
#define URI_MAX 1024

typedef enum { BACKEND_SQLITE, BACKEND_POSTGRESQL } backend_t;

typedef struct {
    backend_t backend;
    char dir[256];     /* SQLite: the temporary directory */
    char uri[URI_MAX]; /* what store_open() takes: a file path or a postgresql:// URI */
    store_t *store;
    int64_t org_id;
    int64_t other_org_id;
    char key_id[KEY_ID_LEN + 1];       /* a key of org_id */
    char other_key_id[KEY_ID_LEN + 1]; /* another key of org_id */
} fixture_t;

/* The PostgreSQL database of this process's cases, made by the group setup. */
static char pg_admin_url[URI_MAX];
static char pg_database[64];
static char pg_uri[URI_MAX];

/* ---- database access that bypasses the store ---- */

/* Writes into out the URI url with its database name replaced by dbname. */
static void uri_with_database(const char *url, const char *dbname, char *out, size_t size)
{
    const char *authority = strstr(url, "://");
    const char *path, *query;

    assert_non_null(authority);
    authority += 3;
    path = strchr(authority, '/');
    query = strchr(authority, '?');
    if (path == NULL || (query != NULL && query < path))
        path = query != NULL ? query : url + strlen(url);
    if (query == NULL)
        query = url + strlen(url);
    assert_true((size_t)snprintf(out, size, "%.*s/%s%s", (int)(path - url), url, dbname, query) < size);
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *pg_connect(const char *uri)
{
    PGconn *conn = PQconnectdb(uri);

    if (PQstatus(conn) != CONNECTION_OK)
        fail_msg("cannot connect to PostgreSQL: %s", PQerrorMessage(conn));
    PQsetNoticeProcessor(conn, ignore_notice, NULL); /* "does not exist, skipping" */
    return conn;
}

static void pg_exec(const char *uri, const char *sql)
{
    PGconn *conn = pg_connect(uri);
    PGresult *res = PQexec(conn, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
}

static int64_t pg_query_int(const char *uri, const char *sql)
{
    PGconn *conn = pg_connect(uri);
    PGresult *res = PQexec(conn, sql);
    int64_t value = -1;

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        value = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(conn);
    return value;
}

static int64_t query_int(const fixture_t *f, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t value = -1;

    if (f->backend == BACKEND_POSTGRESQL)
        return pg_query_int(f->uri, sql);
    assert_int_equal(sqlite3_open_v2(f->uri, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        value = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return value;
}

/* Ends every other connection to the fixture's database, as a database
 * restart does, and waits until their server processes are gone (the
 * termination is a signal that the server handles a moment later). */
static void pg_terminate_other_connections(const fixture_t *f)
{
    pg_exec(f->uri, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()");
    for (int i = 0; i < 100; i++) {
        if (pg_query_int(f->uri, "SELECT count(*) FROM pg_stat_activity"
                                 " WHERE datname = current_database() AND pid <> pg_backend_pid()") == 0)
            return;
        usleep(20000);
    }
    fail_msg("connections still open 2 s after pg_terminate_backend()");
}

/* ---- helpers ---- */

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *entry;
    char path[512];

    if (d == NULL)
        return;
    while ((entry = readdir(d)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, entry->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void fill_hash(uint8_t hash[KEY_HASH_LEN], uint8_t byte)
{
    memset(hash, byte, KEY_HASH_LEN);
}

static void create_key(store_t *store, int64_t org_id, const char *key_id, const char *label, int64_t created_at_ms)
{
    api_key_t key;

    memset(&key, 0, sizeof(key));
    snprintf(key.key_id, sizeof(key.key_id), "%s", key_id);
    key.org_id = org_id;
    key.label = (char *)label;
    fill_hash(key.secret_hash, 0xab);
    key.created_at_ms = created_at_ms;
    assert_int_equal(store_key_create(store, &key), STORE_OK);
}

/* An agent with one parameter "region" (options US, EU) and the given name. */
static void make_agent(agent_t *agent, const char *name, int published)
{
    agent_param_t *param;

    memset(agent, 0, sizeof(*agent));
    agent->name = strdup(name);
    agent->description = strdup("KPIs for one region");
    agent->published = published;
    agent->prompt = strdup("Summarize {{region}}.");
    agent->provider = strdup("echo");
    agent->model = strdup("gpt-4o-mini");
    agent->temperature = 0.25;
    agent->has_temperature = 1;
    agent->max_tokens = 800;
    agent->timeout_ms = 120000;

    param = calloc(1, sizeof(*param));
    assert_non_null(param);
    param->name = strdup("region");
    param->description = strdup("Sales region");
    param->required = 1;
    param->options = calloc(2, sizeof(*param->options));
    assert_non_null(param->options);
    param->options[0] = strdup("US");
    param->options[1] = strdup("EU");
    param->n_options = 2;
    agent->params = param;
    agent->n_params = 1;
}

static int64_t import_one(fixture_t *f, int64_t org_id, const char *name, int published)
{
    agent_t agent;
    int64_t id;

    make_agent(&agent, name, published);
    assert_int_equal(store_agents_import(f->store, org_id, &agent, 1), STORE_OK);
    id = agent.id;
    agent_free(&agent);
    assert_true(id > 0);
    return id;
}

static void run_id_of(int n, char out[RUN_ID_LEN + 1])
{
    snprintf(out, RUN_ID_LEN + 1, "00000000-0000-4000-8000-%012d", n);
}

/* A pending run number n of agent_id in org_id, created by key_id at
 * created_at_ms. */
static void make_run_in(run_t *run, int64_t org_id, int64_t agent_id, const char *key_id, int n,
                        int64_t created_at_ms)
{
    memset(run, 0, sizeof(*run));
    run_id_of(n, run->id);
    run->org_id = org_id;
    run->agent_id = agent_id;
    snprintf(run->key_id, sizeof(run->key_id), "%s", key_id);
    run->created_at_ms = created_at_ms;
    run->prompt = "Summarize EU.";
    run->system = "You are concise.";
    run->provider = "echo";
    run->model = "m1";
    run->temperature = 0.5;
    run->has_temperature = 1;
    run->max_tokens = 100;
    run->timeout_ms = 30000;
}

static void make_run(run_t *run, const fixture_t *f, int64_t agent_id, const char *key_id, int n,
                     int64_t created_at_ms)
{
    make_run_in(run, f->org_id, agent_id, key_id, n, created_at_ms);
}

static void create_run(fixture_t *f, int64_t agent_id, int n, int64_t created_at_ms)
{
    run_t run;

    make_run(&run, f, agent_id, f->key_id, n, created_at_ms);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_OK);
}

static run_status_t status_of(fixture_t *f, int64_t agent_id, int n)
{
    char id[RUN_ID_LEN + 1];
    run_t run;
    run_status_t status;

    run_id_of(n, id);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    status = run.status;
    run_free(&run);
    return status;
}

static void complete_run(run_t *result, run_status_t status)
{
    memset(result, 0, sizeof(*result));
    result->status = status;
    result->completed_at_ms = T0 + 50;
    result->output = status == RUN_SUCCEEDED ? "the output" : NULL;
    result->error = status == RUN_FAILED ? "provider failed" : NULL;
    result->has_usage = 1;
    result->input_tokens = 12;
    result->output_tokens = 34;
}

/* Claims with only a batch size, no caps. */
static store_rc_t claim(fixture_t *f, const char *owner, int64_t now_ms, int64_t lease_ms, int max_attempts,
                        size_t max, run_t **runs, size_t *n)
{
    store_claim_limits_t limits = {max, 0, 0};

    return store_runs_claim(f->store, owner, now_ms, lease_ms, max_attempts, &limits, runs, n);
}

/* The number n of a run id made by run_id_of(). */
static int run_number(const run_t *run)
{
    return atoi(run->id + 24);
}

/* ---- fixtures ---- */

static int setup_empty_sqlite(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    assert_non_null(f);
    f->backend = BACKEND_SQLITE;
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    assert_true((size_t)snprintf(f->dir, sizeof(f->dir), "%s/pushai-store-XXXXXX", tmp) < sizeof(f->dir));
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->uri, sizeof(f->uri), "%s/pushai.db", f->dir);
    *state = f;
    return 0;
}

/* An emptied database with the schema applied (the group setup applied it). */
static int setup_empty_pg(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    f->backend = BACKEND_POSTGRESQL;
    snprintf(f->uri, sizeof(f->uri), "%s", pg_uri);
    pg_exec(f->uri, "TRUNCATE orgs, api_keys, agents, runs, idempotency_keys, rate_limit_buckets"
                    " RESTART IDENTITY CASCADE");
    *state = f;
    return 0;
}

static void fill_store(fixture_t *f)
{
    assert_int_equal(store_open(f->uri, &f->store), STORE_OK);
    assert_int_equal(store_org_create(f->store, "acme", "Acme Inc.", &f->org_id), STORE_OK);
    assert_int_equal(store_org_create(f->store, "globex", NULL, &f->other_org_id), STORE_OK);
    snprintf(f->key_id, sizeof(f->key_id), "aaaaaaaaaaaa");
    snprintf(f->other_key_id, sizeof(f->other_key_id), "bbbbbbbbbbbb");
    create_key(f->store, f->org_id, f->key_id, "main", 1000);
    create_key(f->store, f->org_id, f->other_key_id, NULL, 2000);
}

static int setup_sqlite(void **state)
{
    setup_empty_sqlite(state);
    fill_store(*state);
    return 0;
}

static int setup_pg(void **state)
{
    setup_empty_pg(state);
    fill_store(*state);
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    store_close(f->store);
    if (f->backend == BACKEND_SQLITE)
        remove_dir(f->dir);
    free(f);
    return 0;
}

static int group_setup_pg(void **state)
{
    char create[160];
    store_t *store = NULL;

    (void)state;
    snprintf(pg_database, sizeof(pg_database), "pushai_unit_%d", (int)getpid());
    uri_with_database(pg_admin_url, pg_database, pg_uri, sizeof(pg_uri));
    snprintf(create, sizeof(create), "DROP DATABASE IF EXISTS %s", pg_database);
    pg_exec(pg_admin_url, create);
    snprintf(create, sizeof(create), "CREATE DATABASE %s", pg_database);
    pg_exec(pg_admin_url, create);
    /* applies the schema once, so every case can empty the tables */
    if (store_open(pg_uri, &store) != STORE_OK)
        return -1;
    store_close(store);
    return 0;
}

static int group_teardown_pg(void **state)
{
    char drop[160];

    (void)state;
    snprintf(drop, sizeof(drop), "DROP DATABASE IF EXISTS %s WITH (FORCE)", pg_database);
    pg_exec(pg_admin_url, drop);
    return 0;
}

/* ---- open and migrations ---- */

static void test_open_reopen_keeps_data(void **state)
{
    fixture_t *f = *state;
    int64_t org_id, found;

    assert_int_equal(store_open(f->uri, &f->store), STORE_OK);
    assert_int_equal(store_ping(f->store), STORE_OK);
    assert_int_equal(store_org_create(f->store, "acme", NULL, &org_id), STORE_OK);
    store_close(f->store);
    f->store = NULL;

    /* a second open applies no migration again and sees the data */
    assert_int_equal(store_open(f->uri, &f->store), STORE_OK);
    assert_int_equal(store_org_find(f->store, "acme", &found), STORE_OK);
    assert_int_equal(found, org_id);
    if (f->backend == BACKEND_POSTGRESQL)
        assert_int_equal(query_int(f, "SELECT count(*) FROM schema_migrations"), 1);
    else
        assert_int_equal(query_int(f, "PRAGMA user_version") >= 1, 1);
}

static void test_open_rejects_newer_schema(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(store_open(f->uri, &f->store), STORE_OK);
    store_close(f->store);
    f->store = NULL;
    if (f->backend == BACKEND_POSTGRESQL) {
        pg_exec(f->uri, "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)");
        assert_int_equal(store_open(f->uri, &f->store), STORE_ERROR);
        pg_exec(f->uri, "DELETE FROM schema_migrations WHERE version = 99");
    } else {
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open_v2(f->uri, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        assert_int_equal(store_open(f->uri, &f->store), STORE_ERROR);
    }
    assert_null(f->store);
}

/* Starts n child processes that each open their own store and run
 * body(store, f, i) at the same moment, and waits for them. Every child must
 * exit 0. open_first: whether the child opens its store before the start
 * signal (else after it, so that the opens race). */
static void run_in_processes(const fixture_t *f, int n, int open_first,
                             int (*body)(store_t *store, const fixture_t *f, int i))
{
    pid_t pids[16];
    int start_fds[2];

    assert_true(n <= 16);
    assert_int_equal(pipe(start_fds), 0);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            store_t *store = NULL;
            char go;
            int ok = 1;

            close(start_fds[1]);
            if (open_first)
                ok = store_open(f->uri, &store) == STORE_OK;
            /* wait until the parent releases every child at once */
            if (read(start_fds[0], &go, 1) < 0)
                ok = 0;
            if (ok && !open_first)
                ok = store_open(f->uri, &store) == STORE_OK;
            ok = ok && body(store, f, i) == 0;
            store_close(store);
            _exit(ok ? 0 : 1);
        }
    }
    close(start_fds[0]);
    close(start_fds[1]); /* EOF wakes every child */
    for (int i = 0; i < n; i++) {
        int status = 0;

        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
}

static int create_org_body(store_t *store, const fixture_t *f, int i)
{
    char slug[32];
    int64_t org_id;

    snprintf(slug, sizeof(slug), "org-%d", i);
    return store_org_create(store, slug, NULL, &org_id) == STORE_OK ? 0 : -1;
}

/* Several processes open a fresh database at the same moment: each succeeds
 * and the schema is applied once. */
static void test_open_concurrent_processes(void **state)
{
    enum { N_PROCESSES = 6 };
    fixture_t *f = *state;
    char admin_uri[URI_MAX];
    char sql[160];
    char name[64];

    if (f->backend == BACKEND_POSTGRESQL) {
        snprintf(name, sizeof(name), "pushai_unit_%d_fresh", (int)getpid());
        snprintf(admin_uri, sizeof(admin_uri), "%s", pg_admin_url);
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
        pg_exec(admin_uri, sql);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        pg_exec(admin_uri, sql);
        uri_with_database(pg_admin_url, name, f->uri, sizeof(f->uri));
    }
    run_in_processes(f, N_PROCESSES, 0, create_org_body);
    assert_int_equal(query_int(f, "SELECT count(*) FROM orgs"), N_PROCESSES);
    if (f->backend == BACKEND_POSTGRESQL) {
        assert_int_equal(query_int(f, "SELECT count(*) FROM schema_migrations"), 1);
        snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", name);
        pg_exec(admin_uri, sql);
    }
}

/* ---- organizations ---- */

static void test_org_create_find_conflict(void **state)
{
    fixture_t *f = *state;
    int64_t id = 0, found = 0;

    assert_int_equal(store_org_create(f->store, "initech", "Initech", &id), STORE_OK);
    assert_true(id > 0);
    assert_int_not_equal(id, f->org_id);
    assert_int_equal(store_org_find(f->store, "initech", &found), STORE_OK);
    assert_int_equal(found, id);
    assert_int_equal(store_org_create(f->store, "initech", "Other", &found), STORE_CONFLICT);
    assert_int_equal(store_org_find(f->store, "nobody", &found), STORE_NOT_FOUND);
    assert_int_equal(query_int(f, "SELECT count(*) FROM orgs WHERE slug = 'globex' AND name = 'globex'"), 1);
}

/* ---- API keys ---- */

static void test_key_get_fields(void **state)
{
    fixture_t *f = *state;
    api_key_t key;
    uint8_t expected[KEY_HASH_LEN];

    fill_hash(expected, 0xab);
    assert_int_equal(store_key_get(f->store, f->key_id, &key), STORE_OK);
    assert_string_equal(key.key_id, f->key_id);
    assert_int_equal(key.org_id, f->org_id);
    assert_string_equal(key.label, "main");
    assert_memory_equal(key.secret_hash, expected, KEY_HASH_LEN);
    assert_int_equal(key.created_at_ms, 1000);
    assert_int_equal(key.revoked_at_ms, 0);
    assert_int_equal(key.agents_rev, 0);
    api_key_free(&key);

    assert_int_equal(store_key_get(f->store, f->other_key_id, &key), STORE_OK);
    assert_null(key.label);
    api_key_free(&key);

    assert_int_equal(store_key_get(f->store, "zzzzzzzzzzzz", &key), STORE_NOT_FOUND);
}

static void test_key_create_conflict_and_missing_org(void **state)
{
    fixture_t *f = *state;
    api_key_t key;

    memset(&key, 0, sizeof(key));
    snprintf(key.key_id, sizeof(key.key_id), "%s", f->key_id);
    key.org_id = f->other_org_id;
    assert_int_equal(store_key_create(f->store, &key), STORE_CONFLICT);

    snprintf(key.key_id, sizeof(key.key_id), "cccccccccccc");
    key.org_id = 9999;
    assert_int_equal(store_key_create(f->store, &key), STORE_NOT_FOUND);
}

static void test_key_list_oldest_first(void **state)
{
    fixture_t *f = *state;
    api_key_t *keys = NULL;
    size_t n = 0;

    create_key(f->store, f->org_id, "cccccccccccc", "older", 500);
    create_key(f->store, f->other_org_id, "dddddddddddd", "elsewhere", 100);
    assert_int_equal(store_key_revoke(f->store, f->other_key_id, 3000), STORE_OK);

    assert_int_equal(store_key_list(f->store, f->org_id, &keys, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(keys[0].key_id, "cccccccccccc");
    assert_string_equal(keys[1].key_id, f->key_id);
    assert_string_equal(keys[2].key_id, f->other_key_id);
    assert_int_equal(keys[2].revoked_at_ms, 3000);
    store_key_list_free(keys, n);

    assert_int_equal(store_key_list(f->store, 9999, &keys, &n), STORE_OK);
    assert_int_equal(n, 0);
    store_key_list_free(keys, n);
}

static void test_key_replace_secret(void **state)
{
    fixture_t *f = *state;
    uint8_t hash[KEY_HASH_LEN];
    api_key_t key;

    fill_hash(hash, 0x11);
    assert_int_equal(store_key_replace_secret(f->store, f->key_id, hash), STORE_OK);
    assert_int_equal(store_key_get(f->store, f->key_id, &key), STORE_OK);
    assert_memory_equal(key.secret_hash, hash, KEY_HASH_LEN);
    api_key_free(&key);

    assert_int_equal(store_key_replace_secret(f->store, "zzzzzzzzzzzz", hash), STORE_NOT_FOUND);
    assert_int_equal(store_key_revoke(f->store, f->key_id, 5000), STORE_OK);
    assert_int_equal(store_key_replace_secret(f->store, f->key_id, hash), STORE_CONFLICT);
}

static void test_key_revoke_idempotent(void **state)
{
    fixture_t *f = *state;
    api_key_t key;

    assert_int_equal(store_key_revoke(f->store, f->key_id, 5000), STORE_OK);
    assert_int_equal(store_key_revoke(f->store, f->key_id, 6000), STORE_OK);
    assert_int_equal(store_key_get(f->store, f->key_id, &key), STORE_OK);
    assert_int_equal(key.revoked_at_ms, 5000); /* the first revocation time stays */
    api_key_free(&key);
    assert_int_equal(store_key_revoke(f->store, "zzzzzzzzzzzz", 5000), STORE_NOT_FOUND);
}

/* A second connection (another node) sees a revocation and a new secret on
 * its next read. */
static void test_key_changes_seen_by_other_connection(void **state)
{
    fixture_t *f = *state;
    store_t *second = NULL;
    uint8_t hash[KEY_HASH_LEN];
    api_key_t key;

    assert_int_equal(store_open(f->uri, &second), STORE_OK);
    assert_int_equal(store_key_get(second, f->key_id, &key), STORE_OK);
    assert_int_equal(key.revoked_at_ms, 0);
    api_key_free(&key);

    fill_hash(hash, 0x22);
    assert_int_equal(store_key_replace_secret(f->store, f->other_key_id, hash), STORE_OK);
    assert_int_equal(store_key_get(second, f->other_key_id, &key), STORE_OK);
    assert_memory_equal(key.secret_hash, hash, KEY_HASH_LEN);
    api_key_free(&key);

    assert_int_equal(store_key_revoke(f->store, f->key_id, 5000), STORE_OK);
    assert_int_equal(store_key_get(second, f->key_id, &key), STORE_OK);
    assert_int_equal(key.revoked_at_ms, 5000);
    api_key_free(&key);
    store_close(second);
}

/* ---- agents ---- */

static void test_agents_import_sets_ids(void **state)
{
    fixture_t *f = *state;
    agent_t agents[3];

    make_agent(&agents[0], "first", 1);
    make_agent(&agents[1], "second", 0);
    make_agent(&agents[2], "third", 1);
    assert_int_equal(store_agents_import(f->store, f->org_id, agents, 3), STORE_OK);
    assert_true(agents[0].id > 0);
    assert_int_equal(agents[1].id, agents[0].id + 1);
    assert_int_equal(agents[2].id, agents[0].id + 2);
    for (int i = 0; i < 3; i++)
        agent_free(&agents[i]);
    assert_int_equal(query_int(f, "SELECT count(*) FROM agents"), 3);
}

static void test_agents_import_all_or_nothing(void **state)
{
    fixture_t *f = *state;
    agent_t agents[2];

    /* the second agent breaks a NOT NULL constraint, so the first is not kept */
    make_agent(&agents[0], "good", 1);
    make_agent(&agents[1], "bad", 1);
    free(agents[1].prompt);
    agents[1].prompt = NULL;
    assert_int_equal(store_agents_import(f->store, f->org_id, agents, 2), STORE_ERROR);
    assert_int_equal(agents[0].id, 0);
    assert_int_equal(agents[1].id, 0);
    agent_free(&agents[0]);
    agent_free(&agents[1]);
    assert_int_equal(query_int(f, "SELECT count(*) FROM agents"), 0);
    assert_int_equal(query_int(f, "SELECT agents_rev FROM orgs WHERE slug = 'acme'"), 0);

    /* the store still works after the failed transaction */
    make_agent(&agents[0], "orphan", 1);
    assert_int_equal(store_agents_import(f->store, 9999, agents, 1), STORE_NOT_FOUND);
    assert_int_equal(agents[0].id, 0);
    agent_free(&agents[0]);
    import_one(f, f->org_id, "after", 1);
}

static void test_agent_get_round_trip(void **state)
{
    fixture_t *f = *state;
    int64_t id = import_one(f, f->org_id, "Weekly KPI summary", 1);
    agent_t agent;

    assert_int_equal(store_agent_get(f->store, f->org_id, id, &agent), STORE_OK);
    assert_int_equal(agent.id, id);
    assert_int_equal(agent.org_id, f->org_id);
    assert_string_equal(agent.name, "Weekly KPI summary");
    assert_string_equal(agent.description, "KPIs for one region");
    assert_int_equal(agent.published, 1);
    assert_null(agent.system);
    assert_string_equal(agent.prompt, "Summarize {{region}}.");
    assert_string_equal(agent.provider, "echo");
    assert_string_equal(agent.model, "gpt-4o-mini");
    assert_int_equal(agent.has_temperature, 1);
    assert_true(agent.temperature == 0.25);
    assert_int_equal(agent.max_tokens, 800);
    assert_int_equal(agent.timeout_ms, 120000);
    assert_int_equal(agent.n_params, 1);
    assert_string_equal(agent.params[0].name, "region");
    assert_string_equal(agent.params[0].description, "Sales region");
    assert_int_equal(agent.params[0].required, 1);
    assert_int_equal(agent.params[0].n_options, 2);
    assert_string_equal(agent.params[0].options[1], "EU");
    assert_null(agent.params[0].default_value);
    agent_free(&agent);
}

static void test_agent_get_unset_fields(void **state)
{
    fixture_t *f = *state;
    agent_t agent;
    int64_t id;

    memset(&agent, 0, sizeof(agent));
    agent.name = strdup("bare");
    agent.prompt = strdup("Hello.");
    agent.provider = strdup("echo");
    agent.published = 1;
    agent.temperature = 0.1; /* kept out because has_temperature is 0 */
    assert_int_equal(store_agents_import(f->store, f->org_id, &agent, 1), STORE_OK);
    id = agent.id;
    agent_free(&agent);

    assert_int_equal(store_agent_get(f->store, f->org_id, id, &agent), STORE_OK);
    assert_null(agent.description);
    assert_null(agent.model);
    assert_int_equal(agent.has_temperature, 0);
    assert_int_equal(agent.max_tokens, 0);
    assert_int_equal(agent.timeout_ms, 0);
    assert_int_equal(agent.n_params, 0);
    agent_free(&agent);
}

static void test_agent_get_hides_unpublished_and_foreign(void **state)
{
    fixture_t *f = *state;
    int64_t hidden = import_one(f, f->org_id, "draft", 0);
    int64_t foreign = import_one(f, f->other_org_id, "theirs", 1);
    agent_t agent;

    assert_int_equal(store_agent_get(f->store, f->org_id, hidden, &agent), STORE_NOT_FOUND);
    assert_int_equal(store_agent_get(f->store, f->org_id, foreign, &agent), STORE_NOT_FOUND);
    assert_int_equal(store_agent_get(f->store, f->org_id, 424242, &agent), STORE_NOT_FOUND);
    assert_int_equal(store_agent_get(f->store, f->other_org_id, foreign, &agent), STORE_OK);
    agent_free(&agent);
}

static void test_agent_publish_unpublish(void **state)
{
    fixture_t *f = *state;
    int64_t id = import_one(f, f->org_id, "draft", 0);
    agent_t agent;

    assert_int_equal(store_agent_set_published(f->store, id, 1), STORE_OK);
    assert_int_equal(store_agent_get(f->store, f->org_id, id, &agent), STORE_OK);
    agent_free(&agent);
    assert_int_equal(store_agent_set_published(f->store, id, 0), STORE_OK);
    assert_int_equal(store_agent_get(f->store, f->org_id, id, &agent), STORE_NOT_FOUND);
    assert_int_equal(store_agent_set_published(f->store, 424242, 1), STORE_NOT_FOUND);
}

static void test_agents_list_pages_and_total(void **state)
{
    fixture_t *f = *state;
    int64_t published_ids[25];
    size_t n_published = 0;
    agent_t *page = NULL;
    size_t n = 0;
    int64_t total = -1;

    /* 25 published agents, every sixth import unpublished, one in another org */
    for (int i = 0; i < 30; i++) {
        char name[32];
        int published = i % 6 != 5;
        int64_t id;

        snprintf(name, sizeof(name), "agent %d", i);
        id = import_one(f, f->org_id, name, published);
        if (published)
            published_ids[n_published++] = id;
    }
    import_one(f, f->other_org_id, "elsewhere", 1);
    assert_int_equal(n_published, 25);

    assert_int_equal(store_agents_list(f->store, f->org_id, 10, 0, &page, &n, &total), STORE_OK);
    assert_int_equal(total, 25);
    assert_int_equal(n, 10);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(page[i].id, published_ids[i]);
    assert_int_equal(page[0].n_params, 1);
    store_agent_list_free(page, n);

    assert_int_equal(store_agents_list(f->store, f->org_id, 10, 20, &page, &n, &total), STORE_OK);
    assert_int_equal(total, 25);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(page[i].id, published_ids[20 + i]);
    store_agent_list_free(page, n);

    /* past the end: no page, but the total */
    assert_int_equal(store_agents_list(f->store, f->org_id, 10, 25, &page, &n, &total), STORE_OK);
    assert_int_equal(total, 25);
    assert_int_equal(n, 0);
    assert_null(page);

    assert_int_equal(store_agents_list(f->store, f->other_org_id, 100, 0, &page, &n, &total), STORE_OK);
    assert_int_equal(total, 1);
    assert_int_equal(n, 1);
    assert_string_equal(page[0].name, "elsewhere");
    store_agent_list_free(page, n);

    assert_int_equal(store_agents_list(f->store, 9999, 20, 0, &page, &n, &total), STORE_OK);
    assert_int_equal(total, 0);
    assert_int_equal(n, 0);
}

static void test_agents_list_all_includes_unpublished(void **state)
{
    fixture_t *f = *state;
    int64_t first = import_one(f, f->org_id, "published", 1);
    int64_t second = import_one(f, f->org_id, "draft", 0);
    agent_t *agents = NULL;
    size_t n = 0;

    import_one(f, f->other_org_id, "elsewhere", 1);
    assert_int_equal(store_agents_list_all(f->store, f->org_id, &agents, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(agents[0].id, first);
    assert_int_equal(agents[0].published, 1);
    assert_int_equal(agents[1].id, second);
    assert_int_equal(agents[1].published, 0);
    assert_string_equal(agents[1].name, "draft");
    assert_int_equal(agents[1].n_params, 1);
    store_agent_list_free(agents, n);

    assert_int_equal(store_agents_list_all(f->store, 9999, &agents, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(agents);
}

/* A second connection, as another node would have, reads the revision
 * change through the key lookup. */
static void test_agents_rev_changes_across_connections(void **state)
{
    fixture_t *f = *state;
    store_t *second = NULL;
    api_key_t key;
    int64_t rev_before, rev_after_import, rev_after_publish;
    int64_t id;

    assert_int_equal(store_open(f->uri, &second), STORE_OK);
    assert_int_equal(store_key_get(second, f->key_id, &key), STORE_OK);
    rev_before = key.agents_rev;
    api_key_free(&key);

    id = import_one(f, f->org_id, "new", 0);
    assert_int_equal(store_key_get(second, f->key_id, &key), STORE_OK);
    rev_after_import = key.agents_rev;
    api_key_free(&key);
    assert_true(rev_after_import != rev_before);

    assert_int_equal(store_agent_set_published(f->store, id, 1), STORE_OK);
    assert_int_equal(store_key_get(second, f->key_id, &key), STORE_OK);
    rev_after_publish = key.agents_rev;
    api_key_free(&key);
    assert_true(rev_after_publish != rev_after_import);

    /* another org's change leaves this org's revision alone */
    import_one(f, f->other_org_id, "theirs", 1);
    assert_int_equal(store_key_get(second, f->key_id, &key), STORE_OK);
    assert_int_equal(key.agents_rev, rev_after_publish);
    api_key_free(&key);

    store_close(second);
}

/* ---- runs: create and get ---- */

static void test_run_create_and_get(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    int64_t other_agent_id = import_one(f, f->org_id, "b", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_string_equal(run.id, id);
    assert_int_equal(run.org_id, f->org_id);
    assert_int_equal(run.agent_id, agent_id);
    assert_string_equal(run.key_id, f->key_id);
    assert_int_equal(run.status, RUN_PENDING);
    assert_int_equal(run.created_at_ms, T0);
    assert_int_equal(run.started_at_ms, 0);
    assert_int_equal(run.completed_at_ms, 0);
    assert_null(run.output);
    assert_null(run.error);
    assert_int_equal(run.has_usage, 0);
    assert_string_equal(run.prompt, "Summarize EU.");
    assert_string_equal(run.system, "You are concise.");
    assert_string_equal(run.provider, "echo");
    assert_string_equal(run.model, "m1");
    assert_int_equal(run.has_temperature, 1);
    assert_true(run.temperature == 0.5);
    assert_int_equal(run.max_tokens, 100);
    assert_int_equal(run.timeout_ms, 30000);
    assert_int_equal(run.attempts, 0);
    run_free(&run);

    assert_int_equal(store_run_get(f->store, f->org_id, other_agent_id, id, &run), STORE_NOT_FOUND);
    assert_int_equal(store_run_get(f->store, f->other_org_id, agent_id, id, &run), STORE_NOT_FOUND);
    run_id_of(2, id);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_NOT_FOUND);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, "not-a-uuid", &run), STORE_NOT_FOUND);
}

static void test_run_create_unset_fields(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    make_run(&run, f, agent_id, f->key_id, 1, T0);
    run.system = NULL;
    run.model = NULL;
    run.has_temperature = 0;
    run.max_tokens = 0;
    run.timeout_ms = 0;
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_OK);
    run_id_of(1, id);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_null(run.system);
    assert_null(run.model);
    assert_int_equal(run.has_temperature, 0);
    assert_int_equal(run.max_tokens, 0);
    assert_int_equal(run.timeout_ms, 0);
    run_free(&run);
}

static void test_run_create_duplicate_id_conflict(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t run;

    create_run(f, agent_id, 1, T0);
    make_run(&run, f, agent_id, f->key_id, 1, T0);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_CONFLICT);
    assert_int_equal(store_run_create(f->store, &run, 5, NULL, NULL, NULL), STORE_CONFLICT);
}

static void test_run_create_unknown_agent_or_key(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t run;

    make_run(&run, f, 424242, f->key_id, 1, T0);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_NOT_FOUND);
    make_run(&run, f, agent_id, "zzzzzzzzzzzz", 2, T0);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), 0);
}

static void test_run_create_idempotency(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    uint8_t hash[32], other_hash[32];
    char existing[RUN_ID_LEN + 1];
    char first_id[RUN_ID_LEN + 1];
    run_t run;

    memset(hash, 1, sizeof(hash));
    memset(other_hash, 2, sizeof(other_hash));
    make_run(&run, f, agent_id, f->key_id, 1, T0);
    assert_int_equal(store_run_create(f->store, &run, 0, "idem-1", hash, existing), STORE_OK);
    snprintf(first_id, sizeof(first_id), "%s", run.id);

    /* the same request again: nothing stored, the first run's id returned */
    make_run(&run, f, agent_id, f->key_id, 2, T0 + 1);
    assert_int_equal(store_run_create(f->store, &run, 0, "idem-1", hash, existing), STORE_DUPLICATE);
    assert_string_equal(existing, first_id);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), 1);

    /* the same key with another request body */
    make_run(&run, f, agent_id, f->key_id, 3, T0 + 2);
    assert_int_equal(store_run_create(f->store, &run, 0, "idem-1", other_hash, existing), STORE_CONFLICT);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), 1);

    /* idempotency keys are per API key */
    make_run(&run, f, agent_id, f->other_key_id, 4, T0 + 3);
    assert_int_equal(store_run_create(f->store, &run, 0, "idem-1", other_hash, existing), STORE_OK);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), 2);
}

static void test_run_create_in_flight_limit(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t run, result;
    run_t *claimed = NULL;
    size_t n = 0;

    make_run(&run, f, agent_id, f->key_id, 1, T0);
    assert_int_equal(store_run_create(f->store, &run, 2, NULL, NULL, NULL), STORE_OK);
    make_run(&run, f, agent_id, f->key_id, 2, T0 + 1);
    assert_int_equal(store_run_create(f->store, &run, 2, NULL, NULL, NULL), STORE_OK);
    make_run(&run, f, agent_id, f->key_id, 3, T0 + 2);
    assert_int_equal(store_run_create(f->store, &run, 2, NULL, NULL, NULL), STORE_LIMIT);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), 2);

    /* another key of the same org has its own count, and 0 means no limit */
    make_run(&run, f, agent_id, f->other_key_id, 4, T0 + 3);
    assert_int_equal(store_run_create(f->store, &run, 2, NULL, NULL, NULL), STORE_OK);
    make_run(&run, f, agent_id, f->key_id, 5, T0 + 4);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_OK);

    /* a running run still counts, a finished one no longer does */
    assert_int_equal(claim(f, "engine-a", T0 + 10, 1000, 3, 1, &claimed, &n), STORE_OK);
    assert_int_equal(n, 1);
    make_run(&run, f, agent_id, f->key_id, 6, T0 + 5);
    assert_int_equal(store_run_create(f->store, &run, 3, NULL, NULL, NULL), STORE_LIMIT);
    complete_run(&result, RUN_SUCCEEDED);
    assert_int_equal(store_run_complete(f->store, claimed[0].id, "engine-a", &result), STORE_OK);
    assert_int_equal(store_run_create(f->store, &run, 3, NULL, NULL, NULL), STORE_OK);
    store_run_list_free(claimed, n);
}

static void test_run_create_replay_at_limit(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    uint8_t hash[32];
    char existing[RUN_ID_LEN + 1];
    run_t run;

    memset(hash, 7, sizeof(hash));
    make_run(&run, f, agent_id, f->key_id, 1, T0);
    assert_int_equal(store_run_create(f->store, &run, 1, "idem-1", hash, existing), STORE_OK);
    make_run(&run, f, agent_id, f->key_id, 2, T0 + 1);
    assert_int_equal(store_run_create(f->store, &run, 1, "idem-1", hash, existing), STORE_DUPLICATE);
    assert_string_equal(existing, "00000000-0000-4000-8000-000000000001");

    /* a new key at the limit is refused, and its key is not remembered */
    make_run(&run, f, agent_id, f->key_id, 3, T0 + 2);
    assert_int_equal(store_run_create(f->store, &run, 1, "idem-2", hash, existing), STORE_LIMIT);
    assert_int_equal(query_int(f, "SELECT count(*) FROM idempotency_keys"), 1);
}

enum { CAP_PROCESSES = 6, CAP_RUNS_EACH = 10, CAP_LIMIT = 17 };

static int create_capped_runs_body(store_t *store, const fixture_t *f, int i)
{
    for (int j = 0; j < CAP_RUNS_EACH; j++) {
        run_t run;
        store_rc_t rc;

        make_run(&run, f, 1, f->key_id, i * CAP_RUNS_EACH + j + 1, T0 + j);
        rc = store_run_create(store, &run, CAP_LIMIT, NULL, NULL, NULL);
        if (rc != STORE_OK && rc != STORE_LIMIT)
            return -1;
    }
    return 0;
}

/* Processes creating runs for one key at once never store more than the
 * key's cap between them. */
static void test_run_create_in_flight_limit_across_processes(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(import_one(f, f->org_id, "a", 1), 1); /* the children use agent 1 */
    run_in_processes(f, CAP_PROCESSES, 1, create_capped_runs_body);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), CAP_LIMIT);
}

enum { IDEM_PROCESSES = 6 };

static int create_same_idempotent_run_body(store_t *store, const fixture_t *f, int i)
{
    uint8_t hash[32];
    char existing[RUN_ID_LEN + 1];
    run_t run;
    store_rc_t rc;

    memset(hash, 9, sizeof(hash));
    make_run(&run, f, 1, f->key_id, i + 1, T0 + i);
    rc = store_run_create(store, &run, 0, "same", hash, existing);
    return rc == STORE_OK || rc == STORE_DUPLICATE ? 0 : -1;
}

/* Requests that race with one idempotency key store one run between them. */
static void test_run_create_idempotency_across_processes(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(import_one(f, f->org_id, "a", 1), 1);
    run_in_processes(f, IDEM_PROCESSES, 1, create_same_idempotent_run_body);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(query_int(f, "SELECT count(*) FROM idempotency_keys"), 1);
}

enum { CONTENTION_PROCESSES = 4, CONTENTION_RUNS_EACH = 100 };

static int create_runs_body(store_t *store, const fixture_t *f, int i)
{
    for (int j = 0; j < CONTENTION_RUNS_EACH; j++) {
        run_t run;

        make_run(&run, f, 1, f->key_id, i * CONTENTION_RUNS_EACH + j + 1, T0 + j);
        if (store_run_create(store, &run, 1000000, NULL, NULL, NULL) != STORE_OK)
            return -1;
    }
    return 0;
}

static int claim_runs_body(store_t *store, const fixture_t *f, int i)
{
    char owner[32];

    snprintf(owner, sizeof(owner), "engine-%d", i);
    for (;;) {
        store_claim_limits_t limits = {7, 0, 0};
        run_t *runs = NULL;
        size_t n = 0;

        if (store_runs_claim(store, owner, T0 + 1000, 60000, 3, &limits, &runs, &n) != STORE_OK)
            return -1;
        store_run_list_free(runs, n);
        if (n == 0)
            return 0;
    }
}

/* Processes writing at once wait for each other instead of failing, and no
 * run is claimed twice. */
static void test_runs_contention_between_processes(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(import_one(f, f->org_id, "a", 1), 1); /* create_runs_body() uses agent 1 */
    run_in_processes(f, CONTENTION_PROCESSES, 1, create_runs_body);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs WHERE status = 'pending'"),
                     CONTENTION_PROCESSES * CONTENTION_RUNS_EACH);

    run_in_processes(f, CONTENTION_PROCESSES, 1, claim_runs_body);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs WHERE status = 'running' AND attempts = 1"),
                     CONTENTION_PROCESSES * CONTENTION_RUNS_EACH);
}

/* ---- runs: claim, leases, completion ---- */

static void test_runs_claim_oldest_first(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t *runs = NULL;
    size_t n = 0;

    create_run(f, agent_id, 1, T0 + 30);
    create_run(f, agent_id, 2, T0 + 10);
    create_run(f, agent_id, 3, T0 + 20);
    create_run(f, agent_id, 4, T0 + 10); /* same time as run 2, stored later */

    assert_int_equal(claim(f, "engine-a", T0 + 100, 1000, 3, 3, &runs, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(run_number(&runs[0]), 2);
    assert_int_equal(run_number(&runs[1]), 4);
    assert_int_equal(run_number(&runs[2]), 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(runs[i].status, RUN_RUNNING);
        assert_int_equal(runs[i].attempts, 1);
        assert_int_equal(runs[i].started_at_ms, T0 + 100);
        assert_string_equal(runs[i].prompt, "Summarize EU.");
        assert_string_equal(runs[i].system, "You are concise.");
        assert_string_equal(runs[i].provider, "echo");
        assert_string_equal(runs[i].model, "m1");
        assert_true(runs[i].temperature == 0.5);
        assert_int_equal(runs[i].max_tokens, 100);
        assert_int_equal(runs[i].timeout_ms, 30000);
        assert_string_equal(runs[i].key_id, f->key_id);
    }
    store_run_list_free(runs, n);

    /* only the newest run is left, because the claimed ones hold live leases */
    assert_int_equal(claim(f, "engine-b", T0 + 200, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(run_number(&runs[0]), 1);
    store_run_list_free(runs, n);

    assert_int_equal(claim(f, "engine-b", T0 + 300, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(runs);

    assert_int_equal(claim(f, "engine-b", T0 + 300, 1000, 3, 0, &runs, &n), STORE_OK);
    assert_int_equal(n, 0);
}

static void test_runs_claim_takes_over_expired_lease(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t *runs = NULL;
    size_t n = 0;
    run_t result, run;
    char id[RUN_ID_LEN + 1];

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    assert_int_equal(claim(f, "engine-a", T0 + 100, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_run_list_free(runs, n);

    /* at the expiry instant the lease still holds */
    assert_int_equal(claim(f, "engine-b", T0 + 1100, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 0);

    assert_int_equal(claim(f, "engine-b", T0 + 1101, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].id, id);
    assert_int_equal(runs[0].attempts, 2);
    assert_int_equal(runs[0].started_at_ms, T0 + 100); /* the first start stays */
    store_run_list_free(runs, n);

    /* the first engine lost the run */
    complete_run(&result, RUN_SUCCEEDED);
    assert_int_equal(store_run_complete(f->store, id, "engine-a", &result), STORE_NOT_FOUND);
    assert_int_equal(status_of(f, agent_id, 1), RUN_RUNNING);

    assert_int_equal(store_run_complete(f->store, id, "engine-b", &result), STORE_OK);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_SUCCEEDED);
    assert_string_equal(run.output, "the output");
    assert_null(run.error);
    assert_int_equal(run.completed_at_ms, T0 + 50);
    assert_int_equal(run.has_usage, 1);
    assert_int_equal(run.input_tokens, 12);
    assert_int_equal(run.output_tokens, 34);
    run_free(&run);

    /* completing twice changes nothing */
    complete_run(&result, RUN_FAILED);
    assert_int_equal(store_run_complete(f->store, id, "engine-b", &result), STORE_NOT_FOUND);
    assert_int_equal(status_of(f, agent_id, 1), RUN_SUCCEEDED);
}

static void test_runs_claim_fails_after_max_attempts(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t *runs = NULL;
    size_t n = 0;
    run_t run;
    char id[RUN_ID_LEN + 1];

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    assert_int_equal(claim(f, "engine-a", T0, 100, 2, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_run_list_free(runs, n);
    assert_int_equal(claim(f, "engine-b", T0 + 200, 100, 2, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(runs[0].attempts, 2);
    store_run_list_free(runs, n);

    /* the second lease expires too: the run has had its two attempts */
    assert_int_equal(claim(f, "engine-c", T0 + 400, 100, 2, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_FAILED);
    assert_int_equal(run.completed_at_ms, T0 + 400);
    assert_non_null(run.error);
    assert_non_null(strstr(run.error, "interrupted 2 times"));
    assert_null(run.output);
    run_free(&run);
}

static void test_run_complete_by_non_owner(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t *runs = NULL;
    size_t n = 0;
    run_t result;
    char id[RUN_ID_LEN + 1];

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);

    /* a pending run has no owner */
    complete_run(&result, RUN_SUCCEEDED);
    assert_int_equal(store_run_complete(f->store, id, "engine-a", &result), STORE_NOT_FOUND);
    assert_int_equal(status_of(f, agent_id, 1), RUN_PENDING);

    assert_int_equal(claim(f, "engine-a", T0, 1000, 3, 10, &runs, &n), STORE_OK);
    store_run_list_free(runs, n);
    assert_int_equal(store_run_complete(f->store, id, "engine-b", &result), STORE_NOT_FOUND);
    assert_int_equal(status_of(f, agent_id, 1), RUN_RUNNING);

    /* a status that is not final is a caller error */
    complete_run(&result, RUN_PENDING);
    assert_int_equal(store_run_complete(f->store, id, "engine-a", &result), STORE_ERROR);
    assert_int_equal(status_of(f, agent_id, 1), RUN_RUNNING);

    complete_run(&result, RUN_FAILED);
    assert_int_equal(store_run_complete(f->store, id, "engine-a", &result), STORE_OK);
    assert_int_equal(status_of(f, agent_id, 1), RUN_FAILED);
}

static void test_runs_renew_extends_lease(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t *runs = NULL;
    size_t n = 0;

    create_run(f, agent_id, 1, T0);
    create_run(f, agent_id, 2, T0 + 1);
    assert_int_equal(claim(f, "engine-a", T0, 1000, 3, 1, &runs, &n), STORE_OK);
    store_run_list_free(runs, n);
    assert_int_equal(claim(f, "engine-b", T0, 1000, 3, 1, &runs, &n), STORE_OK);
    store_run_list_free(runs, n);

    assert_int_equal(store_runs_renew(f->store, "engine-a", T0 + 5000), STORE_OK);

    /* engine-b did not renew, so only its run is taken over (with a long lease) */
    assert_int_equal(claim(f, "engine-c", T0 + 2000, 10000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(run_number(&runs[0]), 2);
    store_run_list_free(runs, n);

    assert_int_equal(claim(f, "engine-c", T0 + 5001, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(run_number(&runs[0]), 1);
    store_run_list_free(runs, n);
}

static void test_runs_release_hands_back(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t *runs = NULL;
    size_t n = 0;
    run_t run, result;
    char id[RUN_ID_LEN + 1];

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    assert_int_equal(claim(f, "engine-a", T0, 1000, 1, 10, &runs, &n), STORE_OK);
    store_run_list_free(runs, n);

    assert_int_equal(store_runs_release(f->store, "engine-a"), STORE_OK);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_PENDING);
    assert_int_equal(run.started_at_ms, 0);
    assert_int_equal(run.attempts, 0);
    run_free(&run);

    /* the released run is claimable at once, with its attempt given back */
    complete_run(&result, RUN_SUCCEEDED);
    assert_int_equal(store_run_complete(f->store, id, "engine-a", &result), STORE_NOT_FOUND);
    assert_int_equal(claim(f, "engine-b", T0 + 1, 1000, 1, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(runs[0].attempts, 1);
    assert_int_equal(runs[0].started_at_ms, T0 + 1);
    store_run_list_free(runs, n);

    /* releasing leaves finished runs and other owners' runs alone */
    assert_int_equal(store_runs_release(f->store, "engine-a"), STORE_OK);
    assert_int_equal(status_of(f, agent_id, 1), RUN_RUNNING);
    assert_int_equal(store_run_complete(f->store, id, "engine-b", &result), STORE_OK);
    assert_int_equal(store_runs_release(f->store, "engine-b"), STORE_OK);
    assert_int_equal(status_of(f, agent_id, 1), RUN_SUCCEEDED);
}

/* ---- runs: fair claiming and caps ---- */

/* Creates a pending run number n of agent_id in org_id with the fixture's key. */
static void create_run_in(fixture_t *f, int64_t org_id, int64_t agent_id, int n, int64_t created_at_ms)
{
    run_t run;

    make_run_in(&run, org_id, agent_id, f->key_id, n, created_at_ms);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_OK);
}

/* A busy organization with an old backlog does not take every slot: the
 * organizations take turns, each oldest first. */
static void test_runs_claim_organizations_take_turns(void **state)
{
    fixture_t *f = *state;
    int64_t busy_agent = import_one(f, f->org_id, "busy", 1);
    int64_t quiet_agent = import_one(f, f->other_org_id, "quiet", 1);
    store_claim_limits_t limits = {5, 0, 0};
    run_t *runs = NULL;
    size_t n = 0;

    for (int i = 1; i <= 10; i++)
        create_run_in(f, f->org_id, busy_agent, i, T0 + i);
    create_run_in(f, f->other_org_id, quiet_agent, 21, T0 + 100);
    create_run_in(f, f->other_org_id, quiet_agent, 22, T0 + 101);

    assert_int_equal(store_runs_claim(f->store, "engine-a", T0 + 200, 1000, 3, &limits, &runs, &n), STORE_OK);
    assert_int_equal(n, 5);
    /* turn 1: each organization's oldest, busy first because its oldest is older */
    assert_int_equal(run_number(&runs[0]), 1);
    assert_int_equal(run_number(&runs[1]), 21);
    /* turn 2 */
    assert_int_equal(run_number(&runs[2]), 2);
    assert_int_equal(run_number(&runs[3]), 22);
    /* then the busy organization alone */
    assert_int_equal(run_number(&runs[4]), 3);
    store_run_list_free(runs, n);
}

static void test_runs_claim_per_org_cap(void **state)
{
    fixture_t *f = *state;
    int64_t agent_a = import_one(f, f->org_id, "a", 1);
    int64_t agent_b = import_one(f, f->other_org_id, "b", 1);
    store_claim_limits_t limits = {10, 2, 0};
    run_t *runs = NULL, *more = NULL;
    run_t result;
    size_t n = 0, n_more = 0;

    for (int i = 1; i <= 4; i++)
        create_run_in(f, f->org_id, agent_a, i, T0 + i);
    create_run_in(f, f->other_org_id, agent_b, 11, T0 + 50);

    assert_int_equal(store_runs_claim(f->store, "engine-a", T0 + 100, 1000, 3, &limits, &runs, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(run_number(&runs[0]), 1);
    assert_int_equal(run_number(&runs[1]), 11);
    assert_int_equal(run_number(&runs[2]), 2);

    /* the cap counts every engine's running runs: another engine gets nothing */
    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 100, 1000, 3, &limits, &more, &n_more), STORE_OK);
    assert_int_equal(n_more, 0);

    /* one finished run frees one slot */
    complete_run(&result, RUN_SUCCEEDED);
    assert_int_equal(store_run_complete(f->store, runs[0].id, "engine-a", &result), STORE_OK);
    store_run_list_free(runs, n);
    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 200, 1000, 3, &limits, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(run_number(&runs[0]), 3);
    store_run_list_free(runs, n);

    /* runs whose lease expired no longer count: engine-c takes over the
     * expired runs, two of the capped organization (before its pending run 4)
     * and the other organization's one */
    assert_int_equal(store_runs_claim(f->store, "engine-c", T0 + 5000, 1000, 3, &limits, &runs, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(status_of(f, agent_a, 4), RUN_PENDING);
    store_run_list_free(runs, n);
}

static void test_runs_claim_per_agent_cap(void **state)
{
    fixture_t *f = *state;
    int64_t capped_agent = import_one(f, f->org_id, "capped", 1);
    int64_t other_agent = import_one(f, f->org_id, "other", 1);
    store_claim_limits_t limits = {10, 0, 1};
    run_t *runs = NULL;
    size_t n = 0;

    create_run_in(f, f->org_id, capped_agent, 1, T0 + 1);
    create_run_in(f, f->org_id, capped_agent, 2, T0 + 2);
    create_run_in(f, f->org_id, capped_agent, 3, T0 + 3);
    create_run_in(f, f->org_id, other_agent, 4, T0 + 4);

    /* the capped agent's later runs do not block the other agent's run */
    assert_int_equal(store_runs_claim(f->store, "engine-a", T0 + 100, 1000, 3, &limits, &runs, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(run_number(&runs[0]), 1);
    assert_int_equal(run_number(&runs[1]), 4);
    store_run_list_free(runs, n);
    assert_int_equal(status_of(f, capped_agent, 2), RUN_PENDING);
    assert_int_equal(status_of(f, capped_agent, 3), RUN_PENDING);
}

enum { CAPPED_CLAIM_PROCESSES = 6, CAPPED_CLAIM_RUNS = 60, CAPPED_CLAIM_MAX_PER_ORG = 7 };

static int claim_capped_body(store_t *store, const fixture_t *f, int i)
{
    store_claim_limits_t limits = {3, CAPPED_CLAIM_MAX_PER_ORG, 0};
    char owner[32];

    snprintf(owner, sizeof(owner), "engine-%d", i);
    for (int round = 0; round < 5; round++) {
        run_t *runs = NULL;
        size_t n = 0;

        if (store_runs_claim(store, owner, T0 + 1000, 60000, 3, &limits, &runs, &n) != STORE_OK)
            return -1;
        store_run_list_free(runs, n);
    }
    return 0;
}

/* Engines claiming at once never exceed a per-organization cap between them. */
static void test_runs_claim_cap_across_processes(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);

    for (int i = 1; i <= CAPPED_CLAIM_RUNS; i++)
        create_run(f, agent_id, i, T0 + i);
    run_in_processes(f, CAPPED_CLAIM_PROCESSES, 1, claim_capped_body);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs WHERE status = 'running'"), CAPPED_CLAIM_MAX_PER_ORG);
}

/* ---- runs: cancellation ---- */

static void test_run_cancel_pending_and_finished(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t *runs = NULL;
    run_t out, result;
    size_t n = 0;

    create_run(f, agent_id, 1, T0);
    create_run(f, agent_id, 2, T0 + 1);
    run_id_of(1, id);

    /* a pending run ends at once and never starts */
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 10, &out), STORE_OK);
    assert_int_equal(out.status, RUN_CANCELLED);
    assert_int_equal(out.completed_at_ms, T0 + 10);
    run_free(&out);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &out), STORE_OK);
    assert_int_equal(out.status, RUN_CANCELLED);
    assert_int_equal(out.completed_at_ms, T0 + 10);
    run_free(&out);
    assert_int_equal(claim(f, "engine-a", T0 + 30, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(run_number(&runs[0]), 2);

    /* a finished run cannot be cancelled, and out still shows it */
    complete_run(&result, RUN_SUCCEEDED);
    assert_int_equal(store_run_complete(f->store, runs[0].id, "engine-a", &result), STORE_OK);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, runs[0].id, T0 + 40, &out), STORE_CONFLICT);
    assert_int_equal(out.status, RUN_SUCCEEDED);
    run_free(&out);
    store_run_list_free(runs, n);

    /* unknown, foreign and malformed ids */
    run_id_of(3, id);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0, &out), STORE_NOT_FOUND);
    run_id_of(1, id);
    assert_int_equal(store_run_cancel(f->store, f->other_org_id, agent_id, id, T0, &out), STORE_NOT_FOUND);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id + 1, id, T0, &out), STORE_NOT_FOUND);
}

static void test_run_cancel_running_marks_it(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char ids[4][RUN_ID_LEN + 1];
    run_t *runs = NULL;
    run_t out, result;
    size_t n = 0, n_ids = 0;

    create_run(f, agent_id, 1, T0);
    create_run(f, agent_id, 2, T0 + 1);
    assert_int_equal(claim(f, "engine-a", T0 + 10, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 2);

    assert_int_equal(store_runs_cancel_requested(f->store, "engine-a", ids, 4, &n_ids), STORE_OK);
    assert_int_equal(n_ids, 0);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, runs[0].id, T0 + 20, &out), STORE_OK);
    assert_int_equal(out.status, RUN_RUNNING); /* its engine ends it */
    run_free(&out);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, runs[0].id, T0 + 30, &out), STORE_OK);
    run_free(&out);

    assert_int_equal(store_runs_cancel_requested(f->store, "engine-a", ids, 4, &n_ids), STORE_OK);
    assert_int_equal(n_ids, 1);
    assert_string_equal(ids[0], runs[0].id);
    assert_int_equal(store_runs_cancel_requested(f->store, "engine-b", ids, 4, &n_ids), STORE_OK);
    assert_int_equal(n_ids, 0);

    /* the engine completes it as cancelled, keeping the partial output */
    complete_run(&result, RUN_CANCELLED);
    result.output = "partial";
    assert_int_equal(store_run_complete(f->store, runs[0].id, "engine-a", &result), STORE_OK);
    assert_int_equal(status_of(f, agent_id, run_number(&runs[0])), RUN_CANCELLED);
    assert_int_equal(store_runs_cancel_requested(f->store, "engine-a", ids, 4, &n_ids), STORE_OK);
    assert_int_equal(n_ids, 0);

    /* a marked run handed back at shutdown ends cancelled, not pending */
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, runs[1].id, T0 + 40, &out), STORE_OK);
    run_free(&out);
    assert_int_equal(store_runs_release(f->store, "engine-a"), STORE_OK);
    assert_int_equal(status_of(f, agent_id, run_number(&runs[1])), RUN_CANCELLED);
    store_run_list_free(runs, n);
}

/* A marked run whose engine died is not run again by the next engine. */
static void test_run_cancel_expired_not_claimed(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t *runs = NULL;
    run_t out;
    size_t n = 0;

    create_run(f, agent_id, 1, T0);
    assert_int_equal(claim(f, "engine-a", T0 + 10, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, runs[0].id, T0 + 20, &out), STORE_OK);
    run_free(&out);
    store_run_list_free(runs, n);

    assert_int_equal(claim(f, "engine-b", T0 + 5000, 1000, 3, 10, &runs, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(status_of(f, agent_id, 1), RUN_CANCELLED);
}

/* ---- shared limits (stores where several processes serve the API) ---- */

static void test_ratelimit_bucket_refills(void **state)
{
    fixture_t *f = *state;
    ratelimit_result_t r;

    if (!store_shares_limits(f->store)) {
        print_message("# skipped: this store keeps rate limits in process memory\n");
        skip();
    }
    /* 60 a minute is one a second, with a burst of 3 */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_ratelimit_take(f->store, "key:a", 60, 3, T0, 1, &r), STORE_OK);
        assert_int_equal(r.allowed, 1);
        assert_int_equal(r.limit, 3);
        assert_int_equal(r.remaining, 2 - i);
    }
    assert_int_equal(store_ratelimit_take(f->store, "key:a", 60, 3, T0 + 500, 1, &r), STORE_OK);
    assert_int_equal(r.allowed, 0);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after_s, 1);
    assert_int_equal(r.reset_s, 3);

    /* a peek neither takes nor writes */
    assert_int_equal(store_ratelimit_take(f->store, "key:a", 60, 3, T0 + 1000, 0, &r), STORE_OK);
    assert_int_equal(r.allowed, 1);
    assert_int_equal(store_ratelimit_take(f->store, "key:b", 60, 3, T0, 0, &r), STORE_OK);
    assert_int_equal(r.allowed, 1);
    assert_int_equal(r.remaining, 3);

    /* one second later one token is back, and only one */
    assert_int_equal(store_ratelimit_take(f->store, "key:a", 60, 3, T0 + 1000, 1, &r), STORE_OK);
    assert_int_equal(r.allowed, 1);
    assert_int_equal(store_ratelimit_take(f->store, "key:a", 60, 3, T0 + 1000, 1, &r), STORE_OK);
    assert_int_equal(r.allowed, 0);

    /* a long pause refills to the burst, not beyond */
    assert_int_equal(store_ratelimit_take(f->store, "key:a", 60, 3, T0 + 600000, 1, &r), STORE_OK);
    assert_int_equal(r.allowed, 1);
    assert_int_equal(r.remaining, 2);

    /* another name has its own bucket */
    assert_int_equal(store_ratelimit_take(f->store, "key:b", 60, 3, T0, 1, &r), STORE_OK);
    assert_int_equal(r.remaining, 2);
}

enum { RATE_PROCESSES = 6, RATE_TAKES_EACH = 40, RATE_BURST = 50 };

static int take_tokens_body(store_t *store, const fixture_t *f, int i)
{
    int allowed = 0;

    for (int j = 0; j < RATE_TAKES_EACH; j++) {
        ratelimit_result_t r;

        /* the clock does not advance, so nothing refills */
        if (store_ratelimit_take(store, "key:shared", 1, RATE_BURST, T0, 1, &r) != STORE_OK)
            return -1;
        allowed += r.allowed;
    }
    /* the exit status carries the count */
    return allowed;
}

static void test_ratelimit_shared_across_processes(void **state)
{
    fixture_t *f = *state;
    pid_t pids[RATE_PROCESSES];
    int total = 0;

    if (!store_shares_limits(f->store)) {
        print_message("# skipped: this store keeps rate limits in process memory\n");
        skip();
    }
    for (int i = 0; i < RATE_PROCESSES; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            store_t *store = NULL;
            int allowed;

            if (store_open(f->uri, &store) != STORE_OK)
                _exit(255);
            allowed = take_tokens_body(store, f, i);
            store_close(store);
            _exit(allowed < 0 ? 255 : allowed);
        }
    }
    for (int i = 0; i < RATE_PROCESSES; i++) {
        int status = 0;

        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_not_equal(WEXITSTATUS(status), 255);
        total += WEXITSTATUS(status);
    }
    /* 240 takes against a burst of 50: exactly 50 allowed between them */
    assert_int_equal(total, RATE_BURST);
}

/* ---- PostgreSQL only: notifications and connection loss ---- */

static int readable_within(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, timeout_ms) > 0;
}

/* Waits until fd polls readable and drains; returns the notifications counted. */
static int wait_and_drain(store_t *store, int fd)
{
    int count = 0;

    for (int i = 0; i < 50 && count == 0; i++) {
        if (readable_within(fd, 100))
            count += store_notifications_drain(store);
    }
    return count;
}

static void test_notify_fd_wakes_on_run_created(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    store_t *listener = NULL;
    run_t *runs = NULL;
    run_t out;
    size_t n = 0;
    int fd;

    assert_int_equal(store_open(f->uri, &listener), STORE_OK);
    fd = store_notify_fd(listener);
    assert_true(fd >= 0);
    assert_int_equal(store_notify_fd(listener), fd);
    assert_false(readable_within(fd, 50));

    /* a run created through another connection */
    create_run(f, agent_id, 1, T0);
    assert_true(wait_and_drain(listener, fd) >= 1);
    assert_false(readable_within(fd, 50));

    /* an idempotent replay stores nothing, so it sends nothing */
    {
        uint8_t hash[32];
        char existing[RUN_ID_LEN + 1];
        run_t run;

        memset(hash, 3, sizeof(hash));
        make_run(&run, f, agent_id, f->key_id, 2, T0);
        assert_int_equal(store_run_create(f->store, &run, 5, "k", hash, existing), STORE_OK);
        assert_true(wait_and_drain(listener, fd) >= 1);
        make_run(&run, f, agent_id, f->key_id, 3, T0);
        assert_int_equal(store_run_create(f->store, &run, 5, "k", hash, existing), STORE_DUPLICATE);
        assert_false(readable_within(fd, 200));
    }

    /* a cancellation of a running run is sent to its engine */
    assert_int_equal(claim(f, "engine-a", T0 + 10, 60000, 3, 1, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_false(readable_within(fd, 50));
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, runs[0].id, T0 + 20, &out), STORE_OK);
    run_free(&out);
    assert_true(wait_and_drain(listener, fd) >= 1);
    store_run_list_free(runs, n);
    store_close(listener);
}

/* The descriptor stays the same when the listening connection is lost, and
 * notifications arrive again once it is back. */
static void test_notify_fd_survives_lost_connection(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    store_t *listener = NULL;
    run_t *runs = NULL;
    size_t n = 0;
    int fd;

    assert_int_equal(store_open(f->uri, &listener), STORE_OK);
    fd = store_notify_fd(listener);
    assert_true(fd >= 0);
    pg_terminate_other_connections(f);

    /* the end of the connection polls readable; the drain reconnects and
     * reports it, because notifications may have been missed */
    assert_true(wait_and_drain(listener, fd) >= 1);
    assert_int_equal(store_notify_fd(listener), fd);

    /* the store's own connection was lost too: a claim reconnects it */
    create_run(f, agent_id, 1, T0);
    assert_true(wait_and_drain(listener, fd) >= 1);
    assert_int_equal(store_runs_claim(listener, "engine-a", T0 + 10, 1000, 3, &(store_claim_limits_t){5, 0, 0},
                                      &runs, &n),
                     STORE_OK);
    assert_int_equal(n, 1);
    store_run_list_free(runs, n);
    store_close(listener);
}

/* A database restart ends every connection; the next call reconnects. */
static void test_store_reconnects_after_lost_connection(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    api_key_t key;

    pg_terminate_other_connections(f);
    assert_int_equal(store_ping(f->store), STORE_OK);

    pg_terminate_other_connections(f);
    assert_int_equal(store_key_get(f->store, f->key_id, &key), STORE_OK);
    api_key_free(&key);

    /* a write after the loss works too, and is stored once */
    pg_terminate_other_connections(f);
    create_run(f, agent_id, 1, T0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM runs"), 1);
}

/* ---- the suites ---- */

#define COMMON_TESTS(SETUP, SETUP_EMPTY)                                                          \
    cmocka_unit_test_setup_teardown(test_open_reopen_keeps_data, SETUP_EMPTY, teardown),          \
    cmocka_unit_test_setup_teardown(test_open_rejects_newer_schema, SETUP_EMPTY, teardown),       \
    cmocka_unit_test_setup_teardown(test_open_concurrent_processes, SETUP_EMPTY, teardown),       \
    cmocka_unit_test_setup_teardown(test_org_create_find_conflict, SETUP, teardown),              \
    cmocka_unit_test_setup_teardown(test_key_get_fields, SETUP, teardown),                        \
    cmocka_unit_test_setup_teardown(test_key_create_conflict_and_missing_org, SETUP, teardown),   \
    cmocka_unit_test_setup_teardown(test_key_list_oldest_first, SETUP, teardown),                 \
    cmocka_unit_test_setup_teardown(test_key_replace_secret, SETUP, teardown),                    \
    cmocka_unit_test_setup_teardown(test_key_revoke_idempotent, SETUP, teardown),                 \
    cmocka_unit_test_setup_teardown(test_key_changes_seen_by_other_connection, SETUP, teardown),  \
    cmocka_unit_test_setup_teardown(test_agents_import_sets_ids, SETUP, teardown),                \
    cmocka_unit_test_setup_teardown(test_agents_import_all_or_nothing, SETUP, teardown),          \
    cmocka_unit_test_setup_teardown(test_agent_get_round_trip, SETUP, teardown),                  \
    cmocka_unit_test_setup_teardown(test_agent_get_unset_fields, SETUP, teardown),                \
    cmocka_unit_test_setup_teardown(test_agent_get_hides_unpublished_and_foreign, SETUP, teardown), \
    cmocka_unit_test_setup_teardown(test_agent_publish_unpublish, SETUP, teardown),               \
    cmocka_unit_test_setup_teardown(test_agents_list_pages_and_total, SETUP, teardown),           \
    cmocka_unit_test_setup_teardown(test_agents_list_all_includes_unpublished, SETUP, teardown),  \
    cmocka_unit_test_setup_teardown(test_agents_rev_changes_across_connections, SETUP, teardown), \
    cmocka_unit_test_setup_teardown(test_run_create_and_get, SETUP, teardown),                    \
    cmocka_unit_test_setup_teardown(test_run_create_unset_fields, SETUP, teardown),               \
    cmocka_unit_test_setup_teardown(test_run_create_duplicate_id_conflict, SETUP, teardown),      \
    cmocka_unit_test_setup_teardown(test_run_create_unknown_agent_or_key, SETUP, teardown),       \
    cmocka_unit_test_setup_teardown(test_run_create_idempotency, SETUP, teardown),                \
    cmocka_unit_test_setup_teardown(test_run_create_in_flight_limit, SETUP, teardown),            \
    cmocka_unit_test_setup_teardown(test_run_create_replay_at_limit, SETUP, teardown),            \
    cmocka_unit_test_setup_teardown(test_run_create_in_flight_limit_across_processes, SETUP, teardown), \
    cmocka_unit_test_setup_teardown(test_run_create_idempotency_across_processes, SETUP, teardown), \
    cmocka_unit_test_setup_teardown(test_runs_contention_between_processes, SETUP, teardown),     \
    cmocka_unit_test_setup_teardown(test_runs_claim_oldest_first, SETUP, teardown),               \
    cmocka_unit_test_setup_teardown(test_runs_claim_takes_over_expired_lease, SETUP, teardown),   \
    cmocka_unit_test_setup_teardown(test_runs_claim_fails_after_max_attempts, SETUP, teardown),   \
    cmocka_unit_test_setup_teardown(test_run_complete_by_non_owner, SETUP, teardown),             \
    cmocka_unit_test_setup_teardown(test_runs_renew_extends_lease, SETUP, teardown),              \
    cmocka_unit_test_setup_teardown(test_runs_release_hands_back, SETUP, teardown),               \
    cmocka_unit_test_setup_teardown(test_runs_claim_organizations_take_turns, SETUP, teardown),   \
    cmocka_unit_test_setup_teardown(test_runs_claim_per_org_cap, SETUP, teardown),                \
    cmocka_unit_test_setup_teardown(test_runs_claim_per_agent_cap, SETUP, teardown),              \
    cmocka_unit_test_setup_teardown(test_runs_claim_cap_across_processes, SETUP, teardown),       \
    cmocka_unit_test_setup_teardown(test_run_cancel_pending_and_finished, SETUP, teardown),       \
    cmocka_unit_test_setup_teardown(test_run_cancel_running_marks_it, SETUP, teardown),           \
    cmocka_unit_test_setup_teardown(test_run_cancel_expired_not_claimed, SETUP, teardown),        \
    cmocka_unit_test_setup_teardown(test_ratelimit_bucket_refills, SETUP, teardown),              \
    cmocka_unit_test_setup_teardown(test_ratelimit_shared_across_processes, SETUP, teardown)

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {COMMON_TESTS(setup_sqlite, setup_empty_sqlite)};
    const struct CMUnitTest pg_tests[] = {
        COMMON_TESTS(setup_pg, setup_empty_pg),
        cmocka_unit_test_setup_teardown(test_notify_fd_wakes_on_run_created, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_notify_fd_survives_lost_connection, setup_pg, teardown),
        cmocka_unit_test_setup_teardown(test_store_reconnects_after_lost_connection, setup_pg, teardown),
    };
    const char *admin_url = getenv("PUSHAI_TEST_PG_URL");
    int failed;

    log_set_level(LOG_ERROR);
    failed = cmocka_run_group_tests_name("store on SQLite", sqlite_tests, NULL, NULL);
    if (admin_url == NULL || admin_url[0] == '\0') {
        printf("# store on PostgreSQL: skipped, because PUSHAI_TEST_PG_URL is not set"
               " (scripts/pg.sh start prints a URL for it)\n");
        return failed;
    }
    snprintf(pg_admin_url, sizeof(pg_admin_url), "%s", admin_url);
    failed += cmocka_run_group_tests_name("store on PostgreSQL", pg_tests, group_setup_pg, group_teardown_pg);
    return failed;
}

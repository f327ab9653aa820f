/*
 * Tests of the SQLite store against real database files in a temporary
 * directory that each test creates and removes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "model.h"
#include "store.h"

/* Fake clock for runs: created_at and claim times are set by the tests. */
#define T0 1000000

typedef struct {
    char dir[256];
    char path[300];
    store_t *store;
    int64_t org_id;
    int64_t other_org_id;
    char key_id[KEY_ID_LEN + 1];       /* a key of org_id */
    char other_key_id[KEY_ID_LEN + 1]; /* another key of org_id */
} fixture_t;

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

static void make_temp_path(fixture_t *f)
{
    const char *tmp = getenv("TMPDIR");

    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    assert_true((size_t)snprintf(f->dir, sizeof(f->dir), "%s/pushai-store-XXXXXX", tmp) < sizeof(f->dir));
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/pushai.db", f->dir);
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

/* Reads one integer with a plain SQLite connection, bypassing the store. */
static int64_t query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t value = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        value = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return value;
}

static void exec_raw(const char *path, const char *sql)
{
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
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

/* A pending run of agent_id created by key_id at created_at_ms. */
static void make_run(run_t *run, const fixture_t *f, int64_t agent_id, const char *key_id, int n,
                     int64_t created_at_ms)
{
    memset(run, 0, sizeof(*run));
    snprintf(run->id, sizeof(run->id), "00000000-0000-4000-8000-%012d", n);
    run->org_id = f->org_id;
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

static void create_run(fixture_t *f, int64_t agent_id, int n, int64_t created_at_ms)
{
    run_t run;

    make_run(&run, f, agent_id, f->key_id, n, created_at_ms);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_OK);
}

static void run_id_of(int n, char out[RUN_ID_LEN + 1])
{
    snprintf(out, RUN_ID_LEN + 1, "00000000-0000-4000-8000-%012d", n);
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

/* ---- fixtures ---- */

static int setup_empty(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    make_temp_path(f);
    *state = f;
    return 0;
}

static int setup_store(void **state)
{
    fixture_t *f;

    setup_empty(state);
    f = *state;
    assert_int_equal(store_open(f->path, &f->store), STORE_OK);
    assert_int_equal(store_org_create(f->store, "acme", "Acme Inc.", &f->org_id), STORE_OK);
    assert_int_equal(store_org_create(f->store, "globex", NULL, &f->other_org_id), STORE_OK);
    snprintf(f->key_id, sizeof(f->key_id), "aaaaaaaaaaaa");
    snprintf(f->other_key_id, sizeof(f->other_key_id), "bbbbbbbbbbbb");
    create_key(f->store, f->org_id, f->key_id, "main", 1000);
    create_key(f->store, f->org_id, f->other_key_id, NULL, 2000);
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    store_close(f->store);
    remove_dir(f->dir);
    free(f);
    return 0;
}

/* ---- open and migrations ---- */

static void test_open_migrates_fresh_file(void **state)
{
    fixture_t *f = *state;
    struct stat st;
    int64_t org_id;

    assert_int_equal(store_open(f->path, &f->store), STORE_OK);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                                        " ('orgs', 'api_keys', 'agents', 'runs', 'idempotency_keys')"),
                     5);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"), 3);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(store_ping(f->store), STORE_OK);

    /* data survives closing and reopening, and the schema is not applied twice */
    assert_int_equal(store_org_create(f->store, "acme", NULL, &org_id), STORE_OK);
    store_close(f->store);
    f->store = NULL;
    assert_int_equal(store_open(f->path, &f->store), STORE_OK);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(store_org_find(f->store, "acme", &org_id), STORE_OK);
}

static void test_open_sets_wal_mode(void **state)
{
    fixture_t *f = *state;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    assert_int_equal(store_open(f->path, &f->store), STORE_OK);
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_open_rejects_newer_schema(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(store_open(f->path, &f->store), STORE_OK);
    store_close(f->store);
    f->store = NULL;
    exec_raw(f->path, "PRAGMA user_version = 99");
    assert_int_equal(store_open(f->path, &f->store), STORE_ERROR);
    assert_null(f->store);
}

static void test_open_missing_directory_fails(void **state)
{
    fixture_t *f = *state;
    char path[320];

    snprintf(path, sizeof(path), "%s/no-such-dir/pushai.db", f->dir);
    assert_int_equal(store_open(path, &f->store), STORE_ERROR);
    assert_null(f->store);
}

/* Both URI schemes go to PostgreSQL, not to a SQLite file of that name:
 * with nothing listening on the port, opening fails and leaves no store. */
static void test_open_unreachable_postgres_fails(void **state)
{
    fixture_t *f = *state;

    assert_int_equal(store_open("postgresql://127.0.0.1:9/pushai", &f->store), STORE_ERROR);
    assert_null(f->store);
    assert_int_equal(store_open("postgres://127.0.0.1:9/pushai", &f->store), STORE_ERROR);
    assert_null(f->store);
}

/* Several processes open one fresh file at the same moment: each succeeds and
 * the schema is applied once. */
static void test_open_concurrent_processes(void **state)
{
    enum { N_PROCESSES = 6 };
    fixture_t *f = *state;
    pid_t pids[N_PROCESSES];
    int pipe_fds[2];

    assert_int_equal(pipe(pipe_fds), 0);
    for (int i = 0; i < N_PROCESSES; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            store_t *store = NULL;
            char go;
            int64_t org_id;
            char slug[32];
            int ok;

            close(pipe_fds[1]);
            /* wait until the parent releases every child at once */
            if (read(pipe_fds[0], &go, 1) < 0)
                _exit(2);
            snprintf(slug, sizeof(slug), "org-%d", i);
            ok = store_open(f->path, &store) == STORE_OK &&
                 store_org_create(store, slug, NULL, &org_id) == STORE_OK;
            store_close(store);
            _exit(ok ? 0 : 1);
        }
    }
    close(pipe_fds[0]);
    close(pipe_fds[1]); /* EOF wakes every child */

    for (int i = 0; i < N_PROCESSES; i++) {
        int status = 0;

        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM orgs"), N_PROCESSES);
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
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM orgs WHERE slug = 'globex' AND name = 'globex'"), 1);
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

static void test_key_revoke_seen_by_other_connection(void **state)
{
    fixture_t *f = *state;
    store_t *second = NULL;
    api_key_t key;

    assert_int_equal(store_open(f->path, &second), STORE_OK);
    assert_int_equal(store_key_get(second, f->key_id, &key), STORE_OK);
    assert_int_equal(key.revoked_at_ms, 0);
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
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM agents"), 3);
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
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM agents"), 0);
    assert_int_equal(query_int(f->path, "SELECT agents_rev FROM orgs WHERE slug = 'acme'"), 0);

    make_agent(&agents[0], "orphan", 1);
    assert_int_equal(store_agents_import(f->store, 9999, agents, 1), STORE_NOT_FOUND);
    assert_int_equal(agents[0].id, 0);
    agent_free(&agents[0]);
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

/* A second connection, as another process would have, reads the revision
 * change through the key lookup. */
static void test_agents_rev_changes_across_connections(void **state)
{
    fixture_t *f = *state;
    store_t *second = NULL;
    api_key_t key;
    int64_t rev_before, rev_after_import, rev_after_publish;
    int64_t id;

    assert_int_equal(store_open(f->path, &second), STORE_OK);
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
}

static void test_run_create_duplicate_id_conflict(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    run_t run;

    create_run(f, agent_id, 1, T0);
    make_run(&run, f, agent_id, f->key_id, 1, T0);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_CONFLICT);
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
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM runs"), 1);

    /* the same key with another request body */
    make_run(&run, f, agent_id, f->key_id, 3, T0 + 2);
    assert_int_equal(store_run_create(f->store, &run, 0, "idem-1", other_hash, existing), STORE_CONFLICT);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM runs"), 1);

    /* idempotency keys are per API key */
    make_run(&run, f, agent_id, f->other_key_id, 4, T0 + 3);
    assert_int_equal(store_run_create(f->store, &run, 0, "idem-1", other_hash, existing), STORE_OK);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM runs"), 2);
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
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM runs"), 2);

    /* another key of the same org has its own count, and 0 means no limit */
    make_run(&run, f, agent_id, f->other_key_id, 4, T0 + 3);
    assert_int_equal(store_run_create(f->store, &run, 2, NULL, NULL, NULL), STORE_OK);
    make_run(&run, f, agent_id, f->key_id, 5, T0 + 4);
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_OK);

    /* a running run still counts, a finished one no longer does */
    assert_int_equal(store_runs_claim(f->store, "engine-a", T0 + 10, 1000, 3, &(store_claim_limits_t){1, 0, 0}, &claimed, &n), STORE_OK);
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
}

/* A run stored by a process killed right after store_run_create() returned
 * is read back from the WAL by the next process. */
static void test_run_survives_kill(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    int ready_fds[2];
    pid_t pid;
    char ready;
    int status = 0;
    char id[RUN_ID_LEN + 1];
    run_t run;

    store_close(f->store);
    f->store = NULL;
    assert_int_equal(pipe(ready_fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store_t *store = NULL;
        run_t child_run;

        close(ready_fds[0]);
        make_run(&child_run, f, agent_id, f->key_id, 1, T0);
        if (store_open(f->path, &store) != STORE_OK ||
            store_run_create(store, &child_run, 0, NULL, NULL, NULL) != STORE_OK)
            _exit(1);
        /* the connection stays open, so nothing is checkpointed into the main file */
        if (write(ready_fds[1], "r", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready_fds[1]);
    assert_int_equal(read(ready_fds[0], &ready, 1), 1);
    close(ready_fds[0]);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));

    assert_int_equal(store_open(f->path, &f->store), STORE_OK);
    run_id_of(1, id);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_PENDING);
    assert_string_equal(run.prompt, "Summarize EU.");
    run_free(&run);
}

/* Starts n child processes that each open their own connection and run
 * body(store, f, i) at the same moment, and waits for them. Every child must
 * exit 0. */
static void run_in_processes(fixture_t *f, int n, int (*body)(store_t *store, const fixture_t *f, int i))
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
            int ok;

            close(start_fds[1]);
            ok = store_open(f->path, &store) == STORE_OK;
            /* wait until the parent releases every child at once */
            if (read(start_fds[0], &go, 1) < 0)
                ok = 0;
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

enum { CONTENTION_PROCESSES = 4, CONTENTION_RUNS_EACH = 100 };

static int create_runs_body(store_t *store, const fixture_t *f, int i)
{
    for (int j = 0; j < CONTENTION_RUNS_EACH; j++) {
        run_t run;

        make_run(&run, f, 1, f->key_id, i * CONTENTION_RUNS_EACH + j, T0 + j);
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
        run_t *runs = NULL;
        size_t n = 0;

        if (store_runs_claim(store, owner, T0 + 1000, 60000, 3, &(store_claim_limits_t){7, 0, 0}, &runs, &n) != STORE_OK)
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
    int64_t agent_id = import_one(f, f->org_id, "a", 1);

    assert_int_equal(agent_id, 1); /* create_runs_body() uses agent 1 */
    run_in_processes(f, CONTENTION_PROCESSES, create_runs_body);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM runs WHERE status = 'pending'"),
                     CONTENTION_PROCESSES * CONTENTION_RUNS_EACH);

    run_in_processes(f, CONTENTION_PROCESSES, claim_runs_body);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM runs WHERE status = 'running' AND attempts = 1"),
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

    assert_int_equal(store_runs_claim(f->store, "engine-a", T0 + 100, 1000, 3, &(store_claim_limits_t){3, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(runs[0].id, "00000000-0000-4000-8000-000000000002");
    assert_string_equal(runs[1].id, "00000000-0000-4000-8000-000000000004");
    assert_string_equal(runs[2].id, "00000000-0000-4000-8000-000000000003");
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
    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 200, 1000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].id, "00000000-0000-4000-8000-000000000001");
    store_run_list_free(runs, n);

    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 300, 1000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(runs);

    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 300, 1000, 3, &(store_claim_limits_t){0, 0, 0}, &runs, &n), STORE_OK);
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
    assert_int_equal(store_runs_claim(f->store, "engine-a", T0 + 100, 1000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_run_list_free(runs, n);

    /* at the expiry instant the lease still holds */
    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 1100, 1000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 0);

    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 1101, 1000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
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
    assert_int_equal(store_runs_claim(f->store, "engine-a", T0, 100, 2, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_run_list_free(runs, n);
    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 200, 100, 2, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(runs[0].attempts, 2);
    store_run_list_free(runs, n);

    /* the second lease expires too: the run has had its two attempts */
    assert_int_equal(store_runs_claim(f->store, "engine-c", T0 + 400, 100, 2, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
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

    assert_int_equal(store_runs_claim(f->store, "engine-a", T0, 1000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
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
    assert_int_equal(store_runs_claim(f->store, "engine-a", T0, 1000, 3, &(store_claim_limits_t){1, 0, 0}, &runs, &n), STORE_OK);
    store_run_list_free(runs, n);
    assert_int_equal(store_runs_claim(f->store, "engine-b", T0, 1000, 3, &(store_claim_limits_t){1, 0, 0}, &runs, &n), STORE_OK);
    store_run_list_free(runs, n);

    assert_int_equal(store_runs_renew(f->store, "engine-a", T0 + 5000), STORE_OK);

    /* engine-b did not renew, so only its run is taken over (with a long lease) */
    assert_int_equal(store_runs_claim(f->store, "engine-c", T0 + 2000, 10000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].id, "00000000-0000-4000-8000-000000000002");
    store_run_list_free(runs, n);

    assert_int_equal(store_runs_claim(f->store, "engine-c", T0 + 5001, 1000, 3, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].id, "00000000-0000-4000-8000-000000000001");
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
    assert_int_equal(store_runs_claim(f->store, "engine-a", T0, 1000, 1, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
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
    assert_int_equal(store_runs_claim(f->store, "engine-b", T0 + 1, 1000, 1, &(store_claim_limits_t){10, 0, 0}, &runs, &n), STORE_OK);
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

/* ---- runs: fair claiming and limits ---- */

/* A pending run of agent_id in org_id (the key is the fixture's). */
static void create_run_in(fixture_t *f, int64_t org_id, int64_t agent_id, int n, int64_t created_at_ms)
{
    run_t run;

    make_run(&run, f, agent_id, f->key_id, n, created_at_ms);
    run.org_id = org_id;
    assert_int_equal(store_run_create(f->store, &run, 0, NULL, NULL, NULL), STORE_OK);
}

/* Claims for owner and checks that the runs come back as the numbers in expected[], in order. */
static void claim_expect(fixture_t *f, const char *owner, int64_t now_ms, const store_claim_limits_t *limits,
                         const int *expected, size_t n_expected)
{
    run_t *runs = NULL;
    size_t n = 0;
    char id[RUN_ID_LEN + 1];

    assert_int_equal(store_runs_claim(f->store, owner, now_ms, 1000, 3, limits, &runs, &n), STORE_OK);
    assert_int_equal(n, n_expected);
    for (size_t i = 0; i < n; i++) {
        run_id_of(expected[i], id);
        assert_string_equal(runs[i].id, id);
        assert_int_equal(runs[i].status, RUN_RUNNING);
    }
    store_run_list_free(runs, n);
}

static void finish_run(fixture_t *f, const char *owner, int n, run_status_t status)
{
    char id[RUN_ID_LEN + 1];
    run_t result;

    run_id_of(n, id);
    complete_run(&result, status);
    assert_int_equal(store_run_complete(f->store, id, owner, &result), STORE_OK);
}

/* One organization's backlog does not delay the others: they take turns. */
static void test_runs_claim_orgs_take_turns(void **state)
{
    fixture_t *f = *state;
    int64_t third_org_id;
    int64_t agent_a, agent_b, agent_c;
    static const int first_three[] = {1, 11, 21};
    static const int rest[] = {2, 12, 3, 4, 5};

    assert_int_equal(store_org_create(f->store, "initech", NULL, &third_org_id), STORE_OK);
    agent_a = import_one(f, f->org_id, "a", 1);
    agent_b = import_one(f, f->other_org_id, "b", 1);
    agent_c = import_one(f, third_org_id, "c", 1);
    for (int i = 1; i <= 5; i++)
        create_run_in(f, f->org_id, agent_a, i, T0 + i);
    create_run_in(f, f->other_org_id, agent_b, 11, T0 + 10);
    create_run_in(f, f->other_org_id, agent_b, 12, T0 + 11);
    create_run_in(f, third_org_id, agent_c, 21, T0 + 20);

    claim_expect(f, "engine-a", T0 + 100, &(store_claim_limits_t){3, 0, 0}, first_three, 3);
    claim_expect(f, "engine-a", T0 + 100, &(store_claim_limits_t){10, 0, 0}, rest, 5);
}

/* A freed slot goes to the organization with fewer runs running, even when
 * the busy one has older runs waiting. */
static void test_runs_claim_fewest_running_first(void **state)
{
    fixture_t *f = *state;
    int64_t agent_a = import_one(f, f->org_id, "a", 1);
    int64_t agent_b = import_one(f, f->other_org_id, "b", 1);

    for (int i = 1; i <= 5; i++)
        create_run_in(f, f->org_id, agent_a, i, T0 + i);
    claim_expect(f, "engine-a", T0 + 100, &(store_claim_limits_t){2, 0, 0}, (const int[]){1, 2}, 2);

    create_run_in(f, f->other_org_id, agent_b, 11, T0 + 200);
    create_run_in(f, f->other_org_id, agent_b, 12, T0 + 201);
    claim_expect(f, "engine-a", T0 + 300, &(store_claim_limits_t){1, 0, 0}, (const int[]){11}, 1);
    /* 2 running against 1, then a tie that the older run breaks */
    claim_expect(f, "engine-a", T0 + 300, &(store_claim_limits_t){3, 0, 0}, (const int[]){12, 3, 4}, 3);
}

/* The oldest organization goes first in every turn, and a single organization
 * is served oldest first across pages of the index. */
static void test_runs_claim_one_org_pages(void **state)
{
    enum { N_RUNS = 70 };
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    int expected[N_RUNS];

    for (int i = 1; i <= N_RUNS; i++) {
        create_run_in(f, f->org_id, agent_id, i, T0 + i);
        expected[i - 1] = i;
    }
    claim_expect(f, "engine-a", T0 + 100, &(store_claim_limits_t){N_RUNS + 10, 0, 0}, expected, N_RUNS);
}

/* max_per_org counts the runs every engine holds, and frees up when one ends. */
static void test_runs_claim_per_org_limit(void **state)
{
    fixture_t *f = *state;
    int64_t agent_a = import_one(f, f->org_id, "a", 1);
    int64_t agent_b = import_one(f, f->other_org_id, "b", 1);
    const store_claim_limits_t limits = {10, 2, 0};
    static const int first[] = {1, 11, 2};
    static const int after_one_ended[] = {3};

    for (int i = 1; i <= 5; i++)
        create_run_in(f, f->org_id, agent_a, i, T0 + i);
    create_run_in(f, f->other_org_id, agent_b, 11, T0 + 10);

    claim_expect(f, "engine-a", T0 + 100, &limits, first, 3);
    /* another engine sees the same limit */
    claim_expect(f, "engine-b", T0 + 100, &limits, NULL, 0);

    finish_run(f, "engine-a", 1, RUN_SUCCEEDED);
    claim_expect(f, "engine-b", T0 + 200, &limits, after_one_ended, 1);

    /* leases that expired no longer count, and their runs are taken over
     * before pending ones, again in turns */
    claim_expect(f, "engine-c", T0 + 1300, &limits, (const int[]){2, 11, 3}, 3);
}

/* max_per_agent holds back one agent's runs and lets the next agent's through. */
static void test_runs_claim_per_agent_limit(void **state)
{
    enum { N_BUSY = 40 };
    fixture_t *f = *state;
    int64_t busy_agent = import_one(f, f->org_id, "busy", 1);
    int64_t quiet_agent = import_one(f, f->org_id, "quiet", 1);
    const store_claim_limits_t limits = {10, 0, 1};
    static const int first[] = {1, 100};

    /* more runs of the busy agent than one page of the index holds */
    for (int i = 1; i <= N_BUSY; i++)
        create_run_in(f, f->org_id, busy_agent, i, T0 + i);
    create_run_in(f, f->org_id, quiet_agent, 100, T0 + 1000);
    create_run_in(f, f->org_id, quiet_agent, 101, T0 + 1001);

    claim_expect(f, "engine-a", T0 + 2000, &limits, first, 2);
    claim_expect(f, "engine-b", T0 + 2000, &limits, NULL, 0);
    finish_run(f, "engine-a", 100, RUN_FAILED);
    claim_expect(f, "engine-b", T0 + 2000, &limits, (const int[]){101}, 1);
}

/* A claim whose clock reading predates the run's creation (read before the
 * write lock) still records a start no earlier than the creation. */
static void test_runs_claim_start_not_before_creation(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0 + 500);
    claim_expect(f, "engine-a", T0 + 499, &(store_claim_limits_t){10, 0, 0}, (const int[]){1}, 1);
    run_id_of(1, id);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.started_at_ms, T0 + 500);
    run_free(&run);

    /* the same for the completion time of a cancelled pending run */
    create_run(f, agent_id, 2, T0 + 900);
    run_id_of(2, id);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 800, &run), STORE_OK);
    assert_int_equal(run.completed_at_ms, T0 + 900);
    run_free(&run);
}

/* ---- runs: cancellation ---- */

static void test_run_cancel_pending(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 5, &run), STORE_OK);
    assert_string_equal(run.id, id);
    assert_int_equal(run.status, RUN_CANCELLED);
    assert_int_equal(run.completed_at_ms, T0 + 5);
    assert_int_equal(run.started_at_ms, 0);
    assert_null(run.output);
    run_free(&run);

    /* never claimed, and cancelling again changes nothing */
    claim_expect(f, "engine-a", T0 + 10, &(store_claim_limits_t){10, 0, 0}, NULL, 0);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &run), STORE_OK);
    assert_int_equal(run.status, RUN_CANCELLED);
    assert_int_equal(run.completed_at_ms, T0 + 5);
    run_free(&run);
}

static void test_run_cancel_running(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    char ids[4][RUN_ID_LEN + 1];
    size_t n = 0;
    run_t run, result;

    create_run(f, agent_id, 1, T0);
    create_run(f, agent_id, 2, T0 + 1);
    run_id_of(1, id);
    claim_expect(f, "engine-a", T0 + 10, &(store_claim_limits_t){10, 0, 0}, (const int[]){1, 2}, 2);

    assert_int_equal(store_runs_cancel_requested(f->store, "engine-a", ids, 4, &n), STORE_OK);
    assert_int_equal(n, 0);

    /* the run keeps running until its owner ends it */
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &run), STORE_OK);
    assert_int_equal(run.status, RUN_RUNNING);
    assert_int_equal(run.completed_at_ms, 0);
    run_free(&run);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 21, &run), STORE_OK);
    assert_int_equal(run.status, RUN_RUNNING);
    run_free(&run);

    assert_int_equal(store_runs_cancel_requested(f->store, "engine-a", ids, 4, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], id);
    assert_int_equal(store_runs_cancel_requested(f->store, "engine-b", ids, 4, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_runs_cancel_requested(f->store, "engine-a", ids, 0, &n), STORE_OK);
    assert_int_equal(n, 0);

    /* the owner completes it as cancelled, keeping the partial output */
    memset(&result, 0, sizeof(result));
    result.status = RUN_CANCELLED;
    result.completed_at_ms = T0 + 30;
    result.output = "partial";
    assert_int_equal(store_run_complete(f->store, id, "engine-a", &result), STORE_OK);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_CANCELLED);
    assert_string_equal(run.output, "partial");
    assert_int_equal(run.completed_at_ms, T0 + 30);
    run_free(&run);
    assert_int_equal(store_runs_cancel_requested(f->store, "engine-a", ids, 4, &n), STORE_OK);
    assert_int_equal(n, 0);

    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 40, &run), STORE_OK);
    assert_int_equal(run.status, RUN_CANCELLED);
    run_free(&run);
}

static void test_run_cancel_finished_conflict(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0);
    create_run(f, agent_id, 2, T0 + 1);
    claim_expect(f, "engine-a", T0 + 10, &(store_claim_limits_t){10, 0, 0}, (const int[]){1, 2}, 2);
    finish_run(f, "engine-a", 1, RUN_SUCCEEDED);
    finish_run(f, "engine-a", 2, RUN_FAILED);

    run_id_of(1, id);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &run), STORE_CONFLICT);
    assert_int_equal(run.status, RUN_SUCCEEDED);
    assert_string_equal(run.output, "the output");
    run_free(&run);
    run_id_of(2, id);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &run), STORE_CONFLICT);
    assert_int_equal(run.status, RUN_FAILED);
    run_free(&run);
}

static void test_run_cancel_not_found(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    int64_t other_agent_id = import_one(f, f->org_id, "b", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    assert_int_equal(store_run_cancel(f->store, f->other_org_id, agent_id, id, T0, &run), STORE_NOT_FOUND);
    assert_int_equal(store_run_cancel(f->store, f->org_id, other_agent_id, id, T0, &run), STORE_NOT_FOUND);
    run_id_of(2, id);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0, &run), STORE_NOT_FOUND);
    assert_int_equal(status_of(f, agent_id, 1), RUN_PENDING);
}

/* A run that ends while its cancellation is on its way keeps its real status. */
static void test_run_cancel_then_finish_keeps_status(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    claim_expect(f, "engine-a", T0 + 10, &(store_claim_limits_t){10, 0, 0}, (const int[]){1}, 1);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &run), STORE_OK);
    run_free(&run);
    finish_run(f, "engine-a", 1, RUN_SUCCEEDED);
    assert_int_equal(status_of(f, agent_id, 1), RUN_SUCCEEDED);
}

/* A cancel-marked run whose owner died ends cancelled, not taken over. */
static void test_runs_claim_cancels_expired_marked(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0);
    run_id_of(1, id);
    claim_expect(f, "engine-a", T0, &(store_claim_limits_t){10, 0, 0}, (const int[]){1}, 1);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &run), STORE_OK);
    run_free(&run);

    claim_expect(f, "engine-b", T0 + 2000, &(store_claim_limits_t){10, 0, 0}, NULL, 0);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_CANCELLED);
    assert_int_equal(run.completed_at_ms, T0 + 2000);
    assert_null(run.error);
    run_free(&run);
}

/* A graceful release hands pending runs back but ends cancel-marked ones. */
static void test_runs_release_cancels_marked(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);
    char id[RUN_ID_LEN + 1];
    run_t run;

    create_run(f, agent_id, 1, T0);
    create_run(f, agent_id, 2, T0 + 1);
    claim_expect(f, "engine-a", T0, &(store_claim_limits_t){10, 0, 0}, (const int[]){1, 2}, 2);
    run_id_of(2, id);
    assert_int_equal(store_run_cancel(f->store, f->org_id, agent_id, id, T0 + 20, &run), STORE_OK);
    run_free(&run);

    assert_int_equal(store_runs_release(f->store, "engine-a"), STORE_OK);
    assert_int_equal(status_of(f, agent_id, 1), RUN_PENDING);
    assert_int_equal(store_run_get(f->store, f->org_id, agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_CANCELLED);
    assert_true(run.completed_at_ms > 0);
    assert_int_equal(run.started_at_ms, T0 + 1); /* claimed "at T0", but a start never precedes the creation */
    run_free(&run);
    claim_expect(f, "engine-b", T0 + 30, &(store_claim_limits_t){10, 0, 0}, (const int[]){1}, 1);
}

/* A database written by schema version 1 is migrated in place, and its
 * pending runs stay claimable. */
static void test_open_migrates_version_1(void **state)
{
    fixture_t *f = *state;
    int64_t agent_id = import_one(f, f->org_id, "a", 1);

    create_run(f, agent_id, 1, T0);
    store_close(f->store);
    f->store = NULL;
    /* undo migration 2 by hand */
    exec_raw(f->path, "DROP INDEX runs_pending_org; DROP INDEX runs_running_org; DROP INDEX runs_running_agent;"
                      " DROP INDEX runs_cancel_requested; ALTER TABLE runs DROP COLUMN cancel_requested;"
                      " CREATE INDEX runs_pending ON runs(created_at) WHERE status = 'pending';"
                      " PRAGMA user_version = 1;");

    assert_int_equal(store_open(f->path, &f->store), STORE_OK);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM runs WHERE cancel_requested = 0"), 1);
    claim_expect(f, "engine-a", T0 + 10, &(store_claim_limits_t){10, 0, 0}, (const int[]){1}, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_migrates_fresh_file, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_open_sets_wal_mode, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_open_rejects_newer_schema, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_open_missing_directory_fails, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_open_unreachable_postgres_fails, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_open_concurrent_processes, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_org_create_find_conflict, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_key_get_fields, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_key_create_conflict_and_missing_org, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_key_list_oldest_first, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_key_replace_secret, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_key_revoke_idempotent, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_key_revoke_seen_by_other_connection, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agents_import_sets_ids, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agents_import_all_or_nothing, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agent_get_round_trip, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agent_get_unset_fields, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agent_get_hides_unpublished_and_foreign, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agent_publish_unpublish, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agents_list_pages_and_total, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agents_list_all_includes_unpublished, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_agents_rev_changes_across_connections, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_create_and_get, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_create_duplicate_id_conflict, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_create_idempotency, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_create_in_flight_limit, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_create_replay_at_limit, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_survives_kill, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_contention_between_processes, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_oldest_first, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_takes_over_expired_lease, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_fails_after_max_attempts, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_complete_by_non_owner, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_renew_extends_lease, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_release_hands_back, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_orgs_take_turns, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_fewest_running_first, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_one_org_pages, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_per_org_limit, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_per_agent_limit, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_start_not_before_creation, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_cancel_pending, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_cancel_running, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_cancel_finished_conflict, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_cancel_not_found, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_run_cancel_then_finish_keeps_status, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_claim_cancels_expired_marked, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_runs_release_cancels_marked, setup_store, teardown),
        cmocka_unit_test_setup_teardown(test_open_migrates_version_1, setup_store, teardown),
    };

    log_set_level(LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

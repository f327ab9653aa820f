/*
 * Tests of the run engine against a real SQLite store and servers that this
 * test starts on 127.0.0.1: a canned HTTP server (a streamed reply, or no
 * reply at all) and a bound port that refuses connections. They check what a
 * client would see in the stored run: status, output, usage and error.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "engine.h"
#include "model.h"
#include "store.h"
#include "uuid.h"

/* ---- a canned provider ---- */

static const char canned_stream[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/event-stream\r\n"
    "Connection: close\r\n"
    "\r\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
    ": keep-alive\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Canned \"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"reply.\"},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":2}}\n\n"
    "data: [DONE]\n\n";

#define MAX_SILENT 16

typedef struct {
    int listen_fd;
    int port;
    int stop_pipe[2];
    pthread_t thread;
    pthread_mutex_t mutex;
    char last_request[8192];   /* the last request that got the canned stream */
    int silent_fds[MAX_SILENT]; /* connections held open without a reply */
    int n_silent;
} canned_server_t;

/* Reads one request (headers and Content-Length body) into buf; returns its length or -1. */
static ssize_t read_request(int fd, char *buf, size_t size)
{
    size_t len = 0;

    while (len + 1 < size) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        char *end;

        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(buf, "Content-Length:");
            size_t body_len = cl ? strtoul(cl + 15, NULL, 10) : 0;

            if (len >= (size_t)(end + 4 - buf) + body_len)
                return (ssize_t)len;
        }
    }
    return -1;
}

static void *canned_server_main(void *arg)
{
    canned_server_t *srv = arg;

    for (;;) {
        struct pollfd fds[2] = {{srv->listen_fd, POLLIN, 0}, {srv->stop_pipe[0], POLLIN, 0}};
        char request[8192];
        int fd;

        if (poll(fds, 2, -1) < 0 || fds[1].revents)
            break;
        fd = accept(srv->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        if (read_request(fd, request, sizeof(request)) < 0) {
            close(fd);
            continue;
        }
        pthread_mutex_lock(&srv->mutex);
        if (strstr(request, "\"model\":\"silent\"") && srv->n_silent < MAX_SILENT) {
            srv->silent_fds[srv->n_silent++] = fd;
            fd = -1;
        } else {
            snprintf(srv->last_request, sizeof(srv->last_request), "%s", request);
        }
        pthread_mutex_unlock(&srv->mutex);
        if (fd >= 0) {
            ssize_t unused = write(fd, canned_stream, sizeof(canned_stream) - 1);

            (void)unused;
            close(fd);
        }
    }
    return NULL;
}

/* Binds a TCP socket to 127.0.0.1 on a free port; returns the fd and sets *port. */
static int bind_loopback(int *port)
{
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &addr_len), 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

static void canned_server_start(canned_server_t *srv)
{
    memset(srv, 0, sizeof(*srv));
    srv->listen_fd = bind_loopback(&srv->port);
    assert_int_equal(listen(srv->listen_fd, 64), 0);
    assert_int_equal(pipe(srv->stop_pipe), 0);
    pthread_mutex_init(&srv->mutex, NULL);
    assert_int_equal(pthread_create(&srv->thread, NULL, canned_server_main, srv), 0);
}

static void canned_server_stop(canned_server_t *srv)
{
    ssize_t unused = write(srv->stop_pipe[1], "x", 1);

    (void)unused;
    pthread_join(srv->thread, NULL);
    for (int i = 0; i < srv->n_silent; i++)
        close(srv->silent_fds[i]);
    close(srv->listen_fd);
    close(srv->stop_pipe[0]);
    close(srv->stop_pipe[1]);
    pthread_mutex_destroy(&srv->mutex);
}

/* ---- fixture: a temporary database with one org, key and agent ---- */

typedef struct {
    char dir[64];
    char db_path[128];
    store_t *store;
    int64_t org_id;
    int64_t agent_id;
    canned_server_t server;
    int refusing_fd;    /* bound, never listening: connections are refused */
    int refusing_port;
} fixture_t;

static const char test_key_id[KEY_ID_LEN + 1] = "enginetest00";

static int fixture_setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    api_key_t key;
    agent_t agent;

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/pushai-engine-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->db_path, sizeof(fx->db_path), "%s/test.db", fx->dir);
    assert_int_equal(store_open(fx->db_path, &fx->store), STORE_OK);
    assert_int_equal(store_org_create(fx->store, "acme", NULL, &fx->org_id), STORE_OK);

    memset(&key, 0, sizeof(key));
    memcpy(key.key_id, test_key_id, sizeof(key.key_id));
    key.org_id = fx->org_id;
    key.created_at_ms = clock_now_ms();
    assert_int_equal(store_key_create(fx->store, &key), STORE_OK);

    memset(&agent, 0, sizeof(agent));
    agent.name = "engine test";
    agent.prompt = "unused";
    agent.provider = "echo";
    agent.published = 1;
    assert_int_equal(store_agents_import(fx->store, fx->org_id, &agent, 1), STORE_OK);
    fx->agent_id = agent.id;

    canned_server_start(&fx->server);
    fx->refusing_fd = bind_loopback(&fx->refusing_port);
    *state = fx;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture_t *fx = *state;
    char path[192];

    canned_server_stop(&fx->server);
    close(fx->refusing_fd);
    store_close(fx->store);
    snprintf(path, sizeof(path), "%s-wal", fx->db_path);
    unlink(path);
    snprintf(path, sizeof(path), "%s-shm", fx->db_path);
    unlink(path);
    unlink(fx->db_path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void create_run(fixture_t *fx, const char *provider, const char *model, int64_t timeout_ms,
                       const char *prompt, char id[RUN_ID_LEN + 1])
{
    char existing[RUN_ID_LEN + 1];
    run_t run;

    memset(&run, 0, sizeof(run));
    uuid_v4(run.id);
    memcpy(id, run.id, RUN_ID_LEN + 1);
    run.org_id = fx->org_id;
    run.agent_id = fx->agent_id;
    run.status = RUN_PENDING;
    run.created_at_ms = clock_now_ms();
    run.prompt = (char *)prompt;
    run.provider = (char *)provider;
    run.model = (char *)model;
    run.timeout_ms = timeout_ms;
    memcpy(run.key_id, test_key_id, sizeof(run.key_id));
    assert_int_equal(store_run_create(fx->store, &run, 0, NULL, NULL, existing), STORE_OK);
}

/* Waits up to max_ms for the run to leave pending and running; fills *out. */
static void wait_run(fixture_t *fx, const char *id, int64_t max_ms, run_t *out)
{
    int64_t end_ms = clock_mono_ms() + max_ms;

    for (;;) {
        assert_int_equal(store_run_get(fx->store, fx->org_id, fx->agent_id, id, out), STORE_OK);
        if (out->status != RUN_PENDING && out->status != RUN_RUNNING)
            return;
        if (clock_mono_ms() > end_ms)
            fail_msg("run %s still %s after %lld ms", id, run_status_name(out->status), (long long)max_ms);
        run_free(out);
        usleep(20000);
    }
}

static engine_t *start_engine(fixture_t *fx, const char *node_id)
{
    char canned_url[64];
    char refusing_url[64];
    engine_provider_config_t providers[2];
    engine_config_t cfg;
    engine_t *engine = NULL;

    snprintf(canned_url, sizeof(canned_url), "http://127.0.0.1:%d/v1", fx->server.port);
    snprintf(refusing_url, sizeof(refusing_url), "http://127.0.0.1:%d/v1", fx->refusing_port);
    providers[0] = (engine_provider_config_t){"canned", "openai", canned_url, "sk-engine-test"};
    providers[1] = (engine_provider_config_t){"refusing", "openai", refusing_url, NULL};

    engine_config_defaults(&cfg);
    cfg.db_uri = fx->db_path;
    cfg.node_id = node_id;
    cfg.poll_interval_ms = 100;
    cfg.providers = providers;
    cfg.n_providers = 2;
    assert_int_equal(engine_start(&cfg, &engine), 0);
    assert_non_null(engine);
    return engine;
}

/* ---- tests ---- */

static void config_defaults(void **state)
{
    engine_config_t cfg;

    engine_config_defaults(&cfg);
    assert_int_equal(cfg.max_in_flight, 1000);
    assert_int_equal(cfg.lease_ms, 30000);
    assert_int_equal(cfg.max_attempts, 3);
    assert_int_equal(cfg.default_timeout_ms, 300000);
    assert_int_equal(cfg.poll_interval_ms, 1000);
    assert_int_equal(cfg.max_per_org, 0);
    assert_int_equal(cfg.max_per_agent, 0);
    assert_null(cfg.db_uri);
    assert_null(cfg.node_id);
}

static void start_rejects_bad_settings(void **state)
{
    fixture_t *fx = *state;
    engine_provider_config_t bad_kind = {"mine", "echo", NULL, NULL};
    engine_config_t cfg;
    engine_t *engine = (engine_t *)&cfg;

    engine_config_defaults(&cfg);
    cfg.db_uri = fx->db_path;
    assert_int_equal(engine_start(&cfg, &engine), -1); /* no node_id */
    assert_null(engine);

    cfg.node_id = "bad-kind";
    cfg.providers = &bad_kind;
    cfg.n_providers = 1;
    assert_int_equal(engine_start(&cfg, &engine), -1);
    assert_null(engine);
}

static void runs_reach_their_results(void **state)
{
    fixture_t *fx = *state;
    char echo_id[RUN_ID_LEN + 1];
    char unknown_id[RUN_ID_LEN + 1];
    char canned_id[RUN_ID_LEN + 1];
    char refused_id[RUN_ID_LEN + 1];
    char deadline_id[RUN_ID_LEN + 1];
    engine_t *engine;
    run_t run;

    create_run(fx, "echo", NULL, 0, "Echo {{this}} exactly.\n", echo_id);
    create_run(fx, "nosuch", "m", 0, "x", unknown_id);
    create_run(fx, "canned", "gpt-test", 0, "hello", canned_id);
    create_run(fx, "refusing", "gpt-test", 0, "hello", refused_id);
    create_run(fx, "canned", "silent", 1000, "hello", deadline_id);
    engine = start_engine(fx, "engine-test-1");
    engine_notify(engine);

    wait_run(fx, echo_id, 10000, &run);
    assert_int_equal(run.status, RUN_SUCCEEDED);
    assert_string_equal(run.output, "Echo {{this}} exactly.\n");
    assert_null(run.error);
    assert_false(run.has_usage);
    assert_int_equal(run.attempts, 1);
    run_free(&run);

    wait_run(fx, unknown_id, 10000, &run);
    assert_int_equal(run.status, RUN_FAILED);
    assert_null(run.output);
    assert_non_null(strstr(run.error, "unknown provider 'nosuch'"));
    run_free(&run);

    wait_run(fx, canned_id, 10000, &run);
    assert_int_equal(run.status, RUN_SUCCEEDED);
    assert_string_equal(run.output, "Canned reply.");
    assert_true(run.has_usage);
    assert_int_equal(run.input_tokens, 6);
    assert_int_equal(run.output_tokens, 2);
    run_free(&run);
    pthread_mutex_lock(&fx->server.mutex);
    assert_non_null(strstr(fx->server.last_request, "POST /v1/chat/completions HTTP/1.1\r\n"));
    assert_non_null(strstr(fx->server.last_request, "Authorization: Bearer sk-engine-test\r\n"));
    assert_non_null(strstr(fx->server.last_request, "\"stream\":true"));
    pthread_mutex_unlock(&fx->server.mutex);

    wait_run(fx, deadline_id, 10000, &run);
    assert_int_equal(run.status, RUN_FAILED);
    assert_string_equal(run.error, "provider timed out after 1 s");
    run_free(&run);

    /* 4 attempts with at most 0.5 + 1 + 2 s of backoff between them */
    wait_run(fx, refused_id, 15000, &run);
    assert_int_equal(run.status, RUN_FAILED);
    assert_string_equal(run.error, "connection to provider failed: Connection refused (after 4 attempts)");
    run_free(&run);

    engine_stop(engine, 0);
}

/* Waits up to 10 s until the run is running. */
static void wait_running(fixture_t *fx, const char *id)
{
    int64_t end_ms = clock_mono_ms() + 10000;
    run_t run;

    for (;;) {
        assert_int_equal(store_run_get(fx->store, fx->org_id, fx->agent_id, id, &run), STORE_OK);
        if (run.status == RUN_RUNNING)
            break;
        assert_true(clock_mono_ms() < end_ms);
        run_free(&run);
        usleep(20000);
    }
    run_free(&run);
}

/* A running run is aborted and completed as cancelled, whether the engine is
 * told directly or finds the mark in the store by itself. */
static void cancel_aborts_running_runs(void **state)
{
    fixture_t *fx = *state;
    char told_id[RUN_ID_LEN + 1];
    char polled_id[RUN_ID_LEN + 1];
    engine_t *engine;
    run_t run;

    create_run(fx, "canned", "silent", 60000, "hello", told_id);
    create_run(fx, "canned", "silent", 60000, "hello", polled_id);
    engine = start_engine(fx, "engine-test-cancel");
    engine_notify(engine);
    wait_running(fx, told_id);
    wait_running(fx, polled_id);

    /* ids the engine does not hold, and no engine at all, change nothing */
    engine_cancel(engine, "00000000-0000-4000-8000-000000000000");
    engine_cancel(engine, "short");
    engine_cancel(NULL, told_id);

    assert_int_equal(store_run_cancel(fx->store, fx->org_id, fx->agent_id, told_id, clock_now_ms(), &run), STORE_OK);
    assert_int_equal(run.status, RUN_RUNNING);
    run_free(&run);
    engine_cancel(engine, told_id);
    wait_run(fx, told_id, 5000, &run);
    assert_int_equal(run.status, RUN_CANCELLED);
    assert_null(run.output); /* the silent server sent nothing */
    assert_null(run.error);
    run_free(&run);

    assert_int_equal(store_run_cancel(fx->store, fx->org_id, fx->agent_id, polled_id, clock_now_ms(), &run),
                     STORE_OK);
    run_free(&run);
    wait_run(fx, polled_id, 5000, &run);
    assert_int_equal(run.status, RUN_CANCELLED);
    run_free(&run);

    engine_stop(engine, 0);
}

static void stop_hands_runs_back(void **state)
{
    fixture_t *fx = *state;
    char id[RUN_ID_LEN + 1];
    engine_t *engine;
    int64_t end_ms;
    run_t run;

    create_run(fx, "canned", "silent", 60000, "hello", id);
    engine = start_engine(fx, "engine-test-2");
    engine_notify(engine);

    /* wait until the engine has claimed the run */
    end_ms = clock_mono_ms() + 10000;
    for (;;) {
        assert_int_equal(store_run_get(fx->store, fx->org_id, fx->agent_id, id, &run), STORE_OK);
        if (run.status == RUN_RUNNING)
            break;
        assert_true(clock_mono_ms() < end_ms);
        run_free(&run);
        usleep(20000);
    }
    run_free(&run);

    engine_stop(engine, 200);
    assert_int_equal(store_run_get(fx->store, fx->org_id, fx->agent_id, id, &run), STORE_OK);
    assert_int_equal(run.status, RUN_PENDING);
    assert_null(run.error);
    run_free(&run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_defaults),
        cmocka_unit_test(start_rejects_bad_settings),
        cmocka_unit_test(runs_reach_their_results),
        cmocka_unit_test(cancel_aborts_running_runs),
        cmocka_unit_test(stop_hands_runs_back),
    };

    return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}

#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_LISTEN_HOST "127.0.0.1"
#define DEFAULT_LISTEN_PORT 8080

void config_defaults(server_config_t *cfg, const char *db_uri)
{
    const char *value;

    memset(cfg, 0, sizeof(*cfg));
    cfg->db_uri = db_uri;
    snprintf(cfg->listen_host, sizeof(cfg->listen_host), "%s", DEFAULT_LISTEN_HOST);
    cfg->listen_port = DEFAULT_LISTEN_PORT;
    cfg->threads = 1;
    cfg->rate_limit_per_min = 600;
    cfg->auth_rate_limit_per_min = 120;
    cfg->max_runs_per_key = 1000;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->shutdown_grace_ms = 10000;
    cfg->access_log = 1;
    cfg->engine_enabled = 1;
    cfg->log_level = LOG_INFO;

    engine_config_defaults(&cfg->engine);
    cfg->engine.db_uri = db_uri;
    if ((value = getenv("PUSHAI_OPENAI_BASE_URL")) != NULL && value[0] != '\0')
        cfg->engine.openai_base_url = value;
    if ((value = getenv("PUSHAI_OPENAI_API_KEY")) != NULL && value[0] != '\0')
        cfg->engine.openai_api_key = value;
    if ((value = getenv("PUSHAI_ANTHROPIC_BASE_URL")) != NULL && value[0] != '\0')
        cfg->engine.anthropic_base_url = value;
    if ((value = getenv("PUSHAI_ANTHROPIC_API_KEY")) != NULL && value[0] != '\0')
        cfg->engine.anthropic_api_key = value;
    if ((value = getenv("PUSHAI_PROVIDERS")) != NULL && value[0] != '\0')
        cfg->providers_path = value;
}

/* Parses a decimal integer in [min, max]; 0 or -1. */
static int parse_int(const char *text, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long v;

    if (text[0] == '\0' || text[0] == '+' || text[0] == ' ')
        return -1;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Splits HOST:PORT, where HOST may be [IPv6]. */
static int parse_listen(server_config_t *cfg, const char *text)
{
    const char *colon;
    const char *host = text;
    size_t host_len;
    int64_t port;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            return -1;
        host_len = (size_t)(colon - text);
    }
    if (host_len == 0 || host_len >= sizeof(cfg->listen_host))
        return -1;
    if (parse_int(colon + 1, 0, 65535, &port) != 0)
        return -1;
    memcpy(cfg->listen_host, host, host_len);
    cfg->listen_host[host_len] = '\0';
    cfg->listen_port = (int)port;
    return 0;
}

typedef enum {
    OPT_LISTEN,
    OPT_THREADS,
    OPT_RATE_LIMIT,
    OPT_AUTH_RATE_LIMIT,
    OPT_MAX_RUNS_PER_KEY,
    OPT_MAX_BODY_BYTES,
    OPT_SHUTDOWN_GRACE,
    OPT_RUN_TIMEOUT,
    OPT_MAX_RUNS_IN_FLIGHT,
    OPT_MAX_RUNS_PER_ORG,
    OPT_MAX_RUNS_PER_AGENT,
    OPT_PROVIDERS,
    OPT_LEASE_SECONDS,
    OPT_PROVIDER_CONNECT_TIMEOUT,
    OPT_PROVIDER_IDLE_TIMEOUT,
    OPT_NODE_ID,
    OPT_LOG_LEVEL,
    OPT_NO_ENGINE,
    OPT_NO_ACCESS_LOG
} option_id_t;

typedef struct {
    const char *name;
    option_id_t id;
    int takes_value;
    const char *help;
} option_t;

static const option_t serve_options[] = {
    {"--listen", OPT_LISTEN, 1, "HOST:PORT to listen on (default 127.0.0.1:8080; port 0 picks a free port)"},
    {"--threads", OPT_THREADS, 1, "HTTP event-loop threads (default 1)"},
    {"--rate-limit", OPT_RATE_LIMIT, 1, "requests per minute per API key, also the burst (default 600, 0 = off)"},
    {"--auth-rate-limit", OPT_AUTH_RATE_LIMIT, 1,
     "failed authentications per minute per client address (default 120, 0 = off)"},
    {"--max-runs-per-key", OPT_MAX_RUNS_PER_KEY, 1, "runs pending or running per API key (default 1000, 0 = off)"},
    {"--max-body-bytes", OPT_MAX_BODY_BYTES, 1, "largest request body in bytes (default 1048576)"},
    {"--shutdown-grace", OPT_SHUTDOWN_GRACE, 1,
     "seconds that runs in flight get to finish after SIGTERM or SIGINT (default 10)"},
    {"--run-timeout", OPT_RUN_TIMEOUT, 1, "seconds a run may take when its agent sets no timeout (default 300)"},
    {"--max-runs-in-flight", OPT_MAX_RUNS_IN_FLIGHT, 1, "runs this process executes at once (default 1000)"},
    {"--max-runs-per-org", OPT_MAX_RUNS_PER_ORG, 1,
     "runs one organization may have running at once, counted over all processes on the database (default 0 = off)"},
    {"--max-runs-per-agent", OPT_MAX_RUNS_PER_AGENT, 1,
     "runs one agent may have running at once, counted over all processes on the database (default 0 = off)"},
    {"--providers", OPT_PROVIDERS, 1, "JSON file of named providers (default $PUSHAI_PROVIDERS; see docs/PROVIDERS.md)"},
    {"--lease-seconds", OPT_LEASE_SECONDS, 1,
     "seconds a run's lease lasts; the runs of a process that stops renewing go to another (default 30)"},
    {"--provider-connect-timeout", OPT_PROVIDER_CONNECT_TIMEOUT, 1,
     "seconds to connect to a provider before the attempt fails (default 10)"},
    {"--provider-idle-timeout", OPT_PROVIDER_IDLE_TIMEOUT, 1,
     "seconds a provider may send nothing before the attempt fails (default 60)"},
    {"--node-id", OPT_NODE_ID, 1, "name of this process in run leases (default HOSTNAME:PID)"},
    {"--log-level", OPT_LOG_LEVEL, 1, "debug, info, warn or error (default info)"},
    {"--no-engine", OPT_NO_ENGINE, 0, "serve the API without executing runs"},
    {"--no-access-log", OPT_NO_ACCESS_LOG, 0, "do not log a line per request"},
};

#define N_SERVE_OPTIONS (sizeof(serve_options) / sizeof(serve_options[0]))

void config_print_serve_usage(void)
{
    fprintf(stderr, "usage: pushaid [--db PATH] serve [options]\n\noptions:\n");
    for (size_t i = 0; i < N_SERVE_OPTIONS; i++)
        fprintf(stderr, "  %-27s %s\n", serve_options[i].name, serve_options[i].help);
}

static const option_t *find_option(const char *arg, size_t name_len)
{
    for (size_t i = 0; i < N_SERVE_OPTIONS; i++) {
        if (strlen(serve_options[i].name) == name_len && strncmp(serve_options[i].name, arg, name_len) == 0)
            return &serve_options[i];
    }
    return NULL;
}

static int apply_option(server_config_t *cfg, const option_t *opt, const char *value, char *err, size_t err_size)
{
    int64_t n;

    switch (opt->id) {
    case OPT_LISTEN:
        if (parse_listen(cfg, value) != 0)
            goto invalid;
        return 0;
    case OPT_THREADS:
        if (parse_int(value, 1, 256, &n) != 0)
            goto invalid;
        cfg->threads = (int)n;
        return 0;
    case OPT_RATE_LIMIT:
        if (parse_int(value, 0, 100000000, &cfg->rate_limit_per_min) != 0)
            goto invalid;
        return 0;
    case OPT_AUTH_RATE_LIMIT:
        if (parse_int(value, 0, 100000000, &cfg->auth_rate_limit_per_min) != 0)
            goto invalid;
        return 0;
    case OPT_MAX_RUNS_PER_KEY:
        if (parse_int(value, 0, INT64_MAX, &cfg->max_runs_per_key) != 0)
            goto invalid;
        return 0;
    case OPT_MAX_BODY_BYTES:
        if (parse_int(value, 1, 1024LL * 1024 * 1024, &n) != 0)
            goto invalid;
        cfg->max_body_bytes = (size_t)n;
        return 0;
    case OPT_SHUTDOWN_GRACE:
        if (parse_int(value, 0, 3600, &n) != 0)
            goto invalid;
        cfg->shutdown_grace_ms = n * 1000;
        return 0;
    case OPT_RUN_TIMEOUT:
        if (parse_int(value, 1, 86400, &n) != 0)
            goto invalid;
        cfg->engine.default_timeout_ms = n * 1000;
        return 0;
    case OPT_MAX_RUNS_IN_FLIGHT:
        if (parse_int(value, 1, 1000000, &n) != 0)
            goto invalid;
        cfg->engine.max_in_flight = (size_t)n;
        return 0;
    case OPT_MAX_RUNS_PER_ORG:
        if (parse_int(value, 0, 1000000, &cfg->engine.max_per_org) != 0)
            goto invalid;
        return 0;
    case OPT_MAX_RUNS_PER_AGENT:
        if (parse_int(value, 0, 1000000, &cfg->engine.max_per_agent) != 0)
            goto invalid;
        return 0;
    case OPT_PROVIDERS:
        if (value[0] == '\0')
            goto invalid;
        cfg->providers_path = value;
        return 0;
    case OPT_LEASE_SECONDS:
        if (parse_int(value, 1, 86400, &n) != 0)
            goto invalid;
        cfg->engine.lease_ms = n * 1000;
        return 0;
    case OPT_PROVIDER_CONNECT_TIMEOUT:
        if (parse_int(value, 1, 3600, &n) != 0)
            goto invalid;
        cfg->engine.connect_timeout_ms = n * 1000;
        return 0;
    case OPT_PROVIDER_IDLE_TIMEOUT:
        if (parse_int(value, 1, 86400, &n) != 0)
            goto invalid;
        cfg->engine.idle_timeout_ms = n * 1000;
        return 0;
    case OPT_NODE_ID:
        if (value[0] == '\0' || strlen(value) > 128)
            goto invalid;
        cfg->engine.node_id = value;
        return 0;
    case OPT_LOG_LEVEL:
        if (log_parse_level(value, &cfg->log_level) != 0)
            goto invalid;
        return 0;
    case OPT_NO_ENGINE:
        cfg->engine_enabled = 0;
        return 0;
    case OPT_NO_ACCESS_LOG:
        cfg->access_log = 0;
        return 0;
    }

invalid:
    snprintf(err, err_size, "invalid value \"%s\" for %s: expected %s", value, opt->name, opt->help);
    return -1;
}

int config_parse_serve(server_config_t *cfg, int argc, char **argv, char *err, size_t err_size)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq = strchr(arg, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const option_t *opt = find_option(arg, name_len);
        const char *value = NULL;

        if (opt == NULL) {
            snprintf(err, err_size, "unknown option \"%.*s\" for serve (see pushaid serve --help)", (int)name_len,
                     arg);
            return -1;
        }
        if (opt->takes_value) {
            if (eq != NULL) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                snprintf(err, err_size, "missing value for %s", opt->name);
                return -1;
            }
        } else if (eq != NULL) {
            snprintf(err, err_size, "%s takes no value", opt->name);
            return -1;
        }
        if (apply_option(cfg, opt, value, err, err_size) != 0)
            return -1;
    }
    return 0;
}

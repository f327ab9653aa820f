/*
 * config.h - settings of `pushaid serve`, from flags and the environment.
 */
#ifndef PUSHAI_CONFIG_H
#define PUSHAI_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "log.h"

typedef struct {
    const char *db_uri;
    char listen_host[256];
    int listen_port;                 /* 0 picks a free port */
    int threads;                     /* HTTP event-loop threads */
    int64_t rate_limit_per_min;      /* requests per minute per API key, 0 = off */
    int64_t auth_rate_limit_per_min; /* failed authentications per minute per client address, 0 = off */
    int64_t max_runs_per_key;        /* runs pending or running per API key, 0 = off */
    size_t max_body_bytes;
    int64_t shutdown_grace_ms;       /* SIGTERM: how long runs in flight may take to finish */
    int access_log;                  /* one log line per request */
    int engine_enabled;
    log_level_t log_level;
    const char *providers_path;      /* named providers file (providers_file.h), NULL when none */
    engine_config_t engine;
} server_config_t;

/* Fills cfg with the defaults and the PUSHAI_* environment variables. */
void config_defaults(server_config_t *cfg, const char *db_uri);

/*
 * Parses the flags of `serve` (argv[0] is the first flag). Returns 0, or -1
 * with a message for the operator in err.
 */
int config_parse_serve(server_config_t *cfg, int argc, char **argv, char *err, size_t err_size);

/* Prints the flags of `serve` with their units and defaults. */
void config_print_serve_usage(void);

#endif

/*
 * model.h - the records that move between the store, the API and the engine.
 *
 * Ownership: every char * and array inside these structs is heap memory owned
 * by the struct. The *_free functions release the members (not the struct
 * itself, which callers usually keep on the stack) and leave it zeroed.
 * Optional strings are NULL when unset.
 */
#ifndef PUSHAI_MODEL_H
#define PUSHAI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define PARAM_NAME_MAX_LEN 64
#define KEY_ID_LEN 12   /* public part of an API key: lowercase base32 */
#define KEY_HASH_LEN 32 /* BLAKE2b-256 of the secret */

typedef struct {
    char key_id[KEY_ID_LEN + 1];
    int64_t org_id;
    char *label;                       /* NULL when unset */
    uint8_t secret_hash[KEY_HASH_LEN];
    int64_t created_at_ms;
    int64_t revoked_at_ms;             /* 0 while the key is active */
    int64_t agents_rev;                /* the org's agent revision (see store.h) */
} api_key_t;

typedef struct {
    char *name;          /* [A-Za-z_][A-Za-z0-9_-]*, at most PARAM_NAME_MAX_LEN */
    char *description;   /* NULL when unset */
    int required;        /* 1 or 0 */
    char **options;      /* NULL when the parameter takes any value */
    size_t n_options;
    char *default_value; /* NULL when unset */
} agent_param_t;

typedef struct {
    int64_t id;
    int64_t org_id;
    char *name;
    char *description;   /* NULL when unset */
    int published;
    char *system;        /* NULL when unset */
    char *prompt;
    char *provider;      /* "echo", "openai", or a configured provider name */
    char *model;         /* NULL when unset */
    double temperature;  /* meaningful only when has_temperature */
    int has_temperature;
    int64_t max_tokens;  /* 0 when unset */
    int64_t timeout_ms;  /* total run deadline; 0 means the server default */
    agent_param_t *params;
    size_t n_params;
} agent_t;

typedef enum {
    RUN_PENDING = 0,
    RUN_RUNNING,
    RUN_SUCCEEDED,
    RUN_FAILED,
    RUN_CANCELLED
} run_status_t;

#define RUN_ID_LEN 36 /* lowercase UUID v4 text */

typedef struct {
    char id[RUN_ID_LEN + 1];
    int64_t org_id;
    int64_t agent_id;
    run_status_t status;
    int64_t created_at_ms;   /* Unix time in milliseconds */
    int64_t started_at_ms;   /* 0 until the run starts */
    int64_t completed_at_ms; /* 0 until the run ends */
    char *output;            /* final text when succeeded, else NULL */
    char *error;             /* reason when failed, else NULL */
    int has_usage;
    int64_t input_tokens;
    int64_t output_tokens;

    /* The request as compiled at creation; the engine executes exactly this. */
    char *prompt;
    char *system;            /* NULL when unset */
    char *provider;
    char *model;             /* NULL when unset */
    double temperature;
    int has_temperature;
    int64_t max_tokens;      /* 0 when unset */
    int64_t timeout_ms;      /* 0 means the server default */
    int attempts;            /* how many times the engine has claimed the run */
    char key_id[KEY_ID_LEN + 1]; /* the API key that created the run */
} run_t;

void api_key_free(api_key_t *key);
void agent_param_free(agent_param_t *param);
void agent_free(agent_t *agent);
void run_free(run_t *run);

const char *run_status_name(run_status_t status);
int run_status_parse(const char *name, run_status_t *out);

#endif

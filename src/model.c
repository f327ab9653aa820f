#include "model.h"

#include <stdlib.h>
#include <string.h>

void api_key_free(api_key_t *key)
{
    if (key == NULL)
        return;
    free(key->label);
    memset(key, 0, sizeof(*key));
}

void agent_param_free(agent_param_t *param)
{
    if (param == NULL)
        return;
    free(param->name);
    free(param->description);
    for (size_t i = 0; i < param->n_options; i++)
        free(param->options[i]);
    free(param->options);
    free(param->default_value);
    memset(param, 0, sizeof(*param));
}

void agent_free(agent_t *agent)
{
    if (agent == NULL)
        return;
    free(agent->name);
    free(agent->description);
    free(agent->system);
    free(agent->prompt);
    free(agent->provider);
    free(agent->model);
    for (size_t i = 0; i < agent->n_params; i++)
        agent_param_free(&agent->params[i]);
    free(agent->params);
    memset(agent, 0, sizeof(*agent));
}

void run_free(run_t *run)
{
    if (run == NULL)
        return;
    free(run->output);
    free(run->error);
    free(run->prompt);
    free(run->system);
    free(run->provider);
    free(run->model);
    memset(run, 0, sizeof(*run));
}

/* Indexed by run_status_t. */
static const char *const run_status_names[] = {
    [RUN_PENDING] = "pending",
    [RUN_RUNNING] = "running",
    [RUN_SUCCEEDED] = "succeeded",
    [RUN_FAILED] = "failed",
    [RUN_CANCELLED] = "cancelled",
};

#define RUN_STATUS_COUNT (sizeof(run_status_names) / sizeof(run_status_names[0]))

const char *run_status_name(run_status_t status)
{
    if ((size_t)status >= RUN_STATUS_COUNT)
        return "unknown";
    return run_status_names[status];
}

int run_status_parse(const char *name, run_status_t *out)
{
    if (name == NULL)
        return -1;
    for (size_t i = 0; i < RUN_STATUS_COUNT; i++) {
        if (strcmp(name, run_status_names[i]) == 0) {
            *out = (run_status_t)i;
            return 0;
        }
    }
    return -1;
}

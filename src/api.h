/*
 * api.h - the handlers of the public API and the health probes. http.c
 * routes to them after authentication; each answers its call exactly once.
 */
#ifndef PUSHAI_API_H
#define PUSHAI_API_H

#include "http.h"

void api_list_agents(http_call_t *call);  /* GET  /api/v1/agents */
void api_create_run(http_call_t *call);   /* POST /api/v1/agents/{agent_id}/runs */
void api_get_run(http_call_t *call);      /* GET  /api/v1/agents/{agent_id}/runs/{run_id} */
void api_cancel_run(http_call_t *call);   /* POST /api/v1/agents/{agent_id}/runs/{run_id}/cancel */
void api_healthz(http_call_t *call);      /* GET  /healthz: the process is up */
void api_readyz(http_call_t *call);       /* GET  /readyz: the database answers */

#endif

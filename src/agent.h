/*
 * agent.h - agent definitions: the import file format, the storage form of
 * the parameters, and the public API form.
 *
 * An import file contains one agent object or an array of them:
 *
 *   {"name": "Weekly KPI summary", "description": "KPIs for one region",
 *    "published": true,
 *    "parameters": [{"name": "region", "required": true, "description": "Sales region",
 *                    "options": ["US", "EU", "APAC"]},
 *                   {"name": "week", "default": "last"}],
 *    "system": "You are a concise analyst.",
 *    "prompt": "Summarize the KPIs for {{region}} in week {{week}}.",
 *    "provider": "openai", "model": "gpt-4o-mini", "temperature": 0.2,
 *    "max_tokens": 800, "timeout_seconds": 120}
 *
 * Fields of an agent:
 *   name             required, non-empty string
 *   prompt           required string; its {{placeholders}} must name parameters
 *   provider         required string naming a known provider
 *   model            non-empty string; required unless provider is "echo"
 *   description      string
 *   system           string; may use placeholders like the prompt
 *   published        boolean, default false
 *   temperature      number in [0, 2]
 *   max_tokens       integer >= 1
 *   timeout_seconds  integer in [1, 3600], stored as timeout_ms
 *   parameters       array of parameter objects, default empty
 * Fields of a parameter:
 *   name             required; [A-Za-z_][A-Za-z0-9_-]*, at most PARAM_NAME_MAX_LEN
 *                    bytes, unique within the agent (case-sensitive)
 *   required         boolean, default false
 *   description      string
 *   options          non-empty array of distinct strings
 *   default          string; must be one of the options when both are given
 *
 * An optional field set to null counts as absent, so a definition can spell
 * out every field. Any other field is rejected, which catches typos.
 */
#ifndef PUSHAI_AGENT_H
#define PUSHAI_AGENT_H

#include <stddef.h>

#include <jansson.h>

#include "model.h"

#define AGENT_TIMEOUT_SECONDS_MAX 3600

/*
 * Parses the text of an import file (len bytes). provider_known(name) returns
 * non-zero when a provider of that name exists.
 *
 * On success returns 0 and sets *out to a malloc'd array of *n agents, in file
 * order, with id and org_id 0. The caller releases each with agent_free(),
 * then the array with free().
 *
 * On failure returns -1, sets *out to NULL and *n to 0, and writes a message
 * into err (err_size bytes, always NUL-terminated and valid UTF-8). The
 * message names the agent by its position in the file, counted from 1, and by
 * its name when it has one. It names the field as a JSON path with indexes
 * counted from 0:
 *   agent 2 ("Weekly KPI summary"): parameters[1].default: "x" is not one of
 *   the options ("US", "EU", "APAC")
 * A file that is not valid JSON is reported with its line and column.
 */
typedef struct {
    int (*provider_known)(const char *name); /* whether a provider name exists */
    const char *provider_override;           /* replaces every agent's provider; NULL keeps the file's */
    const char *model_override;              /* replaces every agent's model; NULL keeps the file's */
} agent_import_options_t;

int agent_import_parse(const char *text, size_t len, const agent_import_options_t *options, agent_t **out,
                       size_t *n, char *err, size_t err_size);

/*
 * Returns the parameters of agent as the JSON array text that the store keeps
 * (malloc'd; the caller frees it), or NULL when memory ran out. Each element
 * has the fields of the API form (see agent_to_api_json()).
 */
char *agent_params_to_text(const agent_t *agent);

/*
 * Parses text as written by agent_params_to_text() and replaces agent's
 * parameters with it. Returns 0, or -1 when the text is malformed or memory
 * ran out, in which case agent is unchanged.
 */
int agent_params_from_text(const char *text, agent_t *agent);

/*
 * Returns the public API form of agent (a new reference), or NULL when memory
 * ran out:
 *   {"id", "name", "description",
 *    "parameters": [{"name", "required", "description", "options", "default"}]}
 * with null for an unset description, options or default.
 */
json_t *agent_to_api_json(const agent_t *agent);

#endif

/*
 * bindings.h - validation of a run request's parameter bindings, and the
 * compilation of an agent's prompts with them.
 *
 * A request body looks like
 *   {"parameter_bindings": [{"name": "region", "value": "EU"}]}
 * parameter_bindings may be absent or null, and other top-level fields are
 * ignored, as are other fields inside a binding.
 */
#ifndef PUSHAI_BINDINGS_H
#define PUSHAI_BINDINGS_H

/* Largest compiled prompt plus system prompt a run may have, in bytes. */
#define BIND_MAX_COMPILED_BYTES (4 * 1024 * 1024)

#include <stddef.h>

#include <jansson.h>

#include "model.h"

typedef enum {
    BIND_OK = 0,
    BIND_INVALID_REQUEST,   /* invalid_request: not JSON or the wrong shape */
    BIND_UNKNOWN_PARAMETER, /* unknown_parameter: a name the agent does not define */
    BIND_INVALID_VALUE,     /* invalid_parameter_value: a value outside the parameter's options */
    BIND_MISSING_PARAMETER, /* missing_parameter: a required parameter without binding or default */
    BIND_OUT_OF_MEMORY      /* an allocation failed: an internal error, not the client's */
} bind_rc_t;

typedef struct {
    char *prompt;       /* compiled prompt (malloc) */
    size_t prompt_len;
    char *system;       /* compiled system prompt (malloc), NULL when the agent has none */
    json_t *parameters; /* [{"name", "value", "source": "binding"|"default"}] in the agent's
                           parameter order, for every parameter that got a value; owned reference */
} compiled_run_t;

/*
 * Validates the request body (body_len bytes; NULL or empty means no
 * bindings) against agent and compiles its prompt and system prompt. Each
 * placeholder becomes the bound value, else the parameter's default, else
 * nothing. Values are inserted literally, so a value "{{other}}" stays as is.
 *
 * The checks run in this order, and the first failure is returned:
 *   1. over the whole body: valid JSON, an object, parameter_bindings an array
 *      (or absent or null) of objects, each with a string name and a string
 *      value, no name bound twice: else BIND_INVALID_REQUEST;
 *   2. every bound name is a parameter of the agent (case-sensitive): else
 *      BIND_UNKNOWN_PARAMETER;
 *   3. every bound value is exactly one of its parameter's options, when the
 *      parameter has options: else BIND_INVALID_VALUE;
 *   4. every required parameter is bound or has a default: else
 *      BIND_MISSING_PARAMETER.
 * Steps 2 and 3 take the bindings in request order, step 4 the parameters in
 * the agent's order.
 *
 * On BIND_OK, fills *out, which the caller releases with compiled_run_free().
 * Otherwise *out is zeroed and msg (msg_size bytes) receives the message for
 * the client, which names the parameter and, for an invalid value, lists the
 * allowed values. It is always NUL-terminated valid UTF-8.
 */
bind_rc_t bindings_compile(const agent_t *agent, const char *body, size_t body_len, compiled_run_t *out, char *msg,
                           size_t msg_size);

/* Releases the members of run and zeroes it. */
void compiled_run_free(compiled_run_t *run);

#endif

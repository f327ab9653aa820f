#include "bindings.h"

#include <stdlib.h>
#include <string.h>

#include "strbuf.h"
#include "template.h"

/* Maximum bytes of a client's name or value that a message quotes. */
#define BIND_MESSAGE_QUOTE_MAX 100

/* The value each parameter of the agent got from the request, by parameter index. */
typedef struct {
    const char *value; /* NULL when the request does not bind the parameter */
    size_t len;
} bound_value_t;

typedef struct {
    const agent_t *agent;
    const bound_value_t *bound;
} bind_lookup_t;

static const char *bind_type_phrase(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown JSON value";
}

static void bind_append_quoted_json(strbuf_t *message, const json_t *string)
{
    strbuf_append_quoted(message, json_string_value(string), json_string_length(string), BIND_MESSAGE_QUOTE_MAX);
}

/* Returns the index of the agent's parameter called name (len bytes), or -1. */
static long bind_find_param(const agent_t *agent, const char *name, size_t len)
{
    for (size_t i = 0; i < agent->n_params; i++) {
        if (strlen(agent->params[i].name) == len && memcmp(agent->params[i].name, name, len) == 0)
            return (long)i;
    }
    return -1;
}

/*
 * Step 1: checks the shape of the whole body and sets *bindings to the array
 * of bindings (NULL when there are none). Returns BIND_OK or
 * BIND_INVALID_REQUEST with the message in message.
 */
static bind_rc_t bind_check_shape(const json_t *root, json_t **bindings, strbuf_t *message)
{
    json_t *array;
    json_t *seen;
    json_t *entry;
    size_t i;
    bind_rc_t rc = BIND_OK;

    *bindings = NULL;
    if (!json_is_object(root)) {
        strbuf_appendf(message, "Request body must be a JSON object, got %s.", bind_type_phrase(root));
        return BIND_INVALID_REQUEST;
    }
    array = json_object_get(root, "parameter_bindings");
    if (array == NULL || json_is_null(array))
        return BIND_OK;
    if (!json_is_array(array)) {
        strbuf_appendf(message,
                       "parameter_bindings must be an array of {\"name\": ..., \"value\": ...} objects, got %s.",
                       bind_type_phrase(array));
        return BIND_INVALID_REQUEST;
    }

    /* seen maps each bound name to the index of its binding */
    seen = json_object();
    if (seen == NULL)
        return BIND_OUT_OF_MEMORY;
    json_array_foreach(array, i, entry) {
        json_t *name;
        json_t *value;
        json_t *previous;

        if (!json_is_object(entry)) {
            strbuf_appendf(message,
                           "parameter_bindings[%zu] must be an object with string fields \"name\" and \"value\", "
                           "got %s.",
                           i, bind_type_phrase(entry));
            rc = BIND_INVALID_REQUEST;
            break;
        }
        name = json_object_get(entry, "name");
        if (name == NULL) {
            strbuf_appendf(message, "parameter_bindings[%zu].name is missing.", i);
            rc = BIND_INVALID_REQUEST;
            break;
        }
        if (!json_is_string(name)) {
            strbuf_appendf(message, "parameter_bindings[%zu].name must be a string, got %s.", i,
                           bind_type_phrase(name));
            rc = BIND_INVALID_REQUEST;
            break;
        }

        value = json_object_get(entry, "value");
        if (value == NULL || !json_is_string(value)) {
            strbuf_appendf(message, "parameter_bindings[%zu].value for parameter ", i);
            bind_append_quoted_json(message, name);
            if (value == NULL)
                strbuf_append_str(message, " is missing.");
            else
                strbuf_appendf(message, " must be a string, got %s.", bind_type_phrase(value));
            rc = BIND_INVALID_REQUEST;
            break;
        }

        previous = json_object_get(seen, json_string_value(name));
        if (previous != NULL) {
            strbuf_append_str(message, "Parameter ");
            bind_append_quoted_json(message, name);
            strbuf_appendf(message, " is bound more than once (parameter_bindings[%lld] and [%zu]).",
                           (long long)json_integer_value(previous), i);
            rc = BIND_INVALID_REQUEST;
            break;
        }
        if (json_object_set_new(seen, json_string_value(name), json_integer((json_int_t)i)) != 0) {
            rc = BIND_OUT_OF_MEMORY;
            break;
        }
    }
    json_decref(seen);
    if (rc == BIND_OK)
        *bindings = array;
    return rc;
}

/* Step 2: checks that every bound name is a parameter of the agent, and records each bound value. */
static bind_rc_t bind_check_names(const agent_t *agent, const json_t *bindings, bound_value_t *bound,
                                  strbuf_t *message)
{
    json_t *entry;
    size_t i;

    json_array_foreach(bindings, i, entry) {
        json_t *name = json_object_get(entry, "name");
        json_t *value = json_object_get(entry, "value");
        long index = bind_find_param(agent, json_string_value(name), json_string_length(name));

        if (index < 0) {
            strbuf_append_str(message, "Unknown parameter ");
            bind_append_quoted_json(message, name);
            if (agent->n_params == 0) {
                strbuf_append_str(message, ": this agent takes no parameters.");
            } else {
                strbuf_append_str(message, ". This agent's parameters: ");
                for (size_t p = 0; p < agent->n_params; p++) {
                    if (p > 0)
                        strbuf_append_str(message, ", ");
                    strbuf_append_quoted(message, agent->params[p].name, strlen(agent->params[p].name),
                                         BIND_MESSAGE_QUOTE_MAX);
                }
                strbuf_append_str(message, ".");
            }
            return BIND_UNKNOWN_PARAMETER;
        }
        bound[index].value = json_string_value(value);
        bound[index].len = json_string_length(value);
    }
    return BIND_OK;
}

static int bind_value_allowed(const agent_param_t *param, const char *value, size_t len)
{
    if (param->options == NULL)
        return 1;
    for (size_t i = 0; i < param->n_options; i++) {
        if (strlen(param->options[i]) == len && memcmp(param->options[i], value, len) == 0)
            return 1;
    }
    return 0;
}

/* Step 3: checks that every bound value is one of its parameter's options. */
static bind_rc_t bind_check_values(const agent_t *agent, const json_t *bindings, strbuf_t *message)
{
    json_t *entry;
    size_t i;

    json_array_foreach(bindings, i, entry) {
        json_t *name = json_object_get(entry, "name");
        json_t *value = json_object_get(entry, "value");
        const agent_param_t *param =
            &agent->params[bind_find_param(agent, json_string_value(name), json_string_length(name))];

        if (bind_value_allowed(param, json_string_value(value), json_string_length(value)))
            continue;
        strbuf_append_str(message, "Invalid value ");
        bind_append_quoted_json(message, value);
        strbuf_append_str(message, " for parameter ");
        bind_append_quoted_json(message, name);
        strbuf_append_str(message, ". Allowed values: ");
        strbuf_append_quoted_list(message, param->options, param->n_options, BIND_MESSAGE_QUOTE_MAX);
        strbuf_append_str(message, ".");
        return BIND_INVALID_VALUE;
    }
    return BIND_OK;
}

/* Step 4: checks that every required parameter is bound or has a default. */
static bind_rc_t bind_check_required(const agent_t *agent, const bound_value_t *bound, strbuf_t *message)
{
    for (size_t i = 0; i < agent->n_params; i++) {
        const agent_param_t *param = &agent->params[i];

        if (!param->required || bound[i].value != NULL || param->default_value != NULL)
            continue;
        strbuf_append_str(message, "Missing required parameter ");
        strbuf_append_quoted(message, param->name, strlen(param->name), BIND_MESSAGE_QUOTE_MAX);
        strbuf_append_str(message, ": add it to parameter_bindings.");
        return BIND_MISSING_PARAMETER;
    }
    return BIND_OK;
}

static int bind_lookup_value(void *ctx, const char *name, size_t name_len, const char **value, size_t *value_len)
{
    const bind_lookup_t *lookup = ctx;
    long index = bind_find_param(lookup->agent, name, name_len);

    if (index < 0)
        return 0;
    if (lookup->bound[index].value != NULL) {
        *value = lookup->bound[index].value;
        *value_len = lookup->bound[index].len;
        return 1;
    }
    if (lookup->agent->params[index].default_value != NULL) {
        *value = lookup->agent->params[index].default_value;
        *value_len = strlen(*value);
        return 1;
    }
    return 0;
}

/* Returns [{"name", "value", "source"}] for the parameters that got a value, or NULL when memory ran out. */
static json_t *bind_parameters_json(const agent_t *agent, const bound_value_t *bound)
{
    json_t *parameters = json_array();

    for (size_t i = 0; parameters != NULL && i < agent->n_params; i++) {
        const agent_param_t *param = &agent->params[i];
        json_t *item;

        if (bound[i].value != NULL)
            item = json_pack("{s:s, s:s%, s:s}", "name", param->name, "value", bound[i].value, bound[i].len,
                             "source", "binding");
        else if (param->default_value != NULL)
            item = json_pack("{s:s, s:s, s:s}", "name", param->name, "value", param->default_value, "source",
                             "default");
        else
            continue;

        if (item == NULL || json_array_append_new(parameters, item) != 0) {
            json_decref(parameters);
            parameters = NULL;
        }
    }
    return parameters;
}

bind_rc_t bindings_compile(const agent_t *agent, const char *body, size_t body_len, compiled_run_t *out, char *msg,
                           size_t msg_size)
{
    strbuf_t message = STRBUF_INIT;
    json_t *root = NULL;
    json_t *bindings = NULL;
    bound_value_t *bound = NULL;
    bind_lookup_t lookup;
    size_t compiled_len;
    bind_rc_t rc;

    memset(out, 0, sizeof(*out));
    if (msg != NULL && msg_size > 0)
        msg[0] = '\0';

    bound = calloc(agent->n_params > 0 ? agent->n_params : 1, sizeof(*bound));
    if (bound == NULL)
        return BIND_OUT_OF_MEMORY;

    /* step 1: the shape of the whole body */
    if (body != NULL && body_len > 0) {
        json_error_t json_error;

        root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &json_error);
        if (root == NULL) {
            /* jansson rejects \u0000 unless told otherwise; say so without naming its flag */
            if (strstr(json_error.text, "JSON_ALLOW_NUL") != NULL)
                strbuf_appendf(&message, "Request body contains \\u0000 (line %d, column %d), which is not allowed.",
                               json_error.line, json_error.column);
            else
                strbuf_appendf(&message, "Request body is not valid JSON: %s (line %d, column %d).", json_error.text,
                               json_error.line, json_error.column);
            rc = BIND_INVALID_REQUEST;
            goto out;
        }
        rc = bind_check_shape(root, &bindings, &message);
        if (rc != BIND_OK)
            goto out;
    }

    /* steps 2 to 4: names, values, required parameters */
    if (bindings != NULL) {
        rc = bind_check_names(agent, bindings, bound, &message);
        if (rc != BIND_OK)
            goto out;
        rc = bind_check_values(agent, bindings, &message);
        if (rc != BIND_OK)
            goto out;
    }
    rc = bind_check_required(agent, bound, &message);
    if (rc != BIND_OK)
        goto out;

    /* compile both prompts and list the values used; a short request can
     * bind a long value to a placeholder used many times, so the size is
     * checked before anything is built */
    lookup.agent = agent;
    lookup.bound = bound;
    compiled_len = template_compiled_length(agent->prompt != NULL ? agent->prompt : "", bind_lookup_value, &lookup);
    if (agent->system != NULL)
        compiled_len += template_compiled_length(agent->system, bind_lookup_value, &lookup);
    if (compiled_len > BIND_MAX_COMPILED_BYTES) {
        strbuf_appendf(&message,
                       "The compiled prompt would be %zu bytes, more than the limit of %d bytes; send shorter values.",
                       compiled_len, BIND_MAX_COMPILED_BYTES);
        rc = BIND_INVALID_REQUEST;
        goto out;
    }
    rc = BIND_OUT_OF_MEMORY;
    out->prompt = template_compile(agent->prompt != NULL ? agent->prompt : "", bind_lookup_value, &lookup,
                                   &out->prompt_len);
    if (out->prompt == NULL)
        goto out;
    if (agent->system != NULL) {
        out->system = template_compile(agent->system, bind_lookup_value, &lookup, NULL);
        if (out->system == NULL)
            goto out;
    }
    out->parameters = bind_parameters_json(agent, bound);
    if (out->parameters == NULL)
        goto out;
    rc = BIND_OK;

out:
    if (rc == BIND_OUT_OF_MEMORY) {
        strbuf_free(&message);
        strbuf_append_str(&message, "Out of memory.");
    }
    if (rc != BIND_OK) {
        compiled_run_free(out);
        strbuf_copy_message(&message, msg, msg_size);
    }
    strbuf_free(&message);
    free(bound);
    /* the bound values point into root, so it goes last */
    json_decref(root);
    return rc;
}

void compiled_run_free(compiled_run_t *run)
{
    if (run == NULL)
        return;
    free(run->prompt);
    free(run->system);
    json_decref(run->parameters);
    memset(run, 0, sizeof(*run));
}

/*
 * agent.c - agent import validation and the JSON forms of an agent.
 *
 * The import parser stops at the first mistake in the file. It checks an
 * agent's fields in a fixed order, so a file with several mistakes always
 * reports the same one: unknown fields first, then name, prompt, provider,
 * model and the other scalar fields. The parameters come next, one by one,
 * and the placeholders of the prompt and system prompt last.
 */
#include "agent.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"
#include "template.h"

/* Maximum bytes of an untrusted name or value that an error message quotes. */
#define AGENT_MESSAGE_QUOTE_MAX 80

#define AGENT_TEMPERATURE_MAX 2.0

static const char *const agent_fields[] = {
    "name", "description", "published", "parameters", "system", "prompt",
    "provider", "model", "temperature", "max_tokens", "timeout_seconds",
};

static const char *const param_fields[] = {"name", "required", "description", "options", "default"};

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

/* The agent being imported, for error messages. */
typedef struct {
    size_t position;  /* in the file, from 1 */
    const char *name; /* NULL until the name is known to be a non-empty string */
    char *err;
    size_t err_size;
} import_ctx_t;

/* ---- error messages ---- */

/* Starts a message with the agent's label and the field path ("agent 2 ("x"): prompt: "). */
static void import_message_begin(strbuf_t *msg, const import_ctx_t *ctx, const char *field)
{
    strbuf_appendf(msg, "agent %zu", ctx->position);
    if (ctx->name != NULL) {
        strbuf_append_str(msg, " (");
        strbuf_append_quoted(msg, ctx->name, strlen(ctx->name), AGENT_MESSAGE_QUOTE_MAX);
        strbuf_append_str(msg, ")");
    }
    strbuf_append_str(msg, ": ");
    if (field != NULL) {
        strbuf_append_str(msg, field);
        strbuf_append_str(msg, ": ");
    }
}

/* Copies the message into the caller's buffer and returns -1. */
static int import_message_end(strbuf_t *msg, const import_ctx_t *ctx)
{
    strbuf_copy_message(msg, ctx->err, ctx->err_size);
    strbuf_free(msg);
    return -1;
}

static int import_fail(const import_ctx_t *ctx, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "<agent label>: <field>: <formatted text>" into the error buffer and returns -1. */
static int import_fail(const import_ctx_t *ctx, const char *field, const char *fmt, ...)
{
    strbuf_t msg = STRBUF_INIT;
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    import_message_begin(&msg, ctx, field);
    strbuf_append_str(&msg, text);
    return import_message_end(&msg, ctx);
}

static int import_out_of_memory(const import_ctx_t *ctx)
{
    return import_fail(ctx, NULL, "out of memory");
}

/* Returns a JSON type with its article, for "must be a string, got an integer". */
static const char *json_type_phrase(const json_t *value)
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

/* ---- field readers ---- */

/* Returns the value of key in obj, or NULL when the key is missing or null. */
static json_t *import_field(const json_t *obj, const char *key)
{
    json_t *value = json_object_get(obj, key);

    return json_is_null(value) ? NULL : value;
}

/* Rejects the first field of obj that is not in allowed. path is NULL at the agent level. */
static int import_check_fields(const import_ctx_t *ctx, json_t *obj, const char *path, const char *const *allowed,
                               size_t n_allowed)
{
    const char *key;
    json_t *value;

    json_object_foreach(obj, key, value) {
        strbuf_t msg = STRBUF_INIT;
        int known = 0;

        for (size_t i = 0; i < n_allowed && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (known)
            continue;

        import_message_begin(&msg, ctx, path);
        strbuf_append_str(&msg, "unknown field ");
        strbuf_append_quoted(&msg, key, strlen(key), AGENT_MESSAGE_QUOTE_MAX);
        strbuf_append_str(&msg, " (allowed: ");
        strbuf_append_quoted_list(&msg, (char *const *)allowed, n_allowed, AGENT_MESSAGE_QUOTE_MAX);
        strbuf_append_str(&msg, ")");
        return import_message_end(&msg, ctx);
    }
    return 0;
}

enum { FIELD_OPTIONAL = 0, FIELD_REQUIRED = 1 };
enum { EMPTY_ALLOWED = 0, EMPTY_REJECTED = 1 };

/*
 * Copies the string field key of obj into *dst (left NULL when the field is
 * optional and absent). path names the field in messages. Returns 0 or -1.
 */
static int import_string(const import_ctx_t *ctx, const json_t *obj, const char *key, const char *path,
                         int required, int empty, char **dst)
{
    json_t *value = import_field(obj, key);

    if (value == NULL) {
        if (required == FIELD_REQUIRED)
            return import_fail(ctx, path, "missing (expected a%s string)",
                               empty == EMPTY_REJECTED ? " non-empty" : "");
        return 0;
    }
    if (!json_is_string(value))
        return import_fail(ctx, path, "must be a string, got %s", json_type_phrase(value));
    if (empty == EMPTY_REJECTED && json_string_length(value) == 0)
        return import_fail(ctx, path, "must not be empty");

    *dst = strdup(json_string_value(value));
    if (*dst == NULL)
        return import_out_of_memory(ctx);
    return 0;
}

/* Reads the boolean field key of obj into *dst (left unchanged when absent). */
static int import_bool(const import_ctx_t *ctx, const json_t *obj, const char *key, const char *path, int *dst)
{
    json_t *value = import_field(obj, key);

    if (value == NULL)
        return 0;
    if (!json_is_boolean(value))
        return import_fail(ctx, path, "must be true or false, got %s", json_type_phrase(value));
    *dst = json_is_true(value);
    return 0;
}

/* Reads the integer field key of obj, which must lie in [min, max], into *dst
 * and sets *present. Both stay unchanged when the field is absent. */
static int import_int(const import_ctx_t *ctx, const json_t *obj, const char *key, json_int_t min, json_int_t max,
                      json_int_t *dst, int *present)
{
    json_t *value = import_field(obj, key);
    json_int_t number;

    if (value == NULL)
        return 0;
    if (!json_is_integer(value))
        return import_fail(ctx, key, "must be an integer, got %s", json_type_phrase(value));
    number = json_integer_value(value);
    if (number < min || number > max) {
        if (max == INT64_MAX)
            return import_fail(ctx, key, "must be at least %lld, got %lld", (long long)min, (long long)number);
        return import_fail(ctx, key, "must be between %lld and %lld, got %lld", (long long)min, (long long)max,
                           (long long)number);
    }
    *dst = number;
    *present = 1;
    return 0;
}

/* ---- parameters ---- */

static int import_param_options(const import_ctx_t *ctx, const json_t *obj, const char *prefix,
                                agent_param_t *param)
{
    json_t *options = import_field(obj, "options");
    json_t *seen = NULL;
    char path[96];
    size_t i;
    json_t *option;
    int rc = 0;

    snprintf(path, sizeof(path), "%s.options", prefix);
    if (options == NULL)
        return 0;
    if (!json_is_array(options))
        return import_fail(ctx, path, "must be an array of strings, got %s", json_type_phrase(options));
    if (json_array_size(options) == 0)
        return import_fail(ctx, path, "must not be empty (leave options out to accept any value)");

    param->options = calloc(json_array_size(options), sizeof(*param->options));
    seen = json_object();
    if (param->options == NULL || seen == NULL) {
        rc = import_out_of_memory(ctx);
        goto out;
    }

    json_array_foreach(options, i, option) {
        const char *text;

        snprintf(path, sizeof(path), "%s.options[%zu]", prefix, i);
        if (!json_is_string(option)) {
            rc = import_fail(ctx, path, "must be a string, got %s", json_type_phrase(option));
            goto out;
        }
        text = json_string_value(option);
        if (json_object_get(seen, text) != NULL) {
            strbuf_t msg = STRBUF_INIT;

            import_message_begin(&msg, ctx, path);
            strbuf_append_str(&msg, "duplicate option ");
            strbuf_append_quoted(&msg, text, json_string_length(option), AGENT_MESSAGE_QUOTE_MAX);
            rc = import_message_end(&msg, ctx);
            goto out;
        }
        param->options[i] = strdup(text);
        if (param->options[i] == NULL || json_object_set_new(seen, text, json_true()) != 0) {
            free(param->options[i]);
            param->options[i] = NULL;
            rc = import_out_of_memory(ctx);
            goto out;
        }
        param->n_options = i + 1;
    }

out:
    json_decref(seen);
    return rc;
}

static int param_has_option(const agent_param_t *param, const char *value)
{
    for (size_t i = 0; i < param->n_options; i++) {
        if (strcmp(param->options[i], value) == 0)
            return 1;
    }
    return 0;
}

/* Imports parameters[index] of an agent. seen maps the names imported so far to their index. */
static int import_param(const import_ctx_t *ctx, json_t *obj, size_t index, json_t *seen, agent_param_t *param)
{
    char prefix[48];
    char path[96];
    const char *name;
    json_t *value;
    json_t *previous;

    snprintf(prefix, sizeof(prefix), "parameters[%zu]", index);
    if (!json_is_object(obj))
        return import_fail(ctx, prefix, "must be an object, got %s", json_type_phrase(obj));
    if (import_check_fields(ctx, obj, prefix, param_fields, COUNT_OF(param_fields)) != 0)
        return -1;

    /* name: present, valid, and not used by an earlier parameter */
    snprintf(path, sizeof(path), "%s.name", prefix);
    value = import_field(obj, "name");
    if (value == NULL)
        return import_fail(ctx, path, "missing (expected a parameter name)");
    if (!json_is_string(value))
        return import_fail(ctx, path, "must be a string, got %s", json_type_phrase(value));
    name = json_string_value(value);
    if (!template_name_valid(name, json_string_length(value))) {
        strbuf_t msg = STRBUF_INIT;

        import_message_begin(&msg, ctx, path);
        strbuf_append_quoted(&msg, name, json_string_length(value), AGENT_MESSAGE_QUOTE_MAX);
        strbuf_appendf(&msg,
                       " is not a valid parameter name (use 1 to %d letters, digits, '_' or '-', "
                       "starting with a letter or '_')",
                       PARAM_NAME_MAX_LEN);
        return import_message_end(&msg, ctx);
    }
    previous = json_object_get(seen, name);
    if (previous != NULL)
        return import_fail(ctx, path, "duplicate parameter name \"%s\" (also parameters[%lld].name)", name,
                           (long long)json_integer_value(previous));
    if (json_object_set_new(seen, name, json_integer((json_int_t)index)) != 0)
        return import_out_of_memory(ctx);
    param->name = strdup(name);
    if (param->name == NULL)
        return import_out_of_memory(ctx);

    /* required, description */
    snprintf(path, sizeof(path), "%s.required", prefix);
    if (import_bool(ctx, obj, "required", path, &param->required) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s.description", prefix);
    if (import_string(ctx, obj, "description", path, FIELD_OPTIONAL, EMPTY_ALLOWED, &param->description) != 0)
        return -1;

    /* options, then default, which must be one of them */
    if (import_param_options(ctx, obj, prefix, param) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s.default", prefix);
    if (import_string(ctx, obj, "default", path, FIELD_OPTIONAL, EMPTY_ALLOWED, &param->default_value) != 0)
        return -1;
    if (param->default_value != NULL && param->options != NULL &&
        !param_has_option(param, param->default_value)) {
        strbuf_t msg = STRBUF_INIT;

        import_message_begin(&msg, ctx, path);
        strbuf_append_quoted(&msg, param->default_value, strlen(param->default_value), AGENT_MESSAGE_QUOTE_MAX);
        strbuf_append_str(&msg, " is not one of the options (");
        strbuf_append_quoted_list(&msg, param->options, param->n_options, AGENT_MESSAGE_QUOTE_MAX);
        strbuf_append_str(&msg, ")");
        return import_message_end(&msg, ctx);
    }
    return 0;
}

static int import_params(const import_ctx_t *ctx, const json_t *obj, agent_t *agent)
{
    json_t *params = import_field(obj, "parameters");
    json_t *seen;
    json_t *param;
    size_t i;
    int rc = 0;

    if (params == NULL)
        return 0;
    if (!json_is_array(params))
        return import_fail(ctx, "parameters", "must be an array of parameter objects, got %s",
                           json_type_phrase(params));
    if (json_array_size(params) == 0)
        return 0;

    agent->params = calloc(json_array_size(params), sizeof(*agent->params));
    seen = json_object();
    if (agent->params == NULL || seen == NULL) {
        json_decref(seen);
        return import_out_of_memory(ctx);
    }
    /* agent_free() releases every slot, also the ones still zeroed after a failure */
    agent->n_params = json_array_size(params);

    json_array_foreach(params, i, param) {
        rc = import_param(ctx, param, i, seen, &agent->params[i]);
        if (rc != 0)
            break;
    }
    json_decref(seen);
    return rc;
}

/* ---- placeholders ---- */

typedef struct {
    const agent_t *agent;
    const char *unknown_name; /* the first placeholder that names no parameter */
    size_t unknown_name_len;
} placeholder_check_t;

static int check_placeholder(void *ctx, const char *name, size_t name_len)
{
    placeholder_check_t *check = ctx;

    for (size_t i = 0; i < check->agent->n_params; i++) {
        const char *param_name = check->agent->params[i].name;

        if (strlen(param_name) == name_len && memcmp(param_name, name, name_len) == 0)
            return 0;
    }
    check->unknown_name = name;
    check->unknown_name_len = name_len;
    return 1;
}

/* Rejects a placeholder of template (the field named field) that names no parameter of agent. */
static int import_check_placeholders(const import_ctx_t *ctx, const agent_t *agent, const char *field,
                                     const char *template)
{
    placeholder_check_t check = {agent, NULL, 0};
    strbuf_t msg = STRBUF_INIT;

    if (template == NULL || template_each_placeholder(template, check_placeholder, &check) == 0)
        return 0;

    import_message_begin(&msg, ctx, field);
    strbuf_append_str(&msg, "placeholder {{");
    strbuf_append(&msg, check.unknown_name, check.unknown_name_len);
    strbuf_append_str(&msg, "}} names no parameter");
    if (agent->n_params == 0) {
        strbuf_append_str(&msg, " (the agent defines no parameters)");
    } else {
        strbuf_append_str(&msg, " (defined: ");
        for (size_t i = 0; i < agent->n_params; i++) {
            if (i > 0)
                strbuf_append_str(&msg, ", ");
            strbuf_append_str(&msg, agent->params[i].name);
        }
        strbuf_append_str(&msg, ")");
    }
    return import_message_end(&msg, ctx);
}

/* ---- one agent ---- */

/* Replaces *field with a copy of value. */
static int import_replace(import_ctx_t *ctx, char **field, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return import_fail(ctx, NULL, "out of memory");
    free(*field);
    *field = copy;
    return 0;
}

static int import_agent(import_ctx_t *ctx, json_t *obj, const agent_import_options_t *options, agent_t *agent)
{
    json_t *value;
    json_int_t number = 0;
    int present = 0;

    if (!json_is_object(obj))
        return import_fail(ctx, NULL, "must be an object, got %s", json_type_phrase(obj));

    /* name the agent in every later message when its name is usable */
    value = json_object_get(obj, "name");
    if (json_is_string(value) && json_string_length(value) > 0)
        ctx->name = json_string_value(value);

    if (import_check_fields(ctx, obj, NULL, agent_fields, COUNT_OF(agent_fields)) != 0)
        return -1;
    if (import_string(ctx, obj, "name", "name", FIELD_REQUIRED, EMPTY_REJECTED, &agent->name) != 0)
        return -1;
    if (import_string(ctx, obj, "prompt", "prompt", FIELD_REQUIRED, EMPTY_ALLOWED, &agent->prompt) != 0)
        return -1;

    /* provider, and a model unless the provider needs none; an override
     * replaces the file's value, which then only has to be well-typed */
    if (import_string(ctx, obj, "provider", "provider", options->provider_override != NULL ? FIELD_OPTIONAL : FIELD_REQUIRED,
                      EMPTY_REJECTED, &agent->provider) != 0)
        return -1;
    if (options->provider_override != NULL && import_replace(ctx, &agent->provider, options->provider_override) != 0)
        return -1;
    if (!options->provider_known(agent->provider)) {
        strbuf_t msg = STRBUF_INIT;

        import_message_begin(&msg, ctx, "provider");
        strbuf_append_str(&msg, "unknown provider ");
        strbuf_append_quoted(&msg, agent->provider, strlen(agent->provider), AGENT_MESSAGE_QUOTE_MAX);
        strbuf_append_str(&msg, " (use \"echo\", \"openai\", \"anthropic\" or a provider from the config file)");
        return import_message_end(&msg, ctx);
    }
    if (import_string(ctx, obj, "model", "model", FIELD_OPTIONAL, EMPTY_REJECTED, &agent->model) != 0)
        return -1;
    if (options->model_override != NULL && import_replace(ctx, &agent->model, options->model_override) != 0)
        return -1;
    if (agent->model == NULL && strcmp(agent->provider, "echo") != 0)
        return import_fail(ctx, "model", "missing (required for provider \"%s\")", agent->provider);

    /* the other scalar fields */
    if (import_string(ctx, obj, "description", "description", FIELD_OPTIONAL, EMPTY_ALLOWED, &agent->description) !=
        0)
        return -1;
    if (import_string(ctx, obj, "system", "system", FIELD_OPTIONAL, EMPTY_ALLOWED, &agent->system) != 0)
        return -1;
    if (import_bool(ctx, obj, "published", "published", &agent->published) != 0)
        return -1;

    value = import_field(obj, "temperature");
    if (value != NULL) {
        if (!json_is_number(value))
            return import_fail(ctx, "temperature", "must be a number, got %s", json_type_phrase(value));
        agent->temperature = json_number_value(value);
        if (!(agent->temperature >= 0.0 && agent->temperature <= AGENT_TEMPERATURE_MAX))
            return import_fail(ctx, "temperature", "must be between 0 and 2, got %g", agent->temperature);
        agent->has_temperature = 1;
    }

    if (import_int(ctx, obj, "max_tokens", 1, INT64_MAX, &number, &present) != 0)
        return -1;
    if (present)
        agent->max_tokens = number;
    present = 0;
    if (import_int(ctx, obj, "timeout_seconds", 1, AGENT_TIMEOUT_SECONDS_MAX, &number, &present) != 0)
        return -1;
    if (present)
        agent->timeout_ms = number * 1000;

    /* parameters, then the placeholders that must name them */
    if (import_params(ctx, obj, agent) != 0)
        return -1;
    if (import_check_placeholders(ctx, agent, "prompt", agent->prompt) != 0)
        return -1;
    return import_check_placeholders(ctx, agent, "system", agent->system);
}

int agent_import_parse(const char *text, size_t len, const agent_import_options_t *options, agent_t **out,
                       size_t *n, char *err, size_t err_size)
{
    import_ctx_t ctx = {0, NULL, err, err_size};
    json_error_t json_error;
    json_t *root;
    json_t *item;
    agent_t *agents = NULL;
    size_t count = 0;
    int rc = -1;

    *out = NULL;
    *n = 0;
    if (err != NULL && err_size > 0)
        err[0] = '\0';

    /* the file: one object or a non-empty array */
    root = json_loadb(text != NULL ? text : "", text != NULL ? len : 0, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                      &json_error);
    if (root == NULL) {
        strbuf_t msg = STRBUF_INIT;

        strbuf_appendf(&msg, "invalid JSON at line %d, column %d: %s", json_error.line, json_error.column,
                       json_error.text);
        strbuf_copy_message(&msg, err, err_size);
        strbuf_free(&msg);
        return -1;
    }
    if (json_is_array(root)) {
        count = json_array_size(root);
        if (count == 0) {
            snprintf(err, err_size, "the file contains an empty array (expected at least one agent)");
            goto out;
        }
    } else if (json_is_object(root)) {
        count = 1;
    } else {
        snprintf(err, err_size, "expected an agent object or an array of agent objects, got %s",
                 json_type_phrase(root));
        goto out;
    }

    agents = calloc(count, sizeof(*agents));
    if (agents == NULL) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }

    /* each agent, stopping at the first mistake */
    for (size_t i = 0; i < count; i++) {
        item = json_is_array(root) ? json_array_get(root, i) : root;
        ctx.position = i + 1;
        ctx.name = NULL;
        if (import_agent(&ctx, item, options, &agents[i]) != 0)
            goto out;
    }

    *out = agents;
    *n = count;
    agents = NULL;
    rc = 0;

out:
    if (agents != NULL) {
        for (size_t i = 0; i < count; i++)
            agent_free(&agents[i]);
        free(agents);
    }
    json_decref(root);
    return rc;
}

/* ---- storage and API forms ---- */

static json_t *json_string_or_null(const char *text)
{
    return text != NULL ? json_string(text) : json_null();
}

/* Sets key to value, stealing the reference. Returns -1 when value is NULL or memory ran out. */
static int json_set(json_t *obj, const char *key, json_t *value)
{
    if (value == NULL)
        return -1;
    return json_object_set_new(obj, key, value);
}

static json_t *agent_param_to_json(const agent_param_t *param)
{
    json_t *obj = json_object();
    json_t *options = NULL;
    int rc = 0;

    if (obj == NULL)
        return NULL;
    if (param->options != NULL) {
        options = json_array();
        for (size_t i = 0; options != NULL && i < param->n_options; i++) {
            if (json_array_append_new(options, json_string(param->options[i])) != 0) {
                json_decref(options);
                options = NULL;
            }
        }
        if (options == NULL)
            goto fail;
    } else {
        options = json_null();
    }

    rc |= json_set(obj, "name", json_string_or_null(param->name));
    rc |= json_set(obj, "required", json_boolean(param->required));
    rc |= json_set(obj, "description", json_string_or_null(param->description));
    rc |= json_set(obj, "options", options);
    rc |= json_set(obj, "default", json_string_or_null(param->default_value));
    if (rc != 0)
        goto fail;
    return obj;

fail:
    json_decref(obj);
    return NULL;
}

static json_t *agent_params_to_json(const agent_t *agent)
{
    json_t *params = json_array();

    for (size_t i = 0; params != NULL && i < agent->n_params; i++) {
        json_t *param = agent_param_to_json(&agent->params[i]);

        if (param == NULL || json_array_append_new(params, param) != 0) {
            json_decref(params);
            params = NULL;
        }
    }
    return params;
}

char *agent_params_to_text(const agent_t *agent)
{
    json_t *params = agent_params_to_json(agent);
    size_t size;
    char *text = NULL;

    if (params == NULL)
        return NULL;

    /* dump into our own malloc'd buffer, so the caller frees it with free() whatever allocator jansson uses */
    size = json_dumpb(params, NULL, 0, JSON_COMPACT);
    if (size > 0)
        text = malloc(size + 1);
    if (text != NULL) {
        json_dumpb(params, text, size, JSON_COMPACT);
        text[size] = '\0';
    }
    json_decref(params);
    return text;
}

/* Copies the string value (or NULL for a missing or null one) into *dst. Returns -1 for another type. */
static int stored_string(const json_t *obj, const char *key, int required, char **dst)
{
    json_t *value = json_object_get(obj, key);

    if (value == NULL || json_is_null(value))
        return required == FIELD_REQUIRED ? -1 : 0;
    if (!json_is_string(value))
        return -1;
    *dst = strdup(json_string_value(value));
    return *dst != NULL ? 0 : -1;
}

static int stored_param(const json_t *obj, agent_param_t *param)
{
    json_t *value;
    json_t *option;
    size_t i;

    if (!json_is_object(obj))
        return -1;
    if (stored_string(obj, "name", FIELD_REQUIRED, &param->name) != 0)
        return -1;
    if (!template_name_valid(param->name, strlen(param->name)))
        return -1;

    value = json_object_get(obj, "required");
    if (value != NULL && !json_is_boolean(value))
        return -1;
    param->required = json_is_true(value);

    if (stored_string(obj, "description", FIELD_OPTIONAL, &param->description) != 0)
        return -1;
    if (stored_string(obj, "default", FIELD_OPTIONAL, &param->default_value) != 0)
        return -1;

    value = json_object_get(obj, "options");
    if (value == NULL || json_is_null(value))
        return 0;
    if (!json_is_array(value) || json_array_size(value) == 0)
        return -1;
    param->options = calloc(json_array_size(value), sizeof(*param->options));
    if (param->options == NULL)
        return -1;
    json_array_foreach(value, i, option) {
        if (!json_is_string(option))
            return -1;
        param->options[i] = strdup(json_string_value(option));
        if (param->options[i] == NULL)
            return -1;
        param->n_options = i + 1;
    }
    return 0;
}

int agent_params_from_text(const char *text, agent_t *agent)
{
    json_t *root;
    json_t *item;
    agent_param_t *params = NULL;
    size_t count = 0;
    size_t i;
    int rc = -1;

    if (text == NULL)
        return -1;
    root = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_array(root))
        goto out;

    count = json_array_size(root);
    if (count > 0) {
        params = calloc(count, sizeof(*params));
        if (params == NULL)
            goto out;
    }
    json_array_foreach(root, i, item) {
        if (stored_param(item, &params[i]) != 0)
            goto out;
    }

    /* replace the agent's parameters only once all of them parsed */
    for (i = 0; i < agent->n_params; i++)
        agent_param_free(&agent->params[i]);
    free(agent->params);
    agent->params = params;
    agent->n_params = count;
    params = NULL;
    rc = 0;

out:
    if (params != NULL) {
        for (i = 0; i < count; i++)
            agent_param_free(&params[i]);
        free(params);
    }
    json_decref(root);
    return rc;
}

json_t *agent_to_api_json(const agent_t *agent)
{
    json_t *obj = json_object();
    int rc = 0;

    if (obj == NULL)
        return NULL;
    rc |= json_set(obj, "id", json_integer(agent->id));
    rc |= json_set(obj, "name", json_string_or_null(agent->name));
    rc |= json_set(obj, "description", json_string_or_null(agent->description));
    rc |= json_set(obj, "parameters", agent_params_to_json(agent));
    if (rc != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

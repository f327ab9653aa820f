/* Unit tests for run request bindings: validation order, messages and prompt compilation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent.h"
#include "bindings.h"
#include "strbuf.h"

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

/*
 * The agent most cases run against:
 *   region  required, options US/EU/APAC
 *   week    optional, default "last"
 *   team    optional, no default, any value
 *   owner   required, no default, any value
 */
static const char kpi_agent_json[] =
    "{\"name\":\"KPI\",\"provider\":\"echo\",\"system\":\"Analyst for {{region}}.\","
    "\"prompt\":\"Summarize {{region}} in week {{ week }} for {{team}} by {{\\towner\\t}}.\","
    "\"parameters\":[{\"name\":\"region\",\"required\":true,\"options\":[\"US\",\"EU\",\"APAC\"]},"
    "{\"name\":\"week\",\"default\":\"last\"},{\"name\":\"team\"},{\"name\":\"owner\",\"required\":true}]}";

static int any_provider(const char *name)
{
    return 1;
}

static const agent_import_options_t any_provider_options = {any_provider, NULL, NULL};

static agent_t load_agent(const char *json)
{
    agent_t *agents;
    agent_t agent;
    size_t n;
    char err[512];

    if (agent_import_parse(json, strlen(json), &any_provider_options, &agents, &n, err, sizeof(err)) != 0)
        fail_msg("test agent rejected: %s", err);
    agent = agents[0];
    free(agents);
    return agent;
}

static const char *rc_name(bind_rc_t rc)
{
    switch (rc) {
    case BIND_OK:
        return "BIND_OK";
    case BIND_INVALID_REQUEST:
        return "BIND_INVALID_REQUEST";
    case BIND_UNKNOWN_PARAMETER:
        return "BIND_UNKNOWN_PARAMETER";
    case BIND_INVALID_VALUE:
        return "BIND_INVALID_VALUE";
    case BIND_MISSING_PARAMETER:
        return "BIND_MISSING_PARAMETER";
    case BIND_OUT_OF_MEMORY:
        return "BIND_OUT_OF_MEMORY";
    }
    return "unknown";
}

static int utf8_valid(const char *text)
{
    size_t len = strlen(text);

    for (size_t i = 0; i < len;) {
        size_t seq = strbuf_utf8_sequence_length((const unsigned char *)text + i, len - i);

        if (seq == 0)
            return 0;
        i += seq;
    }
    return 1;
}

/* ---- rejections and their order ---- */

typedef struct {
    const char *body;
    bind_rc_t rc;
    const char *expected[3]; /* texts the message must contain, NULL-terminated */
} rejection_t;

#define REGION_EU "{\"name\":\"region\",\"value\":\"EU\"}"
#define OWNER_ME "{\"name\":\"owner\",\"value\":\"me\"}"

static const rejection_t rejections[] = {
    /* step 1: JSON and shape */
    {"not json", BIND_INVALID_REQUEST, {"not valid JSON", "line 1, column"}},
    {" ", BIND_INVALID_REQUEST, {"not valid JSON"}},
    {"{\"parameter_bindings\":[", BIND_INVALID_REQUEST, {"not valid JSON"}},
    {"{\"parameter_bindings\":[]}x", BIND_INVALID_REQUEST, {"not valid JSON"}},
    {"{\"parameter_bindings\":[],\"parameter_bindings\":[]}", BIND_INVALID_REQUEST, {"duplicate"}},
    {"[]", BIND_INVALID_REQUEST, {"must be a JSON object, got an array"}},
    {"\"x\"", BIND_INVALID_REQUEST, {"must be a JSON object, got a string"}},
    {"null", BIND_INVALID_REQUEST, {"must be a JSON object, got null"}},
    {"{\"parameter_bindings\":{}}", BIND_INVALID_REQUEST, {"parameter_bindings must be an array", "got an object"}},
    {"{\"parameter_bindings\":\"region=EU\"}", BIND_INVALID_REQUEST, {"parameter_bindings must be an array"}},
    {"{\"parameter_bindings\":[1]}", BIND_INVALID_REQUEST, {"parameter_bindings[0] must be an object"}},
    {"{\"parameter_bindings\":[" REGION_EU ",null]}", BIND_INVALID_REQUEST, {"parameter_bindings[1] must be an object"}},
    {"{\"parameter_bindings\":[{\"value\":\"EU\"}]}", BIND_INVALID_REQUEST, {"parameter_bindings[0].name is missing"}},
    {"{\"parameter_bindings\":[{\"name\":5,\"value\":\"EU\"}]}", BIND_INVALID_REQUEST,
     {"parameter_bindings[0].name must be a string, got an integer"}},
    {"{\"parameter_bindings\":[{\"name\":null,\"value\":\"EU\"}]}", BIND_INVALID_REQUEST,
     {"parameter_bindings[0].name must be a string, got null"}},
    {"{\"parameter_bindings\":[{\"name\":\"region\"}]}", BIND_INVALID_REQUEST,
     {"parameter_bindings[0].value for parameter \"region\" is missing"}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":null}]}", BIND_INVALID_REQUEST,
     {"parameter_bindings[0].value for parameter \"region\" must be a string, got null"}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":1}]}", BIND_INVALID_REQUEST,
     {"\"region\" must be a string, got an integer"}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":[\"EU\"]}]}", BIND_INVALID_REQUEST,
     {"\"region\" must be a string, got an array"}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":true}]}", BIND_INVALID_REQUEST,
     {"got a boolean"}},
    {"{\"parameter_bindings\":[" REGION_EU "," OWNER_ME "," REGION_EU "]}", BIND_INVALID_REQUEST,
     {"Parameter \"region\" is bound more than once", "parameter_bindings[0] and [2]"}},
    {"{\"parameter_bindings\":[{\"name\":\"team\",\"value\":\"a\"},{\"name\":\"team\",\"value\":\"b\"}]}",
     BIND_INVALID_REQUEST, {"\"team\" is bound more than once"}},

    /* step 1 covers the whole body before step 2 looks at names */
    {"{\"parameter_bindings\":[{\"name\":\"nope\",\"value\":\"x\"},{\"name\":\"region\"}]}", BIND_INVALID_REQUEST,
     {"parameter_bindings[1].value"}},
    {"{\"parameter_bindings\":[{\"name\":\"nope\",\"value\":\"x\"},{\"name\":\"nope\",\"value\":\"x\"}]}",
     BIND_INVALID_REQUEST, {"\"nope\" is bound more than once"}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"xx\"},7]}", BIND_INVALID_REQUEST,
     {"parameter_bindings[1] must be an object"}},

    /* step 2: names */
    {"{\"parameter_bindings\":[{\"name\":\"regoin\",\"value\":\"EU\"}]}", BIND_UNKNOWN_PARAMETER,
     {"Unknown parameter \"regoin\"", "\"region\", \"week\", \"team\", \"owner\""}},
    {"{\"parameter_bindings\":[{\"name\":\"Region\",\"value\":\"EU\"}]}", BIND_UNKNOWN_PARAMETER,
     {"Unknown parameter \"Region\""}},
    {"{\"parameter_bindings\":[{\"name\":\"\",\"value\":\"EU\"}]}", BIND_UNKNOWN_PARAMETER,
     {"Unknown parameter \"\""}},
    {"{\"parameter_bindings\":[{\"name\":\"region \",\"value\":\"EU\"}]}", BIND_UNKNOWN_PARAMETER,
     {"Unknown parameter \"region \""}},
    /* step 2 before step 3: an unknown name after an invalid value */
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"xx\"},{\"name\":\"nope\",\"value\":\"1\"}]}",
     BIND_UNKNOWN_PARAMETER, {"Unknown parameter \"nope\""}},
    /* step 2 before step 4 */
    {"{\"parameter_bindings\":[{\"name\":\"nope\",\"value\":\"1\"}]}", BIND_UNKNOWN_PARAMETER,
     {"Unknown parameter \"nope\""}},

    /* step 3: values */
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"eu\"}]}", BIND_INVALID_VALUE,
     {"Invalid value \"eu\" for parameter \"region\"", "Allowed values: \"US\", \"EU\", \"APAC\"."}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\" EU\"}]}", BIND_INVALID_VALUE,
     {"Invalid value \" EU\""}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"EU \"}]}", BIND_INVALID_VALUE,
     {"Invalid value \"EU \""}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"\"}]}", BIND_INVALID_VALUE,
     {"Invalid value \"\" for parameter \"region\""}},
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"{{region}}\"}]}", BIND_INVALID_VALUE,
     {"Invalid value \"{{region}}\""}},
    /* step 3 before step 4: owner is missing too */
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"xx\"}]}", BIND_INVALID_VALUE,
     {"Invalid value \"xx\""}},

    /* step 4: required parameters, in the agent's order */
    {NULL, BIND_MISSING_PARAMETER, {"Missing required parameter \"region\""}},
    {"", BIND_MISSING_PARAMETER, {"Missing required parameter \"region\""}},
    {"{}", BIND_MISSING_PARAMETER, {"Missing required parameter \"region\""}},
    {"{\"parameter_bindings\":null}", BIND_MISSING_PARAMETER, {"Missing required parameter \"region\""}},
    {"{\"parameter_bindings\":[]}", BIND_MISSING_PARAMETER, {"Missing required parameter \"region\""}},
    {"{\"parameter_bindings\":[" OWNER_ME "]}", BIND_MISSING_PARAMETER, {"Missing required parameter \"region\""}},
    {"{\"parameter_bindings\":[" REGION_EU "]}", BIND_MISSING_PARAMETER, {"Missing required parameter \"owner\""}},
    {"{\"parameter_bindings\":[" REGION_EU ",{\"name\":\"week\",\"value\":\"1\"}]}", BIND_MISSING_PARAMETER,
     {"\"owner\""}},
};

static void bind_rejections(void **state)
{
    agent_t agent = load_agent(kpi_agent_json);

    for (size_t i = 0; i < COUNT_OF(rejections); i++) {
        const rejection_t *c = &rejections[i];
        compiled_run_t run;
        char msg[512];
        bind_rc_t rc;

        memset(&run, 0xab, sizeof(run));
        rc = bindings_compile(&agent, c->body, c->body ? strlen(c->body) : 0, &run, msg, sizeof(msg));
        if (rc != c->rc)
            fail_msg("body %s: %s (%s), expected %s", c->body ? c->body : "NULL", rc_name(rc), msg, rc_name(c->rc));
        if (run.prompt != NULL || run.system != NULL || run.parameters != NULL)
            fail_msg("body %s: output not zeroed on error", c->body ? c->body : "NULL");
        for (size_t e = 0; e < COUNT_OF(c->expected) && c->expected[e] != NULL; e++) {
            if (strstr(msg, c->expected[e]) == NULL)
                fail_msg("body %s: message \"%s\" lacks \"%s\"", c->body ? c->body : "NULL", msg, c->expected[e]);
        }
        if (!utf8_valid(msg))
            fail_msg("body %s: message is not valid UTF-8", c->body ? c->body : "NULL");
    }
    agent_free(&agent);
}

/* ---- successful compilation ---- */

typedef struct {
    const char *body;
    const char *prompt;
    const char *system;
    const char *parameters; /* compact JSON */
} compile_case_t;

static const compile_case_t compile_cases[] = {
    {"{\"parameter_bindings\":[" REGION_EU "," OWNER_ME "]}", "Summarize EU in week last for  by me.",
     "Analyst for EU.",
     "[{\"name\":\"region\",\"value\":\"EU\",\"source\":\"binding\"},"
     "{\"name\":\"week\",\"value\":\"last\",\"source\":\"default\"},"
     "{\"name\":\"owner\",\"value\":\"me\",\"source\":\"binding\"}]"},
    /* bindings in any order; the listing follows the agent's order */
    {"{\"parameter_bindings\":[{\"name\":\"team\",\"value\":\"\"}," OWNER_ME
     ",{\"name\":\"week\",\"value\":\"7\"},{\"name\":\"region\",\"value\":\"APAC\"}]}",
     "Summarize APAC in week 7 for  by me.", "Analyst for APAC.",
     "[{\"name\":\"region\",\"value\":\"APAC\",\"source\":\"binding\"},"
     "{\"name\":\"week\",\"value\":\"7\",\"source\":\"binding\"},"
     "{\"name\":\"team\",\"value\":\"\",\"source\":\"binding\"},"
     "{\"name\":\"owner\",\"value\":\"me\",\"source\":\"binding\"}]"},
    /* a value that looks like a placeholder stays literal */
    {"{\"parameter_bindings\":[" REGION_EU ",{\"name\":\"owner\",\"value\":\"{{region}}\"},"
     "{\"name\":\"team\",\"value\":\"{{ team }}\"}]}",
     "Summarize EU in week last for {{ team }} by {{region}}.", "Analyst for EU.", NULL},
    /* UTF-8, quotes, newlines and JSON escapes in values */
    {"{\"parameter_bindings\":[" REGION_EU ",{\"name\":\"owner\",\"value\":\"Z\xc3\xbcrich \xe2\x9c\x93\"},"
     "{\"name\":\"team\",\"value\":\"a \\\"b\\\"\\n\\u00e9\"}]}",
     "Summarize EU in week last for a \"b\"\n\xc3\xa9 by Z\xc3\xbcrich \xe2\x9c\x93.", "Analyst for EU.", NULL},
    /* unknown top-level fields and extra fields in a binding are ignored */
    {"{\"dry_run\":true,\"metadata\":{\"x\":[1,2]},\"parameter_bindings\":["
     "{\"name\":\"region\",\"value\":\"US\",\"comment\":5}," OWNER_ME "]}",
     "Summarize US in week last for  by me.", "Analyst for US.", NULL},
    /* options compare after JSON unescaping: "E\u0055" is "EU" */
    {"{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"E\\u0055\"}," OWNER_ME "]}",
     "Summarize EU in week last for  by me.", "Analyst for EU.", NULL},
    /* whitespace around valid JSON */
    {" \n{\"parameter_bindings\":[" REGION_EU "," OWNER_ME "]}\n ", "Summarize EU in week last for  by me.",
     "Analyst for EU.", NULL},
};

static void bind_compile_cases(void **state)
{
    agent_t agent = load_agent(kpi_agent_json);

    for (size_t i = 0; i < COUNT_OF(compile_cases); i++) {
        const compile_case_t *c = &compile_cases[i];
        compiled_run_t run;
        char msg[512];
        bind_rc_t rc = bindings_compile(&agent, c->body, strlen(c->body), &run, msg, sizeof(msg));

        if (rc != BIND_OK)
            fail_msg("body %s: %s (%s)", c->body, rc_name(rc), msg);
        if (strcmp(run.prompt, c->prompt) != 0)
            fail_msg("body %s: prompt \"%s\", expected \"%s\"", c->body, run.prompt, c->prompt);
        assert_int_equal(run.prompt_len, strlen(c->prompt));
        assert_non_null(run.system);
        if (strcmp(run.system, c->system) != 0)
            fail_msg("body %s: system \"%s\", expected \"%s\"", c->body, run.system, c->system);
        assert_true(json_is_array(run.parameters));
        if (c->parameters != NULL) {
            char *text = json_dumps(run.parameters, JSON_COMPACT);

            if (strcmp(text, c->parameters) != 0)
                fail_msg("body %s: parameters %s, expected %s", c->body, text, c->parameters);
            free(text);
        }
        compiled_run_free(&run);
        assert_null(run.prompt);
        assert_null(run.parameters);
    }
    agent_free(&agent);
}

static void bind_agent_without_params(void **state)
{
    agent_t agent = load_agent("{\"name\":\"E\",\"provider\":\"echo\",\"prompt\":\"Say {{}} hi {{ a b }}\"}");
    compiled_run_t run;
    char msg[256];
    const char *body;

    assert_int_equal(bindings_compile(&agent, NULL, 0, &run, msg, sizeof(msg)), BIND_OK);
    assert_string_equal(run.prompt, "Say {{}} hi {{ a b }}");
    assert_null(run.system);
    assert_int_equal(json_array_size(run.parameters), 0);
    compiled_run_free(&run);

    body = "{\"parameter_bindings\":[]}";
    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, msg, sizeof(msg)), BIND_OK);
    compiled_run_free(&run);

    body = "{\"parameter_bindings\":[{\"name\":\"x\",\"value\":\"y\"}]}";
    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, msg, sizeof(msg)), BIND_UNKNOWN_PARAMETER);
    assert_non_null(strstr(msg, "Unknown parameter \"x\": this agent takes no parameters."));
    agent_free(&agent);
}

static void bind_body_length_respected(void **state)
{
    agent_t agent = load_agent(kpi_agent_json);
    const char body[] = "{\"parameter_bindings\":[" REGION_EU "," OWNER_ME "]}trailing garbage";
    compiled_run_t run;
    char msg[256];

    /* bindings_compile reads body_len bytes and ignores what follows */
    assert_int_equal(bindings_compile(&agent, body, strlen(body) - strlen("trailing garbage"), &run, msg, sizeof(msg)),
                     BIND_OK);
    compiled_run_free(&run);
    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);
    agent_free(&agent);
}

/* ---- hostile input ---- */

static void bind_deep_nesting(void **state)
{
    agent_t agent = load_agent(kpi_agent_json);
    const size_t depth = 200000;
    size_t prefix_len = strlen("{\"parameter_bindings\":");
    char *body = malloc(prefix_len + depth * 2 + 2);
    compiled_run_t run;
    char msg[256];
    size_t len = 0;

    assert_non_null(body);
    memcpy(body, "{\"parameter_bindings\":", prefix_len);
    len = prefix_len;
    memset(body + len, '[', depth);
    len += depth;
    memset(body + len, ']', depth);
    len += depth;
    body[len++] = '}';
    assert_int_equal(bindings_compile(&agent, body, len, &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);

    /* objects nested in a binding's value */
    memset(body, '{', depth);
    assert_int_equal(bindings_compile(&agent, body, depth, &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);
    free(body);
    agent_free(&agent);
}

/* Builds {"parameter_bindings":[...]} with count bindings, all called fixed_name, or
 * "n0", "n1", ... when fixed_name is NULL. */
static char *build_bindings(size_t count, const char *fixed_name, size_t *len)
{
    char *body = malloc(64 + count * 48);
    size_t used = 0;

    assert_non_null(body);
    used += (size_t)sprintf(body, "{\"parameter_bindings\":[");
    for (size_t i = 0; i < count; i++) {
        used += (size_t)sprintf(body + used, "%s{\"name\":\"", i > 0 ? "," : "");
        if (fixed_name != NULL)
            used += (size_t)sprintf(body + used, "%s", fixed_name);
        else
            used += (size_t)sprintf(body + used, "n%zu", i);
        used += (size_t)sprintf(body + used, "\",\"value\":\"v\"}");
    }
    used += (size_t)sprintf(body + used, "]}");
    *len = used;
    return body;
}

static void bind_huge_arrays(void **state)
{
    agent_t agent = load_agent(kpi_agent_json);
    compiled_run_t run;
    char msg[256];
    size_t len;
    char *body;

    /* about 1 MiB of distinct unknown names: the first is reported */
    body = build_bindings(35000, NULL, &len);
    assert_true(len > 1000000);
    assert_int_equal(bindings_compile(&agent, body, len, &run, msg, sizeof(msg)), BIND_UNKNOWN_PARAMETER);
    assert_non_null(strstr(msg, "Unknown parameter \"n0\""));
    free(body);

    /* the same name many times: a duplicate, found in linear time */
    body = build_bindings(30000, "team", &len);
    assert_int_equal(bindings_compile(&agent, body, len, &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);
    assert_non_null(strstr(msg, "\"team\" is bound more than once (parameter_bindings[0] and [1])"));
    free(body);
    agent_free(&agent);
}

static void bind_long_values_in_messages(void **state)
{
    agent_t agent = load_agent(kpi_agent_json);
    compiled_run_t run;
    char msg[256];
    char small[16];
    char body[4096];
    char value[2001];

    /* a long multi-byte value is shortened in the message, at a character boundary */
    value[0] = '\0';
    for (int i = 0; i < 1000; i++)
        strcat(value, "\xc3\xa9");
    snprintf(body, sizeof(body), "{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"%s\"}]}", value);
    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, msg, sizeof(msg)), BIND_INVALID_VALUE);
    assert_true(utf8_valid(msg));
    assert_non_null(strstr(msg, "\"... for parameter \"region\""));
    assert_non_null(strstr(msg, "Allowed values"));

    /* a message buffer too small for the message is cut, NUL-terminated and valid UTF-8 */
    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, small, sizeof(small)), BIND_INVALID_VALUE);
    assert_true(strlen(small) < sizeof(small));
    assert_true(utf8_valid(small));

    /* no message buffer at all */
    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, NULL, 0), BIND_INVALID_VALUE);
    agent_free(&agent);
}

static void bind_invalid_json_bytes(void **state)
{
    agent_t agent = load_agent(kpi_agent_json);
    compiled_run_t run;
    char msg[256];
    const char body[] = "{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"\xff\xfe\"}]}";
    const char nul_body[] = "{\"parameter_bindings\":[{\"name\":\"region\",\"value\":\"E\\u0000U\"}]}";

    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);
    assert_true(utf8_valid(msg));
    assert_int_equal(bindings_compile(&agent, nul_body, strlen(nul_body), &run, msg, sizeof(msg)),
                     BIND_INVALID_REQUEST);

    /* a raw NUL byte inside the body */
    assert_int_equal(bindings_compile(&agent, "{\"a\":\0}", 7, &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);
    agent_free(&agent);
}

/* A value bound to a placeholder used many times: the compiled size, not the
 * body size, decides, and the check runs before anything is built. */
static void bind_compiled_size_limit(void **state)
{
    enum { PLACEHOLDERS = 100 };
    strbuf_t agent_json = STRBUF_INIT;
    strbuf_t body = STRBUF_INIT;
    compiled_run_t run;
    char msg[512];
    agent_t agent;
    size_t fits = BIND_MAX_COMPILED_BYTES / PLACEHOLDERS;

    strbuf_append_str(&agent_json, "{\"name\": \"a\", \"provider\": \"echo\", \"prompt\": \"");
    for (int i = 0; i < PLACEHOLDERS; i++)
        strbuf_append_str(&agent_json, "{{p}}");
    strbuf_append_str(&agent_json, "\", \"parameters\": [{\"name\": \"p\"}]}");
    agent = load_agent(agent_json.data);

    /* exactly at the limit: compiled */
    strbuf_append_str(&body, "{\"parameter_bindings\": [{\"name\": \"p\", \"value\": \"");
    for (size_t i = 0; i < fits; i++)
        strbuf_append(&body, "v", 1);
    strbuf_append_str(&body, "\"}]}");
    assert_int_equal(bindings_compile(&agent, body.data, body.len, &run, msg, sizeof(msg)), BIND_OK);
    assert_int_equal(run.prompt_len, fits * PLACEHOLDERS);
    compiled_run_free(&run);

    /* one byte more per placeholder: rejected, naming the limit */
    strbuf_free(&body);
    strbuf_append_str(&body, "{\"parameter_bindings\": [{\"name\": \"p\", \"value\": \"");
    for (size_t i = 0; i < fits + 1; i++)
        strbuf_append(&body, "v", 1);
    strbuf_append_str(&body, "\"}]}");
    assert_int_equal(bindings_compile(&agent, body.data, body.len, &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);
    assert_non_null(strstr(msg, "compiled prompt"));
    assert_null(run.prompt);

    strbuf_free(&body);
    strbuf_free(&agent_json);
    agent_free(&agent);
}

static void bind_nul_escape_message(void **state)
{
    agent_t agent = load_agent("{\"name\": \"a\", \"provider\": \"echo\", \"prompt\": \"{{p}}\", "
                               "\"parameters\": [{\"name\": \"p\"}]}");
    static const char body[] = "{\"parameter_bindings\": [{\"name\": \"p\", \"value\": \"a\\u0000b\"}]}";
    compiled_run_t run;
    char msg[512];

    assert_int_equal(bindings_compile(&agent, body, strlen(body), &run, msg, sizeof(msg)), BIND_INVALID_REQUEST);
    assert_non_null(strstr(msg, "\\u0000"));
    assert_null(strstr(msg, "JSON_ALLOW_NUL"));
    agent_free(&agent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bind_rejections),
        cmocka_unit_test(bind_compile_cases),
        cmocka_unit_test(bind_agent_without_params),
        cmocka_unit_test(bind_body_length_respected),
        cmocka_unit_test(bind_deep_nesting),
        cmocka_unit_test(bind_huge_arrays),
        cmocka_unit_test(bind_long_values_in_messages),
        cmocka_unit_test(bind_invalid_json_bytes),
        cmocka_unit_test(bind_compiled_size_limit),
        cmocka_unit_test(bind_nul_escape_message),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for agent definitions: import validation and the JSON forms of an agent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent.h"
#include "strbuf.h"

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static int test_provider_known(const char *name)
{
    return strcmp(name, "echo") == 0 || strcmp(name, "openai") == 0 || strcmp(name, "anthropic") == 0;
}

static const agent_import_options_t test_provider_known_options = {test_provider_known, NULL, NULL};

static const char example_agent[] =
    "{\"name\": \"Weekly KPI summary\", \"description\": \"KPIs for one region\",\n"
    " \"published\": true,\n"
    " \"parameters\": [{\"name\": \"region\", \"required\": true, \"description\": \"Sales region\",\n"
    "                 \"options\": [\"US\", \"EU\", \"APAC\"]},\n"
    "                {\"name\": \"week\", \"required\": false, \"description\": \"ISO week\", \"default\": \"last\"}],\n"
    " \"system\": \"You are a concise analyst.\",\n"
    " \"prompt\": \"Summarize the KPIs for {{region}} in week {{week}}.\",\n"
    " \"provider\": \"openai\", \"model\": \"gpt-4o-mini\", \"temperature\": 0.2, \"max_tokens\": 800}";

/* Parses text that must be valid; fails the test with the message otherwise. */
static agent_t *parse_ok(const char *text, size_t *n)
{
    char err[512];
    agent_t *agents = NULL;

    if (agent_import_parse(text, strlen(text), &test_provider_known_options, &agents, n, err, sizeof(err)) != 0)
        fail_msg("rejected: %s\ninput: %s", err, text);
    return agents;
}

static void free_agents(agent_t *agents, size_t n)
{
    for (size_t i = 0; i < n; i++)
        agent_free(&agents[i]);
    free(agents);
}

/* ---- valid files ---- */

static void import_example_fields(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok(example_agent, &n);
    agent_t *agent = &agents[0];

    assert_int_equal(n, 1);
    assert_int_equal(agent->id, 0);
    assert_string_equal(agent->name, "Weekly KPI summary");
    assert_string_equal(agent->description, "KPIs for one region");
    assert_int_equal(agent->published, 1);
    assert_string_equal(agent->system, "You are a concise analyst.");
    assert_string_equal(agent->prompt, "Summarize the KPIs for {{region}} in week {{week}}.");
    assert_string_equal(agent->provider, "openai");
    assert_string_equal(agent->model, "gpt-4o-mini");
    assert_int_equal(agent->has_temperature, 1);
    assert_true(agent->temperature > 0.19 && agent->temperature < 0.21);
    assert_int_equal(agent->max_tokens, 800);
    assert_int_equal(agent->timeout_ms, 0);

    assert_int_equal(agent->n_params, 2);
    assert_string_equal(agent->params[0].name, "region");
    assert_int_equal(agent->params[0].required, 1);
    assert_string_equal(agent->params[0].description, "Sales region");
    assert_int_equal(agent->params[0].n_options, 3);
    assert_string_equal(agent->params[0].options[0], "US");
    assert_string_equal(agent->params[0].options[1], "EU");
    assert_string_equal(agent->params[0].options[2], "APAC");
    assert_null(agent->params[0].default_value);
    assert_string_equal(agent->params[1].name, "week");
    assert_int_equal(agent->params[1].required, 0);
    assert_null(agent->params[1].options);
    assert_int_equal(agent->params[1].n_options, 0);
    assert_string_equal(agent->params[1].default_value, "last");

    free_agents(agents, n);
}

static void import_minimal_echo_defaults(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok("{\"name\": \"E\", \"prompt\": \"\", \"provider\": \"echo\"}", &n);

    assert_int_equal(n, 1);
    assert_string_equal(agents[0].prompt, "");
    assert_null(agents[0].model);
    assert_null(agents[0].description);
    assert_null(agents[0].system);
    assert_int_equal(agents[0].published, 0);
    assert_int_equal(agents[0].has_temperature, 0);
    assert_int_equal(agents[0].max_tokens, 0);
    assert_int_equal(agents[0].timeout_ms, 0);
    assert_int_equal(agents[0].n_params, 0);
    assert_null(agents[0].params);
    free_agents(agents, n);
}

static void import_array_in_order(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok("[{\"name\": \"first\", \"prompt\": \"a\", \"provider\": \"echo\"},\n"
                               " {\"name\": \"second\", \"prompt\": \"b\", \"provider\": \"anthropic\","
                               " \"model\": \"claude\", \"timeout_seconds\": 90}]",
                               &n);

    assert_int_equal(n, 2);
    assert_string_equal(agents[0].name, "first");
    assert_string_equal(agents[1].name, "second");
    assert_string_equal(agents[1].model, "claude");
    assert_int_equal(agents[1].timeout_ms, 90000);
    free_agents(agents, n);
}

static void import_null_means_absent(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok("{\"name\": \"N\", \"prompt\": \"{{p}}\", \"provider\": \"echo\", \"model\": null,"
                               " \"description\": null, \"system\": null, \"published\": null,"
                               " \"temperature\": null, \"max_tokens\": null, \"timeout_seconds\": null,"
                               " \"parameters\": [{\"name\": \"p\", \"required\": null, \"description\": null,"
                               " \"options\": null, \"default\": null}]}",
                               &n);

    assert_null(agents[0].model);
    assert_null(agents[0].description);
    assert_int_equal(agents[0].has_temperature, 0);
    assert_int_equal(agents[0].n_params, 1);
    assert_int_equal(agents[0].params[0].required, 0);
    assert_null(agents[0].params[0].options);
    assert_null(agents[0].params[0].default_value);
    free_agents(agents, n);
}

static void import_boundaries_accepted(void **state)
{
    static const char *const cases[] = {
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"temperature\":0}",
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"temperature\":2}",
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"temperature\":2.0}",
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"max_tokens\":1}",
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"timeout_seconds\":1}",
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"timeout_seconds\":3600}",
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"parameters\":[]}",
        "{\"name\":\"a\",\"prompt\":\"\",\"provider\":\"echo\",\"model\":\"m\"}",
        /* literal braces are not placeholders, so they need no parameter */
        "{\"name\":\"a\",\"prompt\":\"{{}} {{ a b }} {x} {{x\",\"provider\":\"echo\"}",
        /* the system prompt may use placeholders */
        "{\"name\":\"a\",\"prompt\":\"p\",\"system\":\"for {{ r }}\",\"provider\":\"echo\","
        "\"parameters\":[{\"name\":\"r\"}]}",
        /* a default with no options, a required parameter with a default, an empty option */
        "{\"name\":\"a\",\"prompt\":\"{{r}}\",\"provider\":\"echo\","
        "\"parameters\":[{\"name\":\"r\",\"required\":true,\"default\":\"x\"}]}",
        "{\"name\":\"a\",\"prompt\":\"{{r}}\",\"provider\":\"echo\","
        "\"parameters\":[{\"name\":\"r\",\"options\":[\"\",\"x\"],\"default\":\"\"}]}",
        /* parameter names differing only in case are distinct */
        "{\"name\":\"a\",\"prompt\":\"{{r}}{{R}}\",\"provider\":\"echo\","
        "\"parameters\":[{\"name\":\"r\"},{\"name\":\"R\"}]}",
        /* UTF-8 in names, prompts and options */
        "{\"name\":\"R\xc3\xa9sum\xc3\xa9 \xe2\x9c\x93\",\"prompt\":\"\xe6\x97\xa5 {{r}}\",\"provider\":\"echo\","
        "\"parameters\":[{\"name\":\"r\",\"options\":[\"Z\xc3\xbcrich\"]}]}",
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        size_t n = 0;
        agent_t *agents = parse_ok(cases[i], &n);

        assert_int_equal(n, 1);
        free_agents(agents, n);
    }
}

/* ---- rejections ---- */

/* An import file and the texts its error message must contain (up to 3, NULL-terminated). */
typedef struct {
    const char *text;
    const char *expected[3];
} rejection_t;

#define AGENT_OK "\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"echo\""

static const rejection_t rejections[] = {
    /* the file */
    {"", {"invalid JSON at line 1, column"}},
    {"{", {"invalid JSON at line 1"}},
    {"{\n\"name\": \"a\",\n\"x\" 1}", {"invalid JSON at line 3, column"}},
    {"{\"name\":\"a\",\"name\":\"b\",\"prompt\":\"p\",\"provider\":\"echo\"}", {"invalid JSON", "duplicate"}},
    {"42", {"expected an agent object or an array of agent objects, got an integer"}},
    {"\"agent\"", {"got a string"}},
    {"null", {"got null"}},
    {"[]", {"empty array"}},
    {"[1]", {"agent 1: must be an object, got an integer"}},
    {"[{" AGENT_OK "}, []]", {"agent 2: must be an object, got an array"}},

    /* name */
    {"{\"prompt\":\"p\",\"provider\":\"echo\"}", {"agent 1: name: missing"}},
    {"{\"name\":null,\"prompt\":\"p\",\"provider\":\"echo\"}", {"agent 1: name: missing"}},
    {"{\"name\":5,\"prompt\":\"p\",\"provider\":\"echo\"}", {"agent 1: name: must be a string, got an integer"}},
    {"{\"name\":\"\",\"prompt\":\"p\",\"provider\":\"echo\"}", {"agent 1: name: must not be empty"}},

    /* prompt */
    {"{\"name\":\"A\",\"provider\":\"echo\"}", {"agent 1 (\"A\"): prompt: missing"}},
    {"{\"name\":\"A\",\"prompt\":[\"p\"],\"provider\":\"echo\"}", {"prompt: must be a string, got an array"}},

    /* provider and model */
    {"{\"name\":\"A\",\"prompt\":\"p\"}", {"provider: missing"}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":1}", {"provider: must be a string"}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"\"}", {"provider: must not be empty"}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"opneai\",\"model\":\"m\"}",
     {"provider: unknown provider \"opneai\""}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"Echo\"}", {"provider: unknown provider \"Echo\""}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"openai\"}", {"model: missing", "\"openai\""}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"anthropic\",\"model\":null}", {"model: missing"}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"openai\",\"model\":\"\"}", {"model: must not be empty"}},
    {"{\"name\":\"A\",\"prompt\":\"p\",\"provider\":\"echo\",\"model\":7}", {"model: must be a string"}},

    /* other scalar fields */
    {"{" AGENT_OK ",\"description\":5}", {"description: must be a string, got an integer"}},
    {"{" AGENT_OK ",\"system\":{}}", {"system: must be a string, got an object"}},
    {"{" AGENT_OK ",\"published\":\"yes\"}", {"published: must be true or false, got a string"}},
    {"{" AGENT_OK ",\"published\":1}", {"published: must be true or false, got an integer"}},
    {"{" AGENT_OK ",\"temperature\":\"0.2\"}", {"temperature: must be a number, got a string"}},
    {"{" AGENT_OK ",\"temperature\":-0.1}", {"temperature: must be between 0 and 2, got -0.1"}},
    {"{" AGENT_OK ",\"temperature\":2.5}", {"temperature: must be between 0 and 2, got 2.5"}},
    {"{" AGENT_OK ",\"temperature\":true}", {"temperature: must be a number, got a boolean"}},
    {"{" AGENT_OK ",\"max_tokens\":0}", {"max_tokens: must be at least 1, got 0"}},
    {"{" AGENT_OK ",\"max_tokens\":-5}", {"max_tokens: must be at least 1, got -5"}},
    {"{" AGENT_OK ",\"max_tokens\":1.5}", {"max_tokens: must be an integer, got a number"}},
    {"{" AGENT_OK ",\"max_tokens\":800.0}", {"max_tokens: must be an integer, got a number"}},
    {"{" AGENT_OK ",\"max_tokens\":\"800\"}", {"max_tokens: must be an integer, got a string"}},
    {"{" AGENT_OK ",\"timeout_seconds\":0}", {"timeout_seconds: must be between 1 and 3600, got 0"}},
    {"{" AGENT_OK ",\"timeout_seconds\":3601}", {"timeout_seconds: must be between 1 and 3600, got 3601"}},
    {"{" AGENT_OK ",\"timeout_seconds\":30.5}", {"timeout_seconds: must be an integer"}},

    /* unknown fields */
    {"{\"name\":\"A\",\"promt\":\"p\",\"prompt\":\"p\",\"provider\":\"echo\"}",
     {"agent 1 (\"A\"): unknown field \"promt\"", "\"prompt\""}},
    {"{" AGENT_OK ",\"id\":12}", {"unknown field \"id\""}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"requird\":true}]}",
     {"parameters[0]: unknown field \"requird\"", "\"required\""}},

    /* parameters */
    {"{" AGENT_OK ",\"parameters\":{}}", {"parameters: must be an array of parameter objects, got an object"}},
    {"{" AGENT_OK ",\"parameters\":[\"region\"]}", {"parameters[0]: must be an object, got a string"}},
    {"{" AGENT_OK ",\"parameters\":[{\"required\":true}]}", {"parameters[0].name: missing"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":5}]}", {"parameters[0].name: must be a string, got an integer"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"\"}]}", {"parameters[0].name: \"\" is not a valid parameter name"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"week day\"}]}",
     {"parameters[0].name: \"week day\" is not a valid parameter name"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"9lives\"}]}", {"parameters[0].name: \"9lives\" is not a valid"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\xc3\xa9gion\"}]}", {"parameters[0].name: \"r\xc3\xa9gion\""}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}]}",
     {"parameters[0].name:", "is not a valid parameter name"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"a\"},{\"name\":\"b\"},{\"name\":\"a\"}]}",
     {"parameters[2].name: duplicate parameter name \"a\" (also parameters[0].name)"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"required\":\"yes\"}]}",
     {"parameters[0].required: must be true or false, got a string"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"description\":[]}]}",
     {"parameters[0].description: must be a string, got an array"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"options\":\"US\"}]}",
     {"parameters[0].options: must be an array of strings, got a string"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"options\":[]}]}", {"parameters[0].options: must not be empty"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"options\":[\"US\",5]}]}",
     {"parameters[0].options[1]: must be a string, got an integer"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"options\":[\"US\",\"EU\",\"US\"]}]}",
     {"parameters[0].options[2]: duplicate option \"US\""}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"default\":5}]}",
     {"parameters[0].default: must be a string, got an integer"}},
    {"{" AGENT_OK ",\"parameters\":[{\"name\":\"r\",\"options\":[\"US\"],\"default\":\"us\"}]}",
     {"parameters[0].default: \"us\" is not one of the options (\"US\")"}},

    /* placeholders */
    {"{\"name\":\"A\",\"prompt\":\"{{regoin}}\",\"provider\":\"echo\",\"parameters\":[{\"name\":\"region\"}]}",
     {"agent 1 (\"A\"): prompt: placeholder {{regoin}} names no parameter (defined: region)"}},
    {"{\"name\":\"A\",\"prompt\":\"{{ x }}\",\"provider\":\"echo\"}",
     {"prompt: placeholder {{x}} names no parameter (the agent defines no parameters)"}},
    {"{\"name\":\"A\",\"prompt\":\"{{Region}}\",\"provider\":\"echo\",\"parameters\":[{\"name\":\"region\"}]}",
     {"prompt: placeholder {{Region}}"}},
    {"{\"name\":\"A\",\"prompt\":\"{{r}}\",\"system\":\"{{s}}\",\"provider\":\"echo\","
     "\"parameters\":[{\"name\":\"r\"}]}",
     {"system: placeholder {{s}} names no parameter"}},

    /* the agent's position and name in the message */
    {"[{" AGENT_OK "},{\"name\":\"Second\",\"prompt\":\"p\",\"provider\":\"nope\"}]",
     {"agent 2 (\"Second\"): provider: unknown provider \"nope\""}},
    {"[{" AGENT_OK "},{\"name\":\"Weekly KPI summary\",\"prompt\":\"{{region}}\",\"provider\":\"echo\","
     "\"parameters\":[{\"name\":\"week\"},{\"name\":\"region\",\"options\":[\"US\",\"EU\",\"APAC\"],"
     "\"default\":\"x\"}]}]",
     {"agent 2 (\"Weekly KPI summary\"): parameters[1].default: \"x\" is not one of the options "
      "(\"US\", \"EU\", \"APAC\")"}},
    {"{\"name\":\"say \\\"hi\\\"\\n\",\"prompt\":5,\"provider\":\"echo\"}",
     {"agent 1 (\"say \\\"hi\\\"\\n\"): prompt"}},
};

static void import_rejections(void **state)
{
    for (size_t i = 0; i < COUNT_OF(rejections); i++) {
        const rejection_t *c = &rejections[i];
        char err[1024];
        agent_t *agents = (agent_t *)(uintptr_t)1;
        size_t n = 99;
        int rc;

        memset(err, 'x', sizeof(err));
        rc = agent_import_parse(c->text, strlen(c->text), &test_provider_known_options, &agents, &n, err, sizeof(err));
        if (rc != -1)
            fail_msg("accepted: %s", c->text);
        if (agents != NULL || n != 0)
            fail_msg("outputs not reset for: %s", c->text);
        for (size_t e = 0; e < COUNT_OF(c->expected) && c->expected[e] != NULL; e++) {
            if (strstr(err, c->expected[e]) == NULL)
                fail_msg("message \"%s\"\nlacks \"%s\"\ninput: %s", err, c->expected[e], c->text);
        }
    }
}

static void import_message_truncation(void **state)
{
    /* a long multi-byte name cut to a tiny buffer stays NUL-terminated, valid UTF-8 */
    char text[2048];
    char name[600];
    char err[23];
    agent_t *agents;
    size_t n;

    name[0] = '\0';
    for (int i = 0; i < 100; i++)
        strcat(name, "\xc3\xa9");
    snprintf(text, sizeof(text), "{\"name\":\"%s\",\"prompt\":1,\"provider\":\"echo\"}", name);
    assert_int_equal(agent_import_parse(text, strlen(text), &test_provider_known_options, &agents, &n, err, sizeof(err)), -1);
    assert_true(strlen(err) < sizeof(err));
    assert_true(strlen(err) >= sizeof(err) - 3);
    for (size_t i = 0; err[i] != '\0';) {
        size_t len = strbuf_utf8_sequence_length((const unsigned char *)err + i, strlen(err) - i);

        if (len == 0)
            fail_msg("invalid UTF-8 at byte %zu of \"%s\"", i, err);
        i += len;
    }
}

static void import_invalid_utf8_rejected(void **state)
{
    const char text[] = "{\"name\":\"\xff\",\"prompt\":\"p\",\"provider\":\"echo\"}";
    char err[256];
    agent_t *agents;
    size_t n;

    assert_int_equal(agent_import_parse(text, strlen(text), &test_provider_known_options, &agents, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "invalid JSON"));
    assert_null(strchr(err, '\xff'));
}

static void import_nul_byte_rejected(void **state)
{
    const char text[] = "{\"name\":\"a\\u0000b\",\"prompt\":\"p\",\"provider\":\"echo\"}";
    char err[256];
    agent_t *agents;
    size_t n;

    assert_int_equal(agent_import_parse(text, strlen(text), &test_provider_known_options, &agents, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "invalid JSON"));
}

/* ---- storage form ---- */

static void params_text_exact(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok(example_agent, &n);
    char *text = agent_params_to_text(&agents[0]);

    assert_non_null(text);
    assert_string_equal(text, "[{\"name\":\"region\",\"required\":true,\"description\":\"Sales region\","
                              "\"options\":[\"US\",\"EU\",\"APAC\"],\"default\":null},"
                              "{\"name\":\"week\",\"required\":false,\"description\":\"ISO week\","
                              "\"options\":null,\"default\":\"last\"}]");
    free(text);
    free_agents(agents, n);
}

static void params_text_round_trip(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok("{\"name\":\"A\",\"prompt\":\"{{a}}{{b}}\",\"provider\":\"echo\",\"parameters\":["
                               "{\"name\":\"a\",\"required\":true,\"options\":[\"\\\"q\\\"\",\"\xc3\xa9\",\"\"],"
                               "\"default\":\"\"},"
                               "{\"name\":\"b\",\"description\":\"line\\nbreak\"}]}",
                               &n);
    agent_t copy = {0};
    char *text = agent_params_to_text(&agents[0]);
    char *again;

    assert_non_null(text);
    assert_int_equal(agent_params_from_text(text, &copy), 0);
    assert_int_equal(copy.n_params, 2);
    assert_string_equal(copy.params[0].name, "a");
    assert_int_equal(copy.params[0].required, 1);
    assert_null(copy.params[0].description);
    assert_int_equal(copy.params[0].n_options, 3);
    assert_string_equal(copy.params[0].options[0], "\"q\"");
    assert_string_equal(copy.params[0].options[1], "\xc3\xa9");
    assert_string_equal(copy.params[0].options[2], "");
    assert_string_equal(copy.params[0].default_value, "");
    assert_string_equal(copy.params[1].name, "b");
    assert_int_equal(copy.params[1].required, 0);
    assert_string_equal(copy.params[1].description, "line\nbreak");
    assert_null(copy.params[1].options);
    assert_null(copy.params[1].default_value);

    again = agent_params_to_text(&copy);
    assert_string_equal(again, text);

    free(again);
    free(text);
    agent_free(&copy);
    free_agents(agents, n);
}

static void params_text_empty(void **state)
{
    agent_t agent = {0};
    char *text = agent_params_to_text(&agent);

    assert_string_equal(text, "[]");
    assert_int_equal(agent_params_from_text(text, &agent), 0);
    assert_int_equal(agent.n_params, 0);
    free(text);
    agent_free(&agent);
}

static void params_from_text_malformed(void **state)
{
    static const char *const cases[] = {
        "",
        "not json",
        "{}",
        "null",
        "[1]",
        "[{}]",
        "[{\"name\":5}]",
        "[{\"name\":\"a b\"}]",
        "[{\"name\":\"a\",\"required\":1}]",
        "[{\"name\":\"a\",\"description\":5}]",
        "[{\"name\":\"a\",\"options\":\"x\"}]",
        "[{\"name\":\"a\",\"options\":[]}]",
        "[{\"name\":\"a\",\"options\":[\"x\",1]}]",
        "[{\"name\":\"a\",\"default\":[]}]",
        "[{\"name\":\"a\"},5]",
        "[{\"name\":\"a\",\"name\":\"b\"}]",
    };

    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        agent_t agent = {0};

        /* a parameter already present must survive a failed parse */
        assert_int_equal(agent_params_from_text("[{\"name\":\"keep\"}]", &agent), 0);
        if (agent_params_from_text(cases[i], &agent) != -1)
            fail_msg("accepted: %s", cases[i]);
        assert_int_equal(agent.n_params, 1);
        assert_string_equal(agent.params[0].name, "keep");
        agent_free(&agent);
    }
    assert_int_equal(agent_params_from_text(NULL, &(agent_t){0}), -1);
}

static void params_from_text_replaces(void **state)
{
    agent_t agent = {0};

    assert_int_equal(agent_params_from_text("[{\"name\":\"a\"},{\"name\":\"b\"}]", &agent), 0);
    assert_int_equal(agent.n_params, 2);
    assert_int_equal(agent_params_from_text("[{\"name\":\"c\",\"options\":[\"x\"]}]", &agent), 0);
    assert_int_equal(agent.n_params, 1);
    assert_string_equal(agent.params[0].name, "c");
    assert_string_equal(agent.params[0].options[0], "x");
    agent_free(&agent);
}

/* ---- API form ---- */

static void api_json_exact(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok(example_agent, &n);
    json_t *json;
    char *text;

    agents[0].id = 12;
    json = agent_to_api_json(&agents[0]);
    assert_non_null(json);
    text = json_dumps(json, JSON_COMPACT);
    assert_string_equal(text, "{\"id\":12,\"name\":\"Weekly KPI summary\",\"description\":\"KPIs for one region\","
                              "\"parameters\":[{\"name\":\"region\",\"required\":true,\"description\":\"Sales region\","
                              "\"options\":[\"US\",\"EU\",\"APAC\"],\"default\":null},"
                              "{\"name\":\"week\",\"required\":false,\"description\":\"ISO week\","
                              "\"options\":null,\"default\":\"last\"}]}");
    free(text);
    json_decref(json);
    free_agents(agents, n);
}

static void api_json_unset_fields_null(void **state)
{
    size_t n = 0;
    agent_t *agents = parse_ok("{\"name\":\"E\",\"prompt\":\"{{p}}\",\"provider\":\"echo\","
                               "\"system\":\"secret system prompt\",\"parameters\":[{\"name\":\"p\"}]}",
                               &n);
    json_t *json = agent_to_api_json(&agents[0]);
    char *text = json_dumps(json, JSON_COMPACT);

    assert_string_equal(text, "{\"id\":0,\"name\":\"E\",\"description\":null,\"parameters\":[{\"name\":\"p\","
                              "\"required\":false,\"description\":null,\"options\":null,\"default\":null}]}");
    /* the API form never exposes the prompts, provider or model */
    assert_null(strstr(text, "secret system prompt"));
    assert_null(strstr(text, "echo"));
    free(text);
    json_decref(json);
    free_agents(agents, n);
}

/* ---- provider and model overrides ---- */

static void import_override_replaces_provider(void **state)
{
    static const char text[] = "{\"name\": \"a\", \"prompt\": \"p\", \"provider\": \"nosuch\"}";
    const agent_import_options_t options = {test_provider_known, "echo", NULL};
    agent_t *agents = NULL;
    size_t n = 0;
    char err[512];

    assert_int_equal(agent_import_parse(text, strlen(text), &options, &agents, &n, err, sizeof(err)), 0);
    assert_string_equal(agents[0].provider, "echo");
    free_agents(agents, n);
}

static void import_override_needs_model(void **state)
{
    static const char text[] = "{\"name\": \"a\", \"prompt\": \"p\", \"provider\": \"echo\"}";
    const agent_import_options_t without_model = {test_provider_known, "openai", NULL};
    const agent_import_options_t with_model = {test_provider_known, "openai", "gpt-4o-mini"};
    agent_t *agents = NULL;
    size_t n = 0;
    char err[512];

    assert_int_equal(agent_import_parse(text, strlen(text), &without_model, &agents, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "model"));
    assert_int_equal(agent_import_parse(text, strlen(text), &with_model, &agents, &n, err, sizeof(err)), 0);
    assert_string_equal(agents[0].provider, "openai");
    assert_string_equal(agents[0].model, "gpt-4o-mini");
    free_agents(agents, n);
}

static void import_override_unknown_rejected(void **state)
{
    static const char text[] = "{\"name\": \"a\", \"prompt\": \"p\", \"provider\": \"echo\"}";
    const agent_import_options_t options = {test_provider_known, "nosuch", NULL};
    agent_t *agents = NULL;
    size_t n = 0;
    char err[512];

    assert_int_equal(agent_import_parse(text, strlen(text), &options, &agents, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "provider"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(import_example_fields),
        cmocka_unit_test(import_minimal_echo_defaults),
        cmocka_unit_test(import_array_in_order),
        cmocka_unit_test(import_null_means_absent),
        cmocka_unit_test(import_boundaries_accepted),
        cmocka_unit_test(import_rejections),
        cmocka_unit_test(import_message_truncation),
        cmocka_unit_test(import_invalid_utf8_rejected),
        cmocka_unit_test(import_nul_byte_rejected),
        cmocka_unit_test(params_text_exact),
        cmocka_unit_test(params_text_round_trip),
        cmocka_unit_test(params_text_empty),
        cmocka_unit_test(params_from_text_malformed),
        cmocka_unit_test(params_from_text_replaces),
        cmocka_unit_test(api_json_exact),
        cmocka_unit_test(api_json_unset_fields_null),
        cmocka_unit_test(import_override_replaces_provider),
        cmocka_unit_test(import_override_needs_model),
        cmocka_unit_test(import_override_unknown_rejected),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * provider_openai.c - OpenAI-compatible chat completions (OpenAI, Azure
 * OpenAI, vLLM, llama.cpp server, Ollama, LM Studio, OpenRouter).
 *
 * Request: POST {base}/chat/completions with model, messages (the run's
 * system text as a "system" message when set, then the prompt as the "user"
 * message), temperature and max_tokens when set, "stream": true and
 * "stream_options": {"include_usage": true}. The key goes in
 * "Authorization: Bearer", except for Azure OpenAI hosts, which take it in
 * "api-key". A base URL with a query string, as Azure's
 * ".../openai/deployments/NAME?api-version=V", keeps it after the path.
 *
 * Stream: each event's data is one JSON chunk, and "[DONE]" ends the stream.
 * Text comes from choices[0].delta.content, the finish reason from
 * choices[0].finish_reason, and usage from a "usage" object in any chunk,
 * which with include_usage is a last chunk whose "choices" is empty. Fields
 * this file does not know (llama.cpp's "timings", "system_fingerprint",
 * reasoning deltas) are ignored. A server that ignores "stream" replies with
 * one JSON body, parsed by openai_parse_body().
 */
#include "provider.h"

#include <stdlib.h>
#include <string.h>

/* Adds {"role": role, "content": content}; -1 when content is not valid UTF-8. */
static int openai_add_message(json_t *messages, const char *role, const char *content)
{
    json_t *message = json_object();

    if (!message)
        return -1;
    if (json_object_set_new(message, "role", json_string(role)) != 0 ||
        json_object_set_new(message, "content", json_string(content)) != 0 ||
        json_array_append_new(messages, message) != 0) {
        json_decref(message);
        return -1;
    }
    return 0;
}

static int openai_build_request(const provider_endpoint_t *endpoint, const run_t *run, provider_request_t *req)
{
    json_t *root = json_object();
    json_t *messages = json_array();
    json_t *stream_options = json_object();
    int rc = -1;

    memset(req, 0, sizeof(*req));
    if (!root || !messages || !stream_options)
        goto out;

    if (run->model && json_object_set_new(root, "model", json_string(run->model)) != 0)
        goto out;
    if (run->system && openai_add_message(messages, "system", run->system) != 0)
        goto out;
    if (openai_add_message(messages, "user", run->prompt ? run->prompt : "") != 0)
        goto out;
    if (json_object_set(root, "messages", messages) != 0)
        goto out;
    if (run->has_temperature && json_object_set_new(root, "temperature", json_real(run->temperature)) != 0)
        goto out;
    if (run->max_tokens > 0 && json_object_set_new(root, "max_tokens", json_integer(run->max_tokens)) != 0)
        goto out;
    if (json_object_set_new(root, "stream", json_true()) != 0)
        goto out;
    if (json_object_set_new(stream_options, "include_usage", json_true()) != 0 ||
        json_object_set(root, "stream_options", stream_options) != 0)
        goto out;

    /* 15 significant digits print 0.2 as 0.2 rather than 0.20000000000000001 */
    req->body = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (!req->body)
        goto out;
    req->body_len = strlen(req->body);

    req->url = provider_join_url(endpoint->base_url, PROVIDER_OPENAI_DEFAULT_BASE_URL, "/chat/completions");
    if (!req->url)
        goto out;
    if (provider_request_add_header(req, "Content-Type: application/json") != 0 ||
        provider_request_add_header(req, "Accept: text/event-stream, application/json") != 0)
        goto out;
    if (endpoint->api_key && endpoint->api_key[0]) {
        char *line = NULL;

        int azure = provider_url_is_azure(req->url);

        if (asprintf(&line, azure ? "api-key: %s" : "Authorization: Bearer %s", endpoint->api_key) < 0)
            goto out;
        rc = provider_request_add_header(req, line);
        explicit_bzero(line, strlen(line));
        free(line);
        if (rc != 0)
            goto out;
    }
    rc = 0;

out:
    json_decref(root);
    json_decref(messages);
    json_decref(stream_options);
    if (rc != 0)
        provider_request_free(req);
    return rc;
}

/* The choice with index 0 (or without an index), or NULL when there is none,
 * as in the usage chunk and in a first chunk of some servers. */
static const json_t *openai_first_choice(const json_t *root)
{
    const json_t *choices = json_object_get(root, "choices");
    size_t i;
    const json_t *choice;

    if (!json_is_array(choices))
        return NULL;
    json_array_foreach(choices, i, choice) {
        const json_t *index = json_object_get(choice, "index");

        if (json_is_object(choice) && (!index || (json_is_integer(index) && json_integer_value(index) == 0)))
            return choice;
    }
    return NULL;
}

static int openai_take_usage(provider_reply_t *reply, const json_t *root)
{
    const json_t *usage = json_object_get(root, "usage");
    const json_t *prompt_tokens;
    const json_t *completion_tokens;

    if (!json_is_object(usage))
        return 0; /* absent, or null in the chunks before the last */
    prompt_tokens = json_object_get(usage, "prompt_tokens");
    completion_tokens = json_object_get(usage, "completion_tokens");
    if (!json_is_integer(prompt_tokens) && !json_is_integer(completion_tokens))
        return 0;
    reply->has_usage = 1;
    reply->input_tokens = json_is_integer(prompt_tokens) ? json_integer_value(prompt_tokens) : 0;
    reply->output_tokens = json_is_integer(completion_tokens) ? json_integer_value(completion_tokens) : 0;
    return 0;
}

static int openai_take_finish_reason(provider_reply_t *reply, const json_t *choice)
{
    const json_t *finish_reason = json_object_get(choice, "finish_reason");

    if (!json_is_string(finish_reason))
        return 0; /* null until the last content chunk */
    free(reply->finish_reason);
    reply->finish_reason = strdup(json_string_value(finish_reason));
    if (!reply->finish_reason) {
        provider_reply_set_error(reply, NULL, "out of memory while reading the provider reply");
        return -1;
    }
    reply->complete = 1;
    return 0;
}

static int openai_parse_event(provider_reply_t *reply, const sse_event_t *event)
{
    const json_t *choice;
    const json_t *content;
    json_t *root;
    int rc = -1;

    if (event->data_len == 6 && memcmp(event->data, "[DONE]", 6) == 0) {
        reply->done = 1;
        return 0;
    }

    root = json_loadb(event->data, event->data_len, 0, NULL);
    if (!json_is_object(root)) {
        provider_reply_set_error(reply, NULL, "provider sent a stream chunk that is not a JSON object");
        goto out;
    }
    if (provider_reply_take_error(reply, root))
        goto out;

    choice = openai_first_choice(root);
    if (choice) {
        content = json_object_get(json_object_get(choice, "delta"), "content");
        if (json_is_string(content) &&
            provider_reply_append(reply, json_string_value(content), json_string_length(content)) != 0)
            goto out;
        if (openai_take_finish_reason(reply, choice) != 0)
            goto out;
    }
    rc = openai_take_usage(reply, root);

out:
    json_decref(root);
    return rc;
}

static int openai_parse_body(provider_reply_t *reply, const char *body, size_t len)
{
    const json_t *choice;
    const json_t *message;
    const json_t *content;
    json_t *root;
    int rc = -1;

    root = json_loadb(body, len, 0, NULL);
    if (!json_is_object(root)) {
        provider_reply_set_error(reply, NULL, "provider sent a reply that is not a JSON object");
        goto out;
    }
    if (provider_reply_take_error(reply, root))
        goto out;

    choice = openai_first_choice(root);
    message = json_object_get(choice, "message");
    if (!json_is_object(message)) {
        provider_reply_set_error(reply, NULL, "provider reply has no choices[0].message");
        goto out;
    }

    /* content is null when the model replied with a refusal or tool calls only */
    content = json_object_get(message, "content");
    if (provider_reply_append(reply, json_is_string(content) ? json_string_value(content) : "",
                              json_is_string(content) ? json_string_length(content) : 0) != 0)
        goto out;
    if (openai_take_finish_reason(reply, choice) != 0)
        goto out;
    if (openai_take_usage(reply, root) != 0)
        goto out;
    reply->complete = 1; /* a whole body is a whole reply, even without a finish reason */
    reply->done = 1;
    rc = 0;

out:
    json_decref(root);
    return rc;
}

const provider_t provider_openai = {
    .name = "openai",
    .build_request = openai_build_request,
    .parse_event = openai_parse_event,
    .parse_body = openai_parse_body,
};

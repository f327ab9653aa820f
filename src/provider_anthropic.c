/*
 * provider_anthropic.c - the Anthropic Messages API.
 *
 * Request: POST {base}/v1/messages with the x-api-key and anthropic-version
 * headers, and model, max_tokens (required by the API, so a default is sent
 * when the agent sets none), system when set, messages (the prompt as the one
 * "user" message), temperature when set and "stream": true.
 *
 * Stream: each event's data is a JSON object whose "type" names the event:
 *  - message_start carries usage.input_tokens;
 *  - content_block_delta with a text_delta carries text;
 *  - message_delta carries delta.stop_reason (the finish reason) and usage.output_tokens;
 *  - message_stop ends the stream, and only then is the reply complete: a
 *    stream cut between message_delta and message_stop may have lost the
 *    end of the text with it;
 *  - "error" carries error.type and error.message;
 *  - ping and unknown types are ignored.
 */
#include "provider.h"

#include <stdlib.h>
#include <string.h>

static int anthropic_build_request(const provider_endpoint_t *endpoint, const run_t *run, provider_request_t *req)
{
    json_t *root = json_object();
    json_t *messages = json_array();
    json_t *message = json_object();
    int64_t max_tokens = run->max_tokens > 0 ? run->max_tokens : PROVIDER_ANTHROPIC_DEFAULT_MAX_TOKENS;
    int rc = -1;

    memset(req, 0, sizeof(*req));
    if (!root || !messages || !message)
        goto out;

    if (run->model && json_object_set_new(root, "model", json_string(run->model)) != 0)
        goto out;
    if (json_object_set_new(root, "max_tokens", json_integer(max_tokens)) != 0)
        goto out;
    if (run->system && json_object_set_new(root, "system", json_string(run->system)) != 0)
        goto out;
    if (json_object_set_new(message, "role", json_string("user")) != 0 ||
        json_object_set_new(message, "content", json_string(run->prompt ? run->prompt : "")) != 0 ||
        json_array_append(messages, message) != 0 || json_object_set(root, "messages", messages) != 0)
        goto out;
    if (run->has_temperature && json_object_set_new(root, "temperature", json_real(run->temperature)) != 0)
        goto out;
    if (json_object_set_new(root, "stream", json_true()) != 0)
        goto out;

    req->body = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (!req->body)
        goto out;
    req->body_len = strlen(req->body);

    req->url = provider_join_url(endpoint->base_url, PROVIDER_ANTHROPIC_DEFAULT_BASE_URL, "/v1/messages");
    if (!req->url)
        goto out;
    if (provider_request_add_header(req, "Content-Type: application/json") != 0 ||
        provider_request_add_header(req, "Accept: text/event-stream, application/json") != 0 ||
        provider_request_add_header(req, "anthropic-version: " PROVIDER_ANTHROPIC_VERSION) != 0)
        goto out;
    if (endpoint->api_key && endpoint->api_key[0]) {
        char *line = NULL;
        int added;

        if (asprintf(&line, "x-api-key: %s", endpoint->api_key) < 0)
            goto out;
        added = provider_request_add_header(req, line);
        explicit_bzero(line, strlen(line));
        free(line);
        if (added != 0)
            goto out;
    }
    rc = 0;

out:
    json_decref(root);
    json_decref(messages);
    json_decref(message);
    if (rc != 0)
        provider_request_free(req);
    return rc;
}

/* Reads input_tokens and output_tokens where present; each may come alone. */
static void anthropic_take_usage(provider_reply_t *reply, const json_t *usage)
{
    const json_t *input_tokens = json_object_get(usage, "input_tokens");
    const json_t *output_tokens = json_object_get(usage, "output_tokens");

    if (json_is_integer(input_tokens)) {
        reply->input_tokens = json_integer_value(input_tokens);
        reply->has_usage = 1;
    }
    if (json_is_integer(output_tokens)) {
        reply->output_tokens = json_integer_value(output_tokens);
        reply->has_usage = 1;
    }
}

/* Records the stop reason; a whole body (is_body) is complete with it, a
 * stream only at message_stop. */
static int anthropic_take_stop_reason(provider_reply_t *reply, const json_t *stop_reason, int is_body)
{
    if (!json_is_string(stop_reason))
        return 0;
    free(reply->finish_reason);
    reply->finish_reason = strdup(json_string_value(stop_reason));
    if (!reply->finish_reason) {
        provider_reply_set_error(reply, NULL, "out of memory while reading the provider reply");
        return -1;
    }
    if (is_body)
        reply->complete = 1;
    return 0;
}

static int anthropic_parse_event(provider_reply_t *reply, const sse_event_t *event)
{
    const char *type;
    json_t *root;
    int rc = -1;

    root = json_loadb(event->data, event->data_len, 0, NULL);
    if (!json_is_object(root)) {
        provider_reply_set_error(reply, NULL, "provider sent a stream event that is not a JSON object");
        goto out;
    }
    if (provider_reply_take_error(reply, root))
        goto out;

    type = json_string_value(json_object_get(root, "type"));
    if (!type)
        type = "";
    if (strcmp(type, "message_start") == 0) {
        anthropic_take_usage(reply, json_object_get(json_object_get(root, "message"), "usage"));
    } else if (strcmp(type, "content_block_delta") == 0) {
        const json_t *delta = json_object_get(root, "delta");
        const json_t *text = json_object_get(delta, "text");

        if (json_is_string(text) &&
            provider_reply_append(reply, json_string_value(text), json_string_length(text)) != 0)
            goto out;
    } else if (strcmp(type, "message_delta") == 0) {
        anthropic_take_usage(reply, json_object_get(root, "usage"));
        if (anthropic_take_stop_reason(reply, json_object_get(json_object_get(root, "delta"), "stop_reason"), 0) !=
            0)
            goto out;
    } else if (strcmp(type, "message_stop") == 0) {
        reply->complete = 1;
        reply->done = 1;
    }
    rc = 0;

out:
    json_decref(root);
    return rc;
}

static int anthropic_parse_body(provider_reply_t *reply, const char *body, size_t len)
{
    const json_t *content;
    const json_t *block;
    json_t *root;
    size_t i;
    int rc = -1;

    root = json_loadb(body, len, 0, NULL);
    if (!json_is_object(root)) {
        provider_reply_set_error(reply, NULL, "provider sent a reply that is not a JSON object");
        goto out;
    }
    if (provider_reply_take_error(reply, root))
        goto out;

    content = json_object_get(root, "content");
    if (!json_is_array(content)) {
        provider_reply_set_error(reply, NULL, "provider reply has no content array");
        goto out;
    }
    if (provider_reply_append(reply, "", 0) != 0)
        goto out;
    json_array_foreach(content, i, block) {
        const json_t *text = json_object_get(block, "text");

        if (json_is_string(text) &&
            provider_reply_append(reply, json_string_value(text), json_string_length(text)) != 0)
            goto out;
    }
    anthropic_take_usage(reply, json_object_get(root, "usage"));
    if (anthropic_take_stop_reason(reply, json_object_get(root, "stop_reason"), 1) != 0)
        goto out;
    reply->complete = 1;
    reply->done = 1;
    rc = 0;

out:
    json_decref(root);
    return rc;
}

const provider_t provider_anthropic = {
    .name = "anthropic",
    .build_request = anthropic_build_request,
    .parse_event = anthropic_parse_event,
    .parse_body = anthropic_parse_body,
};

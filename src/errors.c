#include "errors.h"

#include <jansson.h>
#include <string.h>

static const api_error_info_t error_table[API_ERR_COUNT] = {
    [API_ERR_MISSING_API_KEY] = {"missing_api_key", 401, "Unauthorized"},
    [API_ERR_INVALID_API_KEY] = {"invalid_api_key", 401, "Unauthorized"},
    [API_ERR_AGENT_NOT_FOUND] = {"agent_not_found", 404, "Not Found"},
    [API_ERR_RUN_NOT_FOUND] = {"run_not_found", 404, "Not Found"},
    [API_ERR_UNKNOWN_PARAMETER] = {"unknown_parameter", 400, "Bad Request"},
    [API_ERR_INVALID_PARAMETER_VALUE] = {"invalid_parameter_value", 400, "Bad Request"},
    [API_ERR_MISSING_PARAMETER] = {"missing_parameter", 400, "Bad Request"},
    [API_ERR_INVALID_REQUEST] = {"invalid_request", 400, "Bad Request"},
    [API_ERR_NOT_FOUND] = {"not_found", 404, "Not Found"},
    [API_ERR_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405, "Method Not Allowed"},
    [API_ERR_PAYLOAD_TOO_LARGE] = {"payload_too_large", 413, "Payload Too Large"},
    [API_ERR_UNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 415, "Unsupported Media Type"},
    [API_ERR_RATE_LIMITED] = {"rate_limited", 429, "Too Many Requests"},
    [API_ERR_CONCURRENCY_LIMIT_EXCEEDED] = {"concurrency_limit_exceeded", 429, "Too Many Requests"},
    [API_ERR_RUN_NOT_CANCELLABLE] = {"run_not_cancellable", 409, "Conflict"},
    [API_ERR_IDEMPOTENCY_KEY_REUSED] = {"idempotency_key_reused", 409, "Conflict"},
    [API_ERR_FORBIDDEN] = {"forbidden", 403, "Forbidden"},
    [API_ERR_INTERNAL_ERROR] = {"internal_error", 500, "Internal Server Error"},
};

const api_error_info_t *api_error_info(api_error_t error)
{
    if ((unsigned)error >= API_ERR_COUNT)
        error = API_ERR_INTERNAL_ERROR;
    return &error_table[error];
}

char *api_error_body(api_error_t error, const char *message, const char *request_id, size_t *len)
{
    const api_error_info_t *info = api_error_info(error);
    json_t *body;
    char *text;

    body = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", info->code, "message", message, "request_id",
                     request_id);
    if (body == NULL) /* message was not valid UTF-8: say less rather than nothing */
        body = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", info->code, "message", info->reason,
                         "request_id", request_id);
    if (body == NULL)
        return NULL;
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text != NULL)
        *len = strlen(text);
    return text;
}

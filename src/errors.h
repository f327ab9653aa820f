/*
 * errors.h - the public API's error codes: one table maps each code to its
 * HTTP status, and one function builds the error envelope
 *
 *   {"error": {"code": "...", "message": "...", "request_id": "req_..."}}
 *
 * Every error reply of the server goes through api_error_body().
 */
#ifndef PUSHAI_ERRORS_H
#define PUSHAI_ERRORS_H

#include <stddef.h>

typedef enum {
    API_ERR_MISSING_API_KEY,
    API_ERR_INVALID_API_KEY,
    API_ERR_AGENT_NOT_FOUND,
    API_ERR_RUN_NOT_FOUND,
    API_ERR_UNKNOWN_PARAMETER,
    API_ERR_INVALID_PARAMETER_VALUE,
    API_ERR_MISSING_PARAMETER,
    API_ERR_INVALID_REQUEST,
    API_ERR_NOT_FOUND,
    API_ERR_METHOD_NOT_ALLOWED,
    API_ERR_PAYLOAD_TOO_LARGE,
    API_ERR_UNSUPPORTED_MEDIA_TYPE,
    API_ERR_RATE_LIMITED,
    API_ERR_CONCURRENCY_LIMIT_EXCEEDED,
    API_ERR_RUN_NOT_CANCELLABLE,
    API_ERR_IDEMPOTENCY_KEY_REUSED,
    API_ERR_FORBIDDEN,
    API_ERR_INTERNAL_ERROR,
    API_ERR_COUNT
} api_error_t;

typedef struct {
    const char *code;   /* the wire name, e.g. "agent_not_found" */
    int status;         /* HTTP status */
    const char *reason; /* HTTP reason phrase */
} api_error_info_t;

const api_error_info_t *api_error_info(api_error_t error);

/*
 * Returns the envelope as JSON text (malloc, NUL-terminated, *len set), or
 * NULL when out of memory. message and request_id are escaped as JSON needs.
 */
char *api_error_body(api_error_t error, const char *message, const char *request_id, size_t *len);

#endif

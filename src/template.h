/*
 * template.h - prompt templates with {{name}} placeholders.
 *
 * A placeholder is "{{", optional spaces or tabs, a parameter name, optional
 * spaces or tabs, and "}}". A parameter name matches [A-Za-z_][A-Za-z0-9_-]*
 * and is at most PARAM_NAME_MAX_LEN bytes long.
 *
 * Everything else is literal text and is copied as is: "{{}}", "{{ a b }}",
 * "{{x", "{ {x}}", a newline inside the braces, or a name that is too long.
 * Scanning goes left to right, and a "{" that does not start a placeholder is
 * copied on its own before scanning resumes at the next byte. So "{{{x}}}" is
 * a literal "{", the placeholder x and a literal "}", and a template can hold
 * JSON such as {"region": "{{region}}"}.
 *
 * A template is a NUL-terminated string. Only the ASCII characters above
 * have a meaning in it, so any UTF-8 text passes through unchanged.
 */
#ifndef PUSHAI_TEMPLATE_H
#define PUSHAI_TEMPLATE_H

#include <stddef.h>

/* Returns 1 when the len bytes at name form a valid parameter name, else 0. */
int template_name_valid(const char *name, size_t len);

/* Called with a placeholder's name (not NUL-terminated; name points into the template). */
typedef int (*template_placeholder_cb)(void *ctx, const char *name, size_t name_len);

/* Calls cb for each placeholder in order. Stops at and returns cb's first
 * non-zero result, else returns 0. */
int template_each_placeholder(const char *tmpl, template_placeholder_cb cb, void *ctx);

/* Sets *value and *value_len and returns 1 when name has a value, else returns 0
 * (the placeholder then compiles to nothing). */
typedef int (*template_value_fn)(void *ctx, const char *name, size_t name_len, const char **value,
                                 size_t *value_len);

/*
 * Replaces every placeholder of tmpl with its value from value_fn. Values are
 * inserted literally and never expanded again, so a value "{{x}}" stays
 * "{{x}}". Returns the compiled text (malloc'd and NUL-terminated; the caller
 * frees it) and sets *out_len to its length unless out_len is NULL. Returns
 * NULL when memory ran out.
 */
/* Returns the length template_compile() would produce, without building it,
 * so a caller can reject a result that would be too large. */
size_t template_compiled_length(const char *tmpl, template_value_fn value_fn, void *ctx);

char *template_compile(const char *tmpl, template_value_fn value_fn, void *ctx, size_t *out_len);

#endif

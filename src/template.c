#include "template.h"

#include "model.h"
#include "strbuf.h"

static int template_is_name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int template_is_name_char(char c)
{
    return template_is_name_start(c) || (c >= '0' && c <= '9') || c == '-';
}

static int template_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int template_name_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > PARAM_NAME_MAX_LEN)
        return 0;
    if (!template_is_name_start(name[0]))
        return 0;
    for (size_t i = 1; i < len; i++) {
        if (!template_is_name_char(name[i]))
            return 0;
    }
    return 1;
}

/*
 * Matches a placeholder starting at p, which must point at "{{". On a match,
 * sets the name and the total length of the placeholder and returns 1.
 * Returns 0 when the text at p is literal.
 */
static int template_match(const char *p, const char **name, size_t *name_len, size_t *match_len)
{
    const char *q = p + 2;
    const char *start;

    while (template_is_blank(*q))
        q++;
    start = q;
    if (!template_is_name_start(*q))
        return 0;
    while (template_is_name_char(*q) && (size_t)(q - start) <= PARAM_NAME_MAX_LEN)
        q++;
    if ((size_t)(q - start) > PARAM_NAME_MAX_LEN)
        return 0;
    *name = start;
    *name_len = (size_t)(q - start);
    while (template_is_blank(*q))
        q++;
    if (q[0] != '}' || q[1] != '}')
        return 0;
    *match_len = (size_t)(q + 2 - p);
    return 1;
}

int template_each_placeholder(const char *tmpl, template_placeholder_cb cb, void *ctx)
{
    const char *p = tmpl;

    while (*p != '\0') {
        const char *name;
        size_t name_len;
        size_t match_len;
        int rc;

        if (p[0] != '{' || p[1] != '{' || !template_match(p, &name, &name_len, &match_len)) {
            p++;
            continue;
        }
        rc = cb(ctx, name, name_len);
        if (rc != 0)
            return rc;
        p += match_len;
    }
    return 0;
}

/* Walks tmpl, replacing each placeholder with its value, and returns the
 * length of the result. Appends the result to out unless out is NULL. */
static size_t template_expand(const char *tmpl, template_value_fn value_fn, void *ctx, strbuf_t *out)
{
    const char *literal = tmpl;
    const char *p = tmpl;
    size_t total = 0;

    while (*p != '\0') {
        const char *name;
        size_t name_len;
        size_t match_len;
        const char *value = NULL;
        size_t value_len = 0;

        if (p[0] != '{' || p[1] != '{' || !template_match(p, &name, &name_len, &match_len)) {
            p++;
            continue;
        }

        /* the literal text before the placeholder, then the value */
        total += (size_t)(p - literal);
        if (out != NULL)
            strbuf_append(out, literal, (size_t)(p - literal));
        if (value_fn(ctx, name, name_len, &value, &value_len) && value_len > 0) {
            total += value_len;
            if (out != NULL)
                strbuf_append(out, value, value_len);
        }
        p += match_len;
        literal = p;
    }
    total += (size_t)(p - literal);
    if (out != NULL)
        strbuf_append(out, literal, (size_t)(p - literal));
    return total;
}

size_t template_compiled_length(const char *tmpl, template_value_fn value_fn, void *ctx)
{
    return template_expand(tmpl, value_fn, ctx, NULL);
}

char *template_compile(const char *tmpl, template_value_fn value_fn, void *ctx, size_t *out_len)
{
    strbuf_t out = STRBUF_INIT;

    template_expand(tmpl, value_fn, ctx, &out);
    return strbuf_detach(&out, out_len);
}

/*
 * provider_echo.c - the offline provider: the output is exactly the run's
 * compiled prompt, and no usage is reported. It lets a fresh checkout run end
 * to end with no network and serves as the engine's test double.
 */
#include "provider.h"

#include <string.h>

static int echo_run_local(const run_t *run, provider_reply_t *reply)
{
    const char *prompt = run->prompt ? run->prompt : "";

    /* an empty prompt still allocates reply->text, so the output is "" and not NULL */
    if (provider_reply_append(reply, prompt, strlen(prompt)) != 0)
        return -1;
    reply->complete = 1;
    reply->done = 1;
    return 0;
}

const provider_t provider_echo = {
    .name = "echo",
    .run_local = echo_run_local,
};

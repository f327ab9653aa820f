/*
 * cli_admin.h - `pushaid admin ...`: organizations, API keys and agents.
 *
 * Output meant for scripts goes to stdout, one item per line; messages go to
 * stderr. The exit status is 0 on success and 1 with a message otherwise
 * (2 for a usage error).
 */
#ifndef PUSHAI_CLI_ADMIN_H
#define PUSHAI_CLI_ADMIN_H

/* argv[0] is the word after "admin". */
int cli_admin_main(const char *db_uri, int argc, char **argv);
void cli_admin_print_usage(void);

#endif

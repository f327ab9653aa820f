#include "uuid.h"

#include <stdint.h>

#include <sodium.h>

static const char uuid_hex_digits[] = "0123456789abcdef";

static int uuid_is_dash_position(size_t i)
{
    return i == 8 || i == 13 || i == 18 || i == 23;
}

void uuid_v4(char out[RUN_ID_LEN + 1])
{
    uint8_t bytes[16];
    size_t o = 0;

    randombytes_buf(bytes, sizeof(bytes));
    bytes[6] = (uint8_t)((bytes[6] & 0x0f) | 0x40); /* version 4 */
    bytes[8] = (uint8_t)((bytes[8] & 0x3f) | 0x80); /* variant 1 (RFC 4122) */

    for (size_t i = 0; i < sizeof(bytes); i++) {
        if (uuid_is_dash_position(o))
            out[o++] = '-';
        out[o++] = uuid_hex_digits[bytes[i] >> 4];
        out[o++] = uuid_hex_digits[bytes[i] & 0x0f];
    }
    out[o] = '\0';
}

int uuid_normalize(const char *text, size_t len, char out[RUN_ID_LEN + 1])
{
    out[0] = '\0';
    if (text == NULL || len != RUN_ID_LEN)
        return -1;

    for (size_t i = 0; i < RUN_ID_LEN; i++) {
        char c = text[i];

        if (uuid_is_dash_position(i)) {
            if (c != '-')
                goto invalid;
            out[i] = c;
        } else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
            out[i] = c;
        } else if (c >= 'A' && c <= 'F') {
            out[i] = (char)(c - 'A' + 'a');
        } else {
            goto invalid;
        }
    }
    out[RUN_ID_LEN] = '\0';
    return 0;

invalid:
    out[0] = '\0';
    return -1;
}

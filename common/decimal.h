/* Unsigned integers in decimal without printf's format parsing (a few
 * dozen instructions instead of about a thousand), for the per-connection
 * and per-command paths. */
#ifndef RMQ_COMMON_DECIMAL_H
#define RMQ_COMMON_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

#define DECIMAL_U64_MAX 21 /* 20 digits and the NUL */

/* Writes v's digits and a NUL at out (DECIMAL_U64_MAX bytes); returns the
 * number of digits. */
static inline size_t
decimal_u64(char *out, uint64_t v)
{
    char tmp[DECIMAL_U64_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

#endif

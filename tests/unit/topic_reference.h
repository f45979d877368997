/* Test helpers shared by the topic tree and retained store tests: a small
 * deterministic random generator and a reference topic matcher written
 * straight from the MQTT 3.1.1 specification (section 4.7), slow and
 * obviously right, against which the real tries are cross-checked. */
#ifndef RMQ_TESTS_UNIT_TOPIC_REFERENCE_H
#define RMQ_TESTS_UNIT_TOPIC_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t
rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static inline size_t
rng_below(uint64_t *state, size_t n)
{
    return (size_t)(rng_next(state) % n);
}

/* Splits s into at most max levels (views into s); returns the count. */
static inline size_t
split_levels(const char *s, const char **start, size_t *len, size_t max)
{
    size_t n = 0;
    for (const char *p = s;; p++) {
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        if (n == max)
            return n + 1;
        start[n] = p;
        len[n++] = l;
        if (!slash)
            return n;
        p = slash;
    }
}

/* Reference matcher, straight from MQTT 3.1.1 section 4.7. */
static inline bool
ref_match(const char *filter, const char *name)
{
    const char *fs[64], *ns[64];
    size_t fl[64], nl[64];
    if ((filter[0] == '+' || filter[0] == '#') && name[0] == '$')
        return false;
    size_t nf = split_levels(filter, fs, fl, 64), nn = split_levels(name, ns, nl, 64);
    for (size_t i = 0; i < nf; i++) {
        if (fl[i] == 1 && fs[i][0] == '#')
            return true;
        if (i >= nn)
            return false;
        if (fl[i] == 1 && fs[i][0] == '+')
            continue;
        if (fl[i] != nl[i] || memcmp(fs[i], ns[i], fl[i]) != 0)
            return false;
    }
    return nf == nn;
}

#endif

/* Time sources. Pure cores never call these: they take `now` as an argument;
 * only the I/O glue reads the clock. */
#ifndef RMQ_COMMON_CLOCK_H
#define RMQ_COMMON_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* Milliseconds from CLOCK_MONOTONIC: for timers and intervals. */
static inline uint64_t
clock_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Milliseconds since the Unix epoch: for timestamps shown to users. */
static inline uint64_t
clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Formats wall ms as "2024-05-01T12:00:00.123Z" (UTC) into out (at least
 * 32 bytes). False if the time cannot be represented. */
static inline bool
clock_iso8601(uint64_t ms, char *out, size_t len)
{
    time_t secs = (time_t)(ms / 1000u);
    struct tm tm;
    if (len < 32 || !gmtime_r(&secs, &tm))
        return false;
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03uZ", (unsigned)(ms % 1000u));
    return n > 0;
}

#endif

/* Time sources. Pure cores never call these: they take `now` as an argument;
 * only the I/O glue reads the clock. */
#ifndef RMQ_COMMON_CLOCK_H
#define RMQ_COMMON_CLOCK_H

#include <stdint.h>
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

#endif

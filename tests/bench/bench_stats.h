/* Measurement containers for the load generator: a per-publisher sequence
 * tracker (loss, duplicates, reordering) and a log-bucketed latency histogram.
 * Both are plain structs owned by the caller; nothing here does I/O or reads
 * a clock. Single-threaded: one event loop owns each instance. */
#ifndef RMQ_TESTS_BENCH_STATS_H
#define RMQ_TESTS_BENCH_STATS_H

#include <stdint.h>

#include "common/status.h"

/* Which sequence numbers of one publisher one subscriber has seen. A bitmap
 * that grows by doubling, so recording costs no allocation in steady state. */
struct seq_tracker {
    uint64_t *bits;
    uint64_t nbits;    /* capacity of bits, in sequence numbers */
    uint64_t distinct; /* sequence numbers seen at least once */
    uint64_t dup;      /* arrivals of a sequence number already seen */
    uint64_t ooo;      /* first arrivals below the highest number seen so far */
    uint64_t next;     /* highest sequence number seen + 1 */
};

/* Zeroes the tracker; no allocation until the first record. */
void seq_tracker_init(struct seq_tracker *t);

/* Records one arrival of seq. RMQ_NOMEM if the bitmap could not grow (the
 * arrival is then not counted). */
enum rmq_status seq_tracker_record(struct seq_tracker *t, uint64_t seq);

/* Releases the bitmap; the tracker may be initialised again. NULL-safe. */
void seq_tracker_free(struct seq_tracker *t);

/* Latency histogram in nanoseconds with 64 sub-buckets per power of two
 * (about 1.6 % resolution), fixed size, no allocation. */
#define LATENCY_HIST_BUCKETS (64 * 58 + 64)

struct latency_hist {
    uint64_t counts[LATENCY_HIST_BUCKETS];
    uint64_t total;
    uint64_t max_ns;
};

/* Zeroes the histogram. */
void latency_hist_init(struct latency_hist *h);

/* Adds one sample. */
void latency_hist_record(struct latency_hist *h, uint64_t ns);

/* Adds every sample of src to dst. */
void latency_hist_merge(struct latency_hist *dst, const struct latency_hist *src);

/* The value at quantile q (0..1) in nanoseconds: the upper bound of the
 * bucket holding it, never above the maximum. 0 when empty. */
uint64_t latency_hist_quantile(const struct latency_hist *h, double q);

#endif

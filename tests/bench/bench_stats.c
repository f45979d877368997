/* Sequence tracking and latency histograms for relaymq-bench.
 *
 * The tracker's bitmap only grows (doubling), so a run of N messages costs
 * O(log N) reallocations in total. The histogram is HDR-style: values below
 * 128 ns are exact, above that each power of two is split into 64 linear
 * sub-buckets. Pure code: callers pass in the sequence numbers and the
 * latencies they measured. */
#include "tests/bench/bench_stats.h"

#include <stdlib.h>
#include <string.h>

void
seq_tracker_init(struct seq_tracker *t)
{
    memset(t, 0, sizeof(*t));
}

/* Makes room for sequence number seq in the bitmap. */
static enum rmq_status
seq_tracker_grow(struct seq_tracker *t, uint64_t seq)
{
    uint64_t nbits = t->nbits ? t->nbits : 4096;
    while (nbits <= seq)
        nbits *= 2;
    uint64_t *bits = realloc(t->bits, nbits / 8);
    if (bits == NULL)
        return RMQ_NOMEM;
    memset((uint8_t *)bits + t->nbits / 8, 0, (nbits - t->nbits) / 8);
    t->bits = bits;
    t->nbits = nbits;
    return RMQ_OK;
}

enum rmq_status
seq_tracker_record(struct seq_tracker *t, uint64_t seq)
{
    if (seq >= t->nbits && seq_tracker_grow(t, seq) != RMQ_OK)
        return RMQ_NOMEM;
    uint64_t *word = &t->bits[seq / 64];
    uint64_t bit = (uint64_t)1 << (seq % 64);
    if (*word & bit) {
        t->dup++;
        return RMQ_OK;
    }
    *word |= bit;
    t->distinct++;
    if (seq + 1 < t->next)
        t->ooo++;
    else
        t->next = seq + 1;
    return RMQ_OK;
}

void
seq_tracker_free(struct seq_tracker *t)
{
    if (t == NULL)
        return;
    free(t->bits);
    memset(t, 0, sizeof(*t));
}

void
latency_hist_init(struct latency_hist *h)
{
    memset(h, 0, sizeof(*h));
}

/* Bucket index of ns: exact below 128, else 64 sub-buckets per octave. */
static unsigned
bucket_of(uint64_t ns)
{
    if (ns < 128)
        return (unsigned)ns;
    unsigned shift = 63u - (unsigned)__builtin_clzll(ns) - 6u;
    return 64u * shift + (unsigned)(ns >> shift);
}

/* Largest value that falls into bucket i. */
static uint64_t
bucket_upper(unsigned i)
{
    if (i < 128)
        return i;
    unsigned shift = i / 64u - 1u;
    uint64_t sub = i - 64u * shift;
    return ((sub + 1) << shift) - 1;
}

void
latency_hist_record(struct latency_hist *h, uint64_t ns)
{
    h->counts[bucket_of(ns)]++;
    h->total++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void
latency_hist_merge(struct latency_hist *dst, const struct latency_hist *src)
{
    for (unsigned i = 0; i < LATENCY_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

uint64_t
latency_hist_quantile(const struct latency_hist *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LATENCY_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = bucket_upper(i);
            return v < h->max_ns ? v : h->max_ns;
        }
    }
    return h->max_ns;
}

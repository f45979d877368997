/* The Prometheus text exposition of a node: the broker's counters (the
 * BROKER_COUNTERS table, each as relaymq_<name>_total), its gauges, and
 * whatever extra sources add (HTTP request counts, the internal API's
 * refused signatures, later Redis and forwarding figures).
 *
 * metrics_render is pure: it formats what it is given. The admin API calls
 * it on the broker loop, so sources run on the loop thread too. */
#ifndef RMQ_HTTP_METRICS_H
#define RMQ_HTTP_METRICS_H

#include <stddef.h>
#include <stdio.h>

#include "broker/broker_api.h"
#include "broker/metrics.h"

/* Writes complete metric families (HELP, TYPE, samples) to out. */
typedef void (*metrics_source_fn)(FILE *out, void *arg);

struct metrics_source {
    metrics_source_fn fn;
    void *arg;
};

/* Formats everything into a malloc'd, NUL-terminated text (*len bytes
 * without the NUL). NULL on allocation failure. */
char *metrics_render(const struct broker_metrics *counters, const struct broker_gauges *gauges,
                     const struct metrics_source *sources, size_t source_count, size_t *len);

/* Writes the HELP and TYPE lines of a family (for sources). */
void metrics_family(FILE *out, const char *name, const char *type, const char *help);

#endif

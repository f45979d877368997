/* Prometheus text format 0.0.4: "# HELP", "# TYPE", then samples, one
 * family at a time. Counters are named relaymq_<counter>_total after the
 * broker's X-macro table so the list is never kept twice. Pure: any thread,
 * no state. */
#include "http/metrics.h"

#include <stdlib.h>

void
metrics_family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
gauge(FILE *out, const char *name, const char *help, unsigned long long value)
{
    metrics_family(out, name, "gauge", help);
    fprintf(out, "%s %llu\n", name, value);
}

char *
metrics_render(const struct broker_metrics *counters, const struct broker_gauges *gauges,
               const struct metrics_source *sources, size_t source_count, size_t *len)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out)
        return NULL;
#define METRICS_COUNTER(field, help)                                                               \
    metrics_family(out, "relaymq_" #field "_total", "counter", help);                              \
    fprintf(out, "relaymq_" #field "_total %llu\n", (unsigned long long)counters->field);
    BROKER_COUNTERS(METRICS_COUNTER)
#undef METRICS_COUNTER
    gauge(out, "relaymq_connections", "open TCP connections, before and after CONNECT",
          gauges->connections);
    gauge(out, "relaymq_connected_clients", "clients with an accepted CONNECT",
          gauges->connected_clients);
    gauge(out, "relaymq_sessions", "sessions held, online or offline", gauges->sessions);
    gauge(out, "relaymq_subscriptions", "subscriptions (filter, session) held",
          gauges->subscriptions);
    gauge(out, "relaymq_retained_messages", "retained messages stored", gauges->retained_messages);
    gauge(out, "relaymq_uptime_seconds", "seconds since the broker started",
          gauges->uptime_seconds);
    for (size_t i = 0; i < source_count; i++)
        sources[i].fn(out, sources[i].arg);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    *len = size;
    return text;
}

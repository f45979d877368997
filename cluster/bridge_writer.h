/* The stream bridge at work: a broker observer that turns every client
 * PUBLISH matching a bridge rule (cluster/bridge.h) into one pipelined
 * command (XADD, or EVALSHA of the dedup script) on its own Redis
 * connection, so bridge traffic never delays the registry's claims.
 * De-duplication is cluster-wide: the key lives in Redis and one script
 * checks it and appends atomically.
 *
 * Nothing here blocks the broker loop. Entries wait in a bounded buffer
 * (messages and bytes, counting those sent and not yet answered) while
 * Redis is slow or unreachable, and are sent when it returns; a message
 * that finds the buffer full is dropped, counted and logged. Entries lost
 * with the connection are sent again (at least once; with a dedup key,
 * exactly once in the stream).
 *
 * Loop thread only. */
#ifndef RMQ_CLUSTER_BRIDGE_WRITER_H
#define RMQ_CLUSTER_BRIDGE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

struct event_base;
struct broker;
struct bridge_writer;

struct bridge_writer_config {
    const char *redis_url;
    const char *prefix; /* Redis key prefix */
    const char *node_id;
    const char *dead_letter;  /* NULL or "": {prefix}bridge:dead-letter */
    const char *const *rules; /* rule texts (cluster/bridge.h) */
    size_t rule_count;
    bool device_by_username;  /* device id = username when there is one */
    uint64_t buffer_messages; /* most entries held: waiting plus awaiting Redis's answer */
    uint64_t buffer_bytes;    /* most bytes held, likewise */
};

/* Checks rule texts without building anything: RMQ_OK, or RMQ_INVALID
 * with one line in err naming the rule and the problem. */
enum rmq_status bridge_writer_check(const struct bridge_writer_config *cfg, char *err,
                                    size_t errlen);

/* Parses the rules, connects to Redis and adds itself as an observer of
 * broker. Borrows base and broker; copies cfg. The writer must outlive the
 * broker (free it after broker_free). NULL on failure (logged). */
struct bridge_writer *bridge_writer_new(struct event_base *base, struct broker *broker,
                                        const struct bridge_writer_config *cfg);

/* At shutdown, once nothing feeds the broker any more: runs the event loop
 * until Redis has answered every entry the writer holds, the link is lost,
 * timeout_ms passes or a signal stops the loop. Logs how it went; a no-op
 * when nothing is held or Redis is down. NULL-safe. */
void bridge_writer_drain(struct bridge_writer *w, uint64_t timeout_ms);

/* Counts what it still holds as dropped (reason shutdown) and logs it,
 * disconnects, frees. NULL-safe. */
void bridge_writer_free(struct bridge_writer *w);

/* A /metrics source (metrics_source_fn in http/metrics.h): the
 * relaymq_bridge_* families. */
void bridge_writer_write_metrics(FILE *out, void *arg);

#endif

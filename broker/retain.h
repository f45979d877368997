/* The retained-message store: at most one message per topic name, found by
 * topic filter when a client subscribes. Stored as a tree of topic levels so
 * a filter visits only the branches it can match; the '$' rule applies
 * (a leading wildcard does not match names starting with '$').
 *
 * Holds one reference to each stored message. Single-threaded. */
#ifndef RMQ_BROKER_RETAIN_H
#define RMQ_BROKER_RETAIN_H

#include <stddef.h>

#include "broker/message.h"
#include "common/status.h"

struct retain_store;

/* Deepest topic name the store keeps, in levels; bounds the stack that
 * retain_match uses. */
#define RETAIN_MAX_LEVELS 256

/* NULL on allocation failure. */
struct retain_store *retain_new(void);

/* Drops every stored message and frees the store. NULL-safe. */
void retain_free(struct retain_store *store);

/* Stores msg under msg->topic (taking a new reference), replacing and
 * releasing any previous one. A message with an empty payload removes the
 * topic's retained message instead and is not stored. RMQ_INVALID for an
 * empty topic, RMQ_LIMIT above RETAIN_MAX_LEVELS levels (nothing stored),
 * RMQ_NOMEM leaves the store as it was. */
enum rmq_status retain_set(struct retain_store *store, struct message *msg);

typedef void (*retain_match_cb)(struct message *msg, void *arg);

/* Calls cb for each stored message whose topic matches the (valid) filter.
 * The message is borrowed: cb takes its own reference to keep it. The store
 * must not be modified from inside cb. */
void retain_match(const struct retain_store *store, const char *filter, size_t len,
                  retain_match_cb cb, void *arg);

/* Number of retained messages, and the bytes they hold. */
size_t retain_count(const struct retain_store *store);
size_t retain_bytes(const struct retain_store *store);

/* Number of tree nodes below the root (0 when empty), for metrics and tests. */
size_t retain_node_count(const struct retain_store *store);

#endif

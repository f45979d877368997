/* The subscription tree: topic filters split into levels, each node holding
 * the subscribers of the filter that ends there. Matching a topic name walks
 * the levels, following the literal child, the '+' child and the '#' child,
 * and honours the '$' rule (a name starting with '$' is not matched by a
 * leading wildcard).
 *
 * Subscribers are opaque pointers (a session, or later a remote node); the
 * tree never dereferences or frees them. One subscriber holds at most one
 * subscription per filter. Single-threaded: a tree belongs to one loop. */
#ifndef RMQ_BROKER_TOPIC_TREE_H
#define RMQ_BROKER_TOPIC_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct topic_tree;

/* Deepest filter the tree accepts, in levels. Bounds the stack that matching
 * uses (mosquitto refuses more than 200 '/', CVE-2019-11779). */
#define TOPIC_TREE_MAX_LEVELS 256

/* NULL on allocation failure. */
struct topic_tree *topic_tree_new(void);

/* Frees the tree (not the subscribers). NULL-safe. */
void topic_tree_free(struct topic_tree *tree);

/* Adds subscriber to filter at qos, or updates its qos if already there
 * (*replaced = true). The filter must be valid (topic_filter_valid) and the
 * subscriber not NULL, else RMQ_INVALID; RMQ_LIMIT above TOPIC_TREE_MAX_LEVELS
 * levels; RMQ_NOMEM leaves the tree as it was. replaced may be NULL. */
enum rmq_status topic_tree_subscribe(struct topic_tree *tree, const char *filter, size_t len,
                                     void *subscriber, uint8_t qos, bool *replaced);

/* Removes subscriber from filter; RMQ_NOT_FOUND if it was not subscribed.
 * Empty nodes are pruned. */
enum rmq_status topic_tree_unsubscribe(struct topic_tree *tree, const char *filter, size_t len,
                                       void *subscriber);

typedef void (*topic_tree_match_cb)(void *subscriber, uint8_t qos, void *arg);

/* Calls cb once per matching (filter, subscriber) pair. A subscriber whose
 * several filters match is called once per filter; the caller merges. The
 * tree must not be modified from inside cb. Recent topics' results are
 * cached until the tree next changes; the calls are the same either way. */
void topic_tree_match(const struct topic_tree *tree, const char *topic, size_t len,
                      topic_tree_match_cb cb, void *arg);

/* Matches answered by replaying the cache of recent topics (no walk), for
 * tests. */
uint64_t topic_tree_cache_hits(const struct topic_tree *tree);

/* Number of (filter, subscriber) subscriptions held. */
size_t topic_tree_count(const struct topic_tree *tree);

/* Number of nodes below the root (0 when empty), for memory metrics and tests. */
size_t topic_tree_node_count(const struct topic_tree *tree);

#endif

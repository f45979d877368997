/* The retained-message store; see retain.h.
 *
 * A tree of topic-name levels below an unnamed root, children in a
 * level_map (dense array, hash table when wide). A node holds at most one
 * message: the one retained for the name that ends there.
 *
 * Invariants: every node but the root holds a message or has a child (empty
 * nodes are pruned at once); count and bytes sum the stored messages
 * (message_size()); no node is deeper than RETAIN_MAX_LEVELS, which bounds
 * the fixed stack retain_match walks with instead of recursion.
 *
 * The store owns its nodes and one reference to each stored message.
 * Single-threaded: the loop that owns the store calls every function. */
#include "broker/retain.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "broker/level_map.h"

struct retain_node {
    struct level_node link; /* first, so a level_node * is its retain_node * */
    struct message *msg;    /* owned reference, or NULL */
};

struct retain_store {
    struct retain_node root;
    uint64_t seed;
    size_t count;
    size_t bytes;
    size_t nodes;
};

/* ---- nodes ---- */

static struct retain_node *
node_new(struct retain_store *store, struct retain_node *parent, const char *level, size_t len,
         uint32_t hash)
{
    struct retain_node *node = calloc(1, sizeof(*node) + len);
    if (!node)
        return NULL;
    char *bytes = (char *)(node + 1);
    memcpy(bytes, level, len);
    node->link.parent = &parent->link;
    node->link.level = bytes;
    node->link.len = (uint16_t)len;
    node->link.hash = hash;
    store->nodes++;
    return node;
}

/* Releases what node owns, children and messages included, not node itself. */
static void
node_clear(struct retain_node *node)
{
    uint32_t pos = 0;
    struct level_node *child;
    while ((child = level_map_next(&node->link.children, &pos))) {
        node_clear((struct retain_node *)child);
        free(child);
    }
    level_map_release(&node->link.children);
    message_unref(node->msg);
    node->msg = NULL;
}

/* Frees node and each ancestor that becomes empty, stopping at the root. */
static void
prune(struct retain_store *store, struct retain_node *node)
{
    while (node != &store->root && !node->msg && !node->link.children.count) {
        struct retain_node *parent = (struct retain_node *)node->link.parent;
        level_map_remove(&parent->link.children, &node->link);
        level_map_release(&node->link.children);
        free(node);
        store->nodes--;
        node = parent;
    }
}

/* node's child for one level, made if create; NULL if absent or out of memory. */
static struct retain_node *
node_child(struct retain_store *store, struct retain_node *node, const char *level, size_t len,
           bool create)
{
    uint32_t hash = level_hash(store->seed, level, len);
    struct level_node *found = level_map_find(&node->link.children, hash, level, len);
    if (found || !create)
        return (struct retain_node *)found;
    struct retain_node *child = node_new(store, node, level, len, hash);
    if (child && level_map_add(&node->link.children, &child->link) != RMQ_OK) {
        free(child);
        store->nodes--;
        child = NULL;
    }
    return child;
}

/* The node for topic, made with its ancestors if create; NULL if absent, or
 * out of memory (nodes made on the way are pruned again). */
static struct retain_node *
node_walk(struct retain_store *store, const char *topic, size_t len, bool create)
{
    struct retain_node *node = &store->root;
    size_t pos = 0;
    for (;;) {
        const char *slash = memchr(topic + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - topic) : len;
        struct retain_node *child = node_child(store, node, topic + pos, end - pos, create);
        if (!child) {
            if (create)
                prune(store, node);
            return NULL;
        }
        if (end == len)
            return child;
        node = child;
        pos = end + 1;
    }
}

static size_t
count_levels(const char *topic, size_t len)
{
    size_t levels = 1;
    for (const char *p = topic, *end = topic + len; (p = memchr(p, '/', (size_t)(end - p))); p++)
        levels++;
    return levels;
}

/* ---- API ---- */

struct retain_store *
retain_new(void)
{
    struct retain_store *store = calloc(1, sizeof(*store));
    if (!store)
        return NULL;
    store->root.link.level = "";
    store->seed = level_seed(store);
    return store;
}

void
retain_free(struct retain_store *store)
{
    if (!store)
        return;
    node_clear(&store->root);
    free(store);
}

static void
retain_clear(struct retain_store *store, const char *topic, size_t len)
{
    struct retain_node *node = node_walk(store, topic, len, false);
    if (!node || !node->msg)
        return;
    store->count--;
    store->bytes -= message_size(node->msg);
    message_unref(node->msg);
    node->msg = NULL;
    prune(store, node);
}

enum rmq_status
retain_set(struct retain_store *store, struct message *msg)
{
    if (!store || !msg || msg->topic_len == 0)
        return RMQ_INVALID;
    if (msg->payload_len == 0) {
        retain_clear(store, msg->topic, msg->topic_len);
        return RMQ_OK;
    }
    if (count_levels(msg->topic, msg->topic_len) > RETAIN_MAX_LEVELS)
        return RMQ_LIMIT;
    struct retain_node *node = node_walk(store, msg->topic, msg->topic_len, true);
    if (!node)
        return RMQ_NOMEM;
    /* Reference first: msg may be the very message already stored. */
    message_ref(msg);
    if (node->msg) {
        store->bytes -= message_size(node->msg);
        message_unref(node->msg);
    } else {
        store->count++;
    }
    node->msg = msg;
    store->bytes += message_size(msg);
    return RMQ_OK;
}

/* ---- matching ---- */

/* A node on the walk. depth is the node's depth, the filter level it meets
 * next; subtree is set below a '#', where every descendant matches; slot is
 * the iteration position over the node's children for '+' and '#'. */
struct walk_frame {
    const struct retain_node *node;
    uint32_t slot;
    uint16_t depth;
    bool subtree;
};

struct walk {
    const struct retain_store *store;
    struct level_split filter;
    retain_match_cb cb;
    void *arg;
};

static inline void
emit(const struct walk *w, const struct retain_node *node)
{
    if (node->msg)
        w->cb(node->msg, w->arg);
}

/* The next child of a frame's node for a wildcard level; a leading wildcard
 * skips the root's children starting with '$'. */
static const struct retain_node *
next_child(const struct walk *w, struct walk_frame *f)
{
    struct level_node *child;
    while ((child = level_map_next(&f->node->link.children, &f->slot))) {
        if (f->node != &w->store->root || child->len == 0 || child->level[0] != '$')
            return (const struct retain_node *)child;
    }
    return NULL;
}

/* One step on the top frame: pops it, pushes a child, or both. Returns the
 * new stack size. A frame stays under its children only while iterating
 * them ('+', '#'), so the stack holds at most one frame per depth. */
static size_t
walk_step(struct walk *w, struct walk_frame *stack, size_t sp)
{
    struct walk_frame *f = &stack[sp - 1];
    const struct retain_node *child;
    if (!f->subtree) {
        struct level_span *level = level_split_at(&w->filter, f->depth);
        if (!level) {
            emit(w, f->node);
            return sp - 1;
        }
        if (level_span_is(&w->filter, level, '#')) {
            f->subtree = true; /* '#' matches the parent level too */
            emit(w, f->node);
            return sp;
        }
        if (!level_span_is(&w->filter, level, '+')) {
            child = (const struct retain_node *)level_map_find(
                &f->node->link.children, level_split_hash(&w->filter, level),
                w->filter.s + level->start, level->len);
            stack[sp - 1] = (struct walk_frame){child, 0, (uint16_t)(f->depth + 1), false};
            return child ? sp : sp - 1;
        }
    }
    child = next_child(w, f);
    if (!child)
        return sp - 1;
    if (f->subtree)
        emit(w, child);
    /* No node is deeper than RETAIN_MAX_LEVELS; the test keeps the arrays in bounds. */
    if (f->depth < RETAIN_MAX_LEVELS)
        stack[sp++] = (struct walk_frame){child, 0, (uint16_t)(f->depth + 1), f->subtree};
    return sp;
}

void
retain_match(const struct retain_store *store, const char *filter, size_t len, retain_match_cb cb,
             void *arg)
{
    enum { STACK_CAP = RETAIN_MAX_LEVELS + 2, LEVELS_CAP = RETAIN_MAX_LEVELS + 1 };
    struct walk_frame stack[STACK_CAP];
    struct level_span spans[LEVELS_CAP];
    if (!store || !filter || !cb || len == 0 || len > UINT16_MAX)
        return;
    struct walk w = {.store = store, .cb = cb, .arg = arg};
    level_split_init(&w.filter, filter, len, store->seed, spans, LEVELS_CAP);
    size_t sp = 0;
    stack[sp++] = (struct walk_frame){&store->root, 0, 0, false};
    while (sp)
        sp = walk_step(&w, stack, sp);
}

size_t
retain_count(const struct retain_store *store)
{
    return store ? store->count : 0;
}

size_t
retain_bytes(const struct retain_store *store)
{
    return store ? store->bytes : 0;
}

size_t
retain_node_count(const struct retain_store *store)
{
    return store ? store->nodes : 0;
}

/* The subscription tree; see topic_tree.h.
 *
 * One node per filter level below an unnamed root. A node keeps its literal
 * children in a level_map (dense array, hash table when wide), its '+' and
 * '#' children in two pointers of their own, and the subscribers of the
 * filter ending there in a subscriber set: one subscriber inline in the node
 * (the common case, no extra cache miss), a dense array of up to SUBS_SMALL
 * entries, beyond that an open-addressed table keyed by subscriber pointer,
 * because one filter ("alerts/#") may be held by every client.
 *
 * Invariants: every node but the root has a subscriber or a child (empty
 * nodes are pruned at once); tree->count is the number of (filter,
 * subscriber) pairs and tree->nodes the number of nodes below the root; no
 * node is deeper than TOPIC_TREE_MAX_LEVELS, which bounds the fixed stack
 * that topic_tree_match uses instead of recursion and allocation.
 *
 * Matching goes through a small cache of recent topics and their results
 * (see "match cache" below), so a topic published again and again (up to
 * 96 bytes, up to 8 matches) costs one hash and one comparison instead of
 * a walk.
 *
 * The tree owns its nodes; subscribers are borrowed and never dereferenced.
 * Single-threaded: the loop that owns the tree calls every function. */
#include "broker/topic_tree.h"

#include <stdlib.h>
#include <string.h>

#include "broker/level_map.h"

#define SUBS_SMALL 16u
#define TOPIC_MAX_LEN 65535u

struct sub {
    void *subscriber; /* NULL marks a free table slot */
    uint8_t qos;
};

struct tree_node {
    struct level_node link; /* first, so a level_node * is its tree_node * */
    struct tree_node *plus;
    struct tree_node *pound;
    struct sub *subs; /* &one, or an array of sub_cap entries */
    uint32_t nsubs;
    uint32_t sub_cap; /* 0; 1 (inline); dense up to SUBS_SMALL; else a power-of-two table */
    struct sub one;
};

struct topic_tree {
    struct tree_node root;
    uint64_t seed;
    size_t count;
    size_t nodes;
    uint64_t gen;              /* bumped by every change; cache entries of older ones are stale */
    struct match_cache *cache; /* NULL until the first subscription, or if it could not be had */
};

/* The match cache's layout; how it is used is told with topic_tree_match. */
#define CACHE_SLOTS 256u /* power of two: 46 KiB per tree that has subscriptions */
#define CACHE_TOPIC_MAX 96u
#define CACHE_RESULTS 8u
#define CACHE_MANY UINT16_MAX /* count: more matches than an entry holds */

struct cache_entry {
    uint64_t gen; /* the tree's generation when filled; 0: empty */
    uint32_t hash;
    uint16_t topic_len;
    uint16_t count; /* subscribers[0..count) at qos[0..count), or CACHE_MANY */
    void *subscribers[CACHE_RESULTS];
    uint8_t qos[CACHE_RESULTS];
    char topic[CACHE_TOPIC_MAX];
};

struct match_cache {
    struct cache_entry slots[CACHE_SLOTS];
    uint64_t hits; /* matches answered by replaying an entry, for tests */
};

/* ---- subscriber sets ---- */

static inline uint32_t
ptr_hash(const void *p)
{
    return (uint32_t)(((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) >> 32);
}

static inline bool
subs_is_table(uint32_t cap)
{
    return cap > SUBS_SMALL;
}

/* Slots to scan when iterating: the dense prefix, or the whole table. */
static inline uint32_t
subs_span(const struct tree_node *node)
{
    return subs_is_table(node->sub_cap) ? node->sub_cap : node->nsubs;
}

/* The index of subscriber's entry, or UINT32_MAX. */
static uint32_t
subs_find(const struct tree_node *node, const void *subscriber)
{
    if (!node->nsubs)
        return UINT32_MAX;
    if (!subs_is_table(node->sub_cap)) {
        for (uint32_t i = 0; i < node->nsubs; i++)
            if (node->subs[i].subscriber == subscriber)
                return i;
        return UINT32_MAX;
    }
    uint32_t mask = node->sub_cap - 1;
    for (uint32_t i = ptr_hash(subscriber) & mask; node->subs[i].subscriber; i = (i + 1) & mask)
        if (node->subs[i].subscriber == subscriber)
            return i;
    return UINT32_MAX;
}

static void
subs_table_put(struct sub *subs, uint32_t cap, struct sub entry)
{
    uint32_t mask = cap - 1;
    uint32_t i = ptr_hash(entry.subscriber) & mask;
    while (subs[i].subscriber)
        i = (i + 1) & mask;
    subs[i] = entry;
}

static void
subs_release(struct tree_node *node)
{
    if (node->subs != &node->one)
        free(node->subs);
    node->subs = NULL;
    node->sub_cap = 0;
}

/* Moves the entries into new storage of cap slots, inline for cap 1.
 * RMQ_NOMEM keeps the old. */
static enum rmq_status
subs_resize(struct tree_node *node, uint32_t cap)
{
    struct sub *subs = &node->one;
    if (cap > 1 && !(subs = calloc(cap, sizeof(*subs))))
        return RMQ_NOMEM;
    uint32_t n = 0, span = subs_span(node);
    for (uint32_t i = 0; i < span; i++) {
        if (!node->subs[i].subscriber)
            continue;
        if (subs_is_table(cap))
            subs_table_put(subs, cap, node->subs[i]);
        else
            subs[n++] = node->subs[i];
    }
    subs_release(node);
    node->subs = subs;
    node->sub_cap = cap;
    return RMQ_OK;
}

/* Adds or updates subscriber's entry; *replaced tells which. */
static enum rmq_status
subs_upsert(struct tree_node *node, void *subscriber, uint8_t qos, bool *replaced)
{
    uint32_t at = subs_find(node, subscriber);
    *replaced = at != UINT32_MAX;
    if (*replaced) {
        node->subs[at].qos = qos;
        return RMQ_OK;
    }
    uint32_t cap = node->sub_cap;
    bool full = subs_is_table(cap) ? ((uint64_t)node->nsubs + 1) * 4 > (uint64_t)cap * 3
                                   : node->nsubs == cap;
    if (full && (cap >= (1u << 30) || subs_resize(node, cap ? cap * 2 : 1) != RMQ_OK))
        return RMQ_NOMEM;
    struct sub entry = {subscriber, qos};
    if (subs_is_table(node->sub_cap))
        subs_table_put(node->subs, node->sub_cap, entry);
    else
        node->subs[node->nsubs] = entry;
    node->nsubs++;
    return RMQ_OK;
}

/* Empties table slot hole, shifting back later entries of its probe run. */
static void
subs_table_delete(struct tree_node *node, uint32_t hole)
{
    uint32_t mask = node->sub_cap - 1;
    struct sub *subs = node->subs;
    for (uint32_t j = (hole + 1) & mask; subs[j].subscriber; j = (j + 1) & mask) {
        uint32_t home = ptr_hash(subs[j].subscriber) & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            subs[hole] = subs[j];
            hole = j;
        }
    }
    subs[hole].subscriber = NULL;
}

/* Removes subscriber's entry; false if it had none. */
static bool
subs_remove(struct tree_node *node, const void *subscriber)
{
    uint32_t at = subs_find(node, subscriber);
    if (at == UINT32_MAX)
        return false;
    if (subs_is_table(node->sub_cap))
        subs_table_delete(node, at);
    else
        node->subs[at] = node->subs[node->nsubs - 1];
    node->nsubs--;
    if (!node->nsubs)
        subs_release(node);
    else if (node->nsubs == 1 && node->sub_cap > 1)
        (void)subs_resize(node, 1); /* back inline; cannot fail */
    else if (subs_is_table(node->sub_cap) && (uint64_t)node->nsubs * 8 < node->sub_cap) {
        uint32_t cap = node->sub_cap / 4;
        (void)subs_resize(node, cap > SUBS_SMALL ? cap : SUBS_SMALL);
    }
    return true;
}

/* ---- nodes ---- */

static struct tree_node *
node_new(struct topic_tree *tree, struct tree_node *parent, const char *level, size_t len,
         uint32_t hash)
{
    struct tree_node *node = calloc(1, sizeof(*node) + len);
    if (!node)
        return NULL;
    char *bytes = (char *)(node + 1);
    memcpy(bytes, level, len);
    node->link.parent = &parent->link;
    node->link.level = bytes;
    node->link.len = (uint16_t)len;
    node->link.hash = hash;
    tree->nodes++;
    return node;
}

/* Frees what node owns, children included, but not node itself. */
static void
node_clear(struct tree_node *node)
{
    uint32_t pos = 0;
    struct level_node *child;
    while ((child = level_map_next(&node->link.children, &pos))) {
        node_clear((struct tree_node *)child);
        free(child);
    }
    struct tree_node *wild[2] = {node->plus, node->pound};
    for (int i = 0; i < 2; i++) {
        if (wild[i]) {
            node_clear(wild[i]);
            free(wild[i]);
        }
    }
    level_map_release(&node->link.children);
    subs_release(node);
}

static inline bool
node_empty(const struct tree_node *node)
{
    return !node->nsubs && !node->link.children.count && !node->plus && !node->pound;
}

/* Frees node and each ancestor that becomes empty, stopping at the root. */
static void
prune(struct topic_tree *tree, struct tree_node *node)
{
    while (node != &tree->root && node_empty(node)) {
        struct tree_node *parent = (struct tree_node *)node->link.parent;
        if (parent->plus == node)
            parent->plus = NULL;
        else if (parent->pound == node)
            parent->pound = NULL;
        else
            level_map_remove(&parent->link.children, &node->link);
        node_clear(node);
        free(node);
        tree->nodes--;
        node = parent;
    }
}

static inline bool
is_level(const char *level, size_t len, char c)
{
    return len == 1 && level[0] == c;
}

/* node's child for one filter level, made if create; NULL if absent or out
 * of memory. */
static struct tree_node *
node_child(struct topic_tree *tree, struct tree_node *node, const char *level, size_t len,
           bool create)
{
    struct tree_node **wild = is_level(level, len, '+')   ? &node->plus
                              : is_level(level, len, '#') ? &node->pound
                                                          : NULL;
    if (wild) {
        if (!*wild && create)
            *wild = node_new(tree, node, level, len, 0);
        return *wild;
    }
    uint32_t hash = level_hash(tree->seed, level, len);
    struct level_node *found = level_map_find(&node->link.children, hash, level, len);
    if (found || !create)
        return (struct tree_node *)found;
    struct tree_node *child = node_new(tree, node, level, len, hash);
    if (child && level_map_add(&node->link.children, &child->link) != RMQ_OK) {
        free(child);
        tree->nodes--;
        child = NULL;
    }
    return child;
}

/* The node where filter ends, made with its ancestors if create; NULL if
 * absent, or out of memory (nodes made on the way are pruned again). */
static struct tree_node *
node_walk(struct topic_tree *tree, const char *filter, size_t len, bool create)
{
    struct tree_node *node = &tree->root;
    size_t pos = 0;
    for (;;) {
        const char *slash = memchr(filter + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - filter) : len;
        struct tree_node *child = node_child(tree, node, filter + pos, end - pos, create);
        if (!child) {
            if (create)
                prune(tree, node);
            return NULL;
        }
        if (end == len)
            return child;
        node = child;
        pos = end + 1;
    }
}

/* RMQ_OK if the filter's shape is one the tree can hold: 1..65535 bytes,
 * '#' only as the last level, at most TOPIC_TREE_MAX_LEVELS levels. */
static enum rmq_status
filter_check(const char *filter, size_t len)
{
    if (!filter || len == 0 || len > TOPIC_MAX_LEN)
        return RMQ_INVALID;
    size_t levels = 0, pos = 0;
    for (;;) {
        const char *slash = memchr(filter + pos, '/', len - pos);
        size_t end = slash ? (size_t)(slash - filter) : len;
        if (++levels > TOPIC_TREE_MAX_LEVELS)
            return RMQ_LIMIT;
        if (end == len)
            return RMQ_OK;
        if (is_level(filter + pos, end - pos, '#'))
            return RMQ_INVALID;
        pos = end + 1;
    }
}

/* ---- API ---- */

struct topic_tree *
topic_tree_new(void)
{
    struct topic_tree *tree = calloc(1, sizeof(*tree));
    if (!tree)
        return NULL;
    tree->root.link.level = "";
    tree->seed = level_seed(tree);
    tree->gen = 1; /* an all-zero cache entry is empty */
    return tree;
}

void
topic_tree_free(struct topic_tree *tree)
{
    if (!tree)
        return;
    node_clear(&tree->root);
    free(tree->cache);
    free(tree);
}

enum rmq_status
topic_tree_subscribe(struct topic_tree *tree, const char *filter, size_t len, void *subscriber,
                     uint8_t qos, bool *replaced)
{
    bool was_there = false;
    struct tree_node *node = NULL;
    enum rmq_status status = filter_check(filter, len);
    if (!tree || !subscriber)
        status = RMQ_INVALID;
    if (status != RMQ_OK)
        goto fail;
    tree->gen++;
    if (!tree->cache)
        tree->cache = calloc(1, sizeof(*tree->cache)); /* none: matching walks every time */
    status = RMQ_NOMEM;
    node = node_walk(tree, filter, len, true);
    if (!node)
        goto fail;
    status = subs_upsert(node, subscriber, qos, &was_there);
    if (status != RMQ_OK)
        goto fail;
    if (!was_there)
        tree->count++;
    if (replaced)
        *replaced = was_there;
    return RMQ_OK;

fail:
    if (node)
        prune(tree, node);
    if (replaced)
        *replaced = false;
    return status;
}

enum rmq_status
topic_tree_unsubscribe(struct topic_tree *tree, const char *filter, size_t len, void *subscriber)
{
    if (!tree || !filter || !subscriber || len == 0 || len > TOPIC_MAX_LEN)
        return RMQ_NOT_FOUND;
    struct tree_node *node = node_walk(tree, filter, len, false);
    if (!node || !subs_remove(node, subscriber))
        return RMQ_NOT_FOUND;
    tree->gen++;
    tree->count--;
    prune(tree, node);
    return RMQ_OK;
}

static void
emit(const struct tree_node *node, topic_tree_match_cb cb, void *arg)
{
    uint32_t span = subs_span(node);
    for (uint32_t i = 0; i < span; i++)
        if (node->subs[i].subscriber)
            cb(node->subs[i].subscriber, node->subs[i].qos, arg);
}

/* A node still to visit, and its depth: the topic level it meets next. */
struct match_frame {
    const struct tree_node *node;
    uint32_t depth;
};

/* Depth-first over an explicit stack. Each step pops a node and pushes at
 * most two children one level deeper, so the stack never holds more than one
 * frame per depth plus one: TOPIC_TREE_MAX_LEVELS + 1. Topic levels are cut
 * and hashed once each, on first use, whichever branch reaches them. */
static void
walk(const struct topic_tree *tree, const char *topic, size_t len, topic_tree_match_cb cb,
     void *arg)
{
    enum { STACK_CAP = TOPIC_TREE_MAX_LEVELS + 2, LEVELS_CAP = TOPIC_TREE_MAX_LEVELS + 1 };
    struct match_frame stack[STACK_CAP];
    struct level_span spans[LEVELS_CAP];
    struct level_split split;
    level_split_init(&split, topic, len, tree->seed, spans, LEVELS_CAP);
    const struct tree_node *root = &tree->root;
    bool dollar = topic[0] == '$';
    size_t sp = 0;
    stack[sp++] = (struct match_frame){root, 0};
    while (sp) {
        struct match_frame f = stack[--sp];
        /* The '$' rule: no leading wildcard matches a name starting with '$'. */
        bool wild_ok = !(dollar && f.node == root);
        if (f.node->pound && wild_ok)
            emit(f.node->pound, cb, arg); /* '#' also matches the parent level */
        struct level_span *level = level_split_at(&split, f.depth);
        if (!level) {
            emit(f.node, cb, arg);
            continue;
        }
        if (f.depth >= TOPIC_TREE_MAX_LEVELS)
            continue; /* no node is deeper; keeps both arrays in bounds */
        if (f.node->plus && wild_ok)
            stack[sp++] = (struct match_frame){f.node->plus, f.depth + 1};
        if (f.node->link.children.count) {
            const struct level_node *child =
                level_map_find(&f.node->link.children, level_split_hash(&split, level),
                               topic + level->start, level->len);
            if (child)
                stack[sp++] = (struct match_frame){(const struct tree_node *)child, f.depth + 1};
        }
    }
}

/* ---- match cache ----
 *
 * Publishers repeat their topics, and a walk costs a cut, a hash and a look-up
 * per level (several hundred instructions for a four-level topic). The cache maps a
 * whole topic to the (subscriber, qos) pairs the walk gave for it, in the
 * walk's order, so replaying an entry calls cb exactly as the walk would.
 * Direct-mapped by the topic's hash; an entry is good only while the tree is
 * at the generation it was filled at, and any subscribe or unsubscribe moves
 * the generation on, so no entry can name a subscriber that has left.
 * Topics longer than CACHE_TOPIC_MAX are walked every time; a topic with more
 * than CACHE_RESULTS matches is remembered as such and walked (for it the
 * walk is small beside the deliveries). */

/* Passes the walk's matches on and keeps the first CACHE_RESULTS of them. */
struct recorder {
    topic_tree_match_cb cb;
    void *arg;
    uint32_t count;
    void *subscribers[CACHE_RESULTS];
    uint8_t qos[CACHE_RESULTS];
};

static void
record(void *subscriber, uint8_t qos, void *arg)
{
    struct recorder *r = arg;
    if (r->count < CACHE_RESULTS) {
        r->subscribers[r->count] = subscriber;
        r->qos[r->count] = qos;
    }
    r->count++;
    r->cb(subscriber, qos, r->arg);
}

void
topic_tree_match(const struct topic_tree *tree, const char *topic, size_t len,
                 topic_tree_match_cb cb, void *arg)
{
    if (!tree || !topic || !cb || len == 0 || len > TOPIC_MAX_LEN || !tree->count)
        return;
    if (!tree->cache || len > CACHE_TOPIC_MAX) {
        walk(tree, topic, len, cb, arg);
        return;
    }
    uint32_t hash = level_hash(tree->seed, topic, len);
    struct cache_entry *e = &tree->cache->slots[hash & (CACHE_SLOTS - 1)];
    if (e->gen == tree->gen && e->hash == hash && e->topic_len == len &&
        level_bytes_equal(e->topic, topic, len)) {
        if (e->count == CACHE_MANY) {
            walk(tree, topic, len, cb, arg);
            return;
        }
        tree->cache->hits++;
        /* A copy: cb may match another topic, which may reuse this slot. */
        void *subscribers[CACHE_RESULTS];
        uint8_t qos[CACHE_RESULTS];
        uint16_t n = e->count;
        memcpy(subscribers, e->subscribers, n * sizeof(subscribers[0]));
        memcpy(qos, e->qos, n);
        for (uint16_t i = 0; i < n; i++)
            cb(subscribers[i], qos[i], arg);
        return;
    }
    uint64_t gen = tree->gen;
    struct recorder r = {.cb = cb, .arg = arg};
    walk(tree, topic, len, record, &r);
    if (tree->gen != gen)
        return; /* changed under the walk: what it gave is not the tree's now */
    e->gen = gen;
    e->hash = hash;
    e->topic_len = (uint16_t)len;
    e->count = r.count <= CACHE_RESULTS ? (uint16_t)r.count : CACHE_MANY;
    if (r.count <= CACHE_RESULTS) {
        memcpy(e->subscribers, r.subscribers, r.count * sizeof(r.subscribers[0]));
        memcpy(e->qos, r.qos, r.count);
    }
    memcpy(e->topic, topic, len);
}

uint64_t
topic_tree_cache_hits(const struct topic_tree *tree)
{
    return tree && tree->cache ? tree->cache->hits : 0;
}

size_t
topic_tree_count(const struct topic_tree *tree)
{
    return tree ? tree->count : 0;
}

size_t
topic_tree_node_count(const struct topic_tree *tree)
{
    return tree ? tree->nodes : 0;
}

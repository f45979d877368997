/* A hash map from byte-string keys to pointers: open addressing with linear
 * probing, power-of-two capacity, keys copied into the map. Used for the
 * session table, the retained store and anything keyed by a name.
 *
 * Not thread-safe: a map belongs to one loop. Values are borrowed unless a
 * destructor is given, in which case hashmap_free() frees remaining values
 * through it (hashmap_remove() hands the value back and never frees it). */
#ifndef RMQ_COMMON_HASHMAP_H
#define RMQ_COMMON_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct hashmap;

/* Returns NULL on allocation failure. value_free may be NULL. */
struct hashmap *hashmap_new(void (*value_free)(void *value));

/* Frees the map, its keys and (with a destructor) its values. NULL-safe. */
void hashmap_free(struct hashmap *map);

/* The value stored under key, or NULL. */
void *hashmap_get(const struct hashmap *map, const void *key, size_t len);

/* Stores value under key (copying the key). If the key exists its value is
 * replaced and the old value is returned through *old (may be NULL, in which
 * case the old value is freed with the destructor). RMQ_NOMEM on failure,
 * leaving the map unchanged. */
enum rmq_status hashmap_put(struct hashmap *map, const void *key, size_t len, void *value,
                            void **old);

/* Removes key and returns its value (not freed), or NULL if absent. */
void *hashmap_remove(struct hashmap *map, const void *key, size_t len);

size_t hashmap_count(const struct hashmap *map);

/* Iteration: start with `size_t pos = 0`; each call returns true and fills
 * key/len/value for the next entry. The map must not be modified during an
 * iteration, except by hashmap_remove() of the entry just returned. */
int hashmap_next(const struct hashmap *map, size_t *pos, const void **key, size_t *len,
                 void **value);

/* 64-bit hash of bytes (FNV-1a style or better); exposed for other tables. */
uint64_t hashmap_hash(const void *key, size_t len);

#endif

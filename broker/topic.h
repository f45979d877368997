/* MQTT topic names and filters: validation and single-filter matching.
 * Pure functions on byte strings (not NUL-terminated); any thread.
 * Strings are assumed to be valid UTF-8 already (the codec checks that). */
#ifndef RMQ_BROKER_TOPIC_H
#define RMQ_BROKER_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

/* A topic name a client may publish to: 1..65535 bytes, no '+' or '#'. */
bool topic_name_valid(const char *name, size_t len);

/* A subscription filter: 1..65535 bytes; '+' only as a whole level; '#' only
 * as the whole last level. */
bool topic_filter_valid(const char *filter, size_t len);

/* True if the topic name matches the filter, with MQTT's rules: '+' matches
 * one level (possibly empty), '#' the parent level and any below it, and a
 * name starting with '$' is not matched by a filter starting with '+' or '#'. */
bool topic_matches(const char *filter, size_t flen, const char *name, size_t nlen);

#endif

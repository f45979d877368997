/* Topic access control from a Mosquitto-format ACL file.
 *
 *   # comment
 *   topic [read|write|readwrite|deny] FILTER   anonymous clients (before any
 *                                              `user` line) or the current user
 *   user NAME                                  starts NAME's section
 *   pattern [read|write|readwrite|deny] FILTER every client; %c is replaced by
 *                                              the client id, %u by the username
 *
 * The access word is optional (readwrite when absent). FILTER is the rest of
 * the line and may hold MQTT wildcards. Everything not allowed is denied,
 * and a matching `deny` rule wins over any allow.
 *
 * A pattern applies to a client only if every substituted value is
 * non-empty and free of '+', '#' and '/': otherwise a client could pick an id
 * or username that widens the rule (username "#") or reaches into another
 * client's tree (username "alice/x" under "devices/%u/#"). Patterns with %u
 * never apply to anonymous clients.
 *
 * A rule applies to a topic or a subscription filter when the rule's filter
 * *covers* it: every topic the requested filter matches also matches the
 * rule ("a/#" covers "a/b/+" and "a"; "a/+" does not cover "a/#"; for a
 * plain topic name this is ordinary MQTT matching). The requested access
 * is allowed if no deny rule covers it and an allow rule with that access
 * does.
 *
 * Subscriptions are checked once, at SUBSCRIBE, on the requested filter;
 * messages are not re-checked at delivery (Mosquitto re-checks each one).
 * For allow rules "covers" makes that sufficient: a granted filter only
 * matches topics some rule lets the client read. For deny rules it is not:
 * with "topic read #" and "topic deny secret/#", subscribing to "secret/x"
 * is refused but "#" is granted and receives what others publish under
 * secret/. Prefer allow-lists over deny rules until delivery-time checks
 * exist.
 *
 * A loaded struct acl is immutable: any thread may call acl_check(). */
#ifndef RMQ_BROKER_ACL_H
#define RMQ_BROKER_ACL_H

#include <stdbool.h>
#include <stddef.h>

struct acl;

enum acl_access {
    ACL_READ = 1,  /* subscribe (topic is a filter) */
    ACL_WRITE = 2, /* publish, will (topic is a topic name) */
};

/* Reads the ACL file at path. NULL on failure, with one line in err naming
 * "path:line" and the problem (or the I/O error). */
struct acl *acl_load(const char *path, char *err, size_t errlen);

/* True if the client may access topic (a filter for ACL_READ, a topic name
 * for ACL_WRITE; topic_len bytes, not NUL-terminated). username is NULL for
 * an anonymous client; client_id is NUL-terminated. */
bool acl_check(const struct acl *acl, const char *client_id, const char *username,
               const char *topic, size_t topic_len, enum acl_access access);

/* NULL-safe. */
void acl_free(struct acl *acl);

/* True if every topic matching filter also matches rule (both valid MQTT
 * filters; a topic name is a filter without wildcards). Used by
 * acl_check(), exposed for tests. */
bool acl_filter_covers(const char *rule, size_t rlen, const char *filter, size_t flen);

#endif

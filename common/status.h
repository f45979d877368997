/* One status type for the whole code base. Functions return a status and
 * hand results back through out-parameters; constructors return a pointer or
 * NULL instead. */
#ifndef RMQ_COMMON_STATUS_H
#define RMQ_COMMON_STATUS_H

enum rmq_status {
    RMQ_OK = 0,
    RMQ_AGAIN,       /* not an error: need more bytes / try later */
    RMQ_NOMEM,       /* allocation failed */
    RMQ_PROTOCOL,    /* peer broke the protocol */
    RMQ_IO,          /* socket or file error */
    RMQ_NOT_FOUND,   /* no such item */
    RMQ_LIMIT,       /* a configured or protocol limit was exceeded */
    RMQ_INVALID,     /* bad argument or bad configuration value */
    RMQ_EXISTS,      /* item already present */
    RMQ_UNSUPPORTED, /* valid but not supported (e.g. unknown MQTT protocol level) */
};

/* Short lower-case name of a status, for logs. Never NULL. */
static inline const char *
rmq_status_str(enum rmq_status s)
{
    static const char *const names[] = {
        "ok", "again", "nomem", "protocol", "io", "not_found",
        "limit", "invalid", "exists", "unsupported",
    };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

#endif

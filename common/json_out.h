/* A small JSON writer for hot paths (the online/offline events of every
 * connection): appends to a caller's buffer with no allocation, where
 * building a jansson object and dumping it costs tens of thousands of
 * instructions. Strings are escaped as RFC 8259 requires (quote, backslash,
 * control characters); other bytes, UTF-8 included, are copied as they
 * are, so the caller passes valid UTF-8.
 *
 *     char buf[256];
 *     struct json_out j = json_out_init(buf, sizeof(buf));
 *     json_out_key_str(&j, "event", "online");   // {"event":"online"
 *     json_out_key_int(&j, "ts", 17);            // ,"ts":17
 *     const char *text = json_out_finish(&j);    // }  NULL if it overflowed
 */
#ifndef RMQ_COMMON_JSON_OUT_H
#define RMQ_COMMON_JSON_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_out {
    char *buf;
    size_t cap, len;
    bool overflow; /* something did not fit: the result is lost */
    bool first;    /* no member written yet */
};

/* An object is opened in buf (cap bytes, the terminating NUL included). */
struct json_out json_out_init(char *buf, size_t cap);

/* "key":"value", or "key":null when value is NULL. */
void json_out_key_str(struct json_out *j, const char *key, const char *value);

/* "key":value */
void json_out_key_int(struct json_out *j, const char *key, int64_t value);

/* Closes the object: the NUL-terminated text (its length in j->len), or
 * NULL if the buffer was too small. */
const char *json_out_finish(struct json_out *j);

/* The most bytes a string of len bytes takes escaped and quoted. */
static inline size_t
json_out_str_max(size_t len)
{
    return 6 * len + 2; /* every byte a \u00XX escape at worst */
}

#endif

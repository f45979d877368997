/* Request bodies for handlers: parse the JSON object, read the fields of
 * an MQTT message (admin publish, internal deliver), base64. The
 * request-based helpers answer 400 themselves on bad input, so a handler
 * only checks the result and returns. */
#ifndef RMQ_HTTP_HTTP_BODY_H
#define RMQ_HTTP_HTTP_BODY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "http/http_server.h"

/* Parses the body as a JSON object. On failure answers 400 "bad_json" and
 * returns NULL; the caller then just returns. The result is the caller's. */
json_t *http_request_json_object(struct http_request *req);

/* An MQTT message given in a JSON body. */
struct http_message {
    char *topic; /* NUL-terminated copy */
    size_t topic_len;
    uint8_t *payload;
    size_t payload_len;
    uint8_t qos;
    bool retain;
};

/* Reads {"topic": str, "payload": str, "encoding": "text"|"base64", "qos":
 * 0..2, "retain": bool} from doc (payload, encoding, qos and retain are
 * optional: "", "text", 0, false). With base64_only the payload is always
 * base64 and "encoding" is not read. On a problem answers 400 ("bad_field",
 * or "invalid_topic" for a topic MQTT would refuse) and returns false. */
bool http_request_message(struct http_request *req, json_t *doc, bool base64_only,
                          struct http_message *out);

void http_message_clear(struct http_message *m);

/* Decodes standard base64 (with or without '=' padding) into a malloc'd
 * buffer. RMQ_INVALID for bad input, RMQ_NOMEM. An empty input gives an
 * empty (non-NULL) buffer. */
enum rmq_status http_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

/* Standard base64 with padding, NUL-terminated, malloc'd. NULL on failure. */
char *http_base64_encode(const void *data, size_t len);

#endif

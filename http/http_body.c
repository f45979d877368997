/* Request bodies for handlers: the JSON object, the fields of an MQTT
 * message, base64. See http_body.h. Stateless: any thread, though the
 * request-based helpers answer the request and so follow its rules (the
 * handler's thread, before the request is deferred). */
#include "http/http_body.h"

#include <stdlib.h>
#include <string.h>

#include "broker/topic.h"

json_t *
http_request_json_object(struct http_request *req)
{
    json_error_t err;
    size_t len;
    const char *body = http_request_body(req, &len);
    if (len == 0) {
        http_reply_error(req, 400, "bad_json", "a JSON object body is required");
        return NULL;
    }
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!doc) {
        http_reply_error(req, 400, "bad_json", "invalid JSON at line %d column %d: %s", err.line,
                         err.column, err.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        http_reply_error(req, 400, "bad_json", "the body must be a JSON object");
        return NULL;
    }
    return doc;
}

/* ---- base64 ---- */

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

enum rmq_status
http_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len)
{
    /* Padding is optional; once it starts only padding may follow. */
    size_t data = len;
    while (data > 0 && text[data - 1] == '=' && len - data < 2)
        data--;
    if (data % 4 == 1 || (len != data && len % 4 != 0))
        return RMQ_INVALID;
    uint8_t *buf = malloc(data / 4 * 3 + 3);
    if (!buf)
        return RMQ_NOMEM;
    size_t n = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < data; i++) {
        int v = b64_value((unsigned char)text[i]);
        if (v < 0) {
            free(buf);
            return RMQ_INVALID;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            buf[n++] = (uint8_t)(acc >> 16);
            buf[n++] = (uint8_t)(acc >> 8);
            buf[n++] = (uint8_t)acc;
            acc = 0;
        }
    }
    if (data % 4 == 2) {
        buf[n++] = (uint8_t)(acc >> 4);
    } else if (data % 4 == 3) {
        buf[n++] = (uint8_t)(acc >> 10);
        buf[n++] = (uint8_t)(acc >> 2);
    }
    *out = buf;
    *out_len = n;
    return RMQ_OK;
}

char *
http_base64_encode(const void *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *in = data;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t n = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
        out[n++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        out[n++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    out[n] = '\0';
    return out;
}

/* ---- message bodies ---- */

void
http_message_clear(struct http_message *m)
{
    free(m->topic);
    free(m->payload);
    *m = (struct http_message){0};
}

static bool
message_payload(struct http_request *req, json_t *doc, bool base64_only, struct http_message *out)
{
    json_t *payload = json_object_get(doc, "payload");
    json_t *encoding = base64_only ? NULL : json_object_get(doc, "encoding");
    const char *enc = base64_only ? "base64" : "text";
    if (encoding && !json_is_string(encoding)) {
        http_reply_error(req, 400, "bad_field", "\"encoding\" must be \"text\" or \"base64\"");
        return false;
    }
    if (encoding)
        enc = json_string_value(encoding);
    if (strcmp(enc, "text") != 0 && strcmp(enc, "base64") != 0) {
        http_reply_error(req, 400, "bad_field", "\"encoding\" must be \"text\" or \"base64\"");
        return false;
    }
    if (payload && !json_is_string(payload)) {
        http_reply_error(req, 400, "bad_field", "\"payload\" must be a string");
        return false;
    }
    const char *text = payload ? json_string_value(payload) : "";
    size_t len = payload ? json_string_length(payload) : 0;
    if (strcmp(enc, "base64") == 0) {
        if (http_base64_decode(text, len, &out->payload, &out->payload_len) != RMQ_OK) {
            http_reply_error(req, 400, "bad_field", "\"payload\" is not valid base64");
            return false;
        }
        return true;
    }
    out->payload = malloc(len + 1);
    if (!out->payload) {
        http_reply_error(req, 500, "internal", "out of memory");
        return false;
    }
    memcpy(out->payload, text, len);
    out->payload_len = len;
    return true;
}

bool
http_request_message(struct http_request *req, json_t *doc, bool base64_only,
                     struct http_message *out)
{
    *out = (struct http_message){0};
    json_t *topic = json_object_get(doc, "topic");
    json_t *qos = json_object_get(doc, "qos");
    json_t *retain = json_object_get(doc, "retain");
    if (!json_is_string(topic)) {
        http_reply_error(req, 400, "bad_field", "\"topic\" is required and must be a string");
        return false;
    }
    const char *t = json_string_value(topic);
    size_t tl = json_string_length(topic);
    if (tl > UINT16_MAX || memchr(t, '\0', tl) || !topic_name_valid(t, tl)) {
        http_reply_error(req, 400, "invalid_topic",
                         "not a topic name MQTT accepts (1..65535 bytes, no + or #, no NUL)");
        return false;
    }
    if (qos &&
        (!json_is_integer(qos) || json_integer_value(qos) < 0 || json_integer_value(qos) > 2)) {
        http_reply_error(req, 400, "bad_field", "\"qos\" must be 0, 1 or 2");
        return false;
    }
    if (retain && !json_is_boolean(retain)) {
        http_reply_error(req, 400, "bad_field", "\"retain\" must be true or false");
        return false;
    }
    out->topic = strndup(t, tl);
    if (!out->topic || !message_payload(req, doc, base64_only, out)) {
        if (!out->topic)
            http_reply_error(req, 500, "internal", "out of memory");
        http_message_clear(out);
        return false;
    }
    out->topic_len = tl;
    out->qos = qos ? (uint8_t)json_integer_value(qos) : 0;
    out->retain = retain && json_is_true(retain);
    return true;
}

/* See json_out.h. */
#include "common/json_out.h"

#include <string.h>

#include "common/decimal.h"

struct json_out
json_out_init(char *buf, size_t cap)
{
    struct json_out j = {.buf = buf, .cap = cap, .first = true};
    if (cap < 2)
        j.overflow = true;
    else
        buf[j.len++] = '{';
    return j;
}

static void
put(struct json_out *j, const char *s, size_t n)
{
    if (j->overflow || n >= j->cap - j->len) { /* one byte stays for the NUL */
        j->overflow = true;
        return;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
}

static void
put_string(struct json_out *j, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(j, "\"", 1);
    const char *run = s; /* bytes copied as they are, up to s */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(j, run, (size_t)(s - run));
        run = s + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"':
            put(j, "\\\"", 2);
            break;
        case '\\':
            put(j, "\\\\", 2);
            break;
        case '\b':
            put(j, "\\b", 2);
            break;
        case '\f':
            put(j, "\\f", 2);
            break;
        case '\n':
            put(j, "\\n", 2);
            break;
        case '\r':
            put(j, "\\r", 2);
            break;
        case '\t':
            put(j, "\\t", 2);
            break;
        default:
            put(j, esc, sizeof(esc));
            break;
        }
    }
    put(j, run, (size_t)(s - run));
    put(j, "\"", 1);
}

static void
put_key(struct json_out *j, const char *key)
{
    if (!j->first)
        put(j, ",", 1);
    j->first = false;
    put_string(j, key);
    put(j, ":", 1);
}

void
json_out_key_str(struct json_out *j, const char *key, const char *value)
{
    put_key(j, key);
    if (value)
        put_string(j, value);
    else
        put(j, "null", 4);
}

void
json_out_key_int(struct json_out *j, const char *key, int64_t value)
{
    char num[DECIMAL_U64_MAX + 1];
    size_t n = 0;
    if (value < 0)
        num[n++] = '-';
    uint64_t mag = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    n += decimal_u64(num + n, mag);
    put_key(j, key);
    put(j, num, n);
}

const char *
json_out_finish(struct json_out *j)
{
    put(j, "}", 1);
    if (j->overflow)
        return NULL;
    j->buf[j->len] = '\0';
    return j->buf;
}

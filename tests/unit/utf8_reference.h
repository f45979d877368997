/* A slow UTF-8 reference for MQTT strings (MQTT 3.1.1 section 1.5.3:
 * well-formed UTF-8, no U+0000, no surrogates, nothing above U+10FFFF),
 * decoded code point by code point, against which mqtt_utf8_valid is
 * cross-checked by the unit tests and the packet fuzzer. Header-only. */
#ifndef RMQ_TESTS_UNIT_UTF8_REFERENCE_H
#define RMQ_TESTS_UNIT_UTF8_REFERENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Slow reference: decode the code point, then apply MQTT's rules. */
static inline size_t
ref_utf8_char(const uint8_t *s, size_t len)
{
    uint32_t cp;
    size_t n;

    if (s[0] < 0x80) {
        n = 1, cp = s[0];
    } else if ((s[0] & 0xe0) == 0xc0) {
        n = 2, cp = s[0] & 0x1fu;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3, cp = s[0] & 0x0fu;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4, cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3fu);
    }
    static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static inline bool
ref_utf8_valid(const uint8_t *s, size_t len)
{
    for (size_t i = 0, n; i < len; i += n)
        if ((n = ref_utf8_char(s + i, len - i)) == 0)
            return false;
    return true;
}

#endif

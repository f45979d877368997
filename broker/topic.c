/* MQTT topic names and filters; see topic.h.
 *
 * Names and filters are byte strings split into levels by '/'. Matching walks
 * one level at a time in a single pass over both strings, with no calls.
 * Pure functions, no allocation, no state: any thread. The caller has
 * validated the strings (UTF-8 by the codec, the filter by
 * topic_filter_valid); matching with an invalid filter gives some answer but
 * never reads out of bounds. */
#include "broker/topic.h"

#include <stdint.h>
#include <string.h>

#define TOPIC_MAX_LEN 65535u

bool
topic_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > TOPIC_MAX_LEN)
        return false;
    return !memchr(name, '+', len) && !memchr(name, '#', len);
}

bool
topic_filter_valid(const char *filter, size_t len)
{
    if (len == 0 || len > TOPIC_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = filter[i];
        if (c != '+' && c != '#')
            continue;
        /* A wildcard is a whole level: a '/' (or an end) on each side. */
        if (i > 0 && filter[i - 1] != '/')
            return false;
        if (c == '#' && i != len - 1)
            return false;
        if (c == '+' && i + 1 < len && filter[i + 1] != '/')
            return false;
    }
    return true;
}

bool
topic_matches(const char *filter, size_t flen, const char *name, size_t nlen)
{
    size_t i = 0, j = 0; /* both at the start of a level */

    if (flen == 0 || nlen == 0)
        return false; /* neither is valid, and both must be */
    /* [MQTT-4.7.2-1]: leading wildcards do not match "$" topics. */
    if (name[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
        return false;
    for (;;) {
        if (i < flen && filter[i] == '#')
            return true; /* this level and everything below */
        if (i < flen && filter[i] == '+') {
            i++;
            while (j < nlen && name[j] != '/')
                j++;
        } else {
            /* One pass over both: levels are short, so a loop beats
             * memchr + memcmp calls. A '/' in the name ends the match. */
            for (; i < flen && filter[i] != '/'; i++, j++)
                if (j == nlen || name[j] != filter[i])
                    return false;
            if (j < nlen && name[j] != '/')
                return false;
        }
        /* Both at the end of a level: each is at its end or at a '/'. */
        if (i == flen)
            return j == nlen;
        if (filter[i] != '/')
            return false; /* only in an invalid filter, e.g. "+x" */
        if (j == nlen)    /* "a/#" also matches "a" */
            return flen - i == 2 && filter[i + 1] == '#';
        i++;
        j++;
    }
}

/* Topic ACLs; see acl.h for the file format and the matching rules.
 *
 * Three rule lists: anonymous (`topic` lines before any `user`), one per
 * user (in a hashmap by name; repeated `user X` sections append), and
 * patterns. Each list keeps file order. acl_check() first looks for a deny
 * rule that covers the topic, then for an allow rule with the wanted
 * access that covers it. Patterns are substituted per check into a
 * temporary buffer. Immutable after acl_load(): any thread may check. */
#include "broker/acl.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/topic.h"
#include "common/hashmap.h"

#define ACL_DENY 0u /* rule access value of a `deny` rule */

struct acl_rule {
    struct acl_rule *next;
    unsigned access; /* ACL_READ | ACL_WRITE, or ACL_DENY */
    size_t len;
    char filter[];
};

struct acl_list {
    struct acl_rule *head, **tail;
};

struct acl {
    struct acl_list anonymous;
    struct acl_list patterns;
    struct hashmap *users; /* username -> struct acl_list (owned) */
};

/* ---- filter relations ---- */

struct levels {
    const char *s;
    size_t len, pos;
    bool done;
};

/* Next '/'-separated level of it into *p and *n; false after the last one. */
static bool
next_level(struct levels *it, const char **p, size_t *n)
{
    if (it->done)
        return false;
    const char *start = it->s + it->pos;
    const char *slash = memchr(start, '/', it->len - it->pos);
    if (slash) {
        *n = (size_t)(slash - start);
        it->pos += *n + 1;
    } else {
        *n = it->len - it->pos;
        it->done = true;
    }
    *p = start;
    return true;
}

static bool
is_level(const char *p, size_t n, char c)
{
    return n == 1 && p[0] == c;
}

/* A filter whose first level is a wildcard never matches "$..." topics. */
static bool
dollar_mismatch(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen && blen && a[0] == '$' && (b[0] == '+' || b[0] == '#');
}

bool
acl_filter_covers(const char *rule, size_t rlen, const char *filter, size_t flen)
{
    struct levels r = {.s = rule, .len = rlen}, f = {.s = filter, .len = flen};
    const char *rp, *fp;
    size_t rn, fn;
    if (rlen == 0 || flen == 0 || dollar_mismatch(filter, flen, rule, rlen))
        return false;
    for (;;) {
        bool hr = next_level(&r, &rp, &rn), hf = next_level(&f, &fp, &fn);
        if (hr && is_level(rp, rn, '#'))
            return true; /* covers the rest, and the parent ("a/#" covers "a") */
        if (!hr || !hf)
            return !hr && !hf;
        if (is_level(fp, fn, '#'))
            return false; /* "a/#" also matches "a", which only a rule '#' here covers */
        if (is_level(rp, rn, '+'))
            continue;
        if (is_level(fp, fn, '+') || rn != fn || memcmp(rp, fp, rn) != 0)
            return false;
    }
}

/* ---- checking ---- */

/* A substituted value must not change the shape of the rule. */
static bool
safe_value(const char *v)
{
    return v && *v && !strpbrk(v, "+#/");
}

/* Expands %c and %u of a pattern into a malloc'd string (*out, *outlen).
 * Returns false if the pattern does not apply to this client (or no memory:
 * not applying is the safe answer). */
static bool
substitute(const struct acl_rule *r, const char *client_id, const char *username, char **out,
           size_t *outlen)
{
    size_t need = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->filter[i] == '%' && i + 1 < r->len &&
            (r->filter[i + 1] == 'c' || r->filter[i + 1] == 'u')) {
            const char *v = r->filter[i + 1] == 'c' ? client_id : username;
            if (!safe_value(v))
                return false;
            need += strlen(v);
            i++;
        } else {
            need++;
        }
    }
    char *s = malloc(need + 1);
    if (!s)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->filter[i] == '%' && i + 1 < r->len &&
            (r->filter[i + 1] == 'c' || r->filter[i + 1] == 'u')) {
            const char *v = r->filter[i + 1] == 'c' ? client_id : username;
            size_t vl = strlen(v);
            memcpy(s + n, v, vl);
            n += vl;
            i++;
        } else {
            s[n++] = r->filter[i];
        }
    }
    s[n] = '\0';
    *out = s;
    *outlen = n;
    return true;
}

/* The verdict of one rule list: -1 a deny rule covers the topic, 1 an allow
 * rule with the access covers it, 0 neither. One pass looks at deny rules
 * only, the other at allow rules only. */
static int
check_list(const struct acl_list *l, bool patterns, const char *client_id, const char *username,
           const char *topic, size_t len, unsigned access, bool want_deny)
{
    for (const struct acl_rule *r = l->head; r; r = r->next) {
        if (want_deny != (r->access == ACL_DENY) || (!want_deny && !(r->access & access)))
            continue;
        const char *filter = r->filter;
        size_t flen = r->len;
        char *tmp = NULL;
        if (patterns && !substitute(r, client_id, username, &tmp, &flen))
            continue;
        if (tmp)
            filter = tmp;
        bool hit = acl_filter_covers(filter, flen, topic, len);
        free(tmp);
        if (hit)
            return want_deny ? -1 : 1;
    }
    return 0;
}

bool
acl_check(const struct acl *acl, const char *client_id, const char *username, const char *topic,
          size_t topic_len, enum acl_access access)
{
    const struct acl_list *own =
        username ? hashmap_get(acl->users, username, strlen(username)) : &acl->anonymous;
    for (int deny = 1; deny >= 0; deny--) {
        int v = 0;
        if (own)
            v = check_list(own, false, client_id, username, topic, topic_len, access, deny);
        if (!v)
            v = check_list(&acl->patterns, true, client_id, username, topic, topic_len, access,
                           deny);
        if (v)
            return v > 0;
    }
    return false;
}

/* ---- loading ---- */

static void
list_free(struct acl_list *l)
{
    struct acl_rule *r = l->head;
    while (r) {
        struct acl_rule *next = r->next;
        free(r);
        r = next;
    }
    l->head = NULL;
    l->tail = &l->head;
}

static void
user_list_free(void *v)
{
    list_free(v);
    free(v);
}

void
acl_free(struct acl *acl)
{
    if (!acl)
        return;
    list_free(&acl->anonymous);
    list_free(&acl->patterns);
    hashmap_free(acl->users);
    free(acl);
}

static char *
skip_space(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Parses "[ACCESS] FILTER" and appends the rule to l. NULL or the problem. */
static const char *
add_rule(struct acl_list *l, char *rest)
{
    static const struct {
        const char *word;
        unsigned access;
    } words[] = {{"read", ACL_READ},
                 {"write", ACL_WRITE},
                 {"readwrite", ACL_READ | ACL_WRITE},
                 {"deny", ACL_DENY}};
    unsigned access = ACL_READ | ACL_WRITE;
    char *filter = rest;
    size_t wl = strcspn(rest, " \t");
    if (rest[wl]) { /* two or more words: the first is the access */
        size_t i;
        for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strlen(words[i].word) == wl && strncmp(rest, words[i].word, wl) == 0)
                break;
        if (i == sizeof(words) / sizeof(words[0]))
            return "access must be read, write, readwrite or deny";
        access = words[i].access;
        filter = skip_space(rest + wl);
    }
    size_t len = strlen(filter);
    if (!topic_filter_valid(filter, len))
        return len ? "invalid topic filter" : "missing topic filter";
    struct acl_rule *r = malloc(sizeof(*r) + len + 1);
    if (!r)
        return "out of memory";
    r->next = NULL;
    r->access = access;
    r->len = len;
    memcpy(r->filter, filter, len + 1);
    *l->tail = r;
    l->tail = &r->next;
    return NULL;
}

/* Finds or creates the rule list of user name. */
static struct acl_list *
user_section(struct acl *acl, const char *name)
{
    struct acl_list *l = hashmap_get(acl->users, name, strlen(name));
    if (l)
        return l;
    if (!(l = calloc(1, sizeof(*l))))
        return NULL;
    l->tail = &l->head;
    if (hashmap_put(acl->users, name, strlen(name), l, NULL) != RMQ_OK) {
        free(l);
        return NULL;
    }
    return l;
}

/* One trimmed, non-empty, non-comment line. *section is the list `topic`
 * lines go to. NULL or the problem. */
static const char *
parse_line(struct acl *acl, char *line, struct acl_list **section)
{
    size_t kl = strcspn(line, " \t");
    char *rest = skip_space(line + kl);
    line[kl] = '\0';
    if (strcmp(line, "topic") == 0)
        return *rest ? add_rule(*section, rest) : "missing topic filter";
    if (strcmp(line, "pattern") == 0)
        return *rest ? add_rule(&acl->patterns, rest) : "missing topic filter";
    if (strcmp(line, "user") == 0) {
        if (!*rest)
            return "missing username";
        *section = user_section(acl, rest);
        return *section ? NULL : "out of memory";
    }
    return "expected topic, user or pattern";
}

struct acl *
acl_load(const char *path, char *err, size_t errlen)
{
    struct acl *acl = calloc(1, sizeof(*acl));
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    FILE *f = NULL;
    if (!acl || !(acl->users = hashmap_new(user_list_free))) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    acl->anonymous.tail = &acl->anonymous.head;
    acl->patterns.tail = &acl->patterns.head;
    if (!(f = fopen(path, "r"))) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    struct acl_list *section = &acl->anonymous;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && line[n - 1] && strchr(" \t\r\n", line[n - 1]))
            line[--n] = '\0';
        char *s = skip_space(line);
        if (!*s || *s == '#')
            continue;
        if ((size_t)n != strlen(line)) {
            snprintf(err, errlen, "%s:%u: NUL byte in line", path, lineno);
            goto fail;
        }
        const char *why = parse_line(acl, s, &section);
        if (why) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
            goto fail;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    free(line);
    return acl;
fail:
    if (f)
        fclose(f);
    free(line);
    acl_free(acl);
    return NULL;
}

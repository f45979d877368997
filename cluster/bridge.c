/* Stream bridge rules (see bridge.h): parsing rule texts, and turning a
 * message into the script call that appends it to a stream.
 *
 * A rule owns copies of everything it was given. A template is a list of
 * pieces: literal text or a placeholder. An entry is built in two passes
 * over a small list of arguments, each the concatenation of a few
 * segments (bytes or a template): the first sums the lengths, the second
 * writes them into one block, so a message costs one allocation.
 * Pure: no I/O, no clock, no shared state; any thread. */
#include "cluster/bridge.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/topic.h"
#include "common/config.h"
#include "common/status.h"

const char bridge_script_lua[] =
    "redis.replicate_commands()\n"
    "if #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 1 then return false end\n"
    "local id\n"
    "if ARGV[1] == '0' then\n"
    "  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))\n"
    "else\n"
    "  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))\n"
    "end\n"
    "if #KEYS > 1 then redis.call('SET', KEYS[2], id, 'PX', ARGV[2]) end\n"
    "return id\n";

#define DEFAULT_MAXLEN 1000000u
#define DEFAULT_WINDOW_MS 3600000u
#define MAX_MAXLEN 1000000000000ull

/* ---- fields ---- */

enum field { F_TOPIC, F_DEVICE, F_CLIENT_ID, F_NODE, F_QOS, F_TS, F_PAYLOAD, FIELD_COUNT };

static const char *const field_names[FIELD_COUNT] = {
    "topic", "device", "client_id", "node", "qos", "ts", "payload",
};

/* ---- templates ---- */

enum piece_kind { P_TEXT, P_DEVICE, P_TOPIC, P_CLIENT_ID, P_NODE, P_JSON };

struct piece {
    enum piece_kind kind;
    char *text; /* P_TEXT: the literal; P_JSON: the path as written */
    size_t len;
    char **path; /* P_JSON: the steps */
    size_t depth;
};

struct text_template {
    struct piece *pieces;
    size_t count;
    bool uses_json;
};

static const struct {
    const char *name;
    enum piece_kind kind;
} placeholders[] = {
    {"device", P_DEVICE},
    {"topic", P_TOPIC},
    {"client_id", P_CLIENT_ID},
    {"node", P_NODE},
};

enum bad_json { BAD_JSON_PLAIN, BAD_JSON_DEAD_LETTER, BAD_JSON_DROP };

static const char *const bad_json_names[] = {"plain", "dead-letter", "drop"};

struct rule {
    char *filter;
    size_t filter_len;
    struct text_template stream;
    struct text_template dedup;
    char *stream_text, *dedup_text; /* as written, for the log */
    bool has_dedup;
    uint64_t maxlen;
    char maxlen_arg[24];
    uint64_t window_ms;
    char window_arg[24];
    enum field fields[FIELD_COUNT];
    size_t field_count;
    enum bad_json on_bad_json;
    unsigned seen; /* settings given, one bit per entry of the settings table */
};

struct bridge_rules {
    struct rule *rules;
    size_t count;
    char *prefix;
    char *dead_letter;
};

/* ---- errors ---- */

static enum rmq_status errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum rmq_status
errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return RMQ_INVALID;
}

/* ---- template parsing ---- */

static void
template_free(struct text_template *t)
{
    for (size_t i = 0; i < t->count; i++) {
        struct piece *p = &t->pieces[i];
        free(p->text);
        for (size_t k = 0; k < p->depth; k++)
            free(p->path[k]);
        free(p->path);
    }
    free(t->pieces);
    *t = (struct text_template){0};
}

static struct piece *
add_piece(struct text_template *t, enum piece_kind kind, const char *text, size_t len)
{
    struct piece *pieces = realloc(t->pieces, (t->count + 1) * sizeof(*pieces));
    if (!pieces)
        return NULL;
    t->pieces = pieces;
    struct piece *p = &pieces[t->count];
    *p = (struct piece){.kind = kind, .len = len};
    if (text && !(p->text = strndup(text, len)))
        return NULL;
    t->count++;
    return p;
}

/* "a.b.0" into steps; false on an empty step or allocation failure. */
static enum rmq_status
split_path(struct piece *p, const char *path, size_t len, char *err, size_t errlen,
           const char *what)
{
    const char *end = path + len;
    for (const char *s = path;;) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        const char *stop = dot ? dot : end;
        if (stop == s)
            return errf(err, errlen, "%s: empty step in {json.%.*s}", what, (int)len, path);
        char **steps = realloc(p->path, (p->depth + 1) * sizeof(*steps));
        if (!steps)
            return errf(err, errlen, "out of memory");
        p->path = steps;
        if (!(steps[p->depth] = strndup(s, (size_t)(stop - s))))
            return errf(err, errlen, "out of memory");
        p->depth++;
        if (!dot)
            return RMQ_OK;
        s = dot + 1;
    }
}

/* One {NAME} at text (NAME of len bytes). */
static enum rmq_status
parse_placeholder(struct text_template *t, const char *name, size_t len, bool json_ok, char *err,
                  size_t errlen, const char *what)
{
    for (size_t i = 0; i < sizeof(placeholders) / sizeof(placeholders[0]); i++) {
        if (strlen(placeholders[i].name) == len && memcmp(placeholders[i].name, name, len) == 0)
            return add_piece(t, placeholders[i].kind, NULL, 0) ? RMQ_OK
                                                               : errf(err, errlen, "out of memory");
    }
    if (len >= 5 && memcmp(name, "json.", 5) == 0) {
        if (!json_ok)
            return errf(err, errlen, "%s: {%.*s}: JSON fields are only allowed in dedup=", what,
                        (int)len, name);
        struct piece *p = add_piece(t, P_JSON, name + 5, len - 5);
        if (!p)
            return errf(err, errlen, "out of memory");
        t->uses_json = true;
        return split_path(p, name + 5, len - 5, err, errlen, what);
    }
    return errf(err, errlen,
                "%s: unknown placeholder {%.*s} (use {device}, {topic}, {client_id}, {node}%s)",
                what, (int)len, name, json_ok ? " or {json.PATH}" : "");
}

static enum rmq_status
template_parse(struct text_template *t, const char *text, bool json_ok, char *err, size_t errlen,
               const char *what)
{
    if (!*text)
        return errf(err, errlen, "%s: empty", what);
    for (const char *p = text; *p;) {
        if (*p == '}')
            return errf(err, errlen, "%s: '}' without '{' in '%s'", what, text);
        if (*p == '{') {
            const char *close = strchr(p, '}');
            const char *open = strchr(p + 1, '{');
            if (!close || (open && open < close))
                return errf(err, errlen, "%s: unclosed '{' in '%s'", what, text);
            if (parse_placeholder(t, p + 1, (size_t)(close - p - 1), json_ok, err, errlen, what) !=
                RMQ_OK)
                return RMQ_INVALID;
            p = close + 1;
            continue;
        }
        size_t n = strcspn(p, "{}");
        if (!add_piece(t, P_TEXT, p, n))
            return errf(err, errlen, "out of memory");
        p += n;
    }
    return RMQ_OK;
}

/* ---- template expansion ---- */

struct vars {
    const struct bridge_message *m;
    json_t *doc;
};

static json_t *
json_at(json_t *doc, const struct piece *p)
{
    json_t *v = doc;
    for (size_t k = 0; v && k < p->depth; k++) {
        if (json_is_object(v)) {
            v = json_object_get(v, p->path[k]);
        } else if (json_is_array(v)) {
            char *end;
            unsigned long idx = strtoul(p->path[k], &end, 10);
            v = (*end || !isdigit((unsigned char)p->path[k][0])) ? NULL : json_array_get(v, idx);
        } else {
            v = NULL;
        }
    }
    return v;
}

/* A scalar JSON value as key text, into buf (or pointing into the
 * document for strings); false for null, objects, arrays and absence. */
static bool
json_text(json_t *v, char *buf, size_t buflen, const char **text, size_t *len)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_STRING:
        *text = json_string_value(v);
        *len = json_string_length(v);
        return true;
    case JSON_INTEGER:
        *len = (size_t)snprintf(buf, buflen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        *len = (size_t)snprintf(buf, buflen, "%.17g", json_real_value(v));
        break;
    case JSON_TRUE:
        *len = (size_t)snprintf(buf, buflen, "true");
        break;
    case JSON_FALSE:
        *len = (size_t)snprintf(buf, buflen, "false");
        break;
    default:
        return false;
    }
    *text = buf;
    return true;
}

/* Expands t; writes into out unless it is NULL. *len gets the length.
 * False if a JSON field is missing or not a scalar. */
static bool
expand(const struct text_template *t, const struct vars *v, char *out, size_t *len)
{
    size_t n = 0;
    for (size_t i = 0; i < t->count; i++) {
        const struct piece *p = &t->pieces[i];
        char num[64];
        const char *s = NULL;
        size_t sl = 0;
        switch (p->kind) {
        case P_TEXT:
            s = p->text, sl = p->len;
            break;
        case P_DEVICE:
            s = v->m->device, sl = strlen(s);
            break;
        case P_TOPIC:
            s = v->m->topic, sl = v->m->topic_len;
            break;
        case P_CLIENT_ID:
            s = v->m->client_id, sl = strlen(s);
            break;
        case P_NODE:
            s = v->m->node, sl = strlen(s);
            break;
        case P_JSON:
            if (!json_text(json_at(v->doc, p), num, sizeof(num), &s, &sl))
                return false;
            break;
        }
        if (out)
            memcpy(out + n, s, sl);
        n += sl;
    }
    *len = n;
    return true;
}

/* ---- rule settings ---- */

static enum rmq_status
set_stream(struct bridge_rules *rs, struct rule *r, const char *v, char *err, size_t errlen)
{
    if (!(r->stream_text = strdup(v)))
        return errf(err, errlen, "out of memory");
    return template_parse(&r->stream, v, false, err, errlen, "stream");
}

static enum rmq_status
set_maxlen(struct bridge_rules *rs, struct rule *r, const char *v, char *err, size_t errlen)
{
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (!isdigit((unsigned char)*v) || *end || n > MAX_MAXLEN)
        return errf(err, errlen, "maxlen: '%s' is not a number from 0 (no trimming) to %llu", v,
                    MAX_MAXLEN);
    r->maxlen = n;
    return RMQ_OK;
}

static enum rmq_status
add_field(struct rule *r, const char *name, size_t len, char *err, size_t errlen)
{
    for (size_t f = 0; f < FIELD_COUNT; f++) {
        if (strlen(field_names[f]) != len || memcmp(field_names[f], name, len) != 0)
            continue;
        for (size_t k = 0; k < r->field_count; k++)
            if (r->fields[k] == (enum field)f)
                return errf(err, errlen, "fields: '%s' is listed twice", field_names[f]);
        r->fields[r->field_count++] = (enum field)f;
        return RMQ_OK;
    }
    return errf(err, errlen,
                "fields: unknown field '%.*s' (topic, device, client_id, node, qos, ts, payload)",
                (int)len, name);
}

static enum rmq_status
set_fields(struct bridge_rules *rs, struct rule *r, const char *v, char *err, size_t errlen)
{
    r->field_count = 0;
    for (const char *p = v;;) {
        size_t n = strcspn(p, ",+");
        if (n == 0)
            return errf(err, errlen, "fields: empty name in '%s'", v);
        if (add_field(r, p, n, err, errlen) != RMQ_OK)
            return RMQ_INVALID;
        if (!p[n])
            return RMQ_OK;
        p += n + 1;
    }
}

static enum rmq_status
set_dedup(struct bridge_rules *rs, struct rule *r, const char *v, char *err, size_t errlen)
{
    r->has_dedup = true;
    if (!(r->dedup_text = strdup(v)))
        return errf(err, errlen, "out of memory");
    return template_parse(&r->dedup, v, true, err, errlen, "dedup");
}

static enum rmq_status
set_window(struct bridge_rules *rs, struct rule *r, const char *v, char *err, size_t errlen)
{
    uint64_t ms;
    if (config_parse_duration_ms(v, &ms) != RMQ_OK || ms == 0 || ms > 31536000000ull)
        return errf(err, errlen, "window: '%s' is not a duration from 1ms to 365d (e.g. 10m, 1h)",
                    v);
    r->window_ms = ms;
    return RMQ_OK;
}

static enum rmq_status
set_on_bad_json(struct bridge_rules *rs, struct rule *r, const char *v, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(bad_json_names) / sizeof(bad_json_names[0]); i++) {
        if (strcmp(v, bad_json_names[i]) == 0) {
            r->on_bad_json = (enum bad_json)i;
            return RMQ_OK;
        }
    }
    return errf(err, errlen, "on-bad-json: '%s' is not plain, dead-letter or drop", v);
}

static enum rmq_status
set_filter(struct bridge_rules *rs, struct rule *r, const char *v, char *err, size_t errlen)
{
    size_t len = strlen(v);
    if (!topic_filter_valid(v, len))
        return errf(err, errlen, "'%s' is not a valid MQTT topic filter", v);
    if (!(r->filter = strdup(v)))
        return errf(err, errlen, "out of memory");
    r->filter_len = len;
    return RMQ_OK;
}

static const struct setting {
    const char *name;
    enum rmq_status (*set)(struct bridge_rules *rs, struct rule *r, const char *value, char *err,
                           size_t errlen);
} settings[] = {
    {"filter", set_filter},           {"stream", set_stream}, {"maxlen", set_maxlen},
    {"fields", set_fields},           {"dedup", set_dedup},   {"window", set_window},
    {"on-bad-json", set_on_bad_json},
};

enum {
    SETTING_FILTER,
    SETTING_STREAM,
    SETTING_MAXLEN,
    SETTING_FIELDS,
    SETTING_DEDUP,
    SETTING_WINDOW,
    SETTING_ON_BAD_JSON
};

/* Applies one NAME=VALUE token. */
static enum rmq_status
apply_token(struct bridge_rules *rs, struct rule *r, char *tok, char *err, size_t errlen)
{
    char *eq = strchr(tok, '=');
    if (!eq)
        return errf(err, errlen, "'%s' is not NAME=VALUE (the topic filter comes first)", tok);
    *eq = '\0';
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        if (strcmp(tok, settings[i].name) != 0)
            continue;
        if (r->seen & (1u << i))
            return errf(err, errlen, "%s= is given twice", tok);
        r->seen |= 1u << i;
        return settings[i].set(rs, r, eq + 1, err, errlen);
    }
    return errf(err, errlen,
                "unknown setting '%s' (stream, maxlen, fields, dedup, window, on-bad-json)", tok);
}

/* What the settings must agree on once all are read. */
static enum rmq_status
check_rule(const struct rule *r, bool one_token, char *err, size_t errlen)
{
    if (!r->filter)
        return errf(err, errlen, "no topic filter");
    if (!(r->seen & (1u << SETTING_STREAM)))
        return errf(err, errlen, "no stream=NAME%s",
                    one_token ? " (in RELAYMQ_BRIDGE commas separate rules: separate fields "
                                "with '+')"
                              : "");
    if ((r->seen & (1u << SETTING_WINDOW)) && !r->has_dedup)
        return errf(err, errlen, "window= needs dedup=");
    if ((r->seen & (1u << SETTING_ON_BAD_JSON)) && !(r->has_dedup && r->dedup.uses_json))
        return errf(err, errlen, "on-bad-json= needs a dedup= template with a {json.PATH} field");
    return RMQ_OK;
}

static void
rule_free(struct rule *r)
{
    free(r->filter);
    template_free(&r->stream);
    template_free(&r->dedup);
    free(r->stream_text);
    free(r->dedup_text);
}

static enum rmq_status
parse_rule(struct bridge_rules *rs, struct rule *r, const char *text, char *err, size_t errlen)
{
    *r = (struct rule){
        .maxlen = DEFAULT_MAXLEN, .window_ms = DEFAULT_WINDOW_MS, .on_bad_json = BAD_JSON_PLAIN};
    for (size_t f = 0; f < FIELD_COUNT; f++)
        r->fields[r->field_count++] = (enum field)f;
    char *copy = strdup(text);
    if (!copy)
        return errf(err, errlen, "out of memory");
    enum rmq_status st = RMQ_OK;
    size_t tokens = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " \t", &save); tok && st == RMQ_OK;
         tok = strtok_r(NULL, " \t", &save)) {
        if (tokens++ == 0 && strncmp(tok, "filter=", 7) != 0) {
            r->seen |= 1u << SETTING_FILTER;
            st = set_filter(rs, r, tok, err, errlen);
        } else {
            st = apply_token(rs, r, tok, err, errlen);
        }
    }
    free(copy);
    if (st == RMQ_OK && tokens == 0)
        st = errf(err, errlen, "empty rule");
    if (st == RMQ_OK)
        st = check_rule(r, tokens == 1, err, errlen);
    snprintf(r->maxlen_arg, sizeof(r->maxlen_arg), "%" PRIu64, r->maxlen);
    snprintf(r->window_arg, sizeof(r->window_arg), "%" PRIu64, r->window_ms);
    return st;
}

/* ---- the rule set ---- */

struct bridge_rules *
bridge_rules_parse(const char *const *texts, size_t n, const struct bridge_options *opts, char *err,
                   size_t errlen)
{
    struct bridge_rules *rs = calloc(1, sizeof(*rs));
    if (!rs || !(rs->rules = calloc(n ? n : 1, sizeof(*rs->rules))))
        goto nomem;
    const char *prefix = opts->prefix ? opts->prefix : "";
    if (!(rs->prefix = strdup(prefix)))
        goto nomem;
    if (opts->dead_letter && *opts->dead_letter)
        rs->dead_letter = strdup(opts->dead_letter);
    else if (asprintf(&rs->dead_letter, "%sbridge:dead-letter", prefix) < 0)
        rs->dead_letter = NULL;
    if (!rs->dead_letter)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        char why[384] = "";
        enum rmq_status st = parse_rule(rs, &rs->rules[i], texts[i], why, sizeof(why));
        rs->count++; /* freed with the set, also when it failed half-way */
        if (st != RMQ_OK) {
            errf(err, errlen, "bridge rule %zu '%s': %s", i + 1, texts[i], why);
            bridge_rules_free(rs);
            return NULL;
        }
    }
    return rs;
nomem:
    errf(err, errlen, "bridge: out of memory");
    bridge_rules_free(rs);
    return NULL;
}

void
bridge_rules_free(struct bridge_rules *rs)
{
    if (!rs)
        return;
    for (size_t i = 0; i < rs->count; i++)
        rule_free(&rs->rules[i]);
    free(rs->rules);
    free(rs->prefix);
    free(rs->dead_letter);
    free(rs);
}

size_t
bridge_rules_count(const struct bridge_rules *rs)
{
    return rs ? rs->count : 0;
}

const char *
bridge_dead_letter(const struct bridge_rules *rs)
{
    return rs->dead_letter;
}

void
bridge_rule_describe(const struct bridge_rules *rs, size_t i, char *out, size_t len)
{
    const struct rule *r = &rs->rules[i];
    char fields[128] = "";
    size_t o = 0;
    for (size_t k = 0; k < r->field_count && o < sizeof(fields); k++)
        o += (size_t)snprintf(fields + o, sizeof(fields) - o, "%s%s", k ? "," : "",
                              field_names[r->fields[k]]);
    int n = snprintf(out, len, "%s -> stream %s, maxlen ~%" PRIu64 "%s, fields %s", r->filter,
                     r->stream_text, r->maxlen, r->maxlen ? "" : " (untrimmed)", fields);
    if (r->has_dedup && n >= 0 && (size_t)n < len)
        snprintf(out + n, len - (size_t)n, ", dedup %s for %" PRIu64 " ms%s%s", r->dedup_text,
                 r->window_ms, r->dedup.uses_json ? ", bad JSON: " : "",
                 r->dedup.uses_json ? bad_json_names[r->on_bad_json] : "");
}

void
bridge_json_release(struct bridge_json *json)
{
    json_decref(json->doc);
    *json = (struct bridge_json){0};
}

/* ---- building entries ---- */

#define MAX_ARGS 24
#define MAX_SEGS 6

/* One argument: the concatenation of up to MAX_SEGS segments, each bytes
 * or a template to expand. */
struct seg {
    const char *p;
    size_t len;
    const struct text_template *tpl;
};

struct arg {
    struct seg seg[MAX_SEGS];
    int nseg;
};

struct builder {
    struct arg args[MAX_ARGS];
    int argc;
    const struct vars *vars;
};

static struct arg *
push_arg(struct builder *b)
{
    struct arg *a = &b->args[b->argc++];
    a->nseg = 0;
    return a;
}

static void
push_seg(struct arg *a, const char *p, size_t len, const struct text_template *tpl)
{
    a->seg[a->nseg++] = (struct seg){.p = p, .len = len, .tpl = tpl};
}

static void
push_bytes(struct builder *b, const char *p, size_t len)
{
    push_seg(push_arg(b), p, len, NULL);
}

static void
push_str(struct builder *b, const char *s)
{
    push_bytes(b, s, strlen(s));
}

/* Lays the arguments out in one block: the entry, argv, lens, then the
 * bytes (each NUL-terminated). Templates were measured (and proved
 * expandable) by the caller. */
static struct bridge_entry *
build(struct builder *b, int nkeys, enum bridge_verdict verdict)
{
    size_t bytes = 0;
    for (int i = 0; i < b->argc; i++) {
        for (int s = 0; s < b->args[i].nseg; s++)
            bytes += b->args[i].seg[s].len;
        bytes++;
    }
    size_t head = sizeof(struct bridge_entry) + (size_t)b->argc * (sizeof(char *) + sizeof(size_t));
    struct bridge_entry *e = malloc(head + bytes);
    if (!e)
        return NULL;
    const char **argv = (const char **)(e + 1);
    size_t *lens = (size_t *)(argv + b->argc);
    char *w = (char *)(lens + b->argc);
    for (int i = 0; i < b->argc; i++) {
        argv[i] = w;
        for (int s = 0; s < b->args[i].nseg; s++) {
            const struct seg *sg = &b->args[i].seg[s];
            size_t n = sg->len;
            if (sg->tpl)
                expand(sg->tpl, b->vars, w, &n);
            else if (n)
                memcpy(w, sg->p, n);
            w += n;
        }
        lens[i] = (size_t)(w - argv[i]);
        *w++ = '\0';
    }
    *e = (struct bridge_entry){.verdict = verdict,
                               .dedup = nkeys == 2,
                               .nkeys = nkeys,
                               .argc = b->argc,
                               .argv = argv,
                               .lens = lens,
                               .stream = argv[0],
                               .size = head + bytes};
    return e;
}

/* The value of field f, pointing into m or into num. */
static void
field_value(const struct bridge_message *m, enum field f, char *num, size_t numlen, const char **p,
            size_t *len)
{
    static const char digits[] = "0123456789";
    switch (f) {
    case F_TOPIC:
        *p = m->topic, *len = m->topic_len;
        return;
    case F_DEVICE:
        *p = m->device, *len = strlen(m->device);
        return;
    case F_CLIENT_ID:
        *p = m->client_id, *len = strlen(m->client_id);
        return;
    case F_NODE:
        *p = m->node, *len = strlen(m->node);
        return;
    case F_QOS:
        *p = &digits[m->qos < 10 ? m->qos : 0], *len = 1;
        return;
    case F_TS:
        *len = (size_t)snprintf(num, numlen, "%" PRIu64, m->ts_ms);
        *p = num;
        return;
    case F_PAYLOAD:
        *p = (const char *)m->payload, *len = m->payload_len;
        return;
    case FIELD_COUNT:
        break;
    }
    *p = "", *len = 0;
}

static void
push_fields(struct builder *b, const struct bridge_message *m, const enum field *fields,
            size_t count, char *ts, size_t tslen)
{
    for (size_t k = 0; k < count; k++) {
        const char *p;
        size_t len;
        push_str(b, field_names[fields[k]]);
        field_value(m, fields[k], ts, tslen, &p, &len);
        push_bytes(b, p, len);
    }
}

/* An entry for the rule's own stream, with the dedup key when with_key. */
static struct bridge_entry *
build_write(const struct bridge_rules *rs, const struct rule *r, const struct vars *v,
            bool with_key, enum bridge_verdict verdict)
{
    struct builder b = {.vars = v};
    char ts[24];
    size_t stream_len, key_len = 0;
    expand(&r->stream, v, NULL, &stream_len);
    push_seg(push_arg(&b), NULL, stream_len, &r->stream);
    if (with_key) {
        expand(&r->dedup, v, NULL, &key_len);
        struct arg *a = push_arg(&b);
        push_seg(a, rs->prefix, strlen(rs->prefix), NULL);
        push_seg(a, "dedup:", 6, NULL);
        push_seg(a, NULL, stream_len, &r->stream);
        push_seg(a, ":", 1, NULL);
        push_seg(a, NULL, key_len, &r->dedup);
    }
    push_str(&b, r->maxlen_arg);
    push_str(&b, r->window_arg);
    push_fields(&b, v->m, r->fields, r->field_count, ts, sizeof(ts));
    return build(&b, with_key ? 2 : 1, verdict);
}

static struct bridge_entry *
build_dead_letter(const struct bridge_rules *rs, const struct rule *r, const struct vars *v,
                  const char *reason)
{
    static const enum field all[FIELD_COUNT] = {F_TOPIC, F_DEVICE, F_CLIENT_ID, F_NODE,
                                                F_QOS,   F_TS,     F_PAYLOAD};
    struct builder b = {.vars = v};
    char ts[24];
    size_t stream_len;
    push_str(&b, rs->dead_letter);
    push_str(&b, r->maxlen_arg);
    push_str(&b, "0");
    push_fields(&b, v->m, all, FIELD_COUNT, ts, sizeof(ts));
    push_str(&b, "reason");
    push_str(&b, reason);
    push_str(&b, "stream");
    expand(&r->stream, v, NULL, &stream_len);
    push_seg(push_arg(&b), NULL, stream_len, &r->stream);
    return build(&b, 1, BRIDGE_DEAD_LETTER);
}

enum bridge_verdict
bridge_rule_apply(const struct bridge_rules *rs, size_t i, const struct bridge_message *m,
                  struct bridge_json *json, struct bridge_entry **out)
{
    const struct rule *r = &rs->rules[i];
    *out = NULL;
    if (!topic_matches(r->filter, r->filter_len, m->topic, m->topic_len))
        return BRIDGE_NO_MATCH;
    struct vars v = {.m = m};
    const char *problem = NULL;
    if (r->has_dedup && r->dedup.uses_json) {
        if (!json->parsed) {
            json->doc = json_loadb((const char *)m->payload, m->payload_len, JSON_DECODE_ANY, NULL);
            json->parsed = true;
        }
        v.doc = json->doc;
        size_t len;
        if (!v.doc)
            problem = "invalid_json";
        else if (!expand(&r->dedup, &v, NULL, &len))
            problem = "missing_field";
    }
    enum bridge_verdict verdict = BRIDGE_WRITE;
    if (problem) {
        switch (r->on_bad_json) {
        case BAD_JSON_DROP:
            return BRIDGE_DROP_BAD_JSON;
        case BAD_JSON_DEAD_LETTER:
            *out = build_dead_letter(rs, r, &v, problem);
            return *out ? BRIDGE_DEAD_LETTER : BRIDGE_NOMEM;
        case BAD_JSON_PLAIN:
            verdict = BRIDGE_WRITE_PLAIN;
            break;
        }
    }
    *out = build_write(rs, r, &v, r->has_dedup && !problem, verdict);
    return *out ? verdict : BRIDGE_NOMEM;
}

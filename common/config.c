/* Table-driven configuration: fills a caller's settings struct from the
 * option table's defaults, a config file, the environment and the command
 * line (rising precedence). See config.h for the formats.
 *
 * Every value goes through one path: a source (defaults, one file, the
 * environment, the flags, or one config_set() call) names itself for error
 * messages, and set_value() dispatches on the option's type through
 * type_table[]. List semantics: the first value a source gives for a list
 * replaces what lower sources set; later values from the same source append.
 * Files and flags give one item per occurrence; defaults, environment
 * variables and config_set() give a comma-separated list (items trimmed,
 * empty items skipped, so an empty variable clears the list).
 *
 * The settings struct owns its strings and list items (heap copies); a value
 * that is set again frees the old one; config_free() releases them all. A
 * failed load may leave some options set: the caller reports the error and
 * calls config_free(). Not thread-safe; meant for start-up. */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Where values come from, for error messages and list semantics. */
struct source {
    char where[256]; /* "relaymq.conf:3: max-packet-size", "--listen", "RELAYMQ_LISTEN" */
    bool split;      /* list values are comma-separated */
    bool *seen;      /* per option: this source set it already (NULL: always replace) */
    char *err;
    size_t errlen;
};

union config_value {
    bool b;
    int64_t i;
    uint64_t u;
};

struct type_ops {
    const char *placeholder; /* shown by --help */
    const char *what;        /* "is not a size (e.g. 256k, 1m)" */
    enum rmq_status (*parse)(const char *text, union config_value *out);
    void (*format)(uint64_t value, char *buf, size_t len); /* bounds in messages */
    enum rmq_status (*set)(const struct config_option *opt, void *field, const char *text,
                           struct source *src, bool fresh);
};

static const struct type_ops type_table[];

/* ---- errors ---- */

static enum rmq_status fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum rmq_status
fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return RMQ_INVALID;
}

/* "<where>: <problem>" */
static enum rmq_status fail_value(struct source *src, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum rmq_status
fail_value(struct source *src, const char *fmt, ...)
{
    if (!src->err || !src->errlen)
        return RMQ_INVALID;
    int n = snprintf(src->err, src->errlen, "%s: ", src->where);
    if (n >= 0 && (size_t)n < src->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(src->err + n, src->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return RMQ_INVALID;
}

/* ---- parsing text ---- */

struct unit {
    const char *suffix;
    uint64_t factor;
};

/* Parses "<digits><suffix>" with a suffix from units (case-insensitive).
 * RMQ_INVALID when malformed, RMQ_LIMIT when the result overflows. */
static enum rmq_status
parse_with_unit(const char *text, const struct unit *units, size_t n_units, uint64_t *out)
{
    const char *p = text;
    uint64_t n = 0;
    bool too_big = false;
    if (!isdigit((unsigned char)*p))
        return RMQ_INVALID;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - digit) / 10)
            too_big = true;
        n = n * 10 + digit;
    }
    for (size_t i = 0; i < n_units; i++) {
        if (strcasecmp(p, units[i].suffix) != 0)
            continue;
        if (too_big || (n && units[i].factor > UINT64_MAX / n))
            return RMQ_LIMIT;
        *out = n * units[i].factor;
        return RMQ_OK;
    }
    return RMQ_INVALID;
}

static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", UINT64_C(1) << 10},
    {"kb", UINT64_C(1) << 10},
    {"m", UINT64_C(1) << 20},
    {"mb", UINT64_C(1) << 20},
    {"g", UINT64_C(1) << 30},
    {"gb", UINT64_C(1) << 30},
};

/* Largest first: format_duration picks the first that divides exactly. */
static const struct unit duration_units[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}, {"", 1000},
};

enum rmq_status
config_parse_size(const char *text, uint64_t *out)
{
    return parse_with_unit(text, size_units, sizeof(size_units) / sizeof(size_units[0]), out);
}

enum rmq_status
config_parse_duration_ms(const char *text, uint64_t *out)
{
    return parse_with_unit(text, duration_units, sizeof(duration_units) / sizeof(duration_units[0]),
                           out);
}

enum rmq_status
config_parse_bool(const char *text, bool *out)
{
    static const struct {
        const char *text;
        bool value;
    } words[] = {
        {"true", true},   {"yes", true}, {"on", true},   {"1", true},
        {"false", false}, {"no", false}, {"off", false}, {"0", false},
    };
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strcasecmp(text, words[i].text) == 0) {
            *out = words[i].value;
            return RMQ_OK;
        }
    }
    return RMQ_INVALID;
}

static enum rmq_status
parse_int(const char *text, union config_value *out)
{
    if (!isdigit((unsigned char)text[0]) &&
        !((text[0] == '-' || text[0] == '+') && isdigit((unsigned char)text[1])))
        return RMQ_INVALID;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*end)
        return RMQ_INVALID;
    if (errno == ERANGE)
        return RMQ_LIMIT;
    out->i = v;
    return RMQ_OK;
}

static enum rmq_status
parse_bool(const char *text, union config_value *out)
{
    return config_parse_bool(text, &out->b);
}

static enum rmq_status
parse_size(const char *text, union config_value *out)
{
    return config_parse_size(text, &out->u);
}

static enum rmq_status
parse_duration(const char *text, union config_value *out)
{
    return config_parse_duration_ms(text, &out->u);
}

static void
format_size(uint64_t value, char *buf, size_t len)
{
    static const char suffix[] = "gmk";
    for (unsigned i = 0; i < 3; i++) {
        uint64_t unit = UINT64_C(1) << (10 * (3 - i));
        if (value && value % unit == 0) {
            snprintf(buf, len, "%" PRIu64 "%c", value / unit, suffix[i]);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64, value);
}

static void
format_duration(uint64_t value, char *buf, size_t len)
{
    for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
        if (value && value % duration_units[i].factor == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", value / duration_units[i].factor,
                     duration_units[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64 "ms", value);
}

/* ---- setting values ---- */

static enum rmq_status
check_bounds(const struct config_option *opt, union config_value v, const char *text,
             struct source *src)
{
    if (opt->min == 0 && opt->max == 0)
        return RMQ_OK;
    if (opt->type == CONFIG_INT) {
        if (v.i < opt->min)
            return fail_value(src, "%" PRId64 " is below the minimum %" PRId64, v.i, opt->min);
        if (v.i > opt->max)
            return fail_value(src, "%" PRId64 " is above the maximum %" PRId64, v.i, opt->max);
        return RMQ_OK;
    }
    char bound[32];
    const struct type_ops *ops = &type_table[opt->type];
    if (opt->min > 0 && v.u < (uint64_t)opt->min) {
        ops->format((uint64_t)opt->min, bound, sizeof(bound));
        return fail_value(src, "'%s' is below the minimum %s", text, bound);
    }
    if (opt->max < 0 || v.u > (uint64_t)opt->max) {
        ops->format(opt->max < 0 ? 0 : (uint64_t)opt->max, bound, sizeof(bound));
        return fail_value(src, "'%s' is above the maximum %s", text, bound);
    }
    return RMQ_OK;
}

/* BOOL, INT, SIZE, DURATION: parse, check bounds, store. */
static enum rmq_status
set_scalar(const struct config_option *opt, void *field, const char *text, struct source *src,
           bool fresh)
{
    const struct type_ops *ops = &type_table[opt->type];
    union config_value v;
    enum rmq_status st = ops->parse(text, &v);
    if (st == RMQ_LIMIT)
        return fail_value(src, "'%s' is out of range", text);
    if (st != RMQ_OK)
        return fail_value(src, "'%s' %s", text, ops->what);
    if (opt->type != CONFIG_BOOL && check_bounds(opt, v, text, src) != RMQ_OK)
        return RMQ_INVALID;
    switch (opt->type) {
    case CONFIG_BOOL:
        *(bool *)field = v.b;
        break;
    case CONFIG_INT:
        *(int64_t *)field = v.i;
        break;
    default:
        *(uint64_t *)field = v.u;
        break;
    }
    return RMQ_OK;
}

static enum rmq_status
set_string(const struct config_option *opt, void *field, const char *text, struct source *src,
           bool fresh)
{
    char *copy = strdup(text);
    if (!copy)
        return fail_value(src, "out of memory");
    free(*(char **)field);
    *(char **)field = copy;
    return RMQ_OK;
}

static void
list_clear(struct config_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static enum rmq_status
list_append(struct config_list *list, const char *text, size_t len)
{
    char **items = realloc(list->items, (list->count + 1) * sizeof(*items));
    if (!items)
        return RMQ_NOMEM;
    list->items = items;
    items[list->count] = strndup(text, len);
    if (!items[list->count])
        return RMQ_NOMEM;
    list->count++;
    return RMQ_OK;
}

/* Appends the comma-separated items of text, trimmed, skipping empty ones. */
static enum rmq_status
list_append_split(struct config_list *list, const char *text)
{
    for (const char *p = text;; p++) {
        size_t len = strcspn(p, ",");
        const char *end = p + len;
        while (p < end && isspace((unsigned char)*p))
            p++;
        size_t trimmed = (size_t)(end - p);
        while (trimmed && isspace((unsigned char)p[trimmed - 1]))
            trimmed--;
        if (trimmed && list_append(list, p, trimmed) != RMQ_OK)
            return RMQ_NOMEM;
        if (!*end)
            return RMQ_OK;
        p = end;
    }
}

static enum rmq_status
set_list(const struct config_option *opt, void *field, const char *text, struct source *src,
         bool fresh)
{
    struct config_list *list = field;
    if (!src->split && !*text)
        return fail_value(src, "empty value");
    if (fresh)
        list_clear(list);
    enum rmq_status st =
        src->split ? list_append_split(list, text) : list_append(list, text, strlen(text));
    if (st != RMQ_OK)
        return fail_value(src, "out of memory");
    return RMQ_OK;
}

static const struct type_ops type_table[] = {
    [CONFIG_STRING] = {"VALUE", NULL, NULL, NULL, set_string},
    [CONFIG_BOOL] = {"[BOOL]", "is not a boolean (true/false, yes/no, on/off, 1/0)", parse_bool,
                     NULL, set_scalar},
    [CONFIG_INT] = {"N", "is not an integer", parse_int, NULL, set_scalar},
    [CONFIG_SIZE] = {"SIZE", "is not a size (e.g. 256k, 1m)", parse_size, format_size, set_scalar},
    [CONFIG_DURATION] = {"DURATION", "is not a duration (e.g. 500ms, 10s, 5m, 1h)", parse_duration,
                         format_duration, set_scalar},
    [CONFIG_LIST] = {"VALUE", NULL, NULL, NULL, set_list},
};

/* Applies text to option opts[idx] from src. */
static enum rmq_status
set_value(const struct config_option *opts, size_t idx, void *target, const char *text,
          struct source *src)
{
    bool fresh = !src->seen || !src->seen[idx];
    if (src->seen)
        src->seen[idx] = true;
    void *field = (char *)target + opts[idx].offset;
    return type_table[opts[idx].type].set(&opts[idx], field, text, src, fresh);
}

/* Index of the option called name[0..len), or n. */
static size_t
find_option(const struct config_option *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(opts[i].name, name, len) == 0 && opts[i].name[len] == '\0')
            return i;
    return n;
}

static void
source_init(struct source *src, bool split, char *err, size_t errlen)
{
    src->where[0] = '\0';
    src->split = split;
    src->seen = NULL;
    src->err = err;
    src->errlen = errlen;
}

/* ---- sources ---- */

static enum rmq_status
check_table(const struct config_option *opts, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const struct config_option *o = &opts[i];
        if (!o->name || (unsigned)o->type > CONFIG_LIST)
            return fail(err, errlen, "option table: entry %zu is malformed", i);
        if (find_option(opts, i, o->name, strlen(o->name)) != i)
            return fail(err, errlen, "option table: '%s' appears twice", o->name);
        if (o->min > o->max)
            return fail(err, errlen, "option table: '%s' has min > max", o->name);
    }
    return RMQ_OK;
}

enum rmq_status
config_defaults(const struct config_option *opts, size_t n, void *target, char *err, size_t errlen)
{
    if (check_table(opts, n, err, errlen) != RMQ_OK)
        return RMQ_INVALID;
    struct source src;
    source_init(&src, true, err, errlen);
    for (size_t i = 0; i < n; i++) {
        if (!opts[i].def)
            continue;
        snprintf(src.where, sizeof(src.where), "%s (default)", opts[i].name);
        if (set_value(opts, i, target, opts[i].def, &src) != RMQ_OK)
            return RMQ_INVALID;
    }
    return RMQ_OK;
}

enum rmq_status
config_set(const struct config_option *opts, size_t n, void *target, const char *name,
           const char *value, char *err, size_t errlen)
{
    size_t idx = find_option(opts, n, name, strlen(name));
    if (idx == n)
        return fail(err, errlen, "unknown option '%s'", name);
    struct source src;
    source_init(&src, true, err, errlen);
    snprintf(src.where, sizeof(src.where), "%s", name);
    return set_value(opts, idx, target, value, &src);
}

/* Strips a comment ('#' at the start or after white space) and surrounding
 * white space in place; returns the start of what is left. */
static char *
strip_line(char *line)
{
    for (char *p = line; *p; p++) {
        if (*p == '#' && (p == line || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    }
    while (isspace((unsigned char)*line))
        line++;
    size_t len = strlen(line);
    while (len && isspace((unsigned char)line[len - 1]))
        line[--len] = '\0';
    return line;
}

/* Applies one "name value" line of a config file. */
static enum rmq_status
apply_file_line(const struct config_option *opts, size_t n, void *target, char *line,
                const char *path, unsigned lineno, struct source *src)
{
    char *name = strip_line(line);
    if (!*name)
        return RMQ_OK;
    size_t name_len = strcspn(name, " \t");
    char *value = name + name_len;
    while (isspace((unsigned char)*value))
        value++;
    name[name_len] = '\0';
    size_t idx = find_option(opts, n, name, name_len);
    if (idx == n)
        return fail(src->err, src->errlen, "%s:%u: unknown option '%s'", path, lineno, name);
    snprintf(src->where, sizeof(src->where), "%s:%u: %s", path, lineno, name);
    if (!*value)
        return fail_value(src, "missing value");
    return set_value(opts, idx, target, value, src);
}

enum rmq_status
config_load_file(const struct config_option *opts, size_t n, void *target, const char *path,
                 char *err, size_t errlen)
{
    enum rmq_status st = RMQ_INVALID;
    char *line = NULL;
    size_t cap = 0;
    struct source src;
    source_init(&src, false, err, errlen);
    src.seen = calloc(n ? n : 1, sizeof(*src.seen));
    FILE *f = fopen(path, "r");
    if (!f) {
        fail(err, errlen, "cannot open config file '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (!src.seen) {
        fail(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    unsigned lineno = 0;
    while (getline(&line, &cap, f) >= 0) {
        if (apply_file_line(opts, n, target, line, path, ++lineno, &src) != RMQ_OK)
            goto fail;
    }
    if (ferror(f)) {
        fail(err, errlen, "cannot read config file '%s': %s", path, strerror(errno));
        goto fail;
    }
    st = RMQ_OK;
fail:
    if (f)
        fclose(f);
    free(line);
    free(src.seen);
    return st;
}

/* PREFIX + name upper-cased with dashes as underscores; false if too long. */
static bool
env_name(const char *prefix, const char *name, char *buf, size_t len)
{
    size_t plen = strlen(prefix), nlen = strlen(name);
    if (plen + nlen + 1 > len)
        return false;
    memcpy(buf, prefix, plen);
    for (size_t i = 0; i <= nlen; i++)
        buf[plen + i] = name[i] == '-' ? '_' : (char)toupper((unsigned char)name[i]);
    return true;
}

enum rmq_status
config_load_env(const struct config_option *opts, size_t n, void *target, const char *prefix,
                char *err, size_t errlen)
{
    struct source src;
    source_init(&src, true, err, errlen);
    for (size_t i = 0; i < n; i++) {
        if (!env_name(prefix, opts[i].name, src.where, sizeof(src.where)))
            return fail(err, errlen, "%s%s: name too long", prefix, opts[i].name);
        const char *value = getenv(src.where);
        if (value && set_value(opts, i, target, value, &src) != RMQ_OK)
            return RMQ_INVALID;
    }
    return RMQ_OK;
}

static bool
is_flag(const char *arg)
{
    return strncmp(arg, "--", 2) == 0;
}

/* "--config FILE" or "--config=FILE": true, with the file in *path (NULL
 * when the value is missing) and *used set to the arguments it takes. */
static bool
config_flag(int argc, char **argv, int i, const char **path, int *used)
{
    if (strcmp(argv[i], "--config") == 0) {
        *path = i + 1 < argc && !is_flag(argv[i + 1]) ? argv[i + 1] : NULL;
        *used = *path ? 2 : 1;
        return true;
    }
    if (strncmp(argv[i], "--config=", 9) == 0) {
        *path = argv[i] + 9;
        *used = 1;
        return true;
    }
    return false;
}

/* Finds the one --config in argv, if any. */
static enum rmq_status
find_config_path(int argc, char **argv, int first, const char **path, char *err, size_t errlen)
{
    *path = NULL;
    for (int i = first; i < argc; i++) {
        const char *found;
        int used;
        if (!config_flag(argc, argv, i, &found, &used))
            continue;
        if (!found || !*found)
            return fail(err, errlen, "--config: missing value");
        if (*path)
            return fail(err, errlen, "--config: given more than once");
        *path = found;
        i += used - 1;
    }
    return RMQ_OK;
}

/* Applies the flag at argv[*i] (not --config), advancing *i past a value it
 * consumes. */
static enum rmq_status
apply_flag(const struct config_option *opts, size_t n, void *target, int argc, char **argv, int *i,
           struct source *src)
{
    const char *arg = argv[*i];
    if (!is_flag(arg) || arg[2] == '\0')
        return fail(src->err, src->errlen, "unexpected argument '%s'", arg);
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    size_t idx = find_option(opts, n, name, len);
    if (idx == n)
        return fail(src->err, src->errlen, "unknown option '--%.*s'", (int)len, name);
    snprintf(src->where, sizeof(src->where), "--%s", opts[idx].name);
    const char *value;
    if (eq)
        value = eq + 1;
    else if (*i + 1 < argc && !is_flag(argv[*i + 1]))
        value = argv[++*i];
    else if (opts[idx].type == CONFIG_BOOL)
        value = "true";
    else
        return fail_value(src, "missing value");
    return set_value(opts, idx, target, value, src);
}

static enum rmq_status
load_flags(const struct config_option *opts, size_t n, void *target, int argc, char **argv,
           int first, char *err, size_t errlen)
{
    enum rmq_status st = RMQ_INVALID;
    struct source src;
    source_init(&src, false, err, errlen);
    src.seen = calloc(n ? n : 1, sizeof(*src.seen));
    if (!src.seen) {
        fail(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = first; i < argc; i++) {
        const char *path;
        int used;
        if (config_flag(argc, argv, i, &path, &used)) {
            i += used - 1;
            continue;
        }
        if (apply_flag(opts, n, target, argc, argv, &i, &src) != RMQ_OK)
            goto fail;
    }
    st = RMQ_OK;
fail:
    free(src.seen);
    return st;
}

enum rmq_status
config_load_args(const struct config_option *opts, size_t n, void *target, int argc, char **argv,
                 int first, const char *env_prefix, char *err, size_t errlen)
{
    const char *path;
    if (find_config_path(argc, argv, first, &path, err, errlen) != RMQ_OK)
        return RMQ_INVALID;
    if (path && config_load_file(opts, n, target, path, err, errlen) != RMQ_OK)
        return RMQ_INVALID;
    if (env_prefix && config_load_env(opts, n, target, env_prefix, err, errlen) != RMQ_OK)
        return RMQ_INVALID;
    return load_flags(opts, n, target, argc, argv, first, err, errlen);
}

/* ---- help and cleanup ---- */

void
config_print_help(const struct config_option *opts, size_t n, FILE *out)
{
    size_t width = 0;
    for (size_t i = 0; i < n; i++) {
        size_t w = strlen(opts[i].name) + 1 + strlen(type_table[opts[i].type].placeholder);
        if (w > width)
            width = w;
    }
    for (size_t i = 0; i < n; i++) {
        const char *ph = type_table[opts[i].type].placeholder;
        int pad = (int)(width - strlen(opts[i].name) - 1 - strlen(ph));
        fprintf(out, "  --%s %s%*s  %s", opts[i].name, ph, pad, "",
                opts[i].help ? opts[i].help : "");
        if (opts[i].def)
            fprintf(out, " (default: %s)", *opts[i].def ? opts[i].def : "\"\"");
        fputc('\n', out);
    }
}

void
config_free(const struct config_option *opts, size_t n, void *target)
{
    for (size_t i = 0; i < n; i++) {
        void *field = (char *)target + opts[i].offset;
        if (opts[i].type == CONFIG_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (opts[i].type == CONFIG_LIST) {
            list_clear(field);
        }
    }
}

/* Unit tests for common/config.c: parsing of each type and its errors,
 * config files (written to a temporary directory), environment variables,
 * command-line forms, precedence defaults < file < env < flags, list
 * semantics, bounds, --help layout, and that nothing leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"

struct settings {
    struct config_list listen;
    bool allow_anonymous;
    char *node_id;
    int64_t max_inflight;
    int64_t offset;
    uint64_t max_packet_size;
    uint64_t connect_timeout_ms;
    uint64_t interval_ms;
    struct config_list tag;
    char *password;
};

#define OPT(name, type, def, field, lo, hi, help)                                                  \
    {                                                                                              \
        name, type, def, help, offsetof(struct settings, field), lo, hi                            \
    }

static const struct config_option opts[] = {
    OPT("listen", CONFIG_LIST, "127.0.0.1:1883", listen, 0, 0, "listener HOST:PORT (repeatable)"),
    OPT("allow-anonymous", CONFIG_BOOL, "false", allow_anonymous, 0, 0, "accept anyone"),
    OPT("node-id", CONFIG_STRING, "relaymq", node_id, 0, 0, "this node's name"),
    OPT("max-inflight", CONFIG_INT, "20", max_inflight, 1, 65535, "QoS 1/2 window"),
    OPT("offset", CONFIG_INT, "-5", offset, 0, 0, "an unbounded integer"),
    OPT("max-packet-size", CONFIG_SIZE, "1m", max_packet_size, 16, 268435455, "largest packet"),
    OPT("connect-timeout", CONFIG_DURATION, "10s", connect_timeout_ms, 100, 3600000,
        "time to send CONNECT"),
    OPT("interval", CONFIG_DURATION, "0", interval_ms, 0, 0, "an unbounded duration"),
    OPT("tag", CONFIG_LIST, NULL, tag, 0, 0, "a list without default"),
    OPT("password", CONFIG_STRING, NULL, password, 0, 0, "a string without default"),
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static char tmpdir[64];
static char err[512];

/* Each test starts from defaults on a zeroed struct and a clean environment. */
static int
setup(void **state)
{
    static const char *const vars[] = {
        "RELAYMQ_LISTEN",          "RELAYMQ_ALLOW_ANONYMOUS", "RELAYMQ_NODE_ID",
        "RELAYMQ_MAX_INFLIGHT",    "RELAYMQ_OFFSET",          "RELAYMQ_MAX_PACKET_SIZE",
        "RELAYMQ_CONNECT_TIMEOUT", "RELAYMQ_INTERVAL",        "RELAYMQ_TAG",
        "RELAYMQ_PASSWORD",
    };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    struct settings *s = calloc(1, sizeof(*s));
    if (!s || config_defaults(opts, N_OPTS, s, err, sizeof(err)) != RMQ_OK)
        return -1;
    *state = s;
    err[0] = '\0';
    return 0;
}

static int
teardown(void **state)
{
    config_free(opts, N_OPTS, *state);
    free(*state);
    return 0;
}

static int
group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/relaymq.conf", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

/* Writes text to <tmpdir>/relaymq.conf and returns the path (static buffer). */
static const char *
write_conf(const char *text)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/relaymq.conf", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void
assert_list(const struct config_list *list, const char *const *want, size_t n)
{
    assert_int_equal(list->count, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(list->items[i], want[i]);
}

/* ---- parsing helpers ---- */

struct number_case {
    const char *text;
    enum rmq_status status;
    uint64_t value;
};

static void
test_parse_size(void **state)
{
    static const struct number_case cases[] = {
        {"0", RMQ_OK, 0},
        {"1024", RMQ_OK, 1024},
        {"64k", RMQ_OK, 64 << 10},
        {"256K", RMQ_OK, 256 << 10},
        {"10m", RMQ_OK, 10 << 20},
        {"10M", RMQ_OK, 10 << 20},
        {"1g", RMQ_OK, 1 << 30},
        {"3G", RMQ_OK, UINT64_C(3) << 30},
        {"2kb", RMQ_OK, 2048},
        {"1MB", RMQ_OK, 1 << 20},
        {"7b", RMQ_OK, 7},
        {"17179869183g", RMQ_OK, UINT64_C(17179869183) << 30},
        {"18446744073709551615", RMQ_OK, UINT64_MAX},
        {"17179869184g", RMQ_LIMIT, 0},
        {"18446744073709551616", RMQ_LIMIT, 0},
        {"", RMQ_INVALID, 0},
        {"k", RMQ_INVALID, 0},
        {"12q", RMQ_INVALID, 0},
        {"-1", RMQ_INVALID, 0},
        {"+1", RMQ_INVALID, 0},
        {"1.5m", RMQ_INVALID, 0},
        {" 1k", RMQ_INVALID, 0},
        {"1k ", RMQ_INVALID, 0},
        {"1 k", RMQ_INVALID, 0},
        {"1kk", RMQ_INVALID, 0},
        {"1t", RMQ_INVALID, 0},
        {"0x10", RMQ_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        enum rmq_status st = config_parse_size(cases[i].text, &v);
        if (st != cases[i].status)
            fail_msg("size '%s': status %d, want %d", cases[i].text, st, cases[i].status);
        assert_int_equal(v, st == RMQ_OK ? cases[i].value : 12345);
    }
}

static void
test_parse_duration(void **state)
{
    static const struct number_case cases[] = {
        {"500ms", RMQ_OK, 500},
        {"0", RMQ_OK, 0},
        {"10", RMQ_OK, 10000},
        {"10s", RMQ_OK, 10000},
        {"5m", RMQ_OK, 300000},
        {"1h", RMQ_OK, 3600000},
        {"2d", RMQ_OK, 172800000},
        {"1MS", RMQ_OK, 1},
        {"3S", RMQ_OK, 3000},
        {"18446744073709551615ms", RMQ_OK, UINT64_MAX},
        {"18446744073709551615", RMQ_LIMIT, 0},
        {"213503982335d", RMQ_LIMIT, 0},
        {"", RMQ_INVALID, 0},
        {"ms", RMQ_INVALID, 0},
        {"10x", RMQ_INVALID, 0},
        {"1.5s", RMQ_INVALID, 0},
        {"-1s", RMQ_INVALID, 0},
        {"10 s", RMQ_INVALID, 0},
        {"1w", RMQ_INVALID, 0},
        {"1h30m", RMQ_INVALID, 0},
        {"s10", RMQ_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        enum rmq_status st = config_parse_duration_ms(cases[i].text, &v);
        if (st != cases[i].status)
            fail_msg("duration '%s': status %d, want %d", cases[i].text, st, cases[i].status);
        assert_int_equal(v, st == RMQ_OK ? cases[i].value : 12345);
    }
}

static void
test_parse_bool(void **state)
{
    static const char *const yes[] = {"true", "TRUE", "yes", "Yes", "on", "ON", "1"};
    static const char *const no[] = {"false", "False", "no", "NO", "off", "Off", "0"};
    static const char *const bad[] = {"", "2", "y", "n", "truee", "nope", " true", "true "};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        bool v = false;
        assert_int_equal(config_parse_bool(yes[i], &v), RMQ_OK);
        assert_true(v);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        bool v = true;
        assert_int_equal(config_parse_bool(no[i], &v), RMQ_OK);
        assert_false(v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bool v = true;
        assert_int_equal(config_parse_bool(bad[i], &v), RMQ_INVALID);
        assert_true(v);
    }
}

/* ---- defaults and config_set ---- */

static void
test_defaults(void **state)
{
    struct settings *s = *state;
    static const char *const listen[] = {"127.0.0.1:1883"};
    assert_list(&s->listen, listen, 1);
    assert_false(s->allow_anonymous);
    assert_string_equal(s->node_id, "relaymq");
    assert_int_equal(s->max_inflight, 20);
    assert_int_equal(s->offset, -5);
    assert_int_equal(s->max_packet_size, 1 << 20);
    assert_int_equal(s->connect_timeout_ms, 10000);
    assert_int_equal(s->interval_ms, 0);
    assert_int_equal(s->tag.count, 0);
    assert_null(s->tag.items);
    assert_null(s->password);
}

struct set_case {
    const char *name, *value;
    const char *error; /* NULL: accepted */
};

static void
test_set_values_and_errors(void **state)
{
    struct settings *s = *state;
    static const struct set_case cases[] = {
        {"max-inflight", "1", NULL},
        {"max-inflight", "65535", NULL},
        {"max-inflight", "0", "max-inflight: 0 is below the minimum 1"},
        {"max-inflight", "-3", "max-inflight: -3 is below the minimum 1"},
        {"max-inflight", "65536", "max-inflight: 65536 is above the maximum 65535"},
        {"max-inflight", "abc", "max-inflight: 'abc' is not an integer"},
        {"max-inflight", "12abc", "max-inflight: '12abc' is not an integer"},
        {"max-inflight", "", "max-inflight: '' is not an integer"},
        {"max-inflight", "99999999999999999999",
         "max-inflight: '99999999999999999999' is out of range"},
        {"offset", "-9223372036854775808", NULL},
        {"max-packet-size", "16", NULL},
        {"max-packet-size", "12q", "max-packet-size: '12q' is not a size (e.g. 256k, 1m)"},
        {"max-packet-size", "8", "max-packet-size: '8' is below the minimum 16"},
        {"max-packet-size", "1g", "max-packet-size: '1g' is above the maximum 268435455"},
        {"max-packet-size", "99999999999g", "max-packet-size: '99999999999g' is out of range"},
        {"connect-timeout", "100ms", NULL},
        {"connect-timeout", "50ms", "connect-timeout: '50ms' is below the minimum 100ms"},
        {"connect-timeout", "2h", "connect-timeout: '2h' is above the maximum 1h"},
        {"connect-timeout", "soon",
         "connect-timeout: 'soon' is not a duration (e.g. 500ms, 10s, 5m, 1h)"},
        {"interval", "365d", NULL},
        {"allow-anonymous", "maybe",
         "allow-anonymous: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)"},
        {"allow-anonymous", "on", NULL},
        {"nope", "x", "unknown option 'nope'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct settings before = *s;
        err[0] = '\0';
        enum rmq_status st =
            config_set(opts, N_OPTS, s, cases[i].name, cases[i].value, err, sizeof(err));
        if (!cases[i].error) {
            if (st != RMQ_OK)
                fail_msg("%s %s: %s", cases[i].name, cases[i].value, err);
            continue;
        }
        assert_int_equal(st, RMQ_INVALID);
        assert_string_equal(err, cases[i].error);
        assert_memory_equal(&before, s, sizeof(before)); /* failed sets change nothing */
    }
    assert_int_equal(s->max_inflight, 65535);
    assert_int_equal(s->offset, INT64_MIN);
    assert_int_equal(s->max_packet_size, 16);
    assert_int_equal(s->connect_timeout_ms, 100);
    assert_int_equal(s->interval_ms, UINT64_C(365) * 86400000);
    assert_true(s->allow_anonymous);
}

/* Strings and lists set again free what they held (the sanitizer checks). */
static void
test_set_again_replaces_without_leaking(void **state)
{
    struct settings *s = *state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(config_set(opts, N_OPTS, s, "node-id", "a", err, sizeof(err)), RMQ_OK);
        assert_int_equal(config_set(opts, N_OPTS, s, "password", "", err, sizeof(err)), RMQ_OK);
        assert_int_equal(config_set(opts, N_OPTS, s, "listen", " x:1 , y:2 ,", err, sizeof(err)),
                         RMQ_OK);
    }
    static const char *const listen[] = {"x:1", "y:2"};
    assert_list(&s->listen, listen, 2);
    assert_string_equal(s->node_id, "a");
    assert_string_equal(s->password, "");
    config_free(opts, N_OPTS, s);
    assert_null(s->node_id);
    assert_null(s->listen.items);
    assert_int_equal(s->listen.count, 0);
    config_free(opts, N_OPTS, s); /* twice is harmless */
}

static void
test_bad_table_and_defaults(void **state)
{
    struct settings t = {0};
    struct config_option twice[] = {opts[2], opts[2]};
    assert_int_equal(config_defaults(twice, 2, &t, err, sizeof(err)), RMQ_INVALID);
    assert_string_equal(err, "option table: 'node-id' appears twice");
    struct config_option inverted = opts[3];
    inverted.min = 10;
    inverted.max = 5;
    assert_int_equal(config_defaults(&inverted, 1, &t, err, sizeof(err)), RMQ_INVALID);
    assert_string_equal(err, "option table: 'max-inflight' has min > max");
    struct config_option bad_default = opts[5];
    bad_default.def = "12q";
    assert_int_equal(config_defaults(&bad_default, 1, &t, err, sizeof(err)), RMQ_INVALID);
    assert_string_equal(err, "max-packet-size (default): '12q' is not a size (e.g. 256k, 1m)");
}

/* ---- config file ---- */

static void
test_file(void **state)
{
    struct settings *s = *state;
    const char *path = write_conf("# RelayMQ test config\n"
                                  "\n"
                                  "   # indented comment\n"
                                  "node-id edge-1   # trailing comment\n"
                                  "password a#b  c\n"
                                  "listen 0.0.0.0:1883\r\n"
                                  "\tlisten\t[::]:1883  \n"
                                  "max-packet-size 256K\n"
                                  "connect-timeout 500ms\n"
                                  "allow-anonymous yes\n"
                                  "max-inflight 30\n"
                                  "max-inflight 31\n"
                                  "tag x"); /* no final newline */
    assert_int_equal(config_load_file(opts, N_OPTS, s, path, err, sizeof(err)), RMQ_OK);
    static const char *const listen[] = {"0.0.0.0:1883", "[::]:1883"};
    static const char *const tag[] = {"x"};
    assert_list(&s->listen, listen, 2);
    assert_list(&s->tag, tag, 1);
    assert_string_equal(s->node_id, "edge-1");
    assert_string_equal(s->password, "a#b  c");
    assert_int_equal(s->max_packet_size, 256 << 10);
    assert_int_equal(s->connect_timeout_ms, 500);
    assert_true(s->allow_anonymous);
    assert_int_equal(s->max_inflight, 31);
    assert_int_equal(s->offset, -5); /* untouched */

    /* A second file is a new source: its lists replace, not extend. */
    path = write_conf("listen 10.0.0.1:1883\n");
    assert_int_equal(config_load_file(opts, N_OPTS, s, path, err, sizeof(err)), RMQ_OK);
    static const char *const listen2[] = {"10.0.0.1:1883"};
    assert_list(&s->listen, listen2, 1);
    assert_list(&s->tag, tag, 1);
}

struct file_case {
    const char *text;
    const char *error; /* after "<path>:" */
};

static void
test_file_errors(void **state)
{
    struct settings *s = *state;
    static const struct file_case cases[] = {
        {"# c\n\nnode-id a\n\n\n\n\n\n\n\n\nlisen 0.0.0.0:1883\n", "12: unknown option 'lisen'"},
        {"node-id a\n\nmax-packet-size 12q\n",
         "3: max-packet-size: '12q' is not a size (e.g. 256k, 1m)"},
        {"max-inflight 0\n", "1: max-inflight: 0 is below the minimum 1"},
        {"node-id\n", "1: node-id: missing value"},
        {"allow-anonymous   # no value\n", "1: allow-anonymous: missing value"},
        {"--listen x\n", "1: unknown option '--listen'"},
        {"listen=x\n", "1: unknown option 'listen=x'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = write_conf(cases[i].text);
        char want[300];
        snprintf(want, sizeof(want), "%s:%s", path, cases[i].error);
        assert_int_equal(config_load_file(opts, N_OPTS, s, path, err, sizeof(err)), RMQ_INVALID);
        assert_string_equal(err, want);
    }
}

static void
test_unreadable_file(void **state)
{
    struct settings *s = *state;
    char want[300];
    const char *missing = "/nonexistent-relaymq-dir/relaymq.conf";
    assert_int_equal(config_load_file(opts, N_OPTS, s, missing, err, sizeof(err)), RMQ_INVALID);
    snprintf(want, sizeof(want), "cannot open config file '%s': %s", missing, strerror(ENOENT));
    assert_string_equal(err, want);

    assert_int_equal(config_load_file(opts, N_OPTS, s, tmpdir, err, sizeof(err)), RMQ_INVALID);
    snprintf(want, sizeof(want), "cannot read config file '%s': %s", tmpdir, strerror(EISDIR));
    assert_string_equal(err, want);
}

/* ---- environment ---- */

static void
test_env(void **state)
{
    struct settings *s = *state;
    setenv("RELAYMQ_MAX_PACKET_SIZE", "64k", 1);
    setenv("RELAYMQ_LISTEN", "a:1, b:2,,", 1);
    setenv("RELAYMQ_ALLOW_ANONYMOUS", "yes", 1);
    setenv("RELAYMQ_NODE_ID", "from env", 1);
    setenv("OTHER_MAX_INFLIGHT", "7", 1);
    assert_int_equal(config_load_env(opts, N_OPTS, s, "RELAYMQ_", err, sizeof(err)), RMQ_OK);
    static const char *const listen[] = {"a:1", "b:2"};
    assert_list(&s->listen, listen, 2);
    assert_int_equal(s->max_packet_size, 64 << 10);
    assert_true(s->allow_anonymous);
    assert_string_equal(s->node_id, "from env");
    assert_int_equal(s->max_inflight, 20);

    assert_int_equal(config_load_env(opts, N_OPTS, s, "OTHER_", err, sizeof(err)), RMQ_OK);
    assert_int_equal(s->max_inflight, 7);
    unsetenv("OTHER_MAX_INFLIGHT");

    /* An empty variable empties a list. */
    setenv("RELAYMQ_LISTEN", "", 1);
    assert_int_equal(config_load_env(opts, N_OPTS, s, "RELAYMQ_", err, sizeof(err)), RMQ_OK);
    assert_int_equal(s->listen.count, 0);
}

static void
test_env_errors(void **state)
{
    struct settings *s = *state;
    setenv("RELAYMQ_MAX_INFLIGHT", "0", 1);
    assert_int_equal(config_load_env(opts, N_OPTS, s, "RELAYMQ_", err, sizeof(err)), RMQ_INVALID);
    assert_string_equal(err, "RELAYMQ_MAX_INFLIGHT: 0 is below the minimum 1");
    unsetenv("RELAYMQ_MAX_INFLIGHT");
    setenv("RELAYMQ_CONNECT_TIMEOUT", "10q", 1);
    assert_int_equal(config_load_env(opts, N_OPTS, s, "RELAYMQ_", err, sizeof(err)), RMQ_INVALID);
    assert_string_equal(
        err, "RELAYMQ_CONNECT_TIMEOUT: '10q' is not a duration (e.g. 500ms, 10s, 5m, 1h)");
}

/* ---- command line ---- */

static enum rmq_status
load_args(struct settings *s, char **argv, const char *prefix)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    err[0] = '\0';
    return config_load_args(opts, N_OPTS, s, argc, argv, 1, prefix, err, sizeof(err));
}

static void
test_args_forms(void **state)
{
    struct settings *s = *state;
    char *argv[] = {"relaymq",
                    "--node-id",
                    "n1",
                    "--max-packet-size=2m",
                    "--allow-anonymous",
                    "--listen",
                    "x:1",
                    "--listen=y:2",
                    "--offset",
                    "-7",
                    "--password=",
                    "--tag",
                    "t=1",
                    NULL};
    assert_int_equal(load_args(s, argv, NULL), RMQ_OK);
    static const char *const listen[] = {"x:1", "y:2"};
    static const char *const tag[] = {"t=1"};
    assert_list(&s->listen, listen, 2);
    assert_list(&s->tag, tag, 1);
    assert_string_equal(s->node_id, "n1");
    assert_int_equal(s->max_packet_size, 2 << 20);
    assert_true(s->allow_anonymous);
    assert_int_equal(s->offset, -7);
    assert_string_equal(s->password, "");
}

struct bool_case {
    char *argv[4];
    bool want;
};

/* A bare bool is true before another flag or at the end; otherwise it takes the value. */
static void
test_args_bool_forms(void **state)
{
    struct settings *s = *state;
    static const struct bool_case cases[] = {
        {{"relaymq", "--allow-anonymous", NULL}, true},
        {{"relaymq", "--allow-anonymous", "--node-id", "x"}, true},
        {{"relaymq", "--allow-anonymous", "false", NULL}, false},
        {{"relaymq", "--allow-anonymous=off", NULL}, false},
        {{"relaymq", "--allow-anonymous=yes", NULL}, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        s->allow_anonymous = !cases[i].want;
        char *argv[5] = {0};
        memcpy(argv, cases[i].argv, sizeof(cases[i].argv));
        assert_int_equal(load_args(s, argv, NULL), RMQ_OK);
        assert_int_equal(s->allow_anonymous, cases[i].want);
    }
}

struct args_case {
    char *argv[6];
    const char *error;
};

static void
test_args_errors(void **state)
{
    struct settings *s = *state;
    static const struct args_case cases[] = {
        {{"relaymq", "--listen", NULL}, "--listen: missing value"},
        {{"relaymq", "--listen", "--node-id", "x", NULL}, "--listen: missing value"},
        {{"relaymq", "--listen="}, "--listen: empty value"},
        {{"relaymq", "--foo", NULL}, "unknown option '--foo'"},
        {{"relaymq", "--foo=bar", NULL}, "unknown option '--foo'"},
        {{"relaymq", "--max-inflight", "0", NULL}, "--max-inflight: 0 is below the minimum 1"},
        {{"relaymq", "--max-packet-size=12q"},
         "--max-packet-size: '12q' is not a size (e.g. 256k, 1m)"},
        {{"relaymq", "stray", NULL}, "unexpected argument 'stray'"},
        {{"relaymq", "--", NULL}, "unexpected argument '--'"},
        {{"relaymq", "-v", NULL}, "unexpected argument '-v'"},
        {{"relaymq", "--allow-anonymous", "maybe", NULL},
         "--allow-anonymous: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)"},
        {{"relaymq", "--node-id", "a", "--config", NULL}, "--config: missing value"},
        {{"relaymq", "--config=", NULL}, "--config: missing value"},
        {{"relaymq", "--config", "a", "--config=b", NULL}, "--config: given more than once"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[7] = {0};
        memcpy(argv, cases[i].argv, sizeof(cases[i].argv));
        assert_int_equal(load_args(s, argv, NULL), RMQ_INVALID);
        assert_string_equal(err, cases[i].error);
    }
}

/* defaults < file < environment < flags, wherever --config sits. */
static void
test_precedence(void **state)
{
    struct settings *s = *state;
    char *path = strdup(write_conf("node-id from-file\n"
                                   "max-inflight 30\n"
                                   "max-packet-size 2m\n"
                                   "listen f1\n"
                                   "listen f2\n"
                                   "tag t1\n"
                                   "connect-timeout 20s\n"));
    setenv("RELAYMQ_MAX_INFLIGHT", "40", 1);
    setenv("RELAYMQ_LISTEN", "e1,e2", 1);
    setenv("RELAYMQ_CONNECT_TIMEOUT", "30s", 1);
    char *argv[] = {"relaymq", "--max-inflight",    "50",  "--tag", "x", "--config", path,
                    "--tag=y", "--connect-timeout", "40s", NULL};
    assert_int_equal(load_args(s, argv, "RELAYMQ_"), RMQ_OK);
    static const char *const listen[] = {"e1", "e2"};
    static const char *const tag[] = {"x", "y"};
    assert_string_equal(s->node_id, "from-file");  /* file over default */
    assert_int_equal(s->max_packet_size, 2 << 20); /* file over default */
    assert_list(&s->listen, listen, 2);            /* env replaces the file's list */
    assert_list(&s->tag, tag, 2);                  /* flags replace it, then accumulate */
    assert_int_equal(s->max_inflight, 50);         /* flag over env over file */
    assert_int_equal(s->connect_timeout_ms, 40000);
    assert_int_equal(s->allow_anonymous, false); /* default */

    /* Without a prefix the environment is not read. */
    config_free(opts, N_OPTS, s);
    memset(s, 0, sizeof(*s));
    assert_int_equal(config_defaults(opts, N_OPTS, s, err, sizeof(err)), RMQ_OK);
    char *argv2[] = {"relaymq", "--config", path, NULL};
    assert_int_equal(load_args(s, argv2, NULL), RMQ_OK);
    static const char *const file_listen[] = {"f1", "f2"};
    assert_list(&s->listen, file_listen, 2);
    assert_int_equal(s->max_inflight, 30);
    free(path);
}

/* Errors from each source name that source. */
static void
test_args_error_names_its_source(void **state)
{
    struct settings *s = *state;
    char *path = strdup(write_conf("max-inflight 9\nmax-packet-size 1\n"));
    char want[300];
    char *argv[] = {"relaymq", "--config", path, NULL};
    assert_int_equal(load_args(s, argv, "RELAYMQ_"), RMQ_INVALID);
    snprintf(want, sizeof(want), "%s:2: max-packet-size: '1' is below the minimum 16", path);
    assert_string_equal(err, want);

    write_conf("max-inflight 9\n");
    setenv("RELAYMQ_NODE_ID", "ok", 1);
    setenv("RELAYMQ_ALLOW_ANONYMOUS", "sure", 1);
    assert_int_equal(load_args(s, argv, "RELAYMQ_"), RMQ_INVALID);
    assert_string_equal(
        err, "RELAYMQ_ALLOW_ANONYMOUS: 'sure' is not a boolean (true/false, yes/no, on/off, 1/0)");
    free(path);
}

/* ---- help ---- */

static void
test_help(void **state)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_non_null(out);
    config_print_help(opts, N_OPTS, out);
    fclose(out);

    /* One line per option, each "  --name PLACEHOLDER", help in one column. */
    const char *line = text;
    size_t column = 0;
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "  --%s ", opts[i].name);
        assert_memory_equal(line, prefix, strlen(prefix));
        const char *help = strstr(line, opts[i].help);
        assert_true(help && help < end);
        assert_memory_equal(help - 2, "  ", 2);
        if (i == 0)
            column = (size_t)(help - line);
        assert_int_equal((size_t)(help - line), column);
        line = end + 1;
    }
    assert_string_equal(line, "");
    assert_non_null(strstr(text, "  --max-packet-size SIZE      largest packet (default: 1m)\n"));
    assert_non_null(strstr(text, "  --listen VALUE              listener HOST:PORT (repeatable) "
                                 "(default: 127.0.0.1:1883)\n"));
    assert_non_null(strstr(text, "  --allow-anonymous [BOOL]    accept anyone (default: false)\n"));
    assert_non_null(strstr(text, "  --tag VALUE                 a list without default\n"));
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_values_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_again_replaces_without_leaking, setup, teardown),
        cmocka_unit_test(test_bad_table_and_defaults),
        cmocka_unit_test_setup_teardown(test_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args_bool_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args_error_names_its_source, setup, teardown),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/* Command-line parsing for relaymq-bench. The scenario comes first and sets
 * its defaults; flags then override them. Options are described once, in the
 * table below (name, type, field, range, help), which drives getopt_long, the
 * parsing and the help text. */
#include "tests/bench/bench_opts.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct scenario_def {
    const char *name;
    enum bench_scenario id;
    uint32_t clients;
    double rate;
    const char *summary;
};

static const struct scenario_def scenarios[] = {
    {"pairs", BENCH_PAIRS, 8, 0, "N publisher/subscriber pairs, one topic per pair"},
    {"fanin", BENCH_FANIN, 8, 0, "N publishers -> 1 subscriber on a '+' wildcard"},
    {"fanout", BENCH_FANOUT, 8, 0, "1 publisher -> N subscribers of one topic"},
    {"latency", BENCH_LATENCY, 10, 10000, "N pairs at a fixed aggregate --rate; percentiles"},
    {"connect", BENCH_CONNECT, 10000, 0,
     "N CONNECT->CONNACK->DISCONNECT cycles, --concurrency at once"},
    {"idle", BENCH_IDLE, 15000, 0, "open N idle connections, measure broker RSS per connection"},
};

/* How an option's argument is stored into struct bench_opts. */
enum opt_kind {
    OPT_STR,  /* const char * */
    OPT_U8,   /* uint8_t, min..max */
    OPT_U16,  /* uint16_t, min..max */
    OPT_U32,  /* uint32_t, min..max */
    OPT_U64,  /* uint64_t, min..max */
    OPT_INT,  /* int, min..max */
    OPT_SECS, /* double, 0..max */
    OPT_FLAG, /* bool, set to true; no argument */
    OPT_HELP, /* prints the help */
};

struct opt_def {
    const char *name;
    enum opt_kind kind;
    size_t offset; /* into struct bench_opts */
    uint64_t min, max;
    const char *arg;
    const char *help;
};

#define FIELD(f) offsetof(struct bench_opts, f)

static const struct opt_def opt_defs[] = {
    {"host", OPT_STR, FIELD(host), 0, 0, "ADDR", "broker address (default 127.0.0.1)"},
    {"port", OPT_U16, FIELD(port), 1, 65535, "PORT", "broker port (default 1883)"},
    {"sub-port", OPT_U16, FIELD(sub_port), 1, 65535, "PORT",
     "subscribers connect to this port instead (e.g. another cluster node)"},
    {"protocol", OPT_U8, FIELD(protocol), 3, 4, "3|4", "MQTT 3.1 (MQIsdp) or 3.1.1 (default 4)"},
    {"username", OPT_STR, FIELD(username), 0, 0, "USER", "CONNECT username"},
    {"password", OPT_STR, FIELD(password), 0, 0, "PASS", "CONNECT password"},
    {"client-prefix", OPT_STR, FIELD(client_prefix), 0, 0, "STR",
     "client id prefix (default rmqb)"},
    {"keepalive", OPT_U16, FIELD(keepalive), 0, 65535, "SECS",
     "CONNECT keepalive (default 60; idle: 300)"},
    {"duration", OPT_SECS, FIELD(duration), 0, 10000000, "SECS",
     "measured time after warmup (default 10)"},
    {"warmup", OPT_SECS, FIELD(warmup), 0, 10000000, "SECS",
     "traffic before measuring starts (default 1)"},
    {"messages", OPT_U64, FIELD(messages), 0, UINT64_MAX / 2, "N",
     "messages per publisher instead of --duration"},
    {"qos", OPT_U8, FIELD(qos), 0, 2, "0|1|2", "publish and subscribe QoS (default 0)"},
    {"payload", OPT_U32, FIELD(payload), BENCH_PAYLOAD_MIN, 16u << 20, "BYTES",
     "payload size, >= 20 (default 64)"},
    {"clients", OPT_U32, FIELD(clients), 1, 1000000, "N",
     "pairs (pairs, latency), publishers (fanin), subscribers (fanout), connections "
     "(connect, idle)"},
    {"pairs", OPT_U32, FIELD(clients), 1, 1000000, "N", "same as --clients"},
    {"connections", OPT_U32, FIELD(clients), 1, 1000000, "N", "same as --clients"},
    {"inflight", OPT_U32, FIELD(inflight), 1, 65000, "N",
     "QoS 1/2 messages in flight per publisher (default 20)"},
    {"rate", OPT_SECS, FIELD(rate), 0, 1000000000, "MSGS",
     "aggregate publish rate, msgs/s; 0 = flat out (latency: 10000)"},
    {"concurrency", OPT_U32, FIELD(concurrency), 1, 1000000, "N",
     "connect/idle: handshakes at once (default 64/256)"},
    {"threads", OPT_U32, FIELD(threads), 1, BENCH_MAX_THREADS, "N",
     "connect: N threads share --clients and --concurrency (default 1)"},
    {"hold", OPT_SECS, FIELD(hold), 0, 10000000, "SECS",
     "idle: hold the connections this long (default 5)"},
    {"drain", OPT_SECS, FIELD(drain), 0, 10000000, "SECS",
     "give up waiting for in-flight messages after this long without progress (default 2)"},
    {"broker-pid", OPT_INT, FIELD(broker_pid), 1, INT_MAX, "PID",
     "idle: read VmRSS of PID before and after"},
    {"check", OPT_FLAG, FIELD(check), 0, 0, NULL,
     "exit 3 on loss (QoS 1/2), duplicates (QoS 0/2), reordering or misrouting"},
    {"tls", OPT_FLAG, FIELD(tls), 0, 0, NULL,
     "connect over TLS (the server certificate is not checked)"},
    {"verbose", OPT_FLAG, FIELD(verbose), 0, 0, NULL, "(-v) progress every second on stderr"},
    {"help", OPT_HELP, 0, 0, 0, NULL, "(-h) this text"},
};

#define N_OPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))
#define N_SCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

void
bench_opts_usage(FILE *out)
{
    fprintf(out, "usage: relaymq-bench SCENARIO [options]\n\nscenarios:\n");
    for (size_t i = 0; i < N_SCENARIOS; i++)
        fprintf(out, "  %-9s %s (default N=%u)\n", scenarios[i].name, scenarios[i].summary,
                (unsigned)scenarios[i].clients);
    fprintf(out, "\noptions:\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char left[40];
        snprintf(left, sizeof(left), "--%s%s%s", opt_defs[i].name, opt_defs[i].arg ? " " : "",
                 opt_defs[i].arg ? opt_defs[i].arg : "");
        fprintf(out, "  %-24s %s\n", left, opt_defs[i].help);
    }
    fprintf(out, "\nEvery payload carries publisher id, sequence number and send time "
                 "(CLOCK_MONOTONIC);\nsubscribers count lost, duplicated and out-of-order "
                 "messages per publisher.\n"
                 "Output: a human line, then one machine-readable line starting with RESULT\n"
                 "(key=value pairs). Exit status: 0 ok, 1 connection or broker failure,\n"
                 "2 usage error, 3 --check failed.\n");
}

static bool
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool
parse_secs(const char *s, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > max)
        return false;
    *out = v;
    return true;
}

static void
set_defaults(struct bench_opts *o, const struct scenario_def *s)
{
    memset(o, 0, sizeof(*o));
    o->scenario = s->id;
    o->scenario_name = s->name;
    o->host = "127.0.0.1";
    o->port = 1883;
    o->protocol = 4;
    o->client_prefix = "rmqb";
    o->keepalive = s->id == BENCH_IDLE ? 300 : 60;
    o->duration = 10;
    o->warmup = 1;
    o->payload = 64;
    o->clients = s->clients;
    o->inflight = 20;
    o->rate = s->rate;
    o->concurrency = s->id == BENCH_IDLE ? 256 : 64;
    o->hold = 5;
    o->drain = 2;
    o->threads = 1;
}

/* Stores one option's argument as its table entry says; false on a bad
 * value. */
static bool
apply(struct bench_opts *o, const struct opt_def *d, const char *arg)
{
    char *field = (char *)o + d->offset;
    uint64_t v = 0;
    if (d->kind == OPT_STR) {
        *(const char **)field = arg;
        return true;
    }
    if (d->kind == OPT_FLAG) {
        *(bool *)field = true;
        return true;
    }
    if (d->kind == OPT_SECS)
        return parse_secs(arg, (double)d->max, (double *)field);
    if (!parse_u64(arg, d->min, d->max, &v))
        return false;
    switch (d->kind) {
    case OPT_U8:
        *(uint8_t *)field = (uint8_t)v;
        break;
    case OPT_U16:
        *(uint16_t *)field = (uint16_t)v;
        break;
    case OPT_U32:
        *(uint32_t *)field = (uint32_t)v;
        break;
    case OPT_U64:
        *(uint64_t *)field = v;
        break;
    case OPT_INT:
        *(int *)field = (int)v;
        break;
    default:
        return false;
    }
    return true;
}

static bool
resolve(struct bench_opts *o)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(o->host, NULL, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "relaymq-bench: cannot resolve %s: %s\n", o->host, gai_strerror(rc));
        return false;
    }
    memcpy(&o->addr, res->ai_addr, sizeof(o->addr));
    o->addr.sin_port = htons(o->port);
    o->sub_addr = o->addr;
    o->sub_addr.sin_port = htons(o->sub_port ? o->sub_port : o->port);
    freeaddrinfo(res);
    return true;
}

static const struct opt_def *
find_opt(const char *name)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opt_defs[i].name, name) == 0)
            return &opt_defs[i];
    return NULL;
}

static const struct scenario_def *
find_scenario(const char *name)
{
    for (size_t i = 0; i < N_SCENARIOS; i++)
        if (strcmp(scenarios[i].name, name) == 0)
            return &scenarios[i];
    return NULL;
}

int
bench_opts_parse(struct bench_opts *o, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        bench_opts_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? -1 : 1;
    }
    const struct scenario_def *s = find_scenario(argv[1]);
    if (s == NULL) {
        fprintf(stderr, "relaymq-bench: unknown scenario '%s' (try --help)\n", argv[1]);
        return -1;
    }
    set_defaults(o, s);

    struct option longopts[N_OPTS + 1];
    for (size_t i = 0; i < N_OPTS; i++) {
        int has_arg = opt_defs[i].kind == OPT_FLAG || opt_defs[i].kind == OPT_HELP ? 0 : 1;
        longopts[i] = (struct option){opt_defs[i].name, has_arg, NULL, 0};
    }
    longopts[N_OPTS] = (struct option){NULL, 0, NULL, 0};

    optind = 2;
    int c, which = 0;
    while ((c = getopt_long(argc, argv, "hv", longopts, &which)) != -1) {
        if (c == '?')
            return -1;
        const struct opt_def *d = c == 'h'   ? &opt_defs[N_OPTS - 1]
                                  : c == 'v' ? find_opt("verbose")
                                             : &opt_defs[which];
        if (d->kind == OPT_HELP) {
            bench_opts_usage(stdout);
            return 1;
        }
        if (!apply(o, d, optarg)) {
            fprintf(stderr, "relaymq-bench: bad value '%s' for --%s\n", optarg ? optarg : "",
                    d->name);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "relaymq-bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->password != NULL && o->username == NULL && o->protocol == 4) {
        fprintf(stderr, "relaymq-bench: --password needs --username in MQTT 3.1.1\n");
        return -1;
    }
    if (o->threads > 1 && o->scenario != BENCH_CONNECT) {
        fprintf(stderr, "relaymq-bench: --threads is for the connect scenario only\n");
        return -1;
    }
    if (o->threads > o->concurrency || o->threads > o->clients) {
        fprintf(stderr, "relaymq-bench: --threads %u is more than --concurrency or --clients\n",
                (unsigned)o->threads);
        return -1;
    }
    return resolve(o) ? 0 : -1;
}

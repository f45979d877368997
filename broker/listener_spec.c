/* Listener address parsing; see listener_spec.h.
 *
 * The URL is copied once into spec->text and cut up in place: host and port
 * are copied out, query values stay there and the TLS settings point at
 * them (or at the global options, which outlive the spec). Query keys go
 * through a table. Pure; any thread. */
#include "broker/listener_spec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/proxy_proto.h"
#include "common/config.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

enum rmq_status
listener_parse_proxy_mode(const char *text, unsigned *mask)
{
    static const struct {
        const char *name;
        unsigned mask;
    } modes[] = {
        {"off", 0},  {"false", 0}, {"no", 0},
        {"0", 0},    {"on", PROXY_PROTO_ACCEPT_ANY},
        {"true", PROXY_PROTO_ACCEPT_ANY},
        {"yes", PROXY_PROTO_ACCEPT_ANY},
        {"1", PROXY_PROTO_ACCEPT_ANY},
        {"any", PROXY_PROTO_ACCEPT_ANY},
        {"v1", PROXY_PROTO_ACCEPT_V1},
        {"v2", PROXY_PROTO_ACCEPT_V2},
    };
    if (!text || !*text) {
        *mask = 0;
        return RMQ_OK;
    }
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(text, modes[i].name) == 0) {
            *mask = modes[i].mask;
            return RMQ_OK;
        }
    }
    return RMQ_INVALID;
}

static enum rmq_status
parse_min_version(const char *text, int *out)
{
    if (!text || !*text || strcmp(text, "1.2") == 0)
        *out = LISTENER_TLS_1_2;
    else if (strcmp(text, "1.3") == 0)
        *out = LISTENER_TLS_1_3;
    else
        return RMQ_INVALID;
    return RMQ_OK;
}

/* ---- query parameters ---- */

typedef enum rmq_status (*param_fn)(struct listener_spec *s, const char *value);

static enum rmq_status
p_proxy(struct listener_spec *s, const char *v)
{
    return listener_parse_proxy_mode(v, &s->proxy);
}

static enum rmq_status
p_cert(struct listener_spec *s, const char *v)
{
    s->tls_cfg.cert = v;
    return *v ? RMQ_OK : RMQ_INVALID;
}

static enum rmq_status
p_key(struct listener_spec *s, const char *v)
{
    s->tls_cfg.key = v;
    return *v ? RMQ_OK : RMQ_INVALID;
}

static enum rmq_status
p_ca_file(struct listener_spec *s, const char *v)
{
    s->tls_cfg.ca_file = *v ? v : NULL;
    return RMQ_OK;
}

static enum rmq_status
p_ciphers(struct listener_spec *s, const char *v)
{
    s->tls_cfg.ciphers = *v ? v : NULL;
    return RMQ_OK;
}

static enum rmq_status
p_require(struct listener_spec *s, const char *v)
{
    return config_parse_bool(v, &s->tls_cfg.require_certificate);
}

static enum rmq_status
p_identity(struct listener_spec *s, const char *v)
{
    return config_parse_bool(v, &s->tls_cfg.use_identity_as_username);
}

static enum rmq_status
p_compact(struct listener_spec *s, const char *v)
{
    return config_parse_bool(v, &s->tls_cfg.compact_sessions);
}

static enum rmq_status
p_min_version(struct listener_spec *s, const char *v)
{
    return parse_min_version(v, &s->tls_cfg.min_version);
}

static enum rmq_status
p_path(struct listener_spec *s, const char *v)
{
    s->path = v;
    return v[0] == '/' ? RMQ_OK : RMQ_INVALID;
}

/* A count from 0 to 10,000,000 (decimal digits only). */
static enum rmq_status
parse_count(const char *v, unsigned *out)
{
    char *end;
    if (v[0] < '0' || v[0] > '9')
        return RMQ_INVALID;
    unsigned long n = strtoul(v, &end, 10);
    if (*end || n > 10000000ul)
        return RMQ_INVALID;
    *out = (unsigned)n;
    return RMQ_OK;
}

static enum rmq_status
p_max_connections(struct listener_spec *s, const char *v)
{
    return parse_count(v, &s->max_connections);
}

static enum rmq_status
p_max_connection_rate(struct listener_spec *s, const char *v)
{
    return parse_count(v, &s->max_connection_rate);
}

static enum rmq_status
p_session_tickets(struct listener_spec *s, const char *v)
{
    unsigned n;
    if (parse_count(v, &n) != RMQ_OK || n > LISTENER_MAX_SESSION_TICKETS)
        return RMQ_INVALID;
    s->tls_cfg.session_tickets = n;
    return RMQ_OK;
}

enum param_scope { ANY, TLS_ONLY, WS_ONLY };

static const struct {
    const char *key;
    enum param_scope scope;
    param_fn fn;
    const char *expect; /* for the error message */
} params[] = {
    {"proxy-protocol", ANY, p_proxy, "off, on, v1 or v2"},
    {"cert", TLS_ONLY, p_cert, "a file name"},
    {"key", TLS_ONLY, p_key, "a file name"},
    {"ca-file", TLS_ONLY, p_ca_file, "a file name"},
    {"require-certificate", TLS_ONLY, p_require, "true or false"},
    {"use-identity-as-username", TLS_ONLY, p_identity, "true or false"},
    {"min-version", TLS_ONLY, p_min_version, "1.2 or 1.3"},
    {"ciphers", TLS_ONLY, p_ciphers, "an OpenSSL cipher list"},
    {"compact-sessions", TLS_ONLY, p_compact, "true or false"},
    {"session-tickets", TLS_ONLY, p_session_tickets, "a count from 0 to 10"},
    {"path", WS_ONLY, p_path, "a path starting with '/'"},
    {"max-connections", ANY, p_max_connections, "a count from 0 to 10000000"},
    {"max-connection-rate", ANY, p_max_connection_rate, "a count from 0 to 10000000"},
};

static enum rmq_status
apply_param(struct listener_spec *s, char *pair, char *err, size_t errlen)
{
    char *eq = strchr(pair, '=');
    if (!eq) {
        set_err(err, errlen, "parameter '%s' has no '=VALUE'", pair);
        return RMQ_INVALID;
    }
    *eq = '\0';
    const char *value = eq + 1;
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        if (strcmp(pair, params[i].key) != 0)
            continue;
        if (params[i].scope == TLS_ONLY && !s->tls) {
            set_err(err, errlen, "parameter '%s' is only for tls:// and wss:// listeners", pair);
            return RMQ_INVALID;
        }
        if (params[i].scope == WS_ONLY && !s->ws) {
            set_err(err, errlen, "parameter '%s' is only for ws:// and wss:// listeners", pair);
            return RMQ_INVALID;
        }
        if (params[i].fn(s, value) != RMQ_OK) {
            set_err(err, errlen, "%s: '%s' is not %s", pair, value, params[i].expect);
            return RMQ_INVALID;
        }
        return RMQ_OK;
    }
    set_err(err, errlen, "unknown parameter '%s'", pair);
    return RMQ_INVALID;
}

static enum rmq_status
apply_query(struct listener_spec *s, char *query, char *err, size_t errlen)
{
    char *save = NULL;
    for (char *pair = strtok_r(query, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
        enum rmq_status st = apply_param(s, pair, err, errlen);
        if (st != RMQ_OK)
            return st;
    }
    return RMQ_OK;
}

/* ---- address ---- */

/* Splits "host:port" or "[v6]:port" (port 0..65535) into s->host, s->port. */
static enum rmq_status
split_host_port(struct listener_spec *s, const char *a, char *err, size_t errlen)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || !colon[1])
        goto bad;
    const char *h = a;
    size_t hl = (size_t)(colon - a);
    if (h[0] == '[') {
        if (hl < 2 || h[hl - 1] != ']')
            goto bad;
        h++;
        hl -= 2;
    }
    char *end;
    long n = strtol(colon + 1, &end, 10);
    if (*end || n < 0 || n > 65535 || hl == 0 || hl >= sizeof(s->host))
        goto bad;
    memcpy(s->host, h, hl);
    s->host[hl] = '\0';
    snprintf(s->port, sizeof(s->port), "%ld", n);
    return RMQ_OK;
bad:
    set_err(err, errlen, "expected HOST:PORT or [V6]:PORT with a port from 0 to 65535");
    return RMQ_INVALID;
}

static void
apply_defaults(struct listener_spec *s, const struct listener_options *o)
{
    s->tls_cfg = (struct listener_tls){
        .cert = o->tls_cert && *o->tls_cert ? o->tls_cert : NULL,
        .key = o->tls_key && *o->tls_key ? o->tls_key : NULL,
        .ca_file = o->tls_ca_file && *o->tls_ca_file ? o->tls_ca_file : NULL,
        .ciphers = o->tls_ciphers && *o->tls_ciphers ? o->tls_ciphers : NULL,
        .require_certificate = o->tls_require_certificate,
        .use_identity_as_username = o->tls_use_identity_as_username,
        .compact_sessions = o->tls_compact_sessions,
        .session_tickets = o->tls_session_tickets,
        .ticket_key_file =
            o->tls_ticket_key_file && *o->tls_ticket_key_file ? o->tls_ticket_key_file : NULL,
    };
}

/* What a TLS listener cannot start without. */
static enum rmq_status
check_tls(const struct listener_spec *s, char *err, size_t errlen)
{
    const struct listener_tls *t = &s->tls_cfg;
    if (!t->cert || !t->key) {
        set_err(err, errlen, "a %s listener needs a certificate and a key "
                             "(--tls-cert and --tls-key, or cert= and key=)",
                s->ws ? "wss://" : "tls://");
        return RMQ_INVALID;
    }
    if ((t->require_certificate || t->use_identity_as_username) && !t->ca_file) {
        set_err(err, errlen, "%s needs a CA file to verify client certificates "
                             "(--tls-ca-file or ca-file=)",
                t->require_certificate ? "require-certificate" : "use-identity-as-username");
        return RMQ_INVALID;
    }
    return RMQ_OK;
}

enum rmq_status
listener_spec_parse(const char *url, const struct listener_options *opts,
                    struct listener_spec *out, char *err, size_t errlen)
{
    static const struct listener_options none = {0};
    *out = (struct listener_spec){0};
    if (!opts)
        opts = &none;
    if (!(out->text = strdup(url))) {
        set_err(err, errlen, "out of memory");
        return RMQ_NOMEM;
    }
    static const struct {
        const char *prefix;
        bool tls, ws;
    } schemes[] = {{"tcp://", false, false},
                   {"tls://", true, false},
                   {"ws://", false, true},
                   {"wss://", true, true}};
    char *a = out->text;
    out->path = "/mqtt";
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i].prefix);
        if (strncmp(a, schemes[i].prefix, n) == 0) {
            out->tls = schemes[i].tls;
            out->ws = schemes[i].ws;
            a += n;
            break;
        }
    }
    if (strstr(a, "://")) {
        set_err(err, errlen, "unknown scheme (tcp://, tls://, ws:// or wss://)");
        return RMQ_INVALID;
    }
    if (listener_parse_proxy_mode(opts->proxy_protocol, &out->proxy) != RMQ_OK) {
        set_err(err, errlen, "proxy-protocol: '%s' is not off, on, v1 or v2",
                opts->proxy_protocol);
        return RMQ_INVALID;
    }
    apply_defaults(out, opts);
    out->max_connection_rate = opts->max_connection_rate;
    if (parse_min_version(opts->tls_min_version, &out->tls_cfg.min_version) != RMQ_OK) {
        set_err(err, errlen, "tls-min-version: '%s' is not 1.2 or 1.3", opts->tls_min_version);
        return RMQ_INVALID;
    }
    char *query = strchr(a, '?');
    if (query)
        *query++ = '\0';
    enum rmq_status st = split_host_port(out, a, err, errlen);
    if (st == RMQ_OK && query)
        st = apply_query(out, query, err, errlen);
    if (st == RMQ_OK && out->tls)
        st = check_tls(out, err, errlen);
    return st;
}

const char *
listener_spec_kind(const struct listener_spec *spec, char *buf, size_t size)
{
    const char *proxy = spec->proxy == PROXY_PROTO_ACCEPT_V1   ? "+proxy-v1"
                        : spec->proxy == PROXY_PROTO_ACCEPT_V2 ? "+proxy-v2"
                        : spec->proxy                          ? "+proxy"
                                                               : "";
    const char *kind = spec->ws ? (spec->tls ? "wss" : "ws") : spec->tls ? "tls" : "tcp";
    snprintf(buf, size, "%s%s", kind, proxy);
    return buf;
}

void
listener_spec_free(struct listener_spec *spec)
{
    if (!spec)
        return;
    free(spec->text);
    *spec = (struct listener_spec){0};
}

/* Listener addresses with their transport options: what one `--listen`
 * value means.
 *
 *   HOST:PORT  [v6]:PORT  tcp://HOST:PORT     plain MQTT over TCP
 *   tls://HOST:PORT                           MQTT over TLS
 *   ws://HOST:PORT                            MQTT over WebSocket (path /mqtt)
 *   wss://HOST:PORT                           MQTT over WebSocket over TLS
 *
 * followed by an optional query that overrides the global options for this
 * listener only: `tls://0.0.0.0:8883?require-certificate=true&proxy-protocol=v2`.
 * Keys: proxy-protocol (any listener); cert, key, ca-file, require-certificate,
 * use-identity-as-username, min-version, ciphers, compact-sessions,
 * session-tickets (tls:// and wss://); path (ws:// and wss://);
 * max-connections, max-connection-rate (any listener).
 * Values are taken literally (no percent-decoding).
 *
 * Pure: parsing only, no files opened (tls.c loads them). Any thread. */
#ifndef RMQ_BROKER_LISTENER_SPEC_H
#define RMQ_BROKER_LISTENER_SPEC_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

/* TLS protocol versions, as OpenSSL numbers them. */
#define LISTENER_TLS_1_2 0x0303
#define LISTENER_TLS_1_3 0x0304
/* Most TLS 1.3 session tickets a listener sends after one handshake. */
#define LISTENER_MAX_SESSION_TICKETS 10u

/* The global defaults (the --proxy-protocol and --tls-* options). Strings
 * are borrowed and must outlive every spec parsed with them. */
struct listener_options {
    const char *proxy_protocol; /* off, on (v1 or v2), v1, v2; NULL = off */
    const char *tls_cert;       /* PEM certificate chain */
    const char *tls_key;        /* PEM private key */
    const char *tls_ca_file;    /* PEM CAs that client certificates must chain to */
    bool tls_require_certificate;
    bool tls_use_identity_as_username;
    bool tls_compact_sessions;   /* TLS 1.3 sessions leave OpenSSL after the handshake */
    /* TLS 1.3 tickets sent after a full handshake; 0 = no resumption at all */
    unsigned tls_session_tickets;
    const char *tls_ticket_key_file; /* 80 bytes sealing tickets; NULL = random per listener */
    const char *tls_min_version; /* "1.2" or "1.3"; NULL = 1.2 */
    const char *tls_ciphers;     /* OpenSSL cipher list for TLS 1.2; NULL = OpenSSL's */
    unsigned max_connection_rate; /* connections accepted per second per listener, 0 = unlimited */
};

/* A TLS listener's effective settings. */
struct listener_tls {
    const char *cert, *key, *ca_file, *ciphers;
    bool require_certificate;
    bool use_identity_as_username;
    bool compact_sessions; /* see tls.c */
    unsigned session_tickets; /* 0: no resumption (see tls.c) */
    const char *ticket_key_file; /* NULL: a random ticket key */
    int min_version; /* LISTENER_TLS_1_2 or LISTENER_TLS_1_3 */
};

struct listener_spec {
    bool tls;
    bool ws;          /* WebSocket framing (ws://, wss://) */
    const char *path; /* WebSocket endpoint, "/mqtt" unless path= says otherwise */
    unsigned proxy; /* 0: no PROXY header; else PROXY_PROTO_ACCEPT_* */
    char host[256];
    char port[8];
    struct listener_tls tls_cfg; /* meaningful when tls */
    unsigned max_connections;     /* open connections on this listener, 0 = unlimited */
    unsigned max_connection_rate; /* connections accepted per second, 0 = unlimited */
    char *text;                  /* owned copy of the address: query values point into it */
};

/* Parses url with defaults opts into *out (which the caller later frees
 * with listener_spec_free, also after a failure). RMQ_INVALID with one
 * line in err naming the problem; RMQ_NOMEM. */
enum rmq_status listener_spec_parse(const char *url, const struct listener_options *opts,
                                    struct listener_spec *out, char *err, size_t errlen);

/* Parses a proxy-protocol value into a PROXY_PROTO_ACCEPT_* mask (0: off). */
enum rmq_status listener_parse_proxy_mode(const char *text, unsigned *mask);

/* "tcp", "tcp+proxy-v2", "tls", "wss+proxy", ... for logs. */
const char *listener_spec_kind(const struct listener_spec *spec, char *buf, size_t size);

/* Frees what *spec owns. NULL-safe; *spec is zeroed. */
void listener_spec_free(struct listener_spec *spec);

#endif

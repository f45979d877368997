/* The option table of the relaymq binary. Documented in README.md and
 * docs/configuration.md: keep those in step with this table. */
#include "settings.h"

#include <stddef.h>

#define OPT(name, type, def, field, lo, hi, help) \
    {name, type, def, help, offsetof(struct settings, field), lo, hi}

const struct config_option settings_options[] = {
    OPT("listen", CONFIG_LIST, "127.0.0.1:1883", listen, 0, 0,
        "MQTT listener HOST:PORT (repeatable)"),
    OPT("allow-anonymous", CONFIG_BOOL, "false", allow_anonymous, 0, 0,
        "accept clients without credentials"),
    OPT("node-id", CONFIG_STRING, "relaymq", node_id, 0, 0, "this node's name in the cluster"),
    OPT("log-level", CONFIG_STRING, "info", log_level, 0, 0, "debug, info, warn or error"),
    OPT("max-packet-size", CONFIG_SIZE, "1m", max_packet_size, 16, 268435455,
        "largest MQTT packet accepted from a client"),
    OPT("max-inflight", CONFIG_INT, "20", max_inflight, 1, 65535,
        "outgoing QoS 1/2 messages awaiting acknowledgement, per client"),
    OPT("max-queued-messages", CONFIG_INT, "1000", max_queued_messages, 0, 10000000,
        "QoS 1/2 messages queued per session beyond the inflight window"),
    OPT("max-output-buffer", CONFIG_SIZE, "8m", max_output_buffer, 4096, 0x7fffffff,
        "bytes buffered for a slow client before its QoS 0 messages are dropped"),
    OPT("connect-timeout", CONFIG_DURATION, "10s", connect_timeout_ms, 100, 3600000,
        "time a new connection has to send CONNECT"),
    OPT("sys-interval", CONFIG_DURATION, "10s", sys_interval_ms, 0, 86400000,
        "period of the $SYS/broker/... publications, 0 to disable"),
    OPT("backpressure-timeout", CONFIG_DURATION, "2s", backpressure_timeout_ms, 0, 3600000,
        "longest pause of publishers while a connected subscriber's queue is full; "
        "then its overflow is dropped (0: drop at once)"),
    OPT("http", CONFIG_STRING, "127.0.0.1:8080", http, 0, 0,
        "admin REST API and /metrics HOST:PORT, empty to disable"),
    OPT("api-key", CONFIG_LIST, NULL, api_key, 0, 0,
        "bearer key accepted by the admin API (repeatable)"),
    OPT("api-key-file", CONFIG_STRING, NULL, api_key_file, 0, 0,
        "file with one admin API key per line"),
    OPT("http-max-body", CONFIG_SIZE, "1m", http_max_body, 1024, 268435456,
        "largest request body the HTTP servers accept"),
    OPT("http-timeout", CONFIG_DURATION, "30s", http_timeout_ms, 1000, 3600000,
        "idle and request time limit of HTTP connections"),
    OPT("internal", CONFIG_STRING, NULL, internal, 0, 0,
        "internal node API HOST:PORT (node to node, HMAC-signed)"),
    OPT("advertise", CONFIG_STRING, NULL, advertise, 0, 0,
        "address other nodes use to reach the internal API (default: --internal)"),
    OPT("cluster-secret", CONFIG_STRING, NULL, cluster_secret, 0, 0,
        "shared secret that signs internal API requests"),
    OPT("internal-max-skew", CONFIG_DURATION, "30s", internal_max_skew_ms, 1000, 3600000,
        "how far a signed request's timestamp may be from this node's clock"),
    OPT("redis", CONFIG_STRING, NULL, redis, 0, 0,
        "redis://HOST:PORT[/DB] of the cluster's Redis; absent = standalone"),
    OPT("redis-prefix", CONFIG_STRING, "rmq:", redis_prefix, 0, 0, "prefix of every Redis key"),
    OPT("node-ttl", CONFIG_DURATION, "10s", node_ttl_ms, 1000, 3600000,
        "node record lifetime in Redis; heartbeat every third of it"),
    OPT("device-id", CONFIG_STRING, "clientid", device_id, 0, 0,
        "CONNECT field that names the device: clientid or username"),
    OPT("events-maxlen", CONFIG_INT, "100000", events_maxlen, 1, 1000000000,
        "approximate length the events stream is trimmed to"),
    OPT("password-file", CONFIG_STRING, NULL, password_file, 0, 0,
        "Mosquitto-format password file (relaymq passwd); clients with a username are "
        "checked against it"),
    OPT("acl-file", CONFIG_STRING, NULL, acl_file, 0, 0,
        "Mosquitto-format ACL file; topics it does not allow are denied"),
};

const size_t settings_option_count = sizeof(settings_options) / sizeof(settings_options[0]);

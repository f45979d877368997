/* Every option of the relaymq binary, in one table: the flag, the config
 * file key and the RELAYMQ_* environment variable share one name. main()
 * loads them and hands each layer the part it needs. */
#ifndef RMQ_SETTINGS_H
#define RMQ_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

struct settings {
    struct config_list listen;
    bool allow_anonymous;
    bool durable_sessions;
    bool users_redis;
    char *node_id;
    char *log_level;
    uint64_t max_packet_size;
    int64_t max_inflight;
    int64_t max_queued_messages;
    uint64_t max_output_buffer;
    bool reuse_port;
    uint64_t connect_timeout_ms;
    uint64_t sys_interval_ms;
    uint64_t backpressure_timeout_ms;
    int64_t max_connections;
    int64_t max_connection_rate;
    int64_t max_publish_rate;
    uint64_t max_publish_bytes_rate;
    uint64_t max_queued_bytes;

    /* HTTP: admin API and internal node API (http/) */
    char *http;
    struct config_list api_key;
    char *api_key_file;
    uint64_t http_max_body;
    uint64_t http_timeout_ms;
    char *internal;
    char *advertise;
    char *cluster_secret;
    uint64_t internal_max_skew_ms;

    /* Cluster control plane in Redis (cluster/) */
    char *redis;
    char *redis_prefix;
    uint64_t node_ttl_ms;
    char *device_id;
    int64_t events_maxlen;

    /* Device commands (cluster/commands.c) */
    uint64_t command_retry_interval_ms;
    int64_t command_max_retries;
    uint64_t command_ttl_ms;
    char *command_topic;
    char *command_reply_topic;
    char *command_id_field;
    uint64_t command_retention_ms;
    int64_t command_history;

    /* Stream bridge (cluster/bridge.c, cluster/bridge_writer.c) */
    struct config_list bridge;
    int64_t bridge_buffer;
    uint64_t bridge_buffer_bytes;
    char *bridge_dead_letter;

    /* Listener transports: PROXY protocol and TLS (broker/listener_spec.c, broker/tls.c) */
    char *proxy_protocol;
    char *tls_cert;
    char *tls_key;
    char *tls_ca_file;
    bool tls_require_certificate;
    bool tls_use_identity_as_username;
    bool tls_compact_sessions;
    int64_t tls_session_tickets;
    char *tls_ticket_key_file;
    char *tls_min_version;
    char *tls_ciphers;

    /* Authentication and authorisation (broker/auth.c, broker/acl.c) */
    char *password_file;
    char *acl_file;
};

extern const struct config_option settings_options[];
extern const size_t settings_option_count;

#endif

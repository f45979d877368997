/* Broker counters. Each loop owns one struct broker_metrics and bumps it
 * without locks; readers (the $SYS publisher, later /metrics) sum the loops'
 * copies. The table below is the single list of names: the $SYS topic is
 * "$SYS/broker/metrics/<name>" and the Prometheus name "relaymq_<name>". */
#ifndef RMQ_BROKER_METRICS_H
#define RMQ_BROKER_METRICS_H

#include <stdint.h>

/* X(field, help) */
#define BROKER_COUNTERS(X)                                                                   \
    X(connections_accepted, "TCP connections accepted")                                      \
    X(connections_rejected, "CONNECTs refused with a non-zero CONNACK")                      \
    X(connections_closed, "connections closed for any reason")                               \
    X(bytes_received, "bytes read from clients")                                             \
    X(bytes_sent, "bytes written to clients")                                                \
    X(messages_received, "PUBLISH packets received from clients")                            \
    X(messages_from_peers, "messages other nodes forwarded here for local subscribers")       \
    X(forward_pauses, "publishers paused while the buffer to another node was full")         \
    X(shared_deliveries, "messages given to one member of a shared subscription group")       \
    X(shared_redispatched, "unacknowledged shared messages moved to another member that stayed") \
    X(messages_received_qos0, "QoS 0 PUBLISH received")                                      \
    X(messages_received_qos1, "QoS 1 PUBLISH received")                                      \
    X(messages_received_qos2, "QoS 2 PUBLISH received")                                      \
    X(messages_sent, "PUBLISH packets sent to clients, re-sends included")                   \
    X(messages_sent_qos0, "QoS 0 PUBLISH sent")                                              \
    X(messages_sent_qos1, "QoS 1 PUBLISH sent")                                              \
    X(messages_sent_qos2, "QoS 2 PUBLISH sent")                                              \
    X(messages_dropped, "messages dropped: session queue full or slow QoS 0 subscriber")     \
    X(messages_duplicate_qos2, "QoS 2 re-sends recognised and not delivered again")          \
    X(wills_published, "will messages published")                                            \
    X(protocol_errors, "connections closed for a malformed or illegal packet")               \
    X(oversize_packets, "connections closed for a packet above max-packet-size")             \
    X(auth_failures, "CONNECTs refused for bad credentials or not authorised")               \
    X(connect_timeouts, "connections closed for not sending CONNECT in time")                \
    X(keepalive_timeouts, "connections closed for silence beyond 1.5 x keepalive")           \
    X(takeovers, "connections closed because the client id connected again")                 \
    X(socket_errors, "connections closed by a socket error or EOF without DISCONNECT")      \
    X(acl_denied, "publishes and subscriptions refused by the ACL")                           \
    X(proxy_errors, "connections closed for a missing, malformed or late PROXY header")      \
    X(tls_handshake_errors, "TLS handshakes that failed or did not finish in time")           \
    X(tls_compact_sessions, "TLS 1.3 sessions handed to the compact record layer")            \
    X(tls_sessions_resumed, "TLS handshakes that resumed an earlier session")                  \
    X(ws_handshake_errors, "WebSocket handshakes refused or not finished in time")          \
    X(connections_limited, "connections closed at accept: max-connections reached")           \
    X(connections_rate_limited, "connections closed at accept: max-connection-rate exceeded") \
    X(publish_rate_limited, "publishers paused for exceeding max-publish-rate or -bytes-rate") \
    X(queue_bytes_dropped, "QoS 1/2 messages dropped: session queue above max-queued-bytes")

struct broker_metrics {
#define BROKER_METRICS_FIELD(name, help) uint64_t name;
    BROKER_COUNTERS(BROKER_METRICS_FIELD)
#undef BROKER_METRICS_FIELD
};

#endif

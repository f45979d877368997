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
};

const size_t settings_option_count = sizeof(settings_options) / sizeof(settings_options[0]);

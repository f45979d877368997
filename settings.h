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
    char *node_id;
    char *log_level;
    uint64_t max_packet_size;
    int64_t max_inflight;
    int64_t max_queued_messages;
    uint64_t max_output_buffer;
    uint64_t connect_timeout_ms;
    uint64_t sys_interval_ms;
};

extern const struct config_option settings_options[];
extern const size_t settings_option_count;

#endif

/* Stream bridge rules: which client PUBLISHes are appended to which Redis
 * stream, with which fields, and under which de-duplication key. This is
 * the pure half of the bridge (cluster/bridge_writer.c does the I/O): rule
 * text in, parsed rules out; a message in, the Redis script call that
 * writes it out. No I/O, no clock (the receive time comes in the message),
 * any thread.
 *
 * Rule syntax (one rule per --bridge value), tokens separated by blanks:
 *
 *   FILTER stream=TEMPLATE [maxlen=N] [fields=F,F,...] [dedup=TEMPLATE]
 *          [window=DURATION] [on-bad-json=plain|dead-letter|drop]
 *
 * FILTER is an MQTT topic filter; it may also be written filter=FILTER (a
 * config file reads a bare '#' after a blank as a comment). Templates are
 * text with placeholders {device} {topic} {client_id} {node}; dedup
 * templates also take {json.PATH}, a member of the JSON payload (PATH is
 * dot-separated; a numeric step indexes an array). Fields are separated by
 * ',' or '+' ('+' in RELAYMQ_BRIDGE, whose commas separate rules).
 *
 * An entry is the argument list of bridge_script_lua: KEYS = [stream,
 * dedup key?], ARGV = [maxlen ("0" = untrimmed), window ms, field, value,
 * ...]. The script returns the new entry's id, or nil when the dedup key was
 * already there. An entry without a key needs no script: it is the same as
 * XADD stream [MAXLEN ~ maxlen] * field value ... */
#ifndef RMQ_CLUSTER_BRIDGE_H
#define RMQ_CLUSTER_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_t;
struct bridge_rules;

/* What every rule shares. Borrowed by bridge_rules_parse (copied). */
struct bridge_options {
    const char *prefix;      /* Redis key prefix: dedup keys are {prefix}dedup:{stream}:{key} */
    const char *dead_letter; /* dead-letter stream; NULL or "" = {prefix}bridge:dead-letter */
};

/* Parses n rule texts. NULL on the first bad rule, with one line in err
 * naming the rule (1-based) and what is wrong, or on allocation failure. */
struct bridge_rules *bridge_rules_parse(const char *const *texts, size_t n,
                                        const struct bridge_options *opts, char *err,
                                        size_t errlen);

void bridge_rules_free(struct bridge_rules *rules); /* NULL-safe */

size_t bridge_rules_count(const struct bridge_rules *rules);

/* A one-line summary of rule i, for the start-up log. */
void bridge_rule_describe(const struct bridge_rules *rules, size_t i, char *out, size_t len);

/* The dead-letter stream in use. */
const char *bridge_dead_letter(const struct bridge_rules *rules);

/* A published message as the bridge sees it. Borrowed for the call. */
struct bridge_message {
    const char *topic; /* not NUL-terminated */
    size_t topic_len;
    const char *device;
    const char *client_id;
    const char *node;
    const uint8_t *payload;
    size_t payload_len;
    uint8_t qos;
    uint64_t ts_ms; /* receive time, wall clock */
};

/* The payload parsed as JSON at most once per message, shared by every
 * rule that needs it. Zero it before the first rule; release it after the
 * last. */
struct bridge_json {
    bool parsed;
    struct json_t *doc; /* NULL after parsing: not JSON */
};

void bridge_json_release(struct bridge_json *json);

/* What a rule decided about a message. */
enum bridge_verdict {
    BRIDGE_NO_MATCH,      /* the filter does not match */
    BRIDGE_WRITE,         /* entry for the rule's stream (de-duplicated if the rule says so) */
    BRIDGE_WRITE_PLAIN,   /* the dedup key needs JSON the payload lacks: written without it */
    BRIDGE_DEAD_LETTER,   /* same problem, entry for the dead-letter stream */
    BRIDGE_DROP_BAD_JSON, /* same problem, the rule drops it */
    BRIDGE_NOMEM,
};

/* One entry ready to send, in a single malloc'd block (free()). */
struct bridge_entry {
    struct bridge_entry *next; /* for the caller's queues */
    enum bridge_verdict verdict;
    bool dedup; /* carries a dedup key (nil reply = duplicate) */
    int nkeys;  /* 1 or 2 */
    int argc;   /* keys, then the script's arguments */
    const char **argv;
    const size_t *lens;
    const char *stream; /* argv[0], NUL-terminated */
    size_t size;        /* bytes of the block, for buffer accounting */
};

/* Applies rule i to m. For the WRITE verdicts and DEAD_LETTER, *out is a
 * new entry owned by the caller; otherwise *out is NULL. Dead-letter
 * entries carry every field plus `reason` (invalid_json, missing_field)
 * and `stream` (where the message was meant to go). */
enum bridge_verdict bridge_rule_apply(const struct bridge_rules *rules, size_t i,
                                      const struct bridge_message *m, struct bridge_json *json,
                                      struct bridge_entry **out);

/* The Lua script every entry is an EVALSHA call of (see above). */
extern const char bridge_script_lua[];

#endif

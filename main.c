/* relaymq: the only place that builds the top-level objects and wires them.
 * Loads the settings (defaults < config file < RELAYMQ_* environment <
 * flags), builds the broker loop, runs it until SIGINT or SIGTERM, and frees
 * everything on the way out so sanitizer builds can prove nothing leaks. */
#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "cluster/cluster.h"
#include "common/config.h"
#include "common/log.h"
#include "settings.h"

#define ENV_PREFIX "RELAYMQ_"

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: relaymq [--config FILE] [--OPTION VALUE ...]\n"
            "\n"
            "A clustered MQTT 3.1/3.1.1 broker. Every option can also be set in the config\n"
            "file (\"name value\" per line) or as %sNAME in the environment.\n"
            "\n"
            "  --config FILE  read options from FILE\n"
            "  --help         show this help\n"
            "  --version      show the version\n",
            ENV_PREFIX);
    config_print_help(settings_options, settings_option_count, out);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    log_info("received %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    event_base_loopexit(arg, NULL);
}

static void
broker_config_from(const struct settings *s, struct broker_config *cfg)
{
    *cfg = (struct broker_config){
        .listen = (const char *const *)s->listen.items,
        .listen_count = s->listen.count,
        .node_id = s->node_id,
        .allow_anonymous = s->allow_anonymous,
        .max_packet_size = (uint32_t)s->max_packet_size,
        .max_inflight = (uint16_t)s->max_inflight,
        .max_queued_messages = (uint32_t)s->max_queued_messages,
        .max_output_buffer = s->max_output_buffer,
        .connect_timeout_ms = s->connect_timeout_ms,
        .sys_interval_ms = s->sys_interval_ms,
    };
}

/* Loads settings; returns 0, or the process exit code on failure/--help. */
static int
load_settings(int argc, char **argv, struct settings *s)
{
    char err[512];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("relaymq %s\n", RELAYMQ_VERSION);
            return -1;
        }
    }
    if (config_defaults(settings_options, settings_option_count, s, err, sizeof(err)) != RMQ_OK ||
        config_load_args(settings_options, settings_option_count, s, argc, argv, 1, ENV_PREFIX,
                         err, sizeof(err)) != RMQ_OK) {
        fprintf(stderr, "relaymq: %s\n", err);
        return 2;
    }
    enum log_level level;
    if (!log_level_parse(s->log_level, &level)) {
        fprintf(stderr, "relaymq: log-level: '%s' is not one of debug, info, warn, error\n",
                s->log_level);
        return 2;
    }
    log_set_level(level);
    if (strcmp(s->device_id, "clientid") != 0 && strcmp(s->device_id, "username") != 0) {
        fprintf(stderr, "relaymq: device-id: '%s' is not clientid or username\n", s->device_id);
        return 2;
    }
    if (s->redis && strcmp(s->node_id, "relaymq") == 0) {
        fprintf(stderr, "relaymq: node-id: cluster mode (--redis) needs a unique --node-id "
                        "for every node\n");
        return 2;
    }
    if (s->listen.count == 0) {
        fprintf(stderr, "relaymq: listen: at least one listener is needed\n");
        return 2;
    }
    return 0;
}

static void
cluster_config_from(const struct settings *s, struct cluster_config *cfg)
{
    *cfg = (struct cluster_config){
        .redis_url = s->redis,
        .prefix = s->redis_prefix,
        .node_id = s->node_id,
        .advertise = s->advertise ? s->advertise : s->internal ? s->internal : "",
        .node_ttl_ms = s->node_ttl_ms,
        .device_by_username = strcmp(s->device_id, "username") == 0,
        .events_maxlen = s->events_maxlen,
    };
}

static int
run(const struct settings *s)
{
    struct broker_config cfg;
    struct cluster_config ccfg;
    struct broker *broker = NULL;
    struct cluster *cluster = NULL;
    struct event *sigint = NULL, *sigterm = NULL;
    int rc = 1;

    broker_config_from(s, &cfg);
    /* Other threads (HTTP) wake the loop through its inbox. */
    if (evthread_use_pthreads() != 0) {
        log_error("libevent has no pthreads support");
        return 1;
    }
    struct event_base *base = event_base_new();
    if (!base) {
        log_error("cannot create the event loop");
        return 1;
    }
    sigint = evsignal_new(base, SIGINT, on_signal, base);
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    if (!sigint || !sigterm || event_add(sigint, NULL) || event_add(sigterm, NULL))
        goto fail;
    broker = broker_new(base, &cfg);
    if (!broker)
        goto fail;
    if (s->redis) {
        cluster_config_from(s, &ccfg);
        cluster = cluster_new(base, broker, &ccfg);
        if (!cluster)
            goto fail;
    }
    if (!s->allow_anonymous)
        log_warn("allow-anonymous is false and no authentication backend is configured: "
                 "every client will be refused");
    log_info("relaymq %s node %s ready", RELAYMQ_VERSION, s->node_id);
    event_base_dispatch(base);
    rc = 0;
fail:
    if (broker) {
        broker_stop_listening(broker);
        broker_close_all(broker); /* the cluster records each release */
    }
    cluster_free(cluster);
    broker_free(broker);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    event_base_free(base);
    return rc;
}

int
main(int argc, char **argv)
{
    struct settings s = {0};
    signal(SIGPIPE, SIG_IGN);
    int rc = load_settings(argc, argv, &s);
    if (rc == 0)
        rc = run(&s);
    else if (rc < 0)
        rc = 0;
    config_free(settings_options, settings_option_count, &s);
    libevent_global_shutdown();
    return rc;
}

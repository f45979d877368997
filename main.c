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

#include "broker/acl.h"
#include "broker/auth.h"
#include "broker/broker.h"
#include "cluster/cluster.h"
#include "cluster/commands.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "http/admin_api.h"
#include "http/command_api.h"
#include "http/internal_api.h"
#include "http/peer_client.h"
#include "settings.h"

int passwd_main(int argc, char **argv); /* passwd_cmd.c: `relaymq passwd ...` */

#define ENV_PREFIX "RELAYMQ_"

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: relaymq [--config FILE] [--OPTION VALUE ...]\n"
            "       relaymq passwd [-c] [-b] FILE USER [PASSWORD] | passwd -D FILE USER\n"
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
        .backpressure_timeout_ms = s->backpressure_timeout_ms,
        .epoch = clock_wall_ms(),
    };
}

/* The HTTP servers (http/). Stopped before the broker is freed (their
 * threads post to its inbox), freed after it (its inbox answers what was
 * still queued through them). */
struct http_apis {
    struct internal_api *internal;
    struct admin_api *admin;
};

/* Starts --internal (required to work: the cluster depends on it) and
 * --http (a failure is logged and the node runs without it: its MQTT
 * service does not depend on it, and /readyz then fails the load balancer's
 * check). Returns false on a fatal failure. */
static bool
http_start(const struct settings *s, struct broker *broker, struct command_api *commands,
           struct http_apis *h)
{
    if (s->internal && *s->internal) {
        struct internal_api_config ic = {
            .address = s->internal, .max_body = s->http_max_body,
            .timeout_ms = s->http_timeout_ms, .secret = s->cluster_secret,
            .max_skew_ms = s->internal_max_skew_ms, .broker = broker};
        if (commands)
            ic.extra_routes = command_api_internal_routes(commands, &ic.extra_route_count);
        h->internal = internal_api_new(&ic);
        if (!h->internal)
            return false;
    }
    if (s->http && *s->http) {
        struct admin_api_config ac = {
            .address = s->http, .max_body = s->http_max_body, .timeout_ms = s->http_timeout_ms,
            .api_keys = (const char *const *)s->api_key.items, .api_key_count = s->api_key.count,
            .api_key_file = s->api_key_file, .broker = broker, .node_id = s->node_id,
            .advertise = s->advertise ? s->advertise : s->internal, .internal = h->internal,
            .commands = commands};
        h->admin = admin_api_new(&ac);
        if (!h->admin)
            log_error("admin API on %s not started; running without it", s->http);
    }
    return true;
}

static void
http_stop(struct http_apis *h)
{
    admin_api_stop(h->admin);
    internal_api_stop(h->internal);
}

static void
http_free(struct http_apis *h)
{
    admin_api_free(h->admin);
    internal_api_free(h->internal);
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
    if (!*s->node_id) {
        fprintf(stderr, "relaymq: node-id: must not be empty\n");
        return 2;
    }
    if (s->listen.count == 0) {
        fprintf(stderr, "relaymq: listen: at least one listener is needed\n");
        return 2;
    }
    return 0;
}

/* Loads --password-file and --acl-file (each optional). False, with the
 * file:line of the problem logged, if either is bad. */
static bool
security_load(const struct settings *s, struct auth **auth, struct acl **acl)
{
    char err[512];
    if (s->password_file && !(*auth = auth_load(s->password_file, err, sizeof(err)))) {
        log_error("password-file: %s", err);
        return false;
    }
    if (s->acl_file && !(*acl = acl_load(s->acl_file, err, sizeof(err)))) {
        log_error("acl-file: %s", err);
        return false;
    }
    if (*auth)
        log_info("password file %s: %zu users", s->password_file, auth_user_count(*auth));
    if (*acl)
        log_info("ACL file %s loaded; topics it does not allow are denied", s->acl_file);
    return true;
}

static void
cluster_config_from(const struct settings *s, uint64_t epoch, struct cluster_config *cfg)
{
    *cfg = (struct cluster_config){
        .redis_url = s->redis,
        .prefix = s->redis_prefix,
        .node_id = s->node_id,
        .advertise = s->advertise ? s->advertise : s->internal ? s->internal : "",
        .node_ttl_ms = s->node_ttl_ms,
        .device_by_username = strcmp(s->device_id, "username") == 0,
        .events_maxlen = s->events_maxlen,
        .epoch = epoch,
    };
}

static void
commands_config_from(const struct settings *s, uint64_t epoch, struct commands_config *cfg)
{
    *cfg = (struct commands_config){
        .node_id = s->node_id,
        .epoch = epoch,
        .device_by_username = strcmp(s->device_id, "username") == 0,
        .retry_interval_ms = s->command_retry_interval_ms,
        .max_retries = (uint32_t)s->command_max_retries,
        .ttl_ms = s->command_ttl_ms,
        .topic = s->command_topic,
        .reply_topic = s->command_reply_topic,
        .id_field = s->command_id_field,
        .store = {.prefix = s->redis_prefix,
                  .node_id = s->node_id,
                  .retention_ms = s->command_retention_ms,
                  .history = (uint32_t)s->command_history,
                  .stream_maxlen = s->events_maxlen},
    };
}

static int
run(const struct settings *s)
{
    struct broker_config cfg;
    struct cluster_config ccfg;
    struct commands_config mcfg;
    struct commands *commands = NULL;
    struct command_api *command_api = NULL;
    struct broker *broker = NULL;
    struct cluster *cluster = NULL;
    struct peer_client *peers = NULL;
    struct admin_directory directory;
    struct http_apis apis = {0};
    struct event *sigint = NULL, *sigterm = NULL;
    struct auth *auth = NULL;
    struct acl *acl = NULL;
    int rc = 1;

    broker_config_from(s, &cfg);
    if (!security_load(s, &auth, &acl)) {
        auth_free(auth);
        return 2;
    }
    cfg.auth = auth;
    cfg.acl = acl;
    /* Other threads (HTTP) wake the loop through its inbox. */
    struct event_base *base = NULL;
    if (evthread_use_pthreads() != 0) {
        log_error("libevent has no pthreads support");
        goto fail;
    }
    if (!(base = event_base_new())) {
        log_error("cannot create the event loop");
        goto fail;
    }
    sigint = evsignal_new(base, SIGINT, on_signal, base);
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    if (!sigint || !sigterm || event_add(sigint, NULL) || event_add(sigterm, NULL))
        goto fail;
    broker = broker_new(base, &cfg);
    if (!broker)
        goto fail;
    if (s->redis) {
        cluster_config_from(s, cfg.epoch, &ccfg);
        cluster = cluster_new(base, broker, &ccfg);
        if (!cluster)
            goto fail;
        if (s->internal && s->cluster_secret) {
            /* Node-to-node calls: cluster-wide takeover, remote reads and
             * kicks, command hand-over. */
            struct peer_client_config pcfg = {.node_id = s->node_id,
                                              .secret = s->cluster_secret};
            peers = peer_client_new(base, &pcfg);
            if (!peers)
                goto fail;
            cluster_set_close_remote(cluster, peer_client_close_remote, peers);
        }
        if (!peers)
            log_warn("cluster mode without --internal and --cluster-secret: a client that "
                     "moves to another node cannot close its old connection here, and "
                     "commands cannot reach devices on other nodes");
    }
    /* Device commands: in Redis with a cluster, in memory standalone. */
    commands_config_from(s, cfg.epoch, &mcfg);
    commands = commands_new(base, broker, &mcfg, cluster ? cluster_redis(cluster) : NULL);
    if (!commands || !(command_api = command_api_new(broker_inbox(broker),
                                                     commands_service(commands))))
        goto fail;
    commands_set_peers(commands, peers);
    if (!http_start(s, broker, command_api, &apis))
        goto fail;
    if (apis.admin)
        admin_api_add_metrics_source(apis.admin, commands_write_metrics, commands);
    if (cluster) {
        /* The admin API now answers for the whole cluster. */
        cluster_directory(cluster, &directory);
        if (apis.admin) {
            admin_api_set_cluster(apis.admin, &directory, peers);
            admin_api_add_metrics_source(apis.admin, cluster_write_metrics, cluster);
            if (peers)
                admin_api_add_metrics_source(apis.admin, peer_client_write_metrics, peers);
        }
    }
    if (!s->allow_anonymous && !auth)
        log_warn("allow-anonymous is false and no authentication backend is configured: "
                 "every client will be refused");
    log_info("relaymq %s node %s ready", RELAYMQ_VERSION, s->node_id);
    event_base_dispatch(base);
    rc = 0;
fail:
    http_stop(&apis);
    if (broker) {
        broker_stop_listening(broker);
        broker_close_all(broker); /* the cluster records each release */
    }
    cluster_free(cluster);
    peer_client_free(peers);
    commands_free(commands); /* after the Redis link and peers: their last callbacks reach it */
    broker_free(broker);
    http_free(&apis);
    command_api_free(command_api);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (base)
        event_base_free(base);
    acl_free(acl);
    auth_free(auth);
    return rc;
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "passwd") == 0)
        return passwd_main(argc - 1, argv + 1);
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

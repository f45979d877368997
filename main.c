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
#include "cluster/bridge_writer.h"
#include "cluster/cluster.h"
#include "cluster/commands.h"
#include "cluster/forwarder.h"
#include "cluster/routes.h"
#include "cluster/sessions.h"
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
#define FORWARD_BODY_SLACK 65536u      /* frame headers around the largest message */
#define FORWARD_MAX_BATCH (256u * 1024) /* bytes per node-to-node request */
#define FORWARD_MAX_BUFFER (64u << 20)  /* bytes waiting per peer before drops */
#define INTERNAL_ROUTES_MAX 8

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: relaymq [--config FILE] [--OPTION VALUE ...]\n"
            "       relaymq passwd [-c] [-b] FILE USER [PASSWORD] | passwd -D FILE USER | passwd -H\n"
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

/* SIGHUP: TLS listeners load their certificate, key and CA files again. */
static void
on_sighup(evutil_socket_t sig, short what, void *arg)
{
    log_info("received SIGHUP, reloading TLS files");
    broker_reload_tls(arg);
}

static struct listener_options
listener_options_from(const struct settings *s)
{
    return (struct listener_options){
        .proxy_protocol = s->proxy_protocol,
        .tls_cert = s->tls_cert,
        .tls_key = s->tls_key,
        .tls_ca_file = s->tls_ca_file,
        .tls_require_certificate = s->tls_require_certificate,
        .tls_use_identity_as_username = s->tls_use_identity_as_username,
        .tls_compact_sessions = s->tls_compact_sessions,
        .tls_session_tickets = (unsigned)s->tls_session_tickets,
        .tls_ticket_key_file = s->tls_ticket_key_file,
        .tls_min_version = s->tls_min_version,
        .tls_ciphers = s->tls_ciphers,
        .max_connection_rate = (unsigned)s->max_connection_rate,
    };
}

/* Every --listen value with the PROXY and TLS options: false (printed) if
 * one is invalid. Files are opened later, by the broker. */
static bool
listeners_valid(const struct settings *s)
{
    struct listener_options opts = listener_options_from(s);
    char err[512];
    for (size_t i = 0; i < s->listen.count; i++) {
        struct listener_spec spec;
        enum rmq_status st = listener_spec_parse(s->listen.items[i], &opts, &spec, err,
                                                 sizeof(err));
        listener_spec_free(&spec);
        if (st != RMQ_OK) {
            fprintf(stderr, "relaymq: listen '%s': %s\n", s->listen.items[i], err);
            return false;
        }
    }
    return true;
}

static void
broker_config_from(const struct settings *s, struct broker_config *cfg)
{
    *cfg = (struct broker_config){
        .listen = (const char *const *)s->listen.items,
        .listen_count = s->listen.count,
        .listener_defaults = listener_options_from(s),
        .node_id = s->node_id,
        .allow_anonymous = s->allow_anonymous,
        .reuse_port = s->reuse_port,
        .max_packet_size = (uint32_t)s->max_packet_size,
        .max_inflight = (uint16_t)s->max_inflight,
        .max_queued_messages = (uint32_t)s->max_queued_messages,
        .max_output_buffer = s->max_output_buffer,
        .connect_timeout_ms = s->connect_timeout_ms,
        .sys_interval_ms = s->sys_interval_ms,
        .backpressure_timeout_ms = s->backpressure_timeout_ms,
        .max_connections = (uint32_t)s->max_connections,
        .max_publish_rate = (uint32_t)s->max_publish_rate,
        .max_publish_bytes_rate = s->max_publish_bytes_rate,
        .max_queued_bytes = s->max_queued_bytes,
        .durable_sessions = s->durable_sessions,
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
           const struct http_route *internal_routes, size_t internal_route_count,
           struct http_apis *h)
{
    if (s->internal && *s->internal) {
        /* Forwarded batches carry whole messages: room for a full batch
         * and for the largest message. */
        uint64_t max_body = s->http_max_body;
        if (max_body < s->max_packet_size + FORWARD_BODY_SLACK)
            max_body = s->max_packet_size + FORWARD_BODY_SLACK;
        if (max_body < FORWARD_MAX_BATCH + FORWARD_BODY_SLACK)
            max_body = FORWARD_MAX_BATCH + FORWARD_BODY_SLACK;
        struct internal_api_config ic = {
            .address = s->internal, .max_body = max_body,
            .timeout_ms = s->http_timeout_ms, .secret = s->cluster_secret,
            .max_skew_ms = s->internal_max_skew_ms, .broker = broker,
            .extra_routes = internal_routes, .extra_route_count = internal_route_count};
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
http_free(struct http_apis *h)
{
    admin_api_free(h->admin);
    internal_api_free(h->internal);
}

static void
bridge_config_from(const struct settings *s, struct bridge_writer_config *cfg)
{
    *cfg = (struct bridge_writer_config){
        .redis_url = s->redis,
        .prefix = s->redis_prefix,
        .node_id = s->node_id,
        .dead_letter = s->bridge_dead_letter,
        .rules = (const char *const *)s->bridge.items,
        .rule_count = s->bridge.count,
        .device_by_username = strcmp(s->device_id, "username") == 0,
        .buffer_messages = (uint64_t)s->bridge_buffer,
        .buffer_bytes = s->bridge_buffer_bytes,
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
    if (!*s->node_id) {
        fprintf(stderr, "relaymq: node-id: must not be empty\n");
        return 2;
    }
    if (s->listen.count == 0) {
        fprintf(stderr, "relaymq: listen: at least one listener is needed\n");
        return 2;
    }
    if (!listeners_valid(s))
        return 2;
    if (s->bridge.count && !s->redis) {
        fprintf(stderr, "relaymq: bridge: rules need --redis (the streams are written there)\n");
        return 2;
    }
    if (s->users_redis && !s->redis) {
        fprintf(stderr, "relaymq: users-redis: needs --redis (the users are kept there)\n");
        return 2;
    }
    if (s->durable_sessions && !s->redis) {
        fprintf(stderr, "relaymq: durable-sessions: needs --redis (the sessions' copies are "
                        "kept there)\n");
        return 2;
    }
    if (s->bridge.count) {
        struct bridge_writer_config bcfg;
        bridge_config_from(s, &bcfg);
        if (bridge_writer_check(&bcfg, err, sizeof(err)) != RMQ_OK) {
            fprintf(stderr, "relaymq: %s\n", err);
            return 2;
        }
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
        .users_redis = s->users_redis,
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
    struct routes_config routes_cfg;
    struct routes *routes = NULL;
    struct forwarder_config fwd_cfg;
    struct forwarder *forwarder = NULL;
    struct sessions_config sess_cfg;
    struct sessions *sessions = NULL;
    struct http_route internal_routes[INTERNAL_ROUTES_MAX];
    struct command_api *command_api = NULL;
    struct broker *broker = NULL;
    struct cluster *cluster = NULL;
    struct bridge_writer_config bcfg;
    struct bridge_writer *bridge = NULL;
    struct peer_client *peers = NULL;
    struct admin_directory directory;
    struct http_apis apis = {0};
    struct event *sigint = NULL, *sigterm = NULL, *sighup = NULL;
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
    sighup = evsignal_new(base, SIGHUP, on_sighup, broker);
    if (!sighup || event_add(sighup, NULL))
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
    if (cluster)
        cluster_set_pending_watch(cluster, commands_pending_watch(commands));
    /* Node-to-node: messages for other nodes' subscribers, retained
     * messages kept in Redis. */
    if (cluster) {
        struct routes_config rcfg = {.redis_url = s->redis, .prefix = s->redis_prefix,
                                     .node_id = s->node_id};
        routes_cfg = rcfg;
        if (!(routes = routes_new(base, broker, cluster, cluster_redis(cluster), &routes_cfg)))
            goto fail;
        fwd_cfg = (struct forwarder_config){.prefix = s->redis_prefix,
                                            .max_buffer = FORWARD_MAX_BUFFER,
                                            .max_batch = FORWARD_MAX_BATCH,
                                            .max_stall_ms = s->backpressure_timeout_ms,
                                            .durable = s->durable_sessions};
        if (peers && !(forwarder = forwarder_new(base, broker, cluster, cluster_redis(cluster),
                                                 routes, peers, &fwd_cfg)))
            goto fail;
        sess_cfg = (struct sessions_config){.prefix = s->redis_prefix,
                                            .node_id = s->node_id,
                                            .max_queued = (uint32_t)(s->max_queued_messages +
                                                                     (s->durable_sessions
                                                                          ? s->max_inflight
                                                                          : 0)),
                                            .durable = s->durable_sessions,
                                            .advertise = s->advertise ? s->advertise
                                                                      : s->internal,
                                            .epoch = cfg.epoch};
        if (!(sessions = sessions_new(base, broker, cluster, routes, cluster_redis(cluster), peers,
                                      &sess_cfg)))
            goto fail;
    }
    size_t n_internal = 0, n;
    const struct http_route *extra = command_api_internal_routes(command_api, &n);
    for (size_t i = 0; i < n && n_internal < INTERNAL_ROUTES_MAX; i++)
        internal_routes[n_internal++] = extra[i];
    if (forwarder) {
        extra = forwarder_internal_routes(forwarder, &n);
        for (size_t i = 0; i < n && n_internal < INTERNAL_ROUTES_MAX; i++)
            internal_routes[n_internal++] = extra[i];
    }
    if (sessions) {
        extra = sessions_internal_routes(sessions, &n);
        for (size_t i = 0; i < n && n_internal < INTERNAL_ROUTES_MAX; i++)
            internal_routes[n_internal++] = extra[i];
    }
    if (!http_start(s, broker, command_api, internal_routes, n_internal, &apis))
        goto fail;
    if (apis.admin)
        admin_api_add_metrics_source(apis.admin, commands_write_metrics, commands);
    if (cluster) {
        /* The admin API now answers for the whole cluster. */
        cluster_directory(cluster, &directory);
        if (apis.admin) {
            admin_api_set_cluster(apis.admin, &directory, peers);
            admin_api_add_metrics_source(apis.admin, cluster_write_metrics, cluster);
            admin_api_add_metrics_source(apis.admin, routes_write_metrics, routes);
            admin_api_add_metrics_source(apis.admin, sessions_write_metrics, sessions);
            if (forwarder)
                admin_api_add_metrics_source(apis.admin, forwarder_write_metrics, forwarder);
            if (peers)
                admin_api_add_metrics_source(apis.admin, peer_client_write_metrics, peers);
        }
    }
    if (s->redis && s->bridge.count) {
        /* Telemetry into Redis streams, on a Redis connection of its own. */
        bridge_config_from(s, &bcfg);
        if (!(bridge = bridge_writer_new(base, broker, &bcfg)))
            goto fail;
        if (apis.admin)
            admin_api_add_metrics_source(apis.admin, bridge_writer_write_metrics, bridge);
    }
    if (!s->allow_anonymous && !auth && !s->users_redis)
        log_warn("allow-anonymous is false and no authentication backend is configured: "
                 "every client will be refused");
    log_info("relaymq %s node %s ready", RELAYMQ_VERSION, s->node_id);
    event_base_dispatch(base);
    rc = 0;
fail:
    /* Draining: the load balancer sees the node not ready (admin API and
     * MQTT listeners closed); clients are disconnected, persistent sessions
     * written to Redis; then what other nodes and Redis are still owed is
     * sent (the loop runs again, everything alive; a signal cuts it short);
     * then the node leaves the route table (a survivor adopts its offline
     * sessions) and stops taking node-to-node calls. */
    admin_api_stop(apis.admin);
    if (broker) {
        broker_stop_listening(broker);
        broker_close_all(broker); /* the cluster records each release */
    }
    bridge_writer_drain(bridge, 3000);
    sessions_drain(sessions, 4000);
    forwarder_drain(forwarder, 3000, 0);
    forwarder_leave(forwarder);
    routes_free(routes); /* leaves the route table while the link is still up */
    /* Peers learn it within milliseconds; what they sent meanwhile is still
     * taken (a moved session's messages redirected), until 100 ms pass
     * without any. */
    forwarder_drain(forwarder, 1000, 100);
    forwarder_stop_streams(forwarder);
    internal_api_stop(apis.internal);
    sessions_stop(sessions);
    cluster_free(cluster);
    peer_client_free(peers);
    forwarder_free(forwarder); /* after the peer client's last (cancelled) callbacks */
    sessions_free(sessions);
    commands_free(commands); /* after the Redis link and peers: their last callbacks reach it */
    broker_free(broker);
    bridge_writer_free(bridge); /* after the broker it observes */
    http_free(&apis);
    command_api_free(command_api);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (sighup)
        event_free(sighup);
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

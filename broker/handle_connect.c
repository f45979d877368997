/* CONNECT: validation, authentication, client-id takeover, session lookup
 * or creation, the will, keepalive, and CONNACK.
 *
 * Returns RMQ_OK when the client is connected or its cluster claim is in
 * flight (state CONN_CLAIMING: broker_claim_done() finishes it); any other
 * status means the caller closes the connection (RMQ_PROTOCOL for a protocol
 * violation, with no CONNACK; otherwise a CONNACK with the refusal code has
 * been queued).
 * Loop thread only. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/acl.h"
#include "broker/auth.h"
#include "broker/broker_internal.h"
#include "broker/topic.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"

static enum rmq_status
refuse(struct conn *c, uint8_t code, const char *why)
{
    struct broker *b = c->broker;
    uint8_t out[4];
    log_info("%s: CONNECT refused (0x%02x): %s", c->peer, code, why);
    b->metrics.connections_rejected++;
    if (code == MQTT_CONNACK_BAD_CREDENTIALS || code == MQTT_CONNACK_NOT_AUTHORIZED)
        b->metrics.auth_failures++;
    conn_write(c, out, mqtt_encode_connack(out, false, code));
    return RMQ_INVALID;
}

#define LOOK_UP_USER 0xff /* authenticate(): the user store decides (lookup_user) */

/* Authentication. Without a password file or a user store, allow-anonymous
 * decides for every client (usernames are not checked, as in Mosquitto).
 * With them, a client that gives a username must match the file or, if the
 * file does not know it, the store (LOOK_UP_USER: asked asynchronously);
 * 0x04 otherwise: MQTT 3.1.1 "bad user name or password", for unknown
 * users too, so the answer does not reveal which users exist. A client
 * without a username is anonymous and needs allow-anonymous (0x05 "not
 * authorized" otherwise). why gets what went wrong for the log; the
 * password never appears in it. */
static uint8_t
authenticate(const struct broker *b, const struct mqtt_connect *cn, char *why, size_t whylen)
{
    const struct auth *auth = b->cfg->auth;
    bool store = b->hooks && b->hooks->lookup_user;
    if ((!auth && !store) || !cn->has_username) {
        snprintf(why, whylen, "anonymous access denied");
        return b->cfg->allow_anonymous ? MQTT_CONNACK_ACCEPTED : MQTT_CONNACK_NOT_AUTHORIZED;
    }
    enum auth_result r = AUTH_UNKNOWN_USER;
    if (auth)
        r = auth_check(auth, (const char *)cn->username.data, cn->username.len,
                       cn->has_password ? (const char *)cn->password.data : NULL,
                       cn->has_password ? cn->password.len : 0);
    if (r == AUTH_OK)
        return MQTT_CONNACK_ACCEPTED;
    if (r == AUTH_UNKNOWN_USER && store)
        return LOOK_UP_USER;
    int shown = cn->username.len > 64 ? 64 : (int)cn->username.len;
    const char *what = r == AUTH_UNKNOWN_USER ? "unknown user"
                       : cn->has_password     ? "wrong password"
                                              : "no password";
    snprintf(why, whylen, "user '%.*s': %s", shown, (const char *)cn->username.data, what);
    return MQTT_CONNACK_BAD_CREDENTIALS;
}

/* A will is a publish made later on the client's behalf: with an ACL its
 * topic must be writable now, or the will would bypass the ACL (Mosquitto
 * 1.x refuses such a CONNECT the same way). name: the username, NULL for an
 * anonymous client. */
static bool
will_allowed(const struct broker *b, const struct mqtt_connect *cn, const char *id, size_t id_len,
             const char *name, size_t name_len)
{
    if (!b->cfg->acl || !cn->has_will)
        return true;
    char *cid = strndup(id, id_len);
    char *user = name ? strndup(name, name_len) : NULL;
    bool ok = cid && (user || !name) &&
              acl_check(b->cfg->acl, cid, user, (const char *)cn->will_topic.data,
                        cn->will_topic.len, ACL_WRITE);
    free(cid);
    free(user);
    return ok;
}

static enum rmq_status
take_will(struct conn *c, const struct mqtt_connect *cn)
{
    if (!cn->has_will)
        return RMQ_OK;
    if (!topic_name_valid((const char *)cn->will_topic.data, cn->will_topic.len)) {
        log_info("%s: invalid will topic", c->peer);
        c->broker->metrics.protocol_errors++;
        return RMQ_PROTOCOL;
    }
    c->will = message_new((const char *)cn->will_topic.data, cn->will_topic.len,
                          cn->will_payload.data, cn->will_payload.len, cn->will_qos,
                          cn->will_retain, broker_now(c->broker));
    return c->will ? RMQ_OK : RMQ_NOMEM;
}

/* Closes an existing connection of this client id, then returns the
 * session to continue (NULL if none or if this CONNECT cleans it). */
static struct session *
takeover(struct broker *b, const char *id, size_t len, bool clean)
{
    struct session *s = hashmap_get(b->sessions, id, len);
    if (s && s->conn) {
        log_info("client %s: taken over by a new connection, closing %s", s->client_id,
                 s->conn->peer);
        b->metrics.takeovers++;
        conn_close(s->conn, CLOSE_TAKEOVER); /* may free a clean session */
        s = hashmap_get(b->sessions, id, len);
    }
    if (s && clean) {
        hashmap_remove(b->sessions, id, len);
        session_free(b, s);
        s = NULL;
    }
    return s;
}

static void
start_keepalive(struct conn *c, uint16_t keepalive)
{
    struct broker *b = c->broker;
    c->keepalive = keepalive;
    if (keepalive)
        timer_wheel_schedule(b->wheel, &c->timer, broker_now(b) + (uint64_t)keepalive * 1500u);
    else
        timer_entry_cancel(&c->timer);
}

/* Attaches the session and sends CONNACK 0: the client is connected. */
static enum rmq_status
finish_connect(struct conn *c, const char *id, size_t id_len, bool clean, uint16_t keepalive)
{
    struct broker *b = c->broker;
    struct session *s = takeover(b, id, id_len, clean);
    bool present = s != NULL;
    if (!s) {
        s = session_new(id, id_len, clean);
        if (!s || hashmap_put(b->sessions, s->client_id, s->client_id_len, s, NULL) != RMQ_OK) {
            session_free(b, s);
            return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory");
        }
    }
    s->clean = clean;
    s->conn = c;
    c->session = s;
    c->state = CONN_ACTIVE;
    c->connected_at_ms = clock_wall_ms();
    b->connected_count++;
    start_keepalive(c, keepalive);

    uint8_t out[4];
    /* Session present exists from 3.1.1 on; in 3.1 that byte is reserved. */
    bool sp = present && c->protocol_level >= MQTT_PROTO_V311;
    conn_write(c, out, mqtt_encode_connack(out, sp, MQTT_CONNACK_ACCEPTED));
    log_info("client %s connected from %s (MQTT %s, clean %d, keepalive %u)", s->client_id,
             c->peer, c->protocol_level == MQTT_PROTO_V31 ? "3.1" : "3.1.1", clean,
             (unsigned)keepalive);
    session_resume(b, s);
    session_notify(b, s, SESSION_ONLINE, NULL, 0, 0, NULL);
    if (b->observer_count > 0) {
        struct broker_client_info info;
        conn_client_info(c, &info);
        for (size_t i = 0; i < b->observer_count; i++) {
            const struct broker_observer *o = b->observers[i];
            if (o->connected)
                o->connected(o->ctx, &info);
        }
    }
    return RMQ_OK;
}

static void claim_free(struct broker_claim *t);

/* After a hook: RMQ_INVALID if it answered at once and the CONNECT was
 * refused (refuse_async left the closing to handle_connect's caller). */
static enum rmq_status
answered_inline(struct conn *c)
{
    if (!c->refused_inline)
        return RMQ_OK;
    c->refused_inline = false;
    return RMQ_INVALID;
}

/* What finishing the CONNECT needs after an asynchronous step (a user
 * lookup, the cluster's claim); the connection waits, its input paused.
 * NULL without memory. */
static struct broker_claim *
token_new(struct conn *c, const char *id, size_t id_len, bool clean, uint16_t keepalive)
{
    struct broker *b = c->broker;
    struct broker_claim *t = calloc(1, sizeof(*t) + id_len + 1);
    if (!t)
        return NULL;
    *t = (struct broker_claim){
        .broker = b,
        .conn = c,
        .channel = c->channel,
        .keepalive = keepalive,
        .protocol_level = c->protocol_level,
        .clean = clean,
        .client_id_len = (uint16_t)id_len,
    };
    /* After the struct assignment: it may write padding over the start of
     * the flexible array, so the terminator is set explicitly. */
    memcpy(t->client_id, id, id_len);
    t->client_id[id_len] = '\0';
    memcpy(t->peer, c->peer, sizeof(t->peer));
    if (c->username && !(t->username = strdup(c->username))) {
        free(t);
        return NULL;
    }
    c->claim = t;
    c->state = CONN_CLAIMING;
    c->connected_at_ms = clock_wall_ms();
    conn_pause_input(c);
    return t;
}

/* Hands the client to the cluster layer (its token made); CONNACK waits
 * for its answer. */
static void
claim(struct conn *c, struct broker_claim *t)
{
    struct broker *b = c->broker;
    struct broker_client_info info;
    conn_client_info(c, &info);
    b->hooks->claim(b->hooks->ctx, t, &info);
}

static enum rmq_status
start_claim(struct conn *c, const char *id, size_t id_len, bool clean, uint16_t keepalive)
{
    struct broker_claim *t = token_new(c, id, id_len, clean, keepalive);
    if (!t)
        return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory");
    claim(c, t);
    return answered_inline(c);
}

/* Asks the user store about c->username; the password waits in the token. */
static enum rmq_status
start_lookup(struct conn *c, const struct mqtt_connect *cn, const char *id, size_t id_len)
{
    struct broker *b = c->broker;
    struct broker_claim *t = token_new(c, id, id_len, cn->clean_session, cn->keepalive);
    if (!t)
        return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory");
    t->looking_up = true;
    if (cn->has_password) {
        if (!(t->password = malloc(cn->password.len + 1u))) {
            c->claim = NULL;
            claim_free(t);
            return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory");
        }
        memcpy(t->password, cn->password.data, cn->password.len);
        t->password_len = cn->password.len;
    }
    b->hooks->lookup_user(b->hooks->ctx, t, c->username);
    return answered_inline(c);
}

static void
password_free(struct broker_claim *t)
{
    if (t->password) {
        OPENSSL_cleanse(t->password, t->password_len);
        free(t->password);
        t->password = NULL;
    }
}

static void
claim_free(struct broker_claim *t)
{
    password_free(t);
    free(t->username);
    free(t);
}

/* The CONNECT failed after an asynchronous step: refused and closed; when
 * the step answered at once (inside handle_connect, which then returns the
 * failure and its caller closes) only refused. */
static void
refuse_async(struct conn *c, uint8_t code, const char *why)
{
    if (why)
        refuse(c, code, why);
    c->state = CONN_AWAIT_CONNECT; /* never claimed: no release */
    if (c->dispatching)
        c->refused_inline = true;
    else
        conn_close(c, CLOSE_REFUSED);
}

/* Input was paused for an asynchronous step: it goes on. */
static void
resume(struct conn *c)
{
    if (c->dispatching)
        c->paused = c->paused_off = false; /* answered inline: process() carries on */
    else
        conn_resume_input(c);
}

void
broker_user_found(struct broker_claim *t, enum broker_user_lookup result, const char *encoded,
                  size_t len)
{
    struct broker *b = t->broker;
    struct conn *c = t->conn;
    if (!c) { /* the connection died meanwhile: nothing was claimed */
        claim_free(t);
        return;
    }
    const char *malformed = NULL;
    enum auth_result r = AUTH_UNKNOWN_USER;
    if (result == BROKER_USER_FOUND)
        r = auth_check_encoded(encoded, len, t->password, t->password_len, &malformed);
    bool no_password = !t->password;
    password_free(t);
    t->looking_up = false;
    char why[192];
    int shown = (int)strnlen(c->username ? c->username : "", 64);
    const char *user = c->username ? c->username : "";
    if (result == BROKER_USER_ERROR) {
        c->claim = NULL;
        claim_free(t);
        refuse_async(c, MQTT_CONNACK_UNAVAILABLE, "the user store (Redis) is unreachable");
        return;
    }
    if (r == AUTH_MALFORMED)
        log_warn("user '%.*s': the stored password hash is malformed (%s)", shown, user,
                 malformed);
    if (r == AUTH_OK && no_password)
        r = AUTH_BAD_PASSWORD;
    if (r != AUTH_OK) {
        snprintf(why, sizeof(why), "user '%.*s': %s", shown, user,
                 r == AUTH_UNKNOWN_USER ? "unknown user"
                 : r == AUTH_MALFORMED  ? "malformed stored hash"
                 : no_password          ? "no password"
                                        : "wrong password");
        c->claim = NULL;
        claim_free(t);
        refuse_async(c, MQTT_CONNACK_BAD_CREDENTIALS, why);
        return;
    }
    if (b->hooks && b->hooks->claim) {
        claim(c, t); /* the same token, now a claim */
        return;
    }
    c->claim = NULL;
    enum rmq_status st = finish_connect(c, t->client_id, t->client_id_len, t->clean, t->keepalive);
    claim_free(t);
    if (st != RMQ_OK) {
        refuse_async(c, 0, NULL); /* finish_connect queued its answer */
        return;
    }
    resume(c);
}

void
broker_claim_done(struct broker_claim *t, bool ok)
{
    struct broker *b = t->broker;
    struct conn *c = t->conn;
    if (!c) {
        /* The connection died while the claim was in flight: undo it. */
        if (ok && b->hooks && b->hooks->released) {
            struct broker_client_info info = {
                .client_id = t->client_id, .username = t->username, .peer = t->peer,
                .channel = t->channel, .protocol_level = t->protocol_level,
                .clean_session = t->clean,
            };
            b->hooks->released(b->hooks->ctx, &info, CLOSE_SOCKET_ERROR);
        }
        claim_free(t);
        return;
    }
    c->claim = NULL;
    enum rmq_status st = ok ? finish_connect(c, t->client_id, t->client_id_len, t->clean,
                                             t->keepalive)
                            : refuse(c, MQTT_CONNACK_UNAVAILABLE, "cluster claim failed");
    claim_free(t);
    if (st != RMQ_OK) {
        refuse_async(c, 0, NULL); /* its CONNACK is queued */
        return;
    }
    resume(c);
}

enum rmq_status
handle_connect(struct conn *c, const struct mqtt_packet *p)
{
    struct broker *b = c->broker;
    const struct mqtt_connect *cn = &p->u.connect;
    char idbuf[64];
    const char *id = (const char *)cn->client_id.data;
    size_t id_len = cn->client_id.len;

    c->protocol_level = cn->protocol_level;
    if (id_len == 0) {
        /* MQTT 3.1 has no assigned ids; 3.1.1 assigns one to clean sessions only. */
        if (cn->protocol_level == MQTT_PROTO_V31 || !cn->clean_session)
            return refuse(c, MQTT_CONNACK_ID_REJECTED, "empty client id");
        id_len = (size_t)snprintf(idbuf, sizeof(idbuf), "auto-%s-%llx", b->cfg->node_id,
                                  (unsigned long long)++b->next_client_id);
        id = idbuf;
    }
    char why[128];
    const char *user = cn->has_username ? (const char *)cn->username.data : NULL;
    size_t user_len = cn->username.len;
    bool look_up = false;
    if (c->use_identity) {
        /* The TLS layer vouched for the certificate: its CN is the username
         * and the CONNECT's username and password are not looked at. */
        if (!c->username)
            return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "no client certificate with a CN");
        user = c->username;
        user_len = strlen(c->username);
    } else {
        uint8_t code = authenticate(b, cn, why, sizeof(why));
        look_up = code == LOOK_UP_USER;
        if (code != MQTT_CONNACK_ACCEPTED && !look_up)
            return refuse(c, code, why);
    }
    if (!will_allowed(b, cn, id, id_len, user, user_len)) {
        b->metrics.acl_denied++;
        return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, "will topic denied by the ACL");
    }
    enum rmq_status st = take_will(c, cn);
    if (st != RMQ_OK)
        return st;
    if (!c->use_identity && cn->has_username &&
        !(c->username = strndup((const char *)cn->username.data, cn->username.len)))
        return RMQ_NOMEM;
    if (look_up)
        return start_lookup(c, cn, id, id_len);
    if (b->hooks && b->hooks->claim)
        return start_claim(c, id, id_len, cn->clean_session, cn->keepalive);
    return finish_connect(c, id, id_len, cn->clean_session, cn->keepalive);
}

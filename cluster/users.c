/* Users kept in Redis (--users-redis): the broker's lookup_user hook.
 *
 * `{prefix}users:{name}` holds the user's password hash as a password file
 * line has it after "name:" ("$7$ITERATIONS$SALT$HASH", PBKDF2-SHA512; see
 * broker/auth.h), so every node agrees on the users without a file to copy
 * around. One GET per CONNECT whose username the password file (if any)
 * does not know; the broker checks the password. Loop thread only. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "cluster/cluster_internal.h"
#include "cluster/redis_link.h"
#include "common/log.h"

struct lookup {
    struct cluster *cl;
    struct broker_claim *token;
};

static void
on_user(struct redisReply *reply, void *arg)
{
    struct lookup *x = arg;
    struct cluster *cl = x->cl;
    struct broker_claim *token = x->token;
    free(x);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        cl->users_found++;
        broker_user_found(token, BROKER_USER_FOUND, reply->str, reply->len);
    } else if (reply && reply->type == REDIS_REPLY_NIL) {
        cl->users_not_found++;
        broker_user_found(token, BROKER_USER_NOT_FOUND, NULL, 0);
    } else {
        cl->users_errors++;
        if (reply && reply->type != REDIS_REPLY_ERROR)
            log_warn("users: a user's key holds something other than a string");
        broker_user_found(token, reply && reply->type != REDIS_REPLY_ERROR
                                     ? BROKER_USER_NOT_FOUND
                                     : BROKER_USER_ERROR,
                          NULL, 0);
    }
}

void
users_on_lookup(void *ctx, struct broker_claim *token, const char *username)
{
    struct cluster *cl = ctx;
    char key[CLUSTER_KEY_MAX];
    int n = snprintf(key, sizeof(key), "%susers:%s", cl->cfg->prefix, username);
    struct lookup *x = malloc(sizeof(*x));
    const char *argv[] = {"GET", key};
    if (n < 0 || (size_t)n >= sizeof(key) || !x) {
        free(x);
        cl->users_not_found++; /* a name that long cannot be a key we wrote */
        broker_user_found(token, BROKER_USER_NOT_FOUND, NULL, 0);
        return;
    }
    *x = (struct lookup){cl, token};
    if (redis_link_argv(cl->redis, on_user, x, 2, argv, NULL) != RMQ_OK) {
        free(x);
        cl->users_errors++;
        broker_user_found(token, BROKER_USER_ERROR, NULL, 0);
    }
}

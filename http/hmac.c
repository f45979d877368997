/* Signing and verification of internal API requests; see hmac.h for the
 * canonical string.
 *
 * The replay cache is an open-addressing table of accepted signatures
 * (their first 16 bytes) with the time each stops mattering. Slots are never
 * emptied, only expired, so a probe may stop at the first empty slot; every
 * entry lives within REPLAY_PROBES slots of its home, so a lookup never looks
 * further. Only verified signatures go in, so an attacker cannot fill it
 * without the secret; if it is full anyway the request is refused (failing
 * closed) rather than a live entry forgotten.
 *
 * Any thread: hmac_sign touches no shared state; a verifier's cache is
 * guarded by its mutex. */
#include "http/hmac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHA256_LEN 32
#define REPLAY_KEY_LEN 16
#define REPLAY_PROBES 32
#define CANONICAL_TAG "RELAYMQ-HMAC-SHA256-V1"

struct replay_slot {
    uint8_t sig[REPLAY_KEY_LEN];
    uint64_t expires_ms; /* 0 = never used */
};

struct hmac_verifier {
    uint8_t *secret;
    size_t secret_len;
    uint64_t max_skew_ms;
    pthread_mutex_t lock;
    struct replay_slot *slots;
    size_t mask;
};

const char *
hmac_result_name(enum hmac_result r)
{
    static const char *const names[HMAC_RESULT_COUNT] = {
        [HMAC_OK] = "ok",
        [HMAC_MISSING] = "missing",
        [HMAC_MALFORMED] = "malformed",
        [HMAC_BAD_SIGNATURE] = "bad_signature",
        [HMAC_STALE] = "stale",
        [HMAC_REPLAY] = "replay",
        [HMAC_CACHE_FULL] = "cache_full",
    };
    return (unsigned)r < HMAC_RESULT_COUNT ? names[r] : "unknown";
}

static void
to_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool
from_hex(const char *text, uint8_t *out, size_t n)
{
    if (strlen(text) != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool
field_ok(const char *s)
{
    return s && !strchr(s, '\n');
}

/* The binary MAC of msg. */
static enum rmq_status
compute(const void *secret, size_t secret_len, const struct hmac_message *msg,
        uint8_t mac[SHA256_LEN])
{
    uint8_t body_hash[SHA256_LEN];
    char body_hex[2 * SHA256_LEN + 1];
    unsigned int len = 0;
    if (!field_ok(msg->method) || !field_ok(msg->path) || !field_ok(msg->node) ||
        !field_ok(msg->nonce) || !msg->nonce[0] || strlen(msg->nonce) > HMAC_NONCE_MAX ||
        (msg->body_len && !msg->body))
        return RMQ_INVALID;
    if (!EVP_Digest(msg->body ? msg->body : "", msg->body_len, body_hash, &len, EVP_sha256(), NULL))
        return RMQ_NOMEM;
    to_hex(body_hash, SHA256_LEN, body_hex);
    size_t cap = strlen(CANONICAL_TAG) + strlen(msg->method) + strlen(msg->path) +
                 strlen(msg->nonce) + strlen(msg->node) + sizeof(body_hex) + 32;
    char *canonical = malloc(cap);
    if (!canonical)
        return RMQ_NOMEM;
    int n =
        snprintf(canonical, cap, "%s\n%s\n%s\n%llu\n%s\n%s\n%s", CANONICAL_TAG, msg->method,
                 msg->path, (unsigned long long)msg->timestamp_ms, msg->nonce, msg->node, body_hex);
    const uint8_t *out = HMAC(EVP_sha256(), secret, (int)secret_len, (const uint8_t *)canonical,
                              (size_t)n, mac, &len);
    free(canonical);
    return out && len == SHA256_LEN ? RMQ_OK : RMQ_NOMEM;
}

enum rmq_status
hmac_sign(const void *secret, size_t secret_len, const struct hmac_message *msg,
          char out[HMAC_HEX_LEN + 1])
{
    uint8_t mac[SHA256_LEN];
    enum rmq_status st = compute(secret, secret_len, msg, mac);
    if (st == RMQ_OK)
        to_hex(mac, SHA256_LEN, out);
    return st;
}

struct hmac_verifier *
hmac_verifier_new(const void *secret, size_t secret_len, uint64_t max_skew_ms,
                  size_t replay_capacity)
{
    if (!secret || secret_len == 0)
        return NULL;
    size_t cap = 64;
    while (cap < replay_capacity)
        cap *= 2;
    struct hmac_verifier *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->secret = malloc(secret_len);
    v->slots = calloc(cap, sizeof(*v->slots));
    if (!v->secret || !v->slots) {
        free(v->secret);
        free(v->slots);
        free(v);
        return NULL;
    }
    memcpy(v->secret, secret, secret_len);
    v->secret_len = secret_len;
    v->max_skew_ms = max_skew_ms;
    v->mask = cap - 1;
    pthread_mutex_init(&v->lock, NULL);
    return v;
}

void
hmac_verifier_free(struct hmac_verifier *v)
{
    if (!v)
        return;
    OPENSSL_cleanse(v->secret, v->secret_len);
    free(v->secret);
    free(v->slots);
    pthread_mutex_destroy(&v->lock);
    free(v);
}

/* Parses a decimal Unix-ms timestamp (digits only, no sign, no spaces). */
static bool
parse_timestamp(const char *text, uint64_t *out)
{
    size_t n = strlen(text);
    if (n == 0 || n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        v = v * 10u + (uint64_t)(text[i] - '0');
    }
    *out = v;
    return true;
}

/* Records sig unless already there. Called with the lock held. */
static enum hmac_result
remember(struct hmac_verifier *v, const uint8_t *sig, uint64_t expires_ms, uint64_t now_ms)
{
    uint64_t home;
    memcpy(&home, sig, sizeof(home)); /* a MAC: already uniformly distributed */
    struct replay_slot *reuse = NULL;
    for (size_t i = 0; i < REPLAY_PROBES; i++) {
        struct replay_slot *s = &v->slots[(home + i) & v->mask];
        if (s->expires_ms == 0) {
            if (!reuse)
                reuse = s;
            break; /* slots never empty again: nothing lies beyond */
        }
        if (s->expires_ms <= now_ms) {
            if (!reuse)
                reuse = s;
            continue; /* expired, but a live copy of sig may still follow */
        }
        if (memcmp(s->sig, sig, REPLAY_KEY_LEN) == 0)
            return HMAC_REPLAY;
    }
    if (!reuse)
        return HMAC_CACHE_FULL;
    memcpy(reuse->sig, sig, REPLAY_KEY_LEN);
    reuse->expires_ms = expires_ms;
    return HMAC_OK;
}

enum hmac_result
hmac_verify(struct hmac_verifier *v, const struct hmac_message *msg, const char *timestamp,
            const char *signature, uint64_t now_ms)
{
    uint8_t got[SHA256_LEN], want[SHA256_LEN];
    uint64_t ts;
    if (!timestamp || !signature || !msg->node || !*msg->node || !msg->nonce || !*msg->nonce)
        return HMAC_MISSING;
    if (!parse_timestamp(timestamp, &ts) || !from_hex(signature, got, sizeof(got)) ||
        strlen(msg->nonce) > HMAC_NONCE_MAX)
        return HMAC_MALFORMED;
    struct hmac_message m = *msg;
    m.timestamp_ms = ts;
    if (compute(v->secret, v->secret_len, &m, want) != RMQ_OK)
        return HMAC_MALFORMED;
    if (CRYPTO_memcmp(got, want, sizeof(got)) != 0)
        return HMAC_BAD_SIGNATURE;
    uint64_t skew = ts > now_ms ? ts - now_ms : now_ms - ts;
    if (skew > v->max_skew_ms)
        return HMAC_STALE;
    pthread_mutex_lock(&v->lock);
    enum hmac_result r = remember(v, got, ts + v->max_skew_ms + 1, now_ms);
    pthread_mutex_unlock(&v->lock);
    return r;
}

/* TLS 1.3 record protection; see tls_record.h.
 *
 * Per record (RFC 8446 5.2, 5.3): the nonce is the direction's IV with the
 * 64-bit sequence number XORed into its last 8 bytes; the additional data
 * is the 5-byte record header; the plaintext is the content, one byte of
 * real content type, then optional zero padding (never sent, stripped when
 * received). Keys come from the traffic secrets with HKDF-Expand-Label
 * (7.1, 7.3): "key" and "iv", and "traffic upd" for the next secret.
 *
 * Cipher contexts are not kept per connection (an AES-GCM context is about
 * 1 KiB, and most connections are idle). Each thread keeps a direct-mapped
 * cache of KEY_CACHE contexts per suite and direction. Every key
 * derivation gets a number (gen) from a process-wide counter per
 * direction, and uses cache slot gen % KEY_CACHE; a slot remembers the gen
 * of the key it holds, so a connection whose key is still loaded pays only
 * for a new nonce, and one whose slot another key took pays for a key
 * schedule (about 0.3 us). Consecutive numbers give up to KEY_CACHE busy
 * connections a slot each (a fan-out to a few hundred subscribers does
 * not thrash). Numbers are never reused, so a freed connection's key is
 * never taken for a new connection's at the same address. */
#include "broker/tls_record.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { SUITE_AES_128_GCM, SUITE_AES_256_GCM, SUITE_CHACHA20, SUITE_COUNT };

static const struct suite {
    uint16_t id;
    const char *cipher, *digest;
    uint8_t key_len, hash_len;
} SUITES[SUITE_COUNT] = {
    [SUITE_AES_128_GCM] = {0x1301, "AES-128-GCM", "SHA256", 16, 32},
    [SUITE_AES_256_GCM] = {0x1302, "AES-256-GCM", "SHA384", 32, 48},
    [SUITE_CHACHA20] = {0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32},
};

struct slot {
    EVP_CIPHER_CTX *ctx;
    uint64_t gen; /* of the key loaded, 0: none */
};

#define KEY_CACHE 256u

/* [suite][encrypt][gen % KEY_CACHE], allocated on first use. */
static _Thread_local struct slot (*slots)[2][KEY_CACHE];
static atomic_uint_fast64_t last_gen[2]; /* [tx] */

static int
suite_index(uint16_t id)
{
    for (int i = 0; i < SUITE_COUNT; i++)
        if (SUITES[i].id == id)
            return i;
    return -1;
}

bool
tls13_suite_supported(uint16_t suite_id)
{
    return suite_index(suite_id) >= 0;
}

/* HKDF-Expand-Label(secret, label, "", out_len). */
static bool
expand_label(const struct suite *su, const uint8_t *secret, const char *label, uint8_t *out,
             size_t out_len)
{
    static const char PREFIX[] = "tls13 ";
    size_t label_len = sizeof(PREFIX) - 1 + strlen(label);
    uint8_t info[2 + 1 + 32 + 1];
    if (label_len > 32)
        return false;
    info[0] = (uint8_t)(out_len >> 8);
    info[1] = (uint8_t)out_len;
    info[2] = (uint8_t)label_len;
    memcpy(info + 3, PREFIX, sizeof(PREFIX) - 1);
    memcpy(info + 3 + sizeof(PREFIX) - 1, label, strlen(label));
    info[3 + label_len] = 0; /* empty context */

    static _Thread_local EVP_KDF *kdf; /* fetched once per thread, kept */
    if (!kdf)
        kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)su->digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, su->hash_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 4 + label_len),
        OSSL_PARAM_construct_end(),
    };
    bool ok = kctx && EVP_KDF_derive(kctx, out, out_len, params) == 1;
    EVP_KDF_CTX_free(kctx);
    if (!ok)
        ERR_clear_error();
    return ok;
}

/* d's secret becomes secret; its key and IV follow from it. */
static bool
set_secret(const struct tls13 *s, struct tls13_dir *d, const uint8_t *secret)
{
    const struct suite *su = &SUITES[s->suite];
    uint8_t next[sizeof(d->secret)];
    memcpy(next, secret, su->hash_len);
    OPENSSL_cleanse(d, sizeof(*d));
    memcpy(d->secret, next, su->hash_len);
    OPENSSL_cleanse(next, sizeof(next));
    d->gen = atomic_fetch_add(&last_gen[d == &s->tx], 1) + 1;
    return expand_label(su, d->secret, "key", d->key, su->key_len) &&
           expand_label(su, d->secret, "iv", d->iv, sizeof(d->iv));
}

bool
tls13_init(struct tls13 *s, uint16_t suite_id, const uint8_t *client_secret,
           const uint8_t *server_secret, size_t secret_len)
{
    int i = suite_index(suite_id);
    memset(s, 0, sizeof(*s));
    if (i < 0 || secret_len != SUITES[i].hash_len)
        return false;
    s->suite = (uint8_t)i;
    s->hash_len = SUITES[i].hash_len;
    s->key_len = SUITES[i].key_len;
    if (set_secret(s, &s->rx, client_secret) && set_secret(s, &s->tx, server_secret))
        return true;
    tls13_wipe(s);
    return false;
}

/* The cached context holding d's key, if one does, is keyed with zeros
 * instead: a closed connection's keys do not stay in the cache. */
static void
forget(const struct tls13 *s, const struct tls13_dir *d, int encrypt)
{
    static const uint8_t ZERO[32];
    struct slot *sl = slots && d->gen ? &slots[s->suite][encrypt][d->gen % KEY_CACHE] : NULL;
    if (!sl || !sl->ctx || sl->gen != d->gen)
        return;
    if (EVP_CipherInit_ex(sl->ctx, NULL, NULL, ZERO, NULL, encrypt) != 1)
        ERR_clear_error();
    sl->gen = 0;
}

void
tls13_wipe(struct tls13 *s)
{
    forget(s, &s->rx, 0);
    forget(s, &s->tx, 1);
    OPENSSL_cleanse(s, sizeof(*s));
}

bool
tls13_update(const struct tls13 *s, struct tls13_dir *d)
{
    uint8_t next[sizeof(d->secret)];
    forget(s, d, d == &s->tx);
    bool ok = expand_label(&SUITES[s->suite], d->secret, "traffic upd", next, s->hash_len) &&
              set_secret(s, d, next);
    OPENSSL_cleanse(next, sizeof(next));
    return ok;
}

/* The thread's context for s's suite and this direction, keyed with d's key
 * and set to the nonce of d's next record. NULL when OpenSSL fails. */
static EVP_CIPHER_CTX *
load(const struct tls13 *s, const struct tls13_dir *d, int encrypt)
{
    if (!slots && !(slots = calloc(SUITE_COUNT, sizeof(*slots))))
        return NULL;
    struct slot *sl = &slots[s->suite][encrypt][d->gen % KEY_CACHE];
    if (!sl->ctx) {
        EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, SUITES[s->suite].cipher, NULL);
        sl->ctx = cipher ? EVP_CIPHER_CTX_new() : NULL;
        if (!sl->ctx || EVP_CipherInit_ex(sl->ctx, cipher, NULL, NULL, NULL, encrypt) != 1) {
            EVP_CIPHER_CTX_free(sl->ctx);
            sl->ctx = NULL;
        }
        EVP_CIPHER_free(cipher); /* the context keeps its own reference */
        sl->gen = 0;
        if (!sl->ctx) {
            ERR_clear_error();
            return NULL;
        }
    }
    uint8_t nonce[sizeof(d->iv)];
    memcpy(nonce, d->iv, sizeof(nonce));
    for (int i = 0; i < 8; i++)
        nonce[sizeof(nonce) - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
    const uint8_t *key = sl->gen == d->gen ? NULL : d->key;
    if (EVP_CipherInit_ex(sl->ctx, NULL, NULL, key, nonce, encrypt) != 1) {
        sl->gen = 0;
        ERR_clear_error();
        return NULL;
    }
    sl->gen = d->gen;
    return sl->ctx;
}

size_t
tls13_seal(struct tls13 *s, uint8_t type, uint8_t *rec, size_t len)
{
    uint8_t *body = rec + TLS13_HEADER;
    size_t inner = len + 1, total = inner + TLS13_TAG;
    if (len > TLS13_MAX_PLAIN)
        return 0;
    body[len] = type;
    rec[0] = TLS13_APPLICATION_DATA;
    rec[1] = 3;
    rec[2] = 3;
    rec[3] = (uint8_t)(total >> 8);
    rec[4] = (uint8_t)total;
    EVP_CIPHER_CTX *c = load(s, &s->tx, 1);
    int n, fin;
    if (!c || EVP_EncryptUpdate(c, NULL, &n, rec, TLS13_HEADER) != 1 ||
        EVP_EncryptUpdate(c, body, &n, body, (int)inner) != 1 ||
        EVP_EncryptFinal_ex(c, body + n, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TLS13_TAG, body + inner) != 1) {
        ERR_clear_error();
        return 0;
    }
    s->tx.seq++;
    return TLS13_HEADER + total;
}

bool
tls13_open(struct tls13 *s, uint8_t *rec, size_t rec_len, uint8_t **content, size_t *content_len,
           uint8_t *type)
{
    if (rec_len < TLS13_HEADER + TLS13_TAG + 1)
        return false;
    uint8_t *body = rec + TLS13_HEADER;
    size_t body_len = rec_len - TLS13_HEADER - TLS13_TAG;
    EVP_CIPHER_CTX *c = load(s, &s->rx, 0);
    int n, fin;
    if (!c || EVP_DecryptUpdate(c, NULL, &n, rec, TLS13_HEADER) != 1 ||
        EVP_DecryptUpdate(c, body, &n, body, (int)body_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TLS13_TAG, body + body_len) != 1 ||
        EVP_DecryptFinal_ex(c, body + n, &fin) != 1) {
        ERR_clear_error();
        return false;
    }
    s->rx.seq++;
    size_t i = body_len;
    while (i > 0 && body[i - 1] == 0)
        i--;
    if (i == 0)
        return false; /* all padding: no content type (RFC 8446 5.4) */
    *type = body[i - 1];
    *content = body;
    *content_len = i - 1;
    return true;
}

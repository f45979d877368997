/* Password file authentication; see auth.h.
 *
 * Users live in a hashmap keyed by username, each with its iteration count,
 * salt and expected PBKDF2-HMAC-SHA512 output. auth_load() builds the map
 * once at start-up; afterwards it is only read, so checks are thread-safe.
 * Verification recomputes PBKDF2 with the stored parameters and compares
 * with CRYPTO_memcmp. The iteration count is bounded (AUTH_MAX_ITERATIONS)
 * because every CONNECT pays it on the loop thread. */
#include "broker/auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hashmap.h"

#define AUTH_MAX_ITERATIONS 1000000u
#define AUTH_MIN_SALT 8u
#define AUTH_MAX_SALT 64u

struct auth_user {
    unsigned iterations;
    size_t salt_len;
    unsigned char salt[AUTH_MAX_SALT];
    unsigned char hash[AUTH_HASH_LEN];
};

struct auth {
    struct hashmap *users; /* username -> struct auth_user (owned) */
};

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict standard base64 with padding. Returns the decoded length, or -1 if
 * the text is malformed or does not fit in cap bytes. */
static long
b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    size_t n = 0;
    if (len == 0 || len % 4 != 0)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + (size_t)k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64_value(c)) < 0) {
                return -1; /* '=' in the middle, or a data character after '=' */
            }
        }
        unsigned long w = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
                          ((unsigned long)v[2] << 6) | (unsigned long)v[3];
        unsigned char bytes[3] = {(unsigned char)(w >> 16), (unsigned char)(w >> 8),
                                  (unsigned char)w};
        size_t take = 3u - (size_t)pad;
        if (n + take > cap)
            return -1;
        memcpy(out + n, bytes, take);
        n += take;
    }
    return (long)n;
}

bool
auth_username_valid(const char *username)
{
    if (!username || !*username)
        return false;
    for (const unsigned char *p = (const unsigned char *)username; *p; p++)
        if (*p == ':' || *p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* Parses "$7$ITER$SALT$HASH" into u. Returns NULL or what is wrong. */
static const char *
parse_hash(const char *s, struct auth_user *u)
{
    if (strncmp(s, "$7$", 3) != 0)
        return strncmp(s, "$6$", 3) == 0 ? "the $6$ (salted SHA512) format is not supported; "
                                           "re-create the password with relaymq passwd"
                                         : "the password hash does not start with $7$";
    s += 3;
    char *end;
    errno = 0;
    unsigned long it = strtoul(s, &end, 10);
    if (end == s || *end != '$' || errno || it == 0 || it > AUTH_MAX_ITERATIONS || *s == '-')
        return "bad iteration count (1 to 1000000)";
    u->iterations = (unsigned)it;
    const char *salt = end + 1;
    const char *dollar = strchr(salt, '$');
    if (!dollar)
        return "missing '$' between salt and hash";
    long n = b64_decode(salt, (size_t)(dollar - salt), u->salt, sizeof(u->salt));
    if (n < (long)AUTH_MIN_SALT)
        return "bad salt (base64 of 8 to 64 bytes expected)";
    u->salt_len = (size_t)n;
    const char *hash = dollar + 1;
    unsigned char tmp[AUTH_HASH_LEN + 3];
    n = b64_decode(hash, strlen(hash), tmp, sizeof(tmp));
    if (n != (long)AUTH_HASH_LEN)
        return "bad hash (base64 of 64 bytes expected)";
    memcpy(u->hash, tmp, AUTH_HASH_LEN);
    return NULL;
}

/* Adds one non-comment line. Returns NULL or what is wrong with it. */
static const char *
add_line(struct auth *a, char *line)
{
    char *colon = strchr(line, ':');
    if (!colon)
        return "expected username:$7$...";
    *colon = '\0';
    if (!auth_username_valid(line))
        return "empty username or a control character in it";
    if (hashmap_get(a->users, line, strlen(line)))
        return "duplicate username";
    struct auth_user *u = calloc(1, sizeof(*u));
    if (!u)
        return "out of memory";
    const char *why = parse_hash(colon + 1, u);
    if (!why && hashmap_put(a->users, line, strlen(line), u, NULL) != RMQ_OK)
        why = "out of memory";
    if (why)
        free(u);
    return why;
}

struct auth *
auth_load(const char *path, char *err, size_t errlen)
{
    struct auth *a = calloc(1, sizeof(*a));
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    FILE *f = NULL;
    if (!a || !(a->users = hashmap_new(free))) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    if (!(f = fopen(path, "r"))) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                         line[n - 1] == '\t'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        if ((size_t)n != strlen(line)) {
            snprintf(err, errlen, "%s:%u: NUL byte in line", path, lineno);
            goto fail;
        }
        const char *why = add_line(a, line);
        if (why) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
            goto fail;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    free(line);
    return a;
fail:
    if (f)
        fclose(f);
    if (line) {
        OPENSSL_cleanse(line, cap);
        free(line);
    }
    auth_free(a);
    return NULL;
}

size_t
auth_user_count(const struct auth *a)
{
    return hashmap_count(a->users);
}

void
auth_free(struct auth *a)
{
    if (!a)
        return;
    hashmap_free(a->users);
    free(a);
}

static bool
pbkdf2(const char *password, size_t len, const unsigned char *salt, size_t salt_len,
       unsigned iterations, unsigned char out[AUTH_HASH_LEN])
{
    /* OpenSSL takes an int length; MQTT passwords are at most 65535 bytes. */
    if (len > 65535)
        return false;
    return PKCS5_PBKDF2_HMAC(password ? password : "", (int)len, salt, (int)salt_len,
                             (int)iterations, EVP_sha512(), AUTH_HASH_LEN, out) == 1;
}

enum auth_result
auth_check(const struct auth *a, const char *username, size_t username_len, const char *password,
           size_t password_len)
{
    static const unsigned char dummy_salt[AUTH_SALT_LEN] = "relaymq-salt";
    const struct auth_user *u = hashmap_get(a->users, username, username_len);
    unsigned char got[AUTH_HASH_LEN];
    if (!u) {
        /* Same work as a real check, so timing does not reveal which users exist. */
        (void)pbkdf2(password, password_len, dummy_salt, sizeof(dummy_salt),
                     AUTH_DEFAULT_ITERATIONS, got);
        OPENSSL_cleanse(got, sizeof(got));
        return AUTH_UNKNOWN_USER;
    }
    bool ok = pbkdf2(password, password_len, u->salt, u->salt_len, u->iterations, got) &&
              CRYPTO_memcmp(got, u->hash, AUTH_HASH_LEN) == 0;
    OPENSSL_cleanse(got, sizeof(got));
    /* No password at all never matches, even if the stored one is empty. */
    return ok && password ? AUTH_OK : AUTH_BAD_PASSWORD;
}

enum auth_result
auth_check_encoded(const char *encoded, size_t len, const char *password, size_t password_len,
                   const char **why)
{
    struct auth_user u;
    char text[512];
    *why = NULL;
    if (len >= sizeof(text) || memchr(encoded, '\0', len)) {
        *why = "too long, or not text";
        return AUTH_MALFORMED;
    }
    memcpy(text, encoded, len);
    text[len] = '\0';
    if ((*why = parse_hash(text, &u)) != NULL)
        return AUTH_MALFORMED;
    unsigned char got[AUTH_HASH_LEN];
    bool ok = pbkdf2(password, password_len, u.salt, u.salt_len, u.iterations, got) &&
              CRYPTO_memcmp(got, u.hash, AUTH_HASH_LEN) == 0;
    OPENSSL_cleanse(got, sizeof(got));
    OPENSSL_cleanse(&u, sizeof(u));
    return ok && password ? AUTH_OK : AUTH_BAD_PASSWORD;
}

enum rmq_status
auth_format_line(const char *username, const char *password, size_t password_len,
                 unsigned iterations, char *out, size_t outlen)
{
    unsigned char salt[AUTH_SALT_LEN], hash[AUTH_HASH_LEN];
    /* base64 of 12 and 64 bytes, each with a NUL */
    char salt64[4 * ((AUTH_SALT_LEN + 2) / 3) + 1], hash64[4 * ((AUTH_HASH_LEN + 2) / 3) + 1];
    enum rmq_status st = RMQ_IO;

    if (!auth_username_valid(username) || iterations == 0 || iterations > AUTH_MAX_ITERATIONS)
        return RMQ_INVALID;
    if (RAND_bytes(salt, sizeof(salt)) != 1 ||
        !pbkdf2(password, password_len, salt, sizeof(salt), iterations, hash))
        goto done;
    EVP_EncodeBlock((unsigned char *)salt64, salt, sizeof(salt));
    EVP_EncodeBlock((unsigned char *)hash64, hash, sizeof(hash));
    int n = snprintf(out, outlen, "%s:$7$%u$%s$%s", username, iterations, salt64, hash64);
    st = n > 0 && (size_t)n < outlen ? RMQ_OK : RMQ_INVALID;
done:
    OPENSSL_cleanse(hash, sizeof(hash));
    return st;
}

/* Password authentication from a Mosquitto-compatible password file.
 *
 * File format: one "username:$7$ITERATIONS$SALT$HASH" per line, where SALT
 * and HASH are standard base64 (with padding) and HASH is
 * PBKDF2-HMAC-SHA512(password, salt, ITERATIONS). This is exactly what
 * `mosquitto_passwd` (Mosquitto 2.x) writes, so files are interchangeable.
 * Blank lines and lines starting with '#' are ignored.
 *
 * A loaded struct auth is immutable: any thread may call auth_check() on it
 * concurrently. Passwords are never logged or copied. */
#ifndef RMQ_BROKER_AUTH_H
#define RMQ_BROKER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

#define AUTH_DEFAULT_ITERATIONS 101u /* mosquitto_passwd's default */
#define AUTH_SALT_LEN 12u
#define AUTH_HASH_LEN 64u

struct auth;

enum auth_result {
    AUTH_OK,
    AUTH_BAD_PASSWORD, /* user known, password wrong (or none given) */
    AUTH_UNKNOWN_USER,
    AUTH_MALFORMED, /* auth_check_encoded: the stored hash is not "$7$..." */
};

/* Reads the password file at path. NULL on failure, with one line in err
 * naming "path:line" and the problem (or the I/O error). */
struct auth *auth_load(const char *path, char *err, size_t errlen);

/* Checks a username and a password (both byte strings with lengths, not
 * NUL-terminated; password may be NULL for "no password"). Constant-time in
 * the hash comparison; an unknown user costs the same PBKDF2 work as a known
 * one so timing does not reveal which users exist. */
enum auth_result auth_check(const struct auth *auth, const char *username, size_t username_len,
                            const char *password, size_t password_len);

/* Checks a password against one stored hash, "$7$ITERATIONS$SALT$HASH"
 * (len bytes, not NUL-terminated): a password file line's part after
 * "user:", as the users kept in Redis hold it. AUTH_MALFORMED with *why
 * saying what is wrong if it is not such a hash. */
enum auth_result auth_check_encoded(const char *encoded, size_t len, const char *password,
                                    size_t password_len, const char **why);

/* Number of users loaded. */
size_t auth_user_count(const struct auth *auth);

/* NULL-safe. */
void auth_free(struct auth *auth);

/* Formats one password file line, without the newline, into out:
 * "username:$7$iterations$salt$hash" with a fresh random salt. RMQ_INVALID
 * if the username is not storable (empty, ':' or a control character) or
 * out is too small, RMQ_IO if the random generator or PBKDF2 fails. */
enum rmq_status auth_format_line(const char *username, const char *password, size_t password_len,
                                 unsigned iterations, char *out, size_t outlen);

/* True if username can be stored in a password file (non-empty, no ':',
 * no control characters). */
bool auth_username_valid(const char *username);

#endif

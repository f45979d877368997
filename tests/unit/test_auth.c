/* Unit tests for broker/auth.c: lines made by auth_format_line() and a
 * fixed line made by mosquitto_passwd 2.0.11 verify; wrong passwords,
 * unknown users and a missing password fail; bad lines are refused with
 * "file:line"; passwords are binary with explicit lengths. Files are
 * written to a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/auth.h"

/* mosquitto_passwd -c -b FILE alice secret (Mosquitto 2.0.11) */
#define MOSQ_ALICE                                                                                 \
    "alice:$7$101$Y1gsto3W492dVyyD$hvZAE8gBWSdS7ukXF9JIHsvvbgbXY0A64eUvQ35Xfv9AVN5aRqUL41B2K5cI9"  \
    "Eoam6Uc6vDpHiy0bVJ/N7PMAQ=="

static char dir[64];
static char path[128];

static int
setup(void **state)
{
    strcpy(dir, "/tmp/test_auth.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/pw", dir);
    return 0;
}

static int
teardown(void **state)
{
    unlink(path);
    rmdir(dir);
    return 0;
}

static void
write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static enum auth_result
check(const struct auth *a, const char *user, const char *pw)
{
    return auth_check(a, user, strlen(user), pw, pw ? strlen(pw) : 0);
}

static void
test_mosquitto_line(void **state)
{
    char err[256] = "";
    write_file("# made by mosquitto_passwd\n\n" MOSQ_ALICE "\n");
    struct auth *a = auth_load(path, err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(auth_user_count(a), 1);
    assert_int_equal(check(a, "alice", "secret"), AUTH_OK);
    assert_int_equal(check(a, "alice", "Secret"), AUTH_BAD_PASSWORD);
    assert_int_equal(check(a, "alice", "secret "), AUTH_BAD_PASSWORD);
    assert_int_equal(check(a, "alice", ""), AUTH_BAD_PASSWORD);
    assert_int_equal(check(a, "alice", NULL), AUTH_BAD_PASSWORD);
    assert_int_equal(check(a, "alic", "secret"), AUTH_UNKNOWN_USER);
    assert_int_equal(check(a, "alicex", "secret"), AUTH_UNKNOWN_USER);
    assert_int_equal(check(a, "bob", "secret"), AUTH_UNKNOWN_USER);
    /* Lengths, not NULs: a prefix of a longer buffer. */
    assert_int_equal(auth_check(a, "alice!", 5, "secretXYZ", 6), AUTH_OK);
    auth_free(a);
}

static void
test_format_roundtrip(void **state)
{
    char line[512], err[256] = "", file[1200];
    const char binary[] = {'p', '\0', 'w', '\xff'};
    assert_int_equal(
        auth_format_line("bob", "hunter2", 7, AUTH_DEFAULT_ITERATIONS, line, sizeof(line)), RMQ_OK);
    assert_true(strncmp(line, "bob:$7$101$", 11) == 0);
    char line2[512];
    assert_int_equal(
        auth_format_line("carol smith", binary, sizeof(binary), 1000, line2, sizeof(line2)),
        RMQ_OK);
    snprintf(file, sizeof(file), "%s\n%s\r\n" MOSQ_ALICE, line, line2); /* no final newline */
    write_file(file);
    struct auth *a = auth_load(path, err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(auth_user_count(a), 3);
    assert_int_equal(check(a, "bob", "hunter2"), AUTH_OK);
    assert_int_equal(check(a, "bob", "hunter3"), AUTH_BAD_PASSWORD);
    assert_int_equal(auth_check(a, "carol smith", 11, binary, sizeof(binary)), AUTH_OK);
    assert_int_equal(auth_check(a, "carol smith", 11, binary, 1), AUTH_BAD_PASSWORD);
    assert_int_equal(check(a, "alice", "secret"), AUTH_OK);
    auth_free(a);

    /* Same password twice: different salts. */
    char again[512];
    assert_int_equal(
        auth_format_line("bob", "hunter2", 7, AUTH_DEFAULT_ITERATIONS, again, sizeof(again)),
        RMQ_OK);
    assert_string_not_equal(line, again);
}

static void
test_format_refuses(void **state)
{
    char line[512], tiny[40];
    assert_int_equal(auth_format_line("", "x", 1, 101, line, sizeof(line)), RMQ_INVALID);
    assert_int_equal(auth_format_line("a:b", "x", 1, 101, line, sizeof(line)), RMQ_INVALID);
    assert_int_equal(auth_format_line("a\nb", "x", 1, 101, line, sizeof(line)), RMQ_INVALID);
    assert_int_equal(auth_format_line("a", "x", 1, 0, line, sizeof(line)), RMQ_INVALID);
    assert_int_equal(auth_format_line("a", "x", 1, 101, tiny, sizeof(tiny)), RMQ_INVALID);
}

struct bad_case {
    const char *text;
    const char *want; /* substring of the error after "path:" */
};

static void
test_bad_lines(void **state)
{
    static const struct bad_case cases[] = {
        {"alice\n", ":1: expected username"},
        {"\n" MOSQ_ALICE "\n" MOSQ_ALICE "\n", ":3: duplicate username"},
        {":$7$101$Y1gsto3W492dVyyD$"
         "AAAA\n",
         ":1: empty username"},
        {"bob:plaintext\n", ":1: the password hash does not start with $7$"},
        {"bob:$6$abc$def\n", ":1: the $6$"},
        {"bob:$7$0$Y1gsto3W492dVyyD$AAAA\n", ":1: bad iteration count"},
        {"bob:$7$x$Y1gsto3W492dVyyD$AAAA\n", ":1: bad iteration count"},
        {"bob:$7$-5$Y1gsto3W492dVyyD$AAAA\n", ":1: bad iteration count"},
        {"bob:$7$99999999$Y1gsto3W492dVyyD$AAAA\n", ":1: bad iteration count"},
        {"bob:$7$101$Y1gsto3W492dVyyD\n", ":1: missing '$'"},
        {"bob:$7$101$Y1g!to3W492dVyyD$AAAA\n", ":1: bad salt"},
        {"bob:$7$101$AAAA$AAAA\n", ":1: bad salt"},
        {"# c\nbob:$7$101$Y1gsto3W492dVyyD$AAAA\n", ":2: bad hash"},
        {"bob:$7$101$Y1gsto3W492dVyyD$"
         "hvZAE8gBWSdS7ukXF9JIHsvvbgbXY0A64eUvQ35Xfv9AVN5aRqUL41B2K5cI9"
         "Eoam6Uc6vDpHiy0bVJ/N7PMA=A=\n",
         ":1: bad hash"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "", want[256];
        write_file(cases[i].text);
        struct auth *a = auth_load(path, err, sizeof(err));
        if (a)
            fail_msg("case %zu loaded", i);
        snprintf(want, sizeof(want), "%s%s", path, cases[i].want);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("case %zu: expected error starting '%s', got '%s'", i, want, err);
    }
}

/* One stored hash checked alone (users kept in Redis): Mosquitto's line
 * after "alice:" verifies; wrong, short, long and missing passwords do not;
 * what is not a $7$ hash is AUTH_MALFORMED with a reason, never a match. */
static void
test_encoded(void **state)
{
    (void)state;
    const char *enc = strchr(MOSQ_ALICE, ':') + 1;
    size_t n = strlen(enc);
    const char *why = "unset";
    assert_int_equal(auth_check_encoded(enc, n, "secret", 6, &why), AUTH_OK);
    assert_null(why);
    assert_int_equal(auth_check_encoded(enc, n, "secreT", 6, &why), AUTH_BAD_PASSWORD);
    assert_int_equal(auth_check_encoded(enc, n, "secret", 5, &why), AUTH_BAD_PASSWORD);
    assert_int_equal(auth_check_encoded(enc, n, NULL, 0, &why), AUTH_BAD_PASSWORD);
    assert_int_equal(auth_check_encoded(enc, n, "secret1", 7, &why), AUTH_BAD_PASSWORD);
    /* Not NUL-terminated: only n bytes are read. */
    char copy[256];
    memcpy(copy, enc, n);
    memset(copy + n, 'A', sizeof(copy) - n);
    assert_int_equal(auth_check_encoded(copy, n, "secret", 6, &why), AUTH_OK);
    static const char bad_salt[] =
        "$7$101$!!!!$hvZAE8gBWSdS7ukXF9JIHsvvbgbXY0A64eUvQ35Xfv9AVN5aRqUL41B2K5cI9Eoam6Uc6v"
        "DpHiy0bVJ/N7PMAQ==";
    static const char *const bad[] = {
        "",
        "secret",
        "$6$abc$def",
        "$7$0$Y1gsto3W492dVyyD$AAAA",
        "$7$2000000$Y1gsto3W492dVyyD$AAAA",
        "$7$101$Y1gsto3W492dVyyD",
        bad_salt,
        "$7$101$Y1gsto3W492dVyyD$c2hvcnQ=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(auth_check_encoded(bad[i], strlen(bad[i]), "secret", 6, &why),
                         AUTH_MALFORMED);
        assert_non_null(why);
    }
    char big[600];
    memset(big, 'x', sizeof(big));
    assert_int_equal(auth_check_encoded(big, sizeof(big), "secret", 6, &why), AUTH_MALFORMED);
    assert_int_equal(auth_check_encoded("$7$\0", 4, "secret", 6, &why), AUTH_MALFORMED);
}

static void
test_missing_file(void **state)
{
    char err[256] = "";
    assert_null(auth_load("/nonexistent/relaymq-pw", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/relaymq-pw: "));
    auth_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mosquitto_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_roundtrip, setup, teardown),
        cmocka_unit_test(test_format_refuses),
        cmocka_unit_test_setup_teardown(test_bad_lines, setup, teardown),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_encoded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for broker/acl.c: the covers relation as a table,
 * per-user and anonymous rules, patterns with %c and %u (and the
 * client ids and usernames that must not reach through them), deny rules,
 * deny by default, and file errors naming "file:line". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/acl.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static char dir[64];
static char path[128];

static int
setup(void **state)
{
    strcpy(dir, "/tmp/test_acl.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/acl", dir);
    return 0;
}

static int
teardown(void **state)
{
    unlink(path);
    rmdir(dir);
    return 0;
}

static struct acl *
load(const char *text)
{
    char err[256] = "";
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    struct acl *acl = acl_load(path, err, sizeof(err));
    if (!acl)
        fail_msg("acl_load: %s", err);
    return acl;
}

struct rel_case {
    const char *a, *b;
    bool want;
};

/* rule, requested filter, covered? */
static const struct rel_case covers_cases[] = {
    {"a/b", "a/b", true},       {"a/b", "a/c", false},
    {"a/b", "a", false},        {"a", "a/b", false},
    {"a/+", "a/b", true},       {"a/+", "a/+", true},
    {"a/+", "a/#", false},      {"a/+", "a/b/c", false},
    {"a/+", "a", false},        {"a/#", "a", true},
    {"a/#", "a/#", true},       {"a/#", "a/b/+", true},
    {"a/#", "a/+/#", true},     {"a/#", "b/#", false},
    {"#", "#", true},           {"#", "a/b", true},
    {"#", "$SYS/x", false},     {"+/x", "$SYS/x", false},
    {"$SYS/#", "$SYS/x", true}, {"+/+", "+/x", true},
    {"+/x", "+/+", false},      {"a/+/c", "a/+/c", true},
    {"a/+/c", "a/b/#", false},  {"a/+/#", "a/#", false},
    {"a/+/#", "a/b", true},     {"a//b", "a//b", true},
    {"a/+/b", "a//b", true},    {"test/#", "test/nosubscribe", true},
    {"ab", "a", false},
};

static void
test_covers(void **state)
{
    for (size_t i = 0; i < N_ELEMS(covers_cases); i++) {
        const struct rel_case *c = &covers_cases[i];
        bool got = acl_filter_covers(c->a, strlen(c->a), c->b, strlen(c->b));
        if (got != c->want)
            fail_msg("covers(%s, %s) = %d, expected %d", c->a, c->b, got, c->want);
    }
}

static bool
may(const struct acl *acl, const char *id, const char *user, const char *topic,
    enum acl_access access)
{
    return acl_check(acl, id, user, topic, strlen(topic), access);
}

static void
test_sections(void **state)
{
    struct acl *acl = load("# anonymous clients\n"
                           "  topic read public/#\n"
                           "topic write   in/+\n"
                           "\n"
                           "user alice\n"
                           "topic readwrite alice/#\n"
                           "topic read shared\n"
                           "user bob smith\n"
                           "topic write bob/x\n"
                           "user alice\n" /* a second section appends */
                           "topic readwrite extra/topic with spaces\n");
    /* Anonymous */
    assert_true(may(acl, "c1", NULL, "public/a", ACL_READ));
    assert_true(may(acl, "c1", NULL, "public/#", ACL_READ));
    assert_false(may(acl, "c1", NULL, "public/a", ACL_WRITE));
    assert_true(may(acl, "c1", NULL, "in/x", ACL_WRITE));
    assert_false(may(acl, "c1", NULL, "in/x/y", ACL_WRITE));
    assert_false(may(acl, "c1", NULL, "alice/a", ACL_READ));
    assert_false(may(acl, "c1", NULL, "#", ACL_READ));
    /* alice: only her own rules, not the anonymous ones */
    assert_true(may(acl, "c2", "alice", "alice/a/b", ACL_WRITE));
    assert_true(may(acl, "c2", "alice", "alice/#", ACL_READ));
    assert_true(may(acl, "c2", "alice", "alice", ACL_READ));
    assert_true(may(acl, "c2", "alice", "shared", ACL_READ));
    assert_false(may(acl, "c2", "alice", "shared", ACL_WRITE));
    assert_false(may(acl, "c2", "alice", "public/a", ACL_READ));
    assert_true(may(acl, "c2", "alice", "extra/topic with spaces", ACL_WRITE));
    /* usernames with spaces, and users without a section */
    assert_true(may(acl, "c3", "bob smith", "bob/x", ACL_WRITE));
    assert_false(may(acl, "c3", "bob smith", "bob/x", ACL_READ));
    assert_false(may(acl, "c3", "bob", "bob/x", ACL_WRITE));
    assert_false(may(acl, "c3", "carol", "public/a", ACL_READ));
    /* $ topics need explicit rules */
    assert_false(may(acl, "c2", "alice", "$SYS/x", ACL_READ));
    acl_free(acl);
}

static void
test_patterns(void **state)
{
    struct acl *acl = load("pattern readwrite devices/%u/#\n"
                           "pattern write clients/%c\n"
                           "pattern read %u-%c/in\n"
                           "user alice\n"
                           "topic read news\n");
    assert_true(may(acl, "dev1", "alice", "devices/alice/t", ACL_WRITE));
    assert_true(may(acl, "dev1", "alice", "devices/alice/#", ACL_READ));
    assert_false(may(acl, "dev1", "alice", "devices/bob/t", ACL_WRITE));
    assert_false(may(acl, "dev1", "alice", "devices/#", ACL_READ));
    assert_true(may(acl, "dev1", "alice", "clients/dev1", ACL_WRITE));
    assert_false(may(acl, "dev1", "alice", "clients/dev2", ACL_WRITE));
    assert_false(may(acl, "dev1", "alice", "clients/dev1", ACL_READ));
    assert_true(may(acl, "dev1", "alice", "alice-dev1/in", ACL_READ));
    assert_true(may(acl, "dev1", "alice", "news", ACL_READ)); /* her own rules too */
    /* Anonymous: patterns with %u never apply, %c ones do */
    assert_true(may(acl, "dev9", NULL, "clients/dev9", ACL_WRITE));
    assert_false(may(acl, "dev9", NULL, "devices//t", ACL_WRITE));
    assert_false(may(acl, "dev9", NULL, "devices/+/t", ACL_WRITE));
    /* Values that would widen a rule or reach into another client's tree */
    assert_false(may(acl, "x", "#", "devices/bob/t", ACL_WRITE));
    assert_false(may(acl, "x", "+", "devices/bob/t", ACL_WRITE));
    assert_false(may(acl, "x", "+", "devices/+/t", ACL_READ));
    assert_false(may(acl, "x", "bob/t", "devices/bob/t/z", ACL_WRITE));
    assert_false(may(acl, "x", "", "devices//t", ACL_WRITE));
    assert_false(may(acl, "#", "alice", "clients/#", ACL_READ));
    assert_false(may(acl, "a/b", "alice", "clients/a/b", ACL_WRITE));
    /* ...but other patterns still apply to such a client */
    assert_true(may(acl, "a/b", "alice", "devices/alice/t", ACL_WRITE));
    acl_free(acl);
}

static void
test_deny(void **state)
{
    struct acl *acl = load("topic read #\n"
                           "topic readwrite test/#\n"
                           "topic deny test/nosubscribe\n"
                           "pattern deny private/%c/#\n");
    assert_true(may(acl, "c", NULL, "test/a", ACL_READ));
    assert_true(may(acl, "c", NULL, "test/a", ACL_WRITE));
    assert_false(may(acl, "c", NULL, "test/nosubscribe", ACL_READ));
    assert_false(may(acl, "c", NULL, "test/nosubscribe", ACL_WRITE));
    /* Deny rules refuse what they cover; wider filters are allowed (no
     * delivery-time check yet: see acl.h). */
    assert_true(may(acl, "c", NULL, "test/#", ACL_READ));
    assert_true(may(acl, "c", NULL, "#", ACL_READ));
    assert_false(may(acl, "c", NULL, "private/c/#", ACL_READ));
    assert_true(may(acl, "c", NULL, "test/+/x", ACL_READ));
    assert_true(may(acl, "c", NULL, "other/#", ACL_READ));
    assert_false(may(acl, "c", NULL, "private/c/x", ACL_READ));
    assert_true(may(acl, "d", NULL, "private/c/x", ACL_READ));
    acl_free(acl);
}

static void
test_empty_denies_everything(void **state)
{
    struct acl *acl = load("# nothing allowed\n\n");
    assert_false(may(acl, "c", NULL, "a", ACL_READ));
    assert_false(may(acl, "c", "u", "a", ACL_WRITE));
    acl_free(acl);
}

struct bad_case {
    const char *text;
    const char *want; /* what follows "path" in the error */
};

static void
test_bad_lines(void **state)
{
    static const struct bad_case cases[] = {
        {"topics read a\n", ":1: expected topic, user or pattern"},
        {"# ok\ntopic\n", ":2: missing topic filter"},
        {"topic read\tsome/#\ntopic reed a/b\n", ":2: access must be"},
        {"user\n", ":1: missing username"},
        {"topic read a/#/b\n", ":1: invalid topic filter"},
        {"\n\npattern write a+/b\n", ":3: invalid topic filter"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char err[256] = "", want[256];
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(cases[i].text, f);
        fclose(f);
        struct acl *acl = acl_load(path, err, sizeof(err));
        if (acl)
            fail_msg("case %zu loaded", i);
        snprintf(want, sizeof(want), "%s%s", path, cases[i].want);
        if (strncmp(err, want, strlen(want)) != 0)
            fail_msg("case %zu: expected error starting '%s', got '%s'", i, want, err);
    }
    char err[256] = "";
    assert_null(acl_load("/nonexistent/relaymq.acl", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/relaymq.acl: "));
    acl_free(NULL);
}

static void
test_single_word_is_the_topic(void **state)
{
    /* As in Mosquitto: "topic read" alone is the topic "read", readwrite. */
    struct acl *acl = load("topic read\n");
    assert_true(may(acl, "c", NULL, "read", ACL_WRITE));
    assert_true(may(acl, "c", NULL, "read", ACL_READ));
    acl_free(acl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_covers),
        cmocka_unit_test_setup_teardown(test_sections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patterns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deny, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_denies_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_word_is_the_topic, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for http/metrics.c: every counter of the broker's table
 * appears once as relaymq_<name>_total with HELP and TYPE, gauges carry
 * their values, and extra sources are appended in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "http/metrics.h"

static void
extra(FILE *out, void *arg)
{
    metrics_family(out, "relaymq_extra_total", "counter", arg);
    fprintf(out, "relaymq_extra_total 9\n");
}

static size_t
count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void
test_render(void **state)
{
    struct broker_metrics m;
    memset(&m, 0, sizeof(m));
    m.messages_received_qos1 = 42;
    m.bytes_sent = 1234567890123ull;
    struct broker_gauges g = {.connections = 3,
                              .connected_clients = 2,
                              .sessions = 5,
                              .subscriptions = 7,
                              .retained_messages = 11,
                              .uptime_seconds = 13};
    struct metrics_source sources[] = {{extra, "an extra family"}};
    size_t len = 0;
    char *text = metrics_render(&m, &g, sources, 1, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));

#define CHECK_COUNTER(name, help)                                                                  \
    assert_int_equal(count(text, "# TYPE relaymq_" #name "_total counter\n"), 1);                  \
    assert_int_equal(count(text, "# HELP relaymq_" #name "_total " help "\n"), 1);
    BROKER_COUNTERS(CHECK_COUNTER)
#undef CHECK_COUNTER
    assert_non_null(strstr(text, "\nrelaymq_messages_received_qos1_total 42\n"));
    assert_non_null(strstr(text, "\nrelaymq_bytes_sent_total 1234567890123\n"));
    assert_non_null(
        strstr(text, "# TYPE relaymq_connected_clients gauge\nrelaymq_connected_clients 2\n"));
    assert_non_null(strstr(text, "\nrelaymq_subscriptions 7\n"));
    assert_non_null(strstr(text, "\nrelaymq_retained_messages 11\n"));
    assert_non_null(strstr(text, "\nrelaymq_sessions 5\n"));
    const char *tail = "# HELP relaymq_extra_total an extra family\n"
                       "# TYPE relaymq_extra_total counter\nrelaymq_extra_total 9\n";
    assert_string_equal(text + len - strlen(tail), tail);
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

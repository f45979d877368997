/* Unit tests for http/http_body.c's pure part: base64 both ways, padding
 * optional on input, malformed input refused. (The request-based helpers
 * need a live request; tests/unit/test_http_server.c and the integration
 * tests' publish/deliver cases exercise them.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_body.h"

static void
check_b64(const char *plain, const char *encoded)
{
    char *e = http_base64_encode(plain, strlen(plain));
    assert_string_equal(e, encoded);
    free(e);
    uint8_t *d;
    size_t n;
    assert_int_equal(http_base64_decode(encoded, strlen(encoded), &d, &n), RMQ_OK);
    assert_int_equal(n, strlen(plain));
    assert_memory_equal(d, plain, n);
    free(d);
}

static void
test_base64(void **state)
{
    check_b64("", "");
    check_b64("f", "Zg==");
    check_b64("fo", "Zm8=");
    check_b64("foo", "Zm9v");
    check_b64("foobar", "Zm9vYmFy");
    check_b64("\xff\xfe>?", "//4+Pw==");
    uint8_t *d;
    size_t n;
    assert_int_equal(http_base64_decode("Zm8", 3, &d, &n), RMQ_OK); /* padding optional */
    assert_int_equal(n, 2);
    free(d);
    const char *bad[] = {"Z", "Zm9=v", "Zm=", "Z===", "Zm9v!", "Zm 9v", "Zm9vY==="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(http_base64_decode(bad[i], strlen(bad[i]), &d, &n), RMQ_INVALID);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

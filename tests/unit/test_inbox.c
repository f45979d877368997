/* Unit tests for common/inbox.c: items posted from several threads all run
 * on the loop thread, in per-poster order, and queued items are cancelled
 * (not lost, not leaked) when the inbox is freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdlib.h>

#include "common/inbox.h"

#define POSTERS 4
#define PER_POSTER 5000

struct item {
    struct inbox_item base;
    int poster;
    int seq;
};

struct tally {
    int ran, cancelled;
    int last_seq[POSTERS];
    int out_of_order;
    pthread_t loop_thread;
    int wrong_thread;
    struct event_base *base;
};

static struct tally tally;

static void
run_item(struct inbox_item *base, bool cancelled)
{
    struct item *it = (struct item *)base;
    if (cancelled) {
        tally.cancelled++;
    } else {
        tally.ran++;
        if (!pthread_equal(pthread_self(), tally.loop_thread))
            tally.wrong_thread++;
        if (it->seq != tally.last_seq[it->poster] + 1)
            tally.out_of_order++;
        tally.last_seq[it->poster] = it->seq;
        if (tally.ran == POSTERS * PER_POSTER)
            event_base_loopbreak(tally.base);
    }
    free(it);
}

struct poster_arg {
    struct inbox *inbox;
    int id;
};

static void *
poster(void *arg)
{
    struct poster_arg *p = arg;
    for (int i = 1; i <= PER_POSTER; i++) {
        struct item *it = calloc(1, sizeof(*it));
        it->base.run = run_item;
        it->poster = p->id;
        it->seq = i;
        inbox_post(p->inbox, &it->base);
    }
    return NULL;
}

static void
test_posts_from_threads_run_in_order_on_loop(void **state)
{
    (void)state;
    tally = (struct tally){0};
    tally.loop_thread = pthread_self();
    tally.base = event_base_new();
    assert_non_null(tally.base);
    struct inbox *inbox = inbox_new(tally.base);
    assert_non_null(inbox);

    pthread_t threads[POSTERS];
    struct poster_arg args[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        args[i] = (struct poster_arg){inbox, i};
        assert_int_equal(pthread_create(&threads[i], NULL, poster, &args[i]), 0);
    }
    struct timeval limit = {20, 0};
    event_base_loopexit(tally.base, &limit);
    event_base_dispatch(tally.base);
    for (int i = 0; i < POSTERS; i++)
        pthread_join(threads[i], NULL);

    assert_int_equal(tally.ran, POSTERS * PER_POSTER);
    assert_int_equal(tally.out_of_order, 0);
    assert_int_equal(tally.wrong_thread, 0);
    inbox_free(inbox);
    event_base_free(tally.base);
}

static void
test_free_cancels_queued_items(void **state)
{
    (void)state;
    tally = (struct tally){0};
    tally.base = event_base_new();
    struct inbox *inbox = inbox_new(tally.base);
    for (int i = 0; i < 3; i++) {
        struct item *it = calloc(1, sizeof(*it));
        it->base.run = run_item;
        inbox_post(inbox, &it->base);
    }
    inbox_free(inbox);
    assert_int_equal(tally.cancelled, 3);
    assert_int_equal(tally.ran, 0);
    event_base_free(tally.base);
}

int
main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posts_from_threads_run_in_order_on_loop),
        cmocka_unit_test(test_free_cancels_queued_items),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    libevent_global_shutdown();
    return rc;
}

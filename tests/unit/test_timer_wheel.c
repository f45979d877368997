/* Unit tests for common/timer_wheel.c, driven by hand with explicit `now`
 * values: timers fire at the first advance at or after their expiry (never
 * before, never later), in expiry order, exactly once; callbacks may
 * re-schedule, cancel, free and schedule; big jumps of the clock are cheap;
 * freeing the wheel unlinks what is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>

#include "common/timer_wheel.h"

/* ---- fixtures ---- */

struct owner;
typedef void (*owner_action)(struct owner *o, uint64_t now_ms);

struct owner {
    struct timer_entry timer;
    unsigned id;
    unsigned fired;
    uint64_t fired_now;
    owner_action then; /* runs inside the callback */
    struct owner *other;
    uint64_t period;
    unsigned sched_no; /* advances started before it was scheduled */
};

#define MAX_ORDER 1024

/* What the callbacks saw, reset by each test. */
struct recorder {
    struct timer_wheel *wheel;
    unsigned advance_no; /* advances started so far */
    uint64_t prev_now;   /* now of the advance before the current one */
    unsigned order[MAX_ORDER];
    size_t n_order;
    size_t early, late; /* fired before expiry / after an advance that should have fired it */
    size_t nested_fired;
    size_t count_seen;
};
static struct recorder rec;

static struct owner *
owner_of(struct timer_entry *entry)
{
    return (struct owner *)((char *)entry - offsetof(struct owner, timer));
}

static void
on_fire(struct timer_entry *entry, uint64_t now_ms)
{
    struct owner *o = owner_of(entry);
    o->fired++;
    o->fired_now = now_ms;
    if (now_ms < entry->expires_ms)
        rec.early++;
    /* Late: due at the previous advance, and scheduled before that one began. */
    if (rec.prev_now >= entry->expires_ms && o->sched_no + 1 < rec.advance_no)
        rec.late++;
    if (rec.n_order < MAX_ORDER)
        rec.order[rec.n_order++] = o->id;
    if (o->then)
        o->then(o, now_ms);
}

static void
owner_init(struct owner *o, unsigned id)
{
    *o = (struct owner){.id = id};
    timer_entry_init(&o->timer, on_fire);
}

static struct timer_wheel *
start(uint64_t now_ms, uint32_t tick_ms)
{
    rec = (struct recorder){0};
    rec.prev_now = now_ms;
    rec.wheel = timer_wheel_new(now_ms, tick_ms);
    assert_non_null(rec.wheel);
    return rec.wheel;
}

/* Schedules and remembers when, for the lateness check. */
static void
schedule(struct owner *o, uint64_t expires_ms)
{
    o->sched_no = rec.advance_no;
    timer_wheel_schedule(rec.wheel, &o->timer, expires_ms);
}

/* Advances and remembers the clock for the lateness check. */
static size_t
advance(uint64_t now_ms)
{
    rec.advance_no++;
    size_t fired = timer_wheel_advance(rec.wheel, now_ms);
    rec.prev_now = now_ms;
    return fired;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* ---- exact firing ---- */

/* Around each level's boundary (64, 64^2, 64^3, 64^4 ticks at 1 ms), the
 * keepalive and TTL ranges, and far beyond the wheel. */
/* clang-format off */
static const uint64_t delays[] = {
    0, 1, 2, 9, 10, 11, 63, 64, 65, 999, 1000, 1001, 4095, 4096, 4097,
    262143, 262144, 262145, 16777215, 16777216, 16777217,
    3600000, 36000000, 100000000, 259200000, 1000000000000ULL,
};
/* clang-format on */
static const uint32_t ticks[] = {1, 3, 10, 100, 1000};

/* One timer, each tick size and delay: nothing at expiry - 1, fires at expiry. */
static void
test_fires_at_expiry_never_before(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(ticks) / sizeof(ticks[0]); t++) {
        for (size_t d = 0; d < sizeof(delays) / sizeof(delays[0]); d++) {
            uint64_t now = 1000003, expiry = now + delays[d];
            struct timer_wheel *w = start(now, ticks[t]);
            struct owner o;
            owner_init(&o, 1);
            timer_wheel_schedule(w, &o.timer, expiry);
            assert_true(timer_entry_pending(&o.timer));
            if (expiry > now) {
                assert_int_equal(advance(now + delays[d] / 2), 0);
                assert_int_equal(advance(expiry - 1), 0);
                assert_int_equal(o.fired, 0);
            }
            assert_int_equal(advance(expiry), 1);
            assert_int_equal(o.fired, 1);
            assert_int_equal(o.fired_now, expiry);
            assert_false(timer_entry_pending(&o.timer));
            assert_int_equal(advance(expiry + delays[d] + 5000), 0);
            timer_wheel_free(w);
        }
    }
}

/* With a 10 ms tick, an expiry inside the current tick waits for its millisecond. */
static void
test_same_tick_waits_for_its_millisecond(void **state)
{
    (void)state;
    struct timer_wheel *w = start(1000, 10);
    struct owner a, b;
    owner_init(&a, 1);
    owner_init(&b, 2);
    timer_wheel_schedule(w, &a.timer, 1007);
    timer_wheel_schedule(w, &b.timer, 1013);
    assert_int_equal(advance(1003), 0);
    assert_int_equal(advance(1006), 0);
    assert_int_equal(advance(1007), 1);
    assert_int_equal(advance(1012), 0);
    assert_int_equal(advance(1013), 1);
    assert_int_equal(a.fired + b.fired, 2);
    timer_wheel_free(w);
}

static void
test_past_expiry_fires_at_next_advance(void **state)
{
    (void)state;
    struct timer_wheel *w = start(50000, 10);
    struct owner a, b;
    owner_init(&a, 1);
    owner_init(&b, 2);
    timer_wheel_schedule(w, &a.timer, 0);
    timer_wheel_schedule(w, &b.timer, 49999);
    assert_int_equal(advance(50000), 2);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 1);
    timer_wheel_free(w);
}

static void
test_clock_going_back_does_nothing(void **state)
{
    (void)state;
    struct timer_wheel *w = start(5000, 1);
    struct owner a;
    owner_init(&a, 1);
    timer_wheel_schedule(w, &a.timer, 4000);
    assert_int_equal(advance(4999), 0);
    assert_int_equal(a.fired, 0);
    assert_int_equal(advance(5000), 1);
    timer_wheel_free(w);
}

static void
test_new_rejects_bad_tick(void **state)
{
    (void)state;
    assert_null(timer_wheel_new(0, 0));
    assert_null(timer_wheel_new(0, 1001));
    timer_wheel_free(NULL);
}

/* ---- order ---- */

static void
test_fires_in_expiry_order(void **state)
{
    (void)state;
    enum { N = 500 };
    uint32_t tick_sizes[] = {1, 10};
    for (size_t t = 0; t < 2; t++) {
        struct timer_wheel *w = start(777, tick_sizes[t]);
        struct owner *o = calloc(N, sizeof(*o));
        assert_non_null(o);
        for (unsigned i = 0; i < N; i++) {
            owner_init(&o[i], i);
            timer_wheel_schedule(w, &o[i].timer, 777 + rng() % 40000000);
        }
        assert_int_equal(advance(777 + 40000000), N);
        assert_int_equal(rec.n_order, N);
        for (size_t i = 1; i < N; i++) {
            uint64_t prev = o[rec.order[i - 1]].timer.expires_ms / tick_sizes[t];
            uint64_t cur = o[rec.order[i]].timer.expires_ms / tick_sizes[t];
            assert_true(prev <= cur);
        }
        timer_wheel_free(w);
        free(o);
    }
}

/* Same expiry: first scheduled, first fired. */
static void
test_equal_expiries_fire_in_schedule_order(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner o[5];
    for (unsigned i = 0; i < 5; i++) {
        owner_init(&o[i], i);
        timer_wheel_schedule(w, &o[i].timer, 70000);
    }
    assert_int_equal(advance(80000), 5);
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(rec.order[i], i);
    timer_wheel_free(w);
}

/* ---- many timers, random clock steps ---- */

static void
run_random_timers(uint32_t tick_ms, size_t n, uint64_t span)
{
    uint64_t now = 123456789;
    struct timer_wheel *w = start(now, tick_ms);
    struct owner *o = calloc(n, sizeof(*o));
    assert_non_null(o);
    for (size_t i = 0; i < n; i++) {
        owner_init(&o[i], (unsigned)i);
        /* Mostly within the wheel, some beyond it (overflow list), some due now. */
        uint64_t delay = i % 10 == 0 ? rng() % (span * 4) : i % 97 == 0 ? 0 : rng() % span;
        schedule(&o[i], now + delay);
    }
    assert_int_equal(timer_wheel_count(w), n);
    size_t fired = 0;
    while (fired < n) {
        uint64_t r = rng();
        now += r % 8 == 0 ? r % 600000 : r % 2000;
        fired += advance(now);
    }
    assert_int_equal(fired, n);
    assert_int_equal(timer_wheel_count(w), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(o[i].fired, 1);
    assert_int_equal(rec.early, 0);
    assert_int_equal(rec.late, 0);
    timer_wheel_free(w);
    free(o);
}

static void
test_100k_random_timers_fire_once_on_time_1ms(void **state)
{
    (void)state;
    run_random_timers(1, 100000, 3 * 3600000ULL);
}

static void
test_100k_random_timers_fire_once_on_time_10ms(void **state)
{
    (void)state;
    run_random_timers(10, 100000, 48 * 3600000ULL);
}

/* Random schedules, re-schedules and cancels interleaved with advances. */
static void
test_random_churn(void **state)
{
    (void)state;
    enum { N = 5000 };
    uint64_t now = 0;
    struct timer_wheel *w = start(now, 1);
    struct owner *o = calloc(N, sizeof(*o));
    assert_non_null(o);
    for (unsigned i = 0; i < N; i++)
        owner_init(&o[i], i);
    size_t pending = 0;
    for (int round = 0; round < 200000; round++) {
        struct owner *x = &o[rng() % N];
        uint64_t r = rng();
        if (r % 3 == 0) {
            pending -= timer_entry_pending(&x->timer);
            timer_entry_cancel(&x->timer);
        } else {
            pending += !timer_entry_pending(&x->timer);
            schedule(x, now + r % 100000);
        }
        if (round % 16 == 0) {
            now += rng() % 500;
            pending -= advance(now);
        }
    }
    assert_int_equal(timer_wheel_count(w), pending);
    pending -= advance(now + 100000);
    assert_int_equal(pending, 0);
    assert_int_equal(rec.early, 0);
    assert_int_equal(rec.late, 0);
    timer_wheel_free(w);
    free(o);
}

/* ---- callbacks ---- */

static void
reschedule_after_now(struct owner *o, uint64_t now_ms)
{
    timer_wheel_schedule(rec.wheel, &o->timer, now_ms + o->period);
}

static void
test_reschedule_from_callback(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 10);
    struct owner o;
    owner_init(&o, 1);
    o.then = reschedule_after_now;
    o.period = 1000;
    timer_wheel_schedule(w, &o.timer, 1000);
    for (uint64_t now = 0; now <= 10000; now += 100)
        advance(now);
    assert_int_equal(o.fired, 10);
    assert_true(timer_entry_pending(&o.timer));
    assert_int_equal(o.timer.expires_ms, 11000);
    assert_int_equal(timer_wheel_count(w), 1);
    timer_wheel_free(w);
    assert_false(timer_entry_pending(&o.timer));
}

static void
reschedule_drift_free(struct owner *o, uint64_t now_ms)
{
    timer_wheel_schedule(rec.wheel, &o->timer, o->timer.expires_ms + o->period);
}

/* A periodic timer behind by an hour fires once per advance, not 3600 times. */
static void
test_rescheduled_due_entry_waits_for_next_advance(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner o;
    owner_init(&o, 1);
    o.then = reschedule_drift_free;
    o.period = 1000;
    timer_wheel_schedule(w, &o.timer, 1000);
    assert_int_equal(advance(3600000), 1);
    assert_int_equal(o.timer.expires_ms, 2000);
    assert_int_equal(advance(3600000), 1);
    assert_int_equal(advance(3600000), 1);
    assert_int_equal(o.fired, 3);
    timer_wheel_free(w);
}

static void
reschedule_at_now(struct owner *o, uint64_t now_ms)
{
    timer_wheel_schedule(rec.wheel, &o->timer, now_ms);
}

static void
test_reschedule_at_now_does_not_loop(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner o;
    owner_init(&o, 1);
    o.then = reschedule_at_now;
    timer_wheel_schedule(w, &o.timer, 5);
    assert_int_equal(advance(5), 1);
    assert_int_equal(advance(5), 1);
    assert_int_equal(advance(6), 1);
    assert_int_equal(o.fired, 3);
    assert_true(timer_entry_pending(&o.timer));
    timer_wheel_free(w);
}

static void
cancel_other(struct owner *o, uint64_t now_ms)
{
    timer_entry_cancel(&o->other->timer);
}

/* Two timers due in one advance (same tick, or later ticks): the first to
 * fire cancels the other, which then never fires. */
static void
test_cancel_other_due_in_same_advance(void **state)
{
    (void)state;
    static const uint64_t second_expiry[] = {500, 501, 700, 5000, 400000};
    for (size_t i = 0; i < sizeof(second_expiry) / sizeof(second_expiry[0]); i++) {
        struct timer_wheel *w = start(0, 1);
        struct owner a, b;
        owner_init(&a, 1);
        owner_init(&b, 2);
        a.then = cancel_other;
        a.other = &b;
        timer_wheel_schedule(w, &a.timer, 500);
        timer_wheel_schedule(w, &b.timer, second_expiry[i]);
        assert_int_equal(advance(1000000), 1);
        assert_int_equal(a.fired, 1);
        assert_int_equal(b.fired, 0);
        assert_false(timer_entry_pending(&b.timer));
        assert_int_equal(timer_wheel_count(w), 0);
        timer_wheel_free(w);
    }
}

static void
free_self(struct owner *o, uint64_t now_ms)
{
    free(o);
}

static void
cancel_and_free_other(struct owner *o, uint64_t now_ms)
{
    timer_entry_cancel(&o->other->timer);
    free(o->other);
    o->other = NULL;
}

/* Owners freed from callbacks (AddressSanitizer catches any later touch). */
static void
test_callback_frees_owners(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner *self = malloc(sizeof(*self)), *victim = malloc(sizeof(*victim));
    struct owner killer;
    assert_non_null(self);
    assert_non_null(victim);
    owner_init(self, 1);
    owner_init(victim, 2);
    owner_init(&killer, 3);
    self->then = free_self;
    killer.then = cancel_and_free_other;
    killer.other = victim;
    timer_wheel_schedule(w, &self->timer, 10);
    timer_wheel_schedule(w, &killer.timer, 10);
    timer_wheel_schedule(w, &victim->timer, 10);
    assert_int_equal(advance(10), 2);
    assert_null(killer.other);
    assert_int_equal(timer_wheel_count(w), 0);
    timer_wheel_free(w);
}

static struct owner spawned;

static void
spawn_due_and_future(struct owner *o, uint64_t now_ms)
{
    owner_init(&spawned, 99);
    timer_wheel_schedule(rec.wheel, &spawned.timer, now_ms - 5);
    timer_wheel_schedule(rec.wheel, &o->other->timer, now_ms + 10);
}

/* Entries scheduled during an advance fire at a later advance, even if due. */
static void
test_schedule_from_callback(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner a, later;
    owner_init(&a, 1);
    owner_init(&later, 2);
    a.then = spawn_due_and_future;
    a.other = &later;
    timer_wheel_schedule(w, &a.timer, 100);
    assert_int_equal(advance(200), 1);
    assert_int_equal(spawned.fired, 0);
    assert_true(timer_entry_pending(&spawned.timer));
    assert_int_equal(timer_wheel_count(w), 2);
    assert_int_equal(advance(200), 1);
    assert_int_equal(spawned.fired, 1);
    assert_int_equal(advance(209), 0);
    assert_int_equal(advance(210), 1);
    assert_int_equal(later.fired, 1);
    timer_wheel_free(w);
}

static void
nested_advance(struct owner *o, uint64_t now_ms)
{
    rec.nested_fired += timer_wheel_advance(rec.wheel, now_ms + 1000);
    rec.count_seen = timer_wheel_count(rec.wheel);
}

static void
test_callback_may_count_but_not_nest(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner a, b, c;
    owner_init(&a, 1);
    owner_init(&b, 2);
    owner_init(&c, 3);
    a.then = nested_advance;
    timer_wheel_schedule(w, &a.timer, 10);
    timer_wheel_schedule(w, &b.timer, 10);   /* same tick, still waiting */
    timer_wheel_schedule(w, &c.timer, 1005); /* would fire if the nested call ran */
    assert_int_equal(advance(10), 2);
    assert_int_equal(rec.nested_fired, 0);
    assert_int_equal(rec.count_seen, 2);
    assert_int_equal(c.fired, 0);
    timer_wheel_free(w);
}

/* ---- big jumps ---- */

static void
test_huge_jumps_skip_empty_ticks(void **state)
{
    (void)state;
    enum { N = 15000 };
    uint64_t now = 1000;
    struct timer_wheel *w = start(now, 1);
    struct owner *o = calloc(N, sizeof(*o));
    struct owner far;
    assert_non_null(o);
    for (unsigned i = 0; i < N; i++) {
        owner_init(&o[i], i);
        schedule(&o[i], now + 1 + rng() % 3600000);
    }
    owner_init(&far, 7);
    schedule(&far, now + 1000000000000ULL); /* ~31.7 years */
    assert_int_equal(advance(now + 3600000), N);
    /* A walk over every 1 ms tick would take hours here. */
    assert_int_equal(advance(now + 1000000000000ULL - 1), 0);
    assert_int_equal(advance(now + 1000000000000ULL), 1);
    assert_int_equal(advance(UINT64_MAX - 1), 0);
    assert_int_equal(rec.early, 0);
    assert_int_equal(rec.late, 0);
    timer_wheel_free(w);
    free(o);
}

static void
test_far_expiries_never_fire_early(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner never;
    owner_init(&never, 1);
    timer_wheel_schedule(w, &never.timer, UINT64_MAX);
    assert_int_equal(advance(UINT64_MAX - 1), 0);
    assert_int_equal(timer_wheel_count(w), 1);
    assert_int_equal(advance(UINT64_MAX), 1);
    timer_wheel_free(w);
}

/* ---- schedule, cancel, count, free ---- */

static void
test_cancel_idle_twice_and_zeroed(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner a;
    owner_init(&a, 1);
    struct timer_entry zeroed = {0};
    timer_entry_cancel(&zeroed);
    timer_entry_cancel(&a.timer);
    assert_false(timer_entry_pending(&a.timer));
    timer_wheel_schedule(w, &a.timer, 50);
    timer_entry_cancel(&a.timer);
    timer_entry_cancel(&a.timer);
    assert_false(timer_entry_pending(&a.timer));
    assert_int_equal(advance(100), 0);
    assert_int_equal(a.fired, 0);
    timer_wheel_free(w);
}

static void
test_reschedule_pending_moves_it(void **state)
{
    (void)state;
    struct timer_wheel *w = start(0, 1);
    struct owner a;
    owner_init(&a, 1);
    timer_wheel_schedule(w, &a.timer, 100000);
    timer_wheel_schedule(w, &a.timer, 50);
    assert_int_equal(timer_wheel_count(w), 1);
    assert_int_equal(advance(50), 1);
    timer_wheel_schedule(w, &a.timer, 100);
    timer_wheel_schedule(w, &a.timer, 20000000); /* into the overflow list */
    assert_int_equal(advance(19999999), 0);
    assert_int_equal(advance(20000000), 1);
    assert_int_equal(a.fired, 2);
    timer_wheel_free(w);
}

static void
test_count(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct timer_wheel *w = start(0, 1);
    struct owner o[N];
    assert_int_equal(timer_wheel_count(w), 0);
    for (unsigned i = 0; i < N; i++) {
        owner_init(&o[i], i);
        timer_wheel_schedule(w, &o[i].timer, (uint64_t)i * 40000); /* every level and overflow */
    }
    assert_int_equal(timer_wheel_count(w), N);
    for (unsigned i = 0; i < N; i += 2)
        timer_entry_cancel(&o[i].timer);
    assert_int_equal(timer_wheel_count(w), N / 2);
    assert_int_equal(advance(20000000 - 1), 250);
    assert_int_equal(timer_wheel_count(w), N / 2 - 250);
    timer_wheel_free(w);
}

/* Entries left on every level and in the overflow list are unlinked, never called. */
static void
test_free_unlinks_pending_entries(void **state)
{
    (void)state;
    static const uint64_t when[] = {0, 5, 100, 5000, 300000, 20000000, UINT64_MAX};
    enum { N = sizeof(when) / sizeof(when[0]) };
    struct timer_wheel *w = start(1, 1);
    struct owner o[N];
    for (unsigned i = 0; i < N; i++) {
        owner_init(&o[i], i);
        timer_wheel_schedule(w, &o[i].timer, when[i]);
    }
    assert_int_equal(timer_wheel_count(w), N);
    timer_wheel_free(w);
    for (unsigned i = 0; i < N; i++) {
        assert_false(timer_entry_pending(&o[i].timer));
        assert_int_equal(o[i].fired, 0);
        timer_entry_cancel(&o[i].timer); /* still safe */
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_at_expiry_never_before),
        cmocka_unit_test(test_same_tick_waits_for_its_millisecond),
        cmocka_unit_test(test_past_expiry_fires_at_next_advance),
        cmocka_unit_test(test_clock_going_back_does_nothing),
        cmocka_unit_test(test_new_rejects_bad_tick),
        cmocka_unit_test(test_fires_in_expiry_order),
        cmocka_unit_test(test_equal_expiries_fire_in_schedule_order),
        cmocka_unit_test(test_100k_random_timers_fire_once_on_time_1ms),
        cmocka_unit_test(test_100k_random_timers_fire_once_on_time_10ms),
        cmocka_unit_test(test_random_churn),
        cmocka_unit_test(test_reschedule_from_callback),
        cmocka_unit_test(test_rescheduled_due_entry_waits_for_next_advance),
        cmocka_unit_test(test_reschedule_at_now_does_not_loop),
        cmocka_unit_test(test_cancel_other_due_in_same_advance),
        cmocka_unit_test(test_callback_frees_owners),
        cmocka_unit_test(test_schedule_from_callback),
        cmocka_unit_test(test_callback_may_count_but_not_nest),
        cmocka_unit_test(test_huge_jumps_skip_empty_ticks),
        cmocka_unit_test(test_far_expiries_never_fire_early),
        cmocka_unit_test(test_cancel_idle_twice_and_zeroed),
        cmocka_unit_test(test_reschedule_pending_moves_it),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_free_unlinks_pending_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

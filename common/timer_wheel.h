/* Hierarchical timer wheel. Entries live inside the caller's structs (no
 * allocation per timer) and `now` is always an argument (no hidden clock), so
 * the wheel is a pure data structure that tests drive by hand.
 *
 * Single-threaded: a wheel belongs to one broker loop. Callbacks run from
 * timer_wheel_advance() and may schedule or cancel any entry, including the
 * one that fired and entries due in the same advance. */
#ifndef RMQ_COMMON_TIMER_WHEEL_H
#define RMQ_COMMON_TIMER_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct timer_entry;
typedef void (*timer_cb)(struct timer_entry *entry, uint64_t now_ms);

/* Embed in the owner's struct; zero-initialise or call timer_entry_init().
 * Recover the owner with container_of-style arithmetic in the callback. */
struct timer_entry {
    struct timer_entry *next, *prev; /* NULL when not scheduled */
    uint64_t expires_ms;
    timer_cb cb;
};

struct timer_wheel;

/* Creates a wheel whose clock starts at now_ms. tick_ms is the resolution
 * (1..1000); timers fire at the first advance at or after their expiry,
 * never before it. Returns NULL on allocation failure. */
struct timer_wheel *timer_wheel_new(uint64_t now_ms, uint32_t tick_ms);

/* Frees the wheel. Entries still scheduled are unlinked, never called. NULL-safe. */
void timer_wheel_free(struct timer_wheel *wheel);

void timer_entry_init(struct timer_entry *entry, timer_cb cb);

/* Schedules (or re-schedules) entry to fire at expires_ms. An expiry in the
 * past fires at the next advance. Any delay, however long, is supported. */
void timer_wheel_schedule(struct timer_wheel *wheel, struct timer_entry *entry,
                          uint64_t expires_ms);

/* Unschedules entry if it is pending; safe to call on an idle entry. */
void timer_entry_cancel(struct timer_entry *entry);

bool timer_entry_pending(const struct timer_entry *entry);

/* Moves the wheel's clock to now_ms, calling every entry whose expiry is
 * <= now_ms, in expiry order as far as the tick resolution allows. Returns
 * how many callbacks ran. now_ms earlier than the wheel's clock does nothing. */
size_t timer_wheel_advance(struct timer_wheel *wheel, uint64_t now_ms);

/* Number of entries currently scheduled. */
size_t timer_wheel_count(const struct timer_wheel *wheel);

#endif

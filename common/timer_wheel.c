/* Hierarchical timer wheel: four levels of 64 slots plus an overflow list.
 *
 * Time is counted in ticks (tick = ms / tick_ms). `cur` is the wheel's
 * current tick: every earlier tick has been processed, and the slot of `cur`
 * itself is checked again at each advance because an entry whose expiry lies
 * later in that same tick must not fire early. An entry due at tick t sits at
 *   level 0, slot t & 63            when t - cur < 64 (t <= cur: slot cur & 63),
 *   level l, slot (t >> 6l) & 63    when t - cur < 64^(l+1),
 *   the overflow list               beyond 64^4 ticks (4.6 h at 1 ms, 46 h at 10 ms).
 * A level-l slot is cascaded (its entries placed again, lower down) when `cur`
 * reaches the start of the 64^l-tick block it holds; the overflow list is
 * re-examined at the start of the 64^4-tick block holding its earliest entry
 * (a lower bound kept as entries go in). A bitmap per level marks slots that
 * may be non-empty (bits may be stale after cancels: they are cleared when
 * seen), so an advance jumps from one occupied slot or cascade point to the
 * next instead of walking every tick: an hour at 1 ms costs a few steps per
 * occupied slot, not 3.6 million.
 *
 * Firing is exact to the millisecond whatever the tick: an entry fires at the
 * first advance with now_ms >= expires_ms (the tick only sets how finely
 * entries are sorted; within one tick they fire in schedule order).
 * tick_ms outside 1..1000 makes timer_wheel_new() return NULL.
 *
 * Lists are circular with a head inside the wheel, so cancel needs only the
 * entry: O(1) schedule and cancel, no allocation. The cost of that is
 * timer_wheel_count(), which walks the lists (O(slots + entries)).
 *
 * Callbacks: an entry is unlinked before its callback runs, so the callback
 * may re-schedule it, free its owner, or cancel/schedule any other entry.
 * Entries scheduled while an advance runs are held aside and placed when it
 * ends: they never fire in the advance that scheduled them, even when already
 * due, but at the next advance (so a callback re-scheduling itself at `now`
 * cannot loop). Callbacks must not free the wheel; a nested advance is ignored.
 *
 * Single-threaded: the wheel and its entries belong to one loop. */
#include "common/timer_wheel.h"

#include <stdlib.h>

#define LEVELS 4
#define SLOT_BITS 6
#define SLOTS (1u << SLOT_BITS)
#define SLOT_MASK (SLOTS - 1u)
#define WHEEL_BITS (LEVELS * SLOT_BITS) /* ticks covered before the overflow list */

struct timer_wheel {
    uint64_t now_ms; /* clock as of the last advance */
    uint64_t cur;    /* current tick (see above) */
    uint32_t tick_ms;
    bool advancing;            /* inside timer_wheel_advance(): schedules go to `incoming` */
    uint64_t occupied[LEVELS]; /* bit s: slot s of that level may be non-empty */
    struct timer_entry slots[LEVELS][SLOTS]; /* list heads */
    struct timer_entry overflow;             /* more than 64^4 ticks away */
    uint64_t overflow_min;                   /* no overflow entry is due before this tick */
    struct timer_entry due;                  /* the slot being fired right now */
    struct timer_entry incoming;             /* scheduled by callbacks during an advance */
};

/* ---- circular lists with a head; an entry's next/prev are NULL when idle ---- */

static void
list_init(struct timer_entry *head)
{
    head->next = head->prev = head;
}

static bool
list_empty(const struct timer_entry *head)
{
    return head->next == head;
}

static void
list_append(struct timer_entry *head, struct timer_entry *entry)
{
    entry->prev = head->prev;
    entry->next = head;
    head->prev->next = entry;
    head->prev = entry;
}

static void
list_unlink(struct timer_entry *entry)
{
    entry->prev->next = entry->next;
    entry->next->prev = entry->prev;
    entry->next = entry->prev = NULL;
}

/* Moves every entry of `from` to the end of `to`, keeping their order. */
static void
list_splice(struct timer_entry *from, struct timer_entry *to)
{
    if (list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

static size_t
list_length(const struct timer_entry *head)
{
    size_t n = 0;
    for (const struct timer_entry *e = head->next; e != head; e = e->next)
        n++;
    return n;
}

/* Unlinks every entry without calling it. */
static void
list_drop(struct timer_entry *head)
{
    while (!list_empty(head))
        list_unlink(head->next);
}

/* ---- placement ---- */

/* Puts an idle entry where its expiry tick belongs relative to `cur`. */
static void
place(struct timer_wheel *wheel, struct timer_entry *entry)
{
    uint64_t tick = entry->expires_ms / wheel->tick_ms;
    unsigned level = 0;
    unsigned slot = (unsigned)(wheel->cur & SLOT_MASK);
    if (tick > wheel->cur) {
        uint64_t delta = tick - wheel->cur;
        level = (unsigned)(63 - __builtin_clzll(delta)) / SLOT_BITS;
        if (level >= LEVELS) {
            list_append(&wheel->overflow, entry);
            if (tick < wheel->overflow_min)
                wheel->overflow_min = tick;
            return;
        }
        slot = (unsigned)(tick >> (level * SLOT_BITS)) & SLOT_MASK;
    }
    list_append(&wheel->slots[level][slot], entry);
    wheel->occupied[level] |= UINT64_C(1) << slot;
}

/* Places again every entry of a list (a cascading slot or the overflow list).
 * No callback runs here, so a list head on the stack is safe. */
static void
replace_all(struct timer_wheel *wheel, struct timer_entry *head)
{
    struct timer_entry moving;
    list_init(&moving);
    list_splice(head, &moving);
    while (!list_empty(&moving)) {
        struct timer_entry *entry = moving.next;
        list_unlink(entry);
        place(wheel, entry);
    }
}

/* ---- finding the next tick with work ---- */

static uint64_t
rotate_right(uint64_t bits, unsigned n)
{
    return (bits >> n) | (bits << ((64u - n) & 63u));
}

/* The first tick after block `block` of a level whose blocks are 2^shift
 * ticks long, saturating instead of wrapping. */
static uint64_t
block_start(uint64_t block, unsigned shift)
{
    return block > (UINT64_MAX >> shift) ? UINT64_MAX : block << shift;
}

/* Earliest tick after `cur` at which an occupied slot of `level` is fired
 * (level 0) or cascaded, or UINT64_MAX. Clears stale bits on the way. */
static uint64_t
level_next(struct timer_wheel *wheel, unsigned level)
{
    unsigned shift = level * SLOT_BITS;
    uint64_t block = wheel->cur >> shift;
    unsigned first = (unsigned)((block + 1) & SLOT_MASK);
    while (wheel->occupied[level]) {
        unsigned gap = (unsigned)__builtin_ctzll(rotate_right(wheel->occupied[level], first));
        unsigned slot = (first + gap) & SLOT_MASK;
        if (list_empty(&wheel->slots[level][slot])) {
            wheel->occupied[level] &= ~(UINT64_C(1) << slot);
            continue;
        }
        if (block > UINT64_MAX - gap - 1)
            return UINT64_MAX;
        return block_start(block + gap + 1, shift);
    }
    return UINT64_MAX;
}

static uint64_t
next_work_tick(struct timer_wheel *wheel)
{
    uint64_t next = UINT64_MAX;
    for (unsigned level = 0; level < LEVELS; level++) {
        uint64_t tick = level_next(wheel, level);
        if (tick < next)
            next = tick;
    }
    if (!list_empty(&wheel->overflow)) {
        /* Re-examined at the start of the 64^4-tick block holding its
         * earliest entry, not every 64^4 ticks: a year-long jump stays cheap. */
        uint64_t tick = block_start((wheel->cur >> WHEEL_BITS) + 1, WHEEL_BITS);
        uint64_t earliest = wheel->overflow_min >> WHEEL_BITS << WHEEL_BITS;
        if (earliest > tick)
            tick = earliest;
        if (tick < next)
            next = tick;
    }
    return next;
}

/* Cascades whatever starts at `cur`, highest level first so entries can
 * trickle down through several levels in one step. */
static void
cascade(struct timer_wheel *wheel)
{
    uint64_t cur = wheel->cur;
    if ((cur & ((UINT64_C(1) << WHEEL_BITS) - 1)) == 0) {
        wheel->overflow_min = UINT64_MAX; /* recomputed by the entries that stay */
        replace_all(wheel, &wheel->overflow);
    }
    for (unsigned level = LEVELS - 1; level >= 1; level--) {
        unsigned shift = level * SLOT_BITS;
        if (cur & ((UINT64_C(1) << shift) - 1))
            continue;
        unsigned slot = (unsigned)(cur >> shift) & SLOT_MASK;
        wheel->occupied[level] &= ~(UINT64_C(1) << slot);
        replace_all(wheel, &wheel->slots[level][slot]);
    }
}

/* Fires the entries of the current tick's slot that are due at now_ms; the
 * rest (later in the same tick) go back. The slot is moved to `due` first so
 * callbacks can cancel entries that have not run yet. */
static size_t
fire_current(struct timer_wheel *wheel, uint64_t now_ms)
{
    struct timer_entry *head = &wheel->slots[0][wheel->cur & SLOT_MASK];
    size_t fired = 0;
    list_splice(head, &wheel->due);
    while (!list_empty(&wheel->due)) {
        struct timer_entry *entry = wheel->due.next;
        list_unlink(entry);
        if (entry->expires_ms > now_ms) {
            list_append(head, entry);
            continue;
        }
        entry->cb(entry, now_ms); /* may free entry: not touched again */
        fired++;
    }
    return fired;
}

/* ---- public API ---- */

struct timer_wheel *
timer_wheel_new(uint64_t now_ms, uint32_t tick_ms)
{
    if (tick_ms < 1 || tick_ms > 1000)
        return NULL;
    struct timer_wheel *wheel = calloc(1, sizeof(*wheel));
    if (!wheel)
        return NULL;
    wheel->now_ms = now_ms;
    wheel->tick_ms = tick_ms;
    wheel->cur = now_ms / tick_ms;
    wheel->overflow_min = UINT64_MAX;
    for (unsigned level = 0; level < LEVELS; level++)
        for (unsigned slot = 0; slot < SLOTS; slot++)
            list_init(&wheel->slots[level][slot]);
    list_init(&wheel->overflow);
    list_init(&wheel->due);
    list_init(&wheel->incoming);
    return wheel;
}

void
timer_wheel_free(struct timer_wheel *wheel)
{
    if (!wheel)
        return;
    for (unsigned level = 0; level < LEVELS; level++)
        for (unsigned slot = 0; slot < SLOTS; slot++)
            list_drop(&wheel->slots[level][slot]);
    list_drop(&wheel->overflow);
    list_drop(&wheel->due);
    list_drop(&wheel->incoming);
    free(wheel);
}

void
timer_entry_init(struct timer_entry *entry, timer_cb cb)
{
    entry->next = entry->prev = NULL;
    entry->expires_ms = 0;
    entry->cb = cb;
}

void
timer_wheel_schedule(struct timer_wheel *wheel, struct timer_entry *entry, uint64_t expires_ms)
{
    if (entry->next)
        list_unlink(entry);
    entry->expires_ms = expires_ms;
    if (wheel->advancing)
        list_append(&wheel->incoming, entry);
    else
        place(wheel, entry);
}

void
timer_entry_cancel(struct timer_entry *entry)
{
    if (entry->next)
        list_unlink(entry);
}

bool
timer_entry_pending(const struct timer_entry *entry)
{
    return entry->next != NULL;
}

size_t
timer_wheel_advance(struct timer_wheel *wheel, uint64_t now_ms)
{
    if (now_ms < wheel->now_ms || wheel->advancing)
        return 0;
    wheel->advancing = true;
    wheel->now_ms = now_ms;
    uint64_t target = now_ms / wheel->tick_ms;
    size_t fired = fire_current(wheel, now_ms);
    while (wheel->cur < target) {
        /* Every tick before `next` has an empty slot and nothing to cascade,
         * so jumping over them keeps each entry's slot valid. */
        uint64_t next = next_work_tick(wheel);
        if (next > target) {
            wheel->cur = target;
            break;
        }
        wheel->cur = next;
        cascade(wheel);
        fired += fire_current(wheel, now_ms);
    }
    wheel->advancing = false;
    replace_all(wheel, &wheel->incoming);
    return fired;
}

size_t
timer_wheel_count(const struct timer_wheel *wheel)
{
    size_t n =
        list_length(&wheel->overflow) + list_length(&wheel->due) + list_length(&wheel->incoming);
    for (unsigned level = 0; level < LEVELS; level++)
        for (unsigned slot = 0; slot < SLOTS; slot++)
            n += list_length(&wheel->slots[level][slot]);
    return n;
}

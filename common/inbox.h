/* A loop's inbox: the one way other threads hand work to a broker loop.
 * Any thread posts an item (a locked list push plus event_active); the loop
 * thread runs the items in the order they were posted, from its own event
 * callback, so the work touches loop-owned state safely.
 *
 * Items are intrusive: embed struct inbox_item in the request and recover it
 * in `run`. Ownership passes to the inbox at post and to `run` when it is
 * called; `run` frees (or hands back) the item. Items still queued when the
 * inbox is freed are passed to `run` with `cancelled` true. */
#ifndef RMQ_COMMON_INBOX_H
#define RMQ_COMMON_INBOX_H

#include <stdbool.h>

struct event_base;
struct inbox_item;

typedef void (*inbox_run_fn)(struct inbox_item *item, bool cancelled);

struct inbox_item {
    struct inbox_item *next;
    inbox_run_fn run;
};

struct inbox;

/* Creates an inbox served by base's thread. Needs libevent's pthreads
 * support (evthread_use_pthreads()) enabled before base was created.
 * NULL on failure. */
struct inbox *inbox_new(struct event_base *base);

/* Any thread. Takes ownership of item; item->run must be set. */
void inbox_post(struct inbox *inbox, struct inbox_item *item);

/* Loop thread, after every poster has stopped. Cancels what is queued. NULL-safe. */
void inbox_free(struct inbox *inbox);

#endif

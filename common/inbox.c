/* Cross-thread work queue for a loop; see inbox.h. The lock guards only the
 * list head; items are run outside it, oldest first. */
#include "common/inbox.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>

struct inbox {
    pthread_mutex_t lock;
    struct inbox_item *head, *tail;
    struct event *wake;
};

static struct inbox_item *
take_all(struct inbox *inbox)
{
    pthread_mutex_lock(&inbox->lock);
    struct inbox_item *items = inbox->head;
    inbox->head = inbox->tail = NULL;
    pthread_mutex_unlock(&inbox->lock);
    return items;
}

static void
run_all(struct inbox_item *item, bool cancelled)
{
    while (item) {
        struct inbox_item *next = item->next;
        item->next = NULL;
        item->run(item, cancelled);
        item = next;
    }
}

static void
on_wake(evutil_socket_t fd, short what, void *arg)
{
    run_all(take_all(arg), false);
}

struct inbox *
inbox_new(struct event_base *base)
{
    struct inbox *inbox = calloc(1, sizeof(*inbox));
    if (!inbox)
        return NULL;
    pthread_mutex_init(&inbox->lock, NULL);
    inbox->wake = event_new(base, -1, 0, on_wake, inbox);
    if (!inbox->wake) {
        pthread_mutex_destroy(&inbox->lock);
        free(inbox);
        return NULL;
    }
    return inbox;
}

void
inbox_post(struct inbox *inbox, struct inbox_item *item)
{
    item->next = NULL;
    pthread_mutex_lock(&inbox->lock);
    bool was_empty = inbox->head == NULL;
    if (inbox->tail)
        inbox->tail->next = item;
    else
        inbox->head = item;
    inbox->tail = item;
    /* Activate under the lock so the loop cannot drain and miss the wake-up. */
    if (was_empty)
        event_active(inbox->wake, 0, 0);
    pthread_mutex_unlock(&inbox->lock);
}

void
inbox_free(struct inbox *inbox)
{
    if (!inbox)
        return;
    run_all(take_all(inbox), true);
    event_free(inbox->wake);
    pthread_mutex_destroy(&inbox->lock);
    free(inbox);
}

/* MQTT client helpers for relaymq-bench (see bench_mqtt.h). Encoding goes
 * through the broker's own codec, broker/packet_codec.h, so the bench also
 * exercises the client-side encoders. */
#include "tests/bench/bench_mqtt.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t
bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
bench_client_id(const struct bench_opts *o, char role, uint32_t index,
                char out[BENCH_CLIENT_ID_MAX])
{
    char tail[32];
    snprintf(tail, sizeof(tail), "-%x-%c%u", (unsigned)getpid(), role, (unsigned)index);
    size_t plen = strlen(o->client_prefix);
    size_t max = o->protocol == MQTT_PROTO_V31 ? 23 : BENCH_CLIENT_ID_MAX - 1;
    size_t keep = strlen(tail) >= max ? 0 : max - strlen(tail);
    const char *prefix = o->client_prefix + (plen > keep ? plen - keep : 0);
    snprintf(out, BENCH_CLIENT_ID_MAX, "%s%s", prefix, tail);
    out[max] = '\0';
}

static struct mqtt_str
str_of(const char *s)
{
    return (struct mqtt_str){.data = (const uint8_t *)s, .len = (uint16_t)strlen(s)};
}

bool
bench_queue_connect(struct bconn *c, const struct bench_opts *o, const char *client_id)
{
    struct mqtt_connect conn = {
        .protocol_level = o->protocol,
        .clean_session = true,
        .keepalive = o->keepalive,
        .client_id = str_of(client_id),
        .has_username = o->username != NULL,
        .has_password = o->password != NULL,
    };
    if (o->username != NULL)
        conn.username = str_of(o->username);
    if (o->password != NULL)
        conn.password = str_of(o->password);
    size_t n = mqtt_connect_size(&conn);
    uint8_t *p = bconn_reserve(c, n);
    if (p == NULL)
        return false;
    bconn_commit(c, mqtt_encode_connect(p, &conn));
    return true;
}

bool
bench_queue_subscribe(struct bconn *c, uint16_t packet_id, const char *filter, uint8_t qos)
{
    struct mqtt_str f = str_of(filter);
    size_t n = mqtt_topic_list_size(MQTT_SUBSCRIBE, &f, 1);
    uint8_t *p = bconn_reserve(c, n);
    if (p == NULL)
        return false;
    bconn_commit(c, mqtt_encode_topic_list(p, MQTT_SUBSCRIBE, packet_id, &f, &qos, 1));
    return true;
}

bool
bench_queue_ack(struct bconn *c, enum mqtt_type type, uint16_t packet_id)
{
    uint8_t *p = bconn_reserve(c, 4);
    if (p == NULL)
        return false;
    bconn_commit(c, mqtt_encode_ack(p, type, packet_id));
    return true;
}

bool
bench_queue_empty(struct bconn *c, enum mqtt_type type)
{
    uint8_t *p = bconn_reserve(c, 2);
    if (p == NULL)
        return false;
    bconn_commit(c, mqtt_encode_empty(p, type));
    return true;
}

enum rmq_status
bench_check_connack(const struct mqtt_packet *p)
{
    static atomic_bool reported; /* once per process, whichever thread sees it */
    if (p->type == MQTT_CONNACK && p->u.connack.return_code == MQTT_CONNACK_ACCEPTED)
        return RMQ_OK;
    if (!atomic_exchange(&reported, true)) {
        if (p->type == MQTT_CONNACK)
            fprintf(stderr, "relaymq-bench: broker refused the connection (CONNACK code %u)\n",
                    (unsigned)p->u.connack.return_code);
        else
            fprintf(stderr, "relaymq-bench: expected CONNACK, got %s\n", mqtt_type_name(p->type));
    }
    return RMQ_PROTOCOL;
}

long
bench_rss_kib(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

double
bench_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void
bench_format_percentiles(const struct latency_hist *h, char *buf, size_t n)
{
    snprintf(buf, n, " p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
             (double)latency_hist_quantile(h, 0.50) / 1e3,
             (double)latency_hist_quantile(h, 0.90) / 1e3,
             (double)latency_hist_quantile(h, 0.99) / 1e3,
             (double)latency_hist_quantile(h, 0.999) / 1e3, (double)h->max_ns / 1e3);
}

/* Logging: one line per event to stderr, with a monotonic-free wall clock
 * timestamp, a level and the message. Thread-safe (one write(2) per line). */
#ifndef RMQ_COMMON_LOG_H
#define RMQ_COMMON_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Sets the minimum level that is written. */
void log_set_level(enum log_level level);

/* Parses "debug", "info", "warn"/"warning", "error"; false if unknown. */
bool log_level_parse(const char *text, enum log_level *out);

bool log_enabled(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) do { if (log_enabled(LOG_LEVEL_DEBUG)) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif

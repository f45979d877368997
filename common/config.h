/* Table-driven configuration. A program describes its options once (name,
 * type, default, help, offset of the field in its own settings struct) and
 * this module fills the struct from defaults, a config file, environment
 * variables and the command line, in that order of rising precedence.
 *
 * Config file: one "name value" per line, '#' starts a comment, blank lines
 * ignored; names are the long flag names without "--". Environment: the
 * option "max-packet-size" is read from RELAYMQ_MAX_PACKET_SIZE (prefix given
 * by the caller); a list option takes a comma-separated value there. Command
 * line: "--name value" or "--name=value"; a bool flag given without a value
 * ("--allow-anonymous") means true only when followed by another flag or the end.
 *
 * List options are repeatable: within one source the values accumulate; a
 * higher-precedence source that sets the option replaces what lower ones set.
 *
 * Errors are written into the caller's buffer as one human-readable line
 * naming the source (file and line, environment variable or flag) and the
 * problem, and the call returns RMQ_INVALID. Not thread-safe; call at start-up. */
#ifndef RMQ_COMMON_CONFIG_H
#define RMQ_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

enum config_type {
    CONFIG_STRING,   /* char * (owned, heap)                                 */
    CONFIG_BOOL,     /* bool: true/false/yes/no/on/off/1/0                   */
    CONFIG_INT,      /* int64_t, decimal, may be negative                     */
    CONFIG_SIZE,     /* uint64_t bytes: 1024, 64k, 256K, 10m, 1g (powers of 2) */
    CONFIG_DURATION, /* uint64_t milliseconds: 500ms, 10s, 5m, 1h, 2d; bare number = seconds */
    CONFIG_LIST,     /* struct config_list, repeatable string                  */
};

struct config_list {
    char **items;
    size_t count;
};

struct config_option {
    const char *name;      /* long flag name, e.g. "max-packet-size" */
    enum config_type type;
    const char *def;       /* default as text (parsed like user input), or NULL */
    const char *help;      /* one line for --help */
    size_t offset;         /* offsetof(settings struct, field) */
    int64_t min, max;      /* inclusive bounds for INT/SIZE/DURATION; both 0 = unbounded */
};

/* Applies every default. Call once on a zeroed struct. */
enum rmq_status config_defaults(const struct config_option *opts, size_t n, void *target,
                                char *err, size_t errlen);

/* Reads a config file into target (precedence: file). */
enum rmq_status config_load_file(const struct config_option *opts, size_t n, void *target,
                                 const char *path, char *err, size_t errlen);

/* Reads PREFIX<NAME> variables (dashes become underscores, upper case). */
enum rmq_status config_load_env(const struct config_option *opts, size_t n, void *target,
                                const char *prefix, char *err, size_t errlen);

/* The whole start-up load after config_defaults(): argv[first..argc) is
 * scanned for "--config FILE" (that file is loaded first, whatever the
 * flag's position), then the environment (when env_prefix is not NULL),
 * then every other flag. "--help" and "--version" are not handled here: the
 * caller checks for them first. */
enum rmq_status config_load_args(const struct config_option *opts, size_t n, void *target,
                                 int argc, char **argv, int first, const char *env_prefix,
                                 char *err, size_t errlen);

/* Sets one option from text, as if read from a source at that precedence. */
enum rmq_status config_set(const struct config_option *opts, size_t n, void *target,
                           const char *name, const char *value, char *err, size_t errlen);

/* Writes the option list with defaults and help, aligned, for --help. */
void config_print_help(const struct config_option *opts, size_t n, FILE *out);

/* Frees strings and lists owned by target. */
void config_free(const struct config_option *opts, size_t n, void *target);

/* Helpers also used outside the option table (e.g. REST bodies). */
enum rmq_status config_parse_duration_ms(const char *text, uint64_t *out);
enum rmq_status config_parse_size(const char *text, uint64_t *out);
enum rmq_status config_parse_bool(const char *text, bool *out);

#endif

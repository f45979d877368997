/* `relaymq passwd`: creates and edits password files (broker/auth.h), with
 * mosquitto_passwd's command line:
 *
 *   relaymq passwd [-c] [-b] FILE USER [PASSWORD]   add or change USER
 *   relaymq passwd -D FILE USER                     delete USER
 *
 * -c creates (or overwrites) FILE; -b takes the password from the command
 * line. Otherwise the password is read twice from the terminal with echo off
 * or, when stdin is not a terminal, once from its first line.
 *
 * The file is rewritten atomically: a temporary file (mode 0600) in the same
 * directory is written, synced and renamed over FILE. Lines of other users,
 * comments and blank lines are kept as they are. Passwords are wiped from
 * memory after use and never printed. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "broker/auth.h"

#define MAX_PASSWORD 65535u
#define LINE_MAX_LEN (MAX_PASSWORD + 512u)

int passwd_main(int argc, char **argv);

static void
passwd_usage(FILE *out)
{
    fprintf(out,
            "usage: relaymq passwd [-c] [-b] FILE USER [PASSWORD]\n"
            "       relaymq passwd -D FILE USER\n"
            "       relaymq passwd -H [PASSWORD]\n"
            "\n"
            "  -c  create FILE, replacing any existing one\n"
            "  -b  take PASSWORD from the command line (visible to other local users)\n"
            "  -D  delete USER from FILE\n"
            "  -H  print only the hash (for --users-redis: redis-cli SET PREFIXusers:USER HASH)\n"
            "Without -b the password is read from the terminal (twice, not echoed) or\n"
            "from the first line of standard input. Lines are written in Mosquitto's\n"
            "$7$ format (PBKDF2-HMAC-SHA512, %u iterations).\n",
            AUTH_DEFAULT_ITERATIONS);
}

/* Reads one line (without its newline) into a malloc'd string; NULL at EOF
 * or error. With echo_off, stdin is a terminal whose echo is disabled
 * meanwhile. */
static char *
read_secret(const char *prompt, bool echo_off)
{
    struct termios old, quiet;
    bool restore = false;
    if (echo_off) {
        fputs(prompt, stderr);
        fflush(stderr);
        if (tcgetattr(STDIN_FILENO, &old) == 0) {
            quiet = old;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
        }
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (restore) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

static void
secret_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* The password for a new entry: malloc'd, or NULL after printing why. */
static char *
get_password(const char *arg)
{
    char *pw;
    if (arg) {
        pw = strdup(arg);
    } else if (isatty(STDIN_FILENO)) {
        pw = read_secret("Password: ", true);
        char *again = pw ? read_secret("Reenter password: ", true) : NULL;
        if (!again || strcmp(pw, again) != 0) {
            fprintf(stderr, "relaymq passwd: passwords do not match\n");
            secret_free(pw);
            pw = NULL;
        }
        secret_free(again);
        if (!pw)
            return NULL;
    } else {
        pw = read_secret(NULL, false);
    }
    if (!pw) {
        fprintf(stderr, "relaymq passwd: no password given\n");
        return NULL;
    }
    if (!*pw || strlen(pw) > MAX_PASSWORD) {
        fprintf(stderr, "relaymq passwd: the password must be 1 to %u bytes\n", MAX_PASSWORD);
        secret_free(pw);
        return NULL;
    }
    return pw;
}

/* True if line is USER's entry ("USER:..."). */
static bool
is_user_line(const char *line, const char *user)
{
    size_t n = strlen(user);
    return strncmp(line, user, n) == 0 && line[n] == ':';
}

/* Copies the lines of src (may be NULL) to dst, replacing USER's entry by
 * entry (or dropping it when entry is NULL); appends entry if USER had
 * none. *found tells whether USER was there. False on a write error. */
static bool
copy_lines(FILE *src, FILE *dst, const char *user, const char *entry, bool *found)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool ok = true;
    *found = false;
    while (src && (n = getline(&line, &cap, src)) >= 0) {
        if (is_user_line(line, user)) {
            /* A duplicate entry would make the file unloadable: keep one. */
            if (entry && !*found)
                ok = ok && fprintf(dst, "%s\n", entry) >= 0;
            *found = true;
            continue;
        }
        ok = ok && fwrite(line, 1, (size_t)n, dst) == (size_t)n;
        if (n > 0 && line[n - 1] != '\n')
            ok = ok && fputc('\n', dst) != EOF;
    }
    if (src && ferror(src))
        ok = false;
    if (entry && !*found)
        ok = ok && fprintf(dst, "%s\n", entry) >= 0;
    if (line) {
        OPENSSL_cleanse(line, cap);
        free(line);
    }
    return ok;
}

/* Rewrites path atomically with USER's entry set to entry (NULL: deleted).
 * Returns the exit code, after printing any error. */
static int
rewrite(const char *path, bool create, const char *user, const char *entry)
{
    FILE *src = NULL, *dst = NULL;
    char *tmp = NULL, *dircopy = NULL;
    int fd = -1, rc = 1;
    bool found;

    if (!create && !(src = fopen(path, "r"))) {
        fprintf(stderr, "relaymq passwd: %s: %s%s\n", path, strerror(errno),
                errno == ENOENT && entry ? " (use -c to create it)" : "");
        return 1;
    }
    if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0) {
        tmp = NULL;
        goto fail;
    }
    if ((fd = mkstemp(tmp)) < 0 || fchmod(fd, 0600) != 0 || !(dst = fdopen(fd, "w"))) {
        fprintf(stderr, "relaymq passwd: cannot create a temporary file beside %s: %s\n", path,
                strerror(errno));
        goto fail;
    }
    fd = -1; /* dst owns it */
    bool ok = copy_lines(src, dst, user, entry, &found);
    ok = fflush(dst) == 0 && fsync(fileno(dst)) == 0 && ok;
    ok = fclose(dst) == 0 && ok;
    dst = NULL;
    if (!ok) {
        fprintf(stderr, "relaymq passwd: writing %s failed: %s\n", tmp, strerror(errno));
        goto fail;
    }
    if (!entry && !found) {
        fprintf(stderr, "relaymq passwd: user '%s' not found in %s\n", user, path);
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "relaymq passwd: rename %s to %s: %s\n", tmp, path, strerror(errno));
        goto fail;
    }
    /* Make the rename itself durable. */
    if ((dircopy = strdup(path)) != NULL) {
        int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(tmp);
    tmp = NULL;
    rc = 0;
fail:
    if (dst)
        fclose(dst);
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    if (src)
        fclose(src);
    free(dircopy);
    return rc;
}

/* -H: the "$7$..." hash alone, for a user kept in Redis. arg: the password
 * (NULL: asked for as usual); usage false: the options were wrong. */
static int
print_hash(const char *arg, bool usage)
{
    if (!usage) {
        passwd_usage(stderr);
        return 2;
    }
    char *pw = get_password(arg);
    if (!pw)
        return 1;
    char line[512];
    int rc = 1;
    if (auth_format_line("u", pw, strlen(pw), AUTH_DEFAULT_ITERATIONS, line, sizeof(line)) !=
        RMQ_OK)
        fprintf(stderr, "relaymq passwd: hashing the password failed\n");
    else if (printf("%s\n", line + 2) > 0 && fflush(stdout) == 0)
        rc = 0; /* the line after "u:" */
    OPENSSL_cleanse(line, sizeof(line));
    secret_free(pw);
    return rc;
}

int
passwd_main(int argc, char **argv)
{
    bool create = false, batch = false, del = false, hash_only = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "-c") == 0)
            create = true;
        else if (strcmp(argv[i], "-b") == 0)
            batch = true;
        else if (strcmp(argv[i], "-D") == 0)
            del = true;
        else if (strcmp(argv[i], "-H") == 0)
            hash_only = true;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            passwd_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "relaymq passwd: unknown option %s\n", argv[i]);
            passwd_usage(stderr);
            return 2;
        }
    }
    int rest = argc - i;
    if (hash_only)
        return print_hash(create || batch || del || rest > 1 ? NULL : argv[i],
                          !(create || batch || del || rest > 1));
    if ((del && (create || batch || rest != 2)) || (!del && rest != (batch ? 3 : 2))) {
        passwd_usage(stderr);
        return 2;
    }
    const char *file = argv[i], *user = argv[i + 1];
    if (!auth_username_valid(user)) {
        fprintf(stderr, "relaymq passwd: the username must be non-empty, without ':' or "
                        "control characters\n");
        return 2;
    }
    if (del)
        return rewrite(file, false, user, NULL);
    if (!create && access(file, F_OK) != 0) { /* say so before asking for a password */
        fprintf(stderr, "relaymq passwd: %s: %s%s\n", file, strerror(errno),
                errno == ENOENT ? " (use -c to create it)" : "");
        return 1;
    }

    char *pw = get_password(batch ? argv[i + 2] : NULL);
    if (!pw)
        return 1;
    size_t cap = strlen(user) + 256;
    char *entry = malloc(cap);
    int rc = 1;
    if (!entry)
        fprintf(stderr, "relaymq passwd: out of memory\n");
    else if (auth_format_line(user, pw, strlen(pw), AUTH_DEFAULT_ITERATIONS, entry, cap) != RMQ_OK)
        fprintf(stderr, "relaymq passwd: hashing the password failed\n");
    else
        rc = rewrite(file, create, user, entry);
    secret_free(pw);
    free(entry);
    return rc;
}

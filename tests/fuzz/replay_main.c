/* Replays a fuzz corpus without libFuzzer, so every build (gcc included)
 * runs the kept inputs of a target under the sanitizers.
 *
 * Usage: <target>_replay DIR. Each regular file in DIR whose name does not
 * start with '.' is read into an exactly sized heap buffer (so ASan sees any
 * read past its end) and passed once to LLVMFuzzerTestOneInput, in name
 * order. The name is printed before each run, so a crash names its input.
 * Exit status: 0 if at least one input ran, 1 if DIR is missing, unreadable
 * or has no inputs, 2 on bad usage. Not tied to any one target. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the whole of fd into a new buffer of exactly its size (at least one
 * byte is allocated, so an empty input still gets a valid pointer). */
static uint8_t *
read_all(int fd, size_t *size)
{
    struct stat st;
    uint8_t *buf = NULL;
    size_t got = 0;

    if (fstat(fd, &st) != 0)
        goto fail;
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (!buf)
        goto fail;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        got += (size_t)n;
    }
    *size = got;
    return buf;
fail:
    free(buf);
    return NULL;
}

/* Runs one entry of dir. Returns 1 if it ran, 0 if skipped, -1 on error. */
static int
replay_entry(DIR *dir, const char *name)
{
    struct stat st;
    uint8_t *data = NULL;
    size_t size = 0;
    int fd, ret = -1;

    if (name[0] == '.')
        return 0;
    fd = openat(dirfd(dir), name, O_RDONLY);
    if (fd < 0)
        goto fail;
    if (fstat(fd, &st) != 0)
        goto fail;
    if (S_ISREG(st.st_mode)) {
        data = read_all(fd, &size);
        if (!data)
            goto fail;
        fprintf(stderr, "Running: %s (%zu bytes)\n", name, size);
        LLVMFuzzerTestOneInput(data, size);
    }
    ret = S_ISREG(st.st_mode) ? 1 : 0;
fail:
    if (ret < 0)
        fprintf(stderr, "cannot read %s: %s\n", name, strerror(errno));
    free(data);
    if (fd >= 0)
        close(fd);
    return ret;
}

static int
compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Lists the entry names of dir, sorted, into *out (the caller frees each
 * name and the array) and their count into *n. Returns 0, or -1 on error. */
static int
sorted_names(DIR *dir, char ***out, size_t *n)
{
    char **names = NULL, **grown;
    size_t count = 0, cap = 0;
    struct dirent *ent;

    for (;;) {
        errno = 0; /* readdir() reports errors only through errno */
        if (!(ent = readdir(dir)))
            break;
        if (count == cap) {
            cap = cap ? 2 * cap : 64;
            grown = realloc(names, cap * sizeof(*names));
            if (!grown)
                goto fail;
            names = grown;
        }
        if (!(names[count] = strdup(ent->d_name)))
            goto fail;
        count++;
    }
    if (errno != 0)
        goto fail;
    if (count)
        qsort(names, count, sizeof(*names), compare_names);
    *out = names;
    *n = count;
    return 0;
fail:
    while (count)
        free(names[--count]);
    free(names);
    return -1;
}

int
main(int argc, char **argv)
{
    char **names = NULL;
    size_t n = 0, replayed = 0;
    int status = 1;
    DIR *dir;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    dir = opendir(argv[1]);
    if (!dir) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (sorted_names(dir, &names, &n) != 0) {
        fprintf(stderr, "%s: cannot list: %s\n", argv[1], strerror(errno));
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        int r = replay_entry(dir, names[i]);
        if (r < 0)
            goto done;
        replayed += (size_t)r;
    }
    printf("replayed %zu inputs from %s\n", replayed, argv[1]);
    if (replayed == 0)
        fprintf(stderr, "%s: no inputs\n", argv[1]);
    status = replayed ? 0 : 1;
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(dir);
    return status;
}

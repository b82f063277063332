/* tests/fuzz: helpers shared by the fuzz targets: a private temporary folder (on tmpfs where
 * there is one, so that fsync costs nothing), writing an input to a file in it, and an input
 * as an anonymous memory file.
 * Each target includes it once. */
#ifndef MMS_TESTS_FUZZ_UTIL_H
#define MMS_TESTS_FUZZ_UTIL_H

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A new folder for this process: $FUZZ_TMPDIR, else /dev/shm, else $TMPDIR, else /tmp.
 * Its path in dir (len bytes); false when none could be made. */
static inline bool
fuzz_tmpdir(const char *name, char *dir, size_t len)
{
    const char *cand[4] = {getenv("FUZZ_TMPDIR"), "/dev/shm", getenv("TMPDIR"), "/tmp"};
    for (int i = 0; i < 4; i++) {
        if (cand[i] == NULL || cand[i][0] == '\0' || access(cand[i], W_OK) != 0)
            continue;
        snprintf(dir, len, "%s/%s-XXXXXX", cand[i], name);
        if (mkdtemp(dir) != NULL)
            return true;
    }
    return false;
}

static inline int
fuzz_rm_one(const char *p, const struct stat *sb, int type, struct FTW *f)
{
    (void)sb;
    (void)f;
    return type == FTW_DP ? rmdir(p) : unlink(p);
}

/* Remove the folder dir and everything in it (keep_top: empty it only). */
static inline void
fuzz_rmtree(const char *dir, bool keep_top)
{
    nftw(dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (keep_top)
        mkdir(dir, 0700);
}

/* Write n bytes to the new file path; false on failure. */
/* Write all n bytes of data to fd; false when a write fails. */
static inline bool
fuzz_write_fd(int fd, const uint8_t *data, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, data + done, n - done);
        if (w <= 0)
            return false;
        done += (size_t)w;
    }
    return true;
}

static inline bool
fuzz_write(const char *path, const uint8_t *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    bool ok = fuzz_write_fd(fd, data, n);
    close(fd);
    return ok;
}

/* The input as an anonymous memory file named name, readable at path (/proc/self/fd/N, len
 * bytes) as a file on disk is. Returns its descriptor (close it), or -1. */
static inline int
fuzz_memfd(const char *name, const uint8_t *data, size_t n, char *path, size_t len)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (!fuzz_write_fd(fd, data, n)) {
        close(fd);
        return -1;
    }
    snprintf(path, len, "/proc/self/fd/%d", fd);
    return fd;
}

/* The library's refusals are expected; a broken promise is a finding. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif

/* tests/fuzz: helpers shared by the fuzz targets: a private temporary folder (on tmpfs where
 * there is one, so that fsync costs nothing) and writing an input to a file in it.
 * Each target includes it once. */
#ifndef MMS_TESTS_FUZZ_UTIL_H
#define MMS_TESTS_FUZZ_UTIL_H

#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A new folder for this process: $FUZZ_TMPDIR, else /dev/shm, else $TMPDIR, else /tmp.
 * Its path in dir (len bytes); false when none could be made. */
static bool
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

static int
fuzz_rm_one(const char *p, const struct stat *sb, int type, struct FTW *f)
{
    (void)sb;
    (void)f;
    return type == FTW_DP ? rmdir(p) : unlink(p);
}

/* Remove the folder dir and everything in it (keep_top: empty it only). */
static void
fuzz_rmtree(const char *dir, bool keep_top)
{
    nftw(dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (keep_top)
        mkdir(dir, 0700);
}

/* Write n bytes to the new file path; false on failure. */
static bool
fuzz_write(const char *path, const uint8_t *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, data + done, n - done);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    close(fd);
    return done == n;
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

/* common/fs: fsync, mkdir, copy, random names (fs.h). */
#include "common/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"

int
mms_fs_mkdir(const char *path)
{
    if (mkdir(path, 0750) == 0)
        return 0;
    int rc = mms_err_errno();
    struct stat sb;
    if (rc == -EEXIST) /* there already: a folder, or a link to one, will do */
        return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
    return rc;
}

static int
fsync_open(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return mms_err_errno();
    int rc = fsync(fd) == 0 ? 0 : mms_err_errno();
    close(fd);
    return rc;
}

int
mms_fs_fsync(const char *path)
{
    return fsync_open(path, O_RDONLY);
}

int
mms_fs_fsync_dir(const char *path)
{
    return fsync_open(path, O_RDONLY | O_DIRECTORY);
}

int
mms_fs_random_name(const char *prefix, char *out, size_t len)
{
    uint8_t r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return mms_err_errno();
    snprintf(out, len, "%s-%02x%02x%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3], r[4],
             r[5], r[6], r[7]);
    return 0;
}

/* Write all n bytes of buf to fd. Returns 0 or -errno. */
static int
write_all(int fd, const char *buf, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return mms_err_errno();
        done += (size_t)w;
    }
    return 0;
}

int
mms_fs_copy(const char *src, const char *dst)
{
    int rc = 0;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return mms_err_errno();
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (out < 0) {
        rc = mms_err_errno();
        close(in);
        return rc;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? mms_err_errno() : 0;
            break;
        }
        if ((rc = write_all(out, buf, (size_t)n)) < 0)
            break;
    }
    if (rc == 0 && fsync(out) != 0)
        rc = mms_err_errno();
    if (close(out) != 0 && rc == 0)
        rc = mms_err_errno();
    close(in);
    if (rc < 0)
        unlink(dst);
    return rc;
}

int
mms_fs_remove_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? 0 : mms_err_errno();
    int rc = 0;
    struct dirent *e;
    char file[4400];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        if (unlink(file) != 0 && errno != ENOENT && rc == 0)
            rc = mms_err_errno();
    }
    closedir(d);
    if (rc == 0 && rmdir(path) != 0 && errno != ENOENT)
        rc = mms_err_errno();
    return rc;
}

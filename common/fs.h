/* common/fs: the few file system steps the durability rule of design.md section 3 is made
 * of: fsync of a file and of a directory, a directory that may exist already, a copy that is
 * complete on disk before it returns, a random name, a directory emptied and removed.
 * Threads: any (no shared state). */
#ifndef MMS_COMMON_FS_H
#define MMS_COMMON_FS_H

#include <stddef.h>

/* mkdir(path, 0750), an existing directory (or a link to one) being fine. Returns 0, -ENOTDIR
 * when something else is there, or -errno. */
int mms_fs_mkdir(const char *path);

/* fsync the file at path. Returns 0 or -errno. */
int mms_fs_fsync(const char *path);

/* fsync the directory at path (after a rename or unlink in it). Returns 0 or -errno. */
int mms_fs_fsync_dir(const char *path);

/* "PREFIX-" and 16 random hex digits into out (len bytes). Returns 0 or -errno. */
int mms_fs_random_name(const char *prefix, char *out, size_t len);

/* Copy the file src to a new file dst (created with O_EXCL, mode 0640) and fsync it. On
 * failure dst is removed. Returns 0 or -errno. */
int mms_fs_copy(const char *src, const char *dst);

/* Remove the plain files of directory path, then the directory (one level: a subdirectory
 * makes it fail with -ENOTEMPTY or -EISDIR). A missing directory is not an error.
 * Returns 0 or -errno. */
int mms_fs_remove_dir(const char *path);

#endif

/* Error codes: one X-macro list generates the enum, mms_strerror() and mms_err_name().
 *
 * Fallible functions return 0 on success or a negative code. System failures are -errno and
 * keep the system's numbering; project codes count down from -1000, are never renumbered, and
 * a retired code stays in the list as MMS_EOBSOLETEnnnn. New codes are appended.
 * Threads: everything here is thread-safe (constant tables only). */
#ifndef MMS_COMMON_ERR_H
#define MMS_COMMON_ERR_H

#include <errno.h>
#include <stddef.h>

#define MMS_ERR_MAP(X)                                                                             \
    X(EPERM, -EPERM, "operation not permitted")                                                    \
    X(ENOENT, -ENOENT, "no such file or directory")                                                \
    X(EINTR, -EINTR, "interrupted system call")                                                    \
    X(EIO, -EIO, "input/output error")                                                             \
    X(EBADF, -EBADF, "bad file descriptor")                                                        \
    X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                                         \
    X(ENOMEM, -ENOMEM, "out of memory")                                                            \
    X(EACCES, -EACCES, "permission denied")                                                        \
    X(EEXIST, -EEXIST, "file exists")                                                              \
    X(ENOTDIR, -ENOTDIR, "not a directory")                                                        \
    X(EISDIR, -EISDIR, "is a directory")                                                           \
    X(EINVAL, -EINVAL, "invalid argument")                                                         \
    X(ENOSPC, -ENOSPC, "no space left on device")                                                  \
    X(EROFS, -EROFS, "read-only file system")                                                      \
    X(ERANGE, -ERANGE, "result out of range")                                                      \
    X(ENAMETOOLONG, -ENAMETOOLONG, "file name too long")                                           \
    X(ENOSYS, -ENOSYS, "function not implemented")                                                 \
    X(EOVERFLOW, -EOVERFLOW, "value too large for defined data type")                              \
    X(ETIMEDOUT, -ETIMEDOUT, "operation timed out")                                                \
    X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                                           \
    X(EDICOM, -1000, "DICOM toolkit error")                                                        \
    X(EDIMSE, -1001, "DIMSE failure")                                                              \
    X(EMODEL, -1002, "model file malformed or incompatible")                                       \
    X(ECONFIG, -1003, "invalid configuration")                                                     \
    X(ECUDA, -1004, "CUDA runtime error")                                                          \
    X(ECUDNN, -1005, "cuDNN error")                                                                \
    X(ENODEV, -1006, "no compute device")                                                          \
    X(ENOTSUP, -1007, "not supported")                                                             \
    X(EUSAGE, -1008, "invalid command-line usage")

#ifdef __cplusplus
extern "C" {
#endif

enum mms_err {
#define MMS_ERR_GEN(name, value, msg) MMS_##name = (value),
    MMS_ERR_MAP(MMS_ERR_GEN)
#undef MMS_ERR_GEN
};

/* The message for err: a project code's text, or strerror's text for any other -errno.
 * Returns a static string, never NULL ("unknown error" for codes that are neither).
 * Threads: any. */
const char *mms_strerror(int err);

/* The symbolic name of err without the MMS_ prefix ("ENOMEM", "EMODEL"), or NULL when err
 * is not in MMS_ERR_MAP. Threads: any. */
const char *mms_err_name(int err);

/* -errno for the current errno, never 0 (MMS_EIO when errno is 0). Threads: any. */
int mms_err_errno(void);

/* Format a one-line reason into why (why_len bytes; why may be NULL) and return rc, for
 * functions that fail with a code and a reason. Threads: any. */
int mms_why(char *why, size_t why_len, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif

#endif

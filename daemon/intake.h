/* daemon/intake: the drop folder (design.md section 1).
 *
 * A thread of its own watches the folder tree with inotify and rescans it every scan_s
 * seconds (events can be lost). A file is taken at once when it was renamed (moved) into the
 * tree, otherwise when its size and modification time have not changed for stable_s seconds.
 * Names that begin with '.' are left alone (copy tools write such temporary names and rename
 * them when done), and so are DICOMDIR files. A taken file goes through the same durable path
 * as a C-STORE (daemon/spool) and is removed from the folder only after that; a file that is
 * not usable DICOM goes to quarantine/ with a .why file. A file that failed for want of
 * resources (disk full) stays and is tried again at the next scan.
 * libuv's file system events cannot tell a rename from a write and do not recurse on Linux,
 * hence inotify. Threads: start and stop from the loop thread; the work runs on the intake
 * thread. */
#ifndef MMS_DAEMON_INTAKE_H
#define MMS_DAEMON_INTAKE_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/spool.h"

struct mms_intake_opts {
    const char *dir;
    double stable_s, scan_s;
    uint64_t min_free_bytes; /* below this free space, files wait in the folder */
};

struct mms_intake;

/* Start watching o->dir (created when missing). Ownership: *out is new; stop it with
 * mms_intake_stop(). Returns 0, -errno, MMS_ENOMEM. */
int mms_intake_start(const struct mms_intake_opts *o, struct mms_spool *sp, struct mms_intake **out,
                     char *why, size_t why_len);

/* Stop the thread (within a fraction of a second) and free in. NULL is a no-op. */
void mms_intake_stop(struct mms_intake *in);

#endif

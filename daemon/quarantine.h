/* daemon/quarantine: state_dir/quarantine/, where received data that cannot be used is kept
 * for an operator instead of being deleted (README "Operations", conformance.md 3.1).
 *
 * An item is two files: NAME, the data as it was received, and NAME.why, one "key: value"
 * line per field (time, origin, reason, size). NAME is "q-" and 16 random hex digits, never
 * derived from received text. Every value in NAME.why went through mms_text_escape() with
 * MMS_ESCAPE_BACKSLASH: no control character or newline from a received name reaches it, so
 * a line is always one field. The .why is written and synced before the data is moved in;
 * the item's age is the .why file's modification time. The directory is bounded in bytes and
 * age by mms_quarantine_prune(), oldest item first.
 * Threads: every function may be called from several threads at once; a prune may run while
 * items are added. */
#ifndef MMS_DAEMON_QUARANTINE_H
#define MMS_DAEMON_QUARANTINE_H

#include <stddef.h>
#include <stdint.h>

/* The fields of one item, as stored (escaped). */
struct mms_quarantine_item {
    char name[32];    /* "q-..." */
    double time;      /* when it was quarantined, seconds since the epoch */
    int64_t size;     /* bytes of the data file; -1 when it is missing */
    char origin[512]; /* where it came from: a drop folder path or "C-STORE from AE@host" */
    char reason[1024];
};

/* Move the file path into the directory qdir (which exists) as a new item, with origin and
 * reason (any bytes; escaped here). When path is on another file system than qdir, it is
 * copied under a hidden name, synced, renamed into place, the directory synced, and only
 * then is path removed. name (name_len bytes, may be NULL) receives the item's name.
 * Returns 0; MMS_EEXIST when the item is complete in quarantine but path could not be
 * removed (why says so, with the errno: the caller must not quarantine path again); or
 * -errno when nothing was quarantined and path is untouched, with why naming the step and
 * the errno. */
int mms_quarantine_put(const char *qdir, const char *path, const char *origin, const char *reason,
                       char *name, size_t name_len, char *why, size_t why_len);

/* Read the items of qdir: *count and *bytes (data and .why files) receive the totals, and
 * newest (capacity max_newest, may be 0) the newest items, newest first, *n_newest how many.
 * Returns 0 (a missing directory is empty), or -errno with why. */
int mms_quarantine_scan(const char *qdir, struct mms_quarantine_item *newest, size_t max_newest,
                        size_t *n_newest, int64_t *count, int64_t *bytes, char *why,
                        size_t why_len);

/* Remove the items older than max_age_s (0: no age limit), then the oldest items while the
 * total is over max_bytes (0: no size limit); and leftovers of an interrupted copy older than
 * an hour. *removed and *freed (may be NULL) receive what was removed. Returns 0 or -errno
 * with why (what could be removed is removed). */
int mms_quarantine_prune(const char *qdir, int64_t max_bytes, double max_age_s, double now,
                         int *removed, int64_t *freed, char *why, size_t why_len);

#endif

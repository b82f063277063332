/* daemon/spool: the durable path every received instance takes (design.md section 3).
 *
 * A file complete in state_dir/tmp/ is fsynced, read (header, SHA-256 of its data set),
 * renamed to state_dir/instances/xx/yy/DIGEST.dcm, its directory fsynced, and its index row
 * committed; only then is it "stored", and only then may a C-STORE be answered with success
 * or a drop file be removed. Names come from the digest, never from received text.
 * Threads: every function may be called from several threads at once (the Store SCP's
 * association threads, the drop folder thread). */
#ifndef MMS_DAEMON_SPOOL_H
#define MMS_DAEMON_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/index.h"

struct mms_spool;

/* Called after an instance was stored (new or replaced; not for duplicates), on the thread
 * that stored it. */
typedef void (*mms_spool_notify_fn)(void *ud, const char *series_uid);

/* What mms_spool_ingest() did. */
struct mms_ingest {
    enum mms_put_result put;
    char sop_instance[65], series_uid[65];
    bool derived_uids;    /* Study/Series UIDs were empty and were derived from the content */
    char quarantined[32]; /* MMS_EDICOM: the quarantine item holding the refused file, or "" */
    bool bad_identity;    /* on MMS_EDICOM: a UID is not valid, or the same data set is stored
                             with other file meta (a Store SCP answers 0xA900) */
};

/* Create instances/ and quarantine/ under state_dir and tmp/ under node_dir (this node's own
 * folder on state_dir's file system: state_dir itself, or state_dir/nodes/NODE when nodes
 * share state_dir), remove what a crash left in that tmp/, and keep ix (not owned) for the
 * rows. notify may be NULL.
 * Ownership: *out is new; free with mms_spool_close(). Returns 0, -errno, MMS_ENOMEM. */
int mms_spool_open(const char *state_dir, const char *node_dir, struct mms_index *ix,
                   mms_spool_notify_fn notify, void *ud, struct mms_spool **out, char *why,
                   size_t why_len);
void mms_spool_close(struct mms_spool *sp);

/* The memory ceiling of the header reader's child unless mms_spool_set_limits() says. */
#define MMS_SPOOL_DEFAULT_MEMORY_MB 8192

/* The limits of the child process that reads each file's header (sandbox.h): max_memory
 * bytes beyond what it inherits (0: none), timeout_s seconds of wall clock and of CPU.
 * Default: 8192 MB, 60 s. Threads: before the first file is ingested (the readers start then
 * and keep these limits). */
void mms_spool_set_limits(struct mms_spool *sp, size_t max_memory, unsigned timeout_s);

/* node_dir/tmp, where files are written before they are ingested. */
const char *mms_spool_tmp_dir(const struct mms_spool *sp);

/* Bytes free for unprivileged users on the file system of state_dir, or -errno. */
int64_t mms_spool_free_bytes(const struct mms_spool *sp);

/* Ingest the complete file at tmp_path (in tmp/): on success it is in instances/ and
 * indexed; on any failure it is removed. source: "AE@IP" or "drop:PATH" (stored, never used
 * as a path). derive_uids: when the Study or Series Instance UID is empty, derive stable ones
 * from the content (frame of reference, size, orientation) and log a WARNING; otherwise such
 * a file is refused. The header is read in a sandbox child (sandbox.h): when that child
 * crashes, times out or passes its limits, the instance is refused (MMS_EDICOM, why "header
 * parser crashed (SIGSEGV)"...). A UID that is not valid (over 64 characters, other
 * characters than digits and dots...) is refused, never cut. When a file with the same data
 * set is stored already, nothing is renamed: with the same file meta (transfer syntax, SOP
 * Class and Instance UIDs) it is the same instance (a duplicate), otherwise it is refused and
 * the stored file is kept. Returns 0 and *res; MMS_EDICOM (the content cannot be stored: not
 * DICOM, a DICOMDIR, no SOP Class or Instance UID, no Series UID, a UID that is not valid,
 * the same data set under other file meta, the header reader crashed; why says which, naming
 * the origin rather than tmp_path): then the file is moved to quarantine/
 * (daemon/quarantine.h) with origin "PATH" for a source "drop:PATH" and "C-STORE from AE@IP"
 * otherwise, res->quarantined names the item and why ends with "; quarantined as NAME" (or,
 * when that failed, is removed and why ends with the reason); or a resource error (-errno,
 * MMS_EIO from the index, MMS_ENOMEM, fork failed), after which the sender should retry. */
int mms_spool_ingest(struct mms_spool *sp, const char *tmp_path, const char *source,
                     bool derive_uids, struct mms_ingest *res, char *why, size_t why_len);

/* Move path (any file system) into quarantine/ as a new item whose .why holds origin (a
 * source "drop:PATH" is written PATH) and reason, escaped, as mms_quarantine_put() does; a
 * failure is logged with its errno.
 * Returns 0; MMS_EEXIST when it was copied in but path could not be removed (do not
 * quarantine path again); or -errno (path untouched). */
int mms_spool_quarantine(struct mms_spool *sp, const char *path, const char *origin,
                         const char *reason);

/* state_dir/quarantine. */
const char *mms_spool_quarantine_dir(const struct mms_spool *sp);

/* Copy the file src to a new file in tmp/ and fsync it; tmp_path (len bytes) receives its
 * path. Returns 0, or -errno (nothing is left in tmp/). */
int mms_spool_copy_in(struct mms_spool *sp, const char *src, char *tmp_path, size_t len);

#endif

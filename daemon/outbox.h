/* daemon/outbox: results waiting to be sent (design.md sections 3 and 8).
 *
 * state_dir/outbox/JOB/ holds the files of one job's result (the SEG, the preview); the index
 * holds one send row per (job, destination). The files are in place, fsynced, before the rows
 * are committed, and the directory is removed only when no send of the job is pending. A send
 * that fails for good leaves hard links to the files, and a text file `why` with the reason,
 * in state_dir/dead/JOB-DESTINATION/. Names on disk come from the job number, our own file
 * names and the configured destination names, never from received text.
 * Threads: any; calls for one job are serialized by the caller (the sender holds a lock). */
#ifndef MMS_DAEMON_OUTBOX_H
#define MMS_DAEMON_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/index.h"

/* The name of a job's dead letter for a destination, "dead/JOB-DESTINATION", relative to
 * state_dir, into out. */
void mms_outbox_dead_name(int64_t job, const char *destination, char *out, size_t len);

/* Move the n files at paths (on state_dir's file system, e.g. in state_dir/tmp/; their base
 * names, unique and not starting with '.', become their names in the outbox) into
 * state_dir/outbox/JOB/, replacing what an earlier try of the job left there, fsync them and
 * the directories, then queue a send to each of the n_dests destinations (due at `now`).
 * Returns 0, MMS_EINVAL (no files or destinations, a bad name), MMS_EIO (the index), or
 * -errno (the file system), with why. On failure the files may be in the outbox already, but
 * no send is queued. */
int mms_outbox_put(const char *state_dir, struct mms_index *ix, int64_t job, const char *series_uid,
                   const char *const *paths, int n, const char *const *destinations, int n_dests,
                   double now, char *why, size_t why_len);

/* The files of outbox/JOB whose names end with suffix (NULL: all), sorted by name, as paths
 * under state_dir. Ownership: *out is new, free with mms_outbox_list_free(*out, count).
 * Returns the count (0 and *out NULL when none), MMS_ENOENT (no outbox for job), MMS_ENOMEM,
 * or -errno, with why. */
int mms_outbox_list(const char *state_dir, int64_t job, const char *suffix, char ***out, char *why,
                    size_t why_len);
void mms_outbox_list_free(char **list, int n);

/* Keep the files of outbox/JOB, with reason in `why`, as the dead letter of (job,
 * destination), replacing an older one. Returns 0 or -errno with why. */
int mms_outbox_bury(const char *state_dir, int64_t job, const char *destination, const char *reason,
                    char *why, size_t why_len);

/* Remove outbox/JOB when no send of job is pending. Returns 0, MMS_EIO (the index) or -errno,
 * with why. */
int mms_outbox_release(const char *state_dir, struct mms_index *ix, int64_t job, char *why,
                       size_t why_len);

/* At start, before any job or send runs: remove every outbox/JOB with no pending send, as
 * left by a stop between a job's files and its sends (the job runs again under a new number)
 * or between a send's end and mms_outbox_release(). *removed receives how many.
 * Returns 0, MMS_EIO (the index) or -errno, with why; folders seen before a failure may be
 * removed already. */
int mms_outbox_sweep(const char *state_dir, struct mms_index *ix, int *removed, char *why,
                     size_t why_len);

/* Queue again, due at `now` and with their attempts and age reset: for job >= 0 its dead and
 * pending sends; for job < 0 every dead send. The files of a dead send come back from its
 * dead letter when the outbox lacks them; the dead letter is removed once the send is
 * queued. *count receives the number of sends queued again.
 * Returns 0, MMS_ENOENT (a dead send whose files are neither in the outbox nor in dead/: it
 * stays dead; the others are queued), MMS_EIO, or -errno, with why. */
int mms_outbox_resend(const char *state_dir, struct mms_index *ix, int64_t job, double now,
                      int *count, char *why, size_t why_len);

#endif

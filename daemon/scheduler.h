/* daemon/scheduler: when a series is complete, whether it is selected, and the job queue
 * (design.md section 4).
 *
 * States: receiving -> stable -> queued -> running -> done | failed, or stable -> skipped
 * with the rule that skipped it. A series is complete when no instance arrived for
 * stable_age_s, or at once when Images in Acquisition or a multi-frame image says that all
 * slices are there. A late instance re-opens a series (the index sets it to receiving). The
 * clock is the caller's: every function takes `now` (seconds since the epoch), so tests run
 * with any ages. The queue is the index's series in state queued, oldest first
 * (mms_index_job_claim takes them); the decision that a series is complete is taken once,
 * by one node of a cluster (mms_index_settle).
 * Threads: one thread (the loop). */
#ifndef MMS_DAEMON_SCHEDULER_H
#define MMS_DAEMON_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon/index.h"

struct mms_sched_opts {
    double stable_age_s;
    unsigned min_slices;
    const char *body_parts;          /* comma list, case-insensitive; "" or NULL: any */
    const char *description_include; /* POSIX extended regex on SeriesDescription; "": none */
    const char *description_exclude;
    double max_slice_thickness_mm; /* 0: no limit */
};

struct mms_sched;

/* Compile the rules. Ownership: *out is new; free with mms_sched_free(); ix is not owned.
 * Returns 0, MMS_ECONFIG (a regular expression does not compile: why says which), or
 * MMS_ENOMEM. */
int mms_sched_new(struct mms_index *ix, const struct mms_sched_opts *o, struct mms_sched **out,
                  char *why, size_t why_len);
void mms_sched_free(struct mms_sched *s);

/* After a restart: series left stable (complete, not yet judged) are judged now. (Running
 * ones are queued again by mms_jobs_recover.) Returns 0 or MMS_EIO. */
int mms_sched_recover(struct mms_sched *s, double now);

/* Judge every receiving series that is complete at `now`. Returns the seconds until the next
 * series can become complete by age (a large value when none is receiving), or a negative
 * error code (MMS_EIO). */
double mms_sched_tick(struct mms_sched *s, double now);

/* The selection rules on a series' instances: NULL when it is selected, else the reason
 * (a static or internal buffer valid until the next call). Exposed for the tests. */
const char *mms_sched_select(struct mms_sched *s, const char *series_uid);

#endif

/* daemon/jobs: queued series become jobs (design.md sections 1, 6): decode, pipeline, SEG,
 * outbox, sends.
 *
 * `workers` threads take the series at the head of the scheduler's queue; each decodes its
 * series, waits for the engine (one inference at a time: a job decodes while another one
 * infers), writes the SEG to state_dir/tmp/ and moves it into the outbox with a send per
 * destination, then records the job's outcome and timings and the series' state in the index.
 * A series without any organ found is done without a SEG; a failure records the stage and the
 * reason. The SEG's UIDs come from (source series, model SHA-256, run): a late instance
 * re-opens the series and its next job writes a SEG of the next run that supersedes it.
 *
 * The model is loaded at start. When it cannot be loaded the daemon keeps receiving and the
 * series stay queued, with the reason logged. On SIGHUP a changed model file (or [infer] model
 * naming another file) is loaded and checked first; it takes over once the running jobs have
 * ended (no new job starts meanwhile), and a file that does not load leaves the running model
 * in place.
 * Threads: the functions below run on the loop thread (mms_jobs_recover before the loop). */
#ifndef MMS_DAEMON_JOBS_H
#define MMS_DAEMON_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/index.h"
#include "daemon/sender.h"
#include "daemon/work.h"

struct mms_jobs;

/* After a restart, before mms_sched_recover(): the jobs this node left running (on an index
 * nobody shares: every running job) end. One whose sends exist finished its work before the
 * stop (done, its series done); any other is crashed (its worker's marker in node_dir names a
 * fatal signal) or interrupted, and its series is queued again, unless this is the third
 * crashed job of the series in a row, or the tenth that ended either way: then the series
 * fails with that reason, so that an input that crashes the daemon, or a series that gets it
 * killed for memory, does not make it end forever. The markers are removed. Returns 0 or
 * MMS_EIO. */
int mms_jobs_recover(struct mms_index *ix, const char *node_dir, const char *node, double now);

/* On a shared index, from time to time: the running jobs of other nodes whose lease ran out
 * (the node died, or lost the database) end as above (interrupted), and their series are
 * queued again for any node. Two nodes taking over one job end it once. Returns 0 or
 * MMS_EIO. */
int mms_jobs_take_over(struct mms_index *ix, const char *node, double now);

/* Load the model, start the worker threads and take the queued series.
 * Ownership: *out is new, stop it with mms_jobs_stop(); ix and sender are borrowed and
 * must outlive it; what cfg says is copied. Returns 0, MMS_ENOMEM or MMS_EIO with why (a model
 * that cannot be loaded is not an error: see above). */
int mms_jobs_start(uv_loop_t *loop, struct mms_index *ix, struct mms_sender *sender,
                   const struct mms_config *cfg, struct mms_jobs **out, char *why, size_t why_len);

/* The queue may have grown: start jobs while threads are free. */
void mms_jobs_kick(struct mms_jobs *j);

/* SIGHUP: load the model file at path when it changed (see above). */
void mms_jobs_reload_model(struct mms_jobs *j, const char *model);

/* The engine the jobs run on; NULL when the model could not be loaded. */
const struct mms_engine *mms_jobs_engine(const struct mms_jobs *j);

/* Jobs running now. */
size_t mms_jobs_running(const struct mms_jobs *j);

/* The engines ([infer] device): *n of them (0 when no model is loaded); for engine i < *n,
 * its description ("cpu", "cuda:0") into names[i] and the pipelines it ran since the daemon
 * started into jobs[i]. Threads: the loop's. */
void mms_jobs_engines(struct mms_jobs *j, char names[][32], int64_t *jobs, int *n);

/* Sliding windows finished since the daemon started: counts[0] on the CPU (a CPU engine, or a
 * job its GPU engine gave to the CPU), counts[1] on a GPU. Threads: any. */
void mms_jobs_backend_counts(struct mms_jobs *j, int64_t counts[2]);

/* The GPUs of the engines (each once): device[i], its memory in use and in all, now (at most
 * MMS_MAX_ENGINES entries). Returns how many; 0 for engines on the CPU. Threads: the loop's
 * (CUDA's memory query may run beside a job). */
int mms_jobs_gpu_memory(struct mms_jobs *j, int *device, size_t *used, size_t *total);

/* Take no new job, wait for the running ones to finish, join the threads, close the handle
 * (the memory is freed once the loop has closed it). NULL is a no-op. */
void mms_jobs_stop(struct mms_jobs *j);

#endif

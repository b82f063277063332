/* daemon/index: the instance and series index (design.md sections 3, 4), on one of two
 * engines with the same schema and migrations: SQLite in state_dir/state.db (the default; WAL
 * mode with synchronous=FULL, so a committed row survives a crash; schema version in PRAGMA
 * user_version), or PostgreSQL, shared by the nodes of a cluster (docs/cluster.md; schema
 * version in the table mmsegd_schema). The schema is migrated on open.
 * Threads: one struct mms_index may be used from several threads; calls are serialized
 * inside (one connection, a mutex). The callbacks of mms_index_series/instances run with the
 * index locked: calling mms_index_* from them returns MMS_EINVAL. A read-only handle (mms_status)
 * may be open in another process while the daemon writes. */
#ifndef MMS_DAEMON_INDEX_H
#define MMS_DAEMON_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Series states, in the order a series normally goes through them. */
enum mms_series_state {
    MMS_SERIES_RECEIVING,
    MMS_SERIES_STABLE,
    MMS_SERIES_QUEUED,
    MMS_SERIES_RUNNING,
    MMS_SERIES_DONE,
    MMS_SERIES_FAILED,
    MMS_SERIES_SKIPPED,
};

/* "receiving", "stable", ...; NULL for a value out of range. */
const char *mms_series_state_name(int state);

/* One instance row: the header summary later stages need, and where the file is. */
struct mms_instance_row {
    char sop_instance[65], sop_class[65];
    char study_uid[65], series_uid[65];
    char modality[17];
    char image_type[129];
    char series_description[129];
    char body_part[17];
    char frame_of_ref[65];
    char transfer_syntax[65];
    double ipp[3], iop[6];
    bool has_geometry;
    int64_t rows, cols, frames;
    int64_t acquisition;           /* -1 when absent */
    int64_t instance_number;       /* -1 when absent */
    int64_t images_in_acquisition; /* -1 when absent */
    double slice_thickness;        /* 0 when absent */
    char digest[65];               /* SHA-256 (hex) of the data set (the file after its meta) */
    char path[512];                /* relative to state_dir: instances/xx/yy/DIGEST.dcm */
    int64_t size;                  /* bytes of the file */
    double received;               /* seconds since the epoch */
    char source[160];              /* "AE@IP" for a C-STORE, "drop:PATH" for the drop folder */
};

/* What mms_index_put() did. */
enum mms_put_result {
    MMS_PUT_NEW,       /* a new instance; its series is receiving (created, or re-opened) */
    MMS_PUT_DUPLICATE, /* the same SOP Instance UID with the same digest: nothing changed */
    MMS_PUT_REPLACED,  /* the same UID, other content: the row now names the new file; the
                          series is receiving again */
};

/* One series row. */
struct mms_series_row {
    char series_uid[65], study_uid[65];
    int state;                                         /* enum mms_series_state */
    char reason[256];                                  /* why skipped or failed; "" otherwise */
    int64_t instances;                                 /* rows in the instance table */
    double first_received, last_received, state_since; /* seconds since the epoch */
    int64_t run;                                       /* how many times a job was started for it */
    char modality[17];
    char series_description[129];
};

struct mms_index;

/* Open (creating and migrating when writable) the database at path. read_only: for
 * `mmsegd status`, never writes, works while the daemon runs.
 * Ownership: *out is new, close with mms_index_close().
 * Returns 0, MMS_EIO (SQLite error: why says which), MMS_ENOMEM, MMS_ENOENT (read-only and
 * no database). */
int mms_index_open(const char *path, bool read_only, struct mms_index **out, char *why,
                   size_t why_len);

/* Whether where names a PostgreSQL database: a libpq connection URI ("postgresql://...",
 * "postgres://...") or key=value connection string ("host=/run/postgresql dbname=mmsegd"),
 * rather than a path. */
static inline bool
mms_index_is_postgres(const char *where)
{
    return where != NULL &&
           (strncmp(where, "postgresql://", 13) == 0 || strncmp(where, "postgres://", 11) == 0 ||
            (strchr(where, '=') != NULL && where[0] != '/' && where[0] != '.'));
}

/* Open the index: where is a PostgreSQL connection string (mms_index_is_postgres()) or the
 * path of a SQLite database. A PostgreSQL connection that breaks is made again by the next
 * call; the call that found it broken fails with MMS_EIO. Otherwise as mms_index_open(). */
int mms_index_connect(const char *where, bool read_only, struct mms_index **out, char *why,
                      size_t why_len);

/* Whether other processes on other machines may use this index at the same time
 * (PostgreSQL): leases and claims then matter. */
bool mms_index_shared(const struct mms_index *ix);
void mms_index_close(struct mms_index *ix);

/* Record an instance whose file is already in place, in one transaction: insert it, or for
 * the same SOP Instance UID compare digests (same: DUPLICATE; other: update the row,
 * REPLACED, and old_path receives the path of the file the row named before, which the
 * caller removes after the commit; "" otherwise). NEW and REPLACED set the series (created
 * with state receiving when new) to receiving with last_received = r->received, its reason
 * cleared and its instance count updated; an instance moved to another series updates both,
 * and a series left empty by the move is deleted.
 * Returns 0, MMS_EIO with why, or MMS_EINVAL (empty SOP Instance or Series UID, a read-only
 * handle, old_path_len smaller than sizeof r->path). */
int mms_index_put(struct mms_index *ix, const struct mms_instance_row *r, enum mms_put_result *res,
                  char *old_path, size_t old_path_len, char *why, size_t why_len);

/* Re-open r's series as a new instance would (receiving, last_received = r->received, its
 * reason cleared), its instance count unchanged: a stored file was repaired, and the work on
 * the series is due again. Returns 0, MMS_EIO with why, MMS_EINVAL. */
int mms_index_reopen(struct mms_index *ix, const struct mms_instance_row *r, char *why,
                     size_t why_len);

/* Set a series' state and reason (NULL: ""), state_since = now; state RUNNING also
 * increments run. Returns 0, MMS_ENOENT (no such series), MMS_EIO. */
int mms_index_set_state(struct mms_index *ix, const char *series_uid, int state, const char *reason,
                        double now, char *why, size_t why_len);

/* The completeness decision, taken once for a series however many nodes judge it: the
 * series becomes stable when it is still receiving and its last_received is still
 * last_received (no instance arrived since the caller read it). Returns 0 when it did,
 * MMS_EAGAIN when the series changed meanwhile (or another node judged it), MMS_EIO. */
int mms_index_settle(struct mms_index *ix, const char *series_uid, double last_received, double now,
                     char *why, size_t why_len);

/* Call fn for every series (ordered by first_received); fn returns nonzero to stop.
 * Returns 0, or MMS_EIO. */
int mms_index_series(struct mms_index *ix, int (*fn)(void *ud, const struct mms_series_row *s),
                     void *ud, char *why, size_t why_len);

/* The same for the series receiving or stable only (by the index on state): what the
 * completeness decision looks at. */
int mms_index_series_active(struct mms_index *ix,
                            int (*fn)(void *ud, const struct mms_series_row *s), void *ud,
                            char *why, size_t why_len);

/* Series queued, sends pending and sends dead, by the indexes on state (cheap at any size:
 * for a status line written at every arrival). Returns 0 or MMS_EIO. */
int mms_index_queue_counts(struct mms_index *ix, int64_t *queued, int64_t *pending, int64_t *dead,
                           char *why, size_t why_len);

/* Call fn for every instance of a series (ordered by instance number, then SOP Instance
 * UID; instances without a number first). Returns 0, or MMS_EIO. */
int mms_index_instances(struct mms_index *ix, const char *series_uid,
                        int (*fn)(void *ud, const struct mms_instance_row *r), void *ud, char *why,
                        size_t why_len);

/* The instance row for a SOP Instance UID: 0 and *out, MMS_ENOENT, or MMS_EIO. */
int mms_index_instance(struct mms_index *ix, const char *sop_instance, struct mms_instance_row *out,
                       char *why, size_t why_len);

/* Counts of instances and of series per state (counts[state]). Returns 0 or MMS_EIO. */
int mms_index_counts(struct mms_index *ix, int64_t *instances,
                     int64_t counts[MMS_SERIES_SKIPPED + 1], char *why, size_t why_len);

/* Sends (design.md section 8): one row per (job, destination) for a result in
 * state_dir/outbox/JOB/. pending: waiting for its next attempt; done: the peer answered
 * success; dead: refused for good or retried until retry_max_age_s, the files kept in dead/. */
enum mms_send_state {
    MMS_SEND_PENDING,
    MMS_SEND_DONE,
    MMS_SEND_DEAD,
};

/* "pending", "done", "dead"; NULL for a value out of range. */
const char *mms_send_state_name(int state);

struct mms_send_row {
    int64_t job;
    char destination[65]; /* the [destination NAME] (1 to 64 characters) */
    char series_uid[65];  /* the source series, for people reading the status */
    int state;            /* enum mms_send_state */
    int64_t attempts;     /* attempts made since the send was (re-)queued */
    double queued;        /* when it was (re-)queued: retry_max_age_s counts from here */
    double next_attempt;  /* pending: not before this time */
    double last_attempt;  /* 0 before the first attempt */
    double state_since;
    char reason[512];   /* the last failure, the peer's status and words; "" when none */
    char node[65];      /* the node attempting it now; "" when none */
    double lease_until; /* that node's claim ends then */
};

/* Queue a send per destination for job (its files already in the outbox), in one
 * transaction: rows that exist for (job, destination) are reset to pending. due: the time of
 * the first attempt. Returns 0, MMS_EINVAL (read-only, n < 1, an empty or too long name),
 * MMS_EIO. */
int mms_index_sends_add(struct mms_index *ix, int64_t job, const char *series_uid,
                        const char *const *destinations, int n, double due, char *why,
                        size_t why_len);

/* The same for the result of job `job`, made by that job: in the same transaction the job's
 * row is locked (FOR UPDATE on PostgreSQL) and the sends are queued only while the index does
 * not know the job as ended (a job it has no row for counts as running). A node whose lease
 * ran out and whose job another node ended gets MMS_ENOENT: its result is not sent, and the
 * job of the node that took over delivers the series' result once. */
int mms_index_result_sends(struct mms_index *ix, int64_t job, const char *series_uid,
                           const char *const *destinations, int n, double due, char *why,
                           size_t why_len);

/* Write the state, attempts, times and reason of r to its (job, destination) row.
 * Returns 0, MMS_ENOENT (no such row), MMS_EINVAL, MMS_EIO. */
int mms_index_send_update(struct mms_index *ix, const struct mms_send_row *r, char *why,
                          size_t why_len);

/* Call fn for every send in state `state` (-1: any) of job `job` (-1: any), ordered by next
 * attempt, job and destination; fn returns nonzero to stop. Returns 0 or MMS_EIO. */
int mms_index_sends(struct mms_index *ix, int state, int64_t job,
                    int (*fn)(void *ud, const struct mms_send_row *r), void *ud, char *why,
                    size_t why_len);

/* Number of sends per state (counts[state]). Returns 0 or MMS_EIO. */
int mms_index_send_counts(struct mms_index *ix, int64_t counts[MMS_SEND_DEAD + 1], char *why,
                          size_t why_len);

/* Jobs (design.md sections 1, 3): one row per run of the work on a series. running: started,
 * not finished; done: finished (with a SEG, or with no organ found); failed: the stage and the
 * reason. A job found running after a restart is interrupted (the process ended otherwise:
 * SIGKILL, out of memory, power loss, a crash of another thread) or crashed (a fatal signal on
 * its own thread), and its series is queued again, unless its result was in the outbox
 * already. */
enum mms_job_state {
    MMS_JOB_RUNNING,
    MMS_JOB_DONE,
    MMS_JOB_FAILED,
    MMS_JOB_INTERRUPTED,
    MMS_JOB_CRASHED,
    MMS_JOB_STATE_N
};

/* "running", "done", "failed", "interrupted", "crashed"; NULL for a value out of range. */
const char *mms_job_state_name(int state);

struct mms_job_row {
    int64_t id;
    char series_uid[65];
    int64_t run; /* the series' run number for this job */
    int state;   /* enum mms_job_state */
    char stage[16];
    char reason[512];
    double started, finished; /* seconds since the epoch; finished 0 while running */
    double decode_s, wait_s, preprocess_s, network_s, export_s, write_s, total_s;
    int64_t segments, frames; /* of the SEG; 0 when none was written */
    char node[65];            /* the node that runs or ran it ("" before clusters) */
    double lease_until;       /* running: another node may take it over after this */
};

/* Start a job for a series, in one transaction: the series becomes running (its run number
 * incremented) and a job row is inserted. *id and *run receive the job's number and run.
 * Returns 0, MMS_ENOENT (no such series), MMS_EINVAL, MMS_EIO. */
int mms_index_job_start(struct mms_index *ix, const char *series_uid, double now, int64_t *id,
                        int64_t *run, char *why, size_t why_len);

/* Claim the series queued longest (by state_since) for a job of node, in one transaction:
 * the series becomes running, its run number incremented, and a job row is inserted with
 * node and lease_until = now + lease_s. On PostgreSQL the series row is chosen with FOR
 * UPDATE SKIP LOCKED: two nodes never claim one series. series_uid, *id and *run receive
 * the series, the job's number and run. Returns 0, MMS_ENOENT (nothing queued),
 * MMS_EINVAL, MMS_EIO. */
int mms_index_job_claim(struct mms_index *ix, const char *node, double now, double lease_s,
                        char series_uid[65], int64_t *id, int64_t *run, char *why, size_t why_len);

/* Record the end of job j (state, stage, reason, times, counts from j) and set its series to
 * series_state with series_reason, in one transaction. The series is left alone when it was
 * re-opened (receiving) meanwhile. Returns 0, MMS_ENOENT (no such job, or it is no longer
 * running: another node ended it when its lease ran out), MMS_EINVAL, MMS_EIO. */
int mms_index_job_finish(struct mms_index *ix, const struct mms_job_row *j, int series_state,
                         const char *series_reason, double now, char *why, size_t why_len);

/* End running job j, which no process runs any more (its node restarted, or stopped renewing
 * its lease), in one transaction with its row locked: when sends exist for it, its result was
 * in the outbox and it ends done (its series done, *sent true: j's state and reason are set
 * so); otherwise it ends as j says (state, reason) and its series becomes series_state with
 * series_reason. With mms_index_result_sends() locking the same row, a job's result is either
 * sent or the job is run again, never both. Returns 0, MMS_ENOENT (the job is not running:
 * another node ended it first), MMS_EINVAL, MMS_EIO. */
int mms_index_job_abandon(struct mms_index *ix, struct mms_job_row *j, int series_state,
                          const char *series_reason, double now, bool *sent, char *why,
                          size_t why_len);

/* Call fn for every job in state `state` (-1: any), by number; fn returns nonzero to stop.
 * Returns 0 or MMS_EIO. */
int mms_index_jobs(struct mms_index *ix, int state,
                   int (*fn)(void *ud, const struct mms_job_row *j), void *ud, char *why,
                   size_t why_len);

/* Claim send (job, destination) for an attempt by node until now + lease_s: it must be
 * pending and due, and not claimed by another node whose lease runs. mms_index_send_update()
 * releases it. Returns 0 (claimed), MMS_EAGAIN (another node holds it, or it is no longer
 * pending or due), MMS_EINVAL, MMS_EIO. */
int mms_index_send_claim(struct mms_index *ix, int64_t job, const char *destination,
                         const char *node, double now, double lease_s, char *why, size_t why_len);

/* Nodes: the processes using the index, each with its row refreshed by a heartbeat. */
struct mms_node_row {
    char name[65];
    char roles[64]; /* "intake,infer,send" or a part */
    int64_t pid;
    double started, heartbeat; /* seconds since the epoch */
    int64_t jobs, sends;       /* running jobs and claimed sends it holds leases on */
};

/* The heartbeat of node: its row is written (created at the first beat), and the leases of
 * its running jobs and claimed sends are extended to now + lease_s, in one transaction.
 * Returns 0, MMS_EINVAL, MMS_EIO. */
int mms_index_node_beat(struct mms_index *ix, const struct mms_node_row *n, double now,
                        double lease_s, char *why, size_t why_len);

/* Call fn for every node, by name; fn returns nonzero to stop. Returns 0 or MMS_EIO. */
int mms_index_nodes(struct mms_index *ix, int (*fn)(void *ud, const struct mms_node_row *n),
                    void *ud, char *why, size_t why_len);

#endif

/* daemon: `mmsegd status`, the series in the state database and their states.
 * Threads: the main thread of the command. */
#ifndef MMS_DAEMON_STATUS_H
#define MMS_DAEMON_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Open the index at where (mms_config_database()) read-only (it may be in use by running
 * daemons) and print on out
 * every series (ordered by first received: state, age of its last instance, instances,
 * modality, description, reason, Series Instance UID), the number of series in each state
 * and of instances, the last 10 jobs (number, state, run, stage reached, total and network
 * seconds, reason, series) and the number of jobs in each state, then the sends not
 * delivered yet (state, job, destination, attempts, time
 * to the next attempt, reason, source series) and the number of sends in each state; with
 * json, one JSON object instead:
 * {"instances": N, "counts": {"receiving": n, ...}, "series": [{"series_uid", "study_uid",
 * "state", "reason", "instances", "first_received", "last_received", "state_since", "run",
 * "modality", "series_description"}, ...], "send_counts": {"pending": n, "done": n,
 * "dead": n}, "sends": [{"job", "destination", "series_uid", "state", "attempts", "queued",
 * "next_attempt", "last_attempt", "state_since", "reason"}, ...], "job_counts": {"running": n,
 * "done": n, "failed": n, "interrupted": n}, "jobs": [{"job", "series_uid", "run", "state",
 * "stage", "reason", "started", "finished", "segments", "frames", "times": {"decode_s",
 * "wait_s", "preprocess_s", "network_s", "export_s", "write_s", "total_s"}}, ...],
 * "quarantine": {"items": n, "bytes": b, "newest": [{"name", "time", "size", "origin",
 * "reason"}, ...]} or {"error": "..."} when it cannot be read} (every send and job; the 5
 * newest quarantine items; times in seconds since the epoch). The text form ends with the
 * quarantine's (state_dir/quarantine) totals and newest 5 items, or why it cannot be read. Then the
 * nodes (name, roles, pid, age of the last heartbeat, running jobs, claimed sends); JSON: "nodes":
 * [{"name", "roles", "pid", "started", "heartbeat", "jobs", "sends"}], and every job and send has
 * its "node" and "lease_until". node (NULL: all): only that node's row, jobs and held sends.
 * Received text is printed with control characters and invalid UTF-8 replaced.
 * Returns 0; MMS_ENOENT when there is no database (why: "no state database at PATH (the
 * daemon has not run yet)"); MMS_EIO (database unreadable, or out could not be written),
 * MMS_ENOMEM or another -errno, with why. Nothing is printed on out on failure, except
 * what was written before a write error. */
int mms_status_print(const char *state_dir, const char *where, const char *node, bool json,
                     FILE *out, char *why, size_t why_len);

#endif

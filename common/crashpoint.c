/* common/crashpoint: named points where a test build dies on request (crashpoint.h). */
#include "common/crashpoint.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"

/* Every point, in the order a series meets them. Where each sits and what a crash there
 * leaves behind: README.md ("Developers") and tests/test-crash-points.sh. */
const char *const mms_crash_points[] = {
    "spool.after-tmp-write", /* daemon/spool.c: the received file synced in tmp/ */
    "spool.after-rename",    /* daemon/spool.c: renamed into instances/, not indexed */
    "index.before-commit",   /* daemon/index.c: the instance's row written, not committed */
    "scp.before-response",   /* dicom/scp.cc: stored and indexed, success not yet answered */
    "job.after-decode",      /* daemon/work.c: the volume decoded */
    "job.after-infer",       /* daemon/work.c: the labels computed, no SEG yet */
    "job.after-seg-write",   /* daemon/jobs.c: the SEG written in tmp/, not in the outbox */
    "outbox.before-sends",   /* daemon/outbox.c: the SEG in outbox/JOB, its sends not recorded */
    "job.after-outbox",      /* daemon/jobs.c: the sends recorded, the job's end not */
    "send.before-record",    /* daemon/sender.c: the peer answered success, not recorded */
    "send.after-record",     /* daemon/sender.c: the send recorded done, outbox not released */
    NULL,
};

#define ENV_NAME "MMSEGD_CRASH_POINT"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *armed;      /* an entry of mms_crash_points[], or NULL */
static unsigned long at_hit;   /* die at this hit of the armed point (1 = the first) */
static unsigned long hits;     /* of the armed point so far; atomic */
static char refused[256] = ""; /* why the variable arms nothing, when it is set */

bool
mms_crash_points_built(void)
{
#ifdef MMS_CRASH_POINTS
    return true;
#else
    return false;
#endif
}

/* Parse MMSEGD_CRASH_POINT ("NAME" or "NAME:N") into armed and at_hit, or say in refused
 * why it arms nothing. */
static void
read_env(void)
{
    const char *v = getenv(ENV_NAME);
    if (v == NULL || v[0] == '\0')
        return;
    if (!mms_crash_points_built()) {
        snprintf(refused, sizeof refused,
                 "set, but this build has no crash points (configure --enable-crash-points)");
        return;
    }
    size_t len = strcspn(v, ":");
    unsigned long n = 1;
    if (v[len] == ':') {
        const char *digits = v + len + 1;
        char *end;
        errno = 0;
        n = strtoul(digits, &end, 10);
        if (digits[0] < '0' || digits[0] > '9' || *end != '\0' || errno != 0 || n == 0) {
            snprintf(refused, sizeof refused, "'%.100s': the hit after ':' is not a number >= 1",
                     v);
            return;
        }
    }
    for (size_t i = 0; mms_crash_points[i] != NULL; i++)
        if (strlen(mms_crash_points[i]) == len && strncmp(mms_crash_points[i], v, len) == 0) {
            armed = mms_crash_points[i];
            at_hit = n;
            return;
        }
    snprintf(refused, sizeof refused, "'%.100s' names no crash point", v);
}

const char *
mms_crash_point_armed(unsigned long *hit, char *why, size_t why_len)
{
    pthread_once(&once, read_env);
    if (why != NULL && why_len > 0)
        snprintf(why, why_len, "%s", refused);
    if (armed != NULL && hit != NULL)
        *hit = at_hit;
    return armed;
}

void
mms_crash_point(const char *name)
{
    pthread_once(&once, read_env);
    if (armed == NULL || strcmp(name, armed) != 0 ||
        __atomic_add_fetch(&hits, 1, __ATOMIC_SEQ_CST) != at_hit)
        return;
    /* one write(2), as the log sink does, then the end: nothing is flushed or cleaned up */
    char line[160];
    int n = snprintf(line, sizeof line, "mmsegd: crash point %s, hit %lu: SIGKILL\n", name, at_hit);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line);
        (void)w; /* a failed write changes nothing: the process ends either way */
    }
    raise(SIGKILL);
}

/* common/crashpoint: named points where a test build dies on request, so that a test can stop
 * the daemon at each step that must survive a power loss (design.md section 3) and check what
 * a restart makes of it (tests/test-crash-points.sh).
 *
 * MMS_CRASH_POINT("spool.after-rename") marks such a step. In a build configured with
 * --enable-crash-points (config.h defines MMS_CRASH_POINTS), the process kills itself there
 * when the environment variable MMSEGD_CRASH_POINT names the point: "NAME" at its first hit,
 * "NAME:N" at its Nth hit (N >= 1, counted over all threads). It writes one line to stderr and
 * raises SIGKILL: nothing runs after it (no crash handler of common/crash.h, no atexit
 * handler, no buffered write), as after a power cut. In other builds the macro expands to a
 * no-op and its argument is not evaluated.
 *
 * The points are listed in mms_crash_points[] (crashpoint.c) and in README.md ("Developers");
 * a name not in that list is refused when the variable is read.
 * Threads: any. The variable is read once, at the first call of any function here. */
#ifndef MMS_COMMON_CRASHPOINT_H
#define MMS_COMMON_CRASHPOINT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef MMS_CRASH_POINTS
#define MMS_CRASH_POINT(name) mms_crash_point(name)
#else
#define MMS_CRASH_POINT(name) ((void)0)
#endif

/* Every point name, NULL-terminated. */
extern const char *const mms_crash_points[];

/* Count a hit of point name; kill the process with SIGKILL when it is the armed point's
 * chosen hit. Does nothing in a build without crash points. */
void mms_crash_point(const char *name);

/* Whether this build has crash points (configure --enable-crash-points). */
bool mms_crash_points_built(void);

/* The point MMSEGD_CRASH_POINT arms (a static string) and the hit it dies at (*hit), or NULL
 * when none is armed: the variable is unset or empty (why gets ""), or the build has no crash
 * points, or the variable is malformed or names no point (why says which). hit and why may be
 * NULL. */
const char *mms_crash_point_armed(unsigned long *hit, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif

#endif

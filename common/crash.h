/* common/crash: what a fatal signal leaves behind (design.md section 9, issue "crashes leave
 * a trace").
 *
 * mms_crash_install() sets one handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT. It
 * is async-signal-safe: it only write()s to the log's stderr stream the signal, the thread's
 * stage (set beforehand with mms_stage_set()) and a backtrace (backtrace_symbols_fd(); the
 * unwinder is loaded at install time, so that the handler does not load it), appends the
 * signal's name to the calling thread's armed marker file, if any, and then re-raises the
 * signal with its default action, so that the process still dies of it (systemd sees the
 * crash, a core is dumped where enabled).
 *
 * A marker is how a crash is traced to an input after the restart: a thread about to read an
 * input writes its name and a NUL into a marker file and arms it (mms_crash_marker_arm()); the
 * handler appends "SIGNAME" and a NUL when that thread crashes; the thread removes the file
 * when done. A
 * marker left behind with a signal name means that thread crashed on that input; one without
 * means the process ended otherwise (another thread crashed, SIGKILL, power loss).
 * Threads: mms_crash_install() once from the main thread before other threads exist; the
 * others on the thread they concern. */
#ifndef MMS_COMMON_CRASH_H
#define MMS_COMMON_CRASH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Install the handler (and an alternate signal stack for the calling thread). fd: where to
 * write (the log's stream); journal: prefix lines with "<2>" for journald. Returns 0 or
 * -errno. */
int mms_crash_install(int fd, int journal);

/* An alternate signal stack for the calling thread, so that a stack overflow on it still
 * reaches the handler. Returns 0 or -errno. */
int mms_crash_thread_init(void);
/* Before the thread ends: the stack's memory back. */
void mms_crash_thread_fini(void);

/* Set the calling thread's stage, "what it is doing now" ("copying drop file PATH"), as the
 * handler reports it: formatted, escaped (mms_text_escape) and cut to 255 bytes. */
void mms_stage_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mms_stage_clear(void);

/* Arm the marker file path (up to 4095 bytes) for the calling thread, or disarm it. The
 * file itself is written and removed by the caller. */
void mms_crash_marker_arm(const char *path);
void mms_crash_marker_disarm(void);

/* The name of a fatal signal handled here ("SIGSEGV"), or NULL. */
const char *mms_crash_signal_name(int sig);

#ifdef __cplusplus
}
#endif

#endif

/* daemon/sandbox: run one piece of input-driven work (a header parse, a series' decoding) in
 * a forked child process under resource limits and a system call filter, so that a crash,
 * an abort, an endless loop or a runaway allocation there fails that one instance or job and
 * never the daemon (the choice of fork over a helper program is argued in sandbox.c).
 *
 * The child gets the caller's memory as it was at the fork, writes its result into a shared
 * mapping made before the fork (mms_sandbox_shm_new), and ends; the parent waits for it with
 * a wall-clock deadline and tells how it ended.
 * Threads: any; several threads may run children at once. */
#ifndef MMS_DAEMON_SANDBOX_H
#define MMS_DAEMON_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mms_sandbox_limits {
    size_t max_memory;   /* bytes the child may map beyond what it inherits (RLIMIT_AS); 0:
                            no limit */
    unsigned cpu_s;      /* CPU seconds (RLIMIT_CPU, all threads together); 0: no limit */
    unsigned timeout_ms; /* wall clock, then SIGKILL; 0: none */
    bool threads;        /* the work starts threads of its own (clone with CLONE_THREAD) */
    bool no_filter;      /* limits only, no system call filter (tests of the limits) */
};

enum mms_sandbox_outcome {
    MMS_SANDBOX_OK,       /* the function returned; its code is in fn_rc */
    MMS_SANDBOX_CRASHED,  /* ended by a signal (signo): SIGSEGV, SIGABRT, SIGBUS... */
    MMS_SANDBOX_TIMEOUT,  /* past timeout_ms: killed */
    MMS_SANDBOX_CPU,      /* past cpu_s (SIGXCPU) */
    MMS_SANDBOX_NOMEM,    /* the function returned MMS_ENOMEM under max_memory */
    MMS_SANDBOX_SYSCALL,  /* a system call outside the filter (syscall_nr, -1 when not known:
                             made with SIGSYS blocked): stopped there */
    MMS_SANDBOX_EXITED,   /* exited without returning (status), e.g. a sanitizer's report */
    MMS_SANDBOX_NOTSTART, /* the child could not be started (fork failed: fn_rc is -errno) */
};

struct mms_sandbox_result {
    enum mms_sandbox_outcome outcome;
    int fn_rc;       /* OK: what the function returned; NOTSTART: the error */
    int signo;       /* CRASHED */
    int status;      /* EXITED */
    long syscall_nr; /* SYSCALL */
    char what[96];   /* "crashed (SIGSEGV)", "timed out after 30 s", "out of memory (limit
                        64 MB)", "blocked system call 41", "exited with status 1", "ok" */
};

/* The work: runs in the child with arg (the parent's memory as at the fork: read it, its
 * changes stay in the child) and shm (shm_len bytes, shared: the way results come back).
 * Returns 0 or a negative MMS_E* code, which reaches the parent as fn_rc. */
typedef int (*mms_sandbox_fn)(void *arg, void *shm, size_t shm_len);

/* A shared anonymous mapping of len bytes (zero-filled, pages taken as they are touched), to
 * be passed to mms_sandbox_run(). Returns NULL when it cannot be mapped (len 0 included).
 * Free with mms_sandbox_shm_free(p, len) (NULL: no-op). Threads: any. */
void *mms_sandbox_shm_new(size_t len);
void mms_sandbox_shm_free(void *p, size_t len);

/* Run fn(arg, shm, shm_len) in a child process: signals reset to their defaults, every file
 * descriptor but 0, 1 and 2 closed, RLIMIT_CORE 0, RLIMIT_NOFILE 64, RLIMIT_CPU and RLIMIT_AS
 * from lim, PR_SET_PDEATHSIG SIGKILL, PR_SET_NO_NEW_PRIVS, and a seccomp filter that allows
 * reading files (openat read-only), memory management, threads (lim->threads) and exit, and
 * stops the child on anything else (socket, execve, write-opening a file, kill of another
 * process...). The parent waits up to lim->timeout_ms, then kills the child.
 * *res says how it ended (every outcome also fills res->what). With mms_sandbox_enabled()
 * false (mms_sandbox_disable()), fn runs in the calling thread with no limit (outcome OK).
 * Returns 0 when res is filled (the outcome tells the rest), MMS_EINVAL (fn or res NULL).
 * Threads: any. The child runs code of the daemon's libraries after a fork of a threaded
 * process: see the head comment of sandbox.c for what that code may and may not do. */
int mms_sandbox_run(mms_sandbox_fn fn, void *arg, void *shm, size_t shm_len,
                    const struct mms_sandbox_limits *lim, struct mms_sandbox_result *res);

/* A pool of long-lived sandbox workers, for small requests where a fork per request would
 * cost more than the work (a header read): each worker is a child as mms_sandbox_run()
 * makes it (limits, filter; no threads), which serves requests one after another through
 * its own shared area of shm_len bytes. A worker that crashes, times out or is blocked
 * fails that request only and is replaced at the next one; one is also replaced after
 * max_requests requests (0: never) and once it has used lim->cpu_s of CPU time (each request
 * gets at least that much). Workers start on first use.
 * Ownership: *out is new; free with mms_sandbox_pool_free() (NULL: no-op), which kills its
 * workers. Returns 0, MMS_EINVAL, MMS_ENOMEM. Threads: any. */
struct mms_sandbox_pool;
int mms_sandbox_pool_new(mms_sandbox_fn fn, size_t shm_len, int workers, unsigned max_requests,
                         const struct mms_sandbox_limits *lim, struct mms_sandbox_pool **out);
void mms_sandbox_pool_free(struct mms_sandbox_pool *p);

/* Run fn(NULL, area, shm_len) on a free worker (waiting for one): req (req_len bytes) is
 * copied to the start of its area first, and on outcome OK the first resp_len bytes of the
 * area are copied to resp. With isolation off, fn runs in the calling thread on the area.
 * Returns 0 with *res as mms_sandbox_run() fills it, or MMS_EINVAL. Threads: any. */
int mms_sandbox_pool_run(struct mms_sandbox_pool *p, const void *req, size_t req_len, void *resp,
                         size_t resp_len, struct mms_sandbox_result *res);

/* [daemon] isolate = no: mms_sandbox_run() calls fn in place. Threads: call before the
 * threads that use the sandbox start. */
void mms_sandbox_set_enabled(bool on);
bool mms_sandbox_enabled(void);

/* Whether this build installs the system call filter ("seccomp"), or only the limits (a
 * sanitizer build, or an architecture without a filter here: "limits only"). */
const char *mms_sandbox_filter_name(void);

/* The testing hook of the callers (spool.c, work.c). When the environment variable
 * MMSEGD_TEST_CRASH_SOP is "WHERE:UID", true when where equals WHERE and sop_instance UID:
 * the caller's child then crashes on purpose (mms_sandbox_crash_now), so that the tests show
 * what a crash does without a real crashing input; WHERE is "header" (the spool's reader)
 * or "decode" (a job's decoding). The variable is read once, in the parent, and its use is
 * logged as a WARNING. Threads: any. */
bool mms_sandbox_test_crash(const char *where, const char *sop_instance);

/* Crash this process with SIGSEGV (the hook above). Only for a sandbox child. */
void mms_sandbox_crash_now(void);

#endif

/* daemon/sandbox: input-driven work in a forked, limited, filtered child (sandbox.h).
 * Threads: any; the child is a new process with one thread (the caller's, copied).
 *
 * Why fork and not a helper program (an exec'd `mmsegd decode-worker`): the work needs the
 * caller's inputs (paths, headers, options) and gives back large results (a HU volume of
 * hundreds of MB); with fork the inputs are simply there, and the results go through a shared
 * mapping made before the fork, with no request format to define and keep in step. The price
 * is the usual one of forking a threaded process: the child gets the memory of every thread
 * but only the calling one, so a lock another thread held at that instant stays held forever
 * in the child. That is acceptable here because of what the child calls:
 *  - glibc's malloc: glibc's fork() takes the arena locks before forking and resets them in
 *    the child, so malloc and free work there (as do stdio's list lock and the dynamic
 *    loader's lock);
 *  - GDCM (headers, pixel decoding) and our own readers in dicom/: GDCM's dictionaries are
 *    built once at program start (its Global object); they take no lock of their own;
 *  - DCMTK's data dictionary is not used on these paths (header reading and decoding go
 *    through the pre-scan and GDCM); its lock would only be read-taken anyway;
 *  - never the daemon's own mutexes (index, queues, log sink: the log sink is one write(2)).
 * If that reasoning ever failed, the child would hang, and the wall-clock deadline turns the
 * hang into a failed instance or job: the daemon does not hang with it.
 *
 * The child, right after fork(): signals back to their defaults and unblocked (the daemon's
 * handlers, if any, are not run in it), PR_SET_PDEATHSIG SIGKILL (it dies with the daemon;
 * a pool worker, which outlives the thread that forked it, ends when its socket closes),
 * every descriptor above 2 closed (the daemon's sockets, database, other children's pipes),
 * RLIMIT_CORE 0, RLIMIT_NOFILE 64, RLIMIT_CPU, and RLIMIT_AS = the address space it inherits
 * plus max_memory (the limit is on growth: the daemon's own mappings, its model, a CUDA
 * context's reservations, a sanitizer's shadow, are already in the inherited size), then
 * PR_SET_NO_NEW_PRIVS and the seccomp filter.
 *
 * The filter (raw BPF, <linux/seccomp.h>): the architecture must be the build's (else the
 * process is killed); allowed are reading (read, pread64, readv, lseek, the fstat family),
 * openat with read-only flags (no O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND: the readers
 * take paths, so the files cannot all be opened by the parent), write (only to what is open:
 * stderr and read-only files), close, memory (mmap, munmap, mremap, brk, madvise, mprotect),
 * futex, time, exit, signal return, kill and tgkill aimed at the child itself (abort(), the
 * test hook), and with lim->threads clone only with CLONE_THREAD (threads, never a process;
 * clone3, whose flags BPF cannot read, answers ENOSYS so that glibc falls back to clone).
 * Anything else (socket, connect, execve, ptrace, open for writing, unlink, rename...) does
 * not run: SECCOMP_RET_TRAP sends SIGSYS, whose handler, installed before the filter, writes
 * the system call number into the shared control block and ends the child; the daemon sees
 * "blocked system call N". rt_sigaction is allowed for every signal but SIGSYS, so the work
 * cannot replace that handler and carry on.
 *
 * Sanitizer builds (-fsanitize=address): the sanitizer's runtime makes system calls of its
 * own (its reports read /proc/self/maps, its allocator and interceptors call prctl,
 * sigaltstack, sched_yield...), and a SIGSYS in the middle of one of its reports would hide
 * the report. There the filter is not installed; the limits still are, and the daemon logs a
 * NOTICE once ("limits only"). The filter is tested in the normal build. */
#include "daemon/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#if defined(__x86_64__)
#define FILTER_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define FILTER_ARCH AUDIT_ARCH_AARCH64
#endif
#if defined(FILTER_ARCH) && !SANITIZED
#define HAVE_FILTER 1
#else
#define HAVE_FILTER 0
#endif

#define CHILD_NOFILE 64
#define FILTER_MAX 160 /* BPF instructions */

/* Written by the child, read by the parent once the child has ended. */
struct ctl {
    _Atomic int state; /* STATE_* */
    int fn_rc;
    long syscall_nr;
    int retiring; /* a pool worker that ends after this request (its CPU time is spent) */
};
enum { STATE_RUNNING, STATE_RETURNED, STATE_SYSCALL };

static atomic_bool enabled = true;
static struct ctl *child_ctl; /* in the child only: for the SIGSYS handler */

void
mms_sandbox_set_enabled(bool on)
{
    atomic_store(&enabled, on);
}

bool
mms_sandbox_enabled(void)
{
    return atomic_load(&enabled);
}

const char *
mms_sandbox_filter_name(void)
{
    return HAVE_FILTER ? "seccomp" : "limits only";
}

void *
mms_sandbox_shm_new(size_t len)
{
    if (len == 0)
        return NULL;
    void *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void
mms_sandbox_shm_free(void *p, size_t len)
{
    if (p != NULL && len > 0)
        munmap(p, len);
}

/* ------------------------------------------------------------------------------ filter */
#if HAVE_FILTER
#define LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define LD_ARG(i) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]))
#define LD_ARG_HI(i) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]) + 4)
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))

/* Plainly allowed, whatever the arguments. */
static const int allowed[] = {
    SYS_read,
    SYS_pread64,
    SYS_readv,
    SYS_write,
    SYS_writev,
    SYS_lseek,
    SYS_fstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_close,
    SYS_mmap,
    SYS_munmap,
    SYS_mremap,
    SYS_brk,
    SYS_madvise,
    SYS_mprotect,
    SYS_futex,
    SYS_getpid,
    SYS_getppid,
    SYS_gettid,
    SYS_clock_gettime,
    SYS_clock_getres,
    SYS_gettimeofday,
    SYS_nanosleep,
    SYS_clock_nanosleep,
    SYS_sched_yield,
    SYS_sched_getaffinity,
    SYS_exit,
    SYS_exit_group,
    SYS_rt_sigreturn,
    SYS_rt_sigprocmask,
    SYS_set_robust_list,
    SYS_getrandom,
    SYS_sysinfo,
    SYS_readlinkat,
    SYS_faccessat,
    SYS_getcwd,
#ifdef SYS_rseq
    SYS_rseq,
#endif
#ifdef SYS_faccessat2
    SYS_faccessat2,
#endif
#ifdef SYS_stat
    SYS_stat,
    SYS_lstat,
    SYS_access,
    SYS_readlink,
#endif
};

/* Fill prog; returns its length. pid: the child's own. */
static int
build_filter(struct sock_filter *prog, bool threads, pid_t pid)
{
    int n = 0;
#define PUT(ins) (prog[n++] = (struct sock_filter)ins)
    PUT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FILTER_ARCH, 1, 0));
    PUT(RET(SECCOMP_RET_KILL_PROCESS));
    PUT(LD_NR);
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)allowed[i], 0, 1));
        PUT(RET(SECCOMP_RET_ALLOW));
    }
    /* openat(dirfd, path, flags, mode): read-only flags only */
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 4));
    PUT(LD_ARG(2));
    PUT(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K,
                 O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE | O_PATH, 1, 0));
    PUT(RET(SECCOMP_RET_ALLOW));
    PUT(RET(SECCOMP_RET_TRAP));
    /* kill(pid, sig) and tgkill(pid, tid, sig): this process only */
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kill, 1, 0));
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_tgkill, 0, 4));
    PUT(LD_ARG(0));
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)pid, 0, 1));
    PUT(RET(SECCOMP_RET_ALLOW));
    PUT(RET(SECCOMP_RET_TRAP));
    /* rt_sigaction(sig, ...) for any signal but SIGSYS (glibc's threads set their own): the
       handler of a blocked call stays ours */
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigaction, 0, 4));
    PUT(LD_ARG(0));
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SIGSYS, 1, 0));
    PUT(RET(SECCOMP_RET_ALLOW));
    PUT(RET(SECCOMP_RET_TRAP));
    /* prlimit64(0, resource, NULL, old): reading a limit */
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prlimit64, 0, 6));
    PUT(LD_ARG(2));
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3));
    PUT(LD_ARG_HI(2));
    PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1));
    PUT(RET(SECCOMP_RET_ALLOW));
    PUT(RET(SECCOMP_RET_TRAP));
    if (threads) {
        /* clone3 cannot be inspected: ENOSYS, and glibc falls back to clone */
        PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1));
        PUT(RET(SECCOMP_RET_ERRNO | ENOSYS));
        PUT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4));
        PUT(LD_ARG(0));
        PUT(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1));
        PUT(RET(SECCOMP_RET_ALLOW));
        PUT(RET(SECCOMP_RET_TRAP));
    }
    PUT(RET(SECCOMP_RET_TRAP));
#undef PUT
    return n;
}
#endif

/* ------------------------------------------------------------------------------- child */
static void
on_sigsys(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (child_ctl != NULL) {
        child_ctl->syscall_nr = si->si_syscall;
        atomic_store(&child_ctl->state, STATE_SYSCALL);
    }
    _exit(125);
}

/* Pages of address space in use, from /proc/self/statm; 0 when unknown. */
static size_t
vm_bytes(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0)
        return 0;
    buf[k] = '\0';
    unsigned long long pages = strtoull(buf, NULL, 10);
    long page = sysconf(_SC_PAGESIZE);
    return (size_t)pages * (size_t)(page > 0 ? page : 4096);
}

/* Close every descriptor above 2 but keep (-1: none). */
static void
close_from_3(int keep)
{
#ifdef SYS_close_range
    if (keep < 3 && syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
        return;
    if (keep >= 3 && (keep == 3 || syscall(SYS_close_range, 3U, (unsigned)keep - 1, 0U) == 0) &&
        syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0U) == 0)
        return;
#endif
    struct rlimit rl;
    long top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                   ? (long)rl.rlim_cur
                   : 65536;
    for (long fd = 3; fd < top; fd++)
        if (fd != keep)
            close((int)fd);
}

static void
set_limit(int resource, rlim_t soft, rlim_t hard)
{
    struct rlimit rl = {soft, hard};
    (void)setrlimit(resource, &rl); /* a limit already lower stays */
}

/* Never returns. */
static void
child_main(mms_sandbox_fn fn, void *arg, void *shm, size_t shm_len,
           const struct mms_sandbox_limits *lim, struct ctl *ctl, pid_t parent, int keep_fd)
{
    child_ctl = ctl;
    static const int sigs[] = {SIGSEGV, SIGBUS,  SIGILL, SIGFPE, SIGABRT, SIGXCPU,
                               SIGXFSZ, SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    /* PR_SET_PDEATHSIG fires when the forking thread ends: right for a one-shot child, whose
       thread waits for it; a pool worker outlives the thread that started it and ends
       instead when its socket reads end of file (the daemon gone) */
    if ((keep_fd < 0 && prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) || getppid() != parent)
        _exit(126);
    close_from_3(keep_fd);

    set_limit(RLIMIT_CORE, 0, 0);
    set_limit(RLIMIT_NOFILE, CHILD_NOFILE, CHILD_NOFILE);
    if (lim->cpu_s > 0)
        set_limit(RLIMIT_CPU, lim->cpu_s, (rlim_t)lim->cpu_s + 1);
    if (lim->max_memory > 0) {
        size_t base = vm_bytes(), cap;
        if (base > 0 && !__builtin_add_overflow(base, lim->max_memory, &cap))
            set_limit(RLIMIT_AS, cap, cap);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        _exit(126);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0)
        _exit(126);
#if HAVE_FILTER
    if (!lim->no_filter) {
        struct sock_filter prog[FILTER_MAX];
        int n = build_filter(prog, lim->threads, getpid());
        struct sock_fprog fp = {.len = (unsigned short)n, .filter = prog};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0) != 0)
            _exit(126);
    }
#endif
    int rc = fn(arg, shm, shm_len);
    ctl->fn_rc = rc;
    atomic_store(&ctl->state, STATE_RETURNED);
    _exit(0);
}

/* ------------------------------------------------------------------------ testing hook */
static char test_where[16], test_sop[65];

static void
read_env(void)
{
    const char *v = getenv("MMSEGD_TEST_CRASH_SOP"), *colon;
    if (v == NULL || (colon = strchr(v, ':')) == NULL || colon - v >= (long)sizeof test_where ||
        strlen(colon + 1) >= sizeof test_sop || colon[1] == '\0')
        return;
    memcpy(test_where, v, (size_t)(colon - v));
    snprintf(test_sop, sizeof test_sop, "%s", colon + 1);
    mms_log(MMS_LOG_WARNING,
            "MMSEGD_TEST_CRASH_SOP is set: the isolated %s work crashes on purpose on instance %s "
            "(a test setting)",
            test_where, test_sop);
}

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

bool
mms_sandbox_test_crash(const char *where, const char *sop_instance)
{
    pthread_once(&env_once, read_env);
    return test_sop[0] != '\0' && strcmp(where, test_where) == 0 &&
           strcmp(sop_instance, test_sop) == 0;
}

void
mms_sandbox_crash_now(void)
{
    raise(SIGSEGV);
    _exit(125); /* not reached */
}

/* ------------------------------------------------------------------------------ parent */
static const char *
sig_name(int sig)
{
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGILL:
        return "SIGILL";
    case SIGFPE:
        return "SIGFPE";
    case SIGABRT:
        return "SIGABRT";
    case SIGKILL:
        return "SIGKILL";
    case SIGSYS:
        return "SIGSYS";
    case SIGXCPU:
        return "SIGXCPU";
    case SIGTERM:
        return "SIGTERM";
    case SIGTRAP:
        return "SIGTRAP";
    default:
        return "signal";
    }
}

/* Wait for pid until deadline (mms_mono_s; 0: none); true when it ended (status in *st). */
static bool
wait_until(pid_t pid, double deadline, int *st)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    for (;;) {
        pid_t w = waitpid(pid, st, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            *st = 0;
            break;
        }
        double left = deadline > 0 ? deadline - mms_mono_s() : 1.0;
        if (deadline > 0 && left <= 0) {
            if (pfd >= 0)
                close(pfd);
            return false;
        }
        if (pfd >= 0) {
            struct pollfd p = {.fd = pfd, .events = POLLIN};
            int ms = left > 1.0 ? 1000 : (int)(left * 1000.0) + 1;
            (void)poll(&p, 1, ms);
        } else { /* no pidfd (kernel before 5.3): look again soon */
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
    if (pfd >= 0)
        close(pfd);
    return true;
}

/* How the child ended: its wait status st (timed_out: killed by us), its control block. */
static void
map_end(int st, bool timed_out, const struct ctl *ctl, const struct mms_sandbox_limits *lim,
        struct mms_sandbox_result *res)
{
    int state = atomic_load(&((struct ctl *)ctl)->state);
    if (timed_out) {
        res->outcome = MMS_SANDBOX_TIMEOUT;
        snprintf(res->what, sizeof res->what, "timed out after %u s",
                 (lim->timeout_ms + 999) / 1000);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && state == STATE_RETURNED) {
        res->fn_rc = ctl->fn_rc;
        if (res->fn_rc == MMS_ENOMEM && lim->max_memory > 0) {
            res->outcome = MMS_SANDBOX_NOMEM;
            snprintf(res->what, sizeof res->what, "out of memory (limit %zu MB)",
                     lim->max_memory >> 20);
        } else {
            res->outcome = MMS_SANDBOX_OK;
            snprintf(res->what, sizeof res->what, "ok");
        }
    } else if (state == STATE_SYSCALL) {
        res->outcome = MMS_SANDBOX_SYSCALL;
        res->syscall_nr = ctl->syscall_nr;
        snprintf(res->what, sizeof res->what, "blocked system call %ld", res->syscall_nr);
    } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) {
        /* blocked while SIGSYS was blocked (glibc blocks every signal around clone): the
           kernel ended the child without the handler, so the number is not known */
        res->outcome = MMS_SANDBOX_SYSCALL;
        res->syscall_nr = -1;
        snprintf(res->what, sizeof res->what, "blocked system call (SIGSYS)");
    } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGXCPU) {
        res->outcome = MMS_SANDBOX_CPU;
        snprintf(res->what, sizeof res->what, "CPU time limit (%u s) reached", lim->cpu_s);
    } else if (WIFSIGNALED(st)) {
        res->outcome = MMS_SANDBOX_CRASHED;
        res->signo = WTERMSIG(st);
        if (res->signo == SIGKILL)
            snprintf(res->what, sizeof res->what,
                     "killed (SIGKILL: the kernel's out-of-memory killer?)");
        else
            snprintf(res->what, sizeof res->what, "crashed (%s)", sig_name(res->signo));
    } else {
        res->outcome = MMS_SANDBOX_EXITED;
        res->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        snprintf(res->what, sizeof res->what, "exited with status %d", res->status);
    }
}

int
mms_sandbox_run(mms_sandbox_fn fn, void *arg, void *shm, size_t shm_len,
                const struct mms_sandbox_limits *lim, struct mms_sandbox_result *res)
{
    if (fn == NULL || res == NULL || lim == NULL)
        return MMS_EINVAL;
    memset(res, 0, sizeof *res);
    if (!mms_sandbox_enabled()) {
        res->fn_rc = fn(arg, shm, shm_len);
        res->outcome = MMS_SANDBOX_OK;
        snprintf(res->what, sizeof res->what, "ok (not isolated)");
        return 0;
    }
    struct ctl *ctl = mms_sandbox_shm_new(sizeof *ctl);
    if (ctl == NULL) {
        res->outcome = MMS_SANDBOX_NOTSTART;
        res->fn_rc = MMS_ENOMEM;
        snprintf(res->what, sizeof res->what, "not started: %s", mms_strerror(MMS_ENOMEM));
        return 0;
    }
    pthread_once(&env_once, read_env); /* the child only reads what the parent read */
    double deadline = lim->timeout_ms > 0 ? mms_mono_s() + lim->timeout_ms / 1000.0 : 0;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        child_main(fn, arg, shm, shm_len, lim, ctl, parent, -1);
    if (pid < 0) {
        res->outcome = MMS_SANDBOX_NOTSTART;
        res->fn_rc = mms_err_errno();
        snprintf(res->what, sizeof res->what, "not started: fork: %s", mms_strerror(res->fn_rc));
        mms_sandbox_shm_free(ctl, sizeof *ctl);
        return 0;
    }
    int st = 0;
    bool timed_out = false;
    if (!wait_until(pid, deadline, &st)) {
        timed_out = true;
        kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
    }
    map_end(st, timed_out, ctl, lim, res);
    mms_sandbox_shm_free(ctl, sizeof *ctl);
    return 0;
}

/* -------------------------------------------------------------------------------- pools */
struct slot {
    pid_t pid; /* 0: no worker */
    int fd;    /* the parent's end of the worker's socket pair */
    unsigned served;
    bool busy;
    struct ctl *ctl;
    void *shm;
};

struct mms_sandbox_pool {
    mms_sandbox_fn fn;
    size_t shm_len;
    struct mms_sandbox_limits lim; /* of one request */
    unsigned max_requests;
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct slot *slots;
};

/* What a worker knows, in its own copy of the parent's memory. */
struct worker {
    mms_sandbox_fn fn;
    int fd;
    unsigned cpu_s;
};

/* In the worker: serve requests until the socket closes or the CPU time is spent. */
static int
worker_loop(void *arg, void *shm, size_t len)
{
    struct worker *w = arg;
    for (;;) {
        char c;
        if (read(w->fd, &c, 1) != 1)
            _exit(0);
        atomic_store(&child_ctl->state, STATE_RUNNING);
        child_ctl->fn_rc = w->fn(NULL, shm, len);
        struct timespec ts;
        child_ctl->retiring = w->cpu_s > 0 && clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0 &&
                              ts.tv_sec >= (time_t)w->cpu_s;
        atomic_store(&child_ctl->state, STATE_RETURNED);
        if (write(w->fd, "d", 1) != 1 || child_ctl->retiring)
            _exit(0);
    }
}

static void
retire(struct slot *s, bool kill_it)
{
    if (s->pid <= 0)
        return;
    if (kill_it)
        kill(s->pid, SIGKILL);
    close(s->fd);
    while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    s->pid = 0;
    s->fd = -1;
}

static int
spawn(struct mms_sandbox_pool *p, struct slot *s)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return mms_err_errno();
    /* every request gets cpu_s: the worker ends itself once it has used that much, and its
       limit is twice that */
    struct mms_sandbox_limits wl = p->lim;
    wl.cpu_s = p->lim.cpu_s > 0 ? 2 * p->lim.cpu_s : 0;
    struct worker w = {.fn = p->fn, .fd = sv[1], .cpu_s = p->lim.cpu_s};
    pthread_once(&env_once, read_env);
    pid_t parent = getpid();
    memset(s->ctl, 0, sizeof *s->ctl);
    pid_t pid = fork();
    if (pid == 0)
        child_main(worker_loop, &w, s->shm, p->shm_len, &wl, s->ctl, parent, sv[1]);
    int rc = pid < 0 ? mms_err_errno() : 0;
    close(sv[1]);
    if (rc < 0) {
        close(sv[0]);
        return rc;
    }
    s->pid = pid;
    s->fd = sv[0];
    s->served = 0;
    return 0;
}

int
mms_sandbox_pool_new(mms_sandbox_fn fn, size_t shm_len, int workers, unsigned max_requests,
                     const struct mms_sandbox_limits *lim, struct mms_sandbox_pool **out)
{
    if (fn == NULL || shm_len == 0 || workers < 1 || lim == NULL || out == NULL)
        return MMS_EINVAL;
    struct mms_sandbox_pool *p = calloc(1, sizeof *p);
    if (p == NULL || (p->slots = calloc((size_t)workers, sizeof *p->slots)) == NULL) {
        free(p);
        return MMS_ENOMEM;
    }
    p->fn = fn;
    p->shm_len = shm_len;
    p->lim = *lim;
    p->lim.threads = false;
    p->max_requests = max_requests;
    p->n = workers;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < workers; i++) {
        struct slot *s = &p->slots[i];
        s->fd = -1;
        s->ctl = mms_sandbox_shm_new(sizeof *s->ctl);
        s->shm = mms_sandbox_shm_new(shm_len);
        if (s->ctl == NULL || s->shm == NULL) {
            mms_sandbox_pool_free(p);
            return MMS_ENOMEM;
        }
    }
    *out = p;
    return 0;
}

void
mms_sandbox_pool_free(struct mms_sandbox_pool *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->n; i++) {
        retire(&p->slots[i], true);
        mms_sandbox_shm_free(p->slots[i].ctl, sizeof *p->slots[i].ctl);
        mms_sandbox_shm_free(p->slots[i].shm, p->shm_len);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->slots);
    free(p);
}

/* One request on the worker of slot s (busy, ours); false when the worker was found gone
   before it took the request (the caller starts another one and tries again). */
static bool
exchange(struct mms_sandbox_pool *p, struct slot *s, struct mms_sandbox_result *res)
{
    atomic_store(&s->ctl->state, STATE_RUNNING);
    s->ctl->fn_rc = 0;
    if (send(s->fd, "g", 1, MSG_NOSIGNAL) != 1) {
        retire(s, true);
        return false;
    }
    double deadline = p->lim.timeout_ms > 0 ? mms_mono_s() + p->lim.timeout_ms / 1000.0 : 0;
    for (;;) {
        struct pollfd pf = {.fd = s->fd, .events = POLLIN};
        double left = deadline > 0 ? deadline - mms_mono_s() : 1.0;
        if (deadline > 0 && left <= 0) {
            kill(s->pid, SIGKILL);
            int st = 0;
            while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
                ;
            map_end(st, true, s->ctl, &p->lim, res);
            close(s->fd);
            s->pid = 0;
            s->fd = -1;
            return true;
        }
        int k = poll(&pf, 1, left > 1.0 ? 1000 : (int)(left * 1000.0) + 1);
        if (k <= 0)
            continue;
        char c;
        ssize_t r = recv(s->fd, &c, 1, 0);
        if (r == 1) { /* done */
            map_end(0, false, s->ctl, &p->lim, res);
            s->served++;
            if (s->ctl->retiring || (p->max_requests > 0 && s->served >= p->max_requests))
                retire(s, false);
            return true;
        }
        if (r < 0 && errno == EINTR)
            continue;
        /* the worker ended during the request */
        int st = 0;
        while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
            ;
        map_end(st, false, s->ctl, &p->lim, res);
        close(s->fd);
        s->pid = 0;
        s->fd = -1;
        return true;
    }
}

int
mms_sandbox_pool_run(struct mms_sandbox_pool *p, const void *req, size_t req_len, void *resp,
                     size_t resp_len, struct mms_sandbox_result *res)
{
    if (p == NULL || res == NULL || req_len > p->shm_len || resp_len > p->shm_len ||
        (req_len > 0 && req == NULL) || (resp_len > 0 && resp == NULL))
        return MMS_EINVAL;
    memset(res, 0, sizeof *res);
    pthread_mutex_lock(&p->mu);
    struct slot *s = NULL;
    while (s == NULL) {
        for (int i = 0; i < p->n && s == NULL; i++)
            if (!p->slots[i].busy)
                s = &p->slots[i];
        if (s == NULL)
            pthread_cond_wait(&p->cv, &p->mu);
    }
    s->busy = true;
    pthread_mutex_unlock(&p->mu);

    if (req_len > 0)
        memcpy(s->shm, req, req_len);
    if (!mms_sandbox_enabled()) {
        res->fn_rc = p->fn(NULL, s->shm, p->shm_len);
        res->outcome = MMS_SANDBOX_OK;
        snprintf(res->what, sizeof res->what, "ok (not isolated)");
    } else {
        bool done = false;
        for (int attempt = 0; attempt < 2 && !done; attempt++) {
            int rc = s->pid > 0 ? 0 : spawn(p, s);
            if (rc < 0) {
                res->outcome = MMS_SANDBOX_NOTSTART;
                res->fn_rc = rc;
                snprintf(res->what, sizeof res->what, "not started: fork: %s", mms_strerror(rc));
                done = true;
            } else {
                done = exchange(p, s, res);
            }
        }
        if (!done) {
            res->outcome = MMS_SANDBOX_NOTSTART;
            res->fn_rc = MMS_EIO;
            snprintf(res->what, sizeof res->what, "not started: the worker ends at once");
        }
    }
    if (res->outcome == MMS_SANDBOX_OK && resp_len > 0)
        memcpy(resp, s->shm, resp_len);

    pthread_mutex_lock(&p->mu);
    s->busy = false;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

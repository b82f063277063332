/* daemon/sandbox: each way a child can end maps to its outcome, and the parent is unharmed:
 * a return, a segfault, an abort, a wall-clock and a CPU timeout, an allocation past the
 * memory ceiling, system calls outside the filter (socket, execve, a file opened for
 * writing, kill of another process, a thread without permission), a large result through
 * the shared mapping, descriptors closed in the child, several threads at once, and the
 * in-place mode of `isolate = no`. */
#include "daemon/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "tests/tap.h"

static const struct mms_sandbox_limits base = {
    .max_memory = (size_t)256 << 20, .cpu_s = 10, .timeout_ms = 10000};

static int
fn_ok(void *arg, void *shm, size_t len)
{
    (void)arg;
    if (len >= sizeof(int))
        *(int *)shm = 42;
    return 0;
}

static int
fn_code(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    return MMS_EDICOM;
}

/* A store to a page without access: a real SIGSEGV (a null pointer would be caught first by
 * UBSan in a sanitizer build, which then exits). */
static int
fn_segv(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    volatile int *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if ((void *)p == MAP_FAILED)
        return MMS_ENOMEM;
    *p = 1;
    return 0;
}

static int
fn_abort(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    abort();
}

static int
fn_spin(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    volatile uint64_t x = 0;
    for (;;)
        x++;
    return 0;
}

static int
fn_sleep(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    for (;;) {
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Map (not malloc: a sanitizer's allocator would report the failure itself) *arg bytes. */
static int
fn_alloc(void *arg, void *shm, size_t len)
{
    (void)shm, (void)len;
    size_t n = *(size_t *)arg;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return errno == ENOMEM ? MMS_ENOMEM : mms_err_errno();
    memset(p, 1, n);
    munmap(p, n);
    return 0;
}

static int
fn_socket(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    return s >= 0 ? 0 : mms_err_errno();
}

static int
fn_exec(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    char *const argv[] = {"true", NULL};
    execv("/bin/true", argv);
    return mms_err_errno();
}

static int
fn_write_open(void *arg, void *shm, size_t len)
{
    (void)shm, (void)len;
    int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    return fd >= 0 ? 0 : mms_err_errno();
}

static int
fn_read_open(void *arg, void *shm, size_t len)
{
    (void)shm, (void)len;
    int fd = open(arg, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mms_err_errno();
    char buf[16];
    ssize_t k = read(fd, buf, sizeof buf);
    close(fd);
    return k > 0 ? 0 : MMS_EIO;
}

static int
fn_kill_parent(void *arg, void *shm, size_t len)
{
    (void)shm, (void)len;
    return kill(*(pid_t *)arg, SIGTERM) == 0 ? 0 : mms_err_errno();
}

/* A handler of its own for SIGSYS, then a blocked call. */
static int
fn_own_sigsys(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    signal(SIGSYS, SIG_IGN);
    return socket(AF_INET, SOCK_STREAM, 0) >= 0 ? 0 : mms_err_errno();
}

static void *
thread_main(void *arg)
{
    *(int *)arg = 7;
    return NULL;
}

static int
fn_thread(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    pthread_t t;
    int v = 0;
    if (pthread_create(&t, NULL, thread_main, &v) != 0)
        return MMS_ENOMEM;
    pthread_join(t, NULL);
    return v == 7 ? 0 : MMS_EIO;
}

/* A 64 MB result: float i at index i. */
static int
fn_large(void *arg, void *shm, size_t len)
{
    (void)arg;
    float *f = shm;
    for (size_t i = 0; i < len / sizeof *f; i++)
        f[i] = (float)(i & 0xffffff);
    return 0;
}

static int
fn_fd_closed(void *arg, void *shm, size_t len)
{
    (void)shm, (void)len;
    struct stat sb;
    return fstat(*(int *)arg, &sb) != 0 && errno == EBADF ? 0 : MMS_EIO;
}

static int in_place_mark;

static int
fn_mark(void *arg, void *shm, size_t len)
{
    (void)arg, (void)shm, (void)len;
    in_place_mark = 1;
    return 0;
}

static void *
many(void *arg)
{
    int *okc = arg;
    for (int i = 0; i < 20; i++) {
        int *shm = mms_sandbox_shm_new(sizeof(int));
        struct mms_sandbox_result r;
        if (shm != NULL && mms_sandbox_run(fn_ok, NULL, shm, sizeof(int), &base, &r) == 0 &&
            r.outcome == MMS_SANDBOX_OK && *shm == 42)
            ++*okc;
        mms_sandbox_shm_free(shm, sizeof(int));
    }
    return NULL;
}

/* A pool worker's request: op 0 doubles x, 1 segfaults, 2 never ends; the pid answers. */
struct preq {
    int op, x;
    pid_t pid;
};

static int
fn_pool(void *arg, void *shm, size_t len)
{
    struct preq *q = shm;
    (void)arg, (void)len;
    if (q->op == 1)
        return fn_segv(NULL, NULL, 0);
    if (q->op == 2)
        return fn_sleep(NULL, NULL, 0);
    q->x *= 2;
    q->pid = getpid();
    return 0;
}

static struct mms_sandbox_result
run(mms_sandbox_fn fn, void *arg, const struct mms_sandbox_limits *lim)
{
    struct mms_sandbox_result r;
    int rc = mms_sandbox_run(fn, arg, NULL, 0, lim, &r);
    if (rc != 0)
        diag("mms_sandbox_run: %s", mms_strerror(rc));
    diag("%s", r.what);
    return r;
}

int
main(void)
{
    plan(36, 180);
    pid_t me = getpid();
    bool filter = strcmp(mms_sandbox_filter_name(), "seccomp") == 0;
    diag("filter: %s", mms_sandbox_filter_name());

    int *shm = mms_sandbox_shm_new(sizeof(int));
    struct mms_sandbox_result r;
    is_int(mms_sandbox_run(fn_ok, NULL, shm, sizeof(int), &base, &r), 0, "run");
    ok(r.outcome == MMS_SANDBOX_OK && r.fn_rc == 0 && *shm == 42,
       "a returning child: ok, and its result in the shared mapping");
    mms_sandbox_shm_free(shm, sizeof(int));

    r = run(fn_code, NULL, &base);
    ok(r.outcome == MMS_SANDBOX_OK && r.fn_rc == MMS_EDICOM, "the function's code comes back");

    r = run(fn_segv, NULL, &base);
    ok(r.outcome == MMS_SANDBOX_CRASHED && r.signo == SIGSEGV, "a segfault: crashed (SIGSEGV)");
    is_str(r.what, "crashed (SIGSEGV)", "named so");

    r = run(fn_abort, NULL, &base);
    ok(r.outcome == MMS_SANDBOX_CRASHED && r.signo == SIGABRT, "an abort: crashed (SIGABRT)");

    struct mms_sandbox_limits lim = base;
    lim.timeout_ms = 300;
    double t0 = mms_mono_s();
    r = run(fn_sleep, NULL, &lim);
    double dt = mms_mono_s() - t0;
    ok(r.outcome == MMS_SANDBOX_TIMEOUT, "a child that never ends: timed out");
    ok(dt >= 0.25 && dt < 3.0, "after the wall-clock deadline (%.2f s)", dt);

    lim = base;
    lim.cpu_s = 1;
    t0 = mms_mono_s();
    r = run(fn_spin, NULL, &lim);
    dt = mms_mono_s() - t0;
    ok(r.outcome == MMS_SANDBOX_CPU, "a busy loop: CPU time limit");
    ok(dt < 30.0, "ended by the CPU limit, not the 10 s deadline of CPU (%.2f s wall)", dt);

    lim = base;
    lim.max_memory = (size_t)64 << 20;
    size_t big = (size_t)256 << 20, small = (size_t)16 << 20;
    r = run(fn_alloc, &big, &lim);
    ok(r.outcome == MMS_SANDBOX_NOMEM, "256 MB past a 64 MB ceiling: out of memory");
    is_str(r.what, "out of memory (limit 64 MB)", "named with the limit");
    r = run(fn_alloc, &small, &lim);
    ok(r.outcome == MMS_SANDBOX_OK && r.fn_rc == 0, "16 MB under it: ok");

    if (filter) {
        r = run(fn_socket, NULL, &base);
        ok(r.outcome == MMS_SANDBOX_SYSCALL && r.syscall_nr == SYS_socket,
           "socket(): blocked system call %d", (int)SYS_socket);
        r = run(fn_exec, NULL, &base);
        ok(r.outcome == MMS_SANDBOX_SYSCALL && r.syscall_nr == SYS_execve, "execve(): blocked");
        r = run(fn_write_open, "/tmp/mmsegd-sandbox-never-written", &base);
        ok(r.outcome == MMS_SANDBOX_SYSCALL && r.syscall_nr == SYS_openat &&
               access("/tmp/mmsegd-sandbox-never-written", F_OK) != 0,
           "opening a file for writing: blocked, and no file made");
        r = run(fn_kill_parent, &me, &base);
        ok(r.outcome == MMS_SANDBOX_SYSCALL && r.syscall_nr == SYS_kill,
           "kill() of another process (the parent): blocked");
        r = run(fn_own_sigsys, NULL, &base);
        ok(r.outcome == MMS_SANDBOX_SYSCALL && r.syscall_nr == SYS_rt_sigaction,
           "replacing the SIGSYS handler: blocked");
        r = run(fn_thread, NULL, &base);
        ok(r.outcome == MMS_SANDBOX_SYSCALL && (r.syscall_nr == SYS_clone || r.syscall_nr == -1),
           "a thread without lim.threads: blocked (clone, made with every signal blocked)");
    } else {
        for (int i = 0; i < 6; i++)
            skip("no system call filter in this build (sanitizers: see sandbox.c)");
    }
    r = run(fn_read_open, "/proc/self/statm", &base);
    ok(r.outcome == MMS_SANDBOX_OK && r.fn_rc == 0, "opening a file to read it: allowed");
    lim = base;
    lim.threads = true;
    r = run(fn_thread, NULL, &lim);
    ok(r.outcome == MMS_SANDBOX_OK && r.fn_rc == 0, "a thread with lim.threads: allowed");

    size_t len = (size_t)64 << 20;
    float *f = mms_sandbox_shm_new(len);
    ok(f != NULL, "64 MB shared mapping");
    r.outcome = MMS_SANDBOX_NOTSTART;
    if (f != NULL)
        mms_sandbox_run(fn_large, NULL, f, len, &base, &r);
    bool same = r.outcome == MMS_SANDBOX_OK;
    for (size_t i = 0; same && i < len / sizeof *f; i += 4099)
        same = f[i] == (float)(i & 0xffffff);
    ok(same && f[len / sizeof *f - 1] == (float)((len / sizeof *f - 1) & 0xffffff),
       "a 64 MB result through the shared mapping");
    mms_sandbox_shm_free(f, len);

    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    r = run(fn_fd_closed, &fd, &base);
    ok(fd >= 3 && r.outcome == MMS_SANDBOX_OK && r.fn_rc == 0,
       "the parent's descriptors are closed in the child");
    struct stat sb;
    ok(fstat(fd, &sb) == 0, "and still open in the parent");
    close(fd);

    int counts[4] = {0};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, many, &counts[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ok(counts[0] + counts[1] + counts[2] + counts[3] == 80, "4 threads x 20 children at once");

    t0 = mms_mono_s();
    for (int i = 0; i < 50; i++)
        mms_sandbox_run(fn_code, NULL, NULL, 0, &base, &r);
    diag("a child costs %.2f ms (50 runs)", (mms_mono_s() - t0) * 1000.0 / 50);

    struct mms_sandbox_pool *pool = NULL;
    lim = base;
    lim.timeout_ms = 500;
    is_int(mms_sandbox_pool_new(fn_pool, sizeof(struct preq), 2, 50, &lim, &pool), 0, "a pool");
    bool all = true;
    pid_t pids[120];
    t0 = mms_mono_s();
    for (int i = 0; i < 120; i++) {
        struct preq q = {0, i, 0};
        all = all && mms_sandbox_pool_run(pool, &q, sizeof q, &q, sizeof q, &r) == 0 &&
              r.outcome == MMS_SANDBOX_OK && q.x == 2 * i && q.pid != me;
        pids[i] = q.pid;
    }
    diag("a pool request costs %.3f ms (120 requests)", (mms_mono_s() - t0) * 1000.0 / 120);
    ok(all && pids[0] == pids[49] && pids[49] != pids[50],
       "120 requests answered; a worker serves 50, then another one takes over");
    struct preq q = {1, 0, 0};
    mms_sandbox_pool_run(pool, &q, sizeof q, &q, sizeof q, &r);
    ok(r.outcome == MMS_SANDBOX_CRASHED && r.signo == SIGSEGV, "a request that crashes: crashed");
    q = (struct preq){0, 21, 0};
    mms_sandbox_pool_run(pool, &q, sizeof q, &q, sizeof q, &r);
    ok(r.outcome == MMS_SANDBOX_OK && q.x == 42, "the next request: a new worker answers");
    q = (struct preq){2, 0, 0};
    mms_sandbox_pool_run(pool, &q, sizeof q, &q, sizeof q, &r);
    ok(r.outcome == MMS_SANDBOX_TIMEOUT, "a request that never ends: timed out");
    q = (struct preq){0, 5, 0};
    mms_sandbox_pool_run(pool, &q, sizeof q, &q, sizeof q, &r);
    ok(r.outcome == MMS_SANDBOX_OK && q.x == 10, "and the next one is answered");
    mms_sandbox_pool_free(pool);

    mms_sandbox_set_enabled(false);
    r = run(fn_mark, NULL, &base);
    ok(r.outcome == MMS_SANDBOX_OK && in_place_mark == 1, "isolate = no: run in place");
    mms_sandbox_set_enabled(true);

    ok(getpid() == me, "the parent is the same process");
    ok(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD, "no child left behind");
    ok(access("/tmp/mmsegd-sandbox-never-written", F_OK) != 0, "nothing written by a child");
    return done_testing();
}

/* common/crash: the fatal-signal handler, stages and input markers (crash.h).
 * Threads: per-thread state in thread-local storage of the executable (static TLS, safe to
 * read in a signal handler); the installed fd is set once before other threads exist. */
#include "common/crash.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define STAGE_MAX 256
#define MARKER_MAX 4096
#define ALT_STACK_BYTES (64 * 1024)

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
static const char *const fatal_names[] = {"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"};

static int crash_fd = STDERR_FILENO;
static bool crash_journal;

static _Thread_local char stage[STAGE_MAX];
static _Thread_local volatile sig_atomic_t stage_set;
static _Thread_local char marker[MARKER_MAX];
static _Thread_local volatile sig_atomic_t marker_armed;
static _Thread_local void *alt_stack;

const char *
mms_crash_signal_name(int sig)
{
    for (size_t i = 0; i < sizeof fatal_signals / sizeof fatal_signals[0]; i++)
        if (fatal_signals[i] == sig)
            return fatal_names[i];
    return NULL;
}

void
mms_stage_set(const char *fmt, ...)
{
    char raw[STAGE_MAX * 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    stage_set = 0; /* the handler never reads a half-written stage */
    mms_text_escape(raw, MMS_ESCAPE_SPACES, stage, sizeof stage, NULL);
    stage_set = 1;
}

void
mms_stage_clear(void)
{
    stage_set = 0;
}

void
mms_crash_marker_arm(const char *path)
{
    marker_armed = 0;
    snprintf(marker, sizeof marker, "%s", path);
    marker_armed = 1;
}

void
mms_crash_marker_disarm(void)
{
    marker_armed = 0;
}

/* async-signal-safe output */
static void
put(const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = write(crash_fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

static void
put_int(long v)
{
    char buf[24], *p = buf + sizeof buf - 1;
    bool neg = v < 0;
    unsigned long u = neg ? 0UL - (unsigned long)v : (unsigned long)v;
    *p = '\0';
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (neg)
        *--p = '-';
    put(p);
}

static void
on_fatal(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    int saved = errno;
    const char *name = mms_crash_signal_name(sig);
    put(crash_journal ? "<2>" : "");
    put("fatal signal ");
    put(name != NULL ? name : "?");
    put(" (");
    put_int(sig);
    put(")");
    if (info != NULL && (sig == SIGSEGV || sig == SIGBUS) && info->si_code > 0) {
        char hex[2 + 16 + 1] = "0x";
        unsigned long a = (unsigned long)info->si_addr;
        for (int i = 0; i < 16; i++)
            hex[2 + i] = "0123456789abcdef"[(a >> (60 - 4 * i)) & 15];
        hex[18] = '\0';
        put(" at address ");
        put(hex);
    } else if (info != NULL && info->si_code <= 0) {
        put(" sent by pid ");
        put_int((long)info->si_pid);
    }
    put(stage_set ? ", while " : ", stage unknown");
    if (stage_set)
        put(stage);
    put("; backtrace follows\n");
    void *frames[64];
    int n = backtrace(frames, 64);
    backtrace_symbols_fd(frames, n, crash_fd);
    if (marker_armed && name != NULL) {
        int fd = open(marker, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t w = write(fd, name, strlen(name) + 1);
            (void)w;
            close(fd);
        }
    }
    put(crash_journal ? "<2>" : "");
    put("the process ends with the default action of the signal\n");
    errno = saved;
    signal(sig, SIG_DFL);
    raise(sig); /* delivered when the handler returns: the signal is blocked until then */
}

int
mms_crash_thread_init(void)
{
    if (alt_stack != NULL)
        return 0;
    void *p = malloc(ALT_STACK_BYTES);
    if (p == NULL)
        return MMS_ENOMEM;
    stack_t ss = {.ss_sp = p, .ss_size = ALT_STACK_BYTES, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        int rc = mms_err_errno();
        free(p);
        return rc;
    }
    alt_stack = p; /* kept for the life of the thread */
    return 0;
}

void
mms_crash_thread_fini(void)
{
    if (alt_stack == NULL)
        return;
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    free(alt_stack);
    alt_stack = NULL;
}

int
mms_crash_install(int fd, int journal)
{
    crash_fd = fd;
    crash_journal = journal != 0;
    /* the first backtrace() loads libgcc's unwinder (dlopen, malloc): do it now, not in the
     * handler */
    void *frames[4];
    (void)backtrace(frames, 4);
    int rc = mms_crash_thread_init();
    if (rc < 0)
        return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof fatal_signals / sizeof fatal_signals[0]; i++)
        if (sigaction(fatal_signals[i], &sa, NULL) != 0)
            return mms_err_errno();
    return 0;
}

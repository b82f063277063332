/* Logging: level filter, message formatting and the stderr/journald sink. Threads: any. */
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"

/* A message longer than this is cut and ends with "...". */
#define MSG_MAX 4096

static const char *const level_names[] = {"err", "warning", "notice", "info", "debug"};

static _Atomic int max_level = MMS_LOG_INFO;
static mms_log_fn sink_fn = mms_log_stderr_sink;
static void *sink_ud;
static int stderr_fd = STDERR_FILENO;
static bool stderr_journal;

int
mms_log_level(void)
{
    return atomic_load_explicit(&max_level, memory_order_relaxed);
}

void
mms_log_set_level(int level)
{
    if (level < MMS_LOG_ERR)
        level = MMS_LOG_ERR;
    if (level > MMS_LOG_DEBUG)
        level = MMS_LOG_DEBUG;
    atomic_store_explicit(&max_level, level, memory_order_relaxed);
}

int
mms_log_level_parse(const char *name, int *level)
{
    for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = MMS_LOG_ERR + i;
            return 0;
        }
    }
    return MMS_EINVAL;
}

const char *
mms_log_level_name(int level)
{
    if (level < MMS_LOG_ERR || level > MMS_LOG_DEBUG)
        return "?";
    return level_names[level - MMS_LOG_ERR];
}

void
mms_log_set_sink(mms_log_fn fn, void *ud)
{
    sink_fn = fn != NULL ? fn : mms_log_stderr_sink;
    sink_ud = fn != NULL ? ud : NULL;
}

bool
mms_log_stderr_open(int fd)
{
    struct stat st;
    const char *js = getenv("JOURNAL_STREAM");
    uintmax_t dev, ino;
    char tail;

    stderr_fd = fd;
    stderr_journal = false;
    if (js != NULL && sscanf(js, "%ju:%ju%c", &dev, &ino, &tail) == 2 && fstat(fd, &st) == 0 &&
        (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino)
        stderr_journal = true;
    return stderr_journal;
}

static void
write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing log stream */
        }
        buf += n;
        len -= (size_t)n;
    }
}

void
mms_log_stderr_sink(int level, const char *msg, void *ud)
{
    char line[MSG_MAX + 64];
    int n;

    (void)ud;
    if (stderr_journal) {
        n = snprintf(line, sizeof line, "<%d>%s\n", level, msg);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, mms_log_level_name(level), msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    write_all(stderr_fd, line, (size_t)n);
}

void
mms__vlog(int level, const char *fmt, va_list ap)
{
    char msg[MSG_MAX];
    int saved = errno;
    int n = vsnprintf(msg, sizeof msg, fmt, ap);

    if (n < 0)
        snprintf(msg, sizeof msg, "(unformattable log message: %s)", fmt);
    else if ((size_t)n >= sizeof msg)
        memcpy(msg + sizeof msg - 4, "...", 4);
    /* A line is one event: embedded newlines would split it into several journal entries. */
    for (char *p = msg; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    sink_fn(level, msg, sink_ud);
    errno = saved;
}

void
mms__log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mms__vlog(level, fmt, ap);
    va_end(ap);
}

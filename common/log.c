/* Logging: level filter, message formatting and the stderr/journald sink. Threads: any. */
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/text.h"

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

int
mms_log_stderr_fd(bool *journal)
{
    *journal = stderr_journal;
    return stderr_fd;
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

/* The length of the valid, shortest-form UTF-8 sequence at s (s[0] not NUL) that encodes a
 * character other than a control (C0, DEL, C1), or 0. */
static size_t
utf8_printable(const unsigned char *s)
{
    int len;
    int32_t cp = mms_utf8_next(s, &len);
    return cp < 0 || mms_is_control(cp) ? 0 : (size_t)len;
}

size_t
mms_text_escape(const char *text, unsigned flags, char *out, size_t len, bool *cut)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cut != NULL)
        *cut = false;
    if (len == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0';) {
        size_t n = utf8_printable(p);
        char esc[4];
        const char *src = (const char *)p;
        size_t take = n;
        if (n == 0 && (flags & MMS_ESCAPE_SPACES) && (*p == '\n' || *p == '\r' || *p == '\t')) {
            src = " ";
            take = 1;
        } else if (n == 0) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[*p >> 4];
            esc[3] = hex[*p & 15];
            src = esc;
            take = 4;
        } else if (*p == '\\' && (flags & MMS_ESCAPE_BACKSLASH)) {
            src = "\\\\";
            take = 2;
        }
        if (o + take >= len) { /* cut at a character boundary */
            if (cut != NULL)
                *cut = true;
            break;
        }
        memcpy(out + o, src, take);
        o += take;
        p += n != 0 ? n : 1;
    }
    out[o] = '\0';
    return o;
}

void
mms__vlog(int level, const char *fmt, va_list ap)
{
    char msg[MSG_MAX], clean[MSG_MAX];
    int saved = errno;
    int n = vsnprintf(msg, sizeof msg, fmt, ap);

    if (n < 0)
        snprintf(msg, sizeof msg, "(unformattable log message: %s)", fmt);
    /* A line is one event: embedded newlines would split it into several journal entries,
     * and received text (names, UIDs) may hold any byte. So newlines and tabs become spaces,
     * other controls and invalid UTF-8 "\xNN", here in the sink path for every sink. */
    bool cut;
    size_t len = mms_text_escape(msg, MMS_ESCAPE_SPACES, clean, sizeof clean, &cut);
    if ((n > 0 && (size_t)n >= sizeof msg) || cut) {
        len = len < sizeof clean - 4 ? len : sizeof clean - 4;
        while (len > 0 && ((unsigned char)clean[len] & 0xc0) == 0x80)
            len--; /* not inside a character */
        memcpy(clean + len, "...", 4);
    }
    sink_fn(level, clean, sink_ud);
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

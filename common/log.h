/* Logging: syslog levels, one sink, level tested before formatting.
 *
 * Libraries call mms_log(); daemon/main.c installs the sink. The built-in stderr sink writes
 * one line per event with a single write(2), so lines from different threads never
 * interleave. Threads: every function may be called from any thread; mms_log_set_sink()
 * should be called once at start-up, before other threads exist. */
#ifndef MMS_COMMON_LOG_H
#define MMS_COMMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The syslog numbers (sd-daemon.h's SD_ERR is "<3>"). */
enum mms_log_level {
    MMS_LOG_ERR = 3,
    MMS_LOG_WARNING = 4,
    MMS_LOG_NOTICE = 5,
    MMS_LOG_INFO = 6,
    MMS_LOG_DEBUG = 7,
};

/* A sink receives the level and one formatted message without a trailing newline. */
typedef void (*mms_log_fn)(int level, const char *msg, void *ud);

/* The most verbose level that is emitted (default MMS_LOG_INFO). */
int mms_log_level(void);
void mms_log_set_level(int level);

/* Parse "err", "warning", "notice", "info" or "debug" into *level.
 * Returns 0, or MMS_EINVAL (and *level untouched) for any other text. */
int mms_log_level_parse(const char *name, int *level);

/* "err" ... "debug" for a level in range, "?" otherwise. */
const char *mms_log_level_name(int level);

/* Install fn as the sink (NULL restores the stderr sink). ud is borrowed. */
void mms_log_set_sink(mms_log_fn fn, void *ud);

/* Point the stderr sink at fd and decide its line format: "<N>message" when $JOURNAL_STREAM
 * names fd's device and inode (systemd.exec(5)), so journald takes the priority from the
 * prefix; otherwise "YYYY-MM-DDTHH:MM:SS.mmmZ level: message". Returns whether the journal
 * format was chosen. */
bool mms_log_stderr_open(int fd);

/* The stderr sink's fd, and in *journal whether it writes the journal format. */
int mms_log_stderr_fd(bool *journal);

/* The stderr sink itself, for callers that chain sinks. */
void mms_log_stderr_sink(int level, const char *msg, void *ud);

/* Flags of mms_text_escape(). */
enum {
    MMS_ESCAPE_SPACES = 1,    /* newline, carriage return and tab become a space */
    MMS_ESCAPE_BACKSLASH = 2, /* a backslash is doubled, so that the escaping can be undone */
};

/* Copy text to out (len > 0 bytes, always NUL-terminated) so that it can go into a log line
 * or a line-based file: control characters (C0, DEL, C1) and bytes that are not valid,
 * shortest-form UTF-8 become "\xNN" (hex of the byte), except as flags say. When out is too
 * small the copy is cut at a character boundary, and *cut (may be NULL) says so. Returns the
 * length of out. Every message goes through this before it reaches a sink. Threads: any. */
size_t mms_text_escape(const char *text, unsigned flags, char *out, size_t len, bool *cut);

/* Format and emit; use the mms_log() macro, which skips formatting for disabled levels. */
void mms__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mms__vlog(int level, const char *fmt, va_list ap);

#define mms_log(level, ...)                                                                        \
    do {                                                                                           \
        if ((level) <= mms_log_level())                                                            \
            mms__log((level), __VA_ARGS__);                                                        \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif

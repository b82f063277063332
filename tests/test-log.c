/* Tests of common/log.c: levels, the level filter, journald prefixes and plain lines. */
#include <fcntl.h>
#include <stdint.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "tests/tap.h"

static int formatted;

static const char *
count_format(void)
{
    formatted++;
    return "x";
}

/* Emit one message through the stderr sink into a pipe and return what came out. */
static char *
capture(int fds[2], int level, const char *msg)
{
    static char buf[8192];
    ssize_t n;
    mms_log(level, "%s", msg);
    n = read(fds[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static bool
matches(const char *s, const char *re)
{
    regex_t r;
    bool m;
    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB) != 0)
        return false;
    m = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return m;
}

int
main(void)
{
    int fds[2], level = 0;
    struct stat st;
    char js[64], big[6000];
    const char *line;

    plan(19, 10);
    if (pipe(fds) < 0 || fstat(fds[1], &st) < 0)
        return 1;

    ok(mms_log_level_parse("warning", &level) == 0 && level == MMS_LOG_WARNING, "parse 'warning'");
    level = 42;
    ok(mms_log_level_parse("loud", &level) == MMS_EINVAL && level == 42,
       "an unknown level name is EINVAL and leaves the output alone");
    is_str(mms_log_level_name(MMS_LOG_DEBUG), "debug", "level names");

    /* No JOURNAL_STREAM: a timestamp and the level name. */
    unsetenv("JOURNAL_STREAM");
    ok(!mms_log_stderr_open(fds[1]), "plain format without JOURNAL_STREAM");
    mms_log_set_level(MMS_LOG_INFO);
    line = capture(fds, MMS_LOG_NOTICE, "hello");
    ok(matches(line, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z notice: "
                     "hello\n$"),
       "plain line: timestamp, level, message");
    if (!matches(line, "notice: hello"))
        diag("got '%s'", line);

    /* JOURNAL_STREAM naming another file: still plain. */
    setenv("JOURNAL_STREAM", "1:1", 1);
    ok(!mms_log_stderr_open(fds[1]), "plain format when JOURNAL_STREAM names another stream");

    /* JOURNAL_STREAM naming our stream: "<N>" prefixes, no timestamp. */
    snprintf(js, sizeof js, "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    ok(mms_log_stderr_open(fds[1]), "journal format when JOURNAL_STREAM matches");
    is_str(capture(fds, MMS_LOG_ERR, "disk full"), "<3>disk full\n", "ERR is <3>");
    is_str(capture(fds, MMS_LOG_INFO, "two\nlines"), "<6>two lines\n",
           "a message is one line: newlines become spaces");
    is_str(capture(fds, MMS_LOG_INFO, "bell\a esc\x1b[31m del\x7f c1\xc2\x85"),
           "<6>bell\\x07 esc\\x1b[31m del\\x7f c1\\xc2\\x85\n",
           "control characters (C0, DEL, C1) are escaped as \\xNN");
    is_str(capture(fds, MMS_LOG_INFO, "bad \xff\xfe utf8 \xc3( over\xc0\xaf end"),
           "<6>bad \\xff\\xfe utf8 \\xc3( over\\xc0\\xaf end\n",
           "invalid and overlong UTF-8 bytes are escaped as \\xNN");
    is_str(capture(fds, MMS_LOG_INFO, "caf\xc3\xa9 \xe6\x97\xa5 back\\slash"),
           "<6>caf\xc3\xa9 \xe6\x97\xa5 back\\slash\n",
           "valid UTF-8 and backslashes pass unchanged");

    /* The level filter runs before formatting. */
    formatted = 0;
    mms_log_set_level(MMS_LOG_NOTICE);
    mms_log(MMS_LOG_DEBUG, "%s", count_format());
    is_int(formatted, 0, "a disabled level is not formatted");
    is_str(capture(fds, MMS_LOG_WARNING, "shown"), "<4>shown\n", "an enabled level is emitted");

    /* Long messages are cut, still one line ending in a newline. */
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    line = capture(fds, MMS_LOG_ERR, big);
    ok(strncmp(line, "<3>aaa", 6) == 0 && strlen(line) < sizeof big &&
           strcmp(line + strlen(line) - 4, "...\n") == 0,
       "a long message is cut with '...' (%zu bytes)", strlen(line));
    ok(strchr(line, '\n') == line + strlen(line) - 1, "and stays one line");

    /* Escaping that expands past the limit is cut too, never inside an escape. */
    memset(big, 1, sizeof big - 1);
    line = capture(fds, MMS_LOG_ERR, big);
    ok(strlen(line) < sizeof big && strcmp(line + strlen(line) - 8, "\\x01...\n") == 0,
       "an escaped message over the limit is cut after a whole escape (%zu bytes)", strlen(line));

    char esc[16];
    bool cut;
    is_int((int)mms_text_escape("a\\b\nc", MMS_ESCAPE_BACKSLASH, esc, sizeof esc, &cut), 9,
           "mms_text_escape with MMS_ESCAPE_BACKSLASH doubles backslashes");
    is_str(esc, "a\\\\b\\x0ac", "and escapes a newline as \\x0a");
    return done_testing();
}

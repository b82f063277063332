/* Tests that drive real DICOM tools: find a program, run a command with its output in
 * tool_log, start one in the background. Header-only; each test sets tool_log. */
#ifndef MMS_TESTS_PROC_UTIL_H
#define MMS_TESTS_PROC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static char tool_log[128];

/* The program name on PATH, or the given absolute path, into out; false when neither. */
static bool
find_tool(const char *name, const char *fallback, char *out, size_t len)
{
    const char *p = getenv("PATH");
    while (p != NULL && *p != '\0') {
        const char *e = strchr(p, ':');
        size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
        snprintf(out, len, "%.*s/%s", (int)n, p, name);
        if (access(out, X_OK) == 0)
            return true;
        p = e != NULL ? e + 1 : NULL;
    }
    snprintf(out, len, "%s", fallback);
    return fallback[0] != '\0' && access(out, X_OK) == 0;
}

/* Run a shell command with its output in tool_log; the exit status, or -1. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static int
run(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd - 200, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof cmd - 200)
        return -1;
    snprintf(cmd + n, sizeof cmd - (size_t)n, " >'%s' 2>&1", tool_log);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Start "exec CMD" in the background with its output in log; the pid. */
static pid_t
spawn(const char *log, const char *cmd)
{
    pid_t pid = fork();
    if (pid == 0) {
        char full[8192];
        snprintf(full, sizeof full, "exec %s >'%s' 2>&1", cmd, log);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    return pid;
}

#endif

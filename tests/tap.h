/* A small TAP producer for tests/test-*.c: plan, ok, is_int, is_str, diag, skip_all.
 * Each test program includes it once. An alarm() fails a test that hangs. */
#ifndef MMS_TESTS_TAP_H
#define MMS_TESTS_TAP_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tap_n, tap_failed, tap_planned;

static void
tap_on_alarm(int sig)
{
    static const char msg[] = "Bail out! test timed out (alarm)\n";
    (void)sig;
    (void)!write(STDOUT_FILENO, msg, sizeof msg - 1);
    _exit(1);
}

/* Announce n tests and arm a watchdog of timeout_s seconds. */
static inline void
plan(int n, unsigned timeout_s)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    tap_planned = n;
    printf("1..%d\n", n);
    signal(SIGALRM, tap_on_alarm);
    alarm(timeout_s);
}

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void
diag(const char *fmt, ...)
{
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline bool ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool
ok(bool cond, const char *fmt, ...)
{
    va_list ap;
    tap_n++;
    if (!cond)
        tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    return cond;
}

#define is_int(got, want, ...)                                                                     \
    do {                                                                                           \
        long long tap_g_ = (long long)(got), tap_w_ = (long long)(want);                           \
        if (!ok(tap_g_ == tap_w_, __VA_ARGS__))                                                    \
            diag("got %lld, want %lld", tap_g_, tap_w_);                                           \
    } while (0)

#define is_str(got, want, ...)                                                                     \
    do {                                                                                           \
        const char *tap_g_ = (got), *tap_w_ = (want);                                              \
        if (!ok(tap_g_ != NULL && strcmp(tap_g_, tap_w_) == 0, __VA_ARGS__))                       \
            diag("got '%s'\n#  want '%s'", tap_g_ != NULL ? tap_g_ : "(null)", tap_w_);            \
    } while (0)

/* Skip every remaining test of the program, saying why. Exits. */
static inline void
skip_all(const char *why)
{
    printf("1..0 # SKIP %s\n", why);
    exit(0);
}

/* Skip one planned test, saying why. */
static inline void
skip(const char *why)
{
    printf("ok %d # SKIP %s\n", ++tap_n, why);
}

/* End of the program: the exit status says whether all planned tests ran and passed. */
static inline int
done_testing(void)
{
    if (tap_n != tap_planned)
        diag("planned %d tests, ran %d", tap_planned, tap_n);
    return tap_failed == 0 && tap_n == tap_planned ? 0 : 1;
}

#endif

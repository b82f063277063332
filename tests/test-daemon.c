/* Tests of `mmsegd serve` under a fake systemd: READY=1, WATCHDOG=1, reload on SIGHUP with a
 * valid and an invalid configuration, STOPPING=1 and exit 0 on SIGTERM.
 * The notify socket is an AF_UNIX datagram socket this test owns (sd_notify(3)). */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/tap.h"

static char dir[] = "/tmp/test-daemon.XXXXXX";
static char sock_path[100], cfg_path[200], log_path[200];
static int sock_fd = -1;
static const char *mmsegd;

static long
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
}

/* Wait for a notify datagram containing want; other datagrams are consumed. */
static bool
wait_notify(const char *want, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    char buf[4096];

    for (;;) {
        struct pollfd p = {.fd = sock_fd, .events = POLLIN};
        long left = end - now_ms();
        ssize_t n;
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return false;
        n = recv(sock_fd, buf, sizeof buf - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        if (strstr(buf, want) != NULL)
            return true;
    }
}

/* Wait until the daemon's log contains want. */
static bool
wait_log(const char *want, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    static char buf[65536];

    do {
        int fd = open(log_path, O_RDONLY);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (fd >= 0)
            close(fd);
        buf[n > 0 ? n : 0] = '\0';
        if (strstr(buf, want) != NULL)
            return true;
        usleep(20000);
    } while (now_ms() < end);
    diag("log so far:\n%s", buf);
    return false;
}

static pid_t
start(bool under_systemd)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(127);
        unsetenv("WATCHDOG_PID");
        unsetenv("JOURNAL_STREAM");
        if (under_systemd) {
            setenv("NOTIFY_SOCKET", sock_path, 1);
            setenv("WATCHDOG_USEC", "200000", 1);
        } else {
            unsetenv("NOTIFY_SOCKET");
            unsetenv("WATCHDOG_USEC");
        }
        execl(mmsegd, "mmsegd", "serve", "-c", cfg_path, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Wait up to timeout_ms for pid to exit; returns its wait status or -1. */
static int
wait_exit(pid_t pid, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    int status;
    do {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        usleep(20000);
    } while (now_ms() < end);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

int
main(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char text[512];
    pid_t pid;
    int status;

    mmsegd = getenv("MMSEGD");
    if (mmsegd == NULL || access(mmsegd, X_OK) != 0)
        skip_all("MMSEGD does not name the built mmsegd (run through make check)");
    plan(16, 60);
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(sock_path, sizeof sock_path, "%s/notify", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/mmsegd.ini", dir);
    snprintf(log_path, sizeof log_path, "%s/log", dir);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    sock_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock_fd < 0 || bind(sock_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        printf("Bail out! cannot bind %s\n", sock_path);
        return 1;
    }

    snprintf(text, sizeof text, "[daemon]\nstate_dir = %s/state\nlog_level = info\n", dir);
    write_file(cfg_path, text);
    pid = start(true);
    ok(wait_notify("READY=1", 10000), "READY=1 after start");
    ok(wait_log("ready (pid", 2000), "the log says ready");
    {
        char state[300];
        struct stat st;
        snprintf(state, sizeof state, "%s/state", dir);
        ok(stat(state, &st) == 0 && S_ISDIR(st.st_mode), "state_dir was created");
    }
    ok(wait_notify("WATCHDOG=1", 2000), "WATCHDOG=1 with WATCHDOG_USEC set");
    {
        long t0 = now_ms();
        bool again = wait_notify("WATCHDOG=1", 2000);
        ok(again && now_ms() - t0 < 500, "WATCHDOG=1 repeats at half the interval (%ld ms)",
           now_ms() - t0);
    }

    /* A valid new configuration is applied. */
    snprintf(text, sizeof text, "[daemon]\nstate_dir = %s/state\nlog_level = debug\n", dir);
    write_file(cfg_path, text);
    kill(pid, SIGHUP);
    ok(wait_notify("RELOADING=1", 5000), "RELOADING=1 on SIGHUP");
    ok(wait_log("configuration reloaded from", 5000), "a valid configuration is applied");
    ok(wait_log("log_level debug", 100), "with its new log level");

    /* An invalid one is refused, the old one kept, the reason logged. */
    snprintf(text, sizeof text, "[daemon]\nstate_dir = %s/state\nlog_level = loud\n", dir);
    write_file(cfg_path, text);
    kill(pid, SIGHUP);
    ok(wait_log("keeping the running configuration", 5000), "an invalid configuration is refused");
    ok(wait_log("log_level: 'loud' is not one of", 100), "and the reason is logged with its line");
    ok(kill(pid, 0) == 0 && wait_notify("WATCHDOG=1", 2000), "the daemon keeps running");

    /* A key that needs a restart is reported, not silently applied. */
    snprintf(text, sizeof text, "[daemon]\nstate_dir = %s/other\nlog_level = info\n", dir);
    write_file(cfg_path, text);
    kill(pid, SIGHUP);
    ok(wait_log("[daemon] state_dir changed; it takes effect after a restart", 5000),
       "a change that needs a restart is reported");

    kill(pid, SIGTERM);
    ok(wait_notify("STOPPING=1", 5000), "STOPPING=1 on SIGTERM");
    status = wait_exit(pid, 5000);
    ok(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGTERM: exit 0");

    /* Outside systemd, notification is a no-op and the daemon runs just the same. */
    unlink(log_path);
    pid = start(false);
    ok(wait_log("ready (pid", 10000), "starts without NOTIFY_SOCKET");
    kill(pid, SIGINT);
    status = wait_exit(pid, 5000);
    ok(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "SIGINT: exit 0");

    close(sock_fd);
    unlink(sock_path);
    return done_testing();
}

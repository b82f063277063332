/* The daemon's loop: signals, configuration reload, systemd readiness and watchdog.
 * Threads: everything here runs on the loop thread. */
#include "daemon/serve.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>

#include "common/err.h"
#include "common/log.h"

struct daemon {
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;
    uv_timer_t watchdog;
    bool watchdog_on;
    struct mms_config *cfg;
};

/* sd_notify() is a no-op returning 0 outside systemd; a failure to reach systemd is worth a
 * warning but never stops the daemon. */
static void
notify(const char *state)
{
    int rc = sd_notify(0, state);
    if (rc < 0)
        mms_log(MMS_LOG_WARNING, "sd_notify(\"%s\") failed: %s", state, mms_strerror(rc));
}

static void
notify_status(const struct daemon *d, const char *what)
{
    char line[512];
    snprintf(line, sizeof line, "STATUS=%s; config %s; state %s", what, d->cfg->path,
             d->cfg->daemon.state_dir);
    notify(line);
}

/* Create the state directory if it does not exist yet and check that it is usable. Under
 * systemd, StateDirectory= has created it already. */
static int
prepare_state_dir(const char *dir)
{
    char *copy = strdup(dir);
    struct stat st;
    int rc = 0;

    if (copy == NULL)
        return MMS_ENOMEM;
    for (char *p = copy + 1;; p++) {
        char saved = *p;
        if (saved != '/' && saved != '\0')
            continue;
        *p = '\0';
        if (mkdir(copy, 0750) < 0 && errno != EEXIST) {
            rc = mms_err_errno();
            mms_log(MMS_LOG_ERR, "state_dir %s: mkdir(\"%s\") failed: %s", dir, copy,
                    mms_strerror(rc));
            goto out;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        rc = stat(dir, &st) < 0 ? mms_err_errno() : MMS_ENOTDIR;
        mms_log(MMS_LOG_ERR, "state_dir %s: %s", dir, mms_strerror(rc));
        goto out;
    }
    if (access(dir, R_OK | W_OK | X_OK) < 0) {
        rc = mms_err_errno();
        mms_log(MMS_LOG_ERR, "state_dir %s: access() failed: %s", dir, mms_strerror(rc));
    }
out:
    free(copy);
    return rc;
}

static void
on_watchdog(uv_timer_t *t)
{
    (void)t;
    notify("WATCHDOG=1");
}

static void
report_restart_key(const char *section, const char *key, void *ud)
{
    (void)ud;
    if (key[0] == '\0')
        mms_log(MMS_LOG_NOTICE, "reload: [%s] sections changed; they take effect after a restart",
                section);
    else
        mms_log(MMS_LOG_NOTICE, "reload: [%s] %s changed; it takes effect after a restart", section,
                key);
}

/* SIGHUP: build a complete new configuration; swap it in only if it loaded without error. */
static void
reload(struct daemon *d)
{
    struct mms_config *next = NULL;
    char err[4096];
    int rc;

    notify("RELOADING=1");
    rc = mms_config_load(d->cfg->path, &next, err, sizeof err);
    if (rc < 0) {
        /* err holds one line per problem; the log wants one event per line. */
        char *save = NULL;
        mms_log(MMS_LOG_ERR, "reload of %s failed (%s); keeping the running configuration",
                d->cfg->path, mms_strerror(rc));
        for (char *l = strtok_r(err, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save))
            mms_log(MMS_LOG_ERR, "reload: %s", l);
        notify_status(d, "ready (last reload failed, running configuration kept)");
        notify("READY=1");
        return;
    }
    mms_config_restart_keys(d->cfg, next, report_restart_key, NULL);
    /* A key that needs a restart keeps its old value until then: the new config is adopted
     * for the keys a running daemon can apply, which today is log_level. */
    mms_log_set_level(next->daemon.log_level);
    free(next->daemon.state_dir);
    next->daemon.state_dir = strdup(d->cfg->daemon.state_dir);
    if (next->daemon.state_dir == NULL) {
        mms_log(MMS_LOG_ERR, "reload: out of memory; keeping the running configuration");
        mms_config_free(next);
        notify("READY=1");
        return;
    }
    mms_config_free(d->cfg);
    d->cfg = next;
    mms_log(MMS_LOG_NOTICE, "configuration reloaded from %s (log_level %s)", d->cfg->path,
            mms_log_level_name(d->cfg->daemon.log_level));
    notify_status(d, "ready");
    notify("READY=1");
}

static void
on_close(uv_handle_t *h)
{
    (void)h;
}

static void
stop(struct daemon *d, const char *why)
{
    mms_log(MMS_LOG_NOTICE, "%s: stopping", why);
    notify("STOPPING=1");
    notify("STATUS=stopping");
    uv_close((uv_handle_t *)&d->sigterm, on_close);
    uv_close((uv_handle_t *)&d->sigint, on_close);
    uv_close((uv_handle_t *)&d->sighup, on_close);
    if (d->watchdog_on)
        uv_close((uv_handle_t *)&d->watchdog, on_close);
}

static void
on_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;

    switch (signum) {
    case SIGHUP:
        mms_log(MMS_LOG_INFO, "SIGHUP: reloading %s", d->cfg->path);
        reload(d);
        break;
    case SIGTERM:
        stop(d, "SIGTERM");
        break;
    case SIGINT:
        stop(d, "SIGINT");
        break;
    default:
        break;
    }
}

static int
start_signal(struct daemon *d, uv_signal_t *s, int signum)
{
    int rc = uv_signal_init(&d->loop, s);
    if (rc < 0) {
        mms_log(MMS_LOG_ERR, "uv_signal_init() failed: %s", uv_strerror(rc));
        return rc;
    }
    s->data = d;
    rc = uv_signal_start(s, on_signal, signum);
    if (rc < 0)
        mms_log(MMS_LOG_ERR, "uv_signal_start(%d) failed: %s", signum, uv_strerror(rc));
    return rc;
}

static void
close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, on_close);
}

int
mms_serve(struct mms_config *cfg)
{
    struct daemon d;
    uint64_t wd_usec = 0;
    int rc;

    memset(&d, 0, sizeof d);
    d.cfg = cfg;
    mms_log_set_level(cfg->daemon.log_level);

    rc = prepare_state_dir(cfg->daemon.state_dir);
    if (rc < 0) {
        mms_config_free(cfg);
        return rc;
    }
    rc = uv_loop_init(&d.loop);
    if (rc < 0) {
        mms_log(MMS_LOG_ERR, "uv_loop_init() failed: %s", uv_strerror(rc));
        mms_config_free(cfg);
        return MMS_EIO;
    }
    if (start_signal(&d, &d.sigterm, SIGTERM) < 0 || start_signal(&d, &d.sigint, SIGINT) < 0 ||
        start_signal(&d, &d.sighup, SIGHUP) < 0) {
        rc = MMS_EIO;
        goto fail;
    }

    /* WATCHDOG_USEC (and WATCHDOG_PID, when set, naming us) enable the watchdog; ping at half
     * the interval as sd_watchdog_enabled(3) recommends. */
    rc = sd_watchdog_enabled(0, &wd_usec);
    if (rc < 0)
        mms_log(MMS_LOG_WARNING, "ignoring invalid WATCHDOG_USEC: %s", mms_strerror(rc));
    if (rc > 0 && wd_usec > 0) {
        uint64_t period_ms = wd_usec / 2000;
        if (period_ms == 0)
            period_ms = 1;
        rc = uv_timer_init(&d.loop, &d.watchdog);
        if (rc == 0)
            rc = uv_timer_start(&d.watchdog, on_watchdog, 0, period_ms);
        if (rc < 0) {
            mms_log(MMS_LOG_ERR, "watchdog timer: %s", uv_strerror(rc));
            rc = MMS_EIO;
            goto fail;
        }
        d.watchdog_on = true;
        mms_log(MMS_LOG_INFO, "systemd watchdog every %" PRIu64 " ms", period_ms);
    }

    mms_log(MMS_LOG_NOTICE, "mmsegd %s ready (pid %ld, config %s, state %s)", PACKAGE_VERSION,
            (long)getpid(), d.cfg->path, d.cfg->daemon.state_dir);
    notify_status(&d, "ready");
    notify("READY=1");

    rc = uv_run(&d.loop, UV_RUN_DEFAULT);
    (void)rc;
    rc = uv_loop_close(&d.loop);
    if (rc < 0)
        mms_log(MMS_LOG_WARNING, "uv_loop_close(): %s", uv_strerror(rc));
    mms_log(MMS_LOG_NOTICE, "stopped");
    mms_config_free(d.cfg);
    return 0;

fail:
    uv_walk(&d.loop, close_any, NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    uv_loop_close(&d.loop);
    mms_config_free(d.cfg);
    return rc;
}

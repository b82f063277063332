/* The daemon's loop: signals, configuration reload, systemd readiness and watchdog.
 * Threads: everything here runs on the loop thread. */
#include "daemon/serve.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>

#include "common/clock.h"
#include "common/fs.h"
#include "common/err.h"
#include "common/log.h"
#include "daemon/index.h"
#include "daemon/intake.h"
#include "daemon/jobs.h"
#include "daemon/metrics.h"
#include "daemon/page.h"
#include "daemon/outbox.h"
#include "daemon/quarantine.h"
#include "daemon/scheduler.h"
#include "daemon/sender.h"
#include "daemon/sandbox.h"
#include "daemon/spool.h"
#include "daemon/web.h"
#include "dicom/scp.h"

struct daemon {
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;
    uv_timer_t watchdog;
    bool watchdog_on;
    struct mms_config *cfg;
    /* intake: the SCP's and the drop folder's threads store, the loop judges series */
    struct mms_index *ix;
    struct mms_spool *spool;
    struct mms_sched *sched;
    struct mms_scp *scp;
    struct mms_intake *intake;
    uv_async_t arrived; /* an instance was stored (any thread) */
    uv_timer_t tick;    /* the next series that can become complete */
    uv_timer_t qprune;  /* quarantine/ kept within its bounds */
    uv_timer_t beat;    /* the node's heartbeat: its row and leases in the index */
    uv_timer_t poll;    /* shared index: the queue other nodes fill, looked at every second */
    double started;
    bool intake_on;
    struct mms_sender *sender; /* the outbox to the destinations */
    struct mms_jobs *jobs;     /* queued series to results */
    struct mms_web *web;       /* metrics_listen: /metrics, the status page, /healthz */
    uint64_t received;         /* instances stored since the start (any thread: atomic) */
    /* DICOM TLS, when [scp] tls_* are set: our node's contexts for the SCP and the sender */
    struct mms_tls *tls_server, *tls_client;
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

static bool
tls_configured(const struct mms_config *c)
{
    return c->scp.tls_cert != NULL && c->scp.tls_cert[0] != '\0';
}

/* Load both TLS contexts from c's files (read again on every call: a certificate renewed in
 * place is the usual case). Returns 0 (both loaded) or the error, logged with its reason. */
static int
load_tls(const struct mms_config *c, const char *what, struct mms_tls **server,
         struct mms_tls **client)
{
    struct mms_tls_files f = {c->scp.tls_cert, c->scp.tls_key, c->scp.tls_ca};
    char why[1024], desc[512];
    int rc = mms_tls_load(MMS_TLS_SERVER, &f, server, why, sizeof why);
    if (rc == 0 && (rc = mms_tls_load(MMS_TLS_CLIENT, &f, client, why, sizeof why)) < 0) {
        mms_tls_unref(*server);
        *server = NULL;
    }
    if (rc < 0) {
        mms_log(MMS_LOG_ERR, "%sDICOM TLS: %s", what, why);
        return rc;
    }
    mms_tls_describe(*server, desc, sizeof desc);
    long long left = mms_tls_seconds_left(*server);
    mms_log(left < 30 * 86400 ? MMS_LOG_WARNING : MMS_LOG_NOTICE,
            "%sDICOM TLS certificate: %s (%lld days left)", what, desc, left / 86400);
    return 0;
}

/* SIGHUP: new TLS contexts in place when TLS stays on; turning it on or off needs a restart.
 * Returns 0, or an error when the new files cannot be loaded (nothing changed then). */
static int
reload_tls(struct daemon *d, const struct mms_config *next)
{
    bool was = d->tls_server != NULL, now = tls_configured(next);
    if (was != now) {
        mms_log(MMS_LOG_NOTICE, "reload: DICOM TLS turned %s; it takes effect after a restart",
                now ? "on" : "off");
        return 0;
    }
    if (!now)
        return 0;
    struct mms_tls *srv, *cli;
    int rc = load_tls(next, "reload: ", &srv, &cli);
    if (rc < 0)
        return rc;
    if (d->scp != NULL)
        mms_scp_set_tls(d->scp, srv);
    if (d->sender != NULL)
        mms_sender_set_tls(d->sender, cli);
    mms_tls_unref(d->tls_server);
    mms_tls_unref(d->tls_client);
    d->tls_server = srv;
    d->tls_client = cli;
    return 0;
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
    if (reload_tls(d, next) < 0) {
        mms_log(MMS_LOG_ERR, "reload of %s failed (DICOM TLS); keeping the running configuration",
                d->cfg->path);
        mms_config_free(next);
        notify_status(d, "ready (last reload failed, running configuration kept)");
        notify("READY=1");
        return;
    }
    mms_config_restart_keys(d->cfg, next, report_restart_key, NULL);
    /* A key that needs a restart keeps its old value until then: the new config is adopted
     * for the keys a running daemon can apply: log_level, the model file and the TLS files. */
    mms_log_set_level(next->daemon.log_level);
    mms_jobs_reload_model(d->jobs, next->infer.model);
    free(next->daemon.state_dir);
    next->daemon.state_dir = strdup(d->cfg->daemon.state_dir);
    if (next->daemon.state_dir == NULL) {
        mms_log(MMS_LOG_ERR, "reload: out of memory; keeping the running configuration");
        mms_config_free(next);
        notify("READY=1");
        return;
    }
    /* the node's place in a cluster stays until a restart */
    char *keep[3] = {next->daemon.database, next->daemon.node, next->daemon.roles};
    next->daemon.database = d->cfg->daemon.database;
    next->daemon.node = d->cfg->daemon.node;
    next->daemon.roles = d->cfg->daemon.roles;
    d->cfg->daemon.database = keep[0];
    d->cfg->daemon.node = keep[1];
    d->cfg->daemon.roles = keep[2];
    next->daemon.roles_mask = d->cfg->daemon.roles_mask;
    next->daemon.lease_s = d->cfg->daemon.lease_s;
    /* the sender borrows the running destinations: they stay until a restart */
    struct mms_dest_config *dests = next->dests;
    size_t n_dests = next->n_dests;
    next->dests = d->cfg->dests;
    next->n_dests = d->cfg->n_dests;
    d->cfg->dests = dests;
    d->cfg->n_dests = n_dests;
    mms_config_free(d->cfg);
    d->cfg = next;
    mms_log(MMS_LOG_NOTICE, "configuration reloaded from %s (log_level %s, model %s)", d->cfg->path,
            mms_log_level_name(d->cfg->daemon.log_level), d->cfg->infer.model);
    notify_status(d, "ready");
    notify("READY=1");
}

static void
on_close(uv_handle_t *h)
{
    (void)h;
}

static void stop_intake(struct daemon *d);

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
    mms_web_stop(d->web);
    d->web = NULL;
    mms_jobs_stop(d->jobs);
    d->jobs = NULL;
    mms_sender_stop(d->sender);
    d->sender = NULL;
    stop_intake(d);
    if (d->intake_on) {
        uv_close((uv_handle_t *)&d->arrived, on_close);
        uv_close((uv_handle_t *)&d->tick, on_close);
        uv_close((uv_handle_t *)&d->qprune, on_close);
        uv_close((uv_handle_t *)&d->beat, on_close);
        uv_close((uv_handle_t *)&d->poll, on_close);
        d->intake_on = false;
    }
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

static void judge(struct daemon *d);

static void
on_tick(uv_timer_t *t)
{
    judge(t->data);
}

static void
on_arrived(uv_async_t *a)
{
    judge(a->data);
}

/* Judge the series, then wake up when the next one can become complete by age. */
static void
judge(struct daemon *d)
{
    if (d->cfg->daemon.roles_mask & MMS_ROLE_INTAKE) {
        double next = mms_sched_tick(d->sched, mms_wall_s());
        if (next < 0.0) /* the index failed (logged): look again soon */
            next = 5.0;
        if (next > 60.0)
            next = 60.0;
        uv_timer_start(&d->tick, on_tick, (uint64_t)(next * 1000.0) + 1, 0);
    }
    mms_jobs_kick(d->jobs);
    /* the essentials of `mmsegd status` and the metrics, in one line for systemctl status */
    int64_t queued = 0, pending = 0, dead = 0;
    char line[320], why[256];
    const struct mms_engine *e = mms_jobs_engine(d->jobs);
    if (mms_index_queue_counts(d->ix, &queued, &pending, &dead, why, sizeof why) < 0)
        mms_log(MMS_LOG_ERR, "status: %s", why);
    snprintf(line, sizeof line,
             "STATUS=ready; model %s; %" PRId64 " series queued, %zu job%s running; sends %" PRId64
             " pending, %" PRId64 " dead",
             e != NULL ? mms_engine_card(e)->name : "none (see the log)", queued,
             mms_jobs_running(d->jobs), mms_jobs_running(d->jobs) == 1 ? "" : "s", pending, dead);
    notify(line);
}

/* The heartbeat, every lease_s / 3: this node's row and the leases of its jobs and sends
 * renewed; on a shared index, the jobs of nodes that stopped renewing theirs taken over, and
 * the queue and the sends looked at (other nodes fill them). */
static void
on_beat(uv_timer_t *t)
{
    struct daemon *d = t->data;
    const struct mms_config *c = d->cfg;
    struct mms_node_row n = {.pid = (int64_t)getpid(), .started = d->started};
    snprintf(n.name, sizeof n.name, "%s", c->daemon.node);
    snprintf(n.roles, sizeof n.roles, "%s", c->daemon.roles);
    char why[512];
    double now = mms_wall_s();
    if (mms_index_node_beat(d->ix, &n, now, c->daemon.lease_s, why, sizeof why) < 0)
        mms_log(MMS_LOG_ERR, "heartbeat: %s", why);
    if (!mms_index_shared(d->ix))
        return;
    mms_jobs_take_over(d->ix, c->daemon.node, now);
    judge(d);
    mms_sender_kick(d->sender);
}

/* A node of a cluster hears of the series other nodes queue by looking: one indexed query a
 * second while a job thread is free (mms_jobs_kick claims only then). */
static void
on_poll(uv_timer_t *t)
{
    struct daemon *d = t->data;
    mms_jobs_kick(d->jobs);
}

/* A stored instance, on the SCP's or the drop folder's thread: wake the loop. */
static void
on_stored(void *ud, const char *series_uid)
{
    struct daemon *d = ud;
    (void)series_uid;
    __atomic_add_fetch(&d->received, 1, __ATOMIC_RELAXED);
    uv_async_send(&d->arrived);
}

/* quarantine/ within [daemon] quarantine_max_mb and quarantine_max_days, oldest items
 * first: at start and every QUARANTINE_PRUNE_S seconds. */
#define QUARANTINE_PRUNE_S 600

static void
on_qprune(uv_timer_t *t)
{
    struct daemon *d = t->data;
    const struct mms_config *c = d->cfg;
    int removed;
    int64_t freed;
    char why[1024];
    int rc = mms_quarantine_prune(
        mms_spool_quarantine_dir(d->spool), (int64_t)c->daemon.quarantine_max_mb << 20,
        c->daemon.quarantine_max_days * 86400.0, mms_wall_s(), &removed, &freed, why, sizeof why);
    if (rc < 0)
        mms_log(MMS_LOG_WARNING, "quarantine: %s", why);
    if (removed > 0)
        mms_log(MMS_LOG_NOTICE,
                "quarantine: removed the %d oldest item%s (%" PRId64
                " bytes), over quarantine_max_mb %u or quarantine_max_days %u",
                removed, removed == 1 ? "" : "s", freed, c->daemon.quarantine_max_mb,
                c->daemon.quarantine_max_days);
}

/* One C-STORE, on an association thread: the durable path, then the status to answer. */
static uint16_t
on_store(void *ctx, const struct mms_scp_store *st)
{
    struct daemon *d = ctx;
    char source[160], why[1024];
    struct mms_ingest res;
    snprintf(source, sizeof source, "%s@%s", st->calling_ae, st->peer);
    int rc = mms_spool_ingest(d->spool, st->path, source, false, &res, why, sizeof why);
    if (rc == 0) {
        mms_log(MMS_LOG_DEBUG, "C-STORE from %s: %s instance %s of series %s", source,
                res.put == MMS_PUT_NEW        ? "new"
                : res.put == MMS_PUT_REPLACED ? "replaced"
                                              : "duplicate",
                res.sop_instance, res.series_uid);
        return 0x0000;
    }
    if (rc == MMS_EDICOM) { /* the content: sending it again does not help */
        mms_log(MMS_LOG_WARNING, "C-STORE from %s refused: %s", source, why);
        snprintf(st->comment, st->comment_len, "%s", why);
        return res.bad_identity ? 0xA900 : 0xC000;
    }
    mms_log(MMS_LOG_ERR, "C-STORE from %s not stored (0xA700, out of resources): %s", source, why);
    return 0xA700;
}

/* The index, the spool, the scheduler (with the queue of the last run), the Store SCP and
 * the drop folder. On failure the caller stops what was started with stop_intake(). */
static int
start_intake(struct daemon *d)
{
    const struct mms_config *c = d->cfg;
    char path[4200], node_dir[4200], why[1024];
    int rc;
    bool shared = mms_config_database(c, path, sizeof path);
    if ((rc = mms_index_connect(path, false, &d->ix, why, sizeof why)) < 0) {
        mms_log(MMS_LOG_ERR, "%s: %s", shared ? "database" : path, why);
        return rc;
    }
    if (shared)
        mms_log(MMS_LOG_NOTICE, "node %s (%s) of a cluster on PostgreSQL, lease %u s",
                c->daemon.node, c->daemon.roles, c->daemon.lease_s);
    mms_config_node_dir(c, node_dir, sizeof node_dir);
    snprintf(path, sizeof path, "%s/nodes", c->daemon.state_dir);
    if (shared && (((rc = mms_fs_mkdir(path)) < 0 && rc != MMS_EEXIST) ||
                   ((rc = mms_fs_mkdir(node_dir)) < 0 && rc != MMS_EEXIST))) {
        mms_log(MMS_LOG_ERR, "%s: %s", node_dir, mms_strerror(rc));
        return rc;
    }
    if ((rc = mms_spool_open(c->daemon.state_dir, node_dir, d->ix, on_stored, d, &d->spool, why,
                             sizeof why)) < 0) {
        mms_log(MMS_LOG_ERR, "spool: %s", why);
        return rc;
    }
    mms_sandbox_set_enabled(c->daemon.isolate);
    mms_spool_set_limits(d->spool, (size_t)c->daemon.decode_max_memory_mb << 20,
                         c->daemon.decode_timeout_s < 60 ? c->daemon.decode_timeout_s : 60);
    if (!c->daemon.isolate)
        mms_log(MMS_LOG_WARNING, "isolate = no: headers and decoding run inside the daemon");
    else if (strcmp(mms_sandbox_filter_name(), "seccomp") != 0)
        mms_log(MMS_LOG_NOTICE, "isolation: child processes with limits, without a system call "
                                "filter in this build (sanitizers)");
    struct mms_sched_opts so = {
        .stable_age_s = c->series.stable_age_s,
        .min_slices = c->series.min_slices,
        .body_parts = c->series.body_parts,
        .description_include = c->series.description_include,
        .description_exclude = c->series.description_exclude,
        .max_slice_thickness_mm = c->series.max_slice_thickness_mm,
    };
    if ((rc = mms_sched_new(d->ix, &so, &d->sched, why, sizeof why)) < 0) {
        mms_log(MMS_LOG_ERR, "%s", why);
        return rc;
    }
    if ((rc = mms_jobs_recover(d->ix, node_dir, c->daemon.node, mms_wall_s())) < 0 ||
        (rc = mms_sched_recover(d->sched, mms_wall_s())) < 0)
        return rc;
    /* what a stop left in outbox/ with nothing pending; no job or send runs yet */
    int swept = 0;
    if (mms_outbox_sweep(c->daemon.state_dir, d->ix, &swept, why, sizeof why) < 0)
        mms_log(MMS_LOG_WARNING, "outbox: %s", why); /* only room is lost; go on */
    else if (swept > 0)
        mms_log(MMS_LOG_NOTICE, "outbox: removed %d folder%s with no pending send", swept,
                swept == 1 ? "" : "s");
    if ((rc = uv_async_init(&d->loop, &d->arrived, on_arrived)) < 0 ||
        (rc = uv_timer_init(&d->loop, &d->tick)) < 0 ||
        (rc = uv_timer_init(&d->loop, &d->qprune)) < 0 ||
        (rc = uv_timer_init(&d->loop, &d->beat)) < 0 ||
        (rc = uv_timer_init(&d->loop, &d->poll)) < 0) {
        mms_log(MMS_LOG_ERR, "intake handles: %s", uv_strerror(rc));
        return MMS_EIO;
    }
    d->arrived.data = d;
    d->tick.data = d;
    d->qprune.data = d;
    d->beat.data = d;
    d->poll.data = d;
    d->intake_on = true;
    d->started = mms_wall_s();
    uint64_t beat_ms = c->daemon.lease_s * 1000 / 3;
    uv_timer_start(&d->beat, on_beat, 0, beat_ms);
    if (shared)
        uv_timer_start(&d->poll, on_poll, 1000, 1000);
    if (!(c->daemon.roles_mask & MMS_ROLE_INTAKE))
        return 0; /* neither Store SCP nor drop folder on this node */
    on_qprune(&d->qprune);
    uv_timer_start(&d->qprune, on_qprune, QUARANTINE_PRUNE_S * 1000, QUARANTINE_PRUNE_S * 1000);
    judge(d);

    /* deny by default (design.md section 9): say what the lists let in */
    char hosts[512], aes[512];
    mms_config_policy(c, hosts, sizeof hosts, aes, sizeof aes);
    bool open_h = strncmp(hosts, "any ", 4) == 0, open_a = strncmp(aes, "any ", 4) == 0;
    bool shut = strncmp(hosts, "none ", 5) == 0 || strncmp(aes, "none ", 5) == 0;
    mms_log(open_h || open_a ? MMS_LOG_WARNING
            : shut           ? MMS_LOG_NOTICE
                             : MMS_LOG_INFO,
            "Store SCP policy: allowed_hosts: %s; allowed_calling_aes: %s", hosts, aes);
    const uint64_t min_free = (uint64_t)c->scp.min_free_mb << 20;
    struct mms_scp_opts sc = {
        .ae_title = c->scp.ae_title,
        .bind = c->scp.bind,
        .port = c->scp.port,
        .allowed_calling_aes = c->scp.allowed_calling_aes,
        .allowed_hosts = c->scp.allowed_hosts,
        .max_associations = c->scp.max_associations,
        .max_associations_per_host = c->scp.max_associations_per_host,
        .assoc_timeout_s = c->scp.assoc_timeout_s,
        .max_pdu = c->scp.max_pdu,
        .timeout_s = c->scp.timeout_s,
        .tmp_dir = mms_spool_tmp_dir(d->spool),
        .space_dir = c->daemon.state_dir,
        .min_free_bytes = min_free,
        .accept_all = c->scp.accept_sop_classes == MMS_ACCEPT_ALL,
        .on_store = on_store,
        .ctx = d,
        .tls = d->tls_server,
    };
    if ((rc = mms_scp_start(&sc, &d->scp, why, sizeof why)) < 0) {
        mms_log(MMS_LOG_ERR, "Store SCP: %s", why);
        return rc;
    }
    mms_log(MMS_LOG_NOTICE, "Store SCP %s listening on %s port %u%s", c->scp.ae_title, c->scp.bind,
            mms_scp_port(d->scp), d->tls_server != NULL ? " (DICOM TLS)" : "");
    if (c->drop.dir != NULL && c->drop.dir[0] != '\0') {
        struct mms_intake_opts io = {.dir = c->drop.dir,
                                     .stable_s = c->drop.stable_s,
                                     .scan_s = c->drop.scan_s,
                                     .min_free_bytes = min_free};
        if ((rc = mms_intake_start(&io, d->spool, &d->intake, why, sizeof why)) < 0) {
            mms_log(MMS_LOG_ERR, "%s", why);
            return rc;
        }
    }
    return 0;
}

/* Stop taking instances: the SCP (running associations end first) and the drop folder
 * thread, then the rest. The loop handles are closed with the others. */
static void
stop_intake(struct daemon *d)
{
    mms_scp_stop(d->scp);
    d->scp = NULL;
    mms_intake_stop(d->intake);
    d->intake = NULL;
    mms_sched_free(d->sched);
    d->sched = NULL;
    mms_spool_close(d->spool);
    d->spool = NULL;
    mms_index_close(d->ix);
    d->ix = NULL;
}

/* ---------------------------------------------------------------------------- metrics */

#define N_STAGES 7

struct scrape {
    double now, oldest_queued, oldest_receiving, oldest_pending;
    int64_t jobs[MMS_JOB_STATE_N];
    struct mms_hist stage[N_STAGES];
};

static int
scrape_series(void *ud, const struct mms_series_row *s)
{
    struct scrape *sc = ud;
    if (s->state == MMS_SERIES_QUEUED && sc->now - s->state_since > sc->oldest_queued)
        sc->oldest_queued = sc->now - s->state_since;
    if (s->state == MMS_SERIES_RECEIVING && sc->now - s->first_received > sc->oldest_receiving)
        sc->oldest_receiving = sc->now - s->first_received;
    return 0;
}

static int
scrape_job(void *ud, const struct mms_job_row *j)
{
    struct scrape *sc = ud;
    if (j->state >= 0 && j->state < MMS_JOB_STATE_N)
        sc->jobs[j->state]++;
    if (j->state != MMS_JOB_DONE)
        return 0;
    const double v[N_STAGES] = {j->decode_s, j->wait_s,  j->preprocess_s, j->network_s,
                                j->export_s, j->write_s, j->total_s};
    for (int i = 0; i < N_STAGES; i++)
        mms_hist_observe(&sc->stage[i], v[i]);
    return 0;
}

static int
scrape_send(void *ud, const struct mms_send_row *r)
{
    struct scrape *sc = ud;
    if (sc->now - r->queued > sc->oldest_pending)
        sc->oldest_pending = sc->now - r->queued;
    return 0;
}

/* One metric's HELP and TYPE lines. */
static void
help(FILE *f, const char *name, const char *type, const char *text)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* One line per node for the metric of pass (0: info, 1: heartbeat age, 2: jobs, 3: sends).
 * Node names are our own text (check-config allows letters, digits, '.', '_', '-'). */
struct nodes {
    FILE *f;
    const char *self;
    double now;
    int pass;
};

static int
scrape_node(void *ud, const struct mms_node_row *n)
{
    struct nodes *nd = ud;
    FILE *f = nd->f;
    switch (nd->pass) {
    case 0:
        fprintf(f, "mmsegd_node_info{node=\"%s\",roles=\"%s\"} %d\n", n->name, n->roles,
                strcmp(n->name, nd->self) == 0);
        break;
    case 1:
        fprintf(f, "mmsegd_node_heartbeat_age_seconds{node=\"%s\"} %.3f\n", n->name,
                nd->now - n->heartbeat);
        break;
    case 2:
        fprintf(f, "mmsegd_node_jobs_running{node=\"%s\"} %" PRId64 "\n", n->name, n->jobs);
        break;
    default:
        fprintf(f, "mmsegd_node_sends_claimed{node=\"%s\"} %" PRId64 "\n", n->name, n->sends);
        break;
    }
    return 0;
}

/* The figures of design.md section 10, from the index (the rows `mmsegd status` reads) and
 * the running daemon. Only our own text goes into label values. */
static void
fill_metrics(void *ud, FILE *f)
{
    struct daemon *d = ud;
    struct scrape sc = {.now = mms_wall_s()};
    int64_t instances = 0, series[MMS_SERIES_SKIPPED + 1] = {0}, sends[MMS_SEND_DEAD + 1] = {0};
    char why[512];
    bool ok = mms_index_counts(d->ix, &instances, series, why, sizeof why) == 0 &&
              mms_index_send_counts(d->ix, sends, why, sizeof why) == 0 &&
              mms_index_series(d->ix, scrape_series, &sc, why, sizeof why) == 0 &&
              mms_index_jobs(d->ix, -1, scrape_job, &sc, why, sizeof why) == 0 &&
              mms_index_sends(d->ix, MMS_SEND_PENDING, -1, scrape_send, &sc, why, sizeof why) == 0;
    if (!ok)
        mms_log(MMS_LOG_ERR, "metrics: %s", why);
    help(f, "mmsegd_index_ok", "gauge", "1 when the state database was read for these figures.");
    fprintf(f, "mmsegd_index_ok %d\n", ok ? 1 : 0);
    help(f, "mmsegd_instances_received_total", "counter", "Instances stored since the start.");
    fprintf(f, "mmsegd_instances_received_total %" PRIu64 "\n",
            __atomic_load_n(&d->received, __ATOMIC_RELAXED));
    help(f, "mmsegd_associations_refused_total", "counter",
         "Associations and connections the Store SCP refused or closed since the start, by "
         "reason.");
    for (int i = 0; i < MMS_SCP_REFUSED_N; i++)
        fprintf(f, "mmsegd_associations_refused_total{reason=\"%s\"} %" PRIu64 "\n",
                mms_scp_refusal_name((enum mms_scp_refusal)i),
                mms_scp_refused(d->scp, (enum mms_scp_refusal)i));
    if (d->tls_server != NULL) {
        help(f, "mmsegd_tls_certificate_expiry_seconds", "gauge",
             "Seconds until our DICOM TLS certificate expires (negative once it has).");
        fprintf(f, "mmsegd_tls_certificate_expiry_seconds %lld\n",
                mms_tls_seconds_left(d->tls_server));
    }
    help(f, "mmsegd_instances", "gauge", "Instances in the index.");
    fprintf(f, "mmsegd_instances %" PRId64 "\n", instances);
    help(f, "mmsegd_series", "gauge", "Series by state.");
    for (int i = 0; i <= MMS_SERIES_SKIPPED; i++)
        fprintf(f, "mmsegd_series{state=\"%s\"} %" PRId64 "\n", mms_series_state_name(i),
                series[i]);
    help(f, "mmsegd_queue_length", "gauge", "Series waiting for a job.");
    fprintf(f, "mmsegd_queue_length %" PRId64 "\n", series[MMS_SERIES_QUEUED]);
    help(f, "mmsegd_oldest_queued_seconds", "gauge", "Age of the longest waiting queued series.");
    fprintf(f, "mmsegd_oldest_queued_seconds %.3f\n", sc.oldest_queued);
    help(f, "mmsegd_oldest_receiving_seconds", "gauge",
         "Age of the oldest series still receiving.");
    fprintf(f, "mmsegd_oldest_receiving_seconds %.3f\n", sc.oldest_receiving);
    help(f, "mmsegd_jobs_running", "gauge", "Jobs running now.");
    fprintf(f, "mmsegd_jobs_running %zu\n", mms_jobs_running(d->jobs));
    help(f, "mmsegd_jobs", "gauge", "Jobs in the index by state.");
    for (int i = 0; i < MMS_JOB_STATE_N; i++)
        fprintf(f, "mmsegd_jobs{state=\"%s\"} %" PRId64 "\n", mms_job_state_name(i), sc.jobs[i]);
    help(f, "mmsegd_job_stage_seconds", "histogram",
         "Stage durations of the jobs done (wait: for the engine; output: SEG).");
    static const char *const stages[N_STAGES] = {"decode", "wait",   "preprocess", "network",
                                                 "export", "output", "total"};
    for (int i = 0; i < N_STAGES; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "stage=\"%s\"", stages[i]);
        mms_hist_print(f, "mmsegd_job_stage_seconds", labels, &sc.stage[i]);
    }
    help(f, "mmsegd_sends", "gauge", "Sends by state; dead ones are the dead letters.");
    for (int i = 0; i <= MMS_SEND_DEAD; i++)
        fprintf(f, "mmsegd_sends{state=\"%s\"} %" PRId64 "\n", mms_send_state_name(i), sends[i]);
    help(f, "mmsegd_oldest_pending_send_seconds", "gauge",
         "Age of the oldest send not delivered yet.");
    fprintf(f, "mmsegd_oldest_pending_send_seconds %.3f\n", sc.oldest_pending);
    help(f, "mmsegd_node_info", "gauge",
         "The nodes using the index (1 for this one): their heartbeats, running jobs and claimed "
         "sends follow.");
    struct nodes nd = {f, d->cfg->daemon.node, sc.now, 0};
    if (mms_index_nodes(d->ix, scrape_node, &nd, why, sizeof why) < 0)
        mms_log(MMS_LOG_ERR, "metrics: %s", why);
    for (int k = 1; k <= 3; k++) {
        static const char *const what[4][2] = {
            {"", ""},
            {"mmsegd_node_heartbeat_age_seconds", "Seconds since each node's last heartbeat."},
            {"mmsegd_node_jobs_running", "Running jobs each node holds a lease on."},
            {"mmsegd_node_sends_claimed", "Sends each node is attempting."}};
        help(f, what[k][0], "gauge", what[k][1]);
        nd.pass = k;
        mms_index_nodes(d->ix, scrape_node, &nd, why, sizeof why);
    }
    help(f, "mmsegd_model_info", "gauge", "The model and backend in use (1), or none (0).");
    const struct mms_engine *e = mms_jobs_engine(d->jobs);
    if (e != NULL) {
        const struct mms_card *card = mms_engine_card(e);
        fputs("mmsegd_model_info{name=\"", f);
        mms_metrics_label_value(f, card->name);
        fputs("\",version=\"", f);
        mms_metrics_label_value(f, card->version);
        fprintf(f, "\",sha256=\"%s\",backend=\"%s\"} 1\n", e->sha256, mms_backend_name(e->be));
    } else {
        fprintf(f, "mmsegd_model_info{name=\"\",version=\"\",sha256=\"\",backend=\"\"} 0\n");
    }
    char names[MMS_MAX_ENGINES][32];
    int64_t runs[MMS_MAX_ENGINES];
    int n;
    mms_jobs_engines(d->jobs, names, runs, &n);
    help(f, "mmsegd_engine_jobs_total", "counter",
         "Pipelines run on each engine ([infer] device) since the model was loaded.");
    for (int i = 0; i < n; i++)
        fprintf(f, "mmsegd_engine_jobs_total{engine=\"%d\",backend=\"%s\"} %" PRId64 "\n", i + 1,
                names[i], runs[i]);
    int64_t by[2];
    mms_jobs_backend_counts(d->jobs, by);
    help(f, "mmsegd_backend_jobs_total", "counter",
         "Sliding windows finished by backend since the start (cpu includes the jobs a GPU "
         "engine gave to the CPU).");
    fprintf(f, "mmsegd_backend_jobs_total{backend=\"cpu\"} %" PRId64 "\n", by[0]);
    fprintf(f, "mmsegd_backend_jobs_total{backend=\"cuda\"} %" PRId64 "\n", by[1]);
    int dev[MMS_MAX_ENGINES];
    size_t used[MMS_MAX_ENGINES], total[MMS_MAX_ENGINES];
    int ng = mms_jobs_gpu_memory(d->jobs, dev, used, total);
    help(f, "mmsegd_gpu_memory_bytes", "gauge", "Memory in use on each GPU of the engines, now.");
    for (int i = 0; i < ng; i++)
        fprintf(f, "mmsegd_gpu_memory_bytes{device=\"%d\"} %zu\n", dev[i], used[i]);
    help(f, "mmsegd_gpu_memory_total_bytes", "gauge", "Memory of each GPU of the engines.");
    for (int i = 0; i < ng; i++)
        fprintf(f, "mmsegd_gpu_memory_total_bytes{device=\"%d\"} %zu\n", dev[i], total[i]);
}

/* ---------------------------------------------------------------------------- HTTP */

static void
page_facts(const struct daemon *d, struct mms_page_facts *f)
{
    memset(f, 0, sizeof *f);
    f->cfg = d->cfg;
    f->started = d->started;
    const struct mms_engine *e = mms_jobs_engine(d->jobs);
    if (e != NULL) {
        const struct mms_card *card = mms_engine_card(e);
        f->model_name = card->name;
        f->model_version = card->version;
        f->model_sha256 = e->sha256;
        f->backend = mms_backend_name(e->be);
    }
}

/* /healthz: 200 when the loop (it answers), the index and the model are fine, 503 with the
 * reason otherwise. The model: loaded (a node that runs jobs), and its files still readable,
 * since a reload or a restart would need them. */
static void
health(struct daemon *d, struct mms_web_reply *r)
{
    char why[512], text[6144];
    int64_t instances, series[MMS_SERIES_SKIPPED + 1];
    bool ok = true;
    int n = snprintf(text, sizeof text, "loop: ok\n");
    if (mms_index_counts(d->ix, &instances, series, why, sizeof why) < 0) {
        ok = false;
        n += snprintf(text + n, sizeof text - (size_t)n, "index: %s\n", why);
    } else {
        n += snprintf(text + n, sizeof text - (size_t)n, "index: ok\n");
    }
    const struct mms_config *c = d->cfg;
    if (!(c->daemon.roles_mask & MMS_ROLE_INFER)) {
        n += snprintf(text + n, sizeof text - (size_t)n, "model: none needed (roles = %s)\n",
                      c->daemon.roles);
    } else if (mms_jobs_engine(d->jobs) == NULL) {
        ok = false;
        n += snprintf(text + n, sizeof text - (size_t)n, "model: not loaded (see the log)\n");
    } else {
        /* the files of the running model, as the engine opened them */
        char list[sizeof mms_jobs_engine(d->jobs)->model_path], *files[MMS_MAX_MODELS];
        int k = mms_work_model_files(mms_jobs_engine(d->jobs)->model_path, list, sizeof list, files,
                                     why, sizeof why);
        const char *bad = NULL;
        int err = 0;
        for (int i = 0; bad == NULL && i < k; i++) {
            struct stat st;
            if (stat(files[i], &st) < 0 || access(files[i], R_OK) < 0)
                err = mms_err_errno();
            else if (!S_ISREG(st.st_mode))
                err = MMS_EINVAL;
            if (err < 0)
                bad = files[i];
        }
        if (k < 0) {
            ok = false;
            n += snprintf(text + n, sizeof text - (size_t)n, "model: %s\n", why);
        } else if (bad != NULL) {
            ok = false;
            n += snprintf(text + n, sizeof text - (size_t)n, "model: %s: %s\n", bad,
                          err == MMS_EINVAL ? "not a regular file" : mms_strerror(err));
        } else {
            n += snprintf(text + n, sizeof text - (size_t)n, "model: ok\n");
        }
    }
    char body[6200];
    snprintf(body, sizeof body, "%s\n%s", ok ? "ok" : "unhealthy", text);
    mms_web_text(r, ok ? 200 : 503, body);
}

static void
preview(struct daemon *d, int64_t job, struct mms_web_reply *r)
{
    struct mms_page_facts f;
    char path[4400];
    page_facts(d, &f);
    if (mms_page_preview_path(d->ix, &f, job, path, sizeof path) < 0) {
        mms_web_text(r, 404, "mmsegd: no preview for this job\n");
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        mms_web_text(r, 404, "mmsegd: no preview for this job\n");
        return;
    }
    r->status = 200;
    r->type = "image/png";
    r->fd = fd;
    r->fd_size = (uint64_t)st.st_size;
}

/* Every GET of the HTTP side, on the loop. */
static void
on_http(void *ud, const char *path, struct mms_web_reply *r)
{
    struct daemon *d = ud;
    char why[512];
    int64_t job;
    if (strcmp(path, "/metrics") == 0) {
        FILE *f = open_memstream(&r->body, &r->body_len);
        if (f == NULL) {
            mms_web_text(r, 500, "out of memory\n");
            return;
        }
        fill_metrics(d, f);
        bool bad = ferror(f) != 0;
        fclose(f);
        if (bad || r->body == NULL) {
            mms_web_text(r, 500, "out of memory\n");
            return;
        }
        r->status = 200;
        r->type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(path, "/") == 0) {
        struct mms_page_facts f;
        page_facts(d, &f);
        int rc = mms_page_status(d->ix, &f, &r->body, &r->body_len, why, sizeof why);
        if (rc < 0)
            mms_log(MMS_LOG_ERR, "status page: %s", why);
        if (r->body == NULL) {
            mms_web_text(r, 500, "out of memory\n");
            return;
        }
        r->status = rc < 0 ? 503 : 200;
        r->type = "text/html; charset=utf-8";
    } else if (strcmp(path, "/healthz") == 0) {
        health(d, r);
    } else if ((job = mms_page_preview_job(path)) >= 0) {
        preview(d, job, r);
    } else {
        mms_web_text(r, 404,
                     "mmsegd: not found; the status page is at /, the metrics at /metrics, the "
                     "health at /healthz\n");
    }
}

static int
start_web(struct daemon *d)
{
    const char *listen = d->cfg->daemon.metrics_listen;
    char why[512];
    if (listen == NULL || listen[0] == '\0')
        return 0;
    int rc = mms_web_start(&d->loop, listen, on_http, d, &d->web, why, sizeof why);
    if (rc < 0)
        mms_log(MMS_LOG_ERR, "%s", why);
    else
        mms_log(MMS_LOG_NOTICE, "HTTP on %s, port %u: the status page at /, /metrics, /healthz",
                listen, mms_web_port(d->web));
    return rc;
}

/* The sender, over the index start_intake() opened. Its destinations are those of the
 * configuration it starts with: changing them needs a restart. */
static int
start_sender(struct daemon *d)
{
    const struct mms_config *c = d->cfg;
    char why[1024];
    struct mms_sender_opts so = {
        .state_dir = c->daemon.state_dir,
        .node = c->daemon.node,
        .lease_s = c->daemon.lease_s,
        .idle = !(c->daemon.roles_mask & MMS_ROLE_SEND),
        .dests = c->dests,
        .n_dests = c->n_dests,
        .timeout_s = c->scp.timeout_s,
        .max_pdu = c->scp.max_pdu,
        .tls = d->tls_client,
    };
    int rc = mms_sender_start(&d->loop, d->ix, &so, &d->sender, why, sizeof why);
    if (rc < 0)
        mms_log(MMS_LOG_ERR, "%s", why);
    else if (c->n_dests == 0)
        mms_log(MMS_LOG_WARNING, "no [destination] is configured: results stay in the outbox");
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

    if (tls_configured(cfg) && (rc = load_tls(cfg, "", &d.tls_server, &d.tls_client)) < 0)
        goto fail;
    if ((rc = start_intake(&d)) < 0 || (rc = start_sender(&d)) < 0)
        goto fail;
    char why[1024];
    if ((rc = mms_jobs_start(&d.loop, d.ix, d.sender, d.cfg, &d.jobs, why, sizeof why)) < 0) {
        mms_log(MMS_LOG_ERR, "%s", why);
        goto fail;
    }
    if ((rc = start_web(&d)) < 0)
        goto fail;

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
    mms_tls_unref(d.tls_server);
    mms_tls_unref(d.tls_client);
    mms_config_free(d.cfg);
    return 0;

fail:
    mms_web_stop(d.web);
    mms_jobs_stop(d.jobs);
    mms_sender_stop(d.sender);
    stop_intake(&d);
    uv_walk(&d.loop, close_any, NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    uv_loop_close(&d.loop);
    mms_tls_unref(d.tls_server);
    mms_tls_unref(d.tls_client);
    mms_config_free(d.cfg);
    return rc;
}

/* daemon: `mmsegd status`, the series of the state database as a table or JSON.
 * Threads: the main thread of the command. */
#include "daemon/status.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/text.h"
#include "daemon/index.h"
#include "daemon/quarantine.h"

#define N_STATES (MMS_SERIES_SKIPPED + 1)

/* Column widths of the table, in characters. */
#define W_STATE 9
#define W_AGE 7
#define W_INSTANCES 6
#define W_MODALITY 4
#define W_DESCRIPTION 24
#define W_REASON 36

#define N_SEND_STATES (MMS_SEND_DEAD + 1)
#define N_JOB_STATES (MMS_JOB_STATE_N)
#define RECENT_JOBS 10
#define W_JOB 6
#define W_DEST 12
#define W_NEXT 7
#define QUARANTINE_SHOWN 5 /* newest items listed */
#define W_SIZE 10

struct walk {
    bool json;
    const char *node; /* only this node's jobs, sends and row; NULL: all */
    cJSON *nodes;     /* json: the array */
    int64_t n_nodes;
    double now;
    FILE *out;     /* text: the table so far */
    cJSON *series; /* json: the array */
    cJSON *sends;  /* json: the array */
    bool no_memory;
    int64_t n_series, instances, counts[N_STATES];
    int64_t n_sends_shown, send_counts[N_SEND_STATES];
    cJSON *jobs; /* json: the array */
    int64_t n_jobs, job_counts[MMS_JOB_STATE_N];
    struct mms_job_row recent[RECENT_JOBS]; /* text: the last jobs, a ring */
};

/* ---------------------------------------------------------------------------- text */

/* Print text in a column of width characters: control characters and invalid bytes as '?',
 * cut with "..." when longer, padded with spaces unless last. */
static void
cell(FILE *f, const char *text, int width, bool last)
{
    const unsigned char *s = (const unsigned char *)text;
    int chars = 0, len;
    for (const unsigned char *p = s; *p != '\0'; p += len, chars++)
        mms_utf8_next(p, &len);
    bool cut = width > 0 && chars > width;
    int shown = 0;
    for (const unsigned char *p = s; *p != '\0' && (!cut || shown < width - 3); p += len) {
        int32_t cp = mms_utf8_next(p, &len);
        if (cp < 0 || mms_is_control(cp))
            fputc('?', f);
        else
            fwrite(p, 1, (size_t)len, f);
        shown++;
    }
    if (cut) {
        fputs("...", f);
        shown += 3;
    }
    if (!last)
        fprintf(f, "%*s", width - shown + 2, "");
}

static void
print_header(FILE *f)
{
    fprintf(f, "%-*s  %-*s  %*s  %-*s  %-*s  %-*s  %s\n", W_STATE, "STATE", W_AGE, "LAST",
            W_INSTANCES, "INST", W_MODALITY, "MOD", W_DESCRIPTION, "DESCRIPTION", W_REASON,
            "REASON", "SERIES UID");
}

static void
print_row(FILE *f, const struct mms_series_row *s, double now)
{
    const char *state = mms_series_state_name(s->state);
    char age[32];
    mms_format_age(now - s->last_received, age, sizeof age);
    fprintf(f, "%-*s  %-*s  %*lld  ", W_STATE, state != NULL ? state : "?", W_AGE, age, W_INSTANCES,
            (long long)s->instances);
    cell(f, s->modality[0] != '\0' ? s->modality : "-", W_MODALITY, false);
    cell(f, s->series_description[0] != '\0' ? s->series_description : "-", W_DESCRIPTION, false);
    cell(f, s->reason[0] != '\0' ? s->reason : "-", W_REASON, false);
    cell(f, s->series_uid, 0, true);
    fputc('\n', f);
}

/* ---------------------------------------------------------------------------- json */

/* A copy of text that is valid UTF-8 (invalid bytes become U+FFFD); cJSON escapes the
 * controls. NULL when out of memory. */
static char *
utf8_clean(const char *text)
{
    size_t n = strlen(text);
    char *out = malloc(3 * n + 1), *o = out;
    if (out == NULL)
        return NULL;
    int len;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p += len) {
        if (mms_utf8_next(p, &len) < 0) {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
        } else {
            memcpy(o, p, (size_t)len);
            o += len;
        }
    }
    *o = '\0';
    return out;
}

static bool
add_text(cJSON *obj, const char *name, const char *text)
{
    char *clean = utf8_clean(text);
    bool ok = clean != NULL && cJSON_AddStringToObject(obj, name, clean) != NULL;
    free(clean);
    return ok;
}

static bool
add_series(cJSON *array, const struct mms_series_row *s)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || !cJSON_AddItemToArray(array, o)) {
        cJSON_Delete(o);
        return false;
    }
    const char *state = mms_series_state_name(s->state);
    return add_text(o, "series_uid", s->series_uid) && add_text(o, "study_uid", s->study_uid) &&
           add_text(o, "state", state != NULL ? state : "unknown") &&
           add_text(o, "reason", s->reason) &&
           cJSON_AddNumberToObject(o, "instances", (double)s->instances) != NULL &&
           cJSON_AddNumberToObject(o, "first_received", s->first_received) != NULL &&
           cJSON_AddNumberToObject(o, "last_received", s->last_received) != NULL &&
           cJSON_AddNumberToObject(o, "state_since", s->state_since) != NULL &&
           cJSON_AddNumberToObject(o, "run", (double)s->run) != NULL &&
           add_text(o, "modality", s->modality) &&
           add_text(o, "series_description", s->series_description);
}

static bool
add_send(cJSON *array, const struct mms_send_row *r)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || !cJSON_AddItemToArray(array, o)) {
        cJSON_Delete(o);
        return false;
    }
    const char *state = mms_send_state_name(r->state);
    return cJSON_AddNumberToObject(o, "job", (double)r->job) != NULL &&
           add_text(o, "destination", r->destination) && add_text(o, "series_uid", r->series_uid) &&
           add_text(o, "state", state != NULL ? state : "unknown") &&
           cJSON_AddNumberToObject(o, "attempts", (double)r->attempts) != NULL &&
           cJSON_AddNumberToObject(o, "queued", r->queued) != NULL &&
           cJSON_AddNumberToObject(o, "next_attempt", r->next_attempt) != NULL &&
           cJSON_AddNumberToObject(o, "last_attempt", r->last_attempt) != NULL &&
           cJSON_AddNumberToObject(o, "state_since", r->state_since) != NULL &&
           add_text(o, "reason", r->reason) && add_text(o, "node", r->node) &&
           cJSON_AddNumberToObject(o, "lease_until", r->lease_until) != NULL;
}

static bool
add_job(cJSON *array, const struct mms_job_row *j)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || !cJSON_AddItemToArray(array, o)) {
        cJSON_Delete(o);
        return false;
    }
    const char *state = mms_job_state_name(j->state);
    bool ok = cJSON_AddNumberToObject(o, "job", (double)j->id) != NULL &&
              add_text(o, "series_uid", j->series_uid) &&
              cJSON_AddNumberToObject(o, "run", (double)j->run) != NULL &&
              add_text(o, "state", state != NULL ? state : "unknown") &&
              add_text(o, "stage", j->stage) && add_text(o, "reason", j->reason) &&
              cJSON_AddNumberToObject(o, "started", j->started) != NULL &&
              cJSON_AddNumberToObject(o, "finished", j->finished) != NULL &&
              cJSON_AddNumberToObject(o, "segments", (double)j->segments) != NULL &&
              cJSON_AddNumberToObject(o, "frames", (double)j->frames) != NULL &&
              add_text(o, "node", j->node) &&
              cJSON_AddNumberToObject(o, "lease_until", j->lease_until) != NULL;
    cJSON *t = ok ? cJSON_AddObjectToObject(o, "times") : NULL;
    const char *names[] = {"decode_s", "wait_s",  "preprocess_s", "network_s",
                           "export_s", "write_s", "total_s"};
    const double v[] = {j->decode_s, j->wait_s,  j->preprocess_s, j->network_s,
                        j->export_s, j->write_s, j->total_s};
    for (int i = 0; t != NULL && i < 7; i++)
        ok = ok && cJSON_AddNumberToObject(t, names[i], v[i]) != NULL;
    return ok && t != NULL;
}

/* ---------------------------------------------------------------------------- walk */

static int
on_series(void *ud, const struct mms_series_row *s)
{
    struct walk *w = ud;
    w->n_series++;
    w->instances += s->instances;
    if (s->state >= 0 && s->state < N_STATES)
        w->counts[s->state]++;
    if (w->json) {
        if (!add_series(w->series, s)) {
            w->no_memory = true;
            return 1;
        }
        return 0;
    }
    if (w->n_series == 1)
        print_header(w->out);
    print_row(w->out, s, w->now);
    return 0;
}

/* Every send in JSON; in the table the pending and dead ones (done ones are counted). */
static int
on_send(void *ud, const struct mms_send_row *r)
{
    struct walk *w = ud;
    if (w->node != NULL && strcmp(r->node, w->node) != 0)
        return 0;
    if (r->state >= 0 && r->state < N_SEND_STATES)
        w->send_counts[r->state]++;
    if (w->json) {
        if (!add_send(w->sends, r)) {
            w->no_memory = true;
            return 1;
        }
        return 0;
    }
    if (r->state == MMS_SEND_DONE)
        return 0;
    if (w->n_sends_shown++ == 0)
        fprintf(w->out, "\n%-*s  %*s  %-*s  %4s  %-*s  %-*s  %s\n", W_STATE, "SEND", W_JOB, "JOB",
                W_DEST, "DESTINATION", "TRY", W_NEXT, "NEXT", W_REASON, "REASON", "SERIES UID");
    const char *state = mms_send_state_name(r->state);
    char next[32] = "-";
    if (r->state == MMS_SEND_PENDING)
        mms_format_age(r->next_attempt - w->now, next, sizeof next);
    fprintf(w->out, "%-*s  %*lld  ", W_STATE, state != NULL ? state : "?", W_JOB,
            (long long)r->job);
    cell(w->out, r->destination, W_DEST, false);
    fprintf(w->out, "%4lld  %-*s  ", (long long)r->attempts, W_NEXT, next);
    cell(w->out, r->reason[0] != '\0' ? r->reason : "-", W_REASON, false);
    cell(w->out, r->series_uid, 0, true);
    fputc('\n', w->out);
    return 0;
}

/* Every job in JSON; in the table the last RECENT_JOBS and the counts. */
static int
on_job(void *ud, const struct mms_job_row *j)
{
    struct walk *w = ud;
    if (w->node != NULL && strcmp(j->node, w->node) != 0)
        return 0;
    if (j->state >= 0 && j->state < N_JOB_STATES)
        w->job_counts[j->state]++;
    if (w->json) {
        if (!add_job(w->jobs, j)) {
            w->no_memory = true;
            return 1;
        }
    } else {
        w->recent[w->n_jobs % RECENT_JOBS] = *j;
    }
    w->n_jobs++;
    return 0;
}

static void
print_jobs(FILE *f, const struct walk *w)
{
    int64_t first = w->n_jobs > RECENT_JOBS ? w->n_jobs - RECENT_JOBS : 0;
    if (w->n_jobs > 0)
        fprintf(f, "\n%*s  %-11s  %4s  %-6s  %7s  %7s  %-*s  %s\n", W_JOB, "JOB", "JOB STATE",
                "RUN", "STAGE", "TOTAL", "NETWORK", W_REASON, "REASON", "SERIES UID");
    for (int64_t i = first; i < w->n_jobs; i++) {
        const struct mms_job_row *j = &w->recent[i % RECENT_JOBS];
        const char *state = mms_job_state_name(j->state);
        fprintf(f, "%*lld  %-11s  %4lld  %-6s  %6.1fs  %6.1fs  ", W_JOB, (long long)j->id,
                state != NULL ? state : "?", (long long)j->run, j->stage[0] ? j->stage : "-",
                j->total_s, j->network_s);
        cell(f, j->reason[0] != '\0' ? j->reason : "-", W_REASON, false);
        cell(f, j->series_uid, 0, true);
        fputc('\n', f);
    }
    fprintf(f, "%s%lld job%s:", w->n_jobs > 0 ? "\n" : "", (long long)w->n_jobs,
            w->n_jobs == 1 ? "" : "s");
    for (int i = 0; i < N_JOB_STATES; i++)
        fprintf(f, "%s %s %lld", i ? "," : "", mms_job_state_name(i), (long long)w->job_counts[i]);
    fputc('\n', f);
}

static int
on_node(void *ud, const struct mms_node_row *n)
{
    struct walk *w = ud;
    if (w->node != NULL && strcmp(n->name, w->node) != 0)
        return 0;
    if (w->json) {
        cJSON *o = cJSON_CreateObject();
        bool ok = o != NULL && cJSON_AddItemToArray(w->nodes, o);
        if (!ok)
            cJSON_Delete(o);
        ok = ok && add_text(o, "name", n->name) && add_text(o, "roles", n->roles) &&
             cJSON_AddNumberToObject(o, "pid", (double)n->pid) != NULL &&
             cJSON_AddNumberToObject(o, "started", n->started) != NULL &&
             cJSON_AddNumberToObject(o, "heartbeat", n->heartbeat) != NULL &&
             cJSON_AddNumberToObject(o, "jobs", (double)n->jobs) != NULL &&
             cJSON_AddNumberToObject(o, "sends", (double)n->sends) != NULL;
        if (!ok) {
            w->no_memory = true;
            return 1;
        }
        return 0;
    }
    if (w->n_nodes++ == 0)
        fprintf(w->out, "\n%-16s  %-17s  %8s  %-9s  %4s  %5s\n", "NODE", "ROLES", "PID",
                "HEARTBEAT", "JOBS", "SENDS");
    char age[32];
    mms_format_age(w->now - n->heartbeat, age, sizeof age);
    cell(w->out, n->name, 16, false);
    fprintf(w->out, "%-17s  %8lld  %-9s  %4lld  %5lld\n", n->roles, (long long)n->pid, age,
            (long long)n->jobs, (long long)n->sends);
    return 0;
}

static void
print_send_counts(FILE *f, const struct walk *w)
{
    int64_t n = 0;
    for (int i = 0; i < N_SEND_STATES; i++)
        n += w->send_counts[i];
    fprintf(f, "%s%lld send%s:", w->n_sends_shown > 0 ? "\n" : "", (long long)n, n == 1 ? "" : "s");
    for (int i = 0; i < N_SEND_STATES; i++)
        fprintf(f, "%s %s %lld", i ? "," : "", mms_send_state_name(i),
                (long long)w->send_counts[i]);
    fputc('\n', f);
}

static void
print_counts(FILE *f, const struct walk *w)
{
    if (w->n_series == 0)
        fprintf(f, "no series\n");
    else
        fputc('\n', f);
    fprintf(f, "%lld series:", (long long)w->n_series);
    for (int i = 0; i < N_STATES; i++)
        fprintf(f, "%s %s %lld", i ? "," : "", mms_series_state_name(i), (long long)w->counts[i]);
    fprintf(f, "; %lld instance%s\n", (long long)w->instances, w->instances == 1 ? "" : "s");
}

/* quarantine/: the totals and the newest items, as text or into root. */
static int
print_quarantine(const char *state_dir, FILE *f, cJSON *root, char *why, size_t why_len)
{
    char qdir[4200];
    struct mms_quarantine_item items[QUARANTINE_SHOWN];
    size_t n;
    int64_t count, bytes;
    snprintf(qdir, sizeof qdir, "%s/quarantine", state_dir);
    char err[512];
    if (mms_quarantine_scan(qdir, items, QUARANTINE_SHOWN, &n, &count, &bytes, err, sizeof err) <
        0) { /* the rest of the status is still worth printing */
        if (root == NULL)
            fprintf(f, "\nquarantine: cannot be read: %s\n", err);
        else if (cJSON_AddObjectToObject(root, "quarantine") == NULL ||
                 !add_text(cJSON_GetObjectItemCaseSensitive(root, "quarantine"), "error", err))
            return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        return 0;
    }
    if (root != NULL) {
        cJSON *q = cJSON_AddObjectToObject(root, "quarantine"), *a;
        if (q == NULL || cJSON_AddNumberToObject(q, "items", (double)count) == NULL ||
            cJSON_AddNumberToObject(q, "bytes", (double)bytes) == NULL ||
            (a = cJSON_AddArrayToObject(q, "newest")) == NULL)
            return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            if (o == NULL || !cJSON_AddItemToArray(a, o) ||
                cJSON_AddStringToObject(o, "name", items[i].name) == NULL ||
                cJSON_AddNumberToObject(o, "time", items[i].time) == NULL ||
                cJSON_AddNumberToObject(o, "size", (double)items[i].size) == NULL ||
                !add_text(o, "origin", items[i].origin) || !add_text(o, "reason", items[i].reason))
                return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        }
        return 0;
    }
    fprintf(f, "\nquarantine: %lld item%s, %lld bytes in %s\n", (long long)count,
            count == 1 ? "" : "s", (long long)bytes, qdir);
    if (n > 0)
        fprintf(f, "%-*s  %-*s  %*s  %-*s  %s\n", 20, "NAME", W_AGE, "AGE", W_SIZE, "BYTES",
                W_REASON, "REASON", "ORIGIN");
    for (size_t i = 0; i < n; i++) {
        char age[32];
        mms_format_age(mms_wall_s() - items[i].time, age, sizeof age);
        fprintf(f, "%-*s  %-*s  %*lld  ", 20, items[i].name, W_AGE, age, W_SIZE,
                (long long)items[i].size);
        cell(f, items[i].reason, W_REASON, false);
        cell(f, items[i].origin, 0, true);
        fputc('\n', f);
    }
    if ((int64_t)n < count)
        fprintf(f, "(the newest %zu shown)\n", n);
    return 0;
}

/* The root object in the order it prints: {"instances": 0, "counts": {...: 0}, "series": []};
 * the figures are set after the walk. NULL when out of memory. */
static cJSON *
json_root(struct walk *w)
{
    cJSON *root = cJSON_CreateObject(), *counts;
    if (root == NULL || cJSON_AddNumberToObject(root, "instances", 0) == NULL ||
        (counts = cJSON_AddObjectToObject(root, "counts")) == NULL)
        goto fail;
    for (int i = 0; i < N_STATES; i++)
        if (cJSON_AddNumberToObject(counts, mms_series_state_name(i), 0) == NULL)
            goto fail;
    if ((w->series = cJSON_AddArrayToObject(root, "series")) == NULL ||
        (counts = cJSON_AddObjectToObject(root, "send_counts")) == NULL)
        goto fail;
    for (int i = 0; i < N_SEND_STATES; i++)
        if (cJSON_AddNumberToObject(counts, mms_send_state_name(i), 0) == NULL)
            goto fail;
    if ((w->sends = cJSON_AddArrayToObject(root, "sends")) == NULL ||
        (counts = cJSON_AddObjectToObject(root, "job_counts")) == NULL)
        goto fail;
    for (int i = 0; i < N_JOB_STATES; i++)
        if (cJSON_AddNumberToObject(counts, mms_job_state_name(i), 0) == NULL)
            goto fail;
    if ((w->jobs = cJSON_AddArrayToObject(root, "jobs")) == NULL)
        goto fail;
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}

static void
json_figures(const struct walk *w, cJSON *root)
{
    cJSON *counts = cJSON_GetObjectItemCaseSensitive(root, "counts");
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "instances"), (double)w->instances);
    for (int i = 0; i < N_STATES; i++)
        cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(counts, mms_series_state_name(i)),
                             (double)w->counts[i]);
    counts = cJSON_GetObjectItemCaseSensitive(root, "send_counts");
    for (int i = 0; i < N_SEND_STATES; i++)
        cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(counts, mms_send_state_name(i)),
                             (double)w->send_counts[i]);
    counts = cJSON_GetObjectItemCaseSensitive(root, "job_counts");
    for (int i = 0; i < N_JOB_STATES; i++)
        cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(counts, mms_job_state_name(i)),
                             (double)w->job_counts[i]);
}

int
mms_status_print(const char *state_dir, const char *where, const char *node, bool json, FILE *out,
                 char *why, size_t why_len)
{
    struct walk w = {.json = json, .node = node};
    struct mms_index *ix = NULL;
    cJSON *root = NULL;
    char *text = NULL, path[4200], reason[1024];
    size_t text_len = 0;
    int rc;

    if (out == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no output");
    if (state_dir == NULL || where == NULL ||
        (size_t)snprintf(path, sizeof path, "%s", where) >= sizeof path)
        return mms_why(why, why_len, MMS_EINVAL, "no state directory or database, or too long");
    rc = mms_index_connect(path, true, &ix, reason, sizeof reason);
    if (rc == MMS_ENOENT)
        return mms_why(why, why_len, rc, "no state database at %s (the daemon has not run yet)",
                       path);
    if (rc < 0)
        return mms_why(why, why_len, rc, "%s: %s", path, reason);

    w.now = mms_wall_s();
    if (json) {
        if ((root = json_root(&w)) == NULL) {
            rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
            goto out;
        }
    } else if ((w.out = open_memstream(&text, &text_len)) == NULL) {
        rc = mms_err_errno();
        rc = mms_why(why, why_len, rc, "open_memstream: %s", mms_strerror(rc));
        goto out;
    }

    if ((rc = mms_index_series(ix, on_series, &w, reason, sizeof reason)) < 0) {
        rc = mms_why(why, why_len, rc, "%s: %s", path, reason);
        goto out;
    }
    if (!json)
        print_counts(w.out, &w);
    if ((rc = mms_index_jobs(ix, -1, on_job, &w, reason, sizeof reason)) < 0) {
        rc = mms_why(why, why_len, rc, "%s: %s", path, reason);
        goto out;
    }
    if (!json)
        print_jobs(w.out, &w);
    if ((rc = mms_index_sends(ix, -1, -1, on_send, &w, reason, sizeof reason)) < 0) {
        rc = mms_why(why, why_len, rc, "%s: %s", path, reason);
        goto out;
    }
    if (w.no_memory) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        goto out;
    }
    if (!json)
        print_send_counts(w.out, &w);
    if ((rc = print_quarantine(state_dir, w.out, root, reason, sizeof reason)) < 0) {
        rc = mms_why(why, why_len, rc, "%s", reason);
        goto out;
    }
    if (json && (w.nodes = cJSON_AddArrayToObject(root, "nodes")) == NULL) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = mms_index_nodes(ix, on_node, &w, reason, sizeof reason)) < 0) {
        rc = mms_why(why, why_len, rc, "%s: %s", path, reason);
        goto out;
    }
    if (w.no_memory) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        goto out;
    }
    if (json) {
        json_figures(&w, root);
        if ((text = cJSON_Print(root)) == NULL) {
            rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
            goto out;
        }
        text_len = strlen(text);
    } else {
        bool bad = ferror(w.out) != 0;
        fclose(w.out); /* text and text_len are final now */
        w.out = NULL;
        if (bad || text == NULL) {
            rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory");
            goto out;
        }
    }
    if (fwrite(text, 1, text_len, out) != text_len || (json && fputc('\n', out) == EOF)) {
        rc = mms_why(why, why_len, MMS_EIO, "cannot write the status");
        goto out;
    }
    rc = 0;

out:
    if (w.out != NULL)
        fclose(w.out);
    free(text);
    cJSON_Delete(root);
    mms_index_close(ix);
    return rc;
}

/* daemon/page: the status page and the previews' places (page.h). */
#include "daemon/page.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/text.h"
#include "daemon/outbox.h"
#include "daemon/sandbox.h"
#include "daemon/work.h"
#include "dicom/dicom.h"

#define PAGE_SERIES 50 /* the series received last */
#define PAGE_JOBS 12   /* the jobs started last */
#define PAGE_SENDS 50  /* of each state shown: pending, dead */
#define REFRESH_S "10"

/* ---------------------------------------------------------------------------- text */

/* text as HTML character data or attribute value: the five special characters as
 * references, invalid UTF-8 and controls as U+FFFD. */
static void
esc(FILE *f, const char *text)
{
    int len;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p += len) {
        int32_t cp = mms_utf8_next(p, &len);
        if (cp < 0 || mms_is_control(cp))
            fputs("\xef\xbf\xbd", f);
        else if (cp == '&')
            fputs("&amp;", f);
        else if (cp == '<')
            fputs("&lt;", f);
        else if (cp == '>')
            fputs("&gt;", f);
        else if (cp == '"')
            fputs("&quot;", f);
        else if (cp == '\'')
            fputs("&#39;", f);
        else
            fwrite(p, 1, (size_t)len, f);
    }
}

/* A moment as local "YYYY-MM-DD HH:MM:SS"; "-" for none. */
static void
clock_text(double t, char *buf, size_t len)
{
    time_t s = (time_t)t;
    struct tm tm;
    if (!(t > 0.0) || localtime_r(&s, &tm) == NULL)
        snprintf(buf, len, "-");
    else
        strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

static void
age_cell(FILE *f, double now, double t)
{
    char age[32];
    mms_format_age(now - t, age, sizeof age);
    fprintf(f, "<td>%s</td>", t > 0.0 ? age : "-");
}

/* The two cells that end every row of the tables, and the row's end. */
static void
row_end(FILE *f, const char *reason, const char *series_uid)
{
    fputs("<td>", f);
    esc(f, reason);
    fputs("</td><td class=\"uid\">", f);
    esc(f, series_uid);
    fputs("</td></tr>\n", f);
}

/* ---------------------------------------------------------------------------- rows */

struct walk {
    struct mms_series_row series[PAGE_SERIES]; /* a ring: the last ones received */
    int64_t n_series;
    struct mms_job_row jobs[PAGE_JOBS]; /* a ring: the last ones started */
    int64_t n_jobs;
    int64_t job_counts[MMS_JOB_STATE_N];
    struct mms_send_row *sends;
    int n_sends, cap_sends, state_sends;
};

static int
on_series(void *ud, const struct mms_series_row *s)
{
    struct walk *w = ud;
    w->series[w->n_series++ % PAGE_SERIES] = *s;
    return 0;
}

static int
on_job(void *ud, const struct mms_job_row *j)
{
    struct walk *w = ud;
    w->jobs[w->n_jobs++ % PAGE_JOBS] = *j;
    if (j->state >= 0 && j->state < MMS_JOB_STATE_N)
        w->job_counts[j->state]++;
    return 0;
}

static int
on_send(void *ud, const struct mms_send_row *r)
{
    struct walk *w = ud;
    if (w->n_sends >= w->cap_sends)
        return 1;
    w->sends[w->n_sends++] = *r;
    return 0;
}

/* ---------------------------------------------------------------------------- patients */

struct patient {
    char name[129], id[65];
};

static int
on_first_instance(void *ud, const struct mms_instance_row *r)
{
    snprintf(ud, 512, "%s", r->path);
    return 1;
}

/* The patient name and ID of each series shown, read from one instance of each by the
 * sandboxed header reader (the files are received input). Left "" where not read. */
static void
read_patients(struct mms_index *ix, const char *state_dir, const struct walk *w, int first, int n,
              struct patient *out)
{
    char *paths[PAGE_SERIES], why[512];
    int at[PAGE_SERIES], k = 0;
    for (int i = 0; i < n; i++) {
        const struct mms_series_row *s = &w->series[(first + i) % PAGE_SERIES];
        char rel[512] = "";
        mms_index_instances(ix, s->series_uid, on_first_instance, rel, why, sizeof why);
        if (rel[0] == '\0')
            continue;
        size_t len = strlen(state_dir) + strlen(rel) + 2;
        if ((paths[k] = malloc(len)) == NULL)
            break;
        snprintf(paths[k], len, "%s/%s", state_dir, rel);
        at[k++] = i;
    }
    struct mms_header *h = k > 0 ? calloc((size_t)k, sizeof *h) : NULL;
    const struct mms_sandbox_limits lim = {
        .max_memory = (size_t)1 << 30, .cpu_s = 30, .timeout_ms = 30000};
    if (h != NULL && mms_work_headers((const char *const *)paths, k, &lim, h, why, sizeof why) == 0)
        for (int i = 0; i < k; i++) {
            snprintf(out[at[i]].name, sizeof out[at[i]].name, "%s", h[i].patient_name);
            snprintf(out[at[i]].id, sizeof out[at[i]].id, "%s", h[i].patient_id);
        }
    free(h);
    for (int i = 0; i < k; i++)
        free(paths[i]);
}

/* ---------------------------------------------------------------------------- previews */

int64_t
mms_page_preview_job(const char *url_path)
{
    static const char prefix[] = "/preview/";
    if (strncmp(url_path, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *p = url_path + sizeof prefix - 1;
    int64_t job = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits == 18 || (digits == 1 && job == 0))
            return -1;
        job = job * 10 + (*p - '0');
    }
    if (digits == 0 || strcmp(p, ".png") != 0)
        return -1;
    return job;
}

static int
find_job(void *ud, const struct mms_job_row *j)
{
    struct mms_job_row *want = ud;
    if (j->id != want->id)
        return 0;
    *want = *j;
    return 1;
}

static bool
is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The preview of job j (its row: number, series, run), as mms_page_preview_path() says. */
static int
preview_of(const struct mms_page_facts *f, const struct mms_job_row *j, char *path, size_t path_len)
{
    const struct mms_config *c = f->cfg;
    char why[512];
    /* in the outbox while a send of the job is pending (our own names: job number, SOP) */
    char **files = NULL;
    int n = mms_outbox_list(c->daemon.state_dir, j->id, ".png", &files, why, sizeof why);
    if (n > 0) {
        snprintf(path, path_len, "%s", files[0]);
        mms_outbox_list_free(files, n);
        return 0;
    }
    /* delivered: where the folder destinations keep it, named by the SEG's SOP Instance UID */
    if (f->model_sha256 == NULL)
        return MMS_ENOENT;
    char series[65], sop[65];
    mms_work_output_uids("seg", f->model_sha256, j->series_uid, (int)j->run, series, sop);
    for (size_t i = 0; i < (size_t)c->n_dests; i++) {
        const struct mms_dest_config *d = &c->dests[i];
        if (d->type != MMS_DEST_FOLDER || !(d->outputs_mask & MMS_OUTPUT_PREVIEW))
            continue;
        snprintf(path, path_len, "%s/%s.png", d->path, sop);
        if (is_file(path))
            return 0;
    }
    return MMS_ENOENT;
}

int
mms_page_preview_path(struct mms_index *ix, const struct mms_page_facts *f, int64_t job, char *path,
                      size_t path_len)
{
    char why[512];
    struct mms_job_row j = {.id = job, .series_uid = ""};
    if (mms_index_jobs(ix, -1, find_job, &j, why, sizeof why) < 0)
        return MMS_EIO;
    if (j.series_uid[0] == '\0')
        return MMS_ENOENT;
    return preview_of(f, &j, path, path_len);
}

/* ---------------------------------------------------------------------------- the page */

static const char style[] =
    "body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:8px;"
    "color:#111;background:#fafafa}"
    "h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}"
    ".facts{color:#444}.facts span{display:inline-block;margin-right:1.2em}"
    ".wrap{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.92em}"
    "th,td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}"
    "th{background:#eee}.uid{font-family:monospace;font-size:.85em;word-break:break-all}"
    ".cards{display:flex;flex-wrap:wrap;gap:10px}"
    ".card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;margin:0;"
    "flex:1 1 280px;max-width:400px}"
    ".card img{width:100%;height:auto;display:block;background:#000}"
    ".state-done{color:#070}.state-failed,.state-dead{color:#b00}"
    ".state-running,.state-pending,.state-queued{color:#a60}"
    ".counts span{display:inline-block;margin:0 .8em .2em 0}.err{color:#b00}";

static void
counts(FILE *f, const char *what, const char *(*name)(int), const int64_t *n, int states)
{
    fprintf(f, "<p class=\"counts\" id=\"counts-%s\">", what);
    for (int i = 0; i < states; i++)
        fprintf(f, "<span class=\"state-%s\">%s: %" PRId64 "</span>", name(i), name(i), n[i]);
    fputs("</p>\n", f);
}

static void
series_table(FILE *f, struct mms_index *ix, const struct mms_page_facts *fa, const struct walk *w,
             double now)
{
    bool phi = fa->cfg->daemon.status_page_phi;
    int shown = w->n_series < PAGE_SERIES ? (int)w->n_series : PAGE_SERIES;
    int first = w->n_series < PAGE_SERIES ? 0 : (int)(w->n_series % PAGE_SERIES);
    struct patient pat[PAGE_SERIES];
    memset(pat, 0, sizeof pat);
    if (phi)
        read_patients(ix, fa->cfg->daemon.state_dir, w, first, shown, pat);
    fprintf(f, "<h2>Series</h2>\n<p>%" PRId64 " in the index%s.</p>\n", w->n_series,
            w->n_series > PAGE_SERIES ? "; the 50 received last, newest first" : ", newest first");
    fputs("<div class=\"wrap\"><table id=\"series\"><tr><th>State</th><th>Last instance</th>"
          "<th>Instances</th><th>Modality</th><th>Description</th>",
          f);
    if (phi)
        fputs("<th>Patient</th><th>Patient ID</th>", f);
    fputs("<th>Reason</th><th>Series Instance UID</th></tr>\n", f);
    for (int i = shown - 1; i >= 0; i--) {
        const struct mms_series_row *s = &w->series[(first + i) % PAGE_SERIES];
        const char *st = mms_series_state_name(s->state);
        fprintf(f, "<tr class=\"series\"><td class=\"state-%s\">%s</td>", st, st);
        age_cell(f, now, s->last_received);
        fprintf(f, "<td>%" PRId64 "</td><td>", s->instances);
        esc(f, s->modality);
        fputs("</td><td>", f);
        esc(f, s->series_description);
        if (phi) {
            fputs("</td><td>", f);
            esc(f, pat[i].name);
            fputs("</td><td>", f);
            esc(f, pat[i].id);
        }
        fputs("</td>", f);
        row_end(f, s->reason, s->series_uid);
    }
    fputs("</table></div>\n", f);
}

static void
job_times(FILE *f, const struct mms_job_row *j)
{
    fprintf(f,
            "<td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td>"
            "<td>%.1f</td>",
            j->decode_s, j->wait_s, j->preprocess_s, j->network_s, j->export_s, j->write_s,
            j->total_s);
}

static void
jobs_part(FILE *f, const struct mms_page_facts *fa, const struct walk *w)
{
    int shown = w->n_jobs < PAGE_JOBS ? (int)w->n_jobs : PAGE_JOBS;
    int first = w->n_jobs < PAGE_JOBS ? 0 : (int)(w->n_jobs % PAGE_JOBS);
    char path[4400], when[32];
    fputs("<h2>Results</h2>\n<div class=\"cards\" id=\"previews\">\n", f);
    int cards = 0;
    for (int i = shown - 1; i >= 0; i--) {
        const struct mms_job_row *j = &w->jobs[(first + i) % PAGE_JOBS];
        if (j->state != MMS_JOB_DONE || preview_of(fa, j, path, sizeof path) < 0)
            continue;
        clock_text(j->finished, when, sizeof when);
        fprintf(f,
                "<figure class=\"card\"><img src=\"/preview/%" PRId64 ".png\" alt=\"preview of "
                "job %" PRId64 "\"><figcaption>job %" PRId64 ", %s, %" PRId64
                " segments, %.1f s<br><span class=\"uid\">",
                j->id, j->id, j->id, when, j->segments, j->total_s);
        esc(f, j->series_uid);
        fputs("</span></figcaption></figure>\n", f);
        cards++;
    }
    if (cards == 0)
        fputs("<p>No preview to show: none of the last jobs has one in the outbox or a folder "
              "destination.</p>\n",
              f);
    fputs("</div>\n<h2>Jobs</h2>\n<div class=\"wrap\"><table id=\"jobs\"><tr><th>Job</th>"
          "<th>State</th><th>Run</th><th>Stage</th><th>Node</th><th>Started</th>"
          "<th>Decode s</th><th>Wait s</th><th>Preprocess s</th><th>Network s</th>"
          "<th>Export s</th><th>Output s</th><th>Total s</th><th>Reason</th>"
          "<th>Series Instance UID</th></tr>\n",
          f);
    for (int i = shown - 1; i >= 0; i--) {
        const struct mms_job_row *j = &w->jobs[(first + i) % PAGE_JOBS];
        const char *st = mms_job_state_name(j->state);
        clock_text(j->started, when, sizeof when);
        fprintf(f,
                "<tr class=\"job\"><td>%" PRId64 "</td><td class=\"state-%s\">%s</td><td>%" PRId64
                "</td><td>",
                j->id, st, st, j->run);
        esc(f, j->stage);
        fputs("</td><td>", f);
        esc(f, j->node);
        fprintf(f, "</td><td>%s</td>", when);
        job_times(f, j);
        row_end(f, j->reason, j->series_uid);
    }
    fputs("</table></div>\n", f);
}

static void
sends_part(FILE *f, const struct walk *w, double now)
{
    fputs("<div class=\"wrap\"><table id=\"sends\"><tr><th>State</th><th>Job</th>"
          "<th>Destination</th><th>Attempts</th><th>Queued</th><th>Next attempt</th>"
          "<th>Reason</th><th>Series Instance UID</th></tr>\n",
          f);
    if (w->n_sends == 0)
        fputs("<tr><td colspan=\"8\">none</td></tr>\n", f);
    for (int i = 0; i < w->n_sends; i++) {
        const struct mms_send_row *r = &w->sends[i];
        const char *st = mms_send_state_name(r->state);
        char next[32] = "-";
        if (r->state == MMS_SEND_PENDING)
            mms_format_age(r->next_attempt - now, next, sizeof next);
        fprintf(f, "<tr class=\"send\"><td class=\"state-%s\">%s</td><td>%" PRId64 "</td><td>", st,
                st, r->job);
        esc(f, r->destination);
        fprintf(f, "</td><td>%" PRId64 "</td>", r->attempts);
        age_cell(f, now, r->queued);
        fprintf(f, "<td>%s%s</td>", r->state == MMS_SEND_PENDING ? "in " : "", next);
        row_end(f, r->reason, r->series_uid);
    }
    fputs("</table></div>\n", f);
}

static const char *
series_name(int s)
{
    return mms_series_state_name(s);
}

static const char *
job_name(int s)
{
    return mms_job_state_name(s);
}

static const char *
send_name(int s)
{
    return mms_send_state_name(s);
}

int
mms_page_status(struct mms_index *ix, const struct mms_page_facts *fa, char **html, size_t *len,
                char *why, size_t why_len)
{
    const struct mms_config *c = fa->cfg;
    double now = mms_wall_s();
    struct walk *w = calloc(1, sizeof *w);
    struct mms_send_row *sends = calloc(2 * PAGE_SENDS, sizeof *sends);
    *html = NULL;
    *len = 0;
    FILE *f = w != NULL && sends != NULL ? open_memstream(html, len) : NULL;
    if (f == NULL) {
        free(w);
        free(sends);
        return mms_why(why, why_len, MMS_ENOMEM, "status page: out of memory");
    }
    w->sends = sends;
    int64_t instances = 0, series[MMS_SERIES_SKIPPED + 1] = {0}, sent[MMS_SEND_DEAD + 1] = {0},
            jobs[MMS_JOB_STATE_N] = {0};
    int rc = 0;
    if (mms_index_counts(ix, &instances, series, why, why_len) < 0 ||
        mms_index_send_counts(ix, sent, why, why_len) < 0 ||
        mms_index_series(ix, on_series, w, why, why_len) < 0 ||
        mms_index_jobs(ix, -1, on_job, w, why, why_len) < 0)
        rc = MMS_EIO;
    static const int send_states[2] = {MMS_SEND_PENDING, MMS_SEND_DEAD};
    for (int i = 0; rc == 0 && i < 2; i++) {
        w->cap_sends = w->n_sends + PAGE_SENDS;
        if (mms_index_sends(ix, send_states[i], -1, on_send, w, why, why_len) < 0)
            rc = MMS_EIO;
    }
    for (int i = 0; i < MMS_JOB_STATE_N; i++)
        jobs[i] = w->job_counts[i];

    char started[32], node[300];
    clock_text(fa->started, started, sizeof started);
    snprintf(node, sizeof node, "%s", c->daemon.node != NULL ? c->daemon.node : "");
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<meta http-equiv=\"refresh\" content=\"" REFRESH_S "\">\n<title>mmsegd ",
          f);
    esc(f, node);
    fprintf(f, "</title>\n<style>%s</style></head><body>\n<h1>mmsegd <small>", style);
    esc(f, node);
    fprintf(f,
            "</small></h1>\n<p class=\"facts\"><span>version %s</span><span>running since "
            "%s</span>",
            PACKAGE_VERSION, started);
    if (fa->model_name != NULL) {
        fputs("<span id=\"model\">model ", f);
        esc(f, fa->model_name);
        fputs(" ", f);
        esc(f, fa->model_version != NULL ? fa->model_version : "");
        fprintf(f, " (%.12s)</span><span id=\"backend\">backend %s</span>",
                fa->model_sha256 != NULL ? fa->model_sha256 : "",
                fa->backend != NULL ? fa->backend : "-");
    } else {
        fputs("<span id=\"model\">no model loaded</span>", f);
    }
    fprintf(f, "<span>refreshed every " REFRESH_S " s</span></p>\n");
    if (rc < 0) {
        fputs("<p class=\"err\" id=\"error\">The state database could not be read: ", f);
        esc(f, why);
        fputs("</p>\n", f);
    }
    fprintf(f, "<h2>Now</h2>\n<p>%" PRId64 " instances; series:</p>\n", instances);
    counts(f, "series", series_name, series, MMS_SERIES_SKIPPED + 1);
    fputs("<p>jobs:</p>\n", f);
    counts(f, "jobs", job_name, jobs, MMS_JOB_STATE_N);
    fputs("<p>sends:</p>\n", f);
    counts(f, "sends", send_name, sent, MMS_SEND_DEAD + 1);
    if (rc == 0) {
        jobs_part(f, fa, w);
        series_table(f, ix, fa, w, now);
        fprintf(f, "<h2>Sends pending and dead</h2>\n");
        sends_part(f, w, now);
    }
    fputs("</body></html>\n", f);
    bool bad = ferror(f) != 0;
    fclose(f);
    free(w);
    free(sends);
    if (bad || *html == NULL) {
        free(*html);
        *html = NULL;
        return mms_why(why, why_len, MMS_ENOMEM, "status page: out of memory");
    }
    return rc;
}

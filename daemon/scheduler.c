/* daemon/scheduler: series completion, selection and the queue (design.md section 4).
 * Threads: the loop thread only. */
#include "daemon/scheduler.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "common/log.h"
#include "dicom/dicom.h"

#define FAR_AWAY 3600.0 /* seconds to wait when nothing is receiving */
/* A series stable this long was left between its two steps (stable, then queued or skipped)
 * by a node that stopped there: another node judges it. */
#define STALE_STABLE_S 60.0

struct mms_sched {
    struct mms_index *ix;
    struct mms_sched_opts o;
    char *body_parts;
    bool has_include, has_exclude;
    regex_t include, exclude;
    char reason[512];
};

int
mms_sched_new(struct mms_index *ix, const struct mms_sched_opts *o, struct mms_sched **out,
              char *why, size_t why_len)
{
    struct mms_sched *s = calloc(1, sizeof *s);
    if (s == NULL || (s->body_parts = strdup(o->body_parts ? o->body_parts : "")) == NULL) {
        free(s);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    s->ix = ix;
    s->o = *o;
    s->o.body_parts = s->body_parts;
    s->o.description_include = s->o.description_exclude = NULL; /* compiled below */
    const char *res[2] = {o->description_include, o->description_exclude};
    regex_t *re[2] = {&s->include, &s->exclude};
    bool *has[2] = {&s->has_include, &s->has_exclude};
    static const char *const key[2] = {"description_include", "description_exclude"};
    for (int i = 0; i < 2; i++) {
        if (res[i] == NULL || res[i][0] == '\0')
            continue;
        int rc = regcomp(re[i], res[i], REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char msg[256];
            regerror(rc, re[i], msg, sizeof msg);
            mms_sched_free(s);
            return mms_why(why, why_len, MMS_ECONFIG, "[series] %s: %s", key[i], msg);
        }
        *has[i] = true;
    }
    *out = s;
    return 0;
}

void
mms_sched_free(struct mms_sched *s)
{
    if (s == NULL)
        return;
    if (s->has_include)
        regfree(&s->include);
    if (s->has_exclude)
        regfree(&s->exclude);
    free(s->body_parts);
    free(s);
}

/* ------------------------------------------------------------------------ selection */

/* What the selection rules and the completeness test look at, gathered over a series. */
struct survey {
    int64_t instances, ct, localizers, slices; /* slices: frames of the CT images kept */
    int64_t multiframe;                        /* kept CT images with more than one frame */
    char other_class[65], modality[17], body_part[17], description[129];
    double thickest;
    /* Images in Acquisition, per acquisition number (a few distinct ones at most) */
    int n_acq;
    struct {
        int64_t number, expected, seen;
    } acq[8];
    bool acq_unknown; /* an image without the count, or too many acquisitions */
};

static int
survey_one(void *ud, const struct mms_instance_row *r)
{
    struct survey *v = ud;
    v->instances++;
    if (!mms_sop_class_is_ct(r->sop_class)) {
        snprintf(v->other_class, sizeof v->other_class, "%s", r->sop_class);
        return 0;
    }
    v->ct++;
    if (strstr(r->image_type, "LOCALIZER") != NULL) {
        v->localizers++;
        return 0;
    }
    if (v->slices == 0) {
        snprintf(v->modality, sizeof v->modality, "%s", r->modality);
        snprintf(v->body_part, sizeof v->body_part, "%s", r->body_part);
        snprintf(v->description, sizeof v->description, "%s", r->series_description);
    }
    v->slices += r->frames > 0 ? r->frames : 1;
    v->multiframe += r->frames > 1;
    v->thickest = r->slice_thickness > v->thickest ? r->slice_thickness : v->thickest;
    if (r->images_in_acquisition < 1) {
        v->acq_unknown = true;
        return 0;
    }
    int k = 0;
    while (k < v->n_acq && v->acq[k].number != r->acquisition)
        k++;
    if (k == v->n_acq) {
        if (k == (int)(sizeof v->acq / sizeof v->acq[0])) {
            v->acq_unknown = true;
            return 0;
        }
        v->n_acq++;
        v->acq[k].number = r->acquisition;
        v->acq[k].expected = r->images_in_acquisition;
    }
    v->acq[k].seen++;
    return 0;
}

static int
survey(struct mms_sched *s, const char *uid, struct survey *v)
{
    memset(v, 0, sizeof *v);
    char why[256];
    int rc = mms_index_instances(s->ix, uid, survey_one, v, why, sizeof why);
    if (rc < 0)
        mms_log(MMS_LOG_ERR, "series %s: %s", uid, why);
    return rc;
}

static bool
in_list(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; *p != '\0';) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e != '\0' && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == n && n > 0 && strncasecmp(p, item, n) == 0)
            return true;
        p = e;
    }
    return false;
}

static const char *
judge(struct mms_sched *s, const struct survey *v)
{
    char *r = s->reason;
    size_t len = sizeof s->reason;
    if (v->ct == 0)
        snprintf(r, len, "no CT image (SOP class %s)",
                 v->other_class[0] ? v->other_class : "unknown");
    else if (v->ct == v->localizers)
        snprintf(r, len, "only localizers (ImageType LOCALIZER)");
    else if (strcmp(v->modality, "CT") != 0)
        snprintf(r, len, "modality '%s', not CT", v->modality);
    else if (v->slices < (int64_t)s->o.min_slices)
        snprintf(r, len, "%lld slice%s, fewer than min_slices %u", (long long)v->slices,
                 v->slices == 1 ? "" : "s", s->o.min_slices);
    else if (s->body_parts[0] != '\0' && !in_list(s->body_parts, v->body_part))
        snprintf(r, len, "BodyPartExamined '%s' is not in body_parts", v->body_part);
    else if (s->has_include && regexec(&s->include, v->description, 0, NULL, 0) != 0)
        snprintf(r, len, "SeriesDescription does not match description_include");
    else if (s->has_exclude && regexec(&s->exclude, v->description, 0, NULL, 0) == 0)
        snprintf(r, len, "SeriesDescription matches description_exclude");
    else if (s->o.max_slice_thickness_mm > 0.0 && v->thickest > s->o.max_slice_thickness_mm)
        snprintf(r, len, "slice thickness %g mm over max_slice_thickness_mm %g", v->thickest,
                 s->o.max_slice_thickness_mm);
    else
        return NULL;
    return r;
}

const char *
mms_sched_select(struct mms_sched *s, const char *series_uid)
{
    struct survey v;
    if (survey(s, series_uid, &v) < 0) {
        snprintf(s->reason, sizeof s->reason, "the index could not be read");
        return s->reason;
    }
    return judge(s, &v);
}

/* All slices are there: one multi-frame image, or every acquisition as many images as its
 * Images in Acquisition says. */
static bool
all_present(const struct survey *v)
{
    if (v->multiframe == 1 && v->ct - v->localizers == 1)
        return true;
    if (v->acq_unknown || v->n_acq == 0)
        return false;
    for (int k = 0; k < v->n_acq; k++)
        if (v->acq[k].seen < v->acq[k].expected)
            return false;
    return true;
}

/* ---------------------------------------------------------------------------- states */

static int
set_state(struct mms_sched *s, const char *uid, int state, const char *reason, double now)
{
    char why[256];
    int rc = mms_index_set_state(s->ix, uid, state, reason, now, why, sizeof why);
    if (rc < 0)
        mms_log(MMS_LOG_ERR, "series %s: %s", uid, why);
    return rc;
}

/* A complete series: stable, then queued or skipped. last: the last_received the caller
 * read, or a negative value for a series already stable. */
static int
complete(struct mms_sched *s, const char *uid, const struct survey *v, double now, const char *how,
         double last)
{
    char why[256];
    int rc = last < 0.0 ? 0 : mms_index_settle(s->ix, uid, last, now, why, sizeof why);
    if (rc == MMS_EAGAIN) /* an instance came meanwhile, or another node judged it */
        return 0;
    if (rc < 0) {
        mms_log(MMS_LOG_ERR, "series %s: %s", uid, why);
        return rc;
    }
    const char *reason = judge(s, v);
    if (reason != NULL) {
        mms_log(MMS_LOG_NOTICE, "series %s: complete (%s), skipped: %s", uid, how, reason);
        return set_state(s, uid, MMS_SERIES_SKIPPED, reason, now);
    }
    if ((rc = set_state(s, uid, MMS_SERIES_QUEUED, NULL, now)) < 0)
        return rc;
    mms_log(MMS_LOG_INFO, "series %s: complete (%s), %lld slices, queued", uid, how,
            (long long)v->slices);
    return 0;
}

struct walk {
    struct mms_sched *s;
    double now, next;
    int rc;
    bool recover;
    /* series to act on, gathered first: the index is not changed while it is being read */
    char (*uids)[65];
    int *states;
    double *last, *since;
    size_t n, cap;
};

static int
gather(void *ud, const struct mms_series_row *r)
{
    struct walk *w = ud;
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        void *a = realloc(w->uids, cap * sizeof *w->uids);
        void *b = a ? realloc(w->states, cap * sizeof *w->states) : NULL;
        void *c = b ? realloc(w->last, cap * sizeof *w->last) : NULL;
        void *e = c ? realloc(w->since, cap * sizeof *w->since) : NULL;
        if (a)
            w->uids = a;
        if (b)
            w->states = b;
        if (c)
            w->last = c;
        if (e == NULL) {
            w->rc = MMS_ENOMEM;
            return 1;
        }
        w->since = e;
        w->cap = cap;
    }
    snprintf(w->uids[w->n], sizeof w->uids[0], "%s", r->series_uid);
    w->states[w->n] = r->state;
    w->last[w->n] = r->last_received;
    w->since[w->n] = r->state_since;
    w->n++;
    return 0;
}

static int
walk_series(struct mms_sched *s, struct walk *w)
{
    char why[256];
    int rc = mms_index_series_active(s->ix, gather, w, why, sizeof why);
    if (rc < 0) {
        mms_log(MMS_LOG_ERR, "series index: %s", why);
        return rc;
    }
    return w->rc;
}

static void
walk_free(struct walk *w)
{
    free(w->uids);
    free(w->states);
    free(w->last);
    free(w->since);
}

double
mms_sched_tick(struct mms_sched *s, double now)
{
    struct walk w = {.s = s, .now = now, .next = FAR_AWAY};
    int rc = walk_series(s, &w);
    for (size_t i = 0; rc == 0 && i < w.n; i++) {
        if (w.states[i] == MMS_SERIES_STABLE && now - w.since[i] > STALE_STABLE_S) {
            struct survey v;
            if ((rc = survey(s, w.uids[i], &v)) == 0)
                rc = complete(s, w.uids[i], &v, now, "left stable by a node", -1.0);
            continue;
        }
        if (w.states[i] != MMS_SERIES_RECEIVING)
            continue;
        struct survey v;
        if ((rc = survey(s, w.uids[i], &v)) < 0)
            break;
        double age = now - w.last[i];
        if (age >= s->o.stable_age_s)
            rc = complete(s, w.uids[i], &v, now, "quiet", w.last[i]);
        else if (all_present(&v))
            rc = complete(s, w.uids[i], &v, now, "all images present", w.last[i]);
        else if (s->o.stable_age_s - age < w.next)
            w.next = s->o.stable_age_s - age;
    }
    walk_free(&w);
    return rc < 0 ? (double)rc : w.next;
}

int
mms_sched_recover(struct mms_sched *s, double now)
{
    struct walk w = {.s = s, .now = now};
    int rc = walk_series(s, &w);
    int judged = 0;
    for (size_t i = 0; rc == 0 && i < w.n; i++) {
        if (w.states[i] != MMS_SERIES_STABLE) /* complete but not judged when a node stopped */
            continue;
        struct survey v;
        if ((rc = survey(s, w.uids[i], &v)) == 0)
            rc = complete(s, w.uids[i], &v, now, "before the restart", -1.0);
        judged++;
    }
    walk_free(&w);
    if (rc == 0 && judged > 0)
        mms_log(MMS_LOG_NOTICE, "recovered: %d complete series judged", judged);
    return rc;
}

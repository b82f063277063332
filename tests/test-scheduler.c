/* Series completion, selection and the queue (daemon/scheduler.c) on a real index in a
 * temporary folder, with the test's own clock: ages of a fraction of a second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "daemon/index.h"
#include "daemon/scheduler.h"
#include "tests/tap.h"
#include "tests/index-util.h"

#define CT "1.2.840.10008.5.1.4.1.1.2"
#define ECT "1.2.840.10008.5.1.4.1.1.2.1"
#define SC "1.2.840.10008.5.1.4.1.1.7"
#define T0 1.8e9

static struct mms_index *ix;

static void
bail_out(const char *fmt, const char *arg)
{
    printf("Bail out! ");
    printf(fmt, arg);
    printf("\n");
    exit(1);
}
static int serial;

/* One instance of series `series` received at time t. */
static void
put(const char *series, const char *cls, const char *type, int64_t frames, int64_t in_acq, double t)
{
    struct mms_instance_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.sop_instance, sizeof r.sop_instance, "1.2.3.%d", ++serial);
    snprintf(r.sop_class, sizeof r.sop_class, "%s", cls);
    snprintf(r.study_uid, sizeof r.study_uid, "1.2.9");
    snprintf(r.series_uid, sizeof r.series_uid, "%s", series);
    snprintf(r.modality, sizeof r.modality, "CT");
    snprintf(r.image_type, sizeof r.image_type, "%s", type);
    snprintf(r.series_description, sizeof r.series_description, "ABDOMEN 1.5 B30f");
    snprintf(r.body_part, sizeof r.body_part, "ABDOMEN");
    snprintf(r.digest, sizeof r.digest, "%064d", serial);
    snprintf(r.path, sizeof r.path, "instances/00/00/%d.dcm", serial);
    r.has_geometry = true;
    r.rows = r.cols = 512;
    r.frames = frames;
    r.acquisition = 1;
    r.instance_number = serial;
    r.images_in_acquisition = in_acq;
    r.slice_thickness = 1.5;
    r.received = t;
    enum mms_put_result res;
    char old[512], why[256];
    if (mms_index_put(ix, &r, &res, old, sizeof old, why, sizeof why) < 0)
        diag("put: %s", why);
}

static void
put_n(const char *series, int n, double t)
{
    for (int i = 0; i < n; i++)
        put(series, CT, "ORIGINAL\\PRIMARY\\AXIAL", 1, -1, t);
}

static bool
is(const char *uid, int state, const char *reason_part)
{
    struct mms_series_row r = series(ix, uid);
    bool good = r.state == state && (reason_part == NULL || strstr(r.reason, reason_part));
    if (!good)
        diag("%s: state %s, reason '%s'", uid, mms_series_state_name(r.state) ?: "?", r.reason);
    return good;
}

/* Series in state queued. */
static int64_t
queued(struct mms_index *index)
{
    int64_t n = 0, c[MMS_SERIES_SKIPPED + 1] = {0};
    char why[256];
    mms_index_counts(index, &n, c, why, sizeof why);
    return c[MMS_SERIES_QUEUED];
}

int
main(void)
{
    plan(21, 60);
    char dir[] = "/tmp/mmsegd-test-sched-XXXXXX", path[256], why[256];
    if (mkdtemp(dir) == NULL)
        bail_out("mkdtemp failed%s", "");
    snprintf(path, sizeof path, "%s/state.db", dir);
    int rc = mms_index_open(path, false, &ix, why, sizeof why);
    if (rc < 0)
        bail_out("index: %s", why);

    struct mms_sched_opts o = {.stable_age_s = 0.5, .min_slices = 10};
    struct mms_sched *s;
    ok(mms_sched_new(ix, &o, &s, why, sizeof why) == 0, "scheduler with a 0.5 s stable age");

    put_n("S.axial", 12, T0);
    put("S.loc", CT, "ORIGINAL\\PRIMARY\\LOCALIZER", 1, -1, T0);
    put("S.loc", CT, "ORIGINAL\\PRIMARY\\LOCALIZER", 1, -1, T0);
    put_n("S.short", 5, T0);
    put("S.sc", SC, "DERIVED\\SECONDARY", 1, -1, T0);
    double next = mms_sched_tick(s, T0 + 0.4);
    ok(next > 0.09 && next < 0.11, "0.4 s after the last instance: next look in 0.1 s (%g)", next);
    ok(is("S.axial", MMS_SERIES_RECEIVING, NULL), "not complete before stable_age_s");
    mms_sched_tick(s, T0 + 0.5);
    ok(is("S.axial", MMS_SERIES_QUEUED, NULL), "12 axial slices: queued");
    ok(is("S.loc", MMS_SERIES_SKIPPED, "only localizers"), "localizers: skipped");
    ok(is("S.short", MMS_SERIES_SKIPPED, "5 slices, fewer than min_slices 10"),
       "5 slices: skipped with the rule");
    ok(is("S.sc", MMS_SERIES_SKIPPED, "no CT image (SOP class " SC ")"),
       "secondary capture: skipped");
    ok(queued(ix) == 1, "the queue holds the axial series once");

    /* complete at once: Images in Acquisition, and one multi-frame image */
    for (int i = 0; i < 11; i++)
        put("S.iia", CT, "ORIGINAL\\PRIMARY\\AXIAL", 1, 12, T0 + 1);
    mms_sched_tick(s, T0 + 1.01);
    ok(is("S.iia", MMS_SERIES_RECEIVING, NULL), "11 of 12 images in acquisition: receiving");
    put("S.iia", CT, "ORIGINAL\\PRIMARY\\AXIAL", 1, 12, T0 + 1.02);
    mms_sched_tick(s, T0 + 1.03);
    ok(is("S.iia", MMS_SERIES_QUEUED, NULL), "12 of 12: queued without waiting");
    put("S.enh", ECT, "ORIGINAL\\PRIMARY\\AXIAL", 120, -1, T0 + 1.04);
    mms_sched_tick(s, T0 + 1.05);
    ok(is("S.enh", MMS_SERIES_QUEUED, NULL), "one Enhanced CT image of 120 frames: queued");

    /* a late instance re-opens the series; it is queued again, once */
    put("S.iia", CT, "ORIGINAL\\PRIMARY\\AXIAL", 1, 12, T0 + 2);
    ok(is("S.iia", MMS_SERIES_RECEIVING, NULL), "a late instance re-opens a queued series");
    mms_sched_tick(s, T0 + 2.6);
    ok(is("S.iia", MMS_SERIES_QUEUED, NULL) && queued(ix) == 3,
       "queued again after stable_age_s, once (%lld queued)", (long long)queued(ix));
    mms_sched_free(s);

    /* the other rules */
    struct mms_sched_opts f = {.stable_age_s = 0.5,
                               .min_slices = 1,
                               .body_parts = "chest, HEAD",
                               .description_include = "B30",
                               .max_slice_thickness_mm = 5};
    ok(mms_sched_new(ix, &f, &s, why, sizeof why) == 0, "scheduler with filters");
    ok(strstr(mms_sched_select(s, "S.axial"), "BodyPartExamined 'ABDOMEN' is not in body_parts") !=
           NULL,
       "body_parts");
    mms_sched_free(s);
    f.body_parts = "Abdomen";
    f.description_exclude = "^ABDOMEN";
    mms_sched_new(ix, &f, &s, why, sizeof why);
    ok(strstr(mms_sched_select(s, "S.axial"), "matches description_exclude") != NULL,
       "description_exclude (body_parts is case-insensitive)");
    mms_sched_free(s);
    f.description_exclude = NULL;
    f.max_slice_thickness_mm = 1.0;
    mms_sched_new(ix, &f, &s, why, sizeof why);
    ok(strstr(mms_sched_select(s, "S.axial"), "slice thickness 1.5 mm over") != NULL,
       "max_slice_thickness_mm");
    mms_sched_free(s);
    f.description_include = "(unclosed";
    ok(mms_sched_new(ix, &f, &s, why, sizeof why) == MMS_ECONFIG &&
           strstr(why, "description_include") != NULL,
       "a bad regular expression is a configuration error: %s", why);

    /* a restart: stable is judged once, queued stays; jobs are claimed oldest first */
    mms_index_set_state(ix, "S.axial", MMS_SERIES_STABLE, NULL, T0 + 3, why, sizeof why);
    mms_index_close(ix);
    rc = mms_index_open(path, false, &ix, why, sizeof why);
    mms_sched_new(ix, &o, &s, why, sizeof why);
    ok(rc == 0 && mms_sched_recover(s, T0 + 4) == 0, "recover after reopening the index");
    ok(is("S.axial", MMS_SERIES_QUEUED, NULL) && is("S.enh", MMS_SERIES_QUEUED, NULL) &&
           is("S.iia", MMS_SERIES_QUEUED, NULL),
       "the stable series is queued, the queued ones stay");
    char order[256] = "", uid[65];
    int64_t id, run;
    while (mms_index_job_claim(ix, "n", T0 + 5, 30, uid, &id, &run, why, sizeof why) == 0)
        snprintf(order + strlen(order), sizeof order - strlen(order), "%s ", uid);
    is_str(order, "S.enh S.iia S.axial ", "jobs claim the queue oldest first, each once");
    mms_sched_free(s);
    mms_index_close(ix);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}

/* daemon: `mmsegd segment` (design.md section 10): files in, one label volume per CT series
 * out. Threads: the main thread of the command. */
#include "daemon/segment.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/uid.h"
#include "daemon/files.h"
#include "infer/infer.h"

static void
on_note(void *arg, const char *kind, const char *path, const char *reason)
{
    (void)arg;
    if (path != NULL)
        mms_log(MMS_LOG_INFO, "%s: %s: %s", kind, path, reason);
    else
        mms_log(MMS_LOG_INFO, "%s: %s", kind, reason);
}

static void
on_progress(void *arg, int64_t done, int64_t total)
{
    const char *uid = arg;
    fprintf(stderr, "\r%.40s: tile %lld/%lld (%3d%%)", uid, (long long)done, (long long)total,
            (int)(100 * done / total));
    if (done == total)
        fputc('\n', stderr);
}

/* The engine's view of a volume. */
static void
ct_of(const struct mms_volume *v, struct mms_ct *ct)
{
    memset(ct, 0, sizeof *ct);
    ct->cols = v->dims[0];
    ct->rows = v->dims[1];
    ct->slices = v->dims[2];
    ct->hu = v->hu;
    ct->col_mm = v->spacing[0];
    ct->row_mm = v->spacing[1];
    ct->slice_mm = v->spacing[2];
    for (int i = 0; i < 3; i++) {
        ct->u_c[i] = v->dir[i][0];
        ct->u_r[i] = v->dir[i][1];
        ct->normal[i] = v->normal[i];
    }
    ct->ipp = (const double(*)[3])v->ipp;
    ct->pos_mm = v->pos_mm;
}

/* The segment of label l as the card defines it, and its PatientSex variants. */
static void
segment_of(const struct mms_label *l, struct mms_seg_segment *s, struct mms_seg_segment sex[3])
{
    memset(s, 0, sizeof *s);
    s->label = l->id;
    s->segment_label = l->segment_label;
    s->category = (struct mms_seg_code){l->category.scheme, l->category.code, l->category.meaning};
    s->type = (struct mms_seg_code){l->type.scheme, l->type.code, l->type.meaning};
    s->has_modifier = l->has_modifier;
    s->modifier = (struct mms_seg_code){l->modifier.scheme, l->modifier.code, l->modifier.meaning};
    memcpy(s->rgb, l->rgb, 3);
    for (int x = 0; x < 3; x++) {
        const struct mms_label_sex *b = &l->by_sex[x];
        if (!b->present)
            continue;
        sex[x] = *s;
        if (b->segment_label != NULL)
            sex[x].segment_label = b->segment_label;
        if (b->has_category)
            sex[x].category =
                (struct mms_seg_code){b->category.scheme, b->category.code, b->category.meaning};
        if (b->has_type)
            sex[x].type = (struct mms_seg_code){b->type.scheme, b->type.code, b->type.meaning};
        if (b->has_rgb)
            memcpy(sex[x].rgb, b->rgb, 3);
        s->by_sex[x] = &sex[x];
    }
}

int
mms_segment_write_seg(const struct mms_model *m, const char *const *paths,
                      const struct mms_header *h0, const struct mms_volume *v,
                      const uint8_t *labels, int run, bool keep_empty, const char *description,
                      const char *path, struct mms_seg_result *res, char *why, size_t why_len)
{
    const struct mms_card *card = mms_model_card(m);
    struct mms_seg_segment *seg = calloc((size_t)card->n_labels + 1, sizeof *seg);
    struct mms_seg_segment *sex = calloc(3 * ((size_t)card->n_labels + 1), sizeof *sex);
    if (seg == NULL || sex == NULL) {
        free(seg);
        free(sex);
        return MMS_ENOMEM;
    }
    for (int i = 0; i < card->n_labels; i++)
        segment_of(&card->labels[i], &seg[i], &sex[3 * i]);

    /* the source's UIDs (derived where the files have none), and the SEG's own */
    struct mms_header h = *h0;
    mms_header_derive_uids(&h);
    char name[512], series_uid[65], sop_uid[65];
    snprintf(name, sizeof name, "mmsegd seg series|%s|%s|%d", h.series_uid, mms_model_sha256(m),
             run);
    mms_uid_uuid5(name, series_uid);
    snprintf(name, sizeof name, "mmsegd seg instance|%s|%s|%d", h.series_uid, mms_model_sha256(m),
             run);
    mms_uid_uuid5(name, sop_uid);

    struct mms_seg_input in = {
        .vol = v,
        .paths = paths,
        .labels = labels,
        .segments = seg,
        .n_segments = card->n_labels,
        .algorithm_name = card->name,
        .algorithm_version = card->version,
        .model_sha256 = mms_model_sha256(m),
        .series_description = description,
        .software_version = PACKAGE_VERSION,
        .series_number = 9900 + run,
        .study_uid = h.study_uid,
        .source_series_uid = h.series_uid,
        .series_uid = series_uid,
        .sop_instance_uid = sop_uid,
        .keep_empty_frames = keep_empty,
    };
    int rc = mms_seg_write(&in, path, res, why, why_len);
    free(seg);
    free(sex);
    return rc;
}

struct engine {
    struct mms_model *model;
    struct mms_backend *be;
    struct mms_net *net;
};

static int
engine_open(const struct segment_opts *o, struct engine *e, char *why, size_t why_len)
{
    memset(e, 0, sizeof *e);
    char mwhy[512];
    int rc = mms_model_load(o->model, &e->model, mwhy, sizeof mwhy);
    if (rc < 0)
        return mms_why(why, why_len, rc, "model %s: %s", o->model, mwhy);
    struct mms_backend_params bp = {.threads = o->threads, .device = o->device};
    if ((rc = mms_backend_open(o->backend, &bp, &e->be)) < 0)
        return mms_why(why, why_len, rc, "backend %s: %s", o->backend, mms_strerror(rc));
    const struct mms_card *card = mms_model_card(e->model);
    if ((rc = mms_net_new(e->model, e->be, card->inf.patch, 0, &e->net)) < 0)
        return mms_why(why, why_len, rc, "model %s on backend %s: %s", o->model,
                       mms_backend_name(e->be), mms_strerror(rc));
    return 0;
}

static void
engine_close(struct engine *e)
{
    mms_net_free(e->net);
    mms_backend_free(e->be);
    mms_model_free(e->model);
}

/* One series: files fs->f[idx[0..n)]. Returns 0, 1 when it failed, 2 when it was skipped
 * (reported). */
static int
segment_series(const struct mms_fileset *fs, const int *idx, int n, int number,
               const struct segment_opts *o, struct engine *e, FILE *out, cJSON *arr)
{
    const struct mms_header *h0 = &fs->f[idx[0]].h;
    const char *uid = h0->series_uid[0] ? h0->series_uid : "(no Series Instance UID)";
    int n_ct = 0; /* CT images other than localizers */
    for (int i = 0; i < n; i++)
        n_ct += mms_sop_class_is_ct(fs->f[idx[i]].h.sop_class) &&
                strstr(fs->f[idx[i]].h.image_type, "LOCALIZER") == NULL;
    cJSON *js = NULL;
    if (arr != NULL) {
        js = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, js);
        cJSON_AddStringToObject(js, "series_uid", h0->series_uid);
        cJSON_AddNumberToObject(js, "files", n);
    }
    if (n_ct == 0) {
        if (js != NULL)
            cJSON_AddStringToObject(js, "skipped", "no CT image other than localizers");
        else
            fprintf(out, "series %s: skipped, no CT image other than localizers (%d file%s)\n", uid,
                    n, n == 1 ? "" : "s");
        return 2;
    }

    double t0 = mms_mono_s();
    const char **paths = malloc((size_t)n * sizeof *paths);
    struct mms_header *h = malloc((size_t)n * sizeof *h);
    struct mms_volume *v = NULL;
    uint8_t *labels = NULL;
    char why[1024] = "", nifti[4096] = "", segpath[4200] = "";
    bool named = false; /* why begins with the series */
    int rc = MMS_ENOMEM;
    if (paths == NULL || h == NULL)
        goto out;
    for (int i = 0; i < n; i++) {
        paths[i] = fs->f[idx[i]].path;
        h[i] = fs->f[idx[i]].h;
    }
    if ((rc = mms_volume_build(paths, h, n, &o->vol, &v, why, sizeof why)) < 0) {
        named = true; /* "series UID: problem" */
        goto out;
    }
    double t1 = mms_mono_s();
    struct mms_ct ct;
    ct_of(v, &ct);
    size_t nv = (size_t)(v->dims[0] * v->dims[1] * v->dims[2]);
    struct mms_pipe_opts po = o->pipe;
    po.threads = o->threads;
    if (o->progress) {
        po.progress = on_progress;
        po.progress_arg = (void *)uid;
    }
    struct mms_pipe_stats st;
    if ((rc = mms_pipe_plan(&ct, e->model, e->net, &po, &st, why, sizeof why)) < 0)
        goto out; /* over max_memory_mb included: refused before allocating */
    if ((labels = malloc(nv)) == NULL) {
        rc = mms_why(why, sizeof why, MMS_ENOMEM, "out of memory for the labels");
        goto out;
    }
    if ((rc = mms_pipe_run(&ct, e->model, e->net, &po, labels, &st, why, sizeof why)) < 0)
        goto out;
    double t2 = mms_mono_s();
    if (o->nifti_dir != NULL) {
        mms_series_nifti_path(o->nifti_dir, h0->series_uid, number, nifti, sizeof nifti);
        if ((rc = mms_nifti_write_labels(v, labels, nifti, why, sizeof why)) < 0)
            goto out;
    }
    struct mms_seg_result sr = {0, 0};
    if (o->seg_dir != NULL) {
        char base[4096];
        mms_series_nifti_path(o->seg_dir, h0->series_uid, number, base, sizeof base);
        snprintf(segpath, sizeof segpath, "%.*s.seg.dcm", (int)(strlen(base) - 7), base);
        rc = mms_segment_write_seg(e->model, paths, h0, v, labels, 1, o->keep_empty_frames,
                                   o->seg_description, segpath, &sr, why, sizeof why);
        if (rc == MMS_EINVAL) { /* no organ found: nothing to send, not a failure */
            mms_log(MMS_LOG_NOTICE, "series %s: no segment found, no SEG written", uid);
            segpath[0] = '\0';
            rc = 0;
        } else if (rc < 0) {
            goto out;
        }
    }
    double t3 = mms_mono_s();

    int classes = mms_model_card(e->model)->arch.num_classes;
    int64_t count[256] = {0};
    for (size_t i = 0; i < nv; i++)
        count[labels[i]]++;
    if (js != NULL) {
        double dims[3] = {(double)v->dims[0], (double)v->dims[1], (double)v->dims[2]};
        double target[3] = {(double)st.target[0], (double)st.target[1], (double)st.target[2]};
        cJSON_AddItemToObject(js, "dims", cJSON_CreateDoubleArray(dims, 3));
        cJSON_AddItemToObject(js, "target", cJSON_CreateDoubleArray(target, 3));
        cJSON_AddNumberToObject(js, "tiles", (double)st.tiles);
        cJSON_AddNumberToObject(js, "passes", (double)st.passes);
        cJSON_AddBoolToObject(js, "tta", po.tta);
        cJSON_AddNumberToObject(js, "tile_step",
                                po.tile_step > 0 ? po.tile_step
                                                 : mms_model_card(e->model)->inf.tile_step);
        cJSON_AddNumberToObject(js, "separate_axis_in", st.sep_axis_in);
        cJSON_AddNumberToObject(js, "separate_axis_out", st.sep_axis_out);
        cJSON_AddBoolToObject(js, "irregular", v->irregular);
        cJSON_AddNumberToObject(js, "tilt_deg", v->tilt_deg);
        cJSON_AddNumberToObject(js, "memory_estimate", (double)st.memory_estimate);
        cJSON_AddNumberToObject(js, "mixed_voxels", (double)st.mixed_voxels);
        cJSON *jt = cJSON_AddObjectToObject(js, "times");
        cJSON_AddNumberToObject(jt, "load_s", t1 - t0);
        cJSON_AddNumberToObject(jt, "preprocess_s", st.preprocess_s);
        cJSON_AddNumberToObject(jt, "network_s", st.network_s);
        cJSON_AddNumberToObject(jt, "export_s", st.export_s);
        cJSON_AddNumberToObject(jt, "write_s", t3 - t2);
        cJSON_AddNumberToObject(jt, "total_s", t3 - t0);
        cJSON *jl = cJSON_AddObjectToObject(js, "labels");
        for (int c = 1; c < classes; c++)
            if (count[c] > 0) {
                char key[16];
                snprintf(key, sizeof key, "%d", c);
                cJSON_AddNumberToObject(jl, key, (double)count[c]);
            }
        if (nifti[0] != '\0')
            cJSON_AddStringToObject(js, "nifti", nifti);
        if (segpath[0] != '\0') {
            cJSON_AddStringToObject(js, "seg", segpath);
            cJSON_AddNumberToObject(js, "seg_segments", sr.segments);
            cJSON_AddNumberToObject(js, "seg_frames", (double)sr.frames);
        }
    } else {
        int64_t fg = (int64_t)nv - count[0];
        fprintf(out,
                "series %s: %lldx%lldx%lld -> %lldx%lldx%lld, %lld tiles, %lld passes%s; "
                "%lld labelled voxels; load %.2f s, preprocess %.2f s, network %.2f s, export "
                "%.2f s, total %.2f s\n",
                uid, (long long)v->dims[0], (long long)v->dims[1], (long long)v->dims[2],
                (long long)st.target[0], (long long)st.target[1], (long long)st.target[2],
                (long long)st.tiles, (long long)st.passes, po.tta ? "" : " (no mirroring)",
                (long long)fg, t1 - t0, st.preprocess_s, st.network_s, st.export_s, t3 - t0);
        if (nifti[0] != '\0')
            fprintf(out, "  nifti: %s\n", nifti);
        if (segpath[0] != '\0')
            fprintf(out, "  seg: %s (%d segments, %lld frames)\n", segpath, sr.segments,
                    (long long)sr.frames);
    }
    rc = 0;
out:
    if (rc < 0) {
        if (why[0] == '\0')
            snprintf(why, sizeof why, "%s", mms_strerror(rc));
        /* say which series, unless the reason does */
        const char *pre = named ? "" : "series ", *id = named ? "" : uid, *sep = named ? "" : ": ";
        if (js != NULL)
            cJSON_AddStringToObject(js, "error", why);
        else
            fprintf(out, "failed: %s%s%s%s\n", pre, id, sep, why);
        mms_log(MMS_LOG_ERR, "%s%s%s%s", pre, id, sep, why);
        rc = 1;
    }
    free(labels);
    mms_volume_free(v);
    free(paths);
    free(h);
    return rc;
}

int
mms_segment(const char *const *paths, int n, const struct segment_opts *o, FILE *out, char *why,
            size_t why_len)
{
    struct engine e;
    struct mms_fileset fs;
    memset(&fs, 0, sizeof fs);
    int rc = engine_open(o, &e, why, why_len);
    if (rc < 0)
        goto out;
    const struct mms_card *card = mms_model_card(e.model);
    if (o->pipe.tile_step > 0.0 && o->pipe.tile_step != card->inf.tile_step)
        mms_log(MMS_LOG_NOTICE, "tile step %g instead of the model card's %g", o->pipe.tile_step,
                card->inf.tile_step);
    if (!o->pipe.tta && card->inf.mirror_axes != 0)
        mms_log(MMS_LOG_NOTICE, "mirroring off (the model card mirrors %d axes)",
                __builtin_popcount(card->inf.mirror_axes));
    if ((rc = mms_fileset_read(paths, n, on_note, NULL, &fs, why, why_len)) < 0)
        goto out;
    cJSON *root = o->json ? cJSON_CreateObject() : NULL, *arr = NULL;
    if (root != NULL) {
        cJSON_AddStringToObject(root, "model", o->model);
        cJSON_AddStringToObject(root, "model_sha256", mms_model_sha256(e.model));
        cJSON_AddStringToObject(root, "backend", mms_backend_name(e.be));
        arr = cJSON_AddArrayToObject(root, "series");
    }
    int failed = 0, done = 0;
    for (int s = 0; s < fs.n_series; s++) {
        int r = segment_series(&fs, fs.idx + fs.start[s], fs.start[s + 1] - fs.start[s], s + 1, o,
                               &e, out, arr);
        failed += r == 1;
        done += r == 0;
    }
    if (root != NULL) {
        char *text = cJSON_Print(root);
        if (text != NULL)
            fprintf(out, "%s\n", text);
        free(text);
        cJSON_Delete(root);
    }
    if (rc >= 0 && done == 0 && failed == 0) {
        fprintf(stderr, "mmsegd segment: no CT series found\n");
        rc = 1;
    } else if (rc >= 0) {
        rc = failed > 0 ? 1 : 0;
    }
out:
    mms_fileset_free(&fs);
    engine_close(&e);
    return rc;
}

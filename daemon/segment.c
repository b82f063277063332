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
#include "daemon/files.h"
#include "daemon/work.h"
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

/* Progress on stderr: one line redrawn on a terminal (series, stage, tiles), plain lines per
 * stage otherwise. */
struct progress {
    bool tty;
    const char *uid;
    int number, total; /* series number of total */
};

static void
on_stage(void *arg, int stage)
{
    const struct progress *p = arg;
    static const char *const what[] = {"decoding", "segmenting", "writing"};
    if (p->tty)
        fprintf(stderr, "\r\033[K[%d/%d] %.40s: %s", p->number, p->total, p->uid, what[stage]);
    else
        fprintf(stderr, "series %d/%d %s: %s\n", p->number, p->total, p->uid, what[stage]);
    if (p->tty && stage == MMS_STAGE_OUTPUT)
        fputc('\n', stderr);
}

static void
on_progress(void *arg, int64_t done, int64_t total)
{
    const struct progress *p = arg;
    if (p->tty)
        fprintf(stderr, "\r\033[K[%d/%d] %.40s: segmenting, tile %lld/%lld (%3d%%)", p->number,
                p->total, p->uid, (long long)done, (long long)total, (int)(100 * done / total));
}

/* One series: files fs->f[idx[0..n)]. Returns 0, 1 when it failed, 2 when it was skipped
 * (reported). */
static int
segment_series(const struct mms_fileset *fs, const int *idx, int n, int number, int total,
               const struct segment_opts *o, const struct mms_engine *e, FILE *out, cJSON *arr)
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

    const char **paths = malloc((size_t)n * sizeof *paths);
    struct mms_header *h = malloc((size_t)n * sizeof *h);
    char why[1024] = "", nifti[4096] = "", segpath[4200] = "", pngpath[4200] = "",
         scpath[4200] = "", rtpath[4200] = "";
    struct mms_work_result wr;
    memset(&wr, 0, sizeof wr);
    int rc = MMS_ENOMEM;
    if (paths == NULL || h == NULL)
        goto out;
    for (int i = 0; i < n; i++) {
        paths[i] = fs->f[idx[i]].path;
        h[i] = fs->f[idx[i]].h;
    }
    struct mms_work_opts wo = o->wo;
    struct progress pr = {.tty = o->progress, .uid = uid, .number = number, .total = total};
    if (!o->json) {
        wo.pipe.progress = on_progress;
        wo.pipe.progress_arg = &pr;
        wo.on_stage = on_stage;
        wo.stage_arg = &pr;
    }
    if (o->nifti_dir != NULL) {
        mms_series_nifti_path(o->nifti_dir, h0->series_uid, number, nifti, sizeof nifti);
        wo.nifti_path = nifti;
    }
    if (o->seg_dir != NULL) {
        char base[4096];
        mms_series_nifti_path(o->seg_dir, h0->series_uid, number, base, sizeof base);
        snprintf(segpath, sizeof segpath, "%.*s.seg.dcm", (int)(strlen(base) - 7), base);
        snprintf(pngpath, sizeof pngpath, "%.*s.png", (int)(strlen(base) - 7), base);
        wo.seg_path = segpath;
        wo.preview_path = pngpath;
        if (wo.preview_sc) {
            snprintf(scpath, sizeof scpath, "%.*s.sc.dcm", (int)(strlen(base) - 7), base);
            wo.sc_path = scpath;
        }
        if (wo.rtstruct) {
            snprintf(rtpath, sizeof rtpath, "%.*s.rtstruct.dcm", (int)(strlen(base) - 7), base);
            wo.rtstruct_path = rtpath;
        }
    }
    if ((rc = mms_work_series(e, paths, h, n, &wo, &wr, why, sizeof why)) < 0)
        goto out;
    if (o->seg_dir != NULL && !wr.seg_written) {
        mms_log(MMS_LOG_NOTICE, "series %s: no segment found, no SEG written", uid);
        segpath[0] = '\0';
    }
    const struct mms_pipe_stats st = wr.st;
    const struct mms_seg_result sr = wr.seg;
    const int64_t *count = wr.count;
    size_t nv = (size_t)(wr.dims[0] * wr.dims[1] * wr.dims[2]);
    bool tta = o->wo.pipe.tta;

    int classes = mms_engine_card(e)->n_labels + 1; /* of a set: its merged labels */
    if (js != NULL) {
        double dims[3] = {(double)wr.dims[0], (double)wr.dims[1], (double)wr.dims[2]};
        double target[3] = {(double)st.target[0], (double)st.target[1], (double)st.target[2]};
        cJSON_AddItemToObject(js, "dims", cJSON_CreateDoubleArray(dims, 3));
        cJSON_AddItemToObject(js, "target", cJSON_CreateDoubleArray(target, 3));
        cJSON_AddNumberToObject(js, "tiles", (double)st.tiles);
        cJSON_AddNumberToObject(js, "passes", (double)st.passes);
        cJSON_AddBoolToObject(js, "tta", tta);
        cJSON_AddNumberToObject(js, "tile_step",
                                o->wo.pipe.tile_step > 0 ? o->wo.pipe.tile_step
                                                         : mms_engine_card(e)->inf.tile_step);
        cJSON_AddNumberToObject(js, "separate_axis_in", st.sep_axis_in);
        cJSON_AddNumberToObject(js, "separate_axis_out", st.sep_axis_out);
        cJSON_AddBoolToObject(js, "irregular", wr.irregular);
        cJSON_AddNumberToObject(js, "tilt_deg", wr.tilt_deg);
        cJSON_AddNumberToObject(js, "memory_estimate", (double)st.memory_estimate);
        cJSON_AddNumberToObject(js, "device_memory_estimate", (double)st.device_memory_estimate);
        cJSON_AddStringToObject(js, "engine", wr.engine);
        cJSON_AddBoolToObject(js, "window_on_backend", st.window_on_backend);
        if (wr.fallback[0] != '\0')
            cJSON_AddStringToObject(js, "cpu_fallback", wr.fallback);
        cJSON_AddNumberToObject(js, "mixed_voxels", (double)st.mixed_voxels);
        cJSON_AddNumberToObject(js, "postprocessed_voxels", (double)st.postprocessed_voxels);
        cJSON *jt = cJSON_AddObjectToObject(js, "times");
        cJSON_AddNumberToObject(jt, "load_s", wr.decode_s);
        cJSON_AddNumberToObject(jt, "preprocess_s", st.preprocess_s);
        cJSON_AddNumberToObject(jt, "network_s", st.network_s);
        cJSON_AddNumberToObject(jt, "export_s", st.export_s);
        cJSON_AddNumberToObject(jt, "write_s", wr.write_s);
        cJSON_AddNumberToObject(jt, "total_s", wr.total_s);
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
            if (wr.preview_written)
                cJSON_AddStringToObject(js, "preview", pngpath);
            if (wr.sc_written)
                cJSON_AddStringToObject(js, "preview_sc", scpath);
            if (wr.rtstruct_written) {
                cJSON_AddStringToObject(js, "rtstruct", rtpath);
                cJSON_AddNumberToObject(js, "rtstruct_rois", wr.rtstruct.rois);
                cJSON_AddNumberToObject(js, "rtstruct_contours", (double)wr.rtstruct.contours);
            }
            cJSON_AddNumberToObject(js, "seg_segments", sr.segments);
            cJSON_AddNumberToObject(js, "seg_frames", (double)sr.frames);
        }
    } else {
        int64_t fg = (int64_t)nv - count[0];
        fprintf(out,
                "series %s: %lldx%lldx%lld -> %lldx%lldx%lld, %lld tiles, %lld passes%s; "
                "%lld labelled voxels; load %.2f s, preprocess %.2f s, network %.2f s, export "
                "%.2f s, total %.2f s\n",
                uid, (long long)wr.dims[0], (long long)wr.dims[1], (long long)wr.dims[2],
                (long long)st.target[0], (long long)st.target[1], (long long)st.target[2],
                (long long)st.tiles, (long long)st.passes, tta ? "" : " (no mirroring)",
                (long long)fg, wr.decode_s, st.preprocess_s, st.network_s, st.export_s, wr.total_s);
        if (nifti[0] != '\0')
            fprintf(out, "  nifti: %s\n", nifti);
        if (segpath[0] != '\0')
            fprintf(out, "  seg: %s (%d segments, %lld frames)\n", segpath, sr.segments,
                    (long long)sr.frames);
        if (segpath[0] != '\0' && wr.preview_written)
            fprintf(out, "  preview: %s\n", pngpath);
        if (segpath[0] != '\0' && wr.sc_written)
            fprintf(out, "  preview_sc: %s\n", scpath);
        if (segpath[0] != '\0' && wr.rtstruct_written)
            fprintf(out, "  rtstruct: %s (%d ROIs, %lld contours)\n", rtpath, wr.rtstruct.rois,
                    (long long)wr.rtstruct.contours);
        if (wr.fallback[0] != '\0')
            fprintf(out, "  ran on the CPU: %s\n", wr.fallback);
    }
    rc = 0;
out:
    if (rc < 0) {
        if (why[0] == '\0')
            snprintf(why, sizeof why, "%s", mms_strerror(rc));
        /* say which series, unless the reason does */
        bool named = wr.why_names_series;
        const char *pre = named ? "" : "series ", *id = named ? "" : uid, *sep = named ? "" : ": ";
        if (js != NULL)
            cJSON_AddStringToObject(js, "error", why);
        else
            fprintf(out, "failed: %s%s%s%s\n", pre, id, sep, why);
        mms_log(MMS_LOG_ERR, "%s%s%s%s", pre, id, sep, why);
        rc = 1;
    }
    free(paths);
    free(h);
    return rc;
}

int
mms_segment(const char *const *paths, int n, const struct segment_opts *o, FILE *out, char *why,
            size_t why_len)
{
    struct mms_engine e;
    struct mms_fileset fs;
    memset(&fs, 0, sizeof fs);
    int rc = mms_engine_open(o->model, o->backend, o->device, o->precision, o->threads, &e, why,
                             why_len);
    if (rc < 0)
        goto out;
    const struct mms_card *card = mms_engine_card(&e);
    if (o->wo.pipe.tile_step > 0.0 && o->wo.pipe.tile_step != card->inf.tile_step)
        mms_log(MMS_LOG_NOTICE, "tile step %g instead of the model card's %g", o->wo.pipe.tile_step,
                card->inf.tile_step);
    if (!o->wo.pipe.tta && card->inf.mirror_axes != 0)
        mms_log(MMS_LOG_NOTICE, "mirroring off (the model card mirrors %d axes)",
                __builtin_popcount(card->inf.mirror_axes));
    if ((rc = mms_fileset_read(paths, n, on_note, NULL, &fs, why, why_len)) < 0)
        goto out;
    cJSON *root = o->json ? cJSON_CreateObject() : NULL, *arr = NULL;
    if (root != NULL) {
        cJSON_AddStringToObject(root, "model", o->model);
        cJSON_AddStringToObject(root, "model_sha256", e.sha256);
        cJSON_AddStringToObject(root, "backend", mms_backend_name(e.be));
        cJSON_AddStringToObject(root, "precision", mms_precision_name(mms_backend_precision(e.be)));
        arr = cJSON_AddArrayToObject(root, "series");
    }
    int failed = 0, done = 0;
    for (int s = 0; s < fs.n_series; s++) {
        int r = segment_series(&fs, fs.idx + fs.start[s], fs.start[s + 1] - fs.start[s], s + 1,
                               fs.n_series, o, &e, out, arr);
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
    mms_engine_close(&e);
    return rc;
}

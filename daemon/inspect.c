/* daemon: `mmsegd inspect` (design.md section 5): headers, series, volumes and reasons, as
 * text or JSON, and each volume as NIfTI on request. Threads: the main thread of the command
 * (the volume decoder starts its own). */
#include "daemon/inspect.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/err.h"
#include "daemon/files.h"
#include "dicom/dicom.h"

static bool
is_localizer(const struct mms_header *h)
{
    return strstr(h->image_type, "LOCALIZER") != NULL;
}

/* One "left out" entry: a text line, or a JSON object in arr. */
static void
left_out(FILE *out, cJSON *arr, int count, const char *unit, const char *reason)
{
    if (count == 0)
        return;
    if (arr != NULL) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "count", count);
        cJSON_AddStringToObject(o, "reason", reason);
        cJSON_AddItemToArray(arr, o);
    } else {
        fprintf(out, "  left out: %d %s%s, %s\n", count, unit, count == 1 ? "" : "s", reason);
    }
}

static cJSON *
vec3(const double *v)
{
    return cJSON_CreateDoubleArray(v, 3);
}

/* The volume part of the report: text lines, or fields of jv. */
static void
report_volume(const struct mms_volume *v, const struct mms_file *f, const int *idx, FILE *out,
              cJSON *jv, const char *nifti)
{
    float lo, hi;
    mms_volume_range(v, &lo, &hi);
    /* the transfer syntaxes of the files in the volume, each once */
    const char *ts[16];
    int nts = 0;
    for (int64_t k = 0; k < v->dims[2]; k++) {
        const char *t = f[idx[v->src[k].file]].h.transfer_syntax;
        bool seen = false;
        for (int i = 0; i < nts; i++)
            seen = seen || strcmp(ts[i], t) == 0;
        if (!seen && nts < 16)
            ts[nts++] = t;
    }
    if (jv == NULL) {
        fprintf(out,
                "  volume: %lld frames of %lldx%lld, pixel %.4g x %.4g mm, slice step %.4g mm "
                "(min %.4g, max %.4g)%s, tilt %.2f deg\n",
                (long long)v->dims[2], (long long)v->dims[1], (long long)v->dims[0], v->spacing[1],
                v->spacing[0], v->spacing[2], v->min_step_mm, v->max_step_mm,
                v->irregular ? ", irregular" : "", v->tilt_deg);
        fprintf(out, "  normal (%.4f, %.4f, %.4f), positions %.2f .. %.2f mm along it\n",
                v->normal[0], v->normal[1], v->normal[2], v->pos_mm[0], v->pos_mm[v->dims[2] - 1]);
        fprintf(out,
                "  row (%.4f, %.4f, %.4f), column (%.4f, %.4f, %.4f), origin (%.3f, %.3f, "
                "%.3f) mm\n",
                v->dir[0][0], v->dir[1][0], v->dir[2][0], v->dir[0][1], v->dir[1][1], v->dir[2][1],
                v->origin[0], v->origin[1], v->origin[2]);
        if (v->tilt_deg > 0.0)
            fprintf(out,
                    "  notice: gantry tilt %.1f deg handled: slices kept at their sheared "
                    "positions\n",
                    v->tilt_deg);
        fprintf(out, "  transfer syntax%s:", nts == 1 ? "" : "es");
        for (int i = 0; i < nts; i++)
            fprintf(out, " %s", ts[i]);
        fprintf(out, "\n  HU range: %.6g .. %.6g\n", lo, hi);
        if (v->n_stacks > 1)
            fprintf(out, "  stacks: %d, the largest is the volume\n", v->n_stacks);
        if (nifti != NULL)
            fprintf(out, "  nifti: %s\n", nifti);
        return;
    }
    double dims[3] = {(double)v->dims[0], (double)v->dims[1], (double)v->dims[2]};
    cJSON_AddItemToObject(jv, "dims", vec3(dims));
    cJSON_AddItemToObject(jv, "spacing", vec3(v->spacing));
    cJSON *step = cJSON_AddObjectToObject(jv, "slice_step");
    cJSON_AddNumberToObject(step, "median", v->spacing[2]);
    cJSON_AddNumberToObject(step, "min", v->min_step_mm);
    cJSON_AddNumberToObject(step, "max", v->max_step_mm);
    cJSON_AddBoolToObject(step, "irregular", v->irregular);
    cJSON_AddNumberToObject(jv, "tilt_deg", v->tilt_deg);
    cJSON_AddNumberToObject(jv, "n_stacks", v->n_stacks);
    cJSON_AddItemToObject(jv, "origin", vec3(v->origin));
    cJSON *dir = cJSON_AddArrayToObject(jv, "direction");
    for (int a = 0; a < 3; a++) {
        double d[3] = {v->dir[0][a], v->dir[1][a], v->dir[2][a]};
        cJSON_AddItemToArray(dir, vec3(d));
    }
    cJSON_AddItemToObject(jv, "normal", vec3(v->normal));
    cJSON_AddItemToObject(jv, "transfer_syntaxes", cJSON_CreateStringArray(ts, nts));
    double range[2] = {lo, hi};
    cJSON_AddItemToObject(jv, "hu_range", cJSON_CreateDoubleArray(range, 2));
    cJSON *sl = cJSON_AddArrayToObject(jv, "slices");
    for (int64_t k = 0; k < v->dims[2]; k++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "ipp", vec3(v->ipp[k]));
        cJSON_AddNumberToObject(o, "pos_mm", v->pos_mm[k]);
        cJSON_AddStringToObject(o, "path", f[idx[v->src[k].file]].path);
        cJSON_AddNumberToObject(o, "frame", (double)(v->src[k].frame + 1));
        cJSON_AddStringToObject(o, "sop_instance", v->src[k].sop_instance);
        cJSON_AddItemToArray(sl, o);
    }
    if (nifti != NULL)
        cJSON_AddStringToObject(jv, "nifti", nifti);
}

static const char *const reason_text[] = {
    [MMS_STACK_BAD_ORIENTATION] = "invalid orientation or position",
    [MMS_STACK_FRAME_OF_REF] = "other frame of reference",
    [MMS_STACK_ORIENTATION] = "other orientation",
    [MMS_STACK_SIZE] = "other rows or columns",
    [MMS_STACK_ACQUISITION] = "other acquisition or temporal position",
};

/* One series: files f[idx[0..n)], number `number` (1-based). Returns 0, or MMS_ENOMEM. */
static int
report_series(const struct mms_file *f, const int *idx, int n, int number,
              const struct inspect_opts *o, FILE *out, cJSON *series_arr)
{
    const struct mms_header *h0 = &f[idx[0]].h;
    const char **paths = malloc((size_t)n * sizeof *paths);
    struct mms_header *h = malloc((size_t)n * sizeof *h);
    cJSON *js = NULL, *jl = NULL;
    if (paths == NULL || h == NULL) {
        free(paths);
        free(h);
        return MMS_ENOMEM;
    }
    if (series_arr != NULL) {
        js = cJSON_CreateObject();
        cJSON_AddItemToArray(series_arr, js);
        cJSON_AddStringToObject(js, "series_uid", h0->series_uid);
        cJSON_AddStringToObject(js, "modality", h0->modality);
        cJSON_AddNumberToObject(js, "files", n);
        cJSON_AddStringToObject(js, "first", f[idx[0]].path);
        jl = cJSON_AddArrayToObject(js, "left_out");
    } else {
        fprintf(out, "series %s: modality %s, %d file%s, first %s\n",
                h0->series_uid[0] ? h0->series_uid : "(no Series Instance UID)",
                h0->modality[0] ? h0->modality : "-", n, n == 1 ? "" : "s", f[idx[0]].path);
    }
    int not_ct = 0, localizer = 0, no_geom = 0;
    const char *other_class = NULL;
    for (int j = 0; j < n; j++) {
        paths[j] = f[idx[j]].path;
        h[j] = f[idx[j]].h;
        if (!mms_sop_class_is_ct(h[j].sop_class)) {
            not_ct++;
            other_class = h[j].sop_class;
        } else if (is_localizer(&h[j])) {
            localizer++;
        } else if (h[j].frames == 1 && !h[j].has_geometry) {
            no_geom++;
        }
    }
    char reason[160];
    snprintf(reason, sizeof reason, "SOP class %s (not a CT image)",
             other_class != NULL ? other_class : "");
    left_out(out, jl, not_ct, "file", reason);
    left_out(out, jl, localizer, "localizer", "ImageType LOCALIZER");
    left_out(out, jl, no_geom, "file", "without orientation, position or size");

    struct mms_volume *v = NULL;
    char why[1024];
    int rc = mms_volume_build(paths, h, n, &o->vol, &v, why, sizeof why);
    if (rc == MMS_ENOMEM) {
        free(paths);
        free(h);
        return rc;
    }
    if (rc < 0) {
        if (js != NULL)
            cJSON_AddStringToObject(js, "error", why);
        else
            fprintf(out, "  no volume: %s\n", why);
    } else {
        char nifti[4096], nwhy[1024];
        const char *written = NULL;
        if (o->nifti_dir != NULL) {
            mms_series_nifti_path(o->nifti_dir, h0->series_uid, number, nifti, sizeof nifti);
            if (mms_nifti_write(v, nifti, nwhy, sizeof nwhy) == 0)
                written = nifti;
            else if (js != NULL)
                cJSON_AddStringToObject(js, "nifti_error", nwhy);
            else
                fprintf(out, "  nifti not written: %s\n", nwhy);
        }
        report_volume(v, f, idx, out, js != NULL ? cJSON_AddObjectToObject(js, "volume") : NULL,
                      written);
        for (int r = MMS_STACK_BAD_ORIENTATION; r <= MMS_STACK_ACQUISITION; r++)
            left_out(out, jl, v->left_out[r], "frame", reason_text[r]);
        mms_volume_free(v);
    }
    free(paths);
    free(h);
    return 0;
}

/* A "not read" or "ignored" entry. */
static void
file_note(FILE *out, cJSON *arr, const char *kind, const char *path, const char *reason)
{
    if (arr == NULL) {
        if (path != NULL)
            fprintf(out, "%s: %s: %s\n", kind, path, reason);
        else
            fprintf(out, "%s: %s\n", kind, reason);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (path != NULL)
        cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, "reason", reason);
    cJSON_AddItemToArray(arr, o);
}

struct notes {
    FILE *out;
    cJSON *ignored, *not_read;
};

static void
on_note(void *arg, const char *kind, const char *path, const char *reason)
{
    struct notes *n = arg;
    file_note(n->out, strcmp(kind, "ignored") == 0 ? n->ignored : n->not_read, kind, path, reason);
}

int
mms_inspect(const char *const *paths, int n, const struct inspect_opts *o, FILE *out)
{
    cJSON *root = o->json ? cJSON_CreateObject() : NULL;
    struct notes notes = {out, NULL, NULL};
    cJSON *j_series = NULL;
    if (root != NULL) {
        notes.ignored = cJSON_AddArrayToObject(root, "ignored");
        notes.not_read = cJSON_AddArrayToObject(root, "not_read");
        j_series = cJSON_AddArrayToObject(root, "series");
    }
    struct mms_fileset fs;
    char why[1024];
    int rc = mms_fileset_read(paths, n, on_note, &notes, &fs, why, sizeof why);
    if (rc < 0) {
        if (rc != MMS_ENOMEM)
            fprintf(out, "%s\n", why);
        goto done;
    }
    for (int s = 0; s < fs.n_series; s++)
        if ((rc = report_series(fs.f, fs.idx + fs.start[s], fs.start[s + 1] - fs.start[s], s + 1, o,
                                out, j_series)) < 0)
            break;
    if (root != NULL) {
        cJSON_AddNumberToObject(root, "files", fs.listed);
        cJSON_AddNumberToObject(root, "dicom", fs.dicom);
        char *text = cJSON_Print(root);
        if (text == NULL)
            rc = MMS_ENOMEM;
        else
            fprintf(out, "%s\n", text);
        free(text);
    } else {
        fprintf(out, "%d file%s, %d DICOM, %d ignored, %d series\n", fs.listed,
                fs.listed == 1 ? "" : "s", fs.dicom, fs.ignored, fs.n_series);
    }
    if (rc == 0)
        rc = fs.dicom > 0 ? 0 : MMS_ENOENT;
done:
    cJSON_Delete(root);
    mms_fileset_free(&fs);
    return rc;
}

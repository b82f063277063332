/* Fuzz target: the writers of results (dicom/seg.cc, daemon/preview.c, dicom/nifti.c) fed
 * random labels, segments and geometry. A real 5-slice CT series of the shared test data
 * (pydicom's dicomdirtests CT5N, 16 x 16) is read once and its volume built; each input then
 * gives that volume new geometry within the limits mms_volume_build() lets through (pixel
 * spacing and slice steps 1e-3 to 1e3 mm, regular or not, any orientation, gantry tilt up to
 * 60 degrees, positions up to 1e5 mm), fewer slices, random HU, random labels and a random
 * set of segments, and writes the SEG, the RT Structure Set, the preview PNG and its Secondary
 * Capture, and both NIfTI files.
 * Promises checked: the SEG is written exactly when a segment has a voxel, with one segment per
 * such label and one frame per slice holding it (per slice and segment with keep_empty; one
 * per slice for a label-map SEG); the RT Structure Set likewise, with an ROI per such label and
 * a contour at least on every slice holding it; the preview counts every label present, and
 * its Secondary Capture is written; NIfTI writing succeeds. A crash, a leak or undefined
 * behaviour is a finding too. Threads: libFuzzer's one. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "daemon/files.h"
#include "daemon/preview.h"
#include "dicom/dicom.h"
#include "dicom/seg.h"
#include "dicom/rtstruct.h"
#include "dicom/sc.h"
#include "infer/infer.h"
#include "tests/find-testdata.h"
#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SERIES "pydicom/src/pydicom/data/test_files/dicomdirtests/98892001/CT5N"
#define MAX_SEGMENTS 8

static char dir[512];
static struct mms_fileset fs;
static const char **paths;
static struct mms_header *heads;
static struct mms_volume *base;

static void
quiet(int level, const char *msg, void *arg)
{
    (void)level;
    (void)msg;
    (void)arg;
}

static void
cleanup(void)
{
    fuzz_rmtree(dir, false);
    mms_volume_free(base);
    free(paths);
    free(heads);
    mms_fileset_free(&fs);
}

/* Without its series the target cannot run: say so and stop. */
static void
setup_failed(const char *what, const char *why)
{
    fprintf(stderr, "fuzz-outputs: %s%s%s\n", what, why[0] ? ": " : "", why);
    exit(1);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mms_log_set_sink(quiet, NULL);
    char td[512], series[1024], why[1024] = "";
    if (!find_testdata(td, sizeof td))
        setup_failed("the shared test data was not found (set MMS_TESTDATA)", "");
    snprintf(series, sizeof series, "%s/" SERIES, td);
    const char *arg = series;
    if (mms_fileset_read(&arg, 1, NULL, NULL, &fs, why, sizeof why) < 0 || fs.n_series < 1)
        setup_failed(series, why);
    int n = fs.start[1] - fs.start[0];
    paths = malloc((size_t)n * sizeof *paths);
    heads = malloc((size_t)n * sizeof *heads);
    if (paths == NULL || heads == NULL)
        setup_failed("out of memory", "");
    for (int i = 0; i < n; i++) {
        paths[i] = fs.f[fs.idx[i]].path;
        heads[i] = fs.f[fs.idx[i]].h;
    }
    struct mms_volume_opts vo = {.stack = {.max_gap_ratio = 2.0}, .max_voxels = 1 << 20};
    if (mms_volume_build(paths, heads, n, &vo, &base, why, sizeof why) < 0)
        setup_failed(series, why);
    if (!fuzz_tmpdir("fuzz-outputs", dir, sizeof dir))
        setup_failed("no temporary folder", "");
    atexit(cleanup);
    return 0;
}

/* ------------------------------------------------------------------ reading the input */
struct rd {
    const uint8_t *p;
    size_t n, at;
};

static uint32_t
take(struct rd *r, int bytes)
{
    uint32_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | (r->at < r->n ? r->p[r->at++] : 0);
    return v;
}

static double
unit(struct rd *r) /* [0, 1] */
{
    return take(r, 2) / 65535.0;
}

static double
log_range(struct rd *r, double lo, double hi)
{
    return lo * pow(hi / lo, unit(r));
}

static uint64_t
next(uint64_t *s) /* xorshift64 */
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void
cross(const double a[3], const double b[3], double out[3])
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int
cmp_label(const void *a, const void *b)
{
    return ((const struct mms_label *)a)->id - ((const struct mms_label *)b)->id;
}

/* The volume's new geometry: row and column directions from three angles (or the patient
 * axes), spacing, slice steps, tilt and origin from the input. */
static void
geometry(struct rd *r, struct mms_volume *v)
{
    double row[3] = {1, 0, 0}, col[3] = {0, 1, 0}, nor[3];
    if (take(r, 1) & 1) {
        double a = unit(r) * 2 * M_PI, b = unit(r) * 2 * M_PI, c = unit(r) * 2 * M_PI;
        double R[3][3] = {
            {cos(a) * cos(b), cos(a) * sin(b) * sin(c) - sin(a) * cos(c),
             cos(a) * sin(b) * cos(c) + sin(a) * sin(c)},
            {sin(a) * cos(b), sin(a) * sin(b) * sin(c) + cos(a) * cos(c),
             sin(a) * sin(b) * cos(c) - cos(a) * sin(c)},
            {-sin(b), cos(b) * sin(c), cos(b) * cos(c)},
        };
        for (int i = 0; i < 3; i++) {
            row[i] = R[i][0];
            col[i] = R[i][1];
        }
    }
    cross(row, col, nor);
    v->spacing[0] = log_range(r, MMS_SPACING_MIN_MM, MMS_SPACING_MAX_MM);
    v->spacing[1] = take(r, 1) & 1 ? v->spacing[0] : log_range(r, MMS_SPACING_MIN_MM, 1e3);
    double tilt = take(r, 1) & 1 ? (unit(r) * 2 - 1) * 60.0 : 0.0;
    double t = tan(tilt * M_PI / 180.0), sd[3], len = 0;
    for (int i = 0; i < 3; i++) {
        sd[i] = nor[i] + t * col[i];
        len += sd[i] * sd[i];
    }
    len = sqrt(len);
    for (int i = 0; i < 3; i++) {
        v->dir[i][0] = row[i];
        v->dir[i][1] = col[i];
        v->dir[i][2] = sd[i] / len;
        v->normal[i] = nor[i];
        v->origin[i] = (unit(r) * 2 - 1) * 1e5;
    }
    double step = log_range(r, MMS_SPACING_MIN_MM, MMS_SPACING_MAX_MM), d = 0.0;
    bool irregular = v->dims[2] > 2 && (take(r, 1) & 1);
    double steps[64];
    int ns = (int)v->dims[2];
    for (int k = 0; k < ns; k++) {
        if (k > 0) {
            double s = irregular ? step * (1.0 + 3.0 * unit(r)) : step;
            if (s > MMS_SPACING_MAX_MM)
                s = MMS_SPACING_MAX_MM;
            steps[k - 1] = s;
            d += s;
        }
        double p = 0.0;
        for (int i = 0; i < 3; i++) {
            v->ipp[k][i] = v->origin[i] + d * (nor[i] + t * col[i]);
            p += v->ipp[k][i] * nor[i];
        }
        v->pos_mm[k] = p;
    }
    v->tilt_deg = fabs(tilt);
    v->irregular = irregular;
    if (ns > 1) {
        qsort(steps, (size_t)ns - 1, sizeof steps[0], cmp_double);
        v->spacing[2] = steps[(ns - 1) / 2];
        v->min_step_mm = steps[0];
        v->max_step_mm = steps[ns - 2];
    } else {
        v->spacing[2] = step;
        v->min_step_mm = v->max_step_mm = 0.0;
    }
}

/* ------------------------------------------------------------------ one input */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd r = {data, size, 0};
    struct mms_volume v = *base;
    int64_t first = take(&r, 1) % base->dims[2];
    v.dims[2] = 1 + take(&r, 1) % (base->dims[2] - first);
    const int64_t plane = v.dims[0] * v.dims[1], nv = plane * v.dims[2];
    v.src = base->src + first;
    v.ipp = malloc((size_t)v.dims[2] * sizeof *v.ipp);
    v.pos_mm = malloc((size_t)v.dims[2] * sizeof *v.pos_mm);
    v.hu = malloc((size_t)nv * sizeof *v.hu);
    uint8_t *labels = malloc((size_t)nv);
    FUZZ_CHECK(v.ipp != NULL && v.pos_mm != NULL && v.hu != NULL && labels != NULL);
    geometry(&r, &v);

    /* HU and labels: a generator seeded from the input, the rest of the input over it */
    uint64_t s = 0x9E3779B97F4A7C15ull ^ take(&r, 4);
    int max_label = 1 + (int)(take(&r, 1) % 255), density = (int)(take(&r, 1) % 101);
    for (int64_t i = 0; i < nv; i++) {
        v.hu[i] = (float)((int64_t)(next(&s) % 4096) - 1024);
        labels[i] = (int)(next(&s) % 100) < density ? (uint8_t)(1 + next(&s) % max_label) : 0;
    }
    for (int64_t i = 0; i < nv && r.at < r.n; i++)
        labels[i] = (uint8_t)take(&r, 1);

    /* the segments and the card with the same labels */
    struct mms_seg_segment seg[MAX_SEGMENTS];
    struct mms_label card_labels[MAX_SEGMENTS];
    char names[MAX_SEGMENTS][65];
    int n_seg = 0, n_want = (int)(take(&r, 1) % (MAX_SEGMENTS + 1));
    int form = (int)take(&r, 1);
    bool keep_empty = form & 1, labelmap = form & 2;
    for (int i = 0; i < n_want; i++) {
        int lab = 1 + (int)(take(&r, 1) % 255);
        bool dup = false;
        for (int j = 0; j < n_seg; j++)
            dup |= seg[j].label == lab;
        if (dup)
            continue;
        /* a name as a valid card has it (infer/card.c dicom_text): 1 to 64 printable ASCII
           characters, not only spaces, without a backslash */
        char *name = names[n_seg];
        int len = 1 + (int)(take(&r, 1) % 64);
        for (int j = 0; j < len; j++) {
            name[j] = (char)(0x20 + take(&r, 1) % 95);
            if (name[j] == '\\')
                name[j] = '/';
        }
        name[len] = '\0';
        if (strspn(name, " ") == (size_t)len) /* not only spaces */
            name[0] = 'x';
        struct mms_seg_segment *g = &seg[n_seg];
        memset(g, 0, sizeof *g);
        g->label = lab;
        g->segment_label = name;
        g->category = (struct mms_seg_code){"SCT", "123037004", "Anatomical Structure"};
        g->type = (struct mms_seg_code){"SCT", "10200004", name};
        g->has_modifier = take(&r, 1) & 1;
        g->modifier = (struct mms_seg_code){"SCT", "24028007", "Right"};
        for (int c = 0; c < 3; c++)
            g->rgb[c] = (uint8_t)take(&r, 1);
        struct mms_label *l = &card_labels[n_seg];
        memset(l, 0, sizeof *l);
        l->id = lab;
        l->name = l->segment_label = name;
        memcpy(l->rgb, g->rgb, 3);
        n_seg++;
    }
    int present = 0;
    int64_t frames = 0, pairs = 0; /* (slice, segment present) pairs with a voxel */
    bool in_volume[256] = {false};
    for (int64_t i = 0; i < nv; i++)
        in_volume[labels[i]] = true;
    for (int j = 0; j < n_seg; j++) {
        if (!in_volume[seg[j].label])
            continue;
        present++;
        for (int64_t k = 0; k < v.dims[2]; k++) {
            bool here = memchr(labels + k * plane, seg[j].label, (size_t)plane) != NULL;
            frames += keep_empty || here;
            pairs += here;
        }
    }

    if (labelmap) /* one frame per slice */
        frames = present > 0 ? v.dims[2] : 0;

    char path[600], why[1024];
    snprintf(path, sizeof path, "%s/seg.dcm", dir);
    struct mms_seg_input in = {
        .vol = &v,
        .paths = paths,
        .labels = labels,
        .segments = seg,
        .n_segments = n_seg,
        .algorithm_name = "fuzz",
        .algorithm_version = "1",
        .model_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        .software_version = "0",
        .series_number = 9901,
        .study_uid = heads[0].study_uid,
        .source_series_uid = heads[0].series_uid,
        .frame_of_ref_uid = heads[0].slice.frame_of_ref,
        .series_uid = "2.25.1",
        .sop_instance_uid = "2.25.2",
        .form = {.labelmap = labelmap, .keep_empty = keep_empty},
    };
    struct mms_seg_result res = {0, 0};
    int rc = mms_seg_write(&in, path, &res, why, sizeof why);
    if (present == 0) {
        FUZZ_CHECK(rc == MMS_EINVAL);
    } else {
        if (rc != 0)
            fprintf(stderr, "SEG not written: %s\n", why);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(res.segments == present && res.frames == frames);
        FUZZ_CHECK(access(path, R_OK) == 0);
    }
    unlink(path);

    /* the RT Structure Set: an ROI per segment present, a contour at least per slice of it */
    struct mms_rtstruct_roi rois[MAX_SEGMENTS];
    for (int j = 0; j < n_seg; j++) {
        rois[j].label = seg[j].label;
        rois[j].name = seg[j].segment_label;
        memcpy(rois[j].rgb, seg[j].rgb, 3);
    }
    struct mms_rtstruct_input rin = {
        .vol = &v,
        .paths = paths,
        .labels = labels,
        .rois = rois,
        .n_rois = n_seg,
        .algorithm_name = "fuzz",
        .algorithm_version = "1",
        .software_version = "0",
        .series_number = 9851,
        .study_uid = heads[0].study_uid,
        .source_series_uid = heads[0].series_uid,
        .frame_of_ref_uid = heads[0].slice.frame_of_ref,
        .series_uid = "2.25.3",
        .sop_instance_uid = "2.25.4",
    };
    struct mms_rtstruct_result rres = {0, 0, 0};
    snprintf(path, sizeof path, "%s/rtstruct.dcm", dir);
    rc = n_seg > 0 ? mms_rtstruct_write(&rin, path, &rres, why, sizeof why) : MMS_EINVAL;
    if (present == 0) {
        FUZZ_CHECK(rc == MMS_EINVAL);
    } else {
        if (rc != 0)
            fprintf(stderr, "RT Structure Set not written: %s\n", why);
        FUZZ_CHECK(rc == 0 && rres.rois == present && rres.contours >= pairs);
        FUZZ_CHECK(access(path, R_OK) == 0);
    }
    unlink(path);

    /* the preview: every label present is counted, whatever the card names */
    qsort(card_labels, (size_t)n_seg, sizeof card_labels[0], cmp_label);
    struct mms_card card;
    memset(&card, 0, sizeof card);
    card.name = "fuzz";
    card.version = "1";
    card.n_labels = n_seg;
    card.labels = card_labels;
    struct mms_preview_result pr;
    snprintf(path, sizeof path, "%s/preview.png", dir);
    rc = mms_preview_write(&v, labels, &card, path, &pr, why, sizeof why);
    FUZZ_CHECK(rc == 0 || rc == MMS_EINVAL);
    if (rc == 0) {
        int distinct = 0;
        for (int l = 1; l < 256; l++)
            distinct += in_volume[l];
        FUZZ_CHECK(pr.n_labels == distinct && pr.width > 0 && pr.height > 0);
        FUZZ_CHECK(access(path, R_OK) == 0);
    } else {
        FUZZ_CHECK(why[0] != '\0');
    }
    unlink(path);

    /* the same picture as a Secondary Capture */
    struct mms_preview_image img;
    if (mms_preview_render(&v, labels, &card, &img, NULL, why, sizeof why) == 0) {
        struct mms_sc_input sin = {
            .source_path = paths[0],
            .study_uid = heads[0].study_uid,
            .source_series_uid = heads[0].series_uid,
            .series_uid = "2.25.5",
            .sop_instance_uid = "2.25.6",
            .series_number = 9801,
            .algorithm_name = "fuzz",
            .software_version = "0",
            .rgb = img.rgb,
            .width = img.width,
            .height = img.height,
        };
        snprintf(path, sizeof path, "%s/sc.dcm", dir);
        rc = mms_sc_write(&sin, path, why, sizeof why);
        if (rc != 0)
            fprintf(stderr, "Secondary Capture not written: %s\n", why);
        FUZZ_CHECK(rc == 0 && access(path, R_OK) == 0);
        unlink(path);
    }
    mms_preview_image_free(&img);

    /* both NIfTI files, compressed or not */
    bool gz = take(&r, 1) & 1;
    snprintf(path, sizeof path, "%s/ct.nii%s", dir, gz ? ".gz" : "");
    rc = mms_nifti_write(&v, path, why, sizeof why);
    if (rc != 0)
        fprintf(stderr, "NIfTI not written: %s\n", why);
    FUZZ_CHECK(rc == 0);
    unlink(path);
    snprintf(path, sizeof path, "%s/labels.nii%s", dir, gz ? ".gz" : "");
    rc = mms_nifti_write_labels(&v, labels, path, why, sizeof why);
    FUZZ_CHECK(rc == 0);
    unlink(path);

    free(v.ipp);
    free(v.pos_mm);
    free(v.hu);
    free(labels);
    return 0;
}

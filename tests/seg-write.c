/* seg-write: the SEG of a given label volume, for the SEG tests and benchmark.
 *
 *   seg-write [--keep-empty] [--labelmap] [--rtstruct] MODEL DICOM_PATH LABELS.raw OUT.dcm
 *
 * MODEL gives the segments (the card's labels); DICOM_PATH holds one CT series; LABELS.raw is
 * uint8, columns x rows x slices bytes in the order of the series' volume (slice, row,
 * column; slices ascending along the normal, as `mmsegd inspect --nifti` writes them). Prints
 * "segments S frames F seconds T" (T: the SEG writing alone) and exits 0, or 1 with a reason.
 * With --rtstruct it writes the RT Structure Set instead and prints "rois R contours C points P
 * seconds T". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "daemon/files.h"
#include "daemon/work.h"
#include "dicom/dicom.h"
#include "infer/infer.h"

static int
die(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "seg-write: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

int
main(int argc, char **argv)
{
    struct mms_seg_form form = {.labelmap = false, .keep_empty = false};
    bool rtstruct = false;
    int opt = 1;
    for (; opt < argc && strncmp(argv[opt], "--", 2) == 0; opt++) {
        if (strcmp(argv[opt], "--keep-empty") == 0)
            form.keep_empty = true;
        else if (strcmp(argv[opt], "--labelmap") == 0)
            form.labelmap = true;
        else if (strcmp(argv[opt], "--rtstruct") == 0)
            rtstruct = true;
        else
            break;
    }
    if (argc - opt != 4) {
        fprintf(stderr, "usage: seg-write [--keep-empty] [--labelmap] [--rtstruct] MODEL "
                        "DICOM_PATH LABELS.raw OUT.dcm\n");
        return 2;
    }
    char **a = argv + opt, why[1024] = "";
    struct mms_model *m = NULL;
    if (mms_model_load(a[0], &m, why, sizeof why) < 0)
        return die("%s: %s", a[0], why);
    struct mms_fileset fs;
    if (mms_fileset_read((const char *const *)&a[1], 1, NULL, NULL, &fs, why, sizeof why) < 0 ||
        fs.n_series < 1)
        return die("%s: %s", a[1], why[0] ? why : "no DICOM series");
    int n = fs.start[1] - fs.start[0];
    const char **paths = malloc((size_t)n * sizeof *paths);
    struct mms_header *h = malloc((size_t)n * sizeof *h);
    for (int i = 0; i < n; i++) {
        paths[i] = fs.f[fs.idx[i]].path;
        h[i] = fs.f[fs.idx[i]].h;
    }
    struct mms_volume_opts vo = {.stack = {.max_gap_ratio = 2.0}, .max_voxels = 1000000000};
    struct mms_volume *v = NULL;
    if (mms_volume_build(paths, h, n, &vo, &v, why, sizeof why) < 0)
        return die("%s: %s", a[1], why);
    size_t nv = (size_t)(v->dims[0] * v->dims[1] * v->dims[2]);
    uint8_t *labels = malloc(nv + 1);
    FILE *f = fopen(a[2], "rb");
    if (f == NULL || fread(labels, 1, nv + 1, f) != nv)
        return die("%s: %s", a[2], "not columns x rows x slices bytes");
    fclose(f);
    struct timespec t0, t1;
    struct mms_seg_result res = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct mms_rtstruct_result rr = {0, 0, 0};
    int rc = rtstruct ? mms_work_write_rtstruct(mms_model_card(m), mms_model_sha256(m), paths,
                                                &h[0], v, labels, 1, a[3], &rr, why, sizeof why)
                      : mms_work_write_seg(mms_model_card(m), mms_model_sha256(m), paths, &h[0], v,
                                           labels, 1, form, NULL, a[3], &res, why, sizeof why);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc < 0)
        return die("%s: %s", a[3], why);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (rtstruct)
        printf("rois %d contours %lld points %lld seconds %.3f\n", rr.rois, (long long)rr.contours,
               (long long)rr.points, s);
    else
        printf("segments %d frames %lld seconds %.3f\n", res.segments, (long long)res.frames, s);
    free(labels);
    mms_volume_free(v);
    free(paths);
    free(h);
    mms_fileset_free(&fs);
    mms_model_free(m);
    return 0;
}

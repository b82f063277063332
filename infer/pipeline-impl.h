/* infer: internals of the pipeline shared by resample.c and pipeline.c. */
#ifndef MMS_PIPELINE_IMPL_H
#define MMS_PIPELINE_IMPL_H

#include "infer/pipeline.h"

/* A 3D array seen through strides (elements, possibly negative): element (i0, i1, i2) is at
 * p[i0 * s[0] + i1 * s[1] + i2 * s[2]]. */
struct mms__view {
    float *p;
    int64_t n[3];
    int64_t s[3];
};

/* What a load from the source does before use: CT normalisation (mmunet.md 5.3). */
struct mms__norm {
    bool on;
    float lo, hi, mean, std;
};

/* One resampling pass along axis `axis` of src into dst (same shape except along axis).
 * src_coord[j] (dst->n[axis] values) is the source coordinate of output index j, in source
 * index units. shift (may be NULL) adds shift[i0] to it, i0 being the index along axis 0
 * (only for axis 1 or 2). order: 0, 1 or 3. clip_axis: -1 clips every stored value to
 * [clip_lo[0], clip_hi[0]], 0..2 clips by the index along that axis, -2 does not clip.
 * norm applies to values loaded from src. threads: OpenMP threads (0 = default).
 * Returns 0 or MMS_ENOMEM. */
int mms__resample_pass(const struct mms__view *src, struct mms__view *dst, int axis,
                       const double *src_coord, const double *shift, int order,
                       const struct mms__norm *norm, int clip_axis, const float *clip_lo,
                       const float *clip_hi, int threads);

/* The source coordinates of nnU-Net's (and scikit-image's) grid mode: (j + 0.5) n_in / n_out
 * - 0.5 for j < n_out. */
void mms__grid_coords(int64_t n_in, int64_t n_out, double *coord);

/* Bytes of scratch one pass needs per thread. */
size_t mms__pass_scratch(int64_t n_in, int64_t n_out);

#endif

/* infer: the inference pipeline of mmunet.md section 5 (nnU-Net v2 semantics), from a CT
 * volume in DICOM order to a label volume on the same grid.
 *
 * Plain C, no DICOM type: the caller describes its volume with struct mms_ct. The building
 * blocks (new shape, separate axis, resampling, tile starts, Gaussian map) are public so that
 * tests compare each against scipy and scikit-image. Threads: every function may be called
 * from any thread; mms_pipe_run() uses the network's thread and OpenMP threads of its own. */
#ifndef MMS_PIPELINE_H
#define MMS_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer/infer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------------------------- building blocks
 * Arrays are 3D, row-major, shape[0] outermost. Spacings are per array axis, in mm. */

/* Hard limits on what a job may plan, whatever the memory limit: a target axis longer than
 * MMS_PIPE_MAX_AXIS voxels or a target volume over MMS_PIPE_MAX_VOXELS is refused, and so is a
 * spacing outside MMS_PIPE_MIN_SPACING_MM..MMS_PIPE_MAX_SPACING_MM (the DICOM reader's limits)
 * or an input over MMS_PIPE_MAX_VOXELS. They keep every size a job derives within 64 bits. */
#define MMS_PIPE_MAX_AXIS ((int64_t)1 << 20)
#define MMS_PIPE_MAX_VOXELS ((int64_t)1 << 32)
#define MMS_PIPE_MIN_SPACING_MM 1e-3
#define MMS_PIPE_MAX_SPACING_MM 1e3

/* New shape of mmunet.md 5.4: round_half_even(spacing[i] / target[i] * shape[i]), at least 1,
 * computed in double: a result over MMS_PIPE_MAX_AXIS, or not a number, is given as
 * MMS_PIPE_MAX_AXIS + 1, which the pipeline refuses. */
void mms_pipe_new_shape(const int64_t shape[3], const double spacing[3], const double target[3],
                        int64_t out[3]);

/* The separate axis of mmunet.md 5.4 (nnU-Net's determine_do_sep_z_and_axis): 0..2, or -1. */
int mms_pipe_separate_axis(const double current[3], const double target[3], double threshold);

/* Resample one channel as nnU-Net's resample_data_or_seg_to_shape does (mmunet.md 5.4):
 * order 0, 1 or 3 (cubic B-spline with prefilter, clipped to the input's range) on the whole
 * array, or, when mms_pipe_separate_axis() finds an axis, `order` in the planes across it
 * (clipped per plane) and order_z (0 or 1) along it. sep_axis overrides the choice when >= 0;
 * -1 lets current/target decide; -2 forces the full 3D path.
 * Ownership: in and out belong to the caller; out holds shape_out[0]*[1]*[2] floats.
 * Returns 0, MMS_EINVAL (bad order or shape), MMS_ENOMEM. */
int mms_pipe_resample(const float *in, const int64_t shape_in[3], float *out,
                      const int64_t shape_out[3], const double current[3], const double target[3],
                      int order, int order_z, double threshold, int sep_axis);

/* Tile starts along one axis (mmunet.md 5.6): n = ceil((len - patch) / (patch * step)) + 1
 * starts, rounded half to even; one start at 0 when len <= patch. starts may be NULL to
 * count. Returns the number of starts. */
int64_t mms_pipe_tile_starts(int64_t len, int64_t patch, double step, int64_t *starts);

/* The Gaussian importance map of mmunet.md 5.6 into g (patch[0]*[1]*[2] floats). */
void mms_pipe_gaussian(const int64_t patch[3], double sigma_scale, double peak, float *g);

/* ----------------------------------------------------------------------------- the pipeline */

/* A CT volume in DICOM order: hu[(k * rows + r) * cols + c]. */
struct mms_ct {
    int64_t cols, rows, slices;
    const float *hu;
    double col_mm, row_mm;  /* PixelSpacing[1], PixelSpacing[0] */
    double slice_mm;        /* the median step between slices along the normal */
    double u_c[3], u_r[3];  /* LPS: ImageOrientationPatient[0:3] (column index grows along it),
                               [3:6] */
    double normal[3];       /* u_c x u_r */
    const double (*ipp)[3]; /* per slice, ascending along the normal */
    const double *pos_mm;   /* per slice: ipp projected on the normal, ascending */
};

/* Where the sliding window runs. AUTO: on the backend when its memory is the device's and
 * it has the window slots, else on the host. BACKEND: on the backend's slots whatever its
 * memory (the CPU backend has them too), MMS_ENOTSUP when it has none. */
enum mms_pipe_window { MMS_PIPE_WINDOW_AUTO, MMS_PIPE_WINDOW_HOST, MMS_PIPE_WINDOW_BACKEND };

struct mms_pipe_opts {
    bool tta;                 /* mirroring over the card's mirror_axes */
    double tile_step;         /* 0 = the card's */
    size_t max_memory;        /* bytes of host memory the job may hold; 0 = no limit */
    size_t max_device_memory; /* bytes of device memory the job may hold; 0 = no limit */
    int max_batch;            /* tiles x mirrorings per network call at most; 0 = the network's */
    int window;               /* enum mms_pipe_window */
    bool postprocess;         /* the card's postprocessing (on by default) */
    int threads;              /* OpenMP threads of the pre- and post-processing; 0 = all */
    /* Called after each tile with (tiles done, tiles in all); may be NULL. */
    void (*progress)(void *arg, int64_t done, int64_t total);
    void *progress_arg;
};

/* What a run did and what it cost. */
struct mms_pipe_stats {
    int64_t crop_lo[3], crop_hi[3]; /* crop box, DICOM order (k, r, c), hi exclusive */
    int64_t target[3];              /* shape after resampling, network order */
    double spacing_net[3];          /* input spacing, network order */
    int sep_axis_in, sep_axis_out;  /* separate axis going in / coming back (network order) */
    int64_t tiles, passes;          /* tiles, and network passes (tiles x mirrorings) */
    size_t memory_estimate;         /* host bytes, computed before anything is allocated */
    size_t device_memory_estimate;  /* device bytes (the network's, the window's buffers) */
    bool window_on_backend;         /* the sliding window ran in the backend's buffers */
    double preprocess_s, network_s, export_s;
    int64_t mixed_voxels;         /* output voxels whose label needed every class interpolated */
    int64_t postprocessed_voxels; /* set to background by the card's postprocessing */
};

/* Options with the card's defaults (tta on, the card's tile step, no memory limit, the card's
 * postprocessing). The way back is always the exact path of mmunet.md 5.8. */
void mms_pipe_opts_default(struct mms_pipe_opts *o);

/* The bytes a job holds at its peak (the input volume, mms_pipe_run()'s buffers, net's arena
 * and weights, the output labels) go to stats->memory_estimate, with the shapes it derived;
 * what lies in device memory (the arena and weights of a network on a GPU, the window's
 * buffers there) goes to stats->device_memory_estimate instead.
 * Nothing big is allocated.
 * The spacings, positions and shapes are checked first (finite, within the limits above, slice
 * positions ascending); the target shape and the estimate are computed with overflow checks.
 * ct->hu may be NULL: a plan from the headers, before anything is decoded, without the crop to
 * the nonzero region (which needs the voxels): the most the job can need.
 * Returns 0, MMS_ENOMEM when an estimate exceeds o->max_memory or o->max_device_memory (the
 * figures in why), MMS_ERANGE
 * when a shape exceeds the hard limits (the figures in why), or MMS_EINVAL / MMS_ENOTSUP with a
 * reason in why. */
int mms_pipe_plan(const struct mms_ct *ct, const struct mms_model *m, const struct mms_net *net,
                  const struct mms_pipe_opts *o, struct mms_pipe_stats *stats, char *why,
                  size_t why_len);

/* Segment ct: orientation, crop, normalisation, resampling, sliding window with Gaussian
 * weighting and mirroring, logits back on the DICOM grid and argmax (mmunet.md 5.1-5.8).
 * labels receives slices*rows*cols class indices in DICOM order. net must have been built
 * for tiles of the card's patch size.
 * Refuses before allocating when the plan exceeds o->max_memory (MMS_ENOMEM, with the figures
 * in why). Returns 0, MMS_EINVAL, MMS_ENOTSUP, MMS_ENOMEM, MMS_ERANGE, MMS_EMODEL (non-finite
 * logits),
 * or a backend error; why gets a one-line reason. Threads: net's thread. */
int mms_pipe_run(const struct mms_ct *ct, const struct mms_model *m, struct mms_net *net,
                 const struct mms_pipe_opts *o, uint8_t *labels, struct mms_pipe_stats *stats,
                 char *why, size_t why_len);

/* The card's postprocessing (struct mms_card pp) on labels of shape n (any axis order), in
 * place; *changed receives the voxels set to background. Returns 0, MMS_EINVAL (a shape over
 * the limits) or MMS_ENOMEM. Threads: any. */
int mms_pipe_postprocess(const struct mms_card *card, uint8_t *labels, const int64_t n[3],
                         int64_t *changed);

/* The same in three stages, so that a job holds a network only while it runs (the daemon
 * prepares the next job on the CPU while the GPU runs one):
 * - mms_pipe_prepare(): mms_pipe_run()'s checks and plan (net gives the batch and the memory
 *   figures; it may be NULL, then planned as one sample per call on the host), and the
 *   preprocessing (5.1-5.5) into a new job *out. ct (and what it points to) must stay valid
 *   until the job is freed.
 * - mms_pipe_infer(): the sliding window (5.6, 5.7) on net, planned anew for it (its batch, its
 *   memory: MMS_ENOMEM over the limits). On failure the job keeps its input and may be
 *   inferred again, on another network (a CPU one after a GPU failure).
 * - mms_pipe_finish(): the way back (5.8) into labels, then the card's postprocessing when
 *   o->postprocess, once after a successful infer.
 * Each fills its part of stats (prepare: the plan and preprocess_s; infer: the estimates,
 * window_on_backend, network_s; finish: export_s, mixed_voxels, postprocessed_voxels). Returns as
 * mms_pipe_run(). Ownership: free the job with mms_pipe_job_free() (NULL is accepted). Threads: one
 * stage at a time per job; infer on net's thread. */
struct mms_pipe_job;
int mms_pipe_prepare(const struct mms_ct *ct, const struct mms_model *m, const struct mms_net *net,
                     const struct mms_pipe_opts *o, struct mms_pipe_job **out,
                     struct mms_pipe_stats *stats, char *why, size_t why_len);
int mms_pipe_infer(struct mms_pipe_job *pj, struct mms_net *net, struct mms_pipe_stats *stats,
                   char *why, size_t why_len);
int mms_pipe_finish(struct mms_pipe_job *pj, uint8_t *labels, struct mms_pipe_stats *stats,
                    char *why, size_t why_len);
void mms_pipe_job_free(struct mms_pipe_job *pj);

#ifdef __cplusplus
}
#endif
#endif

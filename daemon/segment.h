/* daemon: `mmsegd segment`, the whole job once on files and folders, without the network.
 * Threads: the main thread of the command (the decoder and the engine start their own). */
#ifndef MMS_DAEMON_SEGMENT_H
#define MMS_DAEMON_SEGMENT_H

#include <stdbool.h>
#include <stdio.h>

#include "daemon/work.h"

struct segment_opts {
    const char *model;       /* model file */
    const char *backend;     /* "auto", "cpu" or "cuda" */
    int device, threads;     /* CUDA device; CPU threads (0 = all) */
    int precision;           /* enum mms_precision (CUDA convolutions) */
    struct mms_work_opts wo; /* volume, pipeline and SEG settings (no paths) */
    const char *nifti_dir;   /* write each label volume here as NIfTI, or NULL */
    const char *seg_dir;     /* write each SEG here, or NULL */
    bool json;               /* one JSON object on out instead of text */
    bool progress;           /* stderr is a terminal: one progress line redrawn (series, stage,
                                tiles); otherwise plain lines per stage (none with json) */
};

/* Segment every CT series under the n paths: volume, pipeline, labels on the DICOM grid,
 * written to o->nifti_dir as DIR/SERIES_UID.nii.gz (DIR/series-NNN.nii.gz without a UID).
 * One report per series on out, failures with their reasons.
 * Returns 0 when every series was segmented, 1 when one failed or none was found, or a
 * negative code when the model or backend cannot be set up (why names it). */
int mms_segment(const char *const *paths, int n, const struct segment_opts *o, FILE *out, char *why,
                size_t why_len);

#endif

/* daemon: `mmsegd segment`, the whole job once on files and folders, without the network.
 * Threads: the main thread of the command (the decoder and the engine start their own). */
#ifndef MMS_DAEMON_SEGMENT_H
#define MMS_DAEMON_SEGMENT_H

#include <stdbool.h>
#include <stdio.h>

#include "dicom/dicom.h"
#include "dicom/seg.h"
#include "infer/infer.h"
#include "infer/pipeline.h"

struct segment_opts {
    const char *model;           /* model file */
    const char *backend;         /* "auto", "cpu" or "cuda" */
    int device, threads;         /* CUDA device; CPU threads (0 = all) */
    struct mms_pipe_opts pipe;   /* tta, tile_step, max_memory */
    struct mms_volume_opts vol;  /* [series] settings */
    const char *nifti_dir;       /* write each label volume here as NIfTI, or NULL */
    const char *seg_dir;         /* write each SEG here, or NULL */
    bool keep_empty_frames;      /* [seg] empty_frames = keep */
    const char *seg_description; /* [seg] series_description ("" = "MM-UNet " + model) */
    bool json;                   /* one JSON object on out instead of text */
    bool progress;               /* a progress line on stderr (a terminal) */
};

/* Segment every CT series under the n paths: volume, pipeline, labels on the DICOM grid,
 * written to o->nifti_dir as DIR/SERIES_UID.nii.gz (DIR/series-NNN.nii.gz without a UID).
 * One report per series on out, failures with their reasons.
 * Returns 0 when every series was segmented, 1 when one failed or none was found, or a
 * negative code when the model or backend cannot be set up (why names it). */
int mms_segment(const char *const *paths, int n, const struct segment_opts *o, FILE *out, char *why,
                size_t why_len);

/* Write the SEG of labels (on v's grid; v built from the files paths[], the first header h0)
 * made by model m to path: segments, codes and colours from the card; Series and SOP Instance
 * UIDs derived from (source series, model SHA-256, run) as design.md section 3 says.
 * Returns mms_seg_write()'s codes. */
int mms_segment_write_seg(const struct mms_model *m, const char *const *paths,
                          const struct mms_header *h0, const struct mms_volume *v,
                          const uint8_t *labels, int run, bool keep_empty, const char *description,
                          const char *path, struct mms_seg_result *res, char *why, size_t why_len);

#endif

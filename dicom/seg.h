/* dicom: the DICOM Segmentation object (design.md section 7), written with DCMTK's dcmseg.
 * Plain C; the DCMTK code is in seg.cc. Threads: any; one call at a time per output. */
#ifndef MMS_DICOM_SEG_H
#define MMS_DICOM_SEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mms_seg_code {
    const char *scheme, *value, *meaning; /* e.g. "SCT", "10200004", "Liver" */
};

/* The form of the SEG ([seg] type and empty_frames). */
struct mms_seg_form {
    /* Segmentation Type LABELMAP (Label Map Segmentation Storage): one frame per source
       slice whose 8-bit pixels hold the segment number of each voxel, 0 where none (the Pixel
       Padding Value). Else BINARY (Segmentation Storage): a frame per segment and slice, one
       bit per pixel. */
    bool labelmap;
    bool keep_empty; /* BINARY: frames of a segment on slices without its voxels kept */
};

/* One segment: the voxels whose label is `label`. */
struct mms_seg_segment {
    int label;                 /* 1..255 */
    const char *segment_label; /* Segment Label */
    struct mms_seg_code category, type;
    bool has_modifier;
    struct mms_seg_code modifier; /* laterality */
    uint8_t rgb[3];               /* display colour (sRGB; written as CIELab) */
    /* the whole segment as it is for PatientSex M, F, O when that differs (NULL: as above) */
    const struct mms_seg_segment *by_sex[3];
};

struct mms_seg_input {
    const struct mms_volume *vol; /* the source stack: geometry and per-slice references */
    const char *const *paths;     /* the source files vol->src[k].file indexes */
    const uint8_t *labels;        /* vol->dims[2] x [1] x [0], slice k, row j, column i */
    const struct mms_seg_segment *segments;
    int n_segments; /* segments whose label is absent from labels are left out */
    const char *algorithm_name, *algorithm_version;
    const char *model_sha256;       /* 64 hex digits, recorded with the algorithm */
    const char *series_description; /* NULL: "MM-UNet " + algorithm_name */
    const char *software_version;   /* mmsegd's version */
    int series_number;
    const char *study_uid;         /* the source's (derived where the files have none) */
    const char *source_series_uid; /* the source series' (likewise) */
    const char *frame_of_ref_uid;  /* the source's Frame of Reference UID (likewise) */
    const char *series_uid, *sop_instance_uid; /* the SEG's own, deterministic (design 3:
                                                  mms_uid_uuid5) */
    struct mms_seg_form form;
};

/* What was written. */
struct mms_seg_result {
    int segments; /* segments written (labels present) */
    int64_t frames;
};

/* Write the SEG of in to path (explicit VR little endian), through a temporary file renamed
 * into place. Patient, study and frame of reference come from the first source file; every
 * frame references its source instance (and frame) and takes its position from it; Common
 * Instance Reference lists the source series and instances.
 * Returns 0, MMS_EINVAL (no segment present; a label volume without voxels), MMS_EDICOM (with
 * DCMTK's reason in why), -errno. Threads: any. */
int mms_seg_write(const struct mms_seg_input *in, const char *path, struct mms_seg_result *res,
                  char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif

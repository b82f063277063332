/* dicom: the labels as an RT Structure Set (design.md section 7), for radiotherapy planning
 * systems, which read contours rather than SEG. Plain C; the DCMTK code is in rtstruct.cc.
 * Threads: any. */
#ifndef MMS_DICOM_RTSTRUCT_H
#define MMS_DICOM_RTSTRUCT_H

#include <stddef.h>
#include <stdint.h>

#include "dicom/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One ROI: the voxels whose label is `label`. */
struct mms_rtstruct_roi {
    int label;        /* 1..255 */
    const char *name; /* ROI Name (the card's segment label) */
    uint8_t rgb[3];   /* ROI Display Color */
};

struct mms_rtstruct_input {
    const struct mms_volume *vol; /* the source stack: geometry and per-slice references */
    const char *const *paths;     /* the source files vol->src[k].file indexes */
    const uint8_t *labels;        /* vol->dims[2] x [1] x [0], slice k, row j, column i */
    const struct mms_rtstruct_roi *rois;
    int n_rois; /* ROIs whose label is absent from labels are left out */
    const char *algorithm_name, *algorithm_version;
    const char *software_version; /* mmsegd's version */
    int series_number;
    const char *study_uid;         /* the source's (derived where the files have none) */
    const char *source_series_uid; /* likewise */
    const char *frame_of_ref_uid;  /* likewise */
    const char *series_uid, *sop_instance_uid; /* its own, deterministic */
};

struct mms_rtstruct_result {
    int rois;         /* written (labels present) */
    int64_t contours; /* in all */
    int64_t points;
};

/* Write the RT Structure Set of in to path (explicit VR little endian), through a temporary
 * file synced and renamed into place: per label present an ROI (name, colour, RT ROI
 * Interpreted Type ORGAN, generated AUTOMATIC), and per slice holding it its outlines
 * (dicom/contour.h: closed along the pixel edges, holes as contours of their own, which a
 * reader combines by parity) as CLOSED_PLANAR contours in patient coordinates on the slice's
 * plane, each referring to its source image. Patient and study come from the first source
 * file. Returns 0, MMS_EINVAL (no ROI present; a volume without voxels), MMS_EDICOM (with
 * DCMTK's reason in why), MMS_ENOMEM, -errno. Threads: any. */
int mms_rtstruct_write(const struct mms_rtstruct_input *in, const char *path,
                       struct mms_rtstruct_result *res, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif

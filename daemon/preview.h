/* daemon/preview: a PNG that shows one result at a glance, before anyone opens a viewer: three
 * axial planes, one coronal and one sagittal plane of the CT at a soft-tissue window
 * (W 400 / L 40 HU) with the labels blended over it in the model card's colours, and a legend of
 * the labels present with their volumes. Nothing received (no patient or series text) is drawn.
 * Threads: any (no shared state). */
#ifndef MMS_DAEMON_PREVIEW_H
#define MMS_DAEMON_PREVIEW_H

#include <stddef.h>
#include <stdint.h>

#include "dicom/dicom.h"
#include "infer/infer.h"

struct mms_preview_label {
    int label;      /* 1..255 */
    double ml;      /* voxels x the voxel volume (spacing product / 1000) */
    int64_t voxels; /* of this label in the whole volume */
};

struct mms_preview_result {
    int n_labels; /* labels present, ascending */
    struct mms_preview_label labels[255];
    int width, height; /* of the PNG, in pixels */
};

/* Write the preview of labels (one uint8 per voxel of v, on v's grid and in its order: slice k,
 * row j, column i like v->hu) to path, a PNG written through a temporary file in the same
 * directory, fsynced and renamed into place (the directory is fsynced too). The planes go
 * through the centroid of all labelled voxels (the axial ones at 25, 50 and 75 % of their
 * extent along the body axis), through the middle of the volume when nothing is labelled; they
 * are resampled to their true aspect ratio and oriented from v->dir, v->normal and the slice
 * positions (v->pos_mm, v->ipp, when present): head up, anterior up in axial, the patient's
 * right on the image's left (radiological convention), anterior on the left in sagittal. A grid
 * at an angle to the patient axes, or sheared by a gantry tilt, is resampled in patient
 * coordinates (black outside the grid). The CT is shown at W 400 / L 40 HU, each label blended
 * over it at 45 % in the card's colour, with a darker outline.
 * The legend names the labels with card's segment_label (a label the card lacks is "label N").
 * The header line names mmsegd, the model and its version, and says NOT FOR DIAGNOSTIC USE.
 * res (may be NULL) receives the labels present and the picture's size, on success only.
 * Ownership: everything is borrowed; nothing is kept after the call.
 * Returns 0, MMS_EINVAL (NULL argument, empty or oversized volume, bad spacing), MMS_ENOMEM,
 * -errno (creating, writing, syncing or renaming the file; no temporary file is left behind);
 * why receives a one-line reason on failure. Threads: any. */
int mms_preview_write(const struct mms_volume *v, const uint8_t *labels,
                      const struct mms_card *card, const char *path, struct mms_preview_result *res,
                      char *why, size_t why_len);

/* The picture of mms_preview_write() without the file: RGB, 8 bits a sample, rows top to
 * bottom, width x height x 3 bytes. */
struct mms_preview_image {
    uint8_t *rgb;
    int width, height;
};

/* The picture mms_preview_write() writes, into img (also for the Secondary Capture of the
 * result). Ownership: img->rgb is new on success (NULL on failure); free it with
 * mms_preview_image_free(). Returns as mms_preview_write(), never -errno. Threads: any. */
int mms_preview_render(const struct mms_volume *v, const uint8_t *labels,
                       const struct mms_card *card, struct mms_preview_image *img,
                       struct mms_preview_result *res, char *why, size_t why_len);

/* img as a PNG at path, as mms_preview_write() writes it. Returns 0, MMS_EINVAL, MMS_ENOMEM,
 * MMS_EIO (libpng) or -errno, with why. */
int mms_preview_save_png(const struct mms_preview_image *img, const char *path, char *why,
                         size_t why_len);
void mms_preview_image_free(struct mms_preview_image *img);

#endif

/* daemon: `mmsegd inspect`, what mmsegd would make of DICOM files and folders.
 * Threads: the main thread of the command. */
#ifndef MMS_DAEMON_INSPECT_H
#define MMS_DAEMON_INSPECT_H

#include <stdbool.h>
#include <stdio.h>

#include "dicom/dicom.h"

struct inspect_opts {
    bool json;                  /* one JSON object instead of text */
    const char *nifti_dir;      /* write each volume as NIfTI here, or NULL */
    struct mms_volume_opts vol; /* [series] max_gap_ratio, allow_gaps, max_voxels, threads */
};

/* Read the headers of every file under the n paths (folders recursively), group them by
 * series (by Series Instance UID; files without one by folder and frame of reference),
 * rebuild each series' volume (main stack, pixels decoded) and report, per series, its
 * geometry, transfer syntaxes and HU range or why there is none, and the files and frames left
 * out with their reasons, on out (text, or JSON with o->json); with o->nifti_dir, write each
 * volume there as NIfTI (DIR/SeriesInstanceUID.nii.gz, DIR/series-NNN.nii.gz without one).
 * Returns 0 when at least one DICOM file was read, MMS_ENOENT when none was, MMS_ENOMEM, or
 * -errno. */
int mms_inspect(const char *const *paths, int n, const struct inspect_opts *o, FILE *out);

#endif

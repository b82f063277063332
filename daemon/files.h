/* daemon: the DICOM files under paths given on the command line, grouped into series; shared
 * by `mmsegd inspect` and `mmsegd segment`. Threads: the main thread of the command. */
#ifndef MMS_DAEMON_FILES_H
#define MMS_DAEMON_FILES_H

#include <stddef.h>

#include "dicom/dicom.h"

struct mms_file {
    char *path;
    struct mms_header h;
};

struct mms_fileset {
    struct mms_file *f; /* the DICOM image files, paths in byte order */
    int n;
    int listed, dicom, ignored; /* files found, read as DICOM, ignored (DICOMDIR, no class) */
    int n_series;
    int *idx;   /* series s is f[idx[start[s]]] .. f[idx[start[s + 1] - 1]] */
    int *start; /* n_series + 1 entries */
};

/* A file that was not read or is ignored: kind "not read" (path NULL: the reason names it) or
 * "ignored". */
typedef void (*mms_file_note_fn)(void *arg, const char *kind, const char *path, const char *reason);

/* Read the headers of every file under the n paths (folders recursively) and group them into
 * series in order of first appearance: by Series Instance UID; files without one by folder
 * and frame of reference. note (may be NULL) hears of every file left aside.
 * Ownership: free *out with mms_fileset_free(), also on failure.
 * Returns 0, MMS_ENOMEM, or -errno for a path that cannot be read (why names it). */
int mms_fileset_read(const char *const *paths, int n, mms_file_note_fn note, void *arg,
                     struct mms_fileset *out, char *why, size_t why_len);
void mms_fileset_free(struct mms_fileset *fs);

/* Where the NIfTI of series number `number` (1-based) goes: DIR/UID.nii.gz when the UID is
 * made of digits and dots, else DIR/series-NNN.nii.gz. */
void mms_series_nifti_path(const char *dir, const char *uid, int number, char *buf, size_t len);

#endif

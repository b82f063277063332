/* dicom: the result's preview as a Secondary Capture Image (design.md section 7), for viewers
 * that show no SEG. Plain C; the DCMTK code is in sc.cc. Threads: any. */
#ifndef MMS_DICOM_SC_H
#define MMS_DICOM_SC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mms_sc_input {
    const char *source_path;       /* a file of the source series: patient and study */
    const char *study_uid;         /* the source's (derived where the files have none) */
    const char *source_series_uid; /* likewise; the Referenced Series Sequence names it */
    const char *series_uid;        /* the Secondary Capture's own, deterministic */
    const char *sop_instance_uid;  /* likewise */
    int series_number;
    const char *series_description; /* NULL: "MM-UNet " + algorithm_name + " preview" */
    const char *algorithm_name;     /* the model card's name */
    const char *software_version;   /* mmsegd's version */
    const uint8_t *rgb;             /* the picture: rows top to bottom, RGB, 8 bits a sample */
    int width, height;              /* 1..65535 each */
};

/* Write the Secondary Capture Image of in to path (explicit VR little endian, uncompressed
 * RGB), through a temporary file synced and renamed into place. Patient and study come from
 * in->source_path; Burned In Annotation YES (the picture carries the model's name and NOT FOR
 * DIAGNOSTIC USE), Conversion Type WSD.
 * Returns 0, MMS_EINVAL (a picture size out of range, a missing argument), MMS_EDICOM (with
 * DCMTK's reason in why), -errno. Threads: any. */
int mms_sc_write(const struct mms_sc_input *in, const char *path, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif

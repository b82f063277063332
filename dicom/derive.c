/* dicom: Study and Series Instance UIDs for files that have none (design.md section 3). */
#include <stdio.h>
#include <string.h>

#include "common/sha256.h"
#include "common/uid.h"
#include "dicom/dicom.h"

/* "2.25." and the decimal value of the first 16 bytes of SHA-256(text), top bit clear: a UID
 * that the same text always gives. */
static void
derived_uid(const char *text, char out[65])
{
    struct mms_sha256 c;
    uint8_t d[32];
    mms_sha256_init(&c);
    mms_sha256_update(&c, text, strlen(text));
    mms_sha256_final(&c, d);
    d[0] &= 0x7f;
    mms_uid_from_bytes(d, out);
}

void
mms_header_derive_uids(struct mms_header *h)
{
    char text[512];
    snprintf(text, sizeof text, "mmsegd series|%s|%s|%lldx%lld|%.4f %.4f %.4f %.4f %.4f %.4f",
             h->slice.frame_of_ref, h->modality, (long long)h->slice.rows, (long long)h->slice.cols,
             h->slice.iop[0], h->slice.iop[1], h->slice.iop[2], h->slice.iop[3], h->slice.iop[4],
             h->slice.iop[5]);
    if (h->series_uid[0] == '\0')
        derived_uid(text, h->series_uid);
    snprintf(text, sizeof text, "mmsegd study|%s", h->slice.frame_of_ref);
    if (h->study_uid[0] == '\0')
        derived_uid(text, h->study_uid);
    /* last: from the series UID, derived or not */
    snprintf(text, sizeof text, "mmsegd frame of reference|%s", h->series_uid);
    if (h->slice.frame_of_ref[0] == '\0')
        mms_uid_uuid5(text, h->slice.frame_of_ref);
}

// dicom: the preview as a Secondary Capture Image (sc.h), with dcmdata. Threads: any.
#include "dicom/sc.h"

#include <stdio.h>

#include <new>
#include <string>

#include "common/err.h"
#include "dicom/derived-impl.hh"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>

namespace
{

// The data set of in into ds.
int
build(const struct mms_sc_input *in, DcmDataset &ds, char *why, size_t why_len)
{
    int rc =
        mms__dcm_copy_source(ds, in->source_path, in->study_uid, "Secondary Capture", why, why_len);
    if (rc < 0)
        return rc;
    std::string description;
    if (in->series_description != NULL && in->series_description[0] != '\0')
        description = in->series_description;
    else
        description = std::string("MM-UNet ") + in->algorithm_name + " preview";
    char date[16], tm[16];
    mms__dcm_now(date, tm);
    const struct mms__dcm_series series = {UID_SecondaryCaptureImageStorage,
                                           in->sop_instance_uid,
                                           "OT",
                                           in->series_uid,
                                           description.c_str(),
                                           in->series_number,
                                           in->software_version};
    const struct {
        DcmTagKey key;
        const char *value;
    } text[] = {
        {DCM_ImageType, "DERIVED\\SECONDARY"},
        {DCM_ContentDate, date},
        {DCM_ContentTime, tm},
        {DCM_ConversionType, "WSD"},
        {DCM_DerivationDescription, "Preview of a segmentation by MM-UNet; not for diagnostic use"},
        {DCM_PatientOrientation, ""},
        {DCM_Laterality, ""}, // Type 2C: present and empty (the body part is not known)
        {DCM_BurnedInAnnotation, "YES"},
        {DCM_PhotometricInterpretation, "RGB"},
        {DCM_LossyImageCompression, "00"},
    };
    OFCondition c = mms__dcm_put_series(ds, series);
    for (size_t i = 0; c.good() && i < sizeof text / sizeof text[0]; i++)
        c = ds.putAndInsertString(text[i].key, text[i].value);
    const struct {
        DcmTagKey key;
        Uint16 value;
    } us[] = {
        {DCM_SamplesPerPixel, 3},
        {DCM_PlanarConfiguration, 0},
        {DCM_Rows, (Uint16)in->height},
        {DCM_Columns, (Uint16)in->width},
        {DCM_BitsAllocated, 8},
        {DCM_BitsStored, 8},
        {DCM_HighBit, 7},
        {DCM_PixelRepresentation, 0},
    };
    for (size_t i = 0; c.good() && i < sizeof us / sizeof us[0]; i++)
        c = ds.putAndInsertUint16(us[i].key, us[i].value);
    if (c.good())
        c = ds.putAndInsertUint8Array(DCM_PixelData, in->rgb,
                                      (unsigned long)in->width * (unsigned long)in->height * 3);
    return c.good() ? 0 : mms__dcm_fail(why, why_len, "Secondary Capture", c);
}

} // namespace

extern "C" int
mms_sc_write(const struct mms_sc_input *in, const char *path, char *why, size_t why_len)
{
    if (in == NULL || path == NULL || in->rgb == NULL || in->source_path == NULL ||
        in->study_uid == NULL || in->series_uid == NULL || in->sop_instance_uid == NULL ||
        in->algorithm_name == NULL || in->software_version == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "Secondary Capture: missing argument");
    if (in->width < 1 || in->width > 65535 || in->height < 1 || in->height > 65535)
        return mms_why(why, why_len, MMS_EINVAL, "Secondary Capture: %d x %d pixels", in->width,
                       in->height);
    try {
        DcmFileFormat ff;
        int rc = build(in, *ff.getDataset(), why, why_len);
        return rc < 0 ? rc : mms__dcm_save(ff, path, why, why_len);
    } catch (const std::bad_alloc &) {
        return mms_why(why, why_len, MMS_ENOMEM, "%s: out of memory", path);
    } catch (...) {
        return mms_why(why, why_len, MMS_EDICOM, "%s: DCMTK failed", path);
    }
}

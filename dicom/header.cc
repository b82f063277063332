// dicom: the header of one file, read with GDCM up to the pixel data (design.md section 5).
// Threads: any; nothing shared.
#include "dicom/dicom.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include <gdcmReader.h>
#include <gdcmStringFilter.h>
#include <gdcmTag.h>

#include "common/err.h"
#include "dicom/dicom-impl.hh"

namespace
{

const char *const ct_classes[] = {
    "1.2.840.10008.5.1.4.1.1.2",   // CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1", // Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2", // Legacy Converted Enhanced CT Image Storage
};

void
copy(char *dst, size_t n, const std::string &s)
{
    std::snprintf(dst, n, "%s", s.c_str());
}

int64_t
integer(const std::string &s, int64_t absent)
{
    if (s.empty())
        return absent;
    char *end;
    long long v = std::strtoll(s.c_str(), &end, 10);
    return end == s.c_str() ? absent : (int64_t)v;
}

} // namespace

extern "C" bool
mms_sop_class_is_ct(const char *uid)
{
    for (const char *c : ct_classes)
        if (std::strcmp(uid, c) == 0)
            return true;
    return false;
}

extern "C" bool
mms_sop_class_is_dicomdir(const char *uid)
{
    return std::strcmp(uid, "1.2.840.10008.1.3.10") == 0;
}

extern "C" int
mms_header_read(const char *path, struct mms_header *out, char *why, size_t why_len)
{
    try {
        // the guard before GDCM's recursive parser sees the file
        struct mms_prescan pre;
        int rc = mms_dicom_prescan_file(path, &pre, why, why_len);
        if (rc < 0)
            return rc;
        if (mms_sop_class_is_dicomdir(pre.media_class)) {
            // never an image; GDCM can abort on a malformed directory, so it is not asked
            struct mms_header h;
            std::memset(&h, 0, sizeof h);
            copy(h.media_class, sizeof h.media_class, pre.media_class);
            copy(h.transfer_syntax, sizeof h.transfer_syntax, pre.transfer_syntax);
            h.frames = 1;
            h.instance_number = -1;
            *out = h;
            return 0;
        }
        gdcm::Reader r;
        r.SetFileName(path);
        if (!r.ReadUpToTag(gdcm::Tag(0x7fe0, 0x0010)))
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                   "not a DICOM file, or unreadable (GDCM)");
        const gdcm::File &f = r.GetFile();
        const gdcm::DataSet &ds = f.GetDataSet();
        gdcm::StringFilter sf;
        sf.SetFile(f);
        struct mms_header h;
        std::memset(&h, 0, sizeof h);
        copy(h.sop_class, sizeof h.sop_class, mms__dicom_text(sf, ds, 0x0008, 0x0016));
        copy(h.sop_instance, sizeof h.sop_instance, mms__dicom_text(sf, ds, 0x0008, 0x0018));
        copy(h.series_uid, sizeof h.series_uid, mms__dicom_text(sf, ds, 0x0020, 0x000e));
        copy(h.study_uid, sizeof h.study_uid, mms__dicom_text(sf, ds, 0x0020, 0x000d));
        copy(h.modality, sizeof h.modality, mms__dicom_text(sf, ds, 0x0008, 0x0060));
        copy(h.image_type, sizeof h.image_type, mms__dicom_text(sf, ds, 0x0008, 0x0008));
        const gdcm::FileMetaInformation &meta = f.GetHeader();
        gdcm::StringFilter mf;
        mf.SetFile(f);
        if (meta.FindDataElement(gdcm::Tag(0x0002, 0x0002)))
            copy(h.media_class, sizeof h.media_class, mms__dicom_text(mf, meta, 0x0002, 0x0002));
        if (meta.FindDataElement(gdcm::Tag(0x0002, 0x0010)))
            copy(h.transfer_syntax, sizeof h.transfer_syntax,
                 mms__dicom_text(mf, meta, 0x0002, 0x0010));
        // present but empty in some exports: the file meta names the instance
        if (h.sop_class[0] == '\0')
            copy(h.sop_class, sizeof h.sop_class, h.media_class);
        if (h.sop_instance[0] == '\0' && meta.FindDataElement(gdcm::Tag(0x0002, 0x0003)))
            copy(h.sop_instance, sizeof h.sop_instance, mms__dicom_text(mf, meta, 0x0002, 0x0003));
        h.frames = integer(mms__dicom_text(sf, ds, 0x0028, 0x0008), 1);
        h.instance_number = integer(mms__dicom_text(sf, ds, 0x0020, 0x0013), -1);
        struct mms_slice &s = h.slice;
        copy(s.frame_of_ref, sizeof s.frame_of_ref, mms__dicom_text(sf, ds, 0x0020, 0x0052));
        int n_iop = mms__dicom_numbers(mms__dicom_text(sf, ds, 0x0020, 0x0037), s.iop, 6);
        int n_ipp = mms__dicom_numbers(mms__dicom_text(sf, ds, 0x0020, 0x0032), s.ipp, 3);
        s.rows = integer(mms__dicom_text(sf, ds, 0x0028, 0x0010), 0);
        s.cols = integer(mms__dicom_text(sf, ds, 0x0028, 0x0011), 0);
        s.acquisition = integer(mms__dicom_text(sf, ds, 0x0020, 0x0012), -1);
        s.temporal = integer(mms__dicom_text(sf, ds, 0x0020, 0x0100), -1);
        h.has_geometry = n_iop == 6 && n_ipp == 3 && s.rows > 0 && s.cols > 0;
        mms__dicom_numbers(mms__dicom_text(sf, ds, 0x0028, 0x0030), h.pixel_spacing, 2);
        double th = 0.0;
        if (mms__dicom_numbers(mms__dicom_text(sf, ds, 0x0018, 0x0050), &th, 1) == 1 &&
            std::isfinite(th))
            h.slice_thickness = th;
        *out = h;
        return 0;
    } catch (const std::bad_alloc &) {
        return mms__dicom_fail(why, why_len, MMS_ENOMEM, path, "out of memory");
    } catch (...) {
        return mms__dicom_fail(why, why_len, MMS_EDICOM, path, "GDCM failed to read the header");
    }
}

// dicom: the geometry of every frame of an Enhanced or Legacy Converted Enhanced CT file, from
// its functional groups (design.md section 5). Threads: any; nothing shared.
#include "dicom/dicom.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmStringFilter.h>
#include <gdcmTag.h>

#include "common/err.h"
#include "dicom/dicom-impl.hh"

namespace
{

// The first item of the sequence (g, e) in ds, or null.
const gdcm::DataSet *
first_item(const gdcm::DataSet &ds, uint16_t g, uint16_t e)
{
    gdcm::Tag t(g, e);
    if (!ds.FindDataElement(t))
        return nullptr;
    gdcm::SmartPointer<gdcm::SequenceOfItems> sq = ds.GetDataElement(t).GetValueAsSQ();
    if (!sq || sq->GetNumberOfItems() < 1)
        return nullptr;
    return &sq->GetItem(1).GetNestedDataSet();
}

// The text of attribute (ag, ae) inside the first item of macro sequence (g, e), looked up in
// the frame's own functional groups first, then in the shared ones.
std::string
group_text(const gdcm::StringFilter &sf, const gdcm::DataSet *frame, const gdcm::DataSet *shared,
           uint16_t g, uint16_t e, uint16_t ag, uint16_t ae)
{
    for (const gdcm::DataSet *fg : {frame, shared}) {
        if (fg == nullptr)
            continue;
        const gdcm::DataSet *item = first_item(*fg, g, e);
        gdcm::Tag t(ag, ae);
        if (item == nullptr || !item->FindDataElement(t))
            continue;
        std::string v = mms__dicom_element_text(sf, item->GetDataElement(t));
        if (!v.empty())
            return v;
    }
    return std::string();
}

} // namespace

extern "C" int
mms_frames_geometry(const char *path, int64_t frames, struct mms_slice *out,
                    double pixel_spacing[2], char *why, size_t why_len)
{
    if (path == nullptr || out == nullptr || frames < 1)
        return mms__dicom_fail(why, why_len, MMS_EINVAL, path != nullptr ? path : "(null)",
                               "invalid argument");
    try {
        struct mms_prescan pre;
        int rc = mms_dicom_prescan_file(path, &pre, why, why_len);
        if (rc < 0)
            return rc;
        gdcm::Reader r;
        r.SetFileName(path);
        if (!r.ReadUpToTag(gdcm::Tag(0x7fe0, 0x0010)))
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                   "not a DICOM file, or unreadable (GDCM)");
        const gdcm::DataSet &ds = r.GetFile().GetDataSet();
        gdcm::StringFilter sf;
        sf.SetFile(r.GetFile());
        const gdcm::DataSet *shared = first_item(ds, 0x5200, 0x9229);
        gdcm::SmartPointer<gdcm::SequenceOfItems> per;
        if (ds.FindDataElement(gdcm::Tag(0x5200, 0x9230)))
            per = ds.GetDataElement(gdcm::Tag(0x5200, 0x9230)).GetValueAsSQ();
        if (!per)
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                   "multi-frame image without per-frame functional groups");
        if ((int64_t)per->GetNumberOfItems() != frames) {
            std::string m = std::to_string(per->GetNumberOfItems()) +
                            " per-frame functional group items for " + std::to_string(frames) +
                            " frames";
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, m.c_str());
        }
        struct mms_slice base;
        std::memset(&base, 0, sizeof base);
        std::snprintf(base.frame_of_ref, sizeof base.frame_of_ref, "%s",
                      mms__dicom_text(sf, ds, 0x0020, 0x0052).c_str());
        double v;
        base.rows = mms__dicom_numbers(mms__dicom_text(sf, ds, 0x0028, 0x0010), &v, 1) == 1
                        ? (int64_t)v
                        : 0;
        base.cols = mms__dicom_numbers(mms__dicom_text(sf, ds, 0x0028, 0x0011), &v, 1) == 1
                        ? (int64_t)v
                        : 0;
        base.acquisition = -1;
        std::string rescale0, spacing0;
        for (int64_t k = 0; k < frames; k++) {
            const gdcm::DataSet *fg =
                &per->GetItem((gdcm::SequenceOfItems::SizeType)k + 1).GetNestedDataSet();
            struct mms_slice s = base;
            std::string m;
            // Plane Position (0020,9113) > IPP; Plane Orientation (0020,9116) > IOP
            if (mms__dicom_numbers(group_text(sf, fg, shared, 0x0020, 0x9113, 0x0020, 0x0032),
                                   s.ipp, 3) != 3)
                m = "no Image Position (Patient) in the functional groups of frame ";
            else if (mms__dicom_numbers(group_text(sf, fg, shared, 0x0020, 0x9116, 0x0020, 0x0037),
                                        s.iop, 6) != 6)
                m = "no Image Orientation (Patient) in the functional groups of frame ";
            if (!m.empty()) {
                m += std::to_string(k + 1);
                return mms__dicom_fail(why, why_len, MMS_EDICOM, path, m.c_str());
            }
            // Frame Content (0020,9111) > Temporal Position Index (0020,9128)
            std::string tpi = group_text(sf, fg, shared, 0x0020, 0x9111, 0x0020, 0x9128);
            s.temporal = mms__dicom_numbers(tpi, &v, 1) == 1 ? (int64_t)v : -1;
            // Pixel Measures (0028,9110) > Pixel Spacing; Pixel Value Transformation
            // (0028,9145) > Rescale Intercept, Slope: one for all frames
            std::string spacing = group_text(sf, fg, shared, 0x0028, 0x9110, 0x0028, 0x0030);
            std::string rescale = group_text(sf, fg, shared, 0x0028, 0x9145, 0x0028, 0x1052) + "/" +
                                  group_text(sf, fg, shared, 0x0028, 0x9145, 0x0028, 0x1053);
            if (k == 0) {
                spacing0 = spacing;
                rescale0 = rescale;
                double ps[2] = {0.0, 0.0};
                if (mms__dicom_numbers(spacing, ps, 2) == 2 && pixel_spacing != nullptr) {
                    pixel_spacing[0] = ps[0];
                    pixel_spacing[1] = ps[1];
                }
            } else if (spacing != spacing0 || rescale != rescale0) {
                m = "frame " + std::to_string(k + 1) + " has another " +
                    (spacing != spacing0 ? "pixel spacing" : "rescale") + " than frame 1";
                return mms__dicom_fail(why, why_len, MMS_EDICOM, path, m.c_str());
            }
            out[k] = s;
        }
        return 0;
    } catch (const std::bad_alloc &) {
        return mms__dicom_fail(why, why_len, MMS_ENOMEM, path, "out of memory");
    } catch (...) {
        return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                               "GDCM failed to read the functional groups");
    }
}

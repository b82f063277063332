// dicom: one frame's pixel data decoded with GDCM and turned into Hounsfield units (design.md
// section 5, "Pixels"). Threads: any; every GDCM object is local to the call.
#include "dicom/dicom.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>
#include <string>
#include <vector>

#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmReader.h>
#include <gdcmStringFilter.h>
#include <gdcmTag.h>
#include <gdcmTransferSyntax.h>

#include "common/err.h"
#include "dicom/dicom-impl.hh"

namespace
{

const float padding_hu = -1024.0f;

// What the header says about the pixel data, read before the pixel data itself.
struct layout {
    int64_t rows, cols, frames;
    int bits_allocated, bits_stored, pixel_rep;
    bool has_slope, has_intercept, has_padding;
    double slope, intercept;
    int64_t padding; // Pixel Padding Value as the stored value it stands for
};

// A whole decimal integer (first value of a multi-valued one); false when absent or not one.
bool
integer(const std::string &s, int64_t *out)
{
    if (s.empty())
        return false;
    char *end;
    errno = 0;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() || errno != 0 || (*end != '\0' && *end != '\\' && *end != ' '))
        return false;
    *out = (int64_t)v;
    return true;
}

// A finite decimal number (first value); false when absent or not one.
bool
real(const std::string &s, double *out)
{
    if (s.empty())
        return false;
    char *end;
    double v = std::strtod(s.c_str(), &end);
    if (end == s.c_str() || !std::isfinite(v))
        return false;
    *out = v;
    return true;
}

// The pre-scan (nesting depth before GDCM's recursive parser) and no DICOMDIR.
int
prescan(const char *path, std::string *ts_uid, char *why, size_t why_len)
{
    struct mms_prescan pre;
    int rc = mms_dicom_prescan_file(path, &pre, why, why_len);
    if (rc < 0)
        return rc;
    if (mms_sop_class_is_dicomdir(pre.media_class))
        return mms__dicom_fail(why, why_len, MMS_EDICOM, path, "a DICOMDIR, not an image");
    *ts_uid = pre.transfer_syntax;
    return 0;
}

// The header's description of the pixels; 0 or MMS_EDICOM with msg set.
int
read_layout(const gdcm::File &f, layout *lo, std::string *msg)
{
    const gdcm::DataSet &ds = f.GetDataSet();
    gdcm::StringFilter sf;
    sf.SetFile(f);
    int64_t spp = 1, v;
    if (!mms__dicom_text(sf, ds, 0x0028, 0x0002).empty() &&
        !integer(mms__dicom_text(sf, ds, 0x0028, 0x0002), &spp))
        spp = 0;
    std::string photo = mms__dicom_text(sf, ds, 0x0028, 0x0004);
    if (spp != 1 || (photo != "MONOCHROME1" && photo != "MONOCHROME2")) {
        *msg = "not a monochrome image (samples per pixel " + std::to_string(spp) +
               ", photometric interpretation '" + photo + "')";
        return MMS_EDICOM;
    }
    if (!integer(mms__dicom_text(sf, ds, 0x0028, 0x0010), &lo->rows) || lo->rows < 1 ||
        !integer(mms__dicom_text(sf, ds, 0x0028, 0x0011), &lo->cols) || lo->cols < 1) {
        *msg = "rows or columns missing or invalid";
        return MMS_EDICOM;
    }
    lo->frames = 1;
    std::string nf = mms__dicom_text(sf, ds, 0x0028, 0x0008);
    if (!nf.empty() && (!integer(nf, &lo->frames) || lo->frames < 1)) {
        *msg = "number of frames invalid ('" + nf + "')";
        return MMS_EDICOM;
    }
    if (!integer(mms__dicom_text(sf, ds, 0x0028, 0x0100), &v) || (v != 8 && v != 16)) {
        *msg = "bits allocated not 8 or 16 ('" + mms__dicom_text(sf, ds, 0x0028, 0x0100) + "')";
        return MMS_EDICOM;
    }
    lo->bits_allocated = (int)v;
    lo->bits_stored = lo->bits_allocated;
    if (integer(mms__dicom_text(sf, ds, 0x0028, 0x0101), &v)) {
        if (v < 1 || v > lo->bits_allocated) {
            *msg = "bits stored " + std::to_string(v) + " outside 1.." +
                   std::to_string(lo->bits_allocated);
            return MMS_EDICOM;
        }
        lo->bits_stored = (int)v;
    }
    lo->pixel_rep = 0;
    if (integer(mms__dicom_text(sf, ds, 0x0028, 0x0103), &v)) {
        if (v != 0 && v != 1) {
            *msg = "pixel representation not 0 or 1";
            return MMS_EDICOM;
        }
        lo->pixel_rep = (int)v;
    }
    lo->has_slope = real(mms__dicom_text(sf, ds, 0x0028, 0x1053), &lo->slope);
    lo->has_intercept = real(mms__dicom_text(sf, ds, 0x0028, 0x1052), &lo->intercept);
    // US in a signed image: the 16-bit two's complement of the negative value it means
    lo->has_padding = integer(mms__dicom_text(sf, ds, 0x0028, 0x0120), &lo->padding);
    if (lo->has_padding && lo->pixel_rep == 1 && lo->padding > INT16_MAX &&
        lo->padding <= UINT16_MAX)
        lo->padding -= 65536;
    return 0;
}

// The stored value of one sample as the header means it.
inline int32_t
stored(uint32_t raw, int bits_stored, bool is_signed)
{
    uint32_t mask = bits_stored >= 32 ? ~0u : (1u << bits_stored) - 1u;
    raw &= mask;
    if (is_signed && (raw & (1u << (bits_stored - 1))) != 0)
        return (int32_t)((int64_t)raw - ((int64_t)1 << bits_stored));
    return (int32_t)raw;
}

} // namespace

extern "C" int
mms_frames_decode(const char *path, int64_t first, int64_t count, uint64_t max_voxels, float *hu,
                  char *why, size_t why_len)
{
    if (path == nullptr || hu == nullptr || first < 0 || count < 1)
        return mms__dicom_fail(why, why_len, MMS_EINVAL, path != nullptr ? path : "(null)",
                               "invalid argument");
    try {
        struct stat sb;
        if (stat(path, &sb) != 0) {
            int rc = -errno;
            return mms__dicom_fail(why, why_len, rc, path, mms_strerror(rc));
        }
        if (!S_ISREG(sb.st_mode))
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, "not a regular file");
        std::string ts_uid;
        int rc = prescan(path, &ts_uid, why, why_len);
        if (rc < 0)
            return rc;

        // The header up to the value of Pixel Data, which is not read: every size is checked
        // against it and the file before the decoder allocates anything.
        gdcm::Reader hr;
        hr.SetFileName(path);
        const gdcm::Tag pixel_data(0x7fe0, 0x0010);
        std::set<gdcm::Tag> skip;
        skip.insert(pixel_data);
        if (!hr.ReadUpToTag(pixel_data, skip))
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                   "not a DICOM file, or unreadable (GDCM)");
        const uint64_t value_at = hr.GetStreamCurrentPosition(); // the value of Pixel Data
        const gdcm::TransferSyntax ts = hr.GetFile().GetHeader().GetDataSetTransferSyntax();
        if (!ts.IsValid() || ts == gdcm::TransferSyntax::TS_END) {
            std::string m = "unsupported transfer syntax '" + ts_uid + "'";
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, m.c_str());
        }
        layout lo;
        std::string msg;
        rc = read_layout(hr.GetFile(), &lo, &msg);
        if (rc < 0)
            return mms__dicom_fail(why, why_len, rc, path, msg.c_str());
        if (first >= lo.frames || count > lo.frames - first) {
            msg = "frames " + std::to_string(first) + " to " + std::to_string(first + count - 1) +
                  " of " + std::to_string(lo.frames);
            return mms__dicom_fail(why, why_len, MMS_EINVAL, path, msg.c_str());
        }
        uint64_t frame_voxels, voxels, frame_bytes, nbytes;
        const uint64_t bytes = (uint64_t)lo.bits_allocated / 8;
        if (__builtin_mul_overflow((uint64_t)lo.rows, (uint64_t)lo.cols, &frame_voxels) ||
            __builtin_mul_overflow(frame_voxels, (uint64_t)lo.frames, &voxels) ||
            __builtin_mul_overflow(frame_voxels, bytes, &frame_bytes) ||
            __builtin_mul_overflow(voxels, bytes, &nbytes) || voxels > max_voxels ||
            nbytes > (uint64_t)PTRDIFF_MAX) {
            msg = std::to_string(lo.rows) + " x " + std::to_string(lo.cols) + " x " +
                  std::to_string(lo.frames) + " voxels: more than the maximum of " +
                  std::to_string(max_voxels);
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, msg.c_str());
        }
        const bool native = !ts.IsEncapsulated();
        const bool deflated = ts == gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian;
        // native data lies in the file as it is (deflated data: checked after inflating)
        if (native && !deflated &&
            (value_at > (uint64_t)sb.st_size || nbytes > (uint64_t)sb.st_size - value_at)) {
            msg =
                "pixel data shorter than declared (" + std::to_string(nbytes) + " bytes needed, " +
                std::to_string(value_at > (uint64_t)sb.st_size ? 0
                                                               : (uint64_t)sb.st_size - value_at) +
                " in the file)";
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, msg.c_str());
        }

        gdcm::ImageReader ir;
        ir.SetFileName(path);
        if (!ir.Read())
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, "GDCM cannot read the image");
        const gdcm::Image &im = ir.GetImage();
        const unsigned ndim = im.GetNumberOfDimensions();
        const int64_t gframes = ndim >= 3 ? (int64_t)im.GetDimension(2) : 1;
        if ((ndim != 2 && ndim != 3) || (int64_t)im.GetColumns() != lo.cols ||
            (int64_t)im.GetRows() != lo.rows || gframes != lo.frames)
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                   "the decoder's image size differs from the header's");
        const gdcm::PixelFormat &pf = im.GetPixelFormat();
        if (pf.GetSamplesPerPixel() != 1 || (int)pf.GetBitsAllocated() != lo.bits_allocated)
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                   "the decoder's pixel format differs from the header's");
        // Bits Stored as the decoder delivers them (GDCM corrects it from a JPEG 2000 SIZ
        // marker); the signedness stays the header's, whatever the codestream says.
        int bits_stored = (int)pf.GetBitsStored();
        if (bits_stored < 1 || bits_stored > lo.bits_allocated)
            bits_stored = lo.bits_stored;
        if (native) {
            const gdcm::ByteValue *bv = im.GetDataElement().GetByteValue();
            if (bv == nullptr || (uint64_t)bv->GetLength() < nbytes)
                return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                       "pixel data shorter than declared");
        }
        // GDCM computes this length in 32 bits: it must equal ours, or it wrapped
        if ((uint64_t)im.GetBufferLength() != nbytes)
            return mms__dicom_fail(
                why, why_len, MMS_EDICOM, path,
                "the decoder's buffer length differs from rows x columns x frames");
        std::vector<char> buf(nbytes);
        if (!im.GetBuffer(buf.data())) {
            msg = std::string("decoder failed (transfer syntax ") + ts.GetString() + ")";
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, msg.c_str());
        }

        const double slope = lo.has_slope ? lo.slope : im.GetSlope();
        const double intercept = lo.has_intercept ? lo.intercept : im.GetIntercept();
        if (!std::isfinite(slope) || !std::isfinite(intercept))
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                   "rescale slope or intercept invalid");
        const bool is_signed = lo.pixel_rep == 1;
        const unsigned char *p =
            reinterpret_cast<const unsigned char *>(buf.data()) + (uint64_t)first * frame_bytes;
        const uint64_t nv = frame_voxels * (uint64_t)count;
        for (uint64_t i = 0; i < nv; i++) {
            uint32_t raw;
            if (lo.bits_allocated == 16) { // host order: GDCM swaps big endian data
                uint16_t u;
                std::memcpy(&u, p + 2 * i, sizeof u);
                raw = u;
            } else {
                raw = p[i];
            }
            int32_t v = stored(raw, bits_stored, is_signed);
            hu[i] = lo.has_padding && v == lo.padding ? padding_hu
                                                      : (float)((double)v * slope + intercept);
        }
        return 0;
    } catch (const std::bad_alloc &) {
        return mms__dicom_fail(why, why_len, MMS_ENOMEM, path, "out of memory");
    } catch (...) {
        return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                               "GDCM failed to decode the pixel data");
    }
}

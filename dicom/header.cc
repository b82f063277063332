// dicom: the header of one file, up to the pixel data (design.md section 5). The pre-scan has
// already walked the file; where it walked all of the header, its values are read directly,
// else GDCM reads the header. Both sources go through one interpretation. Threads: any.
#include "dicom/dicom.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>
#include <string>

#include <gdcmReader.h>
#include <gdcmStringFilter.h>
#include <gdcmTag.h>
#include <gdcmTrace.h>
#include <gdcmTransferSyntax.h>

#include "common/err.h"
#include "common/sha256.h"
#include "common/uid.h"
#include "dicom/dicom-impl.hh"

namespace
{

// GDCM writes its debug, warning and error traces to stderr: one line per oddity of a received
// file, raw text that a crafted file can repeat thousands of times and that bypasses our log's
// escaping. Our readers say why they refuse a file; GDCM's own traces are off from start.
const bool gdcm_traces_off = [] {
    gdcm::Trace::SetDebug(false);
    gdcm::Trace::SetWarning(false);
    gdcm::Trace::SetError(false);
    return true;
}();

const char *const ct_classes[] = {
    "1.2.840.10008.5.1.4.1.1.2",   // CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1", // Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2", // Legacy Converted Enhanced CT Image Storage
};

// The top-level attributes of a header, as text (binary values as decimal numbers).
class attrs
{
  public:
    virtual ~attrs() = default;
    virtual std::string text(enum mms_tag t) const = 0;
    virtual bool has(enum mms_tag t) const = 0;
};

// ... as GDCM read them.
class gdcm_attrs : public attrs
{
  public:
    explicit gdcm_attrs(const gdcm::File &f) : ds_(f.GetDataSet())
    {
        sf_.SetFile(f);
    }
    std::string
    text(enum mms_tag t) const override
    {
        uint32_t tag = mms__dicom_tags[t];
        return mms__dicom_text(sf_, ds_, (uint16_t)(tag >> 16), (uint16_t)tag);
    }
    bool
    has(enum mms_tag t) const override
    {
        uint32_t tag = mms__dicom_tags[t];
        return ds_.FindDataElement(gdcm::Tag((uint16_t)(tag >> 16), (uint16_t)tag));
    }

  private:
    const gdcm::DataSet &ds_;
    gdcm::StringFilter sf_;
};

// The attributes read as 16-bit binary numbers (US, or SS).
bool
is_binary(enum mms_tag t)
{
    switch (t) {
    case MMS_TAG_SAMPLES:
    case MMS_TAG_ROWS:
    case MMS_TAG_COLUMNS:
    case MMS_TAG_BITS_ALLOCATED:
    case MMS_TAG_BITS_STORED:
    case MMS_TAG_PIXEL_REP:
    case MMS_TAG_PADDING:
        return true;
    default:
        return false;
    }
}

// ... as the pre-scan found them in the mapped file.
class scan_attrs : public attrs
{
  public:
    scan_attrs(const uint8_t *data, size_t len, const mms_prescan &pre)
        : data_(data), len_(len), pre_(pre)
    {
    }
    // false when a value has a VR this reader does not interpret as GDCM would
    bool
    usable() const
    {
        for (int i = 0; i < MMS_TAG_COUNT; i++) {
            const mms_scan_value &v = pre_.v[i];
            if (!v.found)
                continue;
            // the pre-scan checked it; never trusted (a sequence of undefined length is not
            // read as a value)
            if (v.at > len_ || (v.len != 0xffffffffu && v.len > len_ - v.at))
                return false;
            if (v.vr[0] == '\0')
                continue;
            std::string vr(v.vr, 2);
            enum mms_tag t = (enum mms_tag)i;
            bool ok;
            if (is_binary(t))
                ok = vr == "US" || vr == "SS";
            else if (t == MMS_TAG_SHARED_GROUPS || t == MMS_TAG_FRAME_GROUPS)
                ok = vr == "SQ";
            else
                ok = vr == "AE" || vr == "AS" || vr == "CS" || vr == "DA" || vr == "DS" ||
                     vr == "DT" || vr == "IS" || vr == "LO" || vr == "SH" || vr == "TM" ||
                     vr == "PN" || vr == "UI";
            if (!ok)
                return false;
        }
        return true;
    }
    std::string
    text(enum mms_tag t) const override
    {
        const mms_scan_value &v = pre_.v[t];
        if (!v.found || v.len == 0 || v.len == 0xffffffffu || t == MMS_TAG_SHARED_GROUPS ||
            t == MMS_TAG_FRAME_GROUPS)
            return std::string();
        const uint8_t *b = data_ + v.at;
        if (is_binary(t)) {
            if (v.len < 2)
                return std::string();
            unsigned u = pre_.big_endian ? (unsigned)b[0] << 8 | b[1] : (unsigned)b[1] << 8 | b[0];
            if (v.vr[0] == 'S')
                return std::to_string((int)(int16_t)u);
            return std::to_string(u);
        }
        size_t e = v.len, s = 0;
        while (e > 0 && (b[e - 1] == ' ' || b[e - 1] == '\0'))
            e--;
        while (s < e && b[s] == ' ')
            s++;
        return std::string(reinterpret_cast<const char *>(b) + s, e - s);
    }
    bool
    has(enum mms_tag t) const override
    {
        return pre_.v[t].found;
    }

  private:
    const uint8_t *data_;
    size_t len_;
    const mms_prescan &pre_;
};

void
copy(char *dst, size_t n, const std::string &s)
{
    std::snprintf(dst, n, "%s", s.c_str());
}

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

int64_t
integer_or(const std::string &s, int64_t absent)
{
    int64_t v;
    return integer(s, &v) ? v : absent;
}

// A finite decimal number (first value); false when absent or not one.
bool
real(const std::string &s, double *out)
{
    return mms__dicom_numbers(s, out, 1) == 1;
}

// What the header says about the pixels; pix->ok false and pix->why when they cannot be
// decoded.
void
read_layout(const attrs &a, struct mms_pixel_layout *lo)
{
    std::string msg;
    int64_t spp = 1, v;
    if (!a.text(MMS_TAG_SAMPLES).empty() && !integer(a.text(MMS_TAG_SAMPLES), &spp))
        spp = 0;
    std::string photo = a.text(MMS_TAG_PHOTOMETRIC);
    std::string nf = a.text(MMS_TAG_FRAMES);
    lo->frames = 1;
    lo->bits_allocated = 0;
    if (spp != 1 || (photo != "MONOCHROME1" && photo != "MONOCHROME2")) {
        msg = "not a monochrome image (samples per pixel " + std::to_string(spp) +
              ", photometric interpretation '" + photo + "')";
    } else if (!integer(a.text(MMS_TAG_ROWS), &lo->rows) || lo->rows < 1 ||
               !integer(a.text(MMS_TAG_COLUMNS), &lo->cols) || lo->cols < 1) {
        msg = "rows or columns missing or invalid";
    } else if (!nf.empty() && (!integer(nf, &lo->frames) || lo->frames < 1)) {
        msg = "number of frames invalid ('" + nf + "')";
    } else if (!integer(a.text(MMS_TAG_BITS_ALLOCATED), &v) || (v != 8 && v != 16)) {
        msg = "bits allocated not 8 or 16 ('" + a.text(MMS_TAG_BITS_ALLOCATED) + "')";
    } else {
        lo->bits_allocated = (int)v;
        lo->bits_stored = lo->bits_allocated;
        if (integer(a.text(MMS_TAG_BITS_STORED), &v)) {
            if (v < 1 || v > lo->bits_allocated)
                msg = "bits stored " + std::to_string(v) + " outside 1.." +
                      std::to_string(lo->bits_allocated);
            lo->bits_stored = (int)v;
        }
        lo->pixel_rep = 0;
        if (integer(a.text(MMS_TAG_PIXEL_REP), &v)) {
            if (v != 0 && v != 1)
                msg = "pixel representation not 0 or 1";
            lo->pixel_rep = (int)v;
        }
    }
    // present but not a finite number: NaN, which decoding refuses (not the default 1 or 0)
    lo->has_slope = !a.text(MMS_TAG_SLOPE).empty();
    if (lo->has_slope && !real(a.text(MMS_TAG_SLOPE), &lo->slope))
        lo->slope = NAN;
    lo->has_intercept = !a.text(MMS_TAG_INTERCEPT).empty();
    if (lo->has_intercept && !real(a.text(MMS_TAG_INTERCEPT), &lo->intercept))
        lo->intercept = NAN;
    // US in a signed image: the 16-bit two's complement of the negative value it means
    lo->has_padding = integer(a.text(MMS_TAG_PADDING), &lo->padding);
    if (lo->has_padding && lo->pixel_rep == 1 && lo->padding > INT16_MAX &&
        lo->padding <= UINT16_MAX)
        lo->padding -= 65536;
    lo->has_groups = a.has(MMS_TAG_SHARED_GROUPS) || a.has(MMS_TAG_FRAME_GROUPS);
    lo->ok = msg.empty();
    copy(lo->why, sizeof lo->why, msg);
}

// Record in bad (160 bytes) the first UID that is not valid; an absent one ("") is fine here.
void
check_uid(const char *name, const std::string &v, char *bad)
{
    char why[96];
    if (bad[0] == '\0' && !v.empty() && !mms_uid_check(v.data(), v.size(), why, sizeof why))
        std::snprintf(bad, 160, "%s is not a valid UID: %s", name, why);
}

// The header from its attributes; meta: the file meta's UIDs and transfer syntax.
void
fill(const attrs &a, const std::string &media_class, const std::string &media_instance,
     const std::string &ts, struct mms_header *out)
{
    struct mms_header h;
    std::memset(&h, 0, sizeof h);
    copy(h.sop_class, sizeof h.sop_class, a.text(MMS_TAG_SOP_CLASS));
    copy(h.sop_instance, sizeof h.sop_instance, a.text(MMS_TAG_SOP_INSTANCE));
    copy(h.series_uid, sizeof h.series_uid, a.text(MMS_TAG_SERIES));
    copy(h.study_uid, sizeof h.study_uid, a.text(MMS_TAG_STUDY));
    copy(h.modality, sizeof h.modality, a.text(MMS_TAG_MODALITY));
    copy(h.image_type, sizeof h.image_type, a.text(MMS_TAG_IMAGE_TYPE));
    copy(h.media_class, sizeof h.media_class, media_class);
    copy(h.transfer_syntax, sizeof h.transfer_syntax, ts);
    // present but empty in some exports: the file meta names the instance
    if (h.sop_class[0] == '\0')
        copy(h.sop_class, sizeof h.sop_class, media_class);
    if (h.sop_instance[0] == '\0')
        copy(h.sop_instance, sizeof h.sop_instance, media_instance);
    const std::string &cls =
        a.text(MMS_TAG_SOP_CLASS).empty() ? media_class : a.text(MMS_TAG_SOP_CLASS);
    const std::string &inst =
        a.text(MMS_TAG_SOP_INSTANCE).empty() ? media_instance : a.text(MMS_TAG_SOP_INSTANCE);
    check_uid("SOP Instance UID", inst, h.bad_uid);
    check_uid("SOP Class UID", cls, h.bad_uid);
    check_uid("Series Instance UID", a.text(MMS_TAG_SERIES), h.bad_uid);
    check_uid("Study Instance UID", a.text(MMS_TAG_STUDY), h.bad_uid);
    check_uid("Frame of Reference UID", a.text(MMS_TAG_FRAME_OF_REF), h.bad_uid);
    check_uid("Transfer Syntax UID", ts, h.bad_uid);
    h.frames = integer_or(a.text(MMS_TAG_FRAMES), 1);
    h.instance_number = integer_or(a.text(MMS_TAG_INSTANCE_NUMBER), -1);
    struct mms_slice &s = h.slice;
    copy(s.frame_of_ref, sizeof s.frame_of_ref, a.text(MMS_TAG_FRAME_OF_REF));
    int n_iop = mms__dicom_numbers(a.text(MMS_TAG_IOP), s.iop, 6);
    int n_ipp = mms__dicom_numbers(a.text(MMS_TAG_IPP), s.ipp, 3);
    s.rows = integer_or(a.text(MMS_TAG_ROWS), 0);
    s.cols = integer_or(a.text(MMS_TAG_COLUMNS), 0);
    s.acquisition = integer_or(a.text(MMS_TAG_ACQUISITION), -1);
    s.temporal = integer_or(a.text(MMS_TAG_TEMPORAL), -1);
    h.has_geometry = n_iop == 6 && n_ipp == 3 && s.rows > 0 && s.cols > 0;
    mms__dicom_numbers(a.text(MMS_TAG_PIXEL_SPACING), h.pixel_spacing, 2);
    double th = 0.0;
    if (real(a.text(MMS_TAG_SLICE_THICKNESS), &th))
        h.slice_thickness = th;
    copy(h.series_description, sizeof h.series_description, a.text(MMS_TAG_SERIES_DESCRIPTION));
    copy(h.body_part, sizeof h.body_part, a.text(MMS_TAG_BODY_PART));
    h.images_in_acquisition = integer_or(a.text(MMS_TAG_IMAGES_IN_ACQUISITION), -1);
    copy(h.patient_name, sizeof h.patient_name, a.text(MMS_TAG_PATIENT_NAME));
    copy(h.patient_id, sizeof h.patient_id, a.text(MMS_TAG_PATIENT_ID));
    read_layout(a, &h.pix);
    h.pix.native = ts.empty() || ts == "1.2.840.10008.1.2" || ts == "1.2.840.10008.1.2.1" ||
                   ts == "1.2.840.10008.1.2.2";
    h.pix.big_endian = ts == "1.2.840.10008.1.2.2";
    *out = h;
}

// A DICOMDIR: never an image, and GDCM can abort on a malformed one, so it is not asked.
void
fill_dicomdir(const mms_prescan &pre, struct mms_header *out)
{
    struct mms_header h;
    std::memset(&h, 0, sizeof h);
    copy(h.media_class, sizeof h.media_class, pre.media_class);
    copy(h.transfer_syntax, sizeof h.transfer_syntax, pre.transfer_syntax);
    h.frames = 1;
    h.instance_number = -1;
    std::snprintf(h.pix.why, sizeof h.pix.why, "a DICOMDIR, not an image");
    *out = h;
}

// The header through GDCM (the file was pre-scanned).
int
read_gdcm(const char *path, struct mms_header *out, char *why, size_t why_len)
{
    gdcm::Reader r;
    r.SetFileName(path);
    const gdcm::Tag pixel_data(0x7fe0, 0x0010);
    std::set<gdcm::Tag> skip;
    skip.insert(pixel_data); // its value is not read
    if (!r.ReadUpToTag(pixel_data, skip))
        return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                               "not a DICOM file, or unreadable (GDCM)");
    const gdcm::File &f = r.GetFile();
    const gdcm::FileMetaInformation &meta = f.GetHeader();
    gdcm::StringFilter mf;
    mf.SetFile(f);
    std::string mc, mi, ts;
    if (meta.FindDataElement(gdcm::Tag(0x0002, 0x0002)))
        mc = mms__dicom_text(mf, meta, 0x0002, 0x0002);
    if (meta.FindDataElement(gdcm::Tag(0x0002, 0x0003)))
        mi = mms__dicom_text(mf, meta, 0x0002, 0x0003);
    if (meta.FindDataElement(gdcm::Tag(0x0002, 0x0010)))
        ts = mms__dicom_text(mf, meta, 0x0002, 0x0010);
    fill(gdcm_attrs(f), mc, mi, ts, out);
    // the value of Pixel Data is where GDCM stopped; no offset when it knows better than the
    // meta which transfer syntax the data set uses
    const gdcm::TransferSyntax dts = meta.GetDataSetTransferSyntax();
    if (out->pix.native && dts.IsValid() && !dts.IsEncapsulated() &&
        dts != gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian &&
        (dts == gdcm::TransferSyntax::ExplicitVRBigEndian) == out->pix.big_endian)
        out->pix.value_at = r.GetStreamCurrentPosition();
    struct stat sb;
    if (stat(path, &sb) != 0 || out->pix.value_at >= (uint64_t)sb.st_size)
        out->pix.value_at = 0; // the end of the file: no pixel data
    return 0;
}

// Map the file, pre-scan it, and read the header from the scan or through GDCM.
int
read(const char *path, bool scan_ok, struct mms_header *out, char *digest, char *why,
     size_t why_len)
{
    int fd = -1;
    uint64_t size = 0;
    std::string msg;
    int orc = mms__dicom_open(path, &fd, &size, &msg);
    if (orc < 0)
        return mms__dicom_fail(why, why_len, orc, path, msg.c_str());
    size_t len = (size_t)size;
    void *map = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        int rc = -errno;
        return mms__dicom_fail(why, why_len, rc, path, mms_strerror(rc));
    }
    struct mms_prescan pre;
    char reason[256];
    int rc = mms_dicom_prescan(static_cast<const uint8_t *>(map), len, MMS_DICOM_MAX_NESTING, &pre,
                               reason, sizeof reason);
    if (rc == 0 && digest != nullptr) { // the data set: the file after its meta information
        struct mms_sha256 c;
        uint8_t d[32];
        mms_sha256_init(&c);
        mms_sha256_update(&c, static_cast<const uint8_t *>(map) + pre.dataset_at,
                          len - pre.dataset_at);
        mms_sha256_final(&c, d);
        mms_sha256_hex(d, digest);
    }
    try {
        if (rc < 0) {
            rc = mms__dicom_fail(why, why_len, rc, path, reason);
        } else if (mms_sop_class_is_dicomdir(pre.media_class)) {
            fill_dicomdir(pre, out);
        } else {
            scan_attrs sa(static_cast<const uint8_t *>(map), len, pre);
            // only for data sets whose encoding GDCM knows too (it decodes the pixels)
            const gdcm::TransferSyntax::TSType tst =
                gdcm::TransferSyntax::GetTSType(pre.transfer_syntax);
            const bool known = pre.transfer_syntax[0] == '\0' ||
                               (tst != gdcm::TransferSyntax::TS_END &&
                                tst != gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian);
            if (scan_ok && known && pre.complete && sa.usable()) {
                fill(sa, pre.media_class, pre.media_instance, pre.transfer_syntax, out);
                out->pix.value_at = out->pix.native ? pre.pixel_at : 0;
            } else {
                rc = read_gdcm(path, out, why, why_len);
            }
        }
    } catch (const std::bad_alloc &) {
        rc = mms__dicom_fail(why, why_len, MMS_ENOMEM, path, "out of memory");
    } catch (...) {
        rc = mms__dicom_fail(why, why_len, MMS_EDICOM, path, "GDCM failed to read the header");
    }
    munmap(map, len);
    return rc;
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
    return read(path, true, out, nullptr, why, why_len);
}

extern "C" int
mms_header_read_digest(const char *path, struct mms_header *out, char digest[65], char *why,
                       size_t why_len)
{
    return read(path, true, out, digest, why, why_len);
}

extern "C" int
mms_header_read_gdcm(const char *path, struct mms_header *out, char *why, size_t why_len)
{
    return read(path, false, out, nullptr, why, why_len);
}

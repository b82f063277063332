// dicom: one frame's pixel data decoded with GDCM and turned into Hounsfield units (design.md
// section 5, "Pixels"). Threads: any; every GDCM object is local to the call.
#include "dicom/dicom.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <atomic>
#include <new>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <gdcmImage.h>
#include <gdcmJPEG2000Codec.h>
#include <gdcmJPEGCodec.h>
#include <gdcmJPEGLSCodec.h>
#include <gdcmRLECodec.h>
#include <gdcmSequenceOfFragments.h>
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

// HU of every possible sample value, for one set of pixel parameters; each thread keeps its
// last table, which a whole series shares.
struct table {
    int bits_allocated = 0, bits_stored = 0, pixel_rep = -1;
    bool has_padding = false;
    int64_t padding = 0;
    double slope = 0.0, intercept = 0.0;
    std::vector<float> hu;
};

const table &
hu_table(const mms_pixel_layout &lo, int bits_stored, double slope, double intercept)
{
    thread_local table t;
    if (t.bits_allocated == lo.bits_allocated && t.bits_stored == bits_stored &&
        t.pixel_rep == lo.pixel_rep && t.has_padding == lo.has_padding && t.padding == lo.padding &&
        t.slope == slope && t.intercept == intercept)
        return t;
    t.hu.resize((size_t)1 << lo.bits_allocated);
    for (uint32_t raw = 0; raw < t.hu.size(); raw++) {
        int32_t v = stored(raw, bits_stored, lo.pixel_rep == 1);
        t.hu[raw] =
            lo.has_padding && v == lo.padding ? padding_hu : (float)((double)v * slope + intercept);
    }
    t.bits_allocated = lo.bits_allocated;
    t.bits_stored = bits_stored;
    t.pixel_rep = lo.pixel_rep;
    t.has_padding = lo.has_padding;
    t.padding = lo.padding;
    t.slope = slope;
    t.intercept = intercept;
    return t;
}

// Native pixel data: its declared length (the 4 bytes before the value, in the transfer
// syntax's byte order) and the file's size checked against need, then len bytes from offset
// off of the value.
int
read_native(const char *path, uint64_t value_at, bool big_endian, uint64_t need, uint64_t off,
            uint64_t len, std::vector<unsigned char> *out, std::string *msg)
{
    int fd = -1;
    uint64_t size = 0;
    int rc = mms__dicom_open(path, &fd, &size, msg);
    if (rc < 0)
        return rc;
    unsigned char l[4];
    if (value_at > size || need > size - value_at) {
        rc = MMS_EDICOM;
        *msg = "pixel data shorter than declared (" + std::to_string(need) + " bytes needed, " +
               std::to_string(value_at > size ? 0 : size - value_at) + " in the file)";
    } else if (value_at < 4 || pread(fd, l, 4, (off_t)(value_at - 4)) != 4) {
        rc = MMS_EDICOM;
        *msg = "pixel data element unreadable";
    } else {
        uint32_t vl =
            big_endian ? (uint32_t)l[0] << 24 | (uint32_t)l[1] << 16 | (uint32_t)l[2] << 8 | l[3]
                       : (uint32_t)l[3] << 24 | (uint32_t)l[2] << 16 | (uint32_t)l[1] << 8 | l[0];
        if (vl == 0xffffffffu || vl < need) {
            rc = MMS_EDICOM;
            *msg = "pixel data shorter than declared (" + std::to_string(need) +
                   " bytes needed, the element holds " +
                   (vl == 0xffffffffu ? std::string("an undefined length") : std::to_string(vl)) +
                   ")";
        }
    }
    if (rc == 0) {
        out->resize(len);
        uint64_t done = 0;
        while (done < len) {
            ssize_t r = pread(fd, out->data() + done, len - done, (off_t)(value_at + off + done));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                rc = r < 0 ? -errno : MMS_EDICOM;
                *msg = r < 0 ? mms_strerror(rc) : "pixel data shorter than declared";
                break;
            }
            done += (uint64_t)r;
        }
    }
    close(fd);
    return rc;
}

// Before GDCM reads the pixel data: the transfer syntax is one it knows, and native data is
// in the file as declared (GDCM would allocate the declared length; deflated data is checked
// after inflating).
int
gdcm_check(const char *path, const char *ts_uid, uint64_t nbytes, std::string *msg)
{
    // GDCM allocates the declared length of Pixel Data (of each fragment, when encapsulated)
    // before it reads it: the pre-scan says whether it lies within the file
    struct mms_prescan pre;
    char reason[512];
    int rc = mms_dicom_prescan_file(path, &pre, reason, sizeof reason);
    if (rc < 0) {
        const size_t skip = std::strlen(path) + 2; // "PATH: reason"
        *msg = std::strlen(reason) > skip ? reason + skip : reason;
        return rc;
    }
    if (pre.pixel_at != 0 && !pre.pixel_fits) {
        *msg = pre.pixel_len == 0xffffffffu
                   ? "pixel data fragments shorter than declared, or not ended by a sequence "
                     "delimiter of length 0"
                   : "pixel data shorter than declared (" + std::to_string(pre.pixel_len) +
                         " bytes declared, the file ends first)";
        return MMS_EDICOM;
    }
    // encapsulated data: GDCM allocates per fragment as it reads them, nothing to check here
    const gdcm::TransferSyntax declared = gdcm::TransferSyntax::GetTSType(ts_uid);
    if (declared != gdcm::TransferSyntax::TS_END && declared.IsEncapsulated())
        return 0;
    gdcm::Reader hr;
    hr.SetFileName(path);
    const gdcm::Tag pixel_data(0x7fe0, 0x0010);
    std::set<gdcm::Tag> skip;
    skip.insert(pixel_data);
    if (!hr.ReadUpToTag(pixel_data, skip)) {
        *msg = "not a DICOM file, or unreadable (GDCM)";
        return MMS_EDICOM;
    }
    const uint64_t value_at = hr.GetStreamCurrentPosition(); // the value of Pixel Data
    const gdcm::TransferSyntax ts = hr.GetFile().GetHeader().GetDataSetTransferSyntax();
    if (!ts.IsValid() || ts == gdcm::TransferSyntax::TS_END) {
        *msg = "unsupported transfer syntax '" + std::string(ts_uid) + "'";
        return MMS_EDICOM;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int rc = -errno;
        *msg = mms_strerror(rc);
        return rc;
    }
    const uint64_t size = (uint64_t)sb.st_size;
    if (!ts.IsEncapsulated() && ts != gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian &&
        (value_at > size || nbytes > size - value_at)) {
        *msg = "pixel data shorter than declared (" + std::to_string(nbytes) + " bytes needed, " +
               std::to_string(value_at > size ? 0 : size - value_at) + " in the file)";
        return MMS_EDICOM;
    }
    return 0;
}

// Where each frame of encapsulated pixel data begins: ranges[f] = (first fragment, end).
// One fragment per frame where the counts agree; else the Basic Offset Table; else, for the
// JPEG family and JPEG 2000, a new frame at each fragment that opens a new codestream (the
// fragmented multi-frame files without offset table that GDCM's own decoder refuses).
int
frame_ranges(const gdcm::SequenceOfFragments &sf, int64_t frames, const gdcm::TransferSyntax &ts,
             std::vector<std::pair<size_t, size_t>> *ranges, std::string *msg)
{
    const size_t nf = sf.GetNumberOfFragments();
    ranges->clear();
    if (frames == 1) {
        ranges->emplace_back(0, nf);
    } else if ((int64_t)nf == frames) {
        for (size_t i = 0; i < nf; i++)
            ranges->emplace_back(i, i + 1);
    } else {
        std::vector<size_t> starts;
        const gdcm::ByteValue *bot = sf.GetTable().GetByteValue();
        if (bot != nullptr && (int64_t)bot->GetLength() == 4 * frames) {
            // offsets from the first fragment's item tag, each fragment 8 bytes of item header
            std::vector<uint64_t> at(nf + 1, 0);
            for (size_t i = 0; i < nf; i++)
                at[i + 1] = at[i] + 8 + sf.GetFragment(i).GetVL();
            const unsigned char *b = reinterpret_cast<const unsigned char *>(bot->GetPointer());
            for (int64_t f = 0; f < frames; f++) {
                uint64_t off = (uint64_t)b[4 * f] | (uint64_t)b[4 * f + 1] << 8 |
                               (uint64_t)b[4 * f + 2] << 16 | (uint64_t)b[4 * f + 3] << 24;
                size_t i = 0;
                while (i < nf && at[i] < off)
                    i++;
                if (i == nf || at[i] != off || (!starts.empty() && i <= starts.back())) {
                    *msg = "the basic offset table does not point at fragments";
                    return MMS_EDICOM;
                }
                starts.push_back(i);
            }
        } else {
            const bool j2k = ts == gdcm::TransferSyntax::JPEG2000Lossless ||
                             ts == gdcm::TransferSyntax::JPEG2000;
            const bool rle = ts == gdcm::TransferSyntax::RLELossless;
            for (size_t i = 0; i < nf && !rle; i++) {
                const gdcm::ByteValue *bv = sf.GetFragment(i).GetByteValue();
                const unsigned char *d =
                    bv != nullptr ? reinterpret_cast<const unsigned char *>(bv->GetPointer())
                                  : nullptr;
                const size_t n = bv != nullptr ? (size_t)bv->GetLength() : 0;
                bool opens = j2k ? (n >= 2 && d[0] == 0xff && d[1] == 0x4f) ||
                                       (n >= 8 && std::memcmp(d, "\0\0\0\x0cjP  ", 8) == 0)
                                 : n >= 2 && d[0] == 0xff && d[1] == 0xd8;
                if (opens)
                    starts.push_back(i);
            }
            if ((int64_t)starts.size() != frames || starts[0] != 0) {
                *msg = std::to_string(nf) + " fragments cannot be split into " +
                       std::to_string(frames) + " frames";
                return MMS_EDICOM;
            }
        }
        for (size_t f = 0; f < starts.size(); f++)
            ranges->emplace_back(starts[f], f + 1 < starts.size() ? starts[f + 1] : nf);
    }
    return 0;
}

// Decode frame f of encapsulated pixel data into out (frame_bytes): its fragments joined, a
// fresh codec, JPEG 2000 on codec_threads of OpenJPEG's own (0 or 1: the calling thread).
// *bits_stored: lowered where the codestream stores fewer bits than the image says (as GDCM's
// own decoder does).
int
decode_frame(const gdcm::Image &im, const gdcm::SequenceOfFragments *sf,
             const std::vector<std::pair<size_t, size_t>> &ranges, int64_t f, uint64_t frame_bytes,
             int codec_threads, unsigned char *out, int *bits_stored, std::string *msg)
{
    const gdcm::TransferSyntax ts = im.GetTransferSyntax();
    const gdcm::PixelFormat &pf = im.GetPixelFormat();
    const unsigned dims[3] = {im.GetDimension(0), im.GetDimension(1), 1};
    std::vector<char> joined;
    for (size_t i = ranges[f].first; i < ranges[f].second; i++) {
        const gdcm::ByteValue *bv = sf->GetFragment(i).GetByteValue();
        if (bv != nullptr)
            joined.insert(joined.end(), bv->GetPointer(), bv->GetPointer() + bv->GetLength());
    }
    gdcm::SmartPointer<gdcm::SequenceOfFragments> one = new gdcm::SequenceOfFragments;
    gdcm::Fragment frag;
    frag.SetByteValue(joined.data(), (uint32_t)joined.size());
    one->AddFragment(frag);
    gdcm::DataElement in(gdcm::Tag(0x7fe0, 0x0010));
    in.SetValue(*one);
    // a fresh codec per frame, set up in the order GDCM's own decoder uses (the JPEG codec
    // picks its 8, 12 or 16-bit engine when it is given the pixel format)
    gdcm::JPEGCodec jpeg;
    gdcm::JPEGLSCodec jpegls;
    gdcm::JPEG2000Codec j2k;
    gdcm::RLECodec rle;
    j2k.SetNumberOfThreadsForDecompression(codec_threads > 1 ? codec_threads : 0);
    jpegls.SetBufferLength(frame_bytes);
    rle.SetBufferLength(frame_bytes);
    gdcm::ImageCodec *codec = nullptr;
    for (gdcm::ImageCodec *c : {(gdcm::ImageCodec *)&jpeg, (gdcm::ImageCodec *)&jpegls,
                                (gdcm::ImageCodec *)&j2k, (gdcm::ImageCodec *)&rle})
        if (codec == nullptr && c->CanDecode(ts))
            codec = c;
    if (codec == nullptr) {
        *msg = std::string("unsupported transfer syntax '") + ts.GetString() + "'";
        return MMS_EDICOM;
    }
    codec->SetNumberOfDimensions(2);
    codec->SetDimensions(dims);
    codec->SetPlanarConfiguration(im.GetPlanarConfiguration());
    codec->SetPhotometricInterpretation(im.GetPhotometricInterpretation());
    codec->SetPixelFormat(pf);
    codec->SetNeedOverlayCleanup(false); // the unused high bits are masked here
    gdcm::DataElement decoded;
    const gdcm::ByteValue *bv = nullptr;
    if (!codec->Decode(in, decoded) || (bv = decoded.GetByteValue()) == nullptr ||
        (uint64_t)bv->GetLength() < frame_bytes) {
        *msg = "decoder failed on frame " + std::to_string(f + 1) + " (transfer syntax " +
               ts.GetString() + ")";
        return MMS_EDICOM;
    }
    std::memcpy(out, bv->GetPointer(), frame_bytes);
    const gdcm::PixelFormat &cpf = codec->GetPixelFormat();
    if (cpf.GetBitsAllocated() == pf.GetBitsAllocated() &&
        cpf.GetSamplesPerPixel() == pf.GetSamplesPerPixel() &&
        (int)cpf.GetBitsStored() < *bits_stored && cpf.GetBitsStored() >= 1)
        *bits_stored = (int)cpf.GetBitsStored();
    return 0;
}

// Decode frames first .. first+count-1 of encapsulated pixel data into out (frame_bytes
// each) on up to threads threads: the frames in parallel (each thread its own codec), and
// each JPEG 2000 codestream on OpenJPEG's threads where there are more threads than frames.
// The first failure in frame order is the one reported; *bits_stored: the lowest any frame's
// decoder gives.
int
decode_encapsulated(const gdcm::Image &im, int64_t first, int64_t count, uint64_t frame_bytes,
                    int threads, unsigned char *out, int *bits_stored, std::string *msg)
{
    const gdcm::TransferSyntax ts = im.GetTransferSyntax();
    const gdcm::SequenceOfFragments *sf = im.GetDataElement().GetSequenceOfFragments();
    if (sf == nullptr || sf->GetNumberOfFragments() == 0) {
        *msg = "encapsulated pixel data without fragments";
        return MMS_EDICOM;
    }
    const int64_t frames = im.GetNumberOfDimensions() >= 3 ? (int64_t)im.GetDimension(2) : 1;
    std::vector<std::pair<size_t, size_t>> ranges;
    int rc = frame_ranges(*sf, frames, ts, &ranges, msg);
    if (rc < 0)
        return rc;
    const int nt = (int)std::min<int64_t>(threads > 1 ? threads : 1, count);
    const int codec_threads = threads > nt ? threads / nt : 1;
    struct part {
        int bits;
        int rc = 0;
        int64_t bad = INT64_MAX; // the frame that failed
        std::string msg;
    };
    part init;
    init.bits = *bits_stored;
    std::vector<part> parts(nt, init);
    std::atomic<int64_t> next(first), stop(first + count); // no frame from stop on
    auto work = [&](part *me) {
        for (int64_t f; (f = next++) < stop.load();) {
            int r = decode_frame(im, sf, ranges, f, frame_bytes, codec_threads,
                                 out + (uint64_t)(f - first) * frame_bytes, &me->bits, &me->msg);
            if (r < 0) {
                me->rc = r;
                me->bad = f;
                for (int64_t s = stop.load(); f < s && !stop.compare_exchange_weak(s, f);) {
                }
                return;
            }
        }
    };
    std::vector<std::thread> pool;
    try {
        for (int k = 1; k < nt; k++)
            pool.emplace_back(work, &parts[k]);
    } catch (const std::system_error &) { // fewer threads: the others take the frames
    }
    work(&parts[0]);
    for (std::thread &t : pool)
        t.join();
    const part *worst = nullptr;
    for (const part &pt : parts)
        if (pt.rc < 0 && (worst == nullptr || pt.bad < worst->bad))
            worst = &pt;
    if (worst != nullptr) {
        *msg = worst->msg;
        return worst->rc;
    }
    for (const part &pt : parts)
        *bits_stored = std::min(*bits_stored, pt.bits);
    return 0;
}

} // namespace

extern "C" int
mms_frames_decode(const char *path, const struct mms_header *h, int64_t first, int64_t count,
                  uint64_t max_voxels, int threads, float *hu, char *why, size_t why_len)
{
    if (path == nullptr || hu == nullptr || first < 0 || count < 1)
        return mms__dicom_fail(why, why_len, MMS_EINVAL, path != nullptr ? path : "(null)",
                               "invalid argument");
    try {
        struct mms_header own;
        if (h == nullptr) {
            int rc = mms_header_read(path, &own, why, why_len);
            if (rc < 0)
                return rc;
            h = &own;
        }
        const mms_pixel_layout &lo = h->pix;
        if (!lo.ok)
            return mms__dicom_fail(why, why_len, MMS_EDICOM, path, lo.why);
        std::string msg;
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
        int rc;
        // The frames' stored values, in the file's byte order (swap) or the host's.
        // one buffer per thread, reused by the next file (a series' files are alike)
        thread_local std::vector<unsigned char> buf;
        struct shrink {
            ~shrink()
            {
                if (buf.capacity() > ((size_t)64 << 20)) // a large one is not kept
                    std::vector<unsigned char>().swap(buf);
            }
        } shrink_on_return;
        const unsigned char *p;
        int bits_stored = lo.bits_stored;
        double slope = lo.has_slope ? lo.slope : 1.0;
        double intercept = lo.has_intercept ? lo.intercept : 0.0;
        bool swap = false;
        if (lo.native && lo.value_at != 0 &&
            (!lo.has_groups || (lo.has_slope && lo.has_intercept))) {
            // as it lies in the file: only the frames asked for are read
            rc =
                read_native(path, lo.value_at, lo.big_endian, nbytes, (uint64_t)first * frame_bytes,
                            (uint64_t)count * frame_bytes, &buf, &msg);
            if (rc < 0)
                return mms__dicom_fail(why, why_len, rc, path, msg.c_str());
            p = buf.data();
            swap = lo.big_endian && lo.bits_allocated == 16;
        } else {
            rc = gdcm_check(path, h->transfer_syntax, nbytes, &msg);
            if (rc < 0)
                return mms__dicom_fail(why, why_len, rc, path, msg.c_str());
            gdcm::ImageReader ir;
            ir.SetFileName(path);
            if (!ir.Read())
                return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                                       "GDCM cannot read the image");
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
            bits_stored = (int)pf.GetBitsStored();
            if (bits_stored < 1 || bits_stored > lo.bits_allocated)
                bits_stored = lo.bits_stored;
            const gdcm::TransferSyntax ts = im.GetTransferSyntax();
            if (!ts.IsEncapsulated()) {
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
            if (ts.IsEncapsulated()) { // frame by frame, only those asked for
                buf.resize((uint64_t)count * frame_bytes);
                rc = decode_encapsulated(im, first, count, frame_bytes, threads, buf.data(),
                                         &bits_stored, &msg);
                if (rc < 0)
                    return mms__dicom_fail(why, why_len, rc, path, msg.c_str());
                p = buf.data();
            } else {
                buf.resize(nbytes);
                if (!im.GetBuffer(reinterpret_cast<char *>(buf.data()))) {
                    msg = std::string("decoder failed (transfer syntax ") + ts.GetString() + ")";
                    return mms__dicom_fail(why, why_len, MMS_EDICOM, path, msg.c_str());
                }
                p = buf.data() + (uint64_t)first * frame_bytes; // host order: GDCM swaps
            }
            slope = lo.has_slope ? lo.slope : im.GetSlope();
            intercept = lo.has_intercept ? lo.intercept : im.GetIntercept();
        }
        char bad[256];
        if ((rc = mms_rescale_check(slope, intercept, bits_stored, lo.pixel_rep, bad, sizeof bad)) <
            0)
            return mms__dicom_fail(why, why_len, rc, path, bad);
        const table &t = hu_table(lo, bits_stored, slope, intercept);
        const uint64_t nv = frame_voxels * (uint64_t)count;
        if (lo.bits_allocated == 8) {
            for (uint64_t i = 0; i < nv; i++)
                hu[i] = t.hu[p[i]];
        } else if (swap) {
            for (uint64_t i = 0; i < nv; i++)
                hu[i] = t.hu[(unsigned)p[2 * i] << 8 | p[2 * i + 1]];
        } else {
            for (uint64_t i = 0; i < nv; i++) {
                uint16_t u;
                std::memcpy(&u, p + 2 * i, sizeof u);
                hu[i] = t.hu[u];
            }
        }
        return 0;
    } catch (const std::bad_alloc &) {
        return mms__dicom_fail(why, why_len, MMS_ENOMEM, path, "out of memory");
    } catch (...) {
        return mms__dicom_fail(why, why_len, MMS_EDICOM, path,
                               "GDCM failed to decode the pixel data");
    }
}

// dicom: the DICOM Segmentation object (design.md section 7) with DCMTK's dcmseg.
//
// One segmentation with a segment per label present. BINARY: frames in segment order and,
// within a segment, in slice order, one bit per pixel. LABELMAP (Label Map Segmentation
// Storage, which DCMTK 3.6.7 does not know: written as a BINARY one, then turned into it with
// dcmdata): a frame per slice, one byte per pixel holding the segment number, 0 elsewhere.
// Each frame references its source CT instance (and frame) and carries the source slice's
// position, so a tilted or irregular stack keeps its geometry.
// dcmseg writes the data set from one frame per segment: the modules, the segments, the
// shared functional groups and the dimensions. The frames are then put into that data set
// with dcmdata: the Per-frame Functional Groups Sequence (the items dcmseg writes, built in
// place: its per-frame objects, copied for every frame, took most of the time), Number of
// Frames and Pixel Data, whose value DCMTK reads as it writes the file from a stream that
// packs the frames from the labels, so they are never held whole in memory (DCMTK 3.6.7's own
// concatenation of bit-packed frames loses bits when rows x columns is not a multiple of 8).
// DCMTK 3.6.7 also leaves the Common Instance Reference module empty: the Referenced Series
// Sequence is added before the data set is saved (mms__dcm_save: through a buffer, synced,
// renamed into place). Threads: any.
#include "dicom/seg.h"

#include <stdio.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <memory>
#include <new>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/err.h"
#include "common/log.h"
#include "common/uid.h"
#include "dicom/derived-impl.hh"
#include "dicom/dicom-impl.hh"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrma.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrcs.h>
#include <dcmtk/dcmdata/dcvrds.h>
#include <dcmtk/dcmdata/dcvris.h>
#include <dcmtk/dcmdata/dcvrlo.h>
#include <dcmtk/dcmdata/dcvrsh.h>
#include <dcmtk/dcmdata/dcvrst.h>
#include <dcmtk/dcmdata/dcvrui.h>
#include <dcmtk/dcmdata/dcvrul.h>
#include <dcmtk/dcmdata/dcvrus.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmiod/cielabutil.h>
#include <dcmtk/dcmiod/iodmacro.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

namespace
{

// Label Map Segmentation Storage (Supplement 243; DCMTK 3.6.7 has no name for it).
const char label_map_class[] = "1.2.840.10008.5.1.4.1.1.66.7";

// What each frame's Derivation Image Sequence says (dcmseg's codes).
const char derivation_description[] = "Segmentation by MM-UNet";

// One frame: segment u (index into the segments written) on slice k, whose label lab occurs
// on rows r0 to r1 of the slice (r0 < 0: nowhere, an empty frame kept); in a label map, u is
// -1 and the frame is the whole slice.
struct frame {
    int u;
    int64_t k;
    uint8_t lab;
    int32_t r0, r1;
};

// What the Pixel Data value is made of: the frames, one bit per pixel, least significant bit
// first, each frame starting where the previous one ended, then zero bits to len bytes (an
// even number); in a label map, one byte per pixel, the segment number of its label (number).
// It is generated as DCMTK writes it (pixel_stream below), so the frames are never held in
// memory as a whole.
struct pixel_source {
    const uint8_t *labels; // slice k, row j, column i
    size_t cols, plane;
    std::vector<frame> frames;
    bool labelmap;
    Uint8 number[256]; // label map: the segment number of each label, 0 for none
    size_t data;       // bytes holding frame pixels: (plane x frames + 7) / 8, or plane x frames
    size_t len;        // data and padding
};

// What the SEG takes from its source (patient, study, frame of reference: the elements
// importFromSourceImage put in item) must be valid for DCMTK to write it: a value that breaks
// its VR is left empty (mms__dcm_blank_invalid). A missing Frame of Reference UID, which the
// SEG needs, is the one derived from the source series (mms_header_derive_uids()).
OFCondition
mend_imported(DcmSegmentation &seg, const char *for_uid, const char *source)
{
    OFCondition c = mms__dcm_blank_invalid(*seg.getData(), source, "SEG");
    OFString have;
    seg.getFrameOfReference().getFrameOfReferenceUID(have);
    if (c.bad() || !have.empty())
        return c;
    if (for_uid == NULL || for_uid[0] == '\0')
        return makeOFCondition(0, 1, OF_error, "no Frame of Reference UID");
    mms_log(MMS_LOG_WARNING,
            "%s: no Frame of Reference UID: the SEG has %s, derived from the series", source,
            for_uid);
    return seg.getFrameOfReference().setFrameOfReferenceUID(for_uid);
}

// The item of the Per-frame Functional Groups Sequence of one frame, appended to per, with
// the content dcmseg gives it: Derivation Image (the source instance, its frame when the
// source is multi-frame, Spatial Locations Preserved YES: the frame lies on the source grid,
// which readers such as highdicom need), Frame Content (dimension index values: segment
// number, slice number), Plane Position (ipp: "x\y\z"), Segment Identification. A label
// map's frame (segment 0) has neither the segment's index value nor Segment Identification.
OFCondition
put_frame(DcmSequenceOfItems &per, const struct mms_volume_src *src, const char *ipp,
          Uint16 segment, Uint32 slice)
{
    std::unique_ptr<DcmItem> own(new DcmItem());
    DcmItem *fr = own.get();
    OFCondition c = per.append(fr);
    if (c.bad())
        return c;
    own.release();
    DcmItem *der = NULL, *img = NULL, *it = NULL;
    c = mms__dcm_put_item(*fr, DCM_DerivationImageSequence, &der);
    if (c.good())
        c = mms__dcm_put(*der, new DcmShortText(DcmTag(DCM_DerivationDescription, EVR_ST)),
                         derivation_description);
    if (c.good())
        c = mms__dcm_put_item(*der, DCM_SourceImageSequence, &img);
    if (c.good())
        c = mms__dcm_put(*img, new DcmUniqueIdentifier(DcmTag(DCM_ReferencedSOPClassUID, EVR_UI)),
                         src->sop_class);
    if (c.good())
        c = mms__dcm_put(*img,
                         new DcmUniqueIdentifier(DcmTag(DCM_ReferencedSOPInstanceUID, EVR_UI)),
                         src->sop_instance);
    if (c.good() && strcmp(src->sop_class, UID_CTImageStorage) != 0) {
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)src->frame + 1);
        c = mms__dcm_put(*img, new DcmIntegerString(DcmTag(DCM_ReferencedFrameNumber, EVR_IS)),
                         num);
    }
    if (c.good())
        c = mms__dcm_put(*img, new DcmCodeString(DcmTag(DCM_SpatialLocationsPreserved, EVR_CS)),
                         "YES");
    if (c.good())
        c = mms__dcm_put_code(*img, DCM_PurposeOfReferenceCodeSequence, "121322", "DCM",
                              "Source Image for Image Processing Operation");
    if (c.good())
        c = mms__dcm_put_code(*der, DCM_DerivationCodeSequence, "113076", "DCM", "Segmentation");
    if (c.good())
        c = mms__dcm_put_item(*fr, DCM_FrameContentSequence, &it);
    if (c.good()) {
        const Uint32 index[2] = {segment, slice};
        DcmUnsignedLong *e = new DcmUnsignedLong(DcmTag(DCM_DimensionIndexValues, EVR_UL));
        c = segment != 0 ? e->putUint32Array(index, 2) : e->putUint32(slice);
        if (c.good())
            c = it->insert(e);
        if (c.bad())
            delete e;
    }
    if (c.good())
        c = mms__dcm_put_item(*fr, DCM_PlanePositionSequence, &it);
    if (c.good())
        c = mms__dcm_put(*it, new DcmDecimalString(DcmTag(DCM_ImagePositionPatient, EVR_DS)), ipp);
    if (c.good() && segment != 0)
        c = mms__dcm_put_item(*fr, DCM_SegmentIdentificationSequence, &it);
    if (c.good() && segment != 0) {
        DcmUnsignedShort *e = new DcmUnsignedShort(DcmTag(DCM_ReferencedSegmentNumber, EVR_US));
        c = e->putUint16(segment);
        if (c.good())
            c = it->insert(e);
        if (c.bad())
            delete e;
    }
    return c;
}

// The frame of segment number `segment` on slice k through dcmseg (a blank mask, replaced
// with the rest of the frames by put_frame and the packed Pixel Data): dcmseg writes a data
// set only with at least one frame per segment. A label map has one dimension, the position.
OFCondition
add_dcmseg_frame(DcmSegmentation &seg, const struct mms_volume *v, int64_t k, Uint16 segment,
                 bool labelmap, Uint8 *blank)
{
    const struct mms_volume_src *src = &v->src[k];
    std::unique_ptr<FGPlanePosPatient> pos(FGPlanePosPatient::createMinimal(
        mms__ds(v->ipp[k][0]).c_str(), mms__ds(v->ipp[k][1]).c_str(),
        mms__ds(v->ipp[k][2]).c_str()));
    FGFrameContent fc;
    OFVector<ImageSOPInstanceReferenceMacro> images(1);
    OFCondition c = images[0].setReferencedSOPClassUID(src->sop_class);
    if (c.good())
        c = images[0].setReferencedSOPInstanceUID(src->sop_instance);
    // a multi-frame source: which frame (setReferencedFrameNumber fails in 3.6.7)
    if (c.good() && strcmp(src->sop_class, UID_CTImageStorage) != 0)
        c = images[0].addReferencedFrameNumber((Uint16)(src->frame + 1));
    if (c.bad())
        return c;
    std::unique_ptr<FGDerivationImage> der(
        DcmSegmentation::createDerivationImageFG(images, derivation_description));
    c = pos != nullptr && der != nullptr ? EC_Normal : EC_MemoryExhausted;
    if (c.good() && !labelmap)
        c = fc.setDimensionIndexValues(segment, 0);
    if (c.good())
        c = fc.setDimensionIndexValues((Uint32)(k + 1), labelmap ? 0 : 1);
    OFVector<FGBase *> groups;
    groups.push_back(pos.get());
    groups.push_back(&fc);
    groups.push_back(der.get());
    if (c.good())
        c = seg.addFrame(blank, segment, groups);
    return c;
}

// The Referenced Series Sequence of the Common Instance Reference module: the source series
// and every instance the frames refer to, each once.
OFCondition
add_common_references(DcmItem &ds_, const char *series_uid,
                      const std::vector<std::pair<std::string, std::string>> &refs)
{
    DcmItem *series = NULL;
    OFCondition c = ds_.findOrCreateSequenceItem(DCM_ReferencedSeriesSequence, series, 0);
    if (c.bad())
        return c;
    c = series->putAndInsertString(DCM_SeriesInstanceUID, series_uid);
    std::unique_ptr<DcmSequenceOfItems> insts(
        new DcmSequenceOfItems(DcmTag(DCM_ReferencedInstanceSequence, EVR_SQ)));
    std::unordered_set<std::string> seen;
    for (size_t i = 0; c.good() && i < refs.size(); i++) {
        if (!seen.insert(refs[i].second).second)
            continue;
        std::unique_ptr<DcmItem> inst(new DcmItem());
        c = inst->putAndInsertString(DCM_ReferencedSOPClassUID, refs[i].first.c_str());
        if (c.good())
            c = inst->putAndInsertString(DCM_ReferencedSOPInstanceUID, refs[i].second.c_str());
        if (c.good())
            c = insts->append(inst.get());
        if (c.good())
            inst.release();
    }
    if (c.good() && !insts->isEmpty())
        c = series->insert(insts.get());
    if (c.good() && !insts->isEmpty())
        insts.release();
    return c;
}

// What the 64 bytes at p hold: 0, all the value p[0]; 1, only the values p[0] and p[63]; 2,
// other values too.
inline int
chunk_values(const uint8_t *p)
{
#if defined(__SSE2__)
    const __m128i *q = (const __m128i *)p;
    const __m128i a0 = _mm_loadu_si128(q), a1 = _mm_loadu_si128(q + 1);
    const __m128i a2 = _mm_loadu_si128(q + 2), a3 = _mm_loadu_si128(q + 3);
    const __m128i v = _mm_set1_epi8((char)p[0]), w = _mm_set1_epi8((char)p[63]);
    const __m128i v0 = _mm_cmpeq_epi8(a0, v), v1 = _mm_cmpeq_epi8(a1, v);
    const __m128i v2 = _mm_cmpeq_epi8(a2, v), v3 = _mm_cmpeq_epi8(a3, v);
    if (_mm_movemask_epi8(_mm_and_si128(_mm_and_si128(v0, v1), _mm_and_si128(v2, v3))) == 0xffff)
        return 0;
    const __m128i e0 = _mm_or_si128(v0, _mm_cmpeq_epi8(a0, w));
    const __m128i e1 = _mm_or_si128(v1, _mm_cmpeq_epi8(a1, w));
    const __m128i e2 = _mm_or_si128(v2, _mm_cmpeq_epi8(a2, w));
    const __m128i e3 = _mm_or_si128(v3, _mm_cmpeq_epi8(a3, w));
    return _mm_movemask_epi8(_mm_and_si128(_mm_and_si128(e0, e1), _mm_and_si128(e2, e3))) == 0xffff
               ? 1
               : 2;
#else
    const uint64_t ones = 0x0101010101010101ull, low7 = 0x7f7f7f7f7f7f7f7full;
    const uint64_t v = ones * p[0], w = ones * p[63];
    uint64_t x[8], any = 0;
    memcpy(x, p, sizeof x);
    for (int q = 0; q < 8; q++)
        any |= x[q] ^ v;
    if (any == 0)
        return 0;
    for (int q = 0; q < 8; q++) { // every byte equal to one of the two
        const uint64_t a = x[q] ^ v, b = x[q] ^ w;
        const uint64_t za = ~(((a & low7) + low7) | a), zb = ~(((b & low7) + low7) | b);
        if (((za | zb) & (ones << 7)) != (ones << 7))
            return 2;
    }
    return 1;
#endif
}

// Value v seen on row r: the rows on which it occurs extended to r.
inline void
mark(int32_t first[256], int32_t last[256], uint8_t v, int32_t r)
{
    if (last[v] != r) {
        if (last[v] < 0)
            first[v] = r;
        last[v] = r;
    }
}

// The rows of the slice at l (rows x cols) on which each value occurs: from first[value] to
// last[value], both -1 where it does not. A label volume is mostly runs of one value, and
// most of the rest is one boundary between two: 64 bytes at a time.
void
scan_slice(const uint8_t *l, int64_t rows, int64_t cols, int32_t first[256], int32_t last[256])
{
    for (int32_t r = 0; r < (int32_t)rows; r++) {
        const uint8_t *p = l + (size_t)r * (size_t)cols;
        const size_t n = (size_t)cols;
        size_t i = 0;
        for (; i + 64 <= n; i += 64) {
            const int k = chunk_values(p + i);
            mark(first, last, p[i], r);
            if (k == 0)
                continue;
            mark(first, last, p[i + 63], r);
            for (size_t j = i + 1; k == 2 && j < i + 63; j++)
                mark(first, last, p[j], r);
        }
        for (; i < n; i++)
            mark(first, last, p[i], r);
    }
}

// Bit q of the result: p[q] == lab.
inline Uint8
match8(const uint8_t *p, uint8_t lab)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull, low7 = 0x7f7f7f7f7f7f7f7full;
    uint64_t x;
    memcpy(&x, p, 8);
    x ^= ones * lab;                                       // zero bytes: matches
    uint64_t m = ~(((x & low7) + low7) | x) & (ones << 7); // their top bits
    return (Uint8)((m * 0x0002040810204081ull) >> 56);     // gathered, byte q to bit q
#else
    unsigned b = 0;
    for (int q = 0; q < 8; q++)
        b |= (unsigned)(p[q] == lab) << q;
    return (Uint8)b;
#endif
}

#if defined(__SSE2__)
// Bit q of the result: byte q of the 16 at p equals that of v.
inline uint64_t
eq16(const uint8_t *p, __m128i v)
{
    return (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), v));
}
#endif

// The mask of label lab in the n (a multiple of 8) pixels at l, into the n / 8 bytes at out:
// one bit per pixel, the first in the least significant bit.
void
pack_bytes(const uint8_t *l, size_t n, uint8_t lab, Uint8 *out)
{
    size_t i = 0;
#if defined(__SSE2__) // x86, little endian: 64 pixels, 8 bytes at a time
    const __m128i v = _mm_set1_epi8((char)lab);
    for (; i + 64 <= n; i += 64) {
        const uint64_t m = eq16(l + i, v) | eq16(l + i + 16, v) << 16 | eq16(l + i + 32, v) << 32 |
                           eq16(l + i + 48, v) << 48;
        memcpy(out + i / 8, &m, 8);
    }
#endif
    for (; i < n; i += 8)
        out[i >> 3] = match8(l + i, lab);
}

// Bytes [off, off + n) of frame fr of px (px.plane a multiple of 8) into out: only the rows
// on which its label occurs are read, the other bytes are zero.
void
frame_bytes(const pixel_source &px, const frame &fr, size_t off, size_t n, Uint8 *out)
{
    size_t a = off, b = off; // [a, b): the bytes packed from the labels
    if (fr.r0 >= 0) {
        a = (size_t)fr.r0 * px.cols / 8;
        b = ((size_t)fr.r1 + 1) * px.cols / 8 + (((size_t)fr.r1 + 1) * px.cols % 8 != 0);
        a = a < off ? off : a > off + n ? off + n : a;
        b = b < a ? a : b > off + n ? off + n : b;
    }
    memset(out, 0, a - off);
    if (b > a)
        pack_bytes(px.labels + (size_t)fr.k * px.plane + a * 8, (b - a) * 8, fr.lab,
                   out + (a - off));
    memset(out + (b - off), 0, off + n - b);
}

// Bytes [pos, pos + n) of the Pixel Data value of px into out.
void
fill(const pixel_source &px, size_t pos, size_t n, Uint8 *out)
{
    const size_t end = pos + n;
    if (px.labelmap) { // frames are whole slices in order: the labels' bytes, mapped
        const size_t m = end < px.data ? end : px.data;
        for (; pos < m; pos++)
            *out++ = px.number[px.labels[pos]];
    } else if (px.plane % 8 == 0) {
        const size_t fb = px.plane / 8;
        while (pos < end && pos < px.data) {
            const size_t f = pos / fb, off = pos - f * fb;
            const size_t m = end - pos < fb - off ? end - pos : fb - off;
            frame_bytes(px, px.frames[f], off, m, out);
            out += m;
            pos += m;
        }
    } else if (pos < px.data) { // frames start inside bytes
        size_t f = pos * 8 / px.plane, p = pos * 8 % px.plane;
        for (; pos < end && pos < px.data; pos++) {
            unsigned byte = 0;
            if (p + 8 <= px.plane) {
                const frame &fr = px.frames[f];
                if (fr.r0 >= 0)
                    byte = match8(px.labels + (size_t)fr.k * px.plane + p, fr.lab);
                p += 8;
            } else {
                for (int q = 0; q < 8 && f < px.frames.size(); q++, p++) {
                    if (p == px.plane) {
                        f++;
                        p = 0;
                        if (f == px.frames.size())
                            break;
                    }
                    const frame &fr = px.frames[f];
                    if (fr.r0 >= 0 && px.labels[(size_t)fr.k * px.plane + p] == fr.lab)
                        byte |= 1u << q;
                }
            }
            if (p == px.plane) {
                f++;
                p = 0;
            }
            *out++ = (Uint8)byte;
        }
    }
    if (pos < end)
        memset(out, 0, end - pos);
}

// The Pixel Data value of a pixel_source as a DCMTK input stream: DCMTK reads the value of an
// element whose value is not in memory through such a stream when it writes it (by blocks of
// 64 KiB through its write cache), as it does for a value left in the file it was read from.
class pixel_producer : public DcmProducer
{
  public:
    explicit pixel_producer(const pixel_source *px) : px_(px), pos_(0)
    {
    }
    OFBool
    good() const override
    {
        return OFTrue;
    }
    OFCondition
    status() const override
    {
        return EC_Normal;
    }
    OFBool
    eos() override
    {
        return pos_ >= px_->len;
    }
    offile_off_t
    avail() override
    {
        return (offile_off_t)(px_->len - pos_);
    }
    offile_off_t
    read(void *buf, offile_off_t buflen) override
    {
        size_t n = buflen < avail() ? (size_t)buflen : (size_t)avail();
        fill(*px_, pos_, n, (Uint8 *)buf);
        pos_ += n;
        return (offile_off_t)n;
    }
    offile_off_t
    skip(offile_off_t skiplen) override
    {
        size_t n = skiplen < avail() ? (size_t)skiplen : (size_t)avail();
        pos_ += n;
        return (offile_off_t)n;
    }
    void
    putback(offile_off_t num) override
    {
        pos_ -= (size_t)num < pos_ ? (size_t)num : pos_;
    }

  private:
    const pixel_source *px_;
    size_t pos_;
};

class pixel_stream_factory;

class pixel_stream : public DcmInputStream
{
  public:
    explicit pixel_stream(const pixel_source *px)
        : DcmInputStream(&producer_), producer_(px), px_(px)
    {
    }
    DcmInputStreamFactory *newFactory() const override;

  private:
    pixel_producer producer_;
    const pixel_source *px_;
};

class pixel_stream_factory : public DcmInputStreamFactory
{
  public:
    explicit pixel_stream_factory(const pixel_source *px) : px_(px)
    {
    }
    DcmInputStream *
    create() const override
    {
        return new pixel_stream(px_);
    }
    DcmInputStreamFactory *
    clone() const override
    {
        return new pixel_stream_factory(px_);
    }
    DcmInputStreamFactoryType
    ident() const override
    {
        return DFT_DcmInputTempFileStreamFactory; // DCMTK does not ask; the nearest kind
    }

  private:
    const pixel_source *px_;
};

DcmInputStreamFactory *
pixel_stream::newFactory() const
{
    return new pixel_stream_factory(px_);
}

// The BINARY data set dcmseg wrote made a LABELMAP one (Supplement 243): SOP class, type, 8
// bits allocated and stored, and 0, where no segment is, the Pixel Padding Value.
OFCondition
make_labelmap(DcmItem &ds_)
{
    OFCondition c = ds_.putAndInsertString(DCM_SOPClassUID, label_map_class);
    if (c.good())
        c = ds_.putAndInsertString(DCM_SegmentationType, "LABELMAP");
    if (c.good())
        c = ds_.putAndInsertUint16(DCM_BitsAllocated, 8);
    if (c.good())
        c = ds_.putAndInsertUint16(DCM_BitsStored, 8);
    if (c.good())
        c = ds_.putAndInsertUint16(DCM_HighBit, 7);
    if (c.good())
        c = ds_.putAndInsertUint16(DCM_PixelPaddingValue, 0);
    return c;
}

// The frames put into the data set dcmseg wrote: Number of Frames, the Per-frame Functional
// Groups Sequence and Pixel Data (its value read from px as the data set is saved: px must
// outlive the data set's writing).
OFCondition
put_frames(DcmItem &ds_, const struct mms_volume *v, const std::vector<Uint16> &number,
           const pixel_source *px)
{
    const std::vector<frame> &frames = px->frames;
    char num[24];
    snprintf(num, sizeof num, "%zu", frames.size());
    OFCondition c = ds_.putAndInsertString(DCM_NumberOfFrames, num);
    if (c.bad())
        return c;

    // functional groups, the position text made once per slice
    std::unique_ptr<DcmSequenceOfItems> per(
        new DcmSequenceOfItems(DcmTag(DCM_PerFrameFunctionalGroupsSequence, EVR_SQ)));
    std::vector<std::string> ipp((size_t)v->dims[2]);
    for (size_t f = 0; c.good() && f < frames.size(); f++) {
        const int64_t k = frames[f].k;
        std::string &p = ipp[(size_t)k];
        if (p.empty())
            p = mms__ds(v->ipp[k][0]) + "\\" + mms__ds(v->ipp[k][1]) + "\\" + mms__ds(v->ipp[k][2]);
        const Uint16 segment = frames[f].u >= 0 ? number[(size_t)frames[f].u] : 0;
        c = put_frame(*per, &v->src[k], p.c_str(), segment, (Uint32)(k + 1));
    }
    if (c.good())
        c = ds_.insert(per.get(), OFTrue);
    if (c.bad())
        return c;
    per.release();

    // pixel data: the element dcmseg wrote, its value now to be read from px
    DcmElement *e = NULL;
    c = ds_.findAndGetElement(DCM_PixelData, e);
    if (c.bad())
        return c;
    std::unique_ptr<pixel_stream_factory> factory(new pixel_stream_factory(px));
    c = e->createValueFromTempFile(factory.get(), (Uint32)px->len, EBO_LittleEndian);
    if (c.good())
        factory.release(); // the element's now
    return c;
}

// The SEG of in into the data set of ff; its Pixel Data value is read from *px (filled here)
// when ff is saved. The segments written in *n_segments.
int
build(const struct mms_seg_input *in, DcmFileFormat &ff, pixel_source *px, int *n_segments,
      char *why, size_t why_len)
{
    const struct mms_volume *v = in->vol;
    const int64_t cols = v->dims[0], rows = v->dims[1], slices = v->dims[2];
    const size_t plane = (size_t)(cols * rows);

    // on which rows of which slices each segment is: at[2 * (s * slices + k)] to [... + 1]
    std::vector<int32_t> at((size_t)in->n_segments * (size_t)slices * 2, -1);
    for (int64_t k = 0; k < slices; k++) {
        int32_t first[256], last[256];
        for (int i = 0; i < 256; i++)
            first[i] = last[i] = -1;
        scan_slice(in->labels + (size_t)k * plane, rows, cols, first, last);
        for (int s = 0; s < in->n_segments; s++) {
            const int lab = in->segments[s].label;
            if (lab > 0 && lab < 256 && first[lab] >= 0) {
                at[2 * ((size_t)s * (size_t)slices + (size_t)k)] = first[lab];
                at[2 * ((size_t)s * (size_t)slices + (size_t)k) + 1] = last[lab];
            }
        }
    }
    std::vector<int> used;
    for (int s = 0; s < in->n_segments; s++) {
        bool any = false;
        for (int64_t k = 0; k < slices && !any; k++)
            any = at[2 * ((size_t)s * (size_t)slices + (size_t)k)] >= 0;
        if (any)
            used.push_back(s);
    }
    if (used.empty())
        return mms_why(why, why_len, MMS_EINVAL, "no segment has a voxel");

    // the frames: of a label map, the slices in order; else in segment order and within a
    // segment in slice order
    const bool labelmap = in->form.labelmap;
    std::vector<frame> &frames = px->frames;
    for (int64_t k = 0; labelmap && k < slices; k++)
        frames.push_back(frame{-1, k, 0, 0, (int32_t)rows - 1});
    for (size_t u = 0; !labelmap && u < used.size(); u++) {
        const uint8_t lab = (uint8_t)in->segments[used[u]].label;
        for (int64_t k = 0; k < slices; k++) {
            const int32_t *r = &at[2 * ((size_t)used[u] * (size_t)slices + (size_t)k)];
            if (in->form.keep_empty || r[0] >= 0)
                frames.push_back(frame{(int)u, k, lab, r[0], r[1]});
        }
    }
    size_t bits;
    if (frames.size() > 2147483647u || __builtin_mul_overflow(plane, frames.size(), &bits) ||
        (labelmap ? bits : bits / 8) > 4294967292u)
        return mms_why(why, why_len, MMS_EINVAL, "%zu frames of %zu pixels: too many",
                       frames.size(), plane);
    px->labels = in->labels;
    px->cols = (size_t)cols;
    px->plane = plane;
    px->labelmap = labelmap;
    memset(px->number, 0, sizeof px->number);
    px->data = labelmap ? bits : (bits + 7) / 8;
    px->len = px->data + (px->data & 1); // even length

    char description[256];
    if (in->series_description != NULL && in->series_description[0] != '\0')
        snprintf(description, sizeof description, "%s", in->series_description);
    else
        snprintf(description, sizeof description, "MM-UNet %s", in->algorithm_name);

    mms__route_dcmtk_log();
    IODGeneralEquipmentModule::EquipmentInfo eq("mmsegd", "mmsegd", "1", in->software_version);
    ContentIdentificationMacro ci("1", "SEGMENTATION", description, "");
    DcmSegmentation *seg = NULL;
    OFCondition c =
        DcmSegmentation::createBinarySegmentation(seg, (Uint16)rows, (Uint16)cols, eq, ci);
    if (c.bad())
        return mms__dcm_fail(why, why_len, "creating the segmentation", c);
    std::unique_ptr<DcmSegmentation> own(seg);
    seg->setCheckFGOnWrite(OFFalse);

    // patient, study and frame of reference from the first source file
    c = seg->importFromSourceImage(in->paths[v->src[0].file]);
    if (c.good())
        c = mend_imported(*seg, in->frame_of_ref_uid, in->paths[v->src[0].file]);
    if (c.bad())
        return mms__dcm_fail(why, why_len, in->paths[v->src[0].file], c);
    if (in->study_uid != NULL && in->study_uid[0] != '\0')
        c = seg->getStudy().setStudyInstanceUID(in->study_uid);
    if (c.good())
        c = seg->getSeries().setSeriesInstanceUID(in->series_uid);
    if (c.good())
        c = seg->getSeries().setSeriesDescription(description);
    if (c.good()) {
        char num[16];
        snprintf(num, sizeof num, "%d", in->series_number);
        c = seg->getSeries().setSeriesNumber(num);
    }
    if (c.good())
        c = seg->getSOPCommon().setSOPInstanceUID(in->sop_instance_uid);
    if (c.bad())
        return mms__dcm_fail(why, why_len, "series and instance", c);

    // shared functional groups: orientation and pixel measures
    std::unique_ptr<FGPlaneOrientationPatient> ori(FGPlaneOrientationPatient::createMinimal(
        mms__ds(v->dir[0][0]).c_str(), mms__ds(v->dir[1][0]).c_str(), mms__ds(v->dir[2][0]).c_str(),
        mms__ds(v->dir[0][1]).c_str(), mms__ds(v->dir[1][1]).c_str(),
        mms__ds(v->dir[2][1]).c_str()));
    FGPixelMeasures pm;
    std::string spacing = mms__ds(v->spacing[1]) + "\\" + mms__ds(v->spacing[0]);
    c = ori != nullptr ? pm.setPixelSpacing(spacing.c_str()) : EC_MemoryExhausted;
    if (c.good())
        c = pm.setSliceThickness(mms__ds(v->spacing[2]).c_str());
    if (c.good())
        c = seg->addForAllFrames(pm);
    if (c.good())
        c = seg->addForAllFrames(*ori);
    if (c.bad())
        return mms__dcm_fail(why, why_len, "shared functional groups", c);

    // dimensions: segment (not in a label map), then position
    char dim_uid[65], dim_name[128]; // deterministic, as the SEG's own UIDs
    snprintf(dim_name, sizeof dim_name, "mmsegd seg dimensions|%s", in->sop_instance_uid);
    mms_uid_uuid5(dim_name, dim_uid);
    IODMultiframeDimensionModule &dims = seg->getDimensions();
    if (!labelmap)
        c = dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid,
                                   DCM_SegmentIdentificationSequence, "ReferencedSegmentNumber");
    if (c.good())
        c = dims.addDimensionIndex(DCM_ImagePositionPatient, dim_uid, DCM_PlanePositionSequence,
                                   "ImagePositionPatient");
    if (c.bad())
        return mms__dcm_fail(why, why_len, "dimension organization", c);

    // segments, as they are for the patient's sex
    OFString sex;
    seg->getPatient().getPatientSex(sex);
    const int sx = sex == "M" ? 0 : sex == "F" ? 1 : sex == "O" ? 2 : -1;
    std::vector<Uint16> number(used.size());
    for (size_t u = 0; u < used.size(); u++) {
        const struct mms_seg_segment *s = &in->segments[used[u]];
        if (sx >= 0 && s->by_sex[sx] != NULL)
            s = s->by_sex[sx];
        CodeSequenceMacro cat(s->category.value, s->category.scheme, s->category.meaning);
        CodeSequenceMacro type(s->type.value, s->type.scheme, s->type.meaning);
        DcmSegment *sg = NULL;
        c = DcmSegment::create(sg, s->segment_label, cat, type, DcmSegTypes::SAT_AUTOMATIC,
                               in->algorithm_name);
        if (c.bad())
            return mms__dcm_fail(why, why_len, s->segment_label, c);
        if (s->has_modifier) {
            CodeSequenceMacro *mod =
                new CodeSequenceMacro(s->modifier.value, s->modifier.scheme, s->modifier.meaning);
            sg->getSegmentedPropertyTypeModifierCode().push_back(mod);
        }
        double L, a, b;
        IODCIELabUtil::rgb2DicomLab(L, a, b, s->rgb[0] / 255.0, s->rgb[1] / 255.0,
                                    s->rgb[2] / 255.0);
        c = sg->setRecommendedDisplayCIELabValue((Uint16)(L + 0.5), (Uint16)(a + 0.5),
                                                 (Uint16)(b + 0.5));
        AlgorithmIdentificationMacro &alg = sg->getSegmentationAlgorithmIdentification();
        if (c.good())
            c = alg.getAlgorithmFamilyCode().set("123110", "DCM", "Artificial Intelligence");
        if (c.good())
            c = alg.setAlgorithmName(in->algorithm_name);
        if (c.good())
            c = alg.setAlgorithmVersion(in->algorithm_version);
        if (c.good() && in->model_sha256 != NULL) {
            std::string p = std::string("model_sha256=") + in->model_sha256;
            c = alg.setAlgorithmParameters(p.c_str());
        }
        if (c.good())
            c = seg->addSegment(sg, number[u]);
        if (c.bad()) {
            delete sg;
            return mms__dcm_fail(why, why_len, s->segment_label, c);
        }
        px->number[s->label] = (Uint8)number[u];
    }

    // dcmseg: the first frame of each segment, blank
    {
        std::vector<Uint8> blank(plane, 0);
        size_t f = 0;
        for (size_t u = 0; c.good() && u < used.size(); u++) {
            while (!labelmap && frames[f].u != (int)u)
                f++;
            c = add_dcmseg_frame(*seg, v, frames[f].k, number[u], labelmap, blank.data());
        }
        if (c.bad())
            return mms__dcm_fail(why, why_len, "adding a frame", c);
    }
    c = seg->writeDataset(*ff.getDataset());
    if (c.good() && labelmap)
        c = make_labelmap(*ff.getDataset());
    if (c.good())
        c = put_frames(*ff.getDataset(), v, number, px);
    if (c.good()) {
        std::vector<char> referenced((size_t)slices, 0);
        for (const auto &f : frames)
            referenced[(size_t)f.k] = 1;
        std::vector<std::pair<std::string, std::string>> refs;
        for (int64_t k = 0; k < slices; k++)
            if (referenced[(size_t)k])
                refs.emplace_back(v->src[k].sop_class, v->src[k].sop_instance);
        c = add_common_references(*ff.getDataset(), in->source_series_uid, refs);
    }
    if (c.bad())
        return mms__dcm_fail(why, why_len, "writing the data set", c);
    *n_segments = (int)used.size();
    return 0;
}

} // namespace

extern "C" int
mms_seg_write(const struct mms_seg_input *in, const char *path, struct mms_seg_result *res,
              char *why, size_t why_len)
{
    try {
        const struct mms_volume *v = in->vol;
        if (v->dims[0] < 1 || v->dims[1] < 1 || v->dims[2] < 1 || v->dims[0] > 65535 ||
            v->dims[1] > 65535 || in->n_segments < 1)
            return mms_why(why, why_len, MMS_EINVAL, "nothing to write");
        pixel_source px; // read while ff is saved
        DcmFileFormat ff;
        int segments = 0;
        int rc = build(in, ff, &px, &segments, why, why_len);
        if (rc == 0)
            rc = mms__dcm_save(ff, path, why, why_len);
        if (rc == 0 && res != NULL) {
            res->segments = segments;
            res->frames = (int64_t)px.frames.size();
        }
        return rc;
    } catch (const std::bad_alloc &) {
        return mms_why(why, why_len, MMS_ENOMEM, "%s: out of memory", path);
    } catch (...) {
        return mms_why(why, why_len, MMS_EDICOM, "%s: DCMTK failed", path);
    }
}

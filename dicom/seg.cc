// dicom: the DICOM Segmentation object (design.md section 7) with DCMTK's dcmseg.
//
// One BINARY segmentation: a segment per label present, frames in segment order and, within a
// segment, in slice order; each frame references its source CT instance (and frame) and
// carries the source slice's position, so a tilted or irregular stack keeps its geometry.
// DCMTK 3.6.7 leaves the Common Instance Reference module empty: the Referenced Series
// Sequence is added to the data set before it is saved. Threads: any.
#include "dicom/seg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "common/err.h"
#include "common/uid.h"
#include "dicom/dicom-impl.hh"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
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

// A decimal string of v as DICOM DS wants it (at most 16 characters).
std::string
ds(double v)
{
    char buf[32];
    for (int prec = 10; prec > 0; prec--) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strlen(buf) <= 16)
            break;
    }
    return buf;
}

int
fail(char *why, size_t why_len, const char *what, const OFCondition &c)
{
    return mms_why(why, why_len, MMS_EDICOM, "%s: %s", what, c.text());
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
    for (size_t i = 0; c.good() && i < refs.size(); i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = refs[j].second == refs[i].second;
        if (seen)
            continue;
        DcmItem *inst = NULL;
        c = series->findOrCreateSequenceItem(DCM_ReferencedInstanceSequence, inst, -2);
        if (c.good())
            c = inst->putAndInsertString(DCM_ReferencedSOPClassUID, refs[i].first.c_str());
        if (c.good())
            c = inst->putAndInsertString(DCM_ReferencedSOPInstanceUID, refs[i].second.c_str());
    }
    return c;
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

// What DCMTK 3.6.7 gets wrong in the frames, put right in the data set it wrote:
// - Pixel Data: its concatenation of bit-packed frames loses bits when rows x columns is not
//   a multiple of 8, so the frames (one bit per pixel, least significant bit first, each
//   frame starting where the previous one ended) are packed here from the labels;
// - Spatial Locations Preserved YES on every source reference (the frames lie on the source
//   grid), which readers such as highdicom need to map frames to source instances.
OFCondition
finish_frames(DcmItem &ds_, const uint8_t *labels, size_t plane,
              const std::vector<std::pair<int, int64_t>> &order)
{
    size_t bits = plane * order.size(), len = (bits + 7) / 8;
    len += len & 1; // even length
    std::vector<Uint8> px(len, 0);
    size_t bit = 0;
    for (const auto &f : order) {
        const uint8_t *l = labels + (size_t)f.second * plane;
        const uint8_t lab = (uint8_t)f.first;
        size_t i = 0;
        for (; i < plane && (bit & 7) != 0; i++, bit++) // up to a byte boundary
            if (l[i] == lab)
                px[bit >> 3] = (Uint8)(px[bit >> 3] | 1u << (bit & 7));
        for (; i + 8 <= plane; i += 8, bit += 8) // whole bytes, 8 pixels at a time
            px[bit >> 3] = match8(l + i, lab);
        for (; i < plane; i++, bit++) // the rest
            if (l[i] == lab)
                px[bit >> 3] = (Uint8)(px[bit >> 3] | 1u << (bit & 7));
    }
    OFCondition c = ds_.putAndInsertUint8Array(DCM_PixelData, px.data(), (unsigned long)len);
    DcmSequenceOfItems *per = NULL;
    if (c.good())
        c = ds_.findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per);
    for (unsigned long i = 0; c.good() && per != NULL && i < per->card(); i++) {
        DcmItem *der = NULL;
        if (per->getItem(i)->findAndGetSequenceItem(DCM_DerivationImageSequence, der, 0).bad())
            continue;
        DcmSequenceOfItems *srcs = NULL;
        if (der->findAndGetSequence(DCM_SourceImageSequence, srcs).bad() || srcs == NULL)
            continue;
        for (unsigned long j = 0; c.good() && j < srcs->card(); j++)
            c = srcs->getItem(j)->putAndInsertString(DCM_SpatialLocationsPreserved, "YES");
    }
    return c;
}

} // namespace

extern "C" int
mms_seg_write(const struct mms_seg_input *in, const char *path, struct mms_seg_result *res,
              char *why, size_t why_len)
{
    const struct mms_volume *v = in->vol;
    const int64_t cols = v->dims[0], rows = v->dims[1], slices = v->dims[2];
    const size_t plane = (size_t)(cols * rows);
    if (cols > 65535 || rows > 65535 || in->n_segments < 1)
        return mms_why(why, why_len, MMS_EINVAL, "nothing to write");

    // which segments are present, and on which slices
    std::vector<std::vector<char>> present((size_t)in->n_segments,
                                           std::vector<char>((size_t)slices, 0));
    std::vector<int> which(256, -1);
    for (int s = 0; s < in->n_segments; s++)
        if (in->segments[s].label > 0 && in->segments[s].label < 256)
            which[(size_t)in->segments[s].label] = s;
    for (int64_t k = 0; k < slices; k++) {
        const uint8_t *l = in->labels + (size_t)k * plane;
        for (size_t i = 0; i < plane; i++)
            if (which[l[i]] >= 0)
                present[(size_t)which[l[i]]][(size_t)k] = 1;
    }
    std::vector<int> used;
    for (int s = 0; s < in->n_segments; s++) {
        bool any = false;
        for (int64_t k = 0; k < slices && !any; k++)
            any = present[(size_t)s][(size_t)k] != 0;
        if (any)
            used.push_back(s);
    }
    if (used.empty())
        return mms_why(why, why_len, MMS_EINVAL, "no segment has a voxel");

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
        return fail(why, why_len, "creating the segmentation", c);
    std::unique_ptr<DcmSegmentation> own(seg);
    seg->setCheckFGOnWrite(OFFalse);

    // patient, study and frame of reference from the first source file
    c = seg->importFromSourceImage(in->paths[v->src[0].file]);
    if (c.bad())
        return fail(why, why_len, in->paths[v->src[0].file], c);
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
        return fail(why, why_len, "series and instance", c);

    // shared functional groups: orientation and pixel measures
    FGPlaneOrientationPatient *ori = FGPlaneOrientationPatient::createMinimal(
        ds(v->dir[0][0]).c_str(), ds(v->dir[1][0]).c_str(), ds(v->dir[2][0]).c_str(),
        ds(v->dir[0][1]).c_str(), ds(v->dir[1][1]).c_str(), ds(v->dir[2][1]).c_str());
    FGPixelMeasures pm;
    std::string spacing = ds(v->spacing[1]) + "\\" + ds(v->spacing[0]);
    c = ori != NULL ? pm.setPixelSpacing(spacing.c_str()) : EC_MemoryExhausted;
    if (c.good())
        c = pm.setSliceThickness(ds(v->spacing[2]).c_str());
    if (c.good())
        c = seg->addForAllFrames(pm);
    if (c.good())
        c = seg->addForAllFrames(*ori);
    delete ori;
    if (c.bad())
        return fail(why, why_len, "shared functional groups", c);

    // dimensions: segment, then position
    char dim_uid[65], dim_name[128]; // deterministic, as the SEG's own UIDs
    snprintf(dim_name, sizeof dim_name, "mmsegd seg dimensions|%s", in->sop_instance_uid);
    mms_uid_uuid5(dim_name, dim_uid);
    IODMultiframeDimensionModule &dims = seg->getDimensions();
    c = dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid,
                               DCM_SegmentIdentificationSequence, "ReferencedSegmentNumber");
    if (c.good())
        c = dims.addDimensionIndex(DCM_ImagePositionPatient, dim_uid, DCM_PlanePositionSequence,
                                   "ImagePositionPatient");
    if (c.bad())
        return fail(why, why_len, "dimension organization", c);

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
            return fail(why, why_len, s->segment_label, c);
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
            return fail(why, why_len, s->segment_label, c);
        }
    }

    // frames; DCMTK gets a blank mask for each: finish_frames() writes the pixel data
    std::vector<Uint8> mask(plane, 0);
    std::vector<char> referenced((size_t)slices, 0);
    std::vector<std::pair<int, int64_t>> order; // (label, slice) of each frame
    int64_t frames = 0;
    for (size_t u = 0; u < used.size(); u++) {
        const int label = in->segments[used[u]].label;
        for (int64_t k = 0; k < slices; k++) {
            if (!present[(size_t)used[u]][(size_t)k] && !in->keep_empty_frames)
                continue;
            const struct mms_volume_src *src = &v->src[k];
            FGPlanePosPatient *pos = FGPlanePosPatient::createMinimal(
                ds(v->ipp[k][0]).c_str(), ds(v->ipp[k][1]).c_str(), ds(v->ipp[k][2]).c_str());
            FGFrameContent fc;
            OFVector<ImageSOPInstanceReferenceMacro> images(1);
            c = images[0].setReferencedSOPClassUID(src->sop_class);
            if (c.good())
                c = images[0].setReferencedSOPInstanceUID(src->sop_instance);
            // a multi-frame source: which frame (setReferencedFrameNumber fails in 3.6.7)
            if (c.good() && strcmp(src->sop_class, UID_CTImageStorage) != 0)
                c = images[0].addReferencedFrameNumber((Uint16)(src->frame + 1));
            if (c.bad())
                return fail(why, why_len, "source reference", c);
            FGDerivationImage *der =
                DcmSegmentation::createDerivationImageFG(images, "Segmentation by MM-UNet");
            c = pos != NULL && der != NULL ? fc.setDimensionIndexValues(number[u], 0)
                                           : EC_MemoryExhausted;
            if (c.good())
                c = fc.setDimensionIndexValues((Uint32)(k + 1), 1);
            OFVector<FGBase *> groups;
            groups.push_back(pos);
            groups.push_back(&fc);
            groups.push_back(der);
            if (c.good())
                c = seg->addFrame(mask.data(), number[u], groups);
            delete pos;
            delete der;
            if (c.bad())
                return fail(why, why_len, "adding a frame", c);
            frames++;
            referenced[(size_t)k] = 1;
            order.emplace_back(label, k);
        }
    }

    std::vector<std::pair<std::string, std::string>> refs;
    for (int64_t k = 0; k < slices; k++)
        if (referenced[(size_t)k])
            refs.emplace_back(v->src[k].sop_class, v->src[k].sop_instance);
    DcmFileFormat ff;
    c = seg->writeDataset(*ff.getDataset());
    if (c.good())
        c = add_common_references(*ff.getDataset(), in->source_series_uid, refs);
    if (c.good())
        c = finish_frames(*ff.getDataset(), in->labels, plane, order);
    if (c.bad())
        return fail(why, why_len, "writing the data set", c);

    std::string tmp = std::string(path) + ".tmp";
    c = ff.saveFile(tmp.c_str(), EXS_LittleEndianExplicit);
    if (c.bad()) {
        unlink(tmp.c_str());
        return fail(why, why_len, path, c);
    }
    FILE *f = fopen(tmp.c_str(), "rb+");
    bool synced = f != NULL && fsync(fileno(f)) == 0;
    if (f != NULL)
        fclose(f);
    if (!synced || rename(tmp.c_str(), path) != 0) {
        int rc = mms_err_errno();
        unlink(tmp.c_str());
        return mms_why(why, why_len, rc, "%s: %s", path, mms_strerror(rc));
    }
    if (res != NULL) {
        res->segments = (int)used.size();
        res->frames = frames;
    }
    return 0;
}

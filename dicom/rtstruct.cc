// dicom: the RT Structure Set of a label volume (rtstruct.h), with dcmdata.
//
// The outlines of each label on each slice come from dicom/contour.c, in pixel-corner
// coordinates; a corner (x, y) lies at pixel position (x - 0.5, y - 0.5), so in patient
// coordinates at ipp[k] + (x - 0.5) spacing[0] row + (y - 0.5) spacing[1] col: on the slice's
// own plane, a tilted or irregular stack included. The contour data is built as one text per
// contour. Threads: any.
#include "dicom/rtstruct.h"

#include <stdio.h>
#include <string.h>

#include <memory>
#include <new>
#include <string>
#include <vector>

#include "common/err.h"
#include "dicom/contour.h"
#include "dicom/derived-impl.hh"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrds.h>

namespace
{

// Study Component Management, the class RT Referenced Study Sequence names by convention.
const char study_component_class[] = "1.2.840.10008.3.1.2.3.2";

// The rows and columns on which each value occurs on a slice, or r0 = -1.
struct box {
    int32_t r0, r1, c0, c1;
};

void
boxes_of(const uint8_t *l, int64_t rows, int64_t cols, box b[256])
{
    for (int v = 0; v < 256; v++)
        b[v] = box{-1, -1, INT32_MAX, -1};
    for (int32_t j = 0; j < (int32_t)rows; j++) {
        const uint8_t *p = l + (size_t)j * (size_t)cols;
        for (int32_t i = 0; i < (int32_t)cols; i++) {
            box &x = b[p[i]];
            if (x.r0 < 0)
                x.r0 = j;
            x.r1 = j;
            x.c0 = i < x.c0 ? i : x.c0;
            x.c1 = i > x.c1 ? i : x.c1;
        }
    }
}

// A new item appended to sequence key of item (the sequence made when absent).
OFCondition
append_item(DcmItem &item, const DcmTagKey &key, DcmItem **out)
{
    return item.findOrCreateSequenceItem(key, *out, -2);
}

// The reference to the source image of slice k into item.
OFCondition
put_image_ref(DcmItem &item, const struct mms_volume_src *src)
{
    OFCondition c = item.putAndInsertString(DCM_ReferencedSOPClassUID, src->sop_class);
    if (c.good())
        c = item.putAndInsertString(DCM_ReferencedSOPInstanceUID, src->sop_instance);
    if (c.good() && strcmp(src->sop_class, UID_CTImageStorage) != 0) {
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)src->frame + 1);
        c = item.putAndInsertString(DCM_ReferencedFrameNumber, num);
    }
    return c;
}

// The module contents besides the ROIs: series, equipment, structure set, references.
OFCondition
put_header(const struct mms_rtstruct_input *in, DcmDataset &ds)
{
    const struct mms_volume *v = in->vol;
    char date[16], tm[16];
    mms__dcm_now(date, tm);
    std::string name = std::string("MM-UNet ") + in->algorithm_name;
    if (name.size() > 64)
        name.resize(64);
    const struct mms__dcm_series series = {
        UID_RTStructureSetStorage, in->sop_instance_uid, "RTSTRUCT", in->series_uid, name.c_str(),
        in->series_number,         in->software_version};
    const struct {
        DcmTagKey key;
        const char *value;
    } text[] = {
        {DCM_OperatorsName, ""},
        {DCM_FrameOfReferenceUID, in->frame_of_ref_uid},
        {DCM_PositionReferenceIndicator, ""},
        {DCM_StructureSetLabel, "MM-UNet"},
        {DCM_StructureSetName, name.c_str()},
        {DCM_StructureSetDate, date},
        {DCM_StructureSetTime, tm},
    };
    OFCondition c = mms__dcm_put_series(ds, series);
    for (size_t i = 0; c.good() && i < sizeof text / sizeof text[0]; i++)
        c = ds.putAndInsertString(text[i].key, text[i].value);

    // Referenced Frame of Reference: the study, the series and every slice
    DcmItem *fr = NULL, *st = NULL, *se = NULL;
    if (c.good())
        c = append_item(ds, DCM_ReferencedFrameOfReferenceSequence, &fr);
    if (c.good())
        c = fr->putAndInsertString(DCM_FrameOfReferenceUID, in->frame_of_ref_uid);
    if (c.good())
        c = append_item(*fr, DCM_RTReferencedStudySequence, &st);
    if (c.good())
        c = st->putAndInsertString(DCM_ReferencedSOPClassUID, study_component_class);
    if (c.good())
        c = st->putAndInsertString(DCM_ReferencedSOPInstanceUID, in->study_uid);
    if (c.good())
        c = append_item(*st, DCM_RTReferencedSeriesSequence, &se);
    if (c.good())
        c = se->putAndInsertString(DCM_SeriesInstanceUID, in->source_series_uid);
    for (int64_t k = 0; c.good() && k < v->dims[2]; k++) {
        DcmItem *img = NULL;
        c = append_item(*se, DCM_ContourImageSequence, &img);
        if (c.good())
            c = put_image_ref(*img, &v->src[k]);
    }
    return c;
}

// One ROI's outlines on every slice into its ROI Contour item; the counts into res.
int
put_contours(const struct mms_rtstruct_input *in, uint8_t lab,
             const std::vector<std::vector<box>> &boxes, DcmItem &roi, struct mms_contours *cs,
             struct mms_rtstruct_result *res, char *why, size_t why_len)
{
    const struct mms_volume *v = in->vol;
    const int64_t cols = v->dims[0], rows = v->dims[1];
    const size_t plane = (size_t)(cols * rows);
    std::unique_ptr<DcmSequenceOfItems> seq(
        new DcmSequenceOfItems(DcmTag(DCM_ContourSequence, EVR_SQ)));
    std::string data;
    int64_t number = 0;
    for (int64_t k = 0; k < v->dims[2]; k++) {
        const box &b = boxes[(size_t)k][lab];
        if (b.r0 < 0)
            continue;
        int rc = mms_contours_trace(in->labels + (size_t)k * plane, rows, cols, lab, b.r0, b.r1,
                                    b.c0, b.c1, cs);
        if (rc < 0)
            return mms_why(why, why_len, rc,
                           "RT Structure Set: outlines of label %d on slice "
                           "%lld: %s",
                           lab, (long long)k, mms_strerror(rc));
        double step_i[3], step_j[3], at[3];
        for (int q = 0; q < 3; q++) {
            step_i[q] = v->spacing[0] * v->dir[q][0];
            step_j[q] = v->spacing[1] * v->dir[q][1];
        }
        for (int64_t p = 0; p < cs->n; p++) {
            const int64_t a = cs->start[p], n = cs->start[p + 1] - a;
            data.clear();
            for (int64_t q = 0; q < n; q++) {
                const double x = cs->xy[2 * (a + q)] - 0.5, y = cs->xy[2 * (a + q) + 1] - 0.5;
                for (int e = 0; e < 3; e++) {
                    at[e] = v->ipp[k][e] + x * step_i[e] + y * step_j[e];
                    if (q > 0 || e > 0)
                        data += '\\';
                    mms__ds_append(data, at[e]);
                }
            }
            std::unique_ptr<DcmItem> item(new DcmItem());
            DcmItem *img = NULL;
            char num[32];
            OFCondition c = append_item(*item, DCM_ContourImageSequence, &img);
            if (c.good())
                c = put_image_ref(*img, &v->src[k]);
            if (c.good())
                c = item->putAndInsertString(DCM_ContourGeometricType, "CLOSED_PLANAR");
            snprintf(num, sizeof num, "%lld", (long long)n);
            if (c.good())
                c = item->putAndInsertString(DCM_NumberOfContourPoints, num);
            snprintf(num, sizeof num, "%lld", (long long)++number);
            if (c.good())
                c = item->putAndInsertString(DCM_ContourNumber, num);
            if (c.good())
                c = item->putAndInsertString(DCM_ContourData, data.c_str(), OFFalse);
            if (c.good())
                c = seq->append(item.get());
            if (c.bad())
                return mms__dcm_fail(why, why_len, "RT Structure Set contour", c);
            item.release();
            res->points += n;
        }
    }
    res->contours += number;
    OFCondition c = roi.insert(seq.get());
    if (c.bad())
        return mms__dcm_fail(why, why_len, "RT Structure Set contours", c);
    seq.release();
    return 0;
}

int
build(const struct mms_rtstruct_input *in, DcmDataset &ds, struct mms_rtstruct_result *res,
      char *why, size_t why_len)
{
    const struct mms_volume *v = in->vol;
    const int64_t cols = v->dims[0], rows = v->dims[1], slices = v->dims[2];
    const size_t plane = (size_t)(cols * rows);
    std::vector<std::vector<box>> boxes((size_t)slices, std::vector<box>(256));
    bool present[256] = {false};
    for (int64_t k = 0; k < slices; k++) {
        boxes_of(in->labels + (size_t)k * plane, rows, cols, boxes[(size_t)k].data());
        for (int l = 1; l < 256; l++)
            present[l] = present[l] || boxes[(size_t)k][l].r0 >= 0;
    }
    std::vector<int> used;
    for (int r = 0; r < in->n_rois; r++)
        if (in->rois[r].label > 0 && in->rois[r].label < 256 && present[in->rois[r].label])
            used.push_back(r);
    if (used.empty())
        return mms_why(why, why_len, MMS_EINVAL, "no ROI has a voxel");

    int rc = mms__dcm_copy_source(ds, in->paths[v->src[0].file], in->study_uid, "RT Structure Set",
                                  why, why_len);
    if (rc < 0)
        return rc;
    OFCondition c = put_header(in, ds);
    if (c.bad())
        return mms__dcm_fail(why, why_len, "RT Structure Set", c);

    struct mms_contours cs;
    memset(&cs, 0, sizeof cs);
    std::string generation =
        std::string("MM-UNet ") + in->algorithm_name + " " + in->algorithm_version;
    if (generation.size() > 64)
        generation.resize(64);
    for (size_t u = 0; rc == 0 && u < used.size(); u++) {
        const struct mms_rtstruct_roi *r = &in->rois[used[u]];
        char num[24], colour[32];
        snprintf(num, sizeof num, "%zu", u + 1);
        snprintf(colour, sizeof colour, "%d\\%d\\%d", r->rgb[0], r->rgb[1], r->rgb[2]);
        DcmItem *ss = NULL, *rc_item = NULL, *obs = NULL;
        c = append_item(ds, DCM_StructureSetROISequence, &ss);
        if (c.good())
            c = ss->putAndInsertString(DCM_ROINumber, num);
        if (c.good())
            c = ss->putAndInsertString(DCM_ReferencedFrameOfReferenceUID, in->frame_of_ref_uid);
        if (c.good())
            c = ss->putAndInsertString(DCM_ROIName, r->name);
        if (c.good())
            c = ss->putAndInsertString(DCM_ROIGenerationAlgorithm, "AUTOMATIC");
        if (c.good())
            c = ss->putAndInsertString(DCM_ROIGenerationDescription, generation.c_str());
        if (c.good())
            c = append_item(ds, DCM_ROIContourSequence, &rc_item);
        if (c.good())
            c = rc_item->putAndInsertString(DCM_ROIDisplayColor, colour);
        if (c.good())
            c = rc_item->putAndInsertString(DCM_ReferencedROINumber, num);
        if (c.good())
            c = append_item(ds, DCM_RTROIObservationsSequence, &obs);
        if (c.good())
            c = obs->putAndInsertString(DCM_ObservationNumber, num);
        if (c.good())
            c = obs->putAndInsertString(DCM_ReferencedROINumber, num);
        if (c.good())
            c = obs->putAndInsertString(DCM_RTROIInterpretedType, "ORGAN");
        if (c.good())
            c = obs->putAndInsertString(DCM_ROIInterpreter, "");
        if (c.bad()) {
            rc = mms__dcm_fail(why, why_len, r->name, c);
            break;
        }
        rc = put_contours(in, (uint8_t)r->label, boxes, *rc_item, &cs, res, why, why_len);
        res->rois++;
    }
    mms_contours_free(&cs);
    return rc;
}

} // namespace

extern "C" int
mms_rtstruct_write(const struct mms_rtstruct_input *in, const char *path,
                   struct mms_rtstruct_result *res, char *why, size_t why_len)
{
    if (in == NULL || path == NULL || in->vol == NULL || in->labels == NULL || in->paths == NULL ||
        in->algorithm_name == NULL || in->algorithm_version == NULL ||
        in->software_version == NULL || in->study_uid == NULL || in->source_series_uid == NULL ||
        in->frame_of_ref_uid == NULL || in->series_uid == NULL || in->sop_instance_uid == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "RT Structure Set: missing argument");
    const struct mms_volume *v = in->vol;
    if (v->dims[0] < 1 || v->dims[1] < 1 || v->dims[2] < 1 || v->dims[0] > 65535 ||
        v->dims[1] > 65535 || in->n_rois < 1)
        return mms_why(why, why_len, MMS_EINVAL, "nothing to write");
    try {
        struct mms_rtstruct_result r = {0, 0, 0};
        DcmFileFormat ff;
        int rc = build(in, *ff.getDataset(), &r, why, why_len);
        if (rc == 0)
            rc = mms__dcm_save(ff, path, why, why_len);
        if (rc == 0 && res != NULL)
            *res = r;
        return rc;
    } catch (const std::bad_alloc &) {
        return mms_why(why, why_len, MMS_ENOMEM, "%s: out of memory", path);
    } catch (...) {
        return mms_why(why, why_len, MMS_EDICOM, "%s: DCMTK failed", path);
    }
}

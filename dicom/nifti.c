/* dicom: a volume as NIfTI-1 (design.md section 5, `mmsegd inspect --nifti`), so that it can be
 * compared with other tools and opened in any viewer. Threads: reentrant. */
#include "dicom/dicom.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "common/err.h"

/* The NIfTI-1 header: 348 bytes, then 4 bytes of extension flags, then the voxels. */
struct nifti1 {
    int32_t sizeof_hdr;
    char data_type[10], db_name[18];
    int32_t extents;
    int16_t session_error;
    char regular, dim_info;
    int16_t dim[8];
    float intent_p1, intent_p2, intent_p3;
    int16_t intent_code, datatype, bitpix, slice_start;
    float pixdim[8], vox_offset, scl_slope, scl_inter;
    int16_t slice_end;
    char slice_code, xyzt_units;
    float cal_max, cal_min, slice_duration, toffset;
    int32_t glmax, glmin;
    char descrip[80], aux_file[24];
    int16_t qform_code, sform_code;
    float quatern_b, quatern_c, quatern_d, qoffset_x, qoffset_y, qoffset_z;
    float srow_x[4], srow_y[4], srow_z[4];
    char intent_name[16], magic[4];
};
_Static_assert(sizeof(struct nifti1) == 348, "NIfTI-1 header size");

enum { DT_UINT8 = 2, DT_INT16 = 4, DT_FLOAT32 = 16, XFORM_SCANNER = 1, UNITS_MM = 2 };

/* Unit quaternion (b, c, d; a >= 0) of the proper rotation r (columns are the axes). */
static void
quaternion(const double r[3][3], double *b, double *c, double *d)
{
    double a, t = r[0][0] + r[1][1] + r[2][2];
    if (t > 0.0) {
        a = 0.5 * sqrt(1.0 + t);
        *b = (r[2][1] - r[1][2]) / (4.0 * a);
        *c = (r[0][2] - r[2][0]) / (4.0 * a);
        *d = (r[1][0] - r[0][1]) / (4.0 * a);
    } else if (r[0][0] >= r[1][1] && r[0][0] >= r[2][2]) {
        *b = 0.5 * sqrt(1.0 + r[0][0] - r[1][1] - r[2][2]);
        a = (r[2][1] - r[1][2]) / (4.0 * *b);
        *c = (r[0][1] + r[1][0]) / (4.0 * *b);
        *d = (r[0][2] + r[2][0]) / (4.0 * *b);
    } else if (r[1][1] >= r[2][2]) {
        *c = 0.5 * sqrt(1.0 - r[0][0] + r[1][1] - r[2][2]);
        a = (r[0][2] - r[2][0]) / (4.0 * *c);
        *b = (r[0][1] + r[1][0]) / (4.0 * *c);
        *d = (r[1][2] + r[2][1]) / (4.0 * *c);
    } else {
        *d = 0.5 * sqrt(1.0 - r[0][0] - r[1][1] + r[2][2]);
        a = (r[1][0] - r[0][1]) / (4.0 * *d);
        *b = (r[0][2] + r[2][0]) / (4.0 * *d);
        *c = (r[1][2] + r[2][1]) / (4.0 * *d);
    }
    if (a < 0.0) {
        *b = -*b;
        *c = -*c;
        *d = -*d;
    }
}

/* The header of v's grid; the data are int16 or float32 HU, or uint8 labels up to
 * max_label when labels. */
static void
fill_header(const struct mms_volume *v, bool as_int16, bool labels, int max_label, struct nifti1 *n)
{
    memset(n, 0, sizeof *n);
    n->sizeof_hdr = 348;
    n->regular = 'r';
    n->dim[0] = 3;
    for (int i = 0; i < 3; i++)
        n->dim[i + 1] = (int16_t)v->dims[i];
    for (int i = 4; i < 8; i++)
        n->dim[i] = 1;
    n->datatype = labels ? DT_UINT8 : as_int16 ? DT_INT16 : DT_FLOAT32;
    n->bitpix = labels ? 8 : as_int16 ? 16 : 32;
    n->vox_offset = 352.0f;
    n->scl_slope = 1.0f;
    n->xyzt_units = UNITS_MM;
    if (labels) {
        n->cal_min = 0.0f;
        n->cal_max = (float)max_label;
    } else {
        mms_volume_range(v, &n->cal_min, &n->cal_max);
    }
    snprintf(n->descrip, sizeof n->descrip, "%s by mmsegd%s", labels ? "labels" : "CT HU",
             v->irregular ? ", irregular slice spacing" : "");
    memcpy(n->magic, "n+1", 4);

    /* LPS to RAS: x and y change sign */
    const double flip[3] = {-1.0, -1.0, 1.0};
    double step[3] = {0.0, 0.0, 0.0};
    int64_t nz = v->dims[2];
    for (int i = 0; i < 3; i++)
        step[i] = nz > 1 ? (v->ipp[nz - 1][i] - v->ipp[0][i]) / (double)(nz - 1)
                         : v->normal[i] * v->spacing[2];
    float *srow[3] = {n->srow_x, n->srow_y, n->srow_z};
    for (int i = 0; i < 3; i++) {
        srow[i][0] = (float)(flip[i] * v->dir[i][0] * v->spacing[0]);
        srow[i][1] = (float)(flip[i] * v->dir[i][1] * v->spacing[1]);
        srow[i][2] = (float)(flip[i] * step[i]);
        srow[i][3] = (float)(flip[i] * v->origin[i]);
    }
    n->sform_code = XFORM_SCANNER;

    /* the rigid part: row, column and normal, with qfac -1 for a left-handed set */
    double r[3][3];
    for (int i = 0; i < 3; i++) {
        r[i][0] = flip[i] * v->dir[i][0];
        r[i][1] = flip[i] * v->dir[i][1];
        r[i][2] = flip[i] * v->normal[i];
    }
    double det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) -
                 r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0]) +
                 r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    double qfac = det < 0.0 ? -1.0 : 1.0;
    for (int i = 0; i < 3; i++)
        r[i][2] *= qfac;
    double b, c, d;
    quaternion(r, &b, &c, &d);
    n->pixdim[0] = (float)qfac;
    for (int i = 0; i < 3; i++)
        n->pixdim[i + 1] = (float)v->spacing[i];
    n->quatern_b = (float)b;
    n->quatern_c = (float)c;
    n->quatern_d = (float)d;
    n->qoffset_x = srow[0][3];
    n->qoffset_y = srow[1][3];
    n->qoffset_z = srow[2][3];
    n->qform_code = XFORM_SCANNER;
}

static int
write_nifti(const struct mms_volume *v, const uint8_t *labels, const char *path, char *why,
            size_t why_len)
{
    if (v->dims[0] > INT16_MAX || v->dims[1] > INT16_MAX || v->dims[2] > INT16_MAX) {
        if (why != NULL)
            snprintf(why, why_len, "%s: more than %d voxels along an axis", path, INT16_MAX);
        return MMS_EINVAL;
    }
    const size_t nv = (size_t)v->dims[0] * (size_t)v->dims[1] * (size_t)v->dims[2];
    bool as_int16 = labels == NULL;
    for (size_t i = 0; i < nv && as_int16; i++)
        as_int16 = v->hu[i] == rintf(v->hu[i]) && v->hu[i] >= INT16_MIN && v->hu[i] <= INT16_MAX;
    int max_label = 0;
    for (size_t i = 0; labels != NULL && i < nv; i++)
        max_label = labels[i] > max_label ? labels[i] : max_label;
    struct nifti1 hdr;
    fill_header(v, as_int16, labels != NULL, max_label, &hdr);
    size_t len = strlen(path);
    bool gz = len > 3 && strcmp(path + len - 3, ".gz") == 0;
    const char *mode = gz ? "wb6" : "wbT"; /* T: plain, through the same calls */
    errno = 0;
    gzFile f = gzopen(path, mode);
    if (f == NULL) {
        int rc = errno != 0 ? -errno : MMS_ENOMEM;
        if (why != NULL)
            snprintf(why, why_len, "%s: %s", path, mms_strerror(rc));
        return rc;
    }
    const char ext[4] = {0, 0, 0, 0};
    bool ok = gzwrite(f, &hdr, sizeof hdr) == (int)sizeof hdr &&
              gzwrite(f, ext, sizeof ext) == (int)sizeof ext;
    enum { CHUNK = 1 << 16 };
    int16_t buf[CHUNK];
    for (size_t i = 0; ok && i < nv; i += CHUNK) {
        size_t m = nv - i < CHUNK ? nv - i : CHUNK;
        if (labels != NULL) {
            ok = gzwrite(f, labels + i, (unsigned)m) == (int)m;
        } else if (as_int16) {
            for (size_t j = 0; j < m; j++)
                buf[j] = (int16_t)v->hu[i + j];
            ok = gzwrite(f, buf, (unsigned)(m * sizeof *buf)) == (int)(m * sizeof *buf);
        } else {
            ok = gzwrite(f, v->hu + i, (unsigned)(m * sizeof(float))) == (int)(m * sizeof(float));
        }
    }
    int err = errno;
    if (gzclose(f) != Z_OK)
        ok = false;
    if (!ok) {
        int rc = err != 0 ? -err : MMS_EIO;
        if (why != NULL)
            snprintf(why, why_len, "%s: cannot write: %s", path, mms_strerror(rc));
        remove(path);
        return rc;
    }
    return 0;
}

int
mms_nifti_write(const struct mms_volume *v, const char *path, char *why, size_t why_len)
{
    return write_nifti(v, NULL, path, why, why_len);
}

int
mms_nifti_write_labels(const struct mms_volume *v, const uint8_t *labels, const char *path,
                       char *why, size_t why_len)
{
    return write_nifti(v, labels, path, why, why_len);
}

/* Tests of one frame's decode to HU (dicom/pixels.cc) on the shared test data: every transfer
 * syntax of the cornerstone set against its uncompressed reference (lossless ones exactly, lossy
 * ones within the error measured for each), big endian, deflate, multi-frame, signedness from
 * the header, Pixel Padding Value, and files that must be refused without being allocated. */
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "dicom/dicom.h"
#include "tests/tap.h"
#include "tests/find-testdata.h"

#define N512 (512 * 512)
#define MAX_VOXELS 1000000000ull

static char td[1024];
static float ref[2 * N512], got[N512];
static char why[512];

/* decode frame of td/rel into out; the reason goes to why */
static int
dec(const char *rel, int64_t frame, uint64_t max_voxels, float *out)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", td, rel);
    why[0] = '\0';
    int rc = mms_frames_decode(path, NULL, frame, 1, max_voxels, 1, out, why, sizeof why);
    if (rc < 0)
        diag("%s", why);
    return rc;
}

static double
max_abs_diff(const float *a, const float *b, int n)
{
    double m = 0.0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static void
min_max(const float *a, int n, float *lo, float *hi)
{
    *lo = FLT_MAX;
    *hi = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        *lo = fminf(*lo, a[i]);
        *hi = fmaxf(*hi, a[i]);
    }
}

static int
count_eq(const float *a, int n, float v)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += a[i] == v;
    return k;
}

#define CS "cornerstoneWADOImageLoader/testImages/"
#define DP "dicomParser/testImages/"
#define MF DP "encapsulated/multi-frame/"

/* The cornerstone re-encodings of CTImage.dcm. tol_hu: 0 for lossless syntaxes; for lossy ones
 * the largest error measured against the original (notes: J2K .91 a 5/3 stream with truncated
 * layers, 5 HU; JPEG-LS .81 NEAR=1, 1 HU; 12-bit JPEG .51/.53/.55 with the rescale of the
 * requantization, 35.6 HU; 8-bit baseline .50 with slope 32.12, 64.2 HU). */
static const struct {
    const char *ts;
    double tol_hu;
} cs_set[] = {
    {"BigEndianExplicitTransferSyntax_1.2.840.10008.1.2.2", 0},
    {"DeflatedExplicitVRLittleEndianTransferSyntax_1.2.840.10008.1.2.1.99", 0},
    {"JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90", 0},
    {"JPEG2000TransferSyntax_1.2.840.10008.1.2.4.91", 5},
    {"JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80", 0},
    {"JPEGLSLossyTransferSyntax_1.2.840.10008.1.2.4.81", 1},
    {"JPEGProcess10_12TransferSyntax_1.2.840.10008.1.2.4.55", 36},
    {"JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70", 0},
    {"JPEGProcess14TransferSyntax_1.2.840.10008.1.2.4.57", 0},
    {"JPEGProcess1TransferSyntax_1.2.840.10008.1.2.4.50", 65},
    {"JPEGProcess2_4TransferSyntax_1.2.840.10008.1.2.4.51", 36},
    {"JPEGProcess6_8TransferSyntax_1.2.840.10008.1.2.4.53", 36},
    {"LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1", 0},
    {"LittleEndianImplicitTransferSyntax_1.2.840.10008.1.2", 0},
    {"RLELosslessTransferSyntax_1.2.840.10008.1.2.5", 0},
};
#define N_CS ((int)(sizeof cs_set / sizeof cs_set[0]))

/* lossless encodings of the two-frame Enhanced CT CT0012 */
static const char *const mf_lossless[] = {
    MF "CT0012.fragmented_no_bot_jpeg_lossless.57.dcm",
    MF "CT0012.fragmented_no_bot_jpeg_lossless.70.dcm",
    MF "CT0012.fragmented_no_bot_jpeg_ls.80.dcm", /* split into frames at each SOI marker */
    MF "CT0012.not_fragmented_bot_jpeg_ls.80.dcm",
    MF "CT0012.not_fragmented_bot_rle.dcm",
    MF "CT0012.not_fragmented_no_bot_jpeg_ls.80.dcm",
    MF "CT0012.not_fragmented_no_bot_rle.dcm",
    "pydicom-data/data_store/data/eCT_Supplemental.dcm",
};
#define N_MF ((int)(sizeof mf_lossless / sizeof mf_lossless[0]))

static void
test_cornerstone(void)
{
    int rc = dec(CS "CTImage.dcm", 0, MAX_VOXELS, ref);
    float lo, hi;
    min_max(ref, N512, &lo, &hi);
    ok(rc == 0 && lo >= -3024 && hi <= 4095, "CTImage.dcm (reference) decodes: %g..%g HU", lo, hi);
    for (int i = 0; i < N_CS; i++) {
        char rel[512];
        snprintf(rel, sizeof rel, CS "CTImage.dcm_%s.dcm", cs_set[i].ts);
        rc = dec(rel, 0, MAX_VOXELS, got);
        double d = rc == 0 ? max_abs_diff(ref, got, N512) : -1.0;
        ok(rc == 0 && d <= cs_set[i].tol_hu, "%s: max |dHU| %g <= %g", cs_set[i].ts, d,
           cs_set[i].tol_hu);
    }
    /* the other CT files of the set: CT1 (J2K lossless) equals NEMA CT1 uncompressed */
    rc = dec(DP "CT1_UNC.explicit_little_endian.dcm", 0, MAX_VOXELS, ref);
    int rc2 = dec(CS "CT1_J2KR", 0, MAX_VOXELS, got);
    ok(rc == 0 && rc2 == 0 && max_abs_diff(ref, got, N512) == 0.0,
       "CT1_J2KR equals CT1_UNC exactly");
    {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", td, CS "CT1_J2KR");
        rc2 = mms_frames_decode(path, NULL, 0, 1, MAX_VOXELS, 4, got, why, sizeof why);
        ok(rc == 0 && rc2 == 0 && max_abs_diff(ref, got, N512) == 0.0,
           "CT1_J2KR on 4 threads (OpenJPEG's own) equals CT1_UNC exactly");
    }
    rc = dec(CS "CT2_J2KR", 0, MAX_VOXELS, got);
    min_max(got, N512, &lo, &hi);
    ok(rc == 0 && lo >= -2048 && hi <= 4095, "CT2_J2KR decodes: %g..%g HU", lo, hi);
    /* a known-bad conversion (stored values shifted, rescale not): it decodes, as the header
     * says, to HU about 1023 too high */
    rc = dec(CS "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm", 1, MAX_VOXELS, got);
    ok(rc == 0, "CT0012 .51 (12-bit JPEG, 2 frames, fragments, no offset table) decodes");
}

static void
test_ct1_encodings(void)
{
    /* ref holds CT1_UNC explicit little endian (PPV -2000 on 55 772 pixels) */
    int rc = dec(DP "CT1_UNC.explicit_little_endian.dcm", 0, MAX_VOXELS, ref);
    int air = count_eq(ref, N512, -1024.0f);
    float lo, hi;
    min_max(ref, N512, &lo, &hi);
    ok(rc == 0 && lo == -1024.0f && air >= 55772,
       "CT1_UNC: padding (-2000 stored) becomes -1024: %d pixels at -1024, min %g", air, lo);
    rc = dec(DP "CT1_UNC.explicit_big_endian.dcm", 0, MAX_VOXELS, got);
    ok(rc == 0 && max_abs_diff(ref, got, N512) == 0.0,
       "CT1_UNC big endian equals little endian (GDCM returns host order)");
    rc = dec(DP "CT1_UNC.implicit_little_endian.dcm", 0, MAX_VOXELS, got);
    ok(rc == 0 && max_abs_diff(ref, got, N512) == 0.0, "CT1_UNC implicit equals explicit");
    /* the padding value written as US 63536 in a signed image means -2000 */
    rc = dec("fo-dicom/Tests/FO-DICOM.Tests/Test Data/GH177_D_CLUNIE_CT1_IVRLE_BigEndian_ELE_"
             "undefinded_length.dcm",
             0, MAX_VOXELS, got);
    ok(rc == 0 && max_abs_diff(ref, got, N512) == 0.0,
       "PPV 63536 (US) in a signed image is -2000: equals CT1_UNC");
    rc = dec("fo-dicom/Tests/FO-DICOM.Tests/Test Data/GH1308.dcm", 0, MAX_VOXELS, got);
    min_max(got, N512, &lo, &hi);
    air = count_eq(got, N512, -1024.0f);
    ok(rc == 0 && lo == -1024.0f && air >= 55772, "GH1308 PPV 63536: %d pixels at -1024, min %g",
       air, lo);
}

static void
test_multiframe(void)
{
    static float ref2[2 * N512];
    int rc = dec(MF "CT0012.explicit_little_endian.dcm", 0, MAX_VOXELS, ref2);
    rc = rc == 0 ? dec(MF "CT0012.explicit_little_endian.dcm", 1, MAX_VOXELS, ref2 + N512) : rc;
    float lo, hi;
    min_max(ref2, 2 * N512, &lo, &hi);
    ok(rc == 0 && lo == -1024.0f && hi == 172.0f && max_abs_diff(ref2, ref2 + N512, N512) > 0,
       "CT0012 (2 frames, rescale from the functional groups) decodes: %g..%g HU", lo, hi);
    bool same = rc == 0;
    for (int i = 0; same && i < N_MF; i++)
        for (int f = 0; same && f < 2; f++) {
            same = dec(mf_lossless[i], f, MAX_VOXELS, got) == 0 &&
                   max_abs_diff(ref2 + f * N512, got, N512) == 0.0;
            if (!same)
                diag("differs: %s frame %d", mf_lossless[i], f);
        }
    ok(same, "both frames of %d lossless multi-frame encodings equal the reference", N_MF);
    static float pair[2 * N512];
    for (int i = 0; same && i < N_MF; i++)
        for (int t = 2; same && t <= 3; t++) {
            char p[2048];
            snprintf(p, sizeof p, "%s/%s", td, mf_lossless[i]);
            same = mms_frames_decode(p, NULL, 0, 2, MAX_VOXELS, t, pair, why, sizeof why) == 0 &&
                   max_abs_diff(ref2, pair, 2 * N512) == 0.0;
            if (!same)
                diag("differs on %d threads: %s (%s)", t, mf_lossless[i], why);
        }
    ok(same, "on 2 and 3 threads (frames in parallel) the %d encodings decode the same", N_MF);
    rc = dec(MF "CT0012.explicit_little_endian.dcm", 2, MAX_VOXELS, got);
    is_int(rc, MMS_EINVAL, "frame 2 of 2 frames: MMS_EINVAL");
    static float both[2 * N512];
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", td, MF "CT0012.explicit_little_endian.dcm");
    rc = mms_frames_decode(path, NULL, 0, 2, MAX_VOXELS, 1, both, why, sizeof why);
    ok(rc == 0 && max_abs_diff(ref2, both, 2 * N512) == 0.0,
       "frames 0 and 1 in one call equal the frames decoded one by one");
    rc = mms_frames_decode(path, NULL, 1, 2, MAX_VOXELS, 1, both, why, sizeof why);
    is_int(rc, MMS_EINVAL, "frames 1..2 of 2 frames: MMS_EINVAL");
    rc = mms_frames_decode(path, NULL, 0, 0, MAX_VOXELS, 1, both, why, sizeof why);
    is_int(rc, MMS_EINVAL, "no frame asked: MMS_EINVAL");
    /* JPEG-LS near-lossless (NEAR=2 in its scan header, slope 1: at most 2 HU off), fragments
     * and no offset table: GDCM's own multi-frame decoder refuses it; split at the SOI
     * markers, each frame decodes */
    rc = dec(MF "CT0012.fragmented_no_bot_jpeg_ls.81.dcm", 1, MAX_VOXELS, got);
    double d81 = rc == 0 ? max_abs_diff(ref2 + N512, got, N512) : -1;
    ok(rc == 0 && d81 >= 1.0 && d81 <= 2.0,
       "fragmented JPEG-LS near-lossless, frame 2 alone: max |dHU| %g in 1..2", d81);
}

static void
test_signedness(void)
{
    /* header signed 13 bits, codestream unsigned 13: the header's sign extension gives the
     * outside of the field of view at -2000, air near -1000, at most 1896 HU */
    int rc =
        dec("pydicom/src/pydicom/data/test_files/J2K_pixelrep_mismatch.dcm", 0, MAX_VOXELS, got);
    float lo, hi;
    min_max(got, N512, &lo, &hi);
    int outside = count_eq(got, N512, -2000.0f), air = 0;
    for (int i = 0; i < N512; i++)
        air += got[i] >= -1100.0f && got[i] <= -900.0f;
    ok(rc == 0 && lo == -2000.0f && hi == 1896.0f && outside == 56252 && air > 10000,
       "J2K_pixelrep_mismatch: %g..%g HU, %d at -2000, %d air pixels in -1100..-900", lo, hi,
       outside, air);
    /* header PR 0, codestream signed: followed as the header says (0..65535 stored) */
    rc = dec("pylibjpeg-data/ljdata/ds/JPEG2000Lossless/TOSHIBA_J2K_SIZ1_PixRep0.dcm", 0,
             MAX_VOXELS, got);
    min_max(got, N512, &lo, &hi);
    ok(rc == 0 && lo >= 0.0f && hi > 32767.0f,
       "TOSHIBA SIZ1 PixRep0: unsigned as the header says (%g..%g, not plausible HU)", lo, hi);
    rc = dec("pylibjpeg-data/ljdata/ds/JPEG2000Lossless/TOSHIBA_J2K_SIZ0_PixRep1.dcm", 0,
             MAX_VOXELS, got);
    min_max(got, N512, &lo, &hi);
    ok(rc == 0 && lo == -2048.0f && hi == 1717.0f, "TOSHIBA SIZ0 PixRep1: %g..%g HU", lo, hi);
}

static void
test_padding_3slice(void)
{
    int rc = 0, air = 0;
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int s = 1; s <= 3 && rc == 0; s++) {
        char rel[256];
        snprintf(rel, sizeof rel, "dcmqi/data/segmentations/ct-3slice/%02d.dcm", s);
        rc = dec(rel, 0, MAX_VOXELS, got);
        float l, h;
        min_max(got, N512, &l, &h);
        lo = fminf(lo, l);
        hi = fmaxf(hi, h);
        air += count_eq(got, N512, -1024.0f);
    }
    /* 167 316 pixels are padding (-2000); without the mapping they would be -3024 HU */
    ok(rc == 0 && lo == -1024.0f && hi == 1381.0f && air >= 167316,
       "ct-3slice: PPV -2000 becomes -1024 (%d pixels at -1024), %g..%g HU", air, lo, hi);
}

static void
test_refused(void)
{
    const char *oob65535 = "orthanc-tests/Database/2026-05-26-oob-monochrome-65535.dcm";
    const char *oob46341 = "orthanc-tests/Database/2026-05-26-oob-monochrome-46341.dcm";
    int rc = dec(oob65535, 0, MAX_VOXELS, got);
    ok(rc == MMS_EDICOM && strstr(why, "maximum") != NULL, "65535 x 65535: over max_voxels");
    rc = dec(oob46341, 0, MAX_VOXELS, got);
    ok(rc == MMS_EDICOM && strstr(why, "maximum") != NULL,
       "46341 x 46341 (GDCM's 32-bit length wraps to 9266): over max_voxels");
    rc = dec(oob65535, 0, UINT64_MAX, got);
    ok(rc == MMS_EDICOM && strstr(why, "shorter than declared") != NULL,
       "65535 x 65535 without a voxel limit: 256 bytes present, refused before decoding");
    rc = dec(oob46341, 0, UINT64_MAX, got);
    ok(rc == MMS_EDICOM && strstr(why, "shorter than declared") != NULL,
       "46341 x 46341 without a voxel limit: 9330 bytes present, refused before decoding");
    rc = dec("pydicom/src/pydicom/data/test_files/MR_truncated.dcm", 0, MAX_VOXELS, got);
    ok(rc == MMS_EDICOM && strstr(why, "shorter than declared") != NULL,
       "MR_truncated (GDCM only warns): pixel data shorter than declared");
    rc = dec("dcm_qa_ct/In/Philips/S21570/S4010/I40", 0, MAX_VOXELS, got);
    ok(rc == MMS_EDICOM && strstr(why, "not a monochrome image") != NULL,
       "RGB secondary capture: not a monochrome image");
    rc = dec("pydicom/src/pydicom/data/test_files/liver_1frame.dcm", 0, MAX_VOXELS, got);
    ok(rc == MMS_EDICOM && strstr(why, "bits allocated not 8 or 16") != NULL,
       "1-bit SEG: bits allocated not 8 or 16");
    rc = dec("dcm_qa_ct/In/Philips/S21570/S2010/DIRFILE", 0, MAX_VOXELS, got);
    ok(rc == MMS_EDICOM && strstr(why, "DICOMDIR") != NULL, "a directory file is refused");
    rc = dec("no-such-file.dcm", 0, MAX_VOXELS, got);
    is_int(rc, MMS_ENOENT, "a missing file: MMS_ENOENT");
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_philips_series(void)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/dcm_qa_ct/In/Philips/S21570/S2010", td);
    DIR *d = opendir(dir);
    char *names[64];
    int n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL && n < 64)
        if (e->d_name[0] == 'I')
            names[n++] = strdup(e->d_name);
    if (d != NULL)
        closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    int decoded = 0;
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "dcm_qa_ct/In/Philips/S21570/S2010/%s", names[i]);
        if (dec(rel, 0, MAX_VOXELS, got) == 0) {
            decoded++;
            float l, h;
            min_max(got, N512, &l, &h);
            lo = fminf(lo, l);
            hi = fmaxf(hi, h);
        }
        free(names[i]);
    }
    ok(n == 28 && decoded == 28 && lo >= -2048.0f && lo <= -1000.0f && hi <= 4095.0f && hi > 0.0f,
       "Philips S2010: %d of %d frames decode, %g..%g HU", decoded, n, lo, hi);
}

int
main(void)
{
    if (!find_testdata(td, sizeof td))
        skip_all("the shared test data is not here (set MMS_TESTDATA to its folder)");
    plan(19 + 5 + 7 + 3 + 1 + 9 + 1 + 2, 300);
    test_cornerstone();
    test_ct1_encodings();
    test_multiframe();
    test_signedness();
    test_padding_3slice();
    test_refused();
    test_philips_series();
    return done_testing();
}

/* dicom: DICOM input for mmsegd (design.md section 5). This header is plain C; DCMTK and GDCM
 * stay inside the C++ files of dicom/.
 *
 * Stacks: the geometry of a series, from the headers of its frames: which frames form the
 * volume, in which order, with which slice positions, spacing and tilt.
 * Threads: every function here is reentrant; results belong to the caller. */
#ifndef MMS_DICOM_H
#define MMS_DICOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the header of one frame (a single-frame instance, or one frame of a multi-frame one)
 * says about its place in space. */
struct mms_slice {
    char frame_of_ref[65]; /* FrameOfReferenceUID, "" when absent */
    double iop[6];         /* ImageOrientationPatient: row then column direction cosines */
    double ipp[3];         /* ImagePositionPatient, mm */
    int64_t rows, cols;
    int64_t acquisition; /* AcquisitionNumber, or -1 */
    int64_t temporal;    /* TemporalPositionIdentifier, or -1 */
};

/* Physical limits of the values a volume is built from: a series with a value outside them
 * fails, and the reason names the value, the limit and the file. */
#define MMS_SPACING_MIN_MM 1e-3 /* Pixel Spacing, Slice Thickness, steps between slices */
#define MMS_SPACING_MAX_MM 1e3
#define MMS_POSITION_MAX_MM 1e6 /* each coordinate of Image Position (Patient) */
#define MMS_SLOPE_MIN 1e-4      /* |Rescale Slope|: nonzero */
#define MMS_SLOPE_MAX 1e4
#define MMS_INTERCEPT_MAX 1e5 /* |Rescale Intercept| */
#define MMS_HU_MAX 1e7        /* |HU| of every stored value the pixel format allows */

struct mms_stack_opts {
    double max_gap_ratio; /* a step of this times the median spacing or more (1 % slack) is a
                             gap: at the default 2.0, one missing slice is one */
    bool allow_gaps;      /* keep stacks with gaps (irregular spacing) instead of failing */
    int min_slices;       /* when the split into stacks leaves the main one with fewer frames
                             than this, the series fails (0: no minimum) */
};

/* Why a frame is not in the main stack. */
enum mms_stack_reason {
    MMS_STACK_MAIN,
    MMS_STACK_BAD_ORIENTATION, /* IOP not two orthonormal vectors */
    MMS_STACK_FRAME_OF_REF,    /* another frame of reference */
    MMS_STACK_ORIENTATION,     /* another orientation */
    MMS_STACK_SIZE,            /* other rows or columns */
    MMS_STACK_ACQUISITION,     /* another acquisition or temporal position at the same places */
};

struct mms_stack {
    int n;                 /* frames in the main stack */
    int *order;            /* (n) input indices, sorted along the slice normal */
    double *pos_mm;        /* (n) IPP projected on the normal, ascending */
    double normal[3];      /* unit slice normal, row x column */
    double row[3], col[3]; /* the main stack's orientation, orthonormalized */
    double slice_dir[3];   /* unit vector from the first to the last IPP (= normal untilted) */
    double tilt_deg;       /* angle between slice_dir and normal (gantry tilt), >= 0 */
    double spacing_mm;     /* median step along the normal; 0 for one frame */
    double min_step_mm, max_step_mm;
    bool irregular;                /* a step differs from the median by more than 1 % */
    int n_stacks;                  /* stacks found, the main one included */
    enum mms_stack_reason *reason; /* (n_input) why each input frame is or is not used */
};

/* Find the main stack of n frames (design.md 5): split by frame of reference, orientation
 * (within 1e-3 per cosine), size, and, where positions repeat, by acquisition and temporal
 * position; take the largest (the first on ties); sort by the projection of IPP on the slice
 * normal, never by instance number; measure the spacing, gaps and tilt.
 * why (why_len bytes, may be NULL) receives a one-line reason on failure.
 * Ownership: *out is new, free with mms_stack_free(); *out is untouched on failure.
 * A frame whose orientation is not two orthonormal vectors (within 1e-2), or whose position is
 * not finite or beyond MMS_POSITION_MAX_MM, is left out (MMS_STACK_BAD_ORIENTATION).
 * Returns 0, MMS_EINVAL (n < 1, or no frame with a valid orientation), MMS_EDICOM ("not a
 * volume": two frames of the main stack at one position, or all frames at one position in
 * acquisitions of one frame each, or several frames and every stack of one frame (one frame
 * of reference or orientation per frame), or a main stack under o->min_slices frames after
 * the split; "missing slices between ...": a gap without allow_gaps; a median slice step
 * over MMS_SPACING_MAX_MM), MMS_ENOMEM. */
int mms_stack_find(const struct mms_slice *s, int n, const struct mms_stack_opts *o,
                   struct mms_stack **out, char *why, size_t why_len);
void mms_stack_free(struct mms_stack *st);

/* ------------------------------------------------------------------------------ headers */
/* What the header says about the pixel data. */
struct mms_pixel_layout {
    bool ok;       /* monochrome, 1 sample, 8 or 16 bits allocated, sizes valid */
    char why[128]; /* when not ok: why the pixels cannot be decoded */
    int64_t rows, cols, frames;
    int bits_allocated, bits_stored, pixel_rep;
    bool has_slope, has_intercept, has_padding;
    bool has_groups; /* functional groups (Enhanced CT): rescale may live there */
    double slope, intercept;
    int64_t padding;   /* Pixel Padding Value as the stored value it stands for */
    bool native;       /* uncompressed and not deflated: the values lie in the file as they are */
    bool big_endian;   /* explicit VR big endian */
    uint64_t value_at; /* native: file offset of the Pixel Data value; 0 when not known */
};

/* What mmsegd reads from one file's header (everything before the pixel data). */
struct mms_header {
    char sop_class[65], sop_instance[65]; /* SOP Class and Instance UIDs; where the dataset's
                                             are absent or empty, the file meta's (Media
                                             Storage SOP Class/Instance UID), else "" */
    char media_class[65];                 /* MediaStorageSOPClassUID of the file meta */
    char series_uid[65], study_uid[65];
    char modality[17];
    char image_type[129]; /* ImageType, values separated by '\' */
    char transfer_syntax[65];
    int64_t frames;                /* NumberOfFrames, 1 when absent */
    int64_t instance_number;       /* -1 when absent */
    bool has_geometry;             /* IOP, IPP, rows and columns all present */
    struct mms_slice slice;        /* single-frame geometry (valid when has_geometry) */
    double pixel_spacing[2];       /* between rows, between columns (mm); 0 when absent */
    double slice_thickness;        /* mm; 0 when absent */
    char series_description[129];  /* SeriesDescription ("" when absent) */
    char body_part[17];            /* BodyPartExamined ("" when absent) */
    int64_t images_in_acquisition; /* ImagesInAcquisition, -1 when absent */
    char patient_name[129];        /* PatientName, PatientID as received ("" when absent): */
    char patient_id[65];           /* shown only where the operator allows (status_page_phi) */
    struct mms_pixel_layout pix;
    char bad_uid[160]; /* "" or which UID (SOP Class or Instance, Study, Series, Frame of
                          Reference, Transfer Syntax) is not a valid UID and why: such a
                          value is never cut to fit the fields above, the file is refused */
};

/* SOP classes mmsegd reconstructs: CT Image, Enhanced CT Image, Legacy Converted Enhanced CT
 * Image Storage. */
bool mms_sop_class_is_ct(const char *uid);

/* Fill an empty Study or Series Instance UID of h with one derived from what the files of one
 * series share (frame of reference, modality, size, orientation), then an empty Frame of
 * Reference UID with one derived from the Series Instance UID: the same files always get the
 * same UIDs. */
void mms_header_derive_uids(struct mms_header *h);
/* The Media Storage Directory (DICOMDIR) SOP class. */
bool mms_sop_class_is_dicomdir(const char *uid);

/* The top-level attributes whose values the pre-scan records. */
enum mms_tag {
    MMS_TAG_IMAGE_TYPE,            /* (0008,0008) */
    MMS_TAG_SOP_CLASS,             /* (0008,0016) */
    MMS_TAG_SOP_INSTANCE,          /* (0008,0018) */
    MMS_TAG_MODALITY,              /* (0008,0060) */
    MMS_TAG_SLICE_THICKNESS,       /* (0018,0050) */
    MMS_TAG_STUDY,                 /* (0020,000D) */
    MMS_TAG_SERIES,                /* (0020,000E) */
    MMS_TAG_ACQUISITION,           /* (0020,0012) */
    MMS_TAG_INSTANCE_NUMBER,       /* (0020,0013) */
    MMS_TAG_IPP,                   /* (0020,0032) */
    MMS_TAG_IOP,                   /* (0020,0037) */
    MMS_TAG_FRAME_OF_REF,          /* (0020,0052) */
    MMS_TAG_TEMPORAL,              /* (0020,0100) */
    MMS_TAG_SAMPLES,               /* (0028,0002) */
    MMS_TAG_PHOTOMETRIC,           /* (0028,0004) */
    MMS_TAG_FRAMES,                /* (0028,0008) */
    MMS_TAG_ROWS,                  /* (0028,0010) */
    MMS_TAG_COLUMNS,               /* (0028,0011) */
    MMS_TAG_PIXEL_SPACING,         /* (0028,0030) */
    MMS_TAG_BITS_ALLOCATED,        /* (0028,0100) */
    MMS_TAG_BITS_STORED,           /* (0028,0101) */
    MMS_TAG_PIXEL_REP,             /* (0028,0103) */
    MMS_TAG_PADDING,               /* (0028,0120) */
    MMS_TAG_INTERCEPT,             /* (0028,1052) */
    MMS_TAG_SLOPE,                 /* (0028,1053) */
    MMS_TAG_SHARED_GROUPS,         /* (5200,9229) */
    MMS_TAG_FRAME_GROUPS,          /* (5200,9230) */
    MMS_TAG_SERIES_DESCRIPTION,    /* (0008,103E) */
    MMS_TAG_BODY_PART,             /* (0018,0015) */
    MMS_TAG_IMAGES_IN_ACQUISITION, /* (0020,1002) */
    MMS_TAG_PATIENT_NAME,          /* (0010,0010) */
    MMS_TAG_PATIENT_ID,            /* (0010,0020) */
    MMS_TAG_COUNT
};

/* (group << 16 | element) of each enum mms_tag. */
extern const uint32_t mms__dicom_tags[MMS_TAG_COUNT];

/* Where the value of one attribute lies in the scanned data. */
struct mms_scan_value {
    uint64_t at; /* offset of the value */
    uint32_t len;
    char vr[3]; /* from the file; "" in implicit VR */
    bool found;
};

/* What the pre-scan read ("" when absent). */
struct mms_prescan {
    char media_class[65];    /* MediaStorageSOPClassUID */
    char media_instance[65]; /* MediaStorageSOPInstanceUID */
    char transfer_syntax[65];
    bool complete;       /* the data set was walked to its pixel data or to its end with nothing
                            out of place: the values below are the whole story */
    bool big_endian;     /* the data set is explicit VR big endian */
    uint64_t dataset_at; /* offset of the data set after the file meta; 0 without one */
    uint64_t pixel_at;   /* offset of the top-level Pixel Data value; 0 when not reached */
    uint32_t pixel_len;  /* its declared length */
    bool pixel_fits;     /* that length (or, when undefined, every fragment) lies within the
                            bytes present */
    struct mms_scan_value v[MMS_TAG_COUNT]; /* the first top-level occurrence of each */
};

/* Walk the element structure of a DICOM file image (len bytes) up to its pixel data, without
 * recursion, and refuse what a toolkit cannot read safely: a declared length beyond the bytes
 * present, an undefined length on anything but a sequence or encapsulated pixel data, items
 * outside sequences, elements without a VR in explicit VR, a truncated element or sequence,
 * sequences and items nested deeper than max_depth levels (group 0000, private and UN elements
 * included), file meta information that is malformed (no VR, a length beyond the file, a UID
 * that is not digits and dots within 64 characters, a group length beyond the file or
 * ending inside an element, no data set after it), a deflated data set that is corrupt,
 * inflates beyond MMS_DICOM_INFLATE_RATIO times its size (at least MMS_DICOM_INFLATE_MIN, at
 * most MMS_DICOM_INFLATE_MAX bytes) or whose inflated bytes fail the same checks. A data set
 * must walk in the transfer syntax its meta declares; without a declared one (no meta, or no
 * transfer syntax in it) it passes when it walks soundly in implicit VR, explicit VR little or
 * big endian (the toolkits detect it), info->complete then false. The top-level pixel data is not
 * judged (a truncated one is the decoder's error): info->pixel_fits says whether it fits.
 * *info receives the meta information's UIDs and where the values of the enum mms_tag
 * attributes lie (info->complete: the data set was walked in its declared encoding, the values
 * are the whole story).
 * Returns 0, MMS_EDICOM with a one-line reason in why (why_len bytes, may be NULL), or
 * MMS_ENOMEM (inflating). Threads: any. */
int mms_dicom_prescan(const uint8_t *data, size_t len, int max_depth, struct mms_prescan *info,
                      char *why, size_t why_len);

/* Sequence and item levels the readers accept; real CT headers use fewer than 10. */
#define MMS_DICOM_MAX_NESTING 128
/* A deflated data set may inflate to this many times its compressed size, to at least
 * MMS_DICOM_INFLATE_MIN and never beyond MMS_DICOM_INFLATE_MAX bytes. The fuzz targets
 * (configure --enable-fuzz) run the same code with 64 times smaller floors, so that an input
 * near the cap costs an iteration 1 MiB of inflating, not 64. */
#define MMS_DICOM_INFLATE_RATIO 32
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define MMS_DICOM_INFLATE_MIN ((size_t)1 << 20)
#else
#define MMS_DICOM_INFLATE_MIN ((size_t)64 << 20)
#endif
#define MMS_DICOM_INFLATE_MAX ((size_t)1 << 30)

/* mms_dicom_prescan() on the file at path (mapped read-only), with MMS_DICOM_MAX_NESTING.
 * why receives "PATH: reason". Returns 0, -errno, MMS_ENOMEM, or MMS_EDICOM (not a regular
 * file, empty, or refused by the pre-scan). Threads: any. */
int mms_dicom_prescan_file(const char *path, struct mms_prescan *info, char *why, size_t why_len);

/* Read the header of the DICOM file at path, up to its pixel data (which is not read).
 * why (why_len bytes, may be NULL) receives the reason on failure.
 * Ownership: fills *h (caller's memory); untouched on failure.
 * The file is pre-scanned first (mms_dicom_prescan, 128 levels); where the pre-scan walked the
 * whole header, its values are used, else (deflated data, anything out of place) GDCM reads
 * the header. Both give the same result (tests/test-header.c checks it on the test data).
 * Returns 0, a negative -errno (MMS_ENOENT...), or MMS_EDICOM (not DICOM, or unreadable).
 * Threads: any. */
int mms_header_read(const char *path, struct mms_header *h, char *why, size_t why_len);

/* mms_header_read(), and digest (65 bytes) receives the SHA-256 (hex) of the data set, the
 * file after its meta information, from the same reading of the file. */
int mms_header_read_digest(const char *path, struct mms_header *h, char digest[65], char *why,
                           size_t why_len);

/* mms_header_read() through GDCM only, for the tests that compare the two readers. */
int mms_header_read_gdcm(const char *path, struct mms_header *h, char *why, size_t why_len);

/* The geometry of every frame of a multi-frame (Enhanced or Legacy Converted Enhanced CT)
 * file, from its functional groups: a frame's Per-frame Functional Groups item first, then the
 * Shared Functional Groups (Plane Position, Plane Orientation, Pixel Measures, Frame Content,
 * Pixel Value Transformation). out (frames entries) gets IPP, IOP, rows and columns, the frame
 * of reference, acquisition -1 and the Temporal Position Index (or -1); pixel_spacing (2,
 * between rows and between columns) that of the first frame.
 * Returns 0, -errno, MMS_EDICOM (why: no functional groups, frame count differs from Number of
 * Frames, a frame without position or orientation, pixel spacing or rescale differing between
 * frames: the decoder applies one rescale to all frames), MMS_ENOMEM. Threads: any. */
int mms_frames_geometry(const char *path, int64_t frames, struct mms_slice *out,
                        double pixel_spacing[2], char *why, size_t why_len);

/* ------------------------------------------------------------------------------- pixels */
/* Decode frames first .. first+count-1 (0-based) of the DICOM file at path to HU, row-major,
 * frame after frame (count x rows x cols floats). h is the file's header from
 * mms_header_read(), or NULL to have it read here; native pixel data is then read straight from
 * the file at the offset the header found (its declared length checked again first).
 * HU = stored * slope + intercept (Rescale Slope/Intercept; 1 and 0 when absent), stored values
 * sign-extended from Bits Stored when Pixel Representation is 1, masked to Bits Stored when 0;
 * pixels equal to Pixel Padding Value (compared on the stored value, before rescale; also when
 * the padding value is written as the unsigned 16-bit image of a negative value) become -1024.
 * rows x cols x frames x bytes is computed with overflow checks and compared with max_voxels
 * and with the pixel data actually present before anything is allocated or read; hu must hold
 * count*rows*cols floats (the caller knows rows and cols from mms_header_read).
 * Bits Stored is the decoder's (GDCM corrects it from a JPEG 2000 codestream); the signedness
 * is always the header's Pixel Representation, also where the codestream says otherwise.
 * Enhanced CT without top-level rescale takes the functional groups' (as GDCM reads them).
 * Pixel Padding Range Limit is not applied.
 * Compressed frames decode on up to threads threads (0 or 1: the calling thread alone): the
 * frames in parallel, and a JPEG 2000 codestream on OpenJPEG's own threads where there are
 * more threads than frames; the result does not depend on it.
 * Returns 0, -errno, MMS_EINVAL (path or hu NULL, count < 1, frames outside 0..frames-1),
 * MMS_EDICOM (why says: unsupported transfer syntax / decoder failed on frame N (the first
 * in frame order) / pixel data shorter than declared / not monochrome / bits allocated not 8
 * or 16 ...), MMS_ENOMEM; hu is written only on success. Threads: any (GDCM objects are
 * local). */
int mms_frames_decode(const char *path, const struct mms_header *h, int64_t first, int64_t count,
                      uint64_t max_voxels, int threads, float *hu, char *why, size_t why_len);

/* ------------------------------------------------------------------------------- volume */
struct mms_volume;
struct mms_volume_opts {
    struct mms_stack_opts stack;
    uint64_t max_voxels; /* columns x rows x slices (also checked per file before decoding) */
    int threads;         /* decoding threads; 0: one per CPU this thread may use */
    /* called on a decoding thread as the decoding of file (an index into the caller's files)
       starts (done false) and when it succeeded (done true); NULL: none. Must not block. */
    void (*on_file)(void *arg, int file, bool done);
    void *on_file_arg;
    /* called once the geometry is known, before the voxels are allocated or a pixel is decoded,
       with v complete but for v->hu (NULL); a negative return fails the build with that code
       and the reason the callback wrote to why. NULL: none. */
    int (*plan)(void *arg, const struct mms_volume *v, char *why, size_t why_len);
    void *plan_arg;
};

/* Where one slice of the volume comes from (the DICOM SEG refers to it frame by frame). */
struct mms_volume_src {
    int file;           /* index into the caller's files */
    int64_t frame;      /* 0-based frame in that file (0 for single-frame) */
    char sop_class[65]; /* SOP Class UID (the file meta's when the dataset's is empty) */
    char sop_instance[65];
};

/* One CT volume: the main stack of a series, decoded to HU, on its acquired (possibly sheared,
 * possibly irregular) grid. Voxel (i, j, k) is column i, row j, slice k; its centre in patient
 * coordinates (LPS, mm) is ipp[k] + i * spacing[0] * row + j * spacing[1] * col. */
struct mms_volume {
    int64_t dims[3];   /* columns, rows, slices */
    float *hu;         /* dims[2] x dims[1] x dims[0], slice k, row j, column i */
    double spacing[3]; /* between columns, between rows (PixelSpacing[1], [0]), median slice
                          step along the normal */
    double origin[3];  /* ipp[0] */
    double dir[3][3];  /* columns: row direction, column direction, slice_dir (unit vectors;
                          the third is not orthogonal to the others under gantry tilt) */
    double normal[3];  /* row x column */
    double (*ipp)[3];  /* (dims[2]) Image Position (Patient) of every slice, ascending along the
                          normal */
    double *pos_mm;    /* (dims[2]) ipp projected on the normal */
    double min_step_mm, max_step_mm, tilt_deg;
    bool irregular;
    int n_stacks;                            /* stacks found in the series, the main one included */
    int left_out[MMS_STACK_ACQUISITION + 1]; /* CT frames with geometry not in the volume, by
                                                reason (index MMS_STACK_MAIN: 0) */
    struct mms_volume_src *src;              /* (dims[2]) */
};

/* Build the volume of one series from the headers its caller read (h[i] of paths[i]): keep
 * the CT frames with geometry (single-frame CT Image Storage, and the frames of Enhanced and
 * Legacy Converted Enhanced CT through mms_frames_geometry), leave out other SOP classes and
 * localizers, find the main stack (mms_stack_find), check rows, columns and pixel spacing
 * agree, and decode the frames on o->threads threads.
 * why receives a one-line reason on failure: "series UID: problem" (the problem begins
 * "PATH: " when it lies in one file).
 * Ownership: *out is new, free with mms_volume_free(); untouched on failure.
 * Before the geometry is computed, the values it comes from are checked against the limits
 * above (Image Position (Patient), and for the main stack's files Pixel Spacing, Slice
 * Thickness where present, Rescale Slope and Intercept).
 * Returns 0, MMS_EINVAL (n < 1), MMS_EDICOM (no CT frame with geometry; a value outside its
 * limits; the stack errors of mms_stack_find; pixel spacing differs; more than max_voxels; a
 * decoding error), MMS_ENOMEM, -errno. Threads: any. */
int mms_volume_build(const char *const *paths, const struct mms_header *h, int n,
                     const struct mms_volume_opts *o, struct mms_volume **out, char *why,
                     size_t why_len);
void mms_volume_free(struct mms_volume *v);

/* Check Rescale Slope and Intercept (1 and 0 where absent) before pixels are rescaled:
 * finite, MMS_SLOPE_MIN <= |slope| <= MMS_SLOPE_MAX, |intercept| <= MMS_INTERCEPT_MAX, and
 * every stored value of bits_stored bits (signed when pixel_rep is 1) within MMS_HU_MAX HU.
 * Returns 0 or MMS_EDICOM with the value and the limit in why. Threads: any. */
int mms_rescale_check(double slope, double intercept, int bits_stored, int pixel_rep, char *why,
                      size_t why_len);

/* The smallest and largest HU of v. */
void mms_volume_range(const struct mms_volume *v, float *lo, float *hi);

/* Write v as NIfTI-1 (gzip-compressed when path ends in ".gz") in the NIfTI RAS convention:
 * voxel (i, j, k) as in struct mms_volume; int16 when every HU value is a whole number in its
 * range, float32 otherwise. sform (code 1, scanner) is the exact affine of the acquired grid,
 * shear included, with the mean slice step (ipp[last] - ipp[0]) / (slices - 1); qform (code 1)
 * is the nearest rigid one (row, column, normal; slice spacing = median step). With irregular
 * spacing no affine is exact: the per-slice positions are in struct mms_volume.
 * Returns 0, -errno, MMS_ENOMEM, MMS_EIO (compression). Threads: any. */
int mms_nifti_write(const struct mms_volume *v, const char *path, char *why, size_t why_len);

/* Write labels (one uint8 per voxel of v, in v's order) as NIfTI-1 uint8 on v's grid, with
 * the header mms_nifti_write() gives v. Same returns. */
int mms_nifti_write_labels(const struct mms_volume *v, const uint8_t *labels, const char *path,
                           char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif

/* tests/fuzz: the volume builder (mms_volume_build) on a series of 2 to 4 files made from one
 * input: the input is split at each FUZZ_VOLUME_SEP (the seed corpus joins real files of one
 * series with it); every part becomes a file, its header is read as the spool reads it, and
 * the files whose header was read are built into a volume (small voxel limit, one thread).
 * Checked: no crash; a refusal has a reason; a volume has the dimensions it claims. */
#include <string.h>

#include "common/err.h"
#include "dicom/dicom.h"
#include "tests/fuzz/fuzz-util.h"

#define FUZZ_VOLUME_SEP "\nMMS-FUZZ-NEXT-FILE\n"
#define MAX_FILES 4

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[512];

static void
cleanup(void)
{
    fuzz_rmtree(dir, false);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (fuzz_tmpdir("fuzz-volume", dir, sizeof dir))
        atexit(cleanup);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t sep_len = sizeof FUZZ_VOLUME_SEP - 1;
    char paths[MAX_FILES][600];
    const char *ok_paths[MAX_FILES];
    struct mms_header h[MAX_FILES];
    int n = 0, n_ok = 0;
    size_t at = 0;
    if (dir[0] == '\0')
        return 0;
    while (n < MAX_FILES && at <= size) {
        const uint8_t *next = NULL;
        if (n < MAX_FILES - 1 && size - at >= sep_len)
            next = memmem(data + at, size - at, FUZZ_VOLUME_SEP, sep_len);
        size_t part = next != NULL ? (size_t)(next - (data + at)) : size - at;
        snprintf(paths[n], sizeof paths[n], "%s/%d.dcm", dir, n);
        if (part > 0 && fuzz_write(paths[n], data + at, part)) {
            char why[512] = "";
            if (mms_header_read(paths[n], &h[n_ok], why, sizeof why) == 0)
                ok_paths[n_ok++] = paths[n];
            else
                FUZZ_CHECK(why[0] != '\0');
        }
        n++;
        if (next == NULL)
            break;
        at += part + sep_len;
    }
    if (n_ok >= 1) {
        struct mms_volume_opts o;
        memset(&o, 0, sizeof o);
        o.stack.max_gap_ratio = 2.0;
        o.stack.allow_gaps = (size & 1) != 0;
        o.max_voxels = (uint64_t)1 << 22;
        o.threads = 1;
        struct mms_volume *v = NULL;
        char why[1024] = "";
        int rc = mms_volume_build(ok_paths, h, n_ok, &o, &v, why, sizeof why);
        if (rc == 0) {
            FUZZ_CHECK(v != NULL && v->dims[0] > 0 && v->dims[1] > 0 && v->dims[2] > 0);
            FUZZ_CHECK((uint64_t)(v->dims[0] * v->dims[1] * v->dims[2]) <= o.max_voxels);
            float lo, hi;
            mms_volume_range(v, &lo, &hi);
            mms_volume_free(v);
        } else {
            FUZZ_CHECK(why[0] != '\0');
        }
    }
    fuzz_rmtree(dir, true);
    return 0;
}

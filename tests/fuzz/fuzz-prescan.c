/* tests/fuzz: the pre-scan and the header reader on one input. The bytes are pre-scanned in
 * memory (mms_dicom_prescan), then read from a file as every received instance is
 * (mms_header_read_digest: the pre-scan's values, or GDCM), and through GDCM alone
 * (mms_header_read_gdcm). Checked: no crash; a refusal always has a reason; the memory and
 * the file pre-scan agree; what the pre-scan reports lies within the input. */
#include <string.h>

#include "common/err.h"
#include "dicom/dicom.h"
#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[512], path[600];

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
    if (!fuzz_tmpdir("fuzz-prescan", dir, sizeof dir))
        return 0;
    snprintf(path, sizeof path, "%s/input.dcm", dir);
    atexit(cleanup);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mms_prescan pre;
    char why[512] = "";
    int rc = mms_dicom_prescan(data, size, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why);
    FUZZ_CHECK(rc == 0 || rc == MMS_EDICOM || rc == MMS_ENOMEM);
    FUZZ_CHECK(rc == 0 || why[0] != '\0');
    if (rc == 0) {
        FUZZ_CHECK(pre.dataset_at <= size && pre.pixel_at <= size);
        for (int i = 0; i < MMS_TAG_COUNT; i++)
            if (pre.complete && pre.v[i].found && pre.v[i].len != 0xffffffffu)
                FUZZ_CHECK(pre.v[i].at <= size && pre.v[i].len <= size - pre.v[i].at);
    }
    if (path[0] == '\0' || size == 0 || !fuzz_write(path, data, size))
        return 0;
    struct mms_header h;
    char digest[65], why2[1024] = "";
    int hr = mms_header_read_digest(path, &h, digest, why2, sizeof why2);
    FUZZ_CHECK(hr == 0 || why2[0] != '\0');
    why[80] = '\0'; /* the file reader refuses it for the same reason */
    if (rc == MMS_EDICOM)
        FUZZ_CHECK(hr == MMS_EDICOM && strstr(why2, why) != NULL);
    if (rc == 0) {
        char why3[1024] = "";
        int gr = mms_header_read_gdcm(path, &h, why3, sizeof why3);
        FUZZ_CHECK(gr == 0 || why3[0] != '\0');
    }
    unlink(path);
    return 0;
}

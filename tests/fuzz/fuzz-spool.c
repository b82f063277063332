/* tests/fuzz: the received-instance path of the spool (daemon/spool.c), as a C-STORE or the
 * drop folder takes it: the input becomes a file in tmp/ of a fresh state folder, and
 * mms_spool_ingest() either stores it (a file in instances/ and an index row naming it) or
 * refuses it with a reason (the file then in quarantine/). Checked: no crash; the outcome is one
 * of the two, completely. The header is read in this process (isolation off), so that the
 * fuzzer sees the readers' coverage and their crashes. */
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "daemon/index.h"
#include "daemon/sandbox.h"
#include "daemon/spool.h"
#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[512], tpl_dir[512];
static uint8_t *tpl; /* a new, empty index file: created once, copied for every input */
static size_t tpl_len;

static void
cleanup(void)
{
    fuzz_rmtree(dir, false);
    fuzz_rmtree(tpl_dir, false);
    free(tpl);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mms_sandbox_set_enabled(false);
    if (!fuzz_tmpdir("fuzz-spool", dir, sizeof dir) ||
        !fuzz_tmpdir("fuzz-spool-index", tpl_dir, sizeof tpl_dir))
        return 0;
    atexit(cleanup);
    char db[600], why[512];
    struct mms_index *ix = NULL;
    snprintf(db, sizeof db, "%s/index.sqlite", tpl_dir);
    if (mms_index_open(db, false, &ix, why, sizeof why) == 0) {
        mms_index_close(ix);
        FILE *f = fopen(db, "rb");
        if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (tpl_len = (size_t)ftell(f)) > 0 &&
            fseek(f, 0, SEEK_SET) == 0 && (tpl = malloc(tpl_len)) != NULL &&
            fread(tpl, 1, tpl_len, f) != tpl_len) {
            free(tpl);
            tpl = NULL;
        }
        if (f != NULL)
            fclose(f);
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char db[600], tmp[700], why[1024] = "";
    struct mms_index *ix = NULL;
    struct mms_spool *sp = NULL;
    if (dir[0] == '\0')
        return 0;
    snprintf(db, sizeof db, "%s/index.sqlite", dir);
    if (tpl != NULL) /* a copy of a new index: the same file as creating one, faster */
        FUZZ_CHECK(fuzz_write(db, tpl, tpl_len));
    FUZZ_CHECK(mms_index_open(db, false, &ix, why, sizeof why) == 0);
    FUZZ_CHECK(mms_spool_open(dir, dir, ix, NULL, NULL, &sp, why, sizeof why) == 0);
    snprintf(tmp, sizeof tmp, "%s/input.dcm", mms_spool_tmp_dir(sp));
    FUZZ_CHECK(fuzz_write(tmp, data, size));
    struct mms_ingest res;
    memset(&res, 0, sizeof res);
    int rc = mms_spool_ingest(sp, tmp, "FUZZ@127.0.0.1", (size & 1) != 0, &res, why, sizeof why);
    struct stat sb;
    FUZZ_CHECK(stat(tmp, &sb) != 0); /* consumed either way */
    if (rc == 0) {
        struct mms_instance_row row;
        char w2[512];
        FUZZ_CHECK(res.sop_instance[0] != '\0' && res.series_uid[0] != '\0');
        FUZZ_CHECK(mms_index_instance(ix, res.sop_instance, &row, w2, sizeof w2) == 0);
        char stored[1300];
        snprintf(stored, sizeof stored, "%s/%s", dir, row.path);
        FUZZ_CHECK(stat(stored, &sb) == 0 && sb.st_size == (off_t)size);
    } else {
        FUZZ_CHECK((rc == MMS_EDICOM || rc == MMS_ENOMEM) && why[0] != '\0');
    }
    mms_spool_close(sp);
    mms_index_close(ix);
    fuzz_rmtree(dir, true);
    return 0;
}

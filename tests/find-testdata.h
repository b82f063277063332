/* Where the shared test data is, for the tests that read it: MMS_TESTDATA, else
 * $srcdir/../shared/testdata, else /work/shared/testdata (the first that holds dcm_qa_ct/In).
 * Each test program includes it once. */
#ifndef MMS_TESTS_FIND_TESTDATA_H
#define MMS_TESTS_FIND_TESTDATA_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* true and the folder in td (len bytes), or false */
static bool
find_testdata(char *td, size_t len)
{
    const char *env = getenv("MMS_TESTDATA");
    const char *srcdir = getenv("srcdir");
    char from_src[512];
    snprintf(from_src, sizeof from_src, "%s/../shared/testdata", srcdir != NULL ? srcdir : ".");
    const char *cand[3] = {env != NULL ? env : "", from_src, "/work/shared/testdata"};
    for (int i = 0; i < 3; i++) {
        char probe[1200];
        struct stat sb;
        snprintf(probe, sizeof probe, "%.1000s/dcm_qa_ct/In", cand[i]);
        if (cand[i][0] != '\0' && strlen(cand[i]) < len && stat(probe, &sb) == 0 &&
            S_ISDIR(sb.st_mode)) {
            strcpy(td, cand[i]);
            return true;
        }
    }
    return false;
}

#endif

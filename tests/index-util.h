/* For the tests that read the series index: one series row by UID. Each test program
 * includes it once, after tests/tap.h. */
#ifndef MMS_TESTS_INDEX_UTIL_H
#define MMS_TESTS_INDEX_UTIL_H

#include <string.h>

#include "daemon/index.h"

struct found {
    const char *uid;
    struct mms_series_row row;
    bool ok;
};

static int
find_one(void *ud, const struct mms_series_row *s)
{
    struct found *f = ud;
    if (strcmp(s->series_uid, f->uid) != 0)
        return 0;
    f->row = *s;
    f->ok = true;
    return 1;
}

/* The series row of uid; state -1 when there is none. */
static struct mms_series_row
series(struct mms_index *ix, const char *uid)
{
    struct found f = {.uid = uid};
    char why[256];
    if (mms_index_series(ix, find_one, &f, why, sizeof why) < 0)
        diag("series: %s", why);
    if (!f.ok)
        f.row.state = -1;
    return f.row;
}

#endif

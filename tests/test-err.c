/* Tests of common/err.c: the tables generated from MMS_ERR_MAP are complete and consistent. */
#include <string.h>

#include "common/err.h"
#include "tests/tap.h"

struct entry {
    const char *name;
    int value;
    const char *msg;
};

static const struct entry entries[] = {
#define MMS_ERR_GEN(name, value, msg) {#name, value, msg},
    MMS_ERR_MAP(MMS_ERR_GEN)
#undef MMS_ERR_GEN
};

#define N (int)(sizeof entries / sizeof entries[0])

int
main(void)
{
    int bad_name = 0, bad_msg = 0, not_negative = 0, dup = 0, project = 0, project_order = 0;
    int last_project = 0;

    plan(9, 10);
    for (int i = 0; i < N; i++) {
        const char *n = mms_err_name(entries[i].value);
        if (n == NULL || strcmp(n, entries[i].name) != 0)
            bad_name++;
        if (strcmp(mms_strerror(entries[i].value), entries[i].msg) != 0 || entries[i].msg[0] == 0)
            bad_msg++;
        if (entries[i].value >= 0)
            not_negative++;
        for (int j = 0; j < i; j++)
            if (entries[j].value == entries[i].value)
                dup++;
        if (entries[i].value <= -1000) {
            /* Project codes count down from -1000 in list order, with no gap. */
            if (entries[i].value != (project == 0 ? -1000 : last_project - 1))
                project_order++;
            last_project = entries[i].value;
            project++;
        }
    }
    is_int(bad_name, 0, "mms_err_name() names every code in MMS_ERR_MAP");
    is_int(bad_msg, 0, "mms_strerror() gives every code's message");
    is_int(not_negative, 0, "every code is negative");
    is_int(dup, 0, "no two codes share a value");
    is_int(project_order, 0, "project codes count down from -1000 without gaps");
    is_str(mms_strerror(MMS_ENOMEM), "out of memory", "system codes are -errno");
    is_str(mms_strerror(-EPIPE), "Broken pipe", "an -errno outside the list uses the system text");
    is_str(mms_strerror(-999999), "unknown error", "an unknown code has a message");
    ok(mms_err_name(-999999) == NULL && mms_err_name(0) == NULL,
       "mms_err_name() is NULL for codes not in the list");
    diag("%d codes, %d project codes", N, project);
    return done_testing();
}

/* Put files into a state directory's outbox and queue their sends, as a job does when its
 * result is ready (daemon/outbox.c), for tests/test-sender.sh:
 *
 *   outbox-put STATE_DIR JOB SERIES_UID DESTINATIONS FILE...
 *
 * DESTINATIONS: comma-separated destination names. Each FILE is copied into STATE_DIR/tmp/
 * under its base name, then moved into the outbox. Exit 0, or 1 with the reason. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/fs.h"
#include "daemon/index.h"
#include "daemon/outbox.h"

int
main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: outbox-put STATE_DIR JOB SERIES_UID DEST[,DEST...] FILE...\n");
        return 2;
    }
    const char *state = argv[1];
    long long job = atoll(argv[2]);
    char why[1024], path[4200];
    const char *dests[16];
    int n_dests = 0;
    for (char *save = NULL, *t = strtok_r(argv[4], ",", &save); t != NULL && n_dests < 16;
         t = strtok_r(NULL, ",", &save))
        dests[n_dests++] = t;
    int n = argc - 5;
    char **tmp = calloc((size_t)n, sizeof *tmp);
    snprintf(path, sizeof path, "%s/tmp", state);
    int rc = mms_fs_mkdir(path);
    for (int i = 0; rc == 0 && i < n; i++) {
        const char *base = strrchr(argv[5 + i], '/');
        base = base != NULL ? base + 1 : argv[5 + i];
        snprintf(path, sizeof path, "%s/tmp/%s", state, base);
        tmp[i] = strdup(path);
        if ((rc = mms_fs_copy(argv[5 + i], path)) < 0)
            snprintf(why, sizeof why, "copy %s: %s", argv[5 + i], mms_strerror(rc));
    }
    struct mms_index *ix = NULL;
    snprintf(path, sizeof path, "%s/state.db", state);
    if (rc == 0 && (rc = mms_index_open(path, false, &ix, why, sizeof why)) == 0)
        rc = mms_outbox_put(state, ix, job, argv[3], (const char *const *)tmp, n, dests, n_dests,
                            mms_wall_s(), why, sizeof why);
    mms_index_close(ix);
    for (int i = 0; i < n; i++)
        free(tmp[i]);
    free(tmp);
    if (rc < 0) {
        fprintf(stderr, "outbox-put: %s\n", why);
        return 1;
    }
    return 0;
}

/* daemon/page: the status page at `/` of the metrics server and the previews it shows
 * (design.md section 10).
 *
 * One HTML document, written from the index when asked: the series (the 50 received last)
 * with their state and reason, the last 12 jobs with their stage times and previews, the sends
 * pending and dead, the node, the model and the backend. It has no script and no external
 * asset (one inline style sheet), refreshes itself every 10 s, and reads on a phone. Received
 * text is HTML-escaped, invalid UTF-8 and controls replaced. Patient names and IDs appear only
 * when phi is set ([daemon] status_page_phi); they are read then from one instance of each
 * series shown, by the sandboxed header reader.
 *
 * A preview is served by job number only: the file is looked for under names the daemon made
 * (state_dir/outbox/JOB/NAME.png, then the folder destinations' SOP.png for the job's SEG), so
 * no part of a URL ever becomes a path.
 * Threads: the loop thread (the index handle is the loop's). */
#ifndef MMS_DAEMON_PAGE_H
#define MMS_DAEMON_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"
#include "daemon/index.h"

/* What the page says of the daemon itself; strings may be NULL when unknown. */
struct mms_page_facts {
    const struct mms_config *cfg; /* state_dir, node, folder destinations, status_page_phi */
    double started;               /* seconds since the epoch */
    const char *model_name, *model_version, *model_sha256, *backend; /* NULL: no model */
};

/* The page, as new memory in *html (*len bytes; free it). Returns 0, MMS_EIO (the index
 * could not be read: why says so; *html is still a page saying it), MMS_ENOMEM. */
int mms_page_status(struct mms_index *ix, const struct mms_page_facts *f, char **html, size_t *len,
                    char *why, size_t why_len);

/* The preview of job `job` as an absolute path in path (path_len bytes). Returns 0,
 * MMS_ENOENT (no such job, or its preview is in none of the places above), MMS_EIO. */
int mms_page_preview_path(struct mms_index *ix, const struct mms_page_facts *f, int64_t job,
                          char *path, size_t path_len);

/* The job number of a preview URL path "/preview/JOB.png" (JOB: 1 to 18 digits, no sign, no
 * leading zero), or -1 for any other path. */
int64_t mms_page_preview_job(const char *url_path);

#endif

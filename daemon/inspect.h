/* daemon: `mmsegd inspect`, what mmsegd would make of DICOM files and folders.
 * Threads: the main thread of the command. */
#ifndef MMS_DAEMON_INSPECT_H
#define MMS_DAEMON_INSPECT_H

#include <stdio.h>

/* Read the headers of every file under the n paths (folders recursively), group them by
 * series and report, per series, the volume (main stack) mmsegd would rebuild or why there is
 * none, and the files and frames left out with their reasons, on out.
 * Returns 0 when at least one DICOM file was read, MMS_ENOENT when none was, or -errno. */
int mms_inspect(const char *const *paths, int n, FILE *out);

#endif

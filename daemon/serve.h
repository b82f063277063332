/* The daemon: `mmsegd serve`, a libuv loop with signals, reload and systemd notification. */
#ifndef MMS_DAEMON_SERVE_H
#define MMS_DAEMON_SERVE_H

#include "daemon/config.h"

/* Run the daemon on the calling thread until SIGTERM or SIGINT.
 * cfg was loaded from cfg->path; the daemon takes ownership of it and frees it (or its
 * successor after a reload) before returning.
 * Returns 0 after a clean stop, or a negative MMS_E* code when start-up failed (already
 * logged). Threads: main thread only, once per process. */
int mms_serve(struct mms_config *cfg);

#endif

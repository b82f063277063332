/* Fuzz target: the configuration loader (daemon/config.c, mms_config_load) on the input bytes
 * as a configuration file. The bytes go to an anonymous memory file read through its
 * /proc/self/fd path, so the load path is the one `mmsegd check-config -c FILE` runs: any
 * result is fine, a crash, a leak or undefined behaviour is a finding.
 * Threads: libFuzzer's one. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/err.h"
#include "daemon/config.h"
#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[2048];
    int fd = fuzz_memfd("fuzz-config.ini", data, size, path, sizeof path);
    if (fd < 0)
        return 0;
    struct mms_config *cfg = NULL;
    if (mms_config_load(path, &cfg, err, sizeof err) == 0) {
        /* a loaded configuration must print (check-config does) and free cleanly */
        FILE *null = fopen("/dev/null", "w");
        if (null != NULL) {
            mms_config_print(cfg, null);
            fclose(null);
        }
        mms_config_free(cfg);
    }
    close(fd);
    return 0;
}

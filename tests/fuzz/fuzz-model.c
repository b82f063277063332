/* Fuzz target: the model loader (infer/model.c with safetensors.c, json.c and card.c,
 * mms_model_load) on the input bytes as a model file. The bytes go to an anonymous memory
 * file mapped through its /proc/self/fd path, as a model file on disk is: any result is fine
 * (mmunet.md 7 V6: a malformed file is MMS_EMODEL), a crash, a leak or undefined behaviour is
 * a finding. Threads: libFuzzer's one. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "infer/infer.h"
#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
quiet(int level, const char *msg, void *arg)
{
    (void)level;
    (void)msg;
    (void)arg;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        once = 1;
        mms_log_set_sink(quiet, NULL);
    }
    char path[64], why[1024];
    int fd = fuzz_memfd("fuzz-model.safetensors", data, size, path, sizeof path);
    if (fd < 0)
        return 0;
    struct mms_model *m = NULL;
    if (mms_model_load(path, &m, why, sizeof why) == 0) {
        const struct mms_card *card = mms_model_card(m);
        if (card == NULL)
            abort(); /* a loaded model always has its card */
        mms_model_free(m);
    }
    close(fd);
    return 0;
}

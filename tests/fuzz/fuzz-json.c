/* Fuzz target: the model's JSON (infer/json.c, the parser of the safetensors header and the
 * card, with Python's json module as its contract) and the card checks (infer/card.c) on the
 * input bytes as text. Each input is parsed as a document (json.loads) and as a raw value
 * (json.JSONDecoder.raw_decode); a document that parses is written back with mms__py_dumps()
 * and must parse again to the same text, and it is checked as a card. Any refusal is fine; a
 * crash, a leak, undefined behaviour or a broken promise is a finding. Threads: libFuzzer's one. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "infer/model-impl.h"
#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { DUMP_LEN = 1 << 16 };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dump1[DUMP_LEN], dump2[DUMP_LEN];
    const char *text = (const char *)data;
    struct mms__json_error err;
    cJSON *v = NULL;
    size_t end = (size_t)-1;

    int rc = mms__json_parse(text, size, MMS__JSON_RAW, &v, &end, &err);
    FUZZ_CHECK(rc == 0 || rc == MMS_EMODEL || rc == MMS_ENOMEM);
    if (rc == 0) {
        FUZZ_CHECK(v != NULL && end > 0 && end <= size);
        cJSON_Delete(v);
        v = NULL;
    } else {
        FUZZ_CHECK(end == (size_t)-1); /* untouched on failure */
        FUZZ_CHECK(rc != MMS_EMODEL || err.duplicate || err.msg != NULL);
    }

    rc = mms__json_parse(text, size, MMS__JSON_DOC, &v, NULL, &err);
    FUZZ_CHECK(rc == 0 || rc == MMS_EMODEL || rc == MMS_ENOMEM);
    if (rc != 0)
        return 0;
    /* json.dumps of what json.loads read is JSON that reads back to the same value */
    mms__py_dumps(dump1, sizeof dump1, v, false);
    size_t n1 = strlen(dump1);
    if (n1 + 1 < sizeof dump1) { /* not cut */
        cJSON *w = NULL;
        int rc2 = mms__json_parse(dump1, n1, MMS__JSON_DOC, &w, NULL, &err);
        if (rc2 == MMS_ENOMEM) {
            cJSON_Delete(v);
            return 0;
        }
        if (rc2 != 0)
            fprintf(stderr, "dumps gave %s, which does not parse: %s\n", dump1,
                    err.duplicate ? "duplicate key" : err.msg);
        FUZZ_CHECK(rc2 == 0);
        mms__py_dumps(dump2, sizeof dump2, w, false);
        cJSON_Delete(w);
        if (strcmp(dump1, dump2) != 0)
            fprintf(stderr, "dumps: %s\nagain: %s\n", dump1, dump2);
        FUZZ_CHECK(strcmp(dump1, dump2) == 0);
    }
    cJSON_Delete(v);

    /* the same text as a card: the card checks take a C string */
    if (memchr(text, '\0', size) == NULL) {
        char *s = malloc(size + 1);
        if (s == NULL)
            return 0;
        memcpy(s, text, size);
        s[size] = '\0';
        struct mms_card card;
        char why[512];
        memset(&card, 0, sizeof card);
        rc = mms__card_parse(s, &card, why, sizeof why);
        FUZZ_CHECK(rc == 0 || rc == MMS_EMODEL || rc == MMS_ENOMEM);
        if (rc == 0) {
            FUZZ_CHECK(card.n_labels >= 0 && (card.n_labels == 0 || card.labels != NULL));
            for (int i = 1; i < card.n_labels; i++)
                FUZZ_CHECK(card.labels[i - 1].id < card.labels[i].id); /* sorted by id */
            mms__card_fini(&card);
        } else {
            FUZZ_CHECK(why[0] != '\0');
        }
        free(s);
    }
    return 0;
}

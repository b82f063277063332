/* infer: module-private view of model and safetensors files (mmunet.md 4.1 to 4.3). */
#ifndef MMS_INFER_MODEL_IMPL_H
#define MMS_INFER_MODEL_IMPL_H

#include "infer/infer.h"

/* Write "PATH: " and the formatted reason into why (why_len bytes; why may be NULL) and
 * return rc: the one shape of every loader message. */
int mms__failf(char *why, size_t why_len, int rc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* A safetensors file, mapped read-only and checked against rules 1 to 3 of mmunet.md 4.3
 * (header, offsets, dtypes, finite values). Used for model files and for test goldens. */
struct mms_st;

/* Open and check path. why receives "PATH: reason" on failure.
 * Ownership: *out is new, free with mms__st_close(). Returns 0, -errno, MMS_EMODEL,
 * MMS_ENOMEM; *out is untouched on failure. Threads: any. */
int mms__st_open(const char *path, struct mms_st **out, char *why, size_t why_len);
void mms__st_close(struct mms_st *st);

int mms__st_count(const struct mms_st *st);
/* Tensor i (0 <= i < count), in the order of the header. */
const struct mms_tensor *mms__st_tensor(const struct mms_st *st, int i);
/* The tensor called name, or NULL. */
const struct mms_tensor *mms__st_find(const struct mms_st *st, const char *name);
/* The __metadata__ value of key, or NULL. */
const char *mms__st_meta(const struct mms_st *st, const char *key);
/* SHA-256 of the whole file, lowercase hex. */
const char *mms__st_sha256(const struct mms_st *st);

/* JSON as Python's json module reads it (strict), for the header and the card: whitespace is
 * space, tab, CR, LF; NaN, Infinity and -Infinity are numbers; a number without fraction or
 * exponent is an integer (MMS__JSON_INT in its cJSON type); a repeated key in any object is an
 * error, reported when that object closes. Stricter than Python: \u0000 and lone surrogates are
 * refused (C strings cannot carry them) and nesting is limited to 512 levels. */
struct cJSON;

/* Set in cJSON's type of a number written as an integer (bits above cJSON's own flags). */
#define MMS__JSON_INT (1 << 12)

enum mms__json_mode {
    MMS__JSON_RAW, /* json.JSONDecoder.raw_decode(): one value at text[0], *end is where it ends */
    MMS__JSON_DOC, /* json.loads(): one value with optional whitespace around it */
};

struct mms__json_error {
    bool duplicate;    /* a repeated key (key holds its repr), else a syntax error (msg) */
    const char *msg;   /* Python's wording: "Expecting value", "Expecting ',' delimiter"... */
    int64_t pos;       /* characters (code points) before the error */
    int64_t line, col; /* from 1 */
    char key[160];
};

/* Parse len bytes of UTF-8 text (end may be NULL). Ownership: *out is new, free with
 * cJSON_Delete().
 * Returns 0, MMS_EMODEL (*err says why) or MMS_ENOMEM; *out and *end untouched on failure. */
int mms__json_parse(const char *text, size_t len, enum mms__json_mode mode, struct cJSON **out,
                    size_t *end, struct mms__json_error *err);

/* Python's repr() of the UTF-8 string s ('head.bias'), cut with "..." to fit n bytes. */
void mms__py_repr(char *buf, size_t n, const char *s);

/* Python's json.dumps(v) (repr false) or repr(v) (repr true) of a value read by
 * mms__json_parse(); NULL stands for a missing value (null, None). Cut to fit n bytes. */
void mms__py_dumps(char *buf, size_t n, const struct cJSON *v, bool repr);

/* Parse and check a card (mmunet.md 4.2, rule 5 of 4.3) from JSON text.
 * Ownership: fills *card (caller's memory), release with mms__card_fini().
 * Returns 0, MMS_EMODEL (why names the key) or MMS_ENOMEM. */
int mms__card_parse(const char *json, struct mms_card *card, char *why, size_t why_len);
void mms__card_fini(struct mms_card *card);

#endif

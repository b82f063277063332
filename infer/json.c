/* infer: the strict JSON reader shared by safetensors headers and model cards, and the
 * Python-style rendering of values used in their error messages. It follows the grammar of
 * Python's json module, as tools/mmunet/export.py reads these files: NaN and Infinity are
 * accepted, duplicate keys and control characters are not, and numbers written as integers
 * are flagged (MMS__JSON_INT) so that 1.0 is not taken for 1.
 * Threads: any; no shared state. */
#include "infer/model-impl.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/err.h"

#define JSON_DEPTH_MAX 512

/* ----------------------------------------------------------------------------- text output */
struct sbuf {
    char *b;
    size_t n, len; /* capacity, bytes written (not counting the NUL) */
    bool cut;
};

static void
sb_init(struct sbuf *sb, char *b, size_t n)
{
    sb->b = b;
    sb->n = n;
    sb->len = 0;
    sb->cut = false;
    if (n > 0)
        b[0] = '\0';
}

static void
sb_putn(struct sbuf *sb, const char *s, size_t k)
{
    if (sb->n == 0 || sb->cut)
        return;
    if (k > sb->n - 1 - sb->len) {
        k = sb->n - 1 - sb->len;
        sb->cut = true;
    }
    memcpy(sb->b + sb->len, s, k);
    sb->len += k;
    sb->b[sb->len] = '\0';
}

static void
sb_puts(struct sbuf *sb, const char *s)
{
    sb_putn(sb, s, strlen(s));
}

static void sb_printf(struct sbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
sb_printf(struct sbuf *sb, const char *fmt, ...)
{
    char tmp[400];
    va_list ap;
    int k;

    va_start(ap, fmt);
    k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0)
        sb_putn(sb, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* End a cut text with "..." where it still fits. */
static void
sb_finish(struct sbuf *sb)
{
    if (sb->cut && sb->n >= 4) {
        size_t at = sb->len >= 3 ? sb->len - 3 : 0;
        while (at > 0 && ((unsigned char)sb->b[at] & 0xc0) == 0x80)
            at--; /* do not split a UTF-8 sequence */
        memcpy(sb->b + at, "...", 4);
        sb->len = at + 3;
    }
}

/* Decode one UTF-8 sequence; returns its length. A byte that does not start a complete,
 * well-formed sequence (an overlong form, a surrogate, beyond U+10FFFF) is returned alone as
 * U+FFFD: strings keep the bytes they were given, and what is written of them must read
 * back. */
static int
utf8_next(const unsigned char *s, uint32_t *cp)
{
    int k = s[0] < 0x80   ? 1
            : s[0] < 0xc2 ? 0
            : s[0] < 0xe0 ? 2
            : s[0] < 0xf0 ? 3
            : s[0] < 0xf5 ? 4
                          : 0;

    for (int i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80)
            k = 0;
    switch (k) {
    case 1:
        *cp = s[0];
        return 1;
    case 2:
        *cp = (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
        return 2;
    case 3:
        *cp = (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
        if (*cp >= 0x800 && (*cp < 0xd800 || *cp > 0xdfff))
            return 3;
        break;
    case 4:
        *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
              (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
        if (*cp >= 0x10000 && *cp <= 0x10ffff)
            return 4;
        break;
    default:
        break;
    }
    *cp = 0xfffd; /* U+FFFD, the replacement character */
    return 1;
}

static void
sb_repr(struct sbuf *sb, const char *s)
{
    char q = strchr(s, '\'') != NULL && strchr(s, '"') == NULL ? '"' : '\'';
    const unsigned char *p = (const unsigned char *)s;

    sb_putn(sb, &q, 1);
    while (*p != '\0') {
        uint32_t cp;
        int k = utf8_next(p, &cp);

        if (cp == '\\' || cp == (uint32_t)q)
            sb_printf(sb, "\\%c", (char)cp);
        else if (cp == '\n')
            sb_puts(sb, "\\n");
        else if (cp == '\r')
            sb_puts(sb, "\\r");
        else if (cp == '\t')
            sb_puts(sb, "\\t");
        else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
            sb_printf(sb, "\\x%02x", (unsigned)cp);
        else if (k == 1 && *p >= 0x80) /* not UTF-8 */
            sb_printf(sb, "\\x%02x", *p);
        else
            sb_putn(sb, (const char *)p, (size_t)k);
        p += k;
    }
    sb_putn(sb, &q, 1);
}

static void
sb_json_string(struct sbuf *sb, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    sb_puts(sb, "\"");
    while (*p != '\0') {
        uint32_t cp;
        int k = utf8_next(p, &cp);

        if (cp == '"' || cp == '\\')
            sb_printf(sb, "\\%c", (char)cp);
        else if (cp == '\n')
            sb_puts(sb, "\\n");
        else if (cp == '\r')
            sb_puts(sb, "\\r");
        else if (cp == '\t')
            sb_puts(sb, "\\t");
        else if (cp == '\b')
            sb_puts(sb, "\\b");
        else if (cp == '\f')
            sb_puts(sb, "\\f");
        else if (cp < 0x20 || (cp >= 0x7f && cp < 0x10000))
            sb_printf(sb, "\\u%04x", (unsigned)cp);
        else if (cp >= 0x10000)
            sb_printf(sb, "\\u%04x\\u%04x", 0xd800 + ((cp - 0x10000) >> 10),
                      0xdc00 + ((cp - 0x10000) & 0x3ff));
        else
            sb_putn(sb, (const char *)p, (size_t)k);
        p += k;
    }
    sb_puts(sb, "\"");
}

/* Python's repr() of a float: the shortest digits that read back, in fixed notation for
 * decimal exponents -4..15 and scientific notation otherwise. */
static void
sb_float(struct sbuf *sb, double v, bool repr)
{
    char e[40], digits[24];
    int prec, exp10, nd = 0;
    const char *p;

    if (isnan(v)) {
        sb_puts(sb, repr ? "nan" : "NaN");
        return;
    }
    if (isinf(v)) {
        sb_puts(sb, v < 0 ? (repr ? "-inf" : "-Infinity") : (repr ? "inf" : "Infinity"));
        return;
    }
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    p = e;
    if (*p == '-') {
        sb_puts(sb, "-");
        p++;
    }
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            sb_puts(sb, "0.");
            for (int i = -1; i > exp10; i--)
                sb_puts(sb, "0");
            sb_putn(sb, digits, (size_t)nd);
        } else {
            for (int i = 0; i <= exp10; i++)
                sb_putn(sb, i < nd ? &digits[i] : "0", 1);
            sb_puts(sb, ".");
            if (nd > exp10 + 1)
                sb_putn(sb, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
            else
                sb_puts(sb, "0");
        }
    } else {
        sb_putn(sb, digits, 1);
        if (nd > 1) {
            sb_puts(sb, ".");
            sb_putn(sb, digits + 1, (size_t)(nd - 1));
        }
        sb_printf(sb, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
}

static void
sb_value(struct sbuf *sb, const cJSON *v, bool repr)
{
    if (v == NULL || cJSON_IsNull(v)) {
        sb_puts(sb, repr ? "None" : "null");
    } else if (cJSON_IsBool(v)) {
        sb_puts(sb, cJSON_IsTrue(v) ? (repr ? "True" : "true") : (repr ? "False" : "false"));
    } else if (cJSON_IsNumber(v)) {
        if ((v->type & MMS__JSON_INT) != 0)
            sb_printf(sb, "%.0f", v->valuedouble == 0 ? 0.0 : v->valuedouble);
        else
            sb_float(sb, v->valuedouble, repr);
    } else if (cJSON_IsString(v)) {
        if (repr)
            sb_repr(sb, v->valuestring);
        else
            sb_json_string(sb, v->valuestring);
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool obj = cJSON_IsObject(v);

        sb_puts(sb, obj ? "{" : "[");
        for (const cJSON *c = v->child; c != NULL && !sb->cut; c = c->next) {
            if (c != v->child)
                sb_puts(sb, ", ");
            if (obj) {
                if (repr)
                    sb_repr(sb, c->string);
                else
                    sb_json_string(sb, c->string);
                sb_puts(sb, ": ");
            }
            sb_value(sb, c, repr);
        }
        sb_puts(sb, obj ? "}" : "]");
    }
}

void
mms__py_repr(char *buf, size_t n, const char *s)
{
    struct sbuf sb;

    sb_init(&sb, buf, n);
    sb_repr(&sb, s);
    sb_finish(&sb);
}

void
mms__py_dumps(char *buf, size_t n, const cJSON *v, bool repr)
{
    struct sbuf sb;

    sb_init(&sb, buf, n);
    sb_value(&sb, v, repr);
    sb_finish(&sb);
}

/* ----------------------------------------------------------------------------- JSON reader */
struct parser {
    const char *s;
    size_t len, i;
    int depth;
    int rc;        /* MMS_EMODEL or MMS_ENOMEM once failed */
    size_t err_at; /* byte offset of a syntax error */
    struct mms__json_error *err;
    char *buf; /* decoded string */
    size_t buf_len, buf_cap;
};

static cJSON *parse_value(struct parser *p);

static void *
syntax(struct parser *p, const char *msg, size_t at)
{
    p->rc = MMS_EMODEL;
    p->err->duplicate = false;
    p->err->msg = msg;
    p->err_at = at;
    return NULL;
}

static void *
no_memory(struct parser *p)
{
    p->rc = MMS_ENOMEM;
    return NULL;
}

static void
skip_ws(struct parser *p)
{
    while (p->i < p->len &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static bool
match(struct parser *p, const char *word)
{
    size_t k = strlen(word);
    return p->len - p->i >= k && memcmp(p->s + p->i, word, k) == 0;
}

static bool
buf_put(struct parser *p, const char *c, size_t k)
{
    if (p->buf_cap - p->buf_len < k + 1) {
        size_t cap = p->buf_cap ? p->buf_cap : 64;
        char *nb;
        while (cap - p->buf_len < k + 1)
            cap *= 2;
        nb = realloc(p->buf, cap);
        if (nb == NULL)
            return false;
        p->buf = nb;
        p->buf_cap = cap;
    }
    memcpy(p->buf + p->buf_len, c, k);
    p->buf_len += k;
    p->buf[p->buf_len] = '\0';
    return true;
}

static int
hex4(const char *s)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/* parse_string()'s failure: a syntax error, or no memory when msg is NULL. */
static bool
bad_string(struct parser *p, const char *msg, size_t at)
{
    if (msg != NULL)
        syntax(p, msg, at);
    else
        no_memory(p);
    return false;
}

/* A string at p->i (the opening quote), decoded into p->buf. Returns false on failure. */
static bool
parse_string(struct parser *p)
{
    size_t begin = p->i;

    p->buf_len = 0;
    if (!buf_put(p, "", 0))
        return bad_string(p, NULL, 0);
    p->i++;
    for (;;) {
        size_t run = p->i;
        unsigned char c = 0;

        while (p->i < p->len) {
            c = (unsigned char)p->s[p->i];
            if (c == '"' || c == '\\' || c < 0x20)
                break;
            p->i++;
        }
        if (p->i > run && !buf_put(p, p->s + run, p->i - run))
            return bad_string(p, NULL, 0);
        if (p->i >= p->len)
            return bad_string(p, "Unterminated string starting at", begin);
        if (c == '"') {
            p->i++;
            return true;
        }
        if (c < 0x20)
            return bad_string(p, "Invalid control character at", p->i);
        /* A backslash. */
        if (p->i + 1 >= p->len)
            return bad_string(p, "Unterminated string starting at", begin);
        c = (unsigned char)p->s[p->i + 1];
        if (c != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *f = c != '\0' ? strchr(from, c) : NULL;
            if (f == NULL)
                return bad_string(p, "Invalid \\escape", p->i);
            if (!buf_put(p, &to[f - from], 1))
                return bad_string(p, NULL, 0);
            p->i += 2;
        } else {
            size_t at = p->i + 1; /* Python reports the 'u' */
            char u8[4];
            int cp, k;

            if (p->len - p->i < 7 || (cp = hex4(p->s + p->i + 2)) < 0)
                return bad_string(p, "Invalid \\uXXXX escape", at);
            p->i += 6;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                int lo = p->len - p->i >= 7 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u'
                             ? hex4(p->s + p->i + 2)
                             : -2;
                if (lo == -1)
                    return bad_string(p, "Invalid \\uXXXX escape", p->i + 1);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return bad_string(p, "Lone surrogate in \\uXXXX escape", at);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p->i += 6;
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return bad_string(p, "Lone surrogate in \\uXXXX escape", at);
            } else if (cp == 0) {
                return bad_string(p, "\\u0000 in a string", at);
            }
            if (cp < 0x80) {
                u8[0] = (char)cp;
                k = 1;
            } else if (cp < 0x800) {
                u8[0] = (char)(0xc0 | cp >> 6);
                u8[1] = (char)(0x80 | (cp & 0x3f));
                k = 2;
            } else if (cp < 0x10000) {
                u8[0] = (char)(0xe0 | cp >> 12);
                u8[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
                u8[2] = (char)(0x80 | (cp & 0x3f));
                k = 3;
            } else {
                u8[0] = (char)(0xf0 | cp >> 18);
                u8[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
                u8[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
                u8[3] = (char)(0x80 | (cp & 0x3f));
                k = 4;
            }
            if (!buf_put(p, u8, (size_t)k))
                return bad_string(p, NULL, 0);
        }
    }
}

static bool
is_digit(struct parser *p, size_t at)
{
    return at < p->len && p->s[at] >= '0' && p->s[at] <= '9';
}

static cJSON *
parse_number(struct parser *p)
{
    size_t start = p->i, i = p->i;
    bool integer = true;
    cJSON *item;
    double v;

    if (i < p->len && p->s[i] == '-')
        i++;
    if (is_digit(p, i) && p->s[i] != '0') {
        while (is_digit(p, i))
            i++;
    } else if (is_digit(p, i)) {
        i++;
    } else {
        return syntax(p, "Expecting value", start);
    }
    if (i < p->len && p->s[i] == '.' && is_digit(p, i + 1)) {
        i += 2;
        while (is_digit(p, i))
            i++;
        integer = false;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        size_t j = i + 1;
        if (j < p->len && (p->s[j] == '+' || p->s[j] == '-'))
            j++;
        if (is_digit(p, j)) {
            while (is_digit(p, j))
                j++;
            i = j;
            integer = false;
        }
    }
    p->buf_len = 0;
    if (!buf_put(p, p->s + start, i - start))
        return no_memory(p);
    v = strtod(p->buf, NULL);
    p->i = i;
    item = cJSON_CreateNumber(v);
    if (item == NULL)
        return no_memory(p);
    if (integer)
        item->type |= MMS__JSON_INT;
    return item;
}

struct member {
    const cJSON *c;
    int pos;
};

static int
member_cmp(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    int k = strcmp(x->c->string, y->c->string);
    return k != 0 ? k : (x->pos > y->pos) - (x->pos < y->pos);
}

/* The first member of obj (n members) whose key an earlier member has, or NULL: the key that
 * Python's object_pairs_hook meets twice first. *nomem is set when memory ran out. */
static const cJSON *
first_duplicate(const cJSON *obj, int n, bool *nomem)
{
    struct member *v;
    const cJSON *best = NULL;
    int best_pos = n, i = 0;

    *nomem = false;
    if (n <= 16) {
        for (const cJSON *b = obj->child; b != NULL; b = b->next)
            for (const cJSON *a = obj->child; a != b; a = a->next)
                if (strcmp(a->string, b->string) == 0)
                    return b;
        return NULL;
    }
    v = malloc((size_t)n * sizeof *v);
    if (v == NULL) {
        *nomem = true;
        return NULL;
    }
    for (const cJSON *c = obj->child; c != NULL; c = c->next, i++)
        v[i] = (struct member){c, i};
    qsort(v, (size_t)n, sizeof *v, member_cmp);
    for (i = 1; i < n; i++)
        if (v[i].pos < best_pos && strcmp(v[i - 1].c->string, v[i].c->string) == 0) {
            best = v[i].c;
            best_pos = v[i].pos;
        }
    free(v);
    return best;
}

static cJSON *
parse_container(struct parser *p, bool obj)
{
    cJSON *c = obj ? cJSON_CreateObject() : cJSON_CreateArray();
    int n = 0;

    if (c == NULL)
        return no_memory(p);
    if (++p->depth > JSON_DEPTH_MAX) {
        syntax(p, "Nesting deeper than 512 levels", p->i);
        goto fail;
    }
    p->i++;
    skip_ws(p);
    if (p->i < p->len && p->s[p->i] == (obj ? '}' : ']')) {
        p->i++;
        p->depth--;
        return c;
    }
    for (;;) {
        char *key = NULL;
        cJSON *item;

        if (obj) {
            if (p->i >= p->len || p->s[p->i] != '"') {
                syntax(p, "Expecting property name enclosed in double quotes", p->i);
                goto fail;
            }
            if (!parse_string(p))
                goto fail;
            key = cJSON_malloc(p->buf_len + 1); /* freed by cJSON_Delete() with the item */
            if (key == NULL) {
                no_memory(p);
                goto fail;
            }
            memcpy(key, p->buf, p->buf_len + 1);
            skip_ws(p);
            if (p->i >= p->len || p->s[p->i] != ':') {
                cJSON_free(key);
                syntax(p, "Expecting ':' delimiter", p->i);
                goto fail;
            }
            p->i++;
            skip_ws(p);
        }
        item = parse_value(p);
        if (item == NULL) {
            cJSON_free(key);
            goto fail;
        }
        item->string = key; /* an object member */
        cJSON_AddItemToArray(c, item);
        n++;
        skip_ws(p);
        if (p->i < p->len && p->s[p->i] == (obj ? '}' : ']')) {
            p->i++;
            break;
        }
        if (p->i >= p->len || p->s[p->i] != ',') {
            syntax(p, "Expecting ',' delimiter", p->i);
            goto fail;
        }
        p->i++;
        skip_ws(p);
    }
    if (obj) {
        bool nomem;
        const cJSON *repeat = first_duplicate(c, n, &nomem);
        if (nomem) {
            no_memory(p);
            goto fail;
        }
        if (repeat != NULL) {
            p->rc = MMS_EMODEL;
            p->err->duplicate = true;
            p->err->msg = "duplicate key";
            mms__py_repr(p->err->key, sizeof p->err->key, repeat->string);
            goto fail;
        }
    }
    p->depth--;
    return c;
fail:
    cJSON_Delete(c);
    return NULL;
}

static cJSON *
parse_value(struct parser *p)
{
    cJSON *item;

    if (p->i >= p->len)
        return syntax(p, "Expecting value", p->i);
    switch (p->s[p->i]) {
    case '"':
        if (!parse_string(p))
            return NULL;
        item = cJSON_CreateString(p->buf);
        return item != NULL ? item : no_memory(p);
    case '{':
        return parse_container(p, true);
    case '[':
        return parse_container(p, false);
    case 'n':
        if (!match(p, "null"))
            break;
        p->i += 4;
        item = cJSON_CreateNull();
        return item != NULL ? item : no_memory(p);
    case 't':
    case 'f': {
        bool t = p->s[p->i] == 't';
        if (!match(p, t ? "true" : "false"))
            break;
        p->i += t ? 4 : 5;
        item = cJSON_CreateBool(t);
        return item != NULL ? item : no_memory(p);
    }
    case 'N':
    case 'I':
    case '-': {
        static const char *const words[] = {"NaN", "Infinity", "-Infinity"};
        static const double values[] = {NAN, INFINITY, -INFINITY};
        for (int k = 0; k < 3; k++)
            if (match(p, words[k])) {
                p->i += strlen(words[k]);
                item = cJSON_CreateNumber(values[k]);
                return item != NULL ? item : no_memory(p);
            }
        break;
    }
    default:
        break;
    }
    return parse_number(p);
}

/* Code points in s[0, at). */
static int64_t
chars_before(const char *s, size_t at)
{
    int64_t n = 0;
    for (size_t i = 0; i < at; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

int
mms__json_parse(const char *text, size_t len, enum mms__json_mode mode, cJSON **out, size_t *end,
                struct mms__json_error *err)
{
    struct parser p = {.s = text, .len = len, .err = err};
    cJSON *root;

    memset(err, 0, sizeof *err);
    if (mode == MMS__JSON_DOC && len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        syntax(&p, "Unexpected UTF-8 BOM (decode using utf-8-sig)", 0);
        root = NULL;
    } else {
        if (mode == MMS__JSON_DOC)
            skip_ws(&p);
        root = parse_value(&p);
        if (root != NULL && mode == MMS__JSON_DOC) {
            skip_ws(&p);
            if (p.i != len) {
                syntax(&p, "Extra data", p.i);
                cJSON_Delete(root);
                root = NULL;
            }
        }
    }
    free(p.buf);
    if (root == NULL) {
        if (p.rc == MMS_EMODEL && !err->duplicate) {
            size_t nl = p.err_at;
            err->pos = chars_before(text, p.err_at);
            err->line = 1;
            for (size_t i = 0; i < p.err_at; i++)
                err->line += text[i] == '\n';
            while (nl > 0 && text[nl - 1] != '\n')
                nl--;
            err->col = err->pos - chars_before(text, nl) + 1;
        }
        return p.rc;
    }
    *out = root;
    if (end != NULL)
        *end = p.i;
    return 0;
}

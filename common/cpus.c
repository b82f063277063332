/* common/cpus: CPU sets and thread affinity (cpus.h). */
#include "common/cpus.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"

static void
add(struct mms_cpus *s, int cpu)
{
    s->bits[cpu / 64] |= (uint64_t)1 << (cpu % 64);
}

bool
mms_cpus_has(const struct mms_cpus *s, int cpu)
{
    return cpu >= 0 && cpu < MMS_CPUS_MAX && (s->bits[cpu / 64] >> (cpu % 64) & 1) != 0;
}

int
mms_cpus_count(const struct mms_cpus *s)
{
    int n = 0;
    for (size_t i = 0; i < MMS_CPUS_MAX / 64; i++)
        n += __builtin_popcountll(s->bits[i]);
    return n;
}

void
mms_cpus_minus(const struct mms_cpus *a, const struct mms_cpus *b, struct mms_cpus *out)
{
    for (size_t i = 0; i < MMS_CPUS_MAX / 64; i++)
        out->bits[i] = a->bits[i] & ~b->bits[i];
}

bool
mms_cpus_equal(const struct mms_cpus *a, const struct mms_cpus *b)
{
    return memcmp(a->bits, b->bits, sizeof a->bits) == 0;
}

static const char *
skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* A CPU number at *p (digits only), advancing *p; -1 when there is none or it is too big. */
static int
number(const char **p)
{
    const char *s = *p;
    long v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (*s - '0');
        if (v >= MMS_CPUS_MAX)
            return -1;
    }
    *p = s;
    return (int)v;
}

int
mms_cpus_parse(const char *text, struct mms_cpus *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    const char *p = skip_blanks(text);
    if (*p == '\0')
        return 0;
    for (;;) {
        p = skip_blanks(p);
        int lo = number(&p), hi = lo;
        if (lo >= 0 && *p == '-') {
            p++;
            hi = number(&p);
        }
        p = skip_blanks(p);
        if (lo < 0 || hi < lo || (*p != ',' && *p != '\0')) {
            snprintf(why, why_len,
                     "'%s' is not a list of CPU numbers and ranges (0 to %d, e.g. 0-11,14)", text,
                     MMS_CPUS_MAX - 1);
            memset(out, 0, sizeof *out);
            return MMS_EINVAL;
        }
        for (int c = lo; c <= hi; c++)
            add(out, c);
        if (*p == '\0')
            return 0;
        p++;
    }
}

void
mms_cpus_format(const struct mms_cpus *s, char *out, size_t len)
{
    size_t used = 0;
    if (len > 0)
        out[0] = '\0';
    for (int c = 0; c < MMS_CPUS_MAX && used < len; c++) {
        if (!mms_cpus_has(s, c))
            continue;
        int e = c;
        while (e + 1 < MMS_CPUS_MAX && mms_cpus_has(s, e + 1))
            e++;
        int w = e > c ? snprintf(out + used, len - used, "%s%d-%d", used ? "," : "", c, e)
                      : snprintf(out + used, len - used, "%s%d", used ? "," : "", c);
        used += w > 0 ? (size_t)w : 0;
        c = e;
    }
}

int
mms_cpus_get(struct mms_cpus *out)
{
    cpu_set_t *set = CPU_ALLOC(MMS_CPUS_MAX);
    size_t size = CPU_ALLOC_SIZE(MMS_CPUS_MAX);
    if (set == NULL)
        return MMS_ENOMEM;
    memset(out, 0, sizeof *out);
    int rc = sched_getaffinity(0, size, set) == 0 ? 0 : mms_err_errno();
    for (int c = 0; rc == 0 && c < MMS_CPUS_MAX; c++)
        if (CPU_ISSET_S(c, size, set))
            add(out, c);
    CPU_FREE(set);
    return rc;
}

int
mms_cpus_usable(void)
{
    struct mms_cpus mine;
    int n = mms_cpus_get(&mine) == 0 ? mms_cpus_count(&mine) : 0;
    if (n < 1)
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

int
mms_cpus_pin(const struct mms_cpus *s)
{
    cpu_set_t *set = CPU_ALLOC(MMS_CPUS_MAX);
    size_t size = CPU_ALLOC_SIZE(MMS_CPUS_MAX);
    if (set == NULL)
        return MMS_ENOMEM;
    CPU_ZERO_S(size, set);
    for (int c = 0; c < MMS_CPUS_MAX; c++)
        if (mms_cpus_has(s, c))
            CPU_SET_S(c, size, set);
    int rc = sched_setaffinity(0, size, set) == 0 ? 0 : mms_err_errno();
    CPU_FREE(set);
    return rc;
}

int
mms_cpus_split(const char *text, const struct mms_cpus *allowed, struct mms_cpus *infer,
               struct mms_cpus *rest, char *why, size_t why_len)
{
    struct mms_cpus want, outside;
    int rc = mms_cpus_parse(text != NULL ? text : "", &want, why, why_len);
    if (rc < 0)
        return rc;
    if (mms_cpus_count(&want) == 0) {
        *infer = *rest = *allowed;
        return 0;
    }
    mms_cpus_minus(&want, allowed, &outside);
    if (mms_cpus_count(&outside) > 0) {
        char o[256], a[256];
        mms_cpus_format(&outside, o, sizeof o);
        mms_cpus_format(allowed, a, sizeof a);
        snprintf(why, why_len, "CPU %s not available to this process (it may use %s)", o, a);
        return MMS_EINVAL;
    }
    *infer = want;
    mms_cpus_minus(allowed, &want, rest);
    if (mms_cpus_count(rest) == 0)
        *rest = *allowed;
    return 0;
}

/* common/cpus: sets of CPUs as [infer] cpus writes them ("0-11,14"), and the affinity of the
 * calling thread. Threads: any; each call acts on the calling thread only. */
#ifndef MMS_COMMON_CPUS_H
#define MMS_COMMON_CPUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MMS_CPUS_MAX 1024 /* CPU numbers 0 to MMS_CPUS_MAX - 1 */

struct mms_cpus {
    uint64_t bits[MMS_CPUS_MAX / 64];
};

/* Parse a list of CPU numbers and ranges separated by ',' ("0-11,14"; blanks around items
 * allowed) into *out; "" gives the empty set. Returns 0, or MMS_EINVAL with why[] filled. */
int mms_cpus_parse(const char *text, struct mms_cpus *out, char *why, size_t why_len);
/* The set as a list of ranges ("0-11,14"), "" for the empty set. */
void mms_cpus_format(const struct mms_cpus *s, char *out, size_t len);
int mms_cpus_count(const struct mms_cpus *s);
bool mms_cpus_has(const struct mms_cpus *s, int cpu);
/* out = a minus b (out may be a). */
void mms_cpus_minus(const struct mms_cpus *a, const struct mms_cpus *b, struct mms_cpus *out);
bool mms_cpus_equal(const struct mms_cpus *a, const struct mms_cpus *b);

/* The CPUs the calling thread may run on (sched_getaffinity). Returns 0 or a negative errno. */
int mms_cpus_get(struct mms_cpus *out);
/* How many CPUs the calling thread may run on (the online CPUs when that cannot be read);
 * at least 1. */
int mms_cpus_usable(void);
/* Let the calling thread run on s only (sched_setaffinity). Returns 0 or a negative errno. */
int mms_cpus_pin(const struct mms_cpus *s);

/* The CPUs of inference and of the rest, from [infer] cpus (text; "" = not set) and the CPUs
 * the calling thread may use (allowed): with the key set, inference gets those CPUs and the
 * rest the others (all of allowed when the key names all of them); without it, both are
 * allowed. Returns 0, or MMS_EINVAL with why[] filled when text does not parse or names a CPU
 * outside allowed. */
int mms_cpus_split(const char *text, const struct mms_cpus *allowed, struct mms_cpus *infer,
                   struct mms_cpus *rest, char *why, size_t why_len);

#endif

/* common/grow: room for one more element in a doubling array. Threads: any. */
#ifndef MMS_COMMON_GROW_H
#define MMS_COMMON_GROW_H

#include <stddef.h>
#include <stdlib.h>

/* The array arr (*cap elements of `size` bytes, n in use) with room for at least n + 1,
 * doubling from `first`: arr itself when it has room, else the reallocated array (*cap
 * updated), or NULL when out of memory (arr and *cap unchanged). */
static inline void *
mms_grow(void *arr, int *cap, int n, size_t size, int first)
{
    if (n < *cap)
        return arr;
    int want = *cap > 0 ? 2 * *cap : first;
    void *grown = realloc(arr, (size_t)want * size);
    if (grown != NULL)
        *cap = want;
    return grown;
}

#endif

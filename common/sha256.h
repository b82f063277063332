/* SHA-256 (FIPS 180-4): incremental digest of a byte stream, and its lowercase hex form.
 * Used for the model identity (mmunet.md 4.3 rule 6). Threads: a context is used by one thread
 * at a time; there is no shared state. */
#ifndef MMS_COMMON_SHA256_H
#define MMS_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The running state; caller's memory, no resources to release. */
struct mms_sha256 {
    uint32_t h[8];     /* intermediate hash value H(i) */
    uint64_t nbytes;   /* message length so far */
    uint8_t block[64]; /* the incomplete block */
    size_t fill;       /* bytes in block */
};

/* Start a digest with the initial hash value of FIPS 180-4 5.3.3. */
void mms_sha256_init(struct mms_sha256 *c);

/* Append n bytes of data (data may be NULL when n is 0). */
void mms_sha256_update(struct mms_sha256 *c, const void *data, size_t n);

/* Pad, finish and write the 32-byte digest to out; c must be initialised again for reuse. */
void mms_sha256_final(struct mms_sha256 *c, uint8_t out[32]);

/* Write the 64 lowercase hex digits of d and a terminating NUL to out. */
void mms_sha256_hex(const uint8_t d[32], char out[65]);

#ifdef __cplusplus
}
#endif

#endif

/* UIDs derived from text: the same text always gives the same UID (design.md section 3).
 * Threads: any; no shared state. */
#ifndef MMS_COMMON_UID_H
#define MMS_COMMON_UID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "2.25." and the decimal value of the 16 bytes v (big-endian), as ITU-T X.667 turns a UUID
 * into a UID; out holds at least 65 bytes. */
void mms_uid_from_bytes(const uint8_t v[16], char out[65]);

/* "2.25." and the name-based UUID version 5 (RFC 4122: SHA-1 of the OID namespace and name). */
void mms_uid_uuid5(const char *name, char out[65]);

/* Whether the len bytes at s are a valid UID (PS3.5 9.1): 1 to 64 characters, digits and
 * dots only, no empty component, no leading zero in a component other than "0". When not,
 * why (why_len bytes, may be NULL) says what is wrong, in words. */
bool mms_uid_check(const char *s, size_t len, char *why, size_t why_len);

/* Whether s may be the value of a DICOM LO or SH element that mmsegd writes (design.md 7):
 * 1 to max printable ASCII characters (DICOM's default repertoire), not only spaces (DICOM
 * drops them), no backslash (the value delimiter). */
bool mms_dicom_text_check(const char *s, size_t max);

/* SHA-1 (FIPS 180-4) of n bytes, for UUID version 5 only. */
void mms_sha1(const void *data, size_t n, uint8_t out[20]);

#ifdef __cplusplus
}
#endif
#endif

/* common/text: reading received text safely, and short human figures.
 * Threads: any. */
#ifndef MMS_COMMON_TEXT_H
#define MMS_COMMON_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Decode one UTF-8 character at s (at least one byte, not NUL): its code point, or -1 for
 * a byte that does not start a valid, shortest-form sequence (surrogates and code points
 * beyond U+10FFFF included); *len receives the bytes to step over (1 when invalid). */
int32_t mms_utf8_next(const unsigned char *s, int *len);

/* Whether a terminal could take code point cp as a control: C0, DEL, C1. */
static inline int
mms_is_control(int32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp < 0xa0);
}

/* An age or duration in whole units: "12 s", "3 min", "5 h", "2 d"; "-" for 10^9 s or more;
 * a negative or NaN age is 0 s. */
void mms_format_age(double age_s, char *buf, size_t len);

#endif

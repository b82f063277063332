/* UIDs derived from text (design.md section 3). */
#include "common/uid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t
rol(uint32_t x, int n)
{
    return x << n | x >> (32 - n);
}

void
mms_sha1(const void *data, size_t n, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u, 0xc3d2e1f0u};
    const uint8_t *p = data;
    uint64_t bits = (uint64_t)n * 8;
    size_t total = (n + 9 + 63) / 64 * 64; /* message, 0x80, length: whole blocks */
    for (size_t off = 0; off < total; off += 64) {
        uint8_t b[64];
        for (int i = 0; i < 64; i++) {
            size_t at = off + (size_t)i;
            b[i] = at < n ? p[at] : at == n ? 0x80 : 0;
        }
        if (off + 64 == total)
            for (int i = 0; i < 8; i++)
                b[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
                   (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
        for (int i = 16; i < 80; i++)
            w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) {
                f = (bb & c) | (~bb & d);
                k = 0x5a827999u;
            } else if (i < 40) {
                f = bb ^ c ^ d;
                k = 0x6ed9eba1u;
            } else if (i < 60) {
                f = (bb & c) | (bb & d) | (c & d);
                k = 0x8f1bbcdcu;
            } else {
                f = bb ^ c ^ d;
                k = 0xca62c1d6u;
            }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rol(bb, 30);
            bb = a;
            a = t;
        }
        h[0] += a;
        h[1] += bb;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    for (int i = 0; i < 20; i++)
        out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

void
mms_uid_from_bytes(const uint8_t v[16], char out[65])
{
    unsigned __int128 x = 0;
    for (int i = 0; i < 16; i++)
        x = x << 8 | v[i];
    char digits[48];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(x % 10));
        x /= 10;
    } while (x != 0);
    int k = snprintf(out, 65, "2.25.");
    while (n > 0 && k < 64)
        out[k++] = digits[--n];
    out[k] = '\0';
}

void
mms_uid_uuid5(const char *name, char out[65])
{
    /* RFC 4122 appendix C: the name space of ISO OIDs, 6ba7b812-9dad-11d1-80b4-00c04fd430c8 */
    static const uint8_t ns[16] = {0x6b, 0xa7, 0xb8, 0x12, 0x9d, 0xad, 0x11, 0xd1,
                                   0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};
    size_t len = strlen(name);
    uint8_t *buf = malloc(16 + len), d[20];
    if (buf == NULL) {
        out[0] = '\0';
        return;
    }
    memcpy(buf, ns, 16);
    memcpy(buf + 16, name, len);
    mms_sha1(buf, 16 + len, d);
    free(buf);
    d[6] = (uint8_t)((d[6] & 0x0f) | 0x50); /* version 5 */
    d[8] = (uint8_t)((d[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    mms_uid_from_bytes(d, out);
}

bool
mms_uid_check(const char *s, size_t len, char *why, size_t why_len)
{
    const char *msg = NULL;
    if (len == 0)
        msg = "empty";
    else if (len > 64)
        msg = "longer than 64 characters";
    for (size_t i = 0, start = 0; msg == NULL && i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (s[i] < '0' || s[i] > '9')
                msg = "a character other than a digit or a dot";
            continue;
        }
        if (i == start)
            msg = "an empty component";
        else if (s[start] == '0' && i - start > 1)
            msg = "a component with a leading zero";
        start = i + 1;
    }
    if (msg != NULL && why != NULL && why_len > 0)
        snprintf(why, why_len, "%s (%zu characters)", msg, len);
    return msg == NULL;
}

bool
mms_dicom_text_check(const char *s, size_t max)
{
    bool spaces = true;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++, n++) {
        if (*p == '\\' || *p < 0x20 || *p >= 0x7F)
            return false;
        spaces = spaces && *p == ' ';
    }
    return n <= max && !spaces;
}

/* Tests of the structural pre-scan (dicom/prescan.c): nesting depth in every encoding (group
 * 0000 and implicit VR values included), the meta information's UIDs and lengths, undefined
 * lengths, truncation, items out of place and garbage: each refused with its reason. */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "dicom/dicom.h"
#include "tests/tap.h"

static uint8_t buf[1 << 20];
static size_t len;

static void
put(const void *p, size_t n)
{
    memcpy(buf + len, p, n);
    len += n;
}

static void
u16le(unsigned v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, 2);
}

static void
u32le(uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, 4);
}

/* preamble, DICM and a meta group with the given transfer syntax (even length) */
static void
meta(const char *ts)
{
    len = 0;
    memset(buf, 0, 128);
    len = 128;
    put("DICM", 4);
    const char *cls = "1.2.840.10008.5.1.4.1.1.2";
    size_t lc = strlen(cls) + (strlen(cls) & 1), lt = strlen(ts) + (strlen(ts) & 1);
    u16le(0x0002);
    u16le(0x0002);
    put("UI", 2);
    u16le((unsigned)lc);
    put(cls, strlen(cls));
    if (lc > strlen(cls))
        put("", 1);
    u16le(0x0002);
    u16le(0x0010);
    put("UI", 2);
    u16le((unsigned)lt);
    put(ts, strlen(ts));
    if (lt > strlen(ts))
        put("", 1);
}

static void
item_undefined(void)
{
    u16le(0xfffe);
    u16le(0xe000);
    u32le(0xffffffffu);
}

static int
scan(int max, char *why)
{
    struct mms_prescan info;
    why[0] = '\0';
    return mms_dicom_prescan(buf, len, max, &info, why, 256);
}

int
main(void)
{
    char why[256];
    struct mms_prescan info;
    plan(20, 10);

    /* explicit VR LE: 200 nested undefined-length SQ + items */
    meta("1.2.840.10008.1.2.1");
    for (int i = 0; i < 200; i++) {
        u16le(0x0009);
        u16le(0x1010);
        put("SQ", 2);
        u16le(0);
        u32le(0xffffffffu);
        item_undefined();
    }
    for (int i = 0; i < 200; i++) { /* closed again: item, then sequence delimiter */
        u16le(0xfffe);
        u16le(0xe00d);
        u32le(0);
        u16le(0xfffe);
        u16le(0xe0dd);
        u32le(0);
    }
    int rc = scan(128, why);
    ok(rc == MMS_EDICOM && strstr(why, "deeper than 128") != NULL, "explicit LE, 200 levels: %s",
       why);
    ok(scan(1000, why) == 0, "the same file with a bound of 1000 levels passes");
    mms_dicom_prescan(buf, len, 1000, &info, why, sizeof why);
    ok(strcmp(info.media_class, "1.2.840.10008.5.1.4.1.1.2") == 0 &&
           strcmp(info.transfer_syntax, "1.2.840.10008.1.2.1") == 0,
       "the meta information's SOP class and transfer syntax are read");

    /* implicit VR LE: undefined lengths are sequences */
    meta("1.2.840.10008.1.2");
    for (int i = 0; i < 100; i++) {
        u16le(0x0009);
        u16le(0x1010);
        u32le(0xffffffffu);
        item_undefined();
    }
    ok(scan(128, why) == MMS_EDICOM, "implicit LE, 100 levels of SQ + item (200): refused");

    /* UN of undefined length switches to implicit VR inside */
    meta("1.2.840.10008.1.2.1");
    u16le(0x0009);
    u16le(0x1010);
    put("UN", 2);
    u16le(0);
    u32le(0xffffffffu);
    for (int i = 0; i < 100; i++) {
        item_undefined();
        u16le(0x0009);
        u16le(0x1020);
        u32le(0xffffffffu);
    }
    ok(scan(128, why) == MMS_EDICOM, "explicit LE with nesting inside an undefined-length UN");

    /* a well-formed shallow file: defined-length SQ, delimiters, then pixel data */
    meta("1.2.840.10008.1.2.1");
    u16le(0x0008);
    u16le(0x1140);
    put("SQ", 2);
    u16le(0);
    u32le(8 + 8 + 2);
    u16le(0xfffe);
    u16le(0xe000);
    u32le(8 + 2);
    u16le(0x0008);
    u16le(0x1150);
    put("UI", 2);
    u16le(2);
    put("1", 2);
    u16le(0x7fe0);
    u16le(0x0010);
    put("OW", 2);
    u16le(0);
    u32le(4);
    u32le(0);
    ok(scan(8, why) == 0, "a defined-length sequence of depth 2, then pixel data: fine");

    /* truncated and garbage input is refused with its reason */
    len -= 30;
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "declares 18 bytes") != NULL,
       "truncated inside a sequence: %s", why);
    size_t whole = len + 30;
    len = whole - 4;
    ok(scan(8, why) == 0, "truncated pixel data: the header is whole");
    mms_dicom_prescan(buf, len, 8, &info, why, sizeof why);
    ok(info.complete && info.pixel_at == whole - 4 && !info.pixel_fits,
       "... and the pre-scan says the pixel data does not fit");
    len = 0;
    for (int i = 0; i < 1000; i++)
        put("\xff", 1);
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "not DICOM") != NULL, "garbage without DICM: %s",
       why);
    len = 3;
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "truncated") != NULL, "three bytes: %s", why);

    /* implicit VR: an undefined length is a sequence only where an item follows */
    meta("1.2.840.10008.1.2");
    u16le(0x0008);
    u16le(0x0018);
    u32le(0xffffffffu);
    put("1.2.3.4\0", 8);
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "(0008,0018)") && strstr(why, "undefined length"),
       "implicit VR, a UID of undefined length: %s", why);
    /* a known value attribute may not be a sequence even when an item follows */
    meta("1.2.840.10008.1.2");
    u16le(0x0008);
    u16le(0x0060);
    u32le(0xffffffffu);
    u16le(0xfffe);
    u16le(0xe0dd);
    u32le(0);
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "(0008,0060)") != NULL,
       "implicit VR, Modality of undefined length before a delimiter: %s", why);
    /* explicit VR: undefined length on a UT */
    meta("1.2.840.10008.1.2.1");
    u16le(0x0008);
    u16le(0x0018);
    put("UT", 2);
    u16le(0);
    u32le(0xffffffffu);
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "undefined length") != NULL,
       "explicit VR, a UT of undefined length: %s", why);
    /* an item at the top level, an element directly inside a sequence */
    meta("1.2.840.10008.1.2.1");
    item_undefined();
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "outside a sequence") != NULL, "%s", why);
    meta("1.2.840.10008.1.2.1");
    u16le(0x0008);
    u16le(0x1140);
    put("SQ", 2);
    u16le(0);
    u32le(0xffffffffu);
    u16le(0x0008);
    u16le(0x1150);
    put("UI", 2);
    u16le(2);
    put("1", 2);
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "not in an item") != NULL, "%s", why);
    /* group 0000 is walked like any other: nesting in it counts */
    meta("1.2.840.10008.1.2.1");
    for (int i = 0; i < 20; i++) {
        u16le(0x0000);
        u16le(0x1000);
        put("SQ", 2);
        u16le(0);
        u32le(0xffffffffu);
        item_undefined();
    }
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "deeper than 8") != NULL,
       "nesting under group 0000: %s", why);
    /* implicit VR: a defined-length value that begins with an item is walked as a sequence */
    static uint8_t nest[20 * 16];
    size_t nn = 0;
    for (int i = 0; i < 20; i++) { /* from the inside out: element > item > element ... */
        uint8_t hdr[16] = {0x09, 0x00, 0x10, 0x10, 0, 0, 0, 0, 0xfe, 0xff, 0x00, 0xe0, 0, 0, 0, 0};
        uint32_t il = (uint32_t)nn, el = il + 8;
        for (int k = 0; k < 4; k++) {
            hdr[4 + k] = (uint8_t)(el >> (8 * k));
            hdr[12 + k] = (uint8_t)(il >> (8 * k));
        }
        memmove(nest + 16, nest, nn);
        memcpy(nest, hdr, 16);
        nn += 16;
    }
    meta("1.2.840.10008.1.2");
    put(nest, nn);
    ok(scan(8, why) == MMS_EDICOM, "implicit VR, nesting in defined-length values: %s", why);
    /* file meta: a length beyond the file, a UID that is no UID */
    meta("1.2.840.10008.1.2.1");
    buf[132 + 6] = 0xff;
    buf[132 + 7] = 0x7f;
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "file meta information") != NULL, "%s", why);
    meta("1.2.840.10008.1.2.1\n");
    ok(scan(8, why) == MMS_EDICOM && strstr(why, "not a valid UID") != NULL, "%s", why);
    return done_testing();
}

/* common/text: UTF-8 and ages (text.h). */
#include "common/text.h"

#include <stdio.h>

int32_t
mms_utf8_next(const unsigned char *s, int *len)
{
    int n = s[0] < 0x80             ? 1
            : (s[0] & 0xe0) == 0xc0 ? 2
            : (s[0] & 0xf0) == 0xe0 ? 3
            : (s[0] & 0xf8) == 0xf0 ? 4
                                    : 0;
    *len = 1;
    if (n == 0)
        return -1;
    int32_t cp = n == 1 ? s[0] : s[0] & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return -1;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const int32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *len = n;
    return cp;
}

void
mms_format_age(double age_s, char *buf, size_t len)
{
    if (!(age_s > 0.0))
        age_s = 0.0;
    if (age_s < 60.0)
        snprintf(buf, len, "%d s", (int)age_s);
    else if (age_s < 3600.0)
        snprintf(buf, len, "%d min", (int)(age_s / 60.0));
    else if (age_s < 2 * 86400.0)
        snprintf(buf, len, "%d h", (int)(age_s / 3600.0));
    else if (age_s < 1e9)
        snprintf(buf, len, "%d d", (int)(age_s / 86400.0));
    else
        snprintf(buf, len, "-");
}

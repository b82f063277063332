/* Network text shared by the configuration check and the listeners (common/net.h). */
#include "common/net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* text[0..n) without the blanks around it, copied into out (cap bytes); false when too long. */
static bool
trimmed(const char *text, size_t n, char *out, size_t cap)
{
    while (n > 0 && isspace((unsigned char)*text)) {
        text++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    if (n >= cap)
        return false;
    memcpy(out, text, n);
    out[n] = '\0';
    return true;
}

/* An address as 16 bytes, IPv4 as IPv4-mapped IPv6; *v4: it was IPv4. */
static bool
parse_addr(const char *text, unsigned char out[16], bool *v4)
{
    struct in_addr a4;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        *v4 = true;
        return true;
    }
    *v4 = false;
    return inet_pton(AF_INET6, text, out) == 1;
}

/* One address or CIDR block: its network in 16 bytes and its prefix counted in 128 bits. */
static bool
parse_block(char *item, unsigned char net[16], int *bits)
{
    char *slash = strchr(item, '/');
    int n = -1;
    if (slash != NULL) {
        const char *len = slash + 1;
        size_t k = strlen(len);
        if (k == 0 || k > 3 || strspn(len, "0123456789") != k)
            return false;
        n = atoi(len);
        *slash = '\0';
    }
    bool v4;
    if (!parse_addr(item, net, &v4))
        return false;
    int max = v4 ? 32 : 128;
    if (n > max)
        return false;
    if (n < 0)
        n = max;
    *bits = v4 ? 96 + n : n;
    return true;
}

bool
mms_net_is_address(const char *text)
{
    unsigned char a[16];
    bool v4;
    return text != NULL && parse_addr(text, a, &v4);
}

int
mms_net_cidr_match(const char *list, const char *addr, char *why, size_t why_len)
{
    char item[128], a_text[128];
    unsigned char a[16];
    bool v4;
    if (list == NULL || addr == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no list or address");
    if (!trimmed(addr, strlen(addr), a_text, sizeof a_text) || !parse_addr(a_text, a, &v4))
        return mms_why(why, why_len, MMS_EINVAL, "not an IPv4 or IPv6 address: %.64s", addr);
    if (trimmed(list, strlen(list), item, sizeof item) && strcmp(item, "any") == 0)
        return 1;
    bool blank = true;
    for (const char *p = list; *p != '\0'; p++)
        blank = blank && isspace((unsigned char)*p);
    if (blank)
        return 0;
    bool match = false;
    for (const char *at = list;;) {
        const char *comma = strchr(at, ',');
        size_t n = comma != NULL ? (size_t)(comma - at) : strlen(at);
        unsigned char net[16];
        int bits;
        if (!trimmed(at, n, item, sizeof item) || item[0] == '\0')
            return mms_why(why, why_len, MMS_EINVAL, "an empty or over-long item");
        char shown[128];
        snprintf(shown, sizeof shown, "%s", item);
        if (!parse_block(item, net, &bits))
            return mms_why(why, why_len, MMS_EINVAL,
                           "'%s' is not an IPv4 or IPv6 address or CIDR block (prefix at most "
                           "32 or 128)",
                           shown);
        bool same = true;
        for (int i = 0; i < bits && same; i++)
            same = ((a[i / 8] ^ net[i / 8]) & (0x80 >> (i % 8))) == 0;
        match = match || same;
        if (comma == NULL)
            break;
        at = comma + 1;
    }
    return match ? 1 : 0;
}

int
mms_net_parse_listen(const char *text, struct sockaddr_in *sa, char *why, size_t why_len)
{
    char host[64];
    const char *colon = text != NULL ? strrchr(text, ':') : NULL;
    const char *port = colon != NULL ? colon + 1 : text; /* a port alone: loopback */
    size_t k = port != NULL ? strlen(port) : 0;
    if ((colon != NULL && (size_t)(colon - text) >= sizeof host) || k == 0 || k > 5 ||
        strspn(port, "0123456789") != k || atoi(port) > 65535)
        return mms_why(why, why_len, MMS_EINVAL, "'%.64s': not IPv4:PORT or PORT (port 0 to 65535)",
                       text != NULL ? text : "");
    if (colon != NULL)
        snprintf(host, sizeof host, "%.*s", (int)(colon - text), text);
    else
        snprintf(host, sizeof host, "127.0.0.1");
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return mms_why(why, why_len, MMS_EINVAL, "'%.64s': '%s' is not an IPv4 address", text,
                       host);
    return 0;
}

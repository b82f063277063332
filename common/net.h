/* Network text shared by the configuration check and the listeners, so that what
 * check-config accepts is exactly what serve accepts (design.md section 9).
 * Threads: any; no shared state. */
#ifndef MMS_COMMON_NET_H
#define MMS_COMMON_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Test addr (IPv4 or IPv6 text) against list: "any" (every address), or a comma list of
 * addresses and CIDR blocks ("10.0.0.0/8, ::1/128, 192.168.1.7"; an IPv4-mapped IPv6 address
 * is matched as IPv4). An empty list contains no address. Returns 1 (inside), 0 (outside),
 * MMS_EINVAL (the list or addr is not valid; why says which item, may be NULL). */
int mms_net_cidr_match(const char *list, const char *addr, char *why, size_t why_len);

/* Whether text is a numeric IPv4 or IPv6 address. */
bool mms_net_is_address(const char *text);

/* Parse "IPv4:PORT", or "PORT" for 127.0.0.1:PORT (port 0 to 65535), into *sa. Returns 0 or
 * MMS_EINVAL with why. */
int mms_net_parse_listen(const char *text, struct sockaddr_in *sa, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif

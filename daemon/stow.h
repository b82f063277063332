/* daemon/stow: DICOMweb STOW-RS, the instances of one send POSTed to a web archive with
 * libcurl (design.md section 8; docs/conformance.md 2.3). Threads: any; the sender's
 * destination threads call it, one request at a time each. */
#ifndef MMS_DAEMON_STOW_H
#define MMS_DAEMON_STOW_H

#include <stddef.h>

#include "dicom/scu.h" /* enum mms_scu_class: the outcome classes every destination shares */

enum mms_stow_auth { MMS_STOW_AUTH_NONE, MMS_STOW_AUTH_BASIC, MMS_STOW_AUTH_BEARER };

struct mms_stow_peer {
    const char *url;              /* the studies endpoint, http:// or https:// */
    int auth;                     /* enum mms_stow_auth */
    const char *credentials_file; /* basic: "user:password"; bearer: the token (first line) */
    const char *ca_file;          /* PEM of the CAs to trust, or NULL: the system's */
    bool verify;                  /* verify the server's certificate and name */
    unsigned timeout_s;           /* to connect, and the longest stall of a transfer */
    unsigned max_request_mb;      /* the files go in as few requests as keep under this */
};

/* The outcome of one send. */
struct mms_stow_result {
    enum mms_scu_class cls;
    int requests;       /* made */
    long http_status;   /* of the last response, 0 without one */
    double retry_after; /* seconds the server asked to wait (Retry-After), 0 when none */
};

/* POST the n DICOM files as multipart/related; type="application/dicom" bodies to p->url:
 * delivered when every response is 200 (or 202 without a failed instance) and names no
 * failed instance; permanent for 409, other 4xx, and failed instances (the reason from the
 * response: the Failure Reasons of its Failed SOP Sequence, or its text); transient for 408,
 * 429, 5xx, a connection that fails or stalls, a TLS failure, a credentials file that cannot
 * be read. Stops at the first request not delivered. why receives the reason of anything but
 * delivered. Returns 0 (res filled), or MMS_ENOMEM. */
int mms_stow_send(const struct mms_stow_peer *p, const char *const *files, int n,
                  struct mms_stow_result *res, char *why, size_t why_len);

/* libcurl's global set-up, once, before any thread calls mms_stow_send (curl_global_init is
 * not thread-safe in every libcurl). Returns 0 or MMS_EIO. */
int mms_stow_global_init(void);

#endif

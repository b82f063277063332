/* dicom/tls: DICOM TLS contexts (design.md section 9) for the Store SCP and the Store SCU,
 * DCMTK's dcmtls with OpenSSL inside, C outside.
 *
 * A context holds our certificate and key and the certificates we trust, with the BCP 195
 * profile of PS3.15 Annex B.9 and peer verification required: a peer that presents no
 * certificate, or one that does not chain to tls_ca, or an expired one, is refused. The files
 * are PEM. tls_ca is a file (one or more certificates) or a directory prepared with
 * `openssl rehash`.
 *
 * A context is immutable once loaded and counted: the SCP and the sender take a reference for
 * each association, so that a reload (SIGHUP) can put a new context in place while the
 * associations that started with the old one finish with it.
 *
 * Threads: any; mms_tls_ref() and mms_tls_unref() may run on several threads at once. */
#ifndef MMS_DICOM_TLS_H
#define MMS_DICOM_TLS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mms_tls_role {
    MMS_TLS_SERVER, /* the Store SCP: accepts */
    MMS_TLS_CLIENT, /* the Store SCU: requests */
};

struct mms_tls_files {
    const char *cert; /* our certificate (chain), PEM */
    const char *key;  /* its private key, PEM, not encrypted */
    const char *ca;   /* the certificates we trust: a PEM file or a rehashed directory */
};

struct mms_tls;

/* Load a context for role from the files. Returns 0 and *out (one reference), or MMS_EINVAL
 * with why naming the file and what is wrong with it (unreadable, not PEM, an encrypted key,
 * a key that does not match the certificate, our certificate expired or not yet valid, no
 * certificate in tls_ca), or MMS_ENOMEM. */
int mms_tls_load(enum mms_tls_role role, const struct mms_tls_files *files, struct mms_tls **out,
                 char *why, size_t why_len);

/* Another reference to t (returned), or NULL for NULL. */
struct mms_tls *mms_tls_ref(struct mms_tls *t);

/* Drop a reference; the last one frees the context. NULL is ignored. */
void mms_tls_unref(struct mms_tls *t);

/* Our certificate in one line: "subject CN=..., issuer CN=..., serial 1001, valid until
 * 2026-12-07 10:00:00 UTC". Returns the length written (truncated to len - 1). */
size_t mms_tls_describe(const struct mms_tls *t, char *buf, size_t len);

/* Seconds until our certificate expires (negative once it has). */
long long mms_tls_seconds_left(const struct mms_tls *t);

#ifdef __cplusplus
}
#endif

#endif

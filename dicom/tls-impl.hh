/* dicom/: what the Store SCP and SCU need of a TLS context (tls.cc), C++ only. */
#ifndef MMS_DICOM_TLS_IMPL_HH
#define MMS_DICOM_TLS_IMPL_HH

#include <string>

#include <openssl/ssl.h>

#include "dicom/tls.h"

/* A new TLS connection on the socket fd with t's context (the caller owns it: SSL_free, or a
 * DcmTLSConnection takes it), or nullptr with OpenSSL's reason in *why. sni: the peer's host
 * name to send in the handshake, or nullptr (an address is never sent). */
SSL *mms__tls_new_ssl(struct mms_tls *t, int fd, const char *sni, std::string *why);

/* Why a handshake on ssl failed, in a few words: the verification of the peer's certificate
 * ("certificate has expired", "unable to get local issuer certificate"), else OpenSSL's
 * oldest queued error ("wrong version number", "peer did not return a certificate"), else
 * fallback. The error queue of this thread is emptied. */
std::string mms__tls_failure(SSL *ssl, const char *fallback);

/* After a handshake: "TLSv1.3 TLS_AES_256_GCM_SHA384, peer CN=..." (the peer's subject, or
 * "no peer certificate"). */
std::string mms__tls_session(SSL *ssl);

/* The client's handshake on ssl (its socket fd) within timeout_ms in all, however slowly the
 * peer sends: the socket is non-blocking meanwhile and blocking again after. Returns 0, or
 * MMS_ETIMEDOUT or MMS_EDIMSE with the reason in *why (mms__tls_failure()). */
int mms__tls_connect(SSL *ssl, int fd, int timeout_ms, std::string *why);

/* Record in *alert (which must outlive ssl) the description of the last TLS alert the peer
 * sends on ssl ("unknown CA", "certificate expired"): under TLS 1.3 a server refuses our
 * certificate only after the client's handshake is done, and this is how the client hears
 * why. */
void mms__tls_watch_alerts(SSL *ssl, std::string *alert);

#endif

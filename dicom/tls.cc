// dicom: DICOM TLS contexts (tls.h) on DCMTK's DcmTLSTransportLayer.
//
// DCMTK 3.6.7 facts this file relies on:
// - The constructor sets the built-in 2048-bit DH parameters, automatic ECDH curves and
//   DCV_requireCertificate; with a NULL random file and OpenSSL 3, the library seeds itself.
// - DcmTLSTransportLayer::initializeOpenSSL() is not thread safe: it runs once, here.
// - setTLSProfile() only selects the suites; activateCipherSuites() puts them in the context.
// - An encrypted key makes OpenSSL ask on the terminal unless a password is set first: the
//   empty one is set, so such a key fails to load instead of blocking a daemon.
// - DCMTK checks no host name; the peer is whoever holds a certificate that tls_ca trusts.
#include "dicom/tls.h"
#include "dicom/tls-impl.hh"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmtls/tlslayer.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/err.h"

struct mms_tls {
    std::atomic<long> refs{1};
    enum mms_tls_role role;
    std::unique_ptr<DcmTLSTransportLayer> layer;
    X509 *cert = nullptr; // ours, for describe and the expiry check
    ~mms_tls()
    {
        X509_free(cert);
    }
};

namespace
{

std::once_flag openssl_once;

// The oldest error OpenSSL queued, as text ("" when none), and the queue emptied.
std::string
openssl_error()
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

int
fail(char *why, size_t why_len, const char *what, const char *path, const OFCondition &cond)
{
    std::string detail = openssl_error();
    if (detail.empty())
        detail = cond.text();
    return mms_why(why, why_len, MMS_EINVAL, "%s %s: %s", what, path, detail.c_str());
}

// Our certificate, read again with OpenSSL (the layer keeps it inside its SSL_CTX only).
X509 *
read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == nullptr)
        return nullptr;
    X509 *x = PEM_read_X509(f, nullptr, nullptr, nullptr);
    fclose(f);
    return x;
}

// No password is ever asked for: an encrypted key fails to read.
int
no_password(char *, int, int, void *)
{
    return 0;
}

// 1 when the PEM private key in path belongs to cert, 0 when not, -1 when it cannot be read.
int
key_matches(const char *path, X509 *cert)
{
    FILE *f = fopen(path, "r");
    if (f == nullptr)
        return -1;
    EVP_PKEY *key = PEM_read_PrivateKey(f, nullptr, no_password, nullptr);
    fclose(f);
    if (key == nullptr)
        return -1;
    int ok = X509_check_private_key(cert, key);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return ok == 1 ? 1 : 0;
}

} // namespace

extern "C" int
mms_tls_load(enum mms_tls_role role, const struct mms_tls_files *files, struct mms_tls **out,
             char *why, size_t why_len)
{
    *out = nullptr;
    const char *names[3] = {files->cert, files->key, files->ca};
    const char *keys[3] = {"tls_cert", "tls_key", "tls_ca"};
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (names[i] == nullptr || names[i][0] == '\0')
            return mms_why(why, why_len, MMS_EINVAL, "%s is not set", keys[i]);
        if (stat(names[i], &st) != 0) {
            int rc = mms_err_errno();
            return mms_why(why, why_len, MMS_EINVAL, "%s %s: %s", keys[i], names[i],
                           mms_strerror(rc));
        }
    }
    std::call_once(openssl_once, [] { DcmTLSTransportLayer::initializeOpenSSL(); });

    std::unique_ptr<mms_tls> t(new (std::nothrow) mms_tls);
    if (!t)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    t->role = role;
    t->layer.reset(new (std::nothrow) DcmTLSTransportLayer(
        role == MMS_TLS_SERVER ? NET_ACCEPTOR : NET_REQUESTOR, nullptr, OFFalse));
    if (!t->layer || !*t->layer)
        return mms_why(why, why_len, MMS_ENOMEM, "cannot make a TLS context: %s",
                       openssl_error().c_str());
    DcmTLSTransportLayer &L = *t->layer;
    OFCondition c = L.setTLSProfile(TSP_Profile_BCP195);
    if (c.good())
        c = L.activateCipherSuites();
    if (c.bad())
        return mms_why(why, why_len, MMS_EINVAL, "the BCP 195 profile: %s", c.text());
    L.setPrivateKeyPasswd(""); // never a prompt: an encrypted key fails to load
    if ((c = L.setCertificateFile(files->cert, DCF_Filetype_PEM)).bad())
        return fail(why, why_len, "tls_cert", files->cert, c);
    // the key, checked here first for a message that names the problem
    if ((t->cert = read_cert(files->cert)) == nullptr)
        return mms_why(why, why_len, MMS_EINVAL, "tls_cert %s: %s", files->cert,
                       openssl_error().c_str());
    int match = key_matches(files->key, t->cert);
    if (match < 0)
        return mms_why(why, why_len, MMS_EINVAL,
                       "tls_key %s: not a PEM private key, or an encrypted one (%s)", files->key,
                       openssl_error().c_str());
    if (match == 0)
        return mms_why(why, why_len, MMS_EINVAL, "tls_key %s does not match tls_cert %s",
                       files->key, files->cert);
    if ((c = L.setPrivateKeyFile(files->key, DCF_Filetype_PEM)).bad())
        return fail(why, why_len, "tls_key", files->key, c);
    if (!L.checkPrivateKeyMatchesCertificate())
        return mms_why(why, why_len, MMS_EINVAL, "tls_key %s does not match tls_cert %s",
                       files->key, files->cert);
    struct stat st;
    bool dir = stat(files->ca, &st) == 0 && S_ISDIR(st.st_mode);
    c = dir ? L.addTrustedCertificateDir(files->ca, DCF_Filetype_PEM)
            : L.addTrustedCertificateFile(files->ca, DCF_Filetype_PEM);
    if (c.bad())
        return fail(why, why_len, "tls_ca", files->ca, c);
    L.setCertificateVerification(DCV_requireCertificate);

    if (X509_cmp_current_time(X509_get0_notBefore(t->cert)) > 0)
        return mms_why(why, why_len, MMS_EINVAL, "tls_cert %s is not valid yet", files->cert);
    if (X509_cmp_current_time(X509_get0_notAfter(t->cert)) < 0)
        return mms_why(why, why_len, MMS_EINVAL, "tls_cert %s has expired", files->cert);
    *out = t.release();
    return 0;
}

extern "C" struct mms_tls *
mms_tls_ref(struct mms_tls *t)
{
    if (t != nullptr)
        t->refs.fetch_add(1, std::memory_order_relaxed);
    return t;
}

extern "C" void
mms_tls_unref(struct mms_tls *t)
{
    if (t != nullptr && t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
        delete t;
}

extern "C" long long
mms_tls_seconds_left(const struct mms_tls *t)
{
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(t->cert)))
        return 0;
    return (long long)days * 86400 + secs;
}

extern "C" size_t
mms_tls_describe(const struct mms_tls *t, char *buf, size_t len)
{
    char subject[256] = "", issuer[256] = "", serial[80] = "?", until[32] = "?";
    X509_NAME_oneline(X509_get_subject_name(t->cert), subject, sizeof subject);
    X509_NAME_oneline(X509_get_issuer_name(t->cert), issuer, sizeof issuer);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(t->cert), nullptr);
    char *hex = bn != nullptr ? BN_bn2hex(bn) : nullptr;
    if (hex != nullptr)
        snprintf(serial, sizeof serial, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(t->cert), &tm) == 1)
        strftime(until, sizeof until, "%Y-%m-%d %H:%M:%S UTC", &tm);
    int n = snprintf(buf, len, "subject %s, issuer %s, serial %s, valid until %s", subject, issuer,
                     serial, until);
    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len > 0 ? len - 1 : 0;
}

SSL *
mms__tls_new_ssl(struct mms_tls *t, int fd, const char *sni, std::string *why)
{
    SSL_CTX *ctx = (SSL_CTX *)t->layer->getNativeHandle();
    SSL *ssl = ctx != nullptr ? SSL_new(ctx) : nullptr;
    if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1 ||
        (sni != nullptr && SSL_set_tlsext_host_name(ssl, sni) != 1)) {
        *why = openssl_error();
        if (why->empty())
            *why = "cannot make a TLS connection";
        SSL_free(ssl);
        return nullptr;
    }
    return ssl;
}

std::string
mms__tls_failure(SSL *ssl, const char *fallback)
{
    long v = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
    std::string detail = openssl_error();
    if (v != X509_V_OK)
        return std::string("the peer's certificate: ") + X509_verify_cert_error_string(v);
    if (!detail.empty()) {
        // "error:0A00010B:SSL routines::wrong version number": the words after the last colon
        size_t colon = detail.rfind(':');
        return colon != std::string::npos ? detail.substr(colon + 1) : detail;
    }
    return fallback;
}

std::string
mms__tls_session(SSL *ssl)
{
    std::string s = std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (peer == nullptr)
        return s + ", no peer certificate";
    char subject[256] = "";
    X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
    X509_free(peer);
    return s + ", peer " + subject;
}

int
mms__tls_connect(SSL *ssl, int fd, int timeout_ms, std::string *why)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        *why = "cannot make the socket non-blocking";
        return MMS_EDIMSE;
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = 0;
    ERR_clear_error(); // what an earlier connection of this thread left
    for (;;) {
        int r = SSL_connect(ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            *why = mms__tls_failure(ssl, "the handshake failed");
            rc = MMS_EDIMSE;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        long long left = timeout_ms - ((long long)(t.tv_sec - t0.tv_sec) * 1000 +
                                       (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {fd, (short)(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            *why = "no complete handshake within timeout_s";
            rc = MMS_ETIMEDOUT;
            break;
        }
    }
    fcntl(fd, F_SETFL, fl);
    return rc;
}

namespace
{

int
alert_slot()
{
    static const int slot = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return slot;
}

void
on_info(const SSL *ssl, int where, int ret)
{
    if ((where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT) {
        auto *alert = static_cast<std::string *>(SSL_get_ex_data(ssl, alert_slot()));
        if (alert != nullptr)
            *alert = SSL_alert_desc_string_long(ret);
    }
}

} // namespace

void
mms__tls_watch_alerts(SSL *ssl, std::string *alert)
{
    if (alert_slot() >= 0 && SSL_set_ex_data(ssl, alert_slot(), alert) == 1)
        SSL_set_info_callback(ssl, on_info);
}

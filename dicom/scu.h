/* dicom/scu: the Store SCU (design.md section 8), DCMTK inside, C outside.
 *
 * mms_scu_store() sends a list of DICOM files to one peer over one association and says, per
 * file and overall, whether each was delivered, failed in a way worth retrying (transient) or
 * failed for good (permanent), with the peer's own words in the reason.
 *
 * Classification (design.md section 8):
 *   delivered  status 0x0000, or the warnings 0xB000, 0xB006, 0xB007.
 *   transient  connection refused or reset, unknown host, timeouts (connect, ACSE, DIMSE),
 *              A-ASSOCIATE-RJ with result rejected-transient, status 0xA7xx, A-ABORT by the
 *              peer, the association lost while a file was on its way.
 *   permanent  A-ASSOCIATE-RJ with result rejected-permanent, no presentation context
 *              accepted for the file's SOP class, status 0x0122, 0xA9xx, 0xCxxx and every
 *              other status, a file that cannot be read or converted to an accepted transfer
 *              syntax, a malformed answer from the peer.
 * A file that is never sent because the association failed or ended first gets the class
 * and reason of that failure.
 *
 * TLS (design.md section 9): with mms_scu_peer.tls the association runs over DICOM TLS with
 * that context (dicom/tls.h): our certificate is presented, the peer's must chain to tls_ca
 * (no host name check, as DICOM TLS peers are identified by their certificate), and the host
 * name is sent for SNI. A failed handshake is transient, its reason names the certificate
 * problem ("certificate has expired", "unable to get local issuer certificate"): a renewed
 * certificate or CA, loaded by a reload, lets a retry succeed.
 *
 * Threads: any thread may call mms_scu_store(); several calls may run at once, each with its
 * own association. Process-wide DCMTK state it touches: the TCP connect timeout
 * (dcmConnectionTimeout) is one value for the process and is set from timeout_s on every call,
 * so concurrent calls with different timeout_s share the last one for the connect step only;
 * DCMTK ignores SIGPIPE from its first network use; the RLE decoder is registered once. */
#ifndef MMS_DICOM_SCU_H
#define MMS_DICOM_SCU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

enum mms_scu_class {
    MMS_SCU_DELIVERED = 0, /* the peer answered success or an accepted warning */
    MMS_SCU_TRANSIENT = 1, /* not delivered; retry later */
    MMS_SCU_PERMANENT = 2, /* not delivered; retrying will not help */
};

struct mms_scu_peer {
    const char *host;       /* IPv4 address or host name; "host:port" must fit 63 characters
                               (DCMTK's presentation address); IPv6 literals: MMS_ENOTSUP */
    unsigned port;          /* 1..65535 */
    const char *called_ae;  /* the peer's AE title */
    const char *calling_ae; /* ours */
    unsigned timeout_s;     /* TCP connect, ACSE, DIMSE and socket timeout, 1..86400 */
    unsigned max_pdu;       /* our maximum receive PDU, 4096..131072; 0: 65536 */
    struct mms_tls *tls;    /* DICOM TLS with this context (borrowed for the call), or NULL */
};

/* The outcome for one file, in the order of paths. */
struct mms_scu_file {
    enum mms_scu_class cls;
    int rc;                   /* 0 delivered, else MMS_ENOENT and other -errno (the file),
                                 MMS_EDICOM (unreadable or not convertible), MMS_ECONNREFUSED,
                                 MMS_ETIMEDOUT or MMS_EDIMSE (the peer) */
    bool sent;                /* its C-STORE-RQ went out in this call */
    bool has_status;          /* the peer answered with a C-STORE-RSP; status is valid */
    uint16_t status;          /* that response's status */
    char sop_class[65];       /* from the file meta information ("" when unreadable) */
    char sop_instance[65];    /* idem */
    char transfer_syntax[65]; /* the syntax it was sent in ("" when not sent) */
    char reason[512];         /* "" when delivered with 0x0000; otherwise what happened, with
                                 the status in hex and the peer's Error Comment, or the
                                 A-ASSOCIATE-RJ result, source and reason */
};

struct mms_scu_result {
    enum mms_scu_class cls; /* delivered when every file was; else transient when any file
                               failed transiently (something is worth retrying); else
                               permanent */
    int n_delivered, n_transient, n_permanent;
    bool associated; /* the peer accepted the association */
    bool released;   /* and it ended with A-RELEASE-RP (not an abort) */
    int n_files;
    struct mms_scu_file *files; /* n_files entries; free with mms_scu_result_fini() */
};

/* Send the n DICOM files at paths (each with file meta information) to peer over one
 * association. Presentation contexts are proposed per SOP class of the files (from their meta
 * information): Explicit VR Little Endian and Implicit VR Little Endian as two contexts, and a
 * third with a file's own transfer syntax when it is neither. Each file goes out in its own
 * syntax when accepted, else in Explicit, else in Implicit VR Little Endian, converted by DCMTK
 * (compressed files need a decoder: RLE is built in; JPEG, JPEG-LS and JPEG 2000 are not,
 * such files are sent only where their own syntax is accepted). A file is sent at most once
 * per call: a path naming the same file as an earlier one, or a different file with an earlier
 * file's SOP Instance UID, is not sent again (the first gets the outcome, the later one
 * either that outcome or a permanent failure). Nothing is retried here. The association is
 * released at the end, or aborted after a failure that leaves it in doubt.
 * Ownership: paths and peer are borrowed. On return 0 or a per-file failure, *res is new
 * (free with mms_scu_result_fini()); on the setup failures listed last it is untouched.
 * why (why_len bytes, may be NULL) receives the reason of the first file not delivered.
 * Returns 0 (every file delivered, res->cls == MMS_SCU_DELIVERED), the rc of the first file
 * not delivered (see struct mms_scu_file), MMS_EINVAL (no peer, paths, or res; n < 1; a bad
 * AE title, port, timeout, max_pdu or host; more than 128 presentation contexts needed),
 * MMS_ENOTSUP (an IPv6 literal host), MMS_ENOMEM, MMS_EDICOM (an unexpected exception
 * inside the toolkit).
 * Threads: any (see the top of this file). Blocks for up to a few timeout_s per file. */
int mms_scu_store(const struct mms_scu_peer *peer, const char *const *paths, int n,
                  struct mms_scu_result *res, char *why, size_t why_len);

/* Free what mms_scu_store() put into res and zero it. NULL, or a zeroed res, is a no-op. */
void mms_scu_result_fini(struct mms_scu_result *res);

/* "delivered", "transient", "permanent", or "?" for any other value. */
const char *mms_scu_class_name(enum mms_scu_class cls);

#ifdef __cplusplus
}
#endif
#endif

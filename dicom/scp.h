/* dicom/scp: the Store SCP (design.md sections 1, 3, 9), DCMTK inside, C outside.
 *
 * One listening thread and up to max_associations association threads, all owned by the
 * struct mms_scp (never the libuv loop). Each C-STORE is received bit-preserving (the data
 * set as it arrived, no transcoding; a new file meta header) into a file in tmp_dir, the file
 * is fsynced, and on_store decides the status that is answered. The SCP never builds a path
 * from received text: the file name in tmp_dir is random.
 * With a TLS context (design.md section 9) every connection is DICOM TLS: a host outside
 * allowed_hosts is closed before the handshake; a peer without a certificate that tls_ca
 * trusts, or with an expired one, or speaking plain DICOM, is closed after it and counted
 * under "tls". The handshake and the whole A-ASSOCIATE-RQ must come within assoc_timeout_s.
 * Threads: mms_scp_start/stop from one thread; on_store runs on association threads, several
 * at once. */
#ifndef MMS_DICOM_SCP_H
#define MMS_DICOM_SCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dicom/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One received instance. */
struct mms_scp_store {
    const char *path;         /* the fsynced file in tmp_dir; on_store owns it (rename or unlink) */
    const char *calling_ae;   /* the peer's AE title */
    const char *peer;         /* the peer's IP address, text */
    const char *sop_class;    /* Affected SOP Class UID of the request */
    const char *sop_instance; /* Affected SOP Instance UID of the request */
    char *comment;            /* out: on a refusal, the reason for the peer (Error Comment
                                 (0000,0902), cut to 64 characters); starts as "" */
    size_t comment_len;
};

/* Decide the answer to one C-STORE: 0x0000 success, 0xA700 out of resources (the sender
 * retries), 0xA900 / 0xC000 refused (the reason is logged by the callee and may be put in
 * st->comment). Threads: any. */
typedef uint16_t (*mms_scp_store_fn)(void *ctx, const struct mms_scp_store *st);

struct mms_scp_opts {
    const char *ae_title;               /* our AE title; the called AE title must equal it */
    const char *bind;                   /* listen address ("0.0.0.0", "127.0.0.1", "::") */
    unsigned port;                      /* 0: any free port (see mms_scp_port) */
    const char *allowed_calling_aes;    /* comma list; "any": any; "" or NULL: none */
    const char *allowed_hosts;          /* comma list of IPv4/IPv6 CIDR blocks; "any": any;
                                           "" or NULL: none */
    unsigned max_associations;          /* concurrent associations; more are rejected (transient) */
    unsigned max_associations_per_host; /* concurrent associations of one address, and its
                                           connections still sending their request (the
                                           oldest is closed); 0: no per-host limit */
    unsigned assoc_timeout_s;           /* 1..300: a connection's whole A-ASSOCIATE-RQ within */
    unsigned max_pdu;                   /* bytes, 4096..131072 */
    unsigned timeout_s;                 /* ACSE, DIMSE and network timeout */
    const char *tmp_dir;                /* where instances are received */
    const char *space_dir;              /* the file system whose free space is checked */
    uint64_t min_free_bytes;            /* below it every C-STORE is answered 0xA700 (the data
                                           set is read off the wire and dropped, never stored) */
    bool accept_all;                    /* accept_sop_classes = all: every storage SOP class */
    struct mms_tls *tls;                /* DICOM TLS with this server context (the SCP takes
                                           its own reference), or NULL: plain TCP */
    mms_scp_store_fn on_store;
    void *ctx;
};

struct mms_scp;

/* Check the options, bind and listen (so that "address in use" is reported here), and start
 * the listening thread. why receives the reason on failure.
 * Ownership: *out is new; stop and free it with mms_scp_stop().
 * Returns 0, MMS_EINVAL (a bad option: CIDR, AE title, sizes), MMS_EDIMSE (cannot listen),
 * MMS_ENOMEM. */
int mms_scp_start(const struct mms_scp_opts *o, struct mms_scp **out, char *why, size_t why_len);

/* Why an association or a connection was refused: allowed_hosts, the called AE title,
 * allowed_calling_aes, max_associations_per_host (also a pending connection closed for a
 * newer one), max_associations, assoc_timeout_s, anything else that is not DICOM's upper
 * layer protocol as we take it (not an A-ASSOCIATE-RQ, no acceptable context), and a failed
 * TLS handshake. */
enum mms_scp_refusal {
    MMS_SCP_REFUSED_HOST,
    MMS_SCP_REFUSED_CALLED_AE,
    MMS_SCP_REFUSED_CALLING_AE,
    MMS_SCP_REFUSED_PER_HOST_LIMIT,
    MMS_SCP_REFUSED_MAX_ASSOCIATIONS,
    MMS_SCP_REFUSED_TIMEOUT,
    MMS_SCP_REFUSED_PROTOCOL,
    MMS_SCP_REFUSED_TLS,
    MMS_SCP_REFUSED_N
};

/* How many were refused for r since start. Threads: any. */
uint64_t mms_scp_refused(const struct mms_scp *s, enum mms_scp_refusal r);

/* The metrics label of r ("host", "called_ae", "calling_ae", "per_host_limit",
 * "max_associations", "timeout", "protocol", "tls"), NULL out of range. */
const char *mms_scp_refusal_name(enum mms_scp_refusal r);

/* Serve new connections with the server context t from now on (a certificate renewed by a
 * reload); connections already past their handshake keep the context they began with. The
 * SCP takes its own reference. Returns 0, or MMS_EINVAL when s was started without TLS or t
 * is NULL (turning TLS on or off needs a new start). Threads: any. */
int mms_scp_set_tls(struct mms_scp *s, struct mms_tls *t);

/* The port actually listened on (useful with port 0). */
unsigned mms_scp_port(const struct mms_scp *s);

/* Connections being served now: reading their request, in an association, or closing. A
 * connection is counted from its accept until its thread has let go of everything. Threads:
 * any. */
unsigned mms_scp_connections(const struct mms_scp *s);

/* Stop listening; end every association with an A-ABORT after the message in progress
 * (connections that sent no request yet are closed; a peer stalled in the middle of a
 * message can take up to timeout_s); join every thread, and free s. NULL is a no-op. */
void mms_scp_stop(struct mms_scp *s);

/* Parse a comma list of CIDR blocks ("10.0.0.0/8, ::1/128, 192.168.1.7") and test addr
 * (text) against it. Returns 1 (inside), 0 (outside), MMS_EINVAL (the list or addr is not
 * valid). An empty list contains no address; "any" contains every address. Threads: any. */
int mms_cidr_match(const char *list, const char *addr);

#ifdef __cplusplus
}
#endif
#endif

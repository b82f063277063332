// dicom: the Store SCU (scu.h) on DCMTK's dcmnet. One call: read the meta information of every
// file, propose the presentation contexts, request one association, send each file once with
// DIMSE_storeUser, classify every answer, release or abort. Threads: see scu.h; nothing here
// outlives the call.
//
// Why the ASC_* and DIMSE_* calls and not DcmSCU: in DCMTK 3.6.7 DcmSCU::sendSTORERequest
// deletes the status detail of the C-STORE-RSP (the peer's Error Comment) and
// DcmSCU::negotiateAssociation keeps the A-ASSOCIATE-RJ result, source and reason in its
// private parameters and its debug log only; both belong in our reasons.
//
// DCMTK 3.6.7 facts this file relies on:
// - The called presentation address is "host:port" in a 64-byte field, parsed with
//   sscanf("%[^:]:%d") into a 128-byte buffer: an IPv6 literal cannot be written there, and
//   longer host names are refused here before they reach it.
// - The TCP connect timeout is the process-wide dcmConnectionTimeout (-1, blocking, unless
//   set); DcmSCU sets it the same way. Host names are resolved without a timeout.
// - New sockets get SO_SNDTIMEO/SO_RCVTIMEO from the process-wide dcmSocketSendTimeout and
//   dcmSocketReceiveTimeout (60 s); they are set to timeout_s on our socket once connected,
//   not through those globals, which the Store SCP in the same process reads too.
// - With TLS, DUL asks the network's transport layer for a connection on the new socket and
//   runs clientSideHandshake() on it; a failed handshake comes back from
//   ASC_requestAssociation as a dcmtls condition ("TLS error: certificate verify failed")
//   after the connection, and with it the SSL, was deleted. Under TLS 1.3 a peer that refuses
//   our certificate says so after the handshake: we see the connection closed or reset.
// - ASC_abortAssociation sends the A-ABORT and then waits for the peer to close, up to the
//   network timeout; shutting the reading side first makes it return at once.
#include "dicom/scu.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmlayer.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmtls/tlstrans.h>

#include "common/err.h"
#include "common/log.h"
#include "dicom/text-impl.hh"
#include "dicom/tls-impl.hh"

void mms__route_dcmtk_log(); // scp.cc

namespace
{

// What happened to one step, before it is written into a struct mms_scu_file.
struct outcome {
    mms_scu_class cls = MMS_SCU_DELIVERED;
    int rc = 0;
    std::string reason;
};

// One file of the call.
struct item {
    std::string path;
    std::string sop_class, sop_instance, ts; // from the meta information
    E_TransferSyntax xfer = EXS_Unknown;
    int same_as = -1; // index of the earlier item it duplicates, or -1
    bool readable = false;
};

// One proposed presentation context.
struct context {
    T_ASC_PresentationContextID id;
    std::string sop_class, ts;
    bool accepted = false;
    int result = 0; // T_ASC_P_ResultReason of the answer
};

const size_t max_contexts = 128; // odd IDs 1..255

// An AE title as PS3.5 allows it: 1 to 16 characters of the default repertoire without
// backslash or control characters, not only spaces.
bool
ae_valid(const char *ae)
{
    if (ae == nullptr)
        return false;
    return mms__ae_valid(mms__trim(ae));
}

std::string
hex4(unsigned v)
{
    char b[8];
    std::snprintf(b, sizeof b, "0x%04X", v & 0xFFFF);
    return b;
}

std::string
addr_of(const mms_scu_peer *p)
{
    return mms__trim(p->called_ae) + "@" + p->host + ":" + std::to_string(p->port);
}

// The classification of a C-STORE-RSP status (design.md section 8).
mms_scu_class
classify_status(Uint16 st)
{
    if (st == STATUS_Success || st == 0xB000 || st == 0xB006 || st == 0xB007)
        return MMS_SCU_DELIVERED;
    if ((st & 0xFF00) == 0xA700)
        return MMS_SCU_TRANSIENT;
    return MMS_SCU_PERMANENT;
}

// "status 0xA700 (Refused: OutOfResources), Error Comment 'disk full'"
std::string
status_text(Uint16 st, DcmDataset *detail)
{
    std::string s = "status " + hex4(st) + " (" + DU_cstoreStatusString(st) + ")";
    OFString comment;
    if (detail != nullptr && detail->findAndGetOFString(DCM_ErrorComment, comment).good() &&
        !comment.empty())
        s += ", Error Comment '" + mms__printable(comment.c_str()) + "'";
    OFString id;
    if (detail != nullptr && detail->findAndGetOFString(DCM_ErrorID, id).good() && !id.empty())
        s += ", Error ID " + mms__printable(id.c_str());
    return s;
}

const char *
reject_result_name(unsigned r)
{
    return r == 1 ? "rejected-permanent" : r == 2 ? "rejected-transient" : "unknown";
}

const char *
reject_source_name(unsigned s)
{
    switch (s) {
    case 1:
        return "service-user";
    case 2:
        return "service-provider (ACSE related)";
    case 3:
        return "service-provider (presentation related)";
    default:
        return "unknown";
    }
}

// PS3.8 table 9-21: the reason (diagnostic) depends on the source.
const char *
reject_reason_name(unsigned source, unsigned reason)
{
    if (source == 1 && reason == 1)
        return "no-reason-given";
    if (source == 1 && reason == 2)
        return "application-context-name-not-supported";
    if (source == 1 && reason == 3)
        return "calling-AE-title-not-recognized";
    if (source == 1 && reason == 7)
        return "called-AE-title-not-recognized";
    if (source == 2 && reason == 1)
        return "no-reason-given";
    if (source == 2 && reason == 2)
        return "protocol-version-not-supported";
    if (source == 3 && reason == 1)
        return "temporary-congestion";
    if (source == 3 && reason == 2)
        return "local-limit-exceeded";
    return "reserved";
}

const char *
context_result_name(int r)
{
    switch (r) {
    case ASC_P_ACCEPTANCE:
        return "acceptance";
    case ASC_P_USERREJECTION:
        return "user-rejection";
    case ASC_P_NOREASON:
        return "no-reason (provider rejection)";
    case ASC_P_ABSTRACTSYNTAXNOTSUPPORTED:
        return "abstract-syntax-not-supported";
    case ASC_P_TRANSFERSYNTAXESNOTSUPPORTED:
        return "transfer-syntaxes-not-supported";
    default:
        return "no answer";
    }
}

std::string
uid_name(const std::string &uid)
{
    return dcmFindNameOfUID(uid.c_str(), "unknown UID");
}

// The socket of a transport connection. DcmTransportConnection::getSocket() is protected in
// DCMTK 3.6.7 and nothing public gives the descriptor of an association; a pointer to that
// member, formed in a derived class as [class.protected] allows, reads it.
struct socket_of : DcmTransportConnection {
    static DcmNativeSocketType
    get(DcmTransportConnection *c)
    {
        return (c->*(&socket_of::getSocket))();
    }
};

bool
text_has(const OFCondition &c, const char *needle)
{
    return std::strstr(c.text(), needle) != nullptr;
}

// The classification of a failed ASC_requestAssociation.
outcome
association_failure(const OFCondition &cond, T_ASC_Parameters *params, const std::string &peer)
{
    outcome o;
    o.rc = MMS_EDIMSE;
    if (cond == DUL_ASSOCIATIONREJECTED) {
        T_ASC_RejectParameters rej;
        ASC_getRejectParameters(params, &rej);
        unsigned result = (unsigned)rej.result, source = (unsigned)rej.source;
        unsigned reason = (unsigned)rej.reason & 0xFF;
        o.cls = result == 2 ? MMS_SCU_TRANSIENT : MMS_SCU_PERMANENT;
        o.reason = "A-ASSOCIATE-RJ from " + peer + ": result " + std::to_string(result) + " (" +
                   reject_result_name(result) + "), source " + std::to_string(source) + " (" +
                   reject_source_name(source) + "), reason " + std::to_string(reason) + " (" +
                   reject_reason_name(source, reason) + ")";
        return o;
    }
    o.cls = MMS_SCU_TRANSIENT;
    if (cond == DUL_PEERABORTEDASSOCIATION) {
        o.reason = "association request to " + peer + " aborted by the peer (A-ABORT)";
    } else if (cond == DUL_READTIMEOUT) {
        o.rc = MMS_ETIMEDOUT;
        o.reason = "association request to " + peer + ": no answer within timeout_s";
    } else if (cond.module() == OFM_dcmnet &&
               (cond.code() == DULC_TCPINITERROR || cond.code() == DULC_UNKNOWNHOST)) {
        if (text_has(cond, "(Timeout)"))
            o.rc = MMS_ETIMEDOUT;
        else if (text_has(cond, "refused"))
            o.rc = MMS_ECONNREFUSED;
        o.reason = "cannot connect to " + peer + ": " + cond.text();
    } else if (cond == DUL_NETWORKCLOSED ||
               (cond.module() == OFM_dcmnet && cond.code() == DULC_TCPIOERROR)) {
        o.reason =
            "association request to " + peer + ": connection closed or reset: " + cond.text();
    } else if (cond.module() == OFM_dcmtls) {
        // a certificate renewed or trusted later, then a reload, lets the retry succeed
        o.reason = "TLS handshake with " + peer + " failed: " + cond.text();
    } else {
        // an answer that is not a valid A-ASSOCIATE-AC/RJ: not a DICOM peer, or a broken one
        o.cls = MMS_SCU_PERMANENT;
        o.reason = "association request to " + peer + " failed: " + cond.text();
    }
    return o;
}

// The classification of a failed DIMSE_storeUser (no C-STORE-RSP came back).
outcome
dimse_failure(const OFCondition &cond)
{
    outcome o;
    o.rc = MMS_EDIMSE;
    o.cls = MMS_SCU_TRANSIENT;
    if (cond == DIMSE_NODATAAVAILABLE || cond == DUL_READTIMEOUT) {
        o.rc = MMS_ETIMEDOUT;
        o.reason = "no C-STORE-RSP within timeout_s";
    } else if (cond == DUL_PEERABORTEDASSOCIATION) {
        o.reason = "association aborted by the peer (A-ABORT)";
    } else if (cond == DUL_PEERREQUESTEDRELEASE) {
        o.reason = "the peer released the association before answering";
    } else if (cond == DUL_NETWORKCLOSED || cond == DIMSE_SENDFAILED ||
               cond == DIMSE_READPDVFAILED || cond == DIMSE_RECEIVEFAILED ||
               (cond.module() == OFM_dcmnet && cond.code() == DULC_TCPIOERROR)) {
        o.reason = std::string("network failure: ") + cond.text();
    } else {
        // a malformed or unexpected answer: the peer's defect, not the network's
        o.cls = MMS_SCU_PERMANENT;
        o.reason = std::string("DIMSE failure: ") + cond.text();
    }
    return o;
}

void
copy_uid(char *to, size_t len, const std::string &from)
{
    std::snprintf(to, len, "%s", from.c_str());
}

void
set_file(mms_scu_file *f, const outcome &o)
{
    f->cls = o.cls;
    f->rc = o.rc;
    std::snprintf(f->reason, sizeof f->reason, "%s", o.reason.c_str());
}

// The meta information of one file: SOP class, instance, transfer syntax.
outcome
read_meta(item *it)
{
    outcome o;
    o.cls = MMS_SCU_PERMANENT;
    struct stat sb;
    if (stat(it->path.c_str(), &sb) != 0) {
        o.rc = mms_err_errno();
        o.reason = it->path + ": " + mms_strerror(o.rc);
        return o;
    }
    if (!S_ISREG(sb.st_mode)) {
        o.rc = MMS_EDICOM;
        o.reason = it->path + ": not a regular file";
        return o;
    }
    DcmFileFormat ff;
    OFCondition cond =
        ff.loadFile(it->path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_metaOnly);
    OFString cls, inst, ts;
    DcmMetaInfo *meta = ff.getMetaInfo();
    if (cond.good() && meta != nullptr) {
        meta->findAndGetOFString(DCM_MediaStorageSOPClassUID, cls);
        meta->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, inst);
        meta->findAndGetOFString(DCM_TransferSyntaxUID, ts);
    }
    it->sop_class = mms__trim(cls.c_str());
    it->sop_instance = mms__trim(inst.c_str());
    it->ts = mms__trim(ts.c_str());
    if (cond.bad()) {
        o.rc = MMS_EDICOM;
        o.reason = it->path + ": cannot read the file meta information: " + cond.text();
    } else if (it->sop_class.empty() || it->sop_instance.empty() || it->ts.empty() ||
               it->sop_class.size() > 64 || it->sop_instance.size() > 64 || it->ts.size() > 64) {
        o.rc = MMS_EDICOM;
        o.reason = it->path + ": the file meta information lacks a valid (0002,0002), " +
                   "(0002,0003) or (0002,0010)";
    } else if ((it->xfer = DcmXfer(it->ts.c_str()).getXfer()) == EXS_Unknown) {
        o.rc = MMS_EDICOM;
        o.reason = it->path + ": transfer syntax " + mms__printable(it->ts.c_str()) +
                   " is not known to DCMTK";
    } else {
        it->readable = true;
        return outcome();
    }
    return o;
}

// The contexts to propose: per SOP class, Explicit and Implicit VR Little Endian, then each
// other transfer syntax of a file of that class.
std::vector<context>
plan_contexts(const std::vector<item> &items)
{
    std::vector<context> ctx;
    auto has = [&ctx](const std::string &cls, const std::string &ts) {
        for (const context &c : ctx)
            if (c.sop_class == cls && c.ts == ts)
                return true;
        return false;
    };
    auto add = [&ctx, &has](const std::string &cls, const std::string &ts) {
        if (!has(cls, ts))
            ctx.push_back(
                context{(T_ASC_PresentationContextID)(2 * ctx.size() + 1), cls, ts, false, -1});
    };
    for (const item &it : items) {
        if (!it.readable || it.same_as >= 0)
            continue;
        add(it.sop_class, UID_LittleEndianExplicitTransferSyntax);
        add(it.sop_class, UID_LittleEndianImplicitTransferSyntax);
        add(it.sop_class, it.ts);
    }
    return ctx;
}

// The accepted context for a file: its own syntax, else Explicit, else Implicit VR LE.
const context *
pick_context(const std::vector<context> &ctx, const item &it)
{
    const char *order[] = {it.ts.c_str(), UID_LittleEndianExplicitTransferSyntax,
                           UID_LittleEndianImplicitTransferSyntax};
    for (const char *ts : order)
        for (const context &c : ctx)
            if (c.accepted && c.sop_class == it.sop_class && c.ts == ts)
                return &c;
    return nullptr;
}

// Why no context could carry a file: the answers to the contexts of its SOP class.
std::string
no_context_reason(const std::vector<context> &ctx, const item &it, const std::string &peer)
{
    std::string s = "no presentation context accepted by " + peer + " for SOP class " +
                    it.sop_class + " (" + uid_name(it.sop_class) + ")";
    bool other = false;
    for (const context &c : ctx)
        if (c.sop_class == it.sop_class) {
            s += std::string(other ? ", " : ": ") + uid_name(c.ts) + " " +
                 context_result_name(c.result);
            other = true;
        }
    return s;
}

// A client TLS connection: the socket timeouts of the call (DcmTCPConnection's constructor
// sets DCMTK's process-wide 60 s), the handshake within timeout_s in all, and why it failed
// kept (the SSL goes with the connection).
class client_conn : public DcmTLSConnection
{
  public:
    client_conn(DcmNativeSocketType fd, SSL *ssl, int timeout_s, std::string *failure)
        : DcmTLSConnection(fd, ssl), fd_(fd), ssl_(ssl), timeout_s_(timeout_s), failure_(failure)
    {
        struct timeval tv = {(time_t)timeout_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    OFCondition
    clientSideHandshake() override
    {
        if (mms__tls_connect(ssl_, fd_, timeout_s_ * 1000, failure_) == 0)
            return EC_Normal;
        return makeOFCondition(OFM_dcmtls, 0x7f00, OF_error, "TLS handshake failed");
    }

  private:
    int fd_;
    SSL *ssl_;
    int timeout_s_;
    std::string *failure_;
};

// The transport layer of one association over TLS: connections with the context of
// mms_scu_peer.tls and the peer's host name sent for SNI; the alerts the peer sends kept.
class client_layer : public DcmTransportLayer
{
  public:
    DcmTransportConnection *
    createConnection(DcmNativeSocketType fd, OFBool secure) override
    {
        if (!secure || tls == nullptr)
            return DcmTransportLayer::createConnection(fd, secure);
        struct in_addr a;
        SSL *ssl = mms__tls_new_ssl(
            tls, fd, inet_pton(AF_INET, host.c_str(), &a) == 1 ? nullptr : host.c_str(), &failure);
        if (ssl == nullptr)
            return nullptr;
        mms__tls_watch_alerts(ssl, &alert);
        client_conn *c = new (std::nothrow) client_conn(fd, ssl, timeout_s, &failure);
        if (c == nullptr)
            SSL_free(ssl);
        return c;
    }
    mms_tls *tls = nullptr; // borrowed from the peer for the call
    std::string host;
    int timeout_s = 30;
    std::string failure; // why the handshake failed, "" until it did
    std::string alert;   // the last TLS alert from the peer, "" until one came
};

class association
{
  public:
    ~association()
    {
        // a failed request may leave an association without a connection; either way it
        // owns the parameters once it exists
        if (assoc_ != nullptr) {
            ASC_destroyAssociation(&assoc_);
        } else if (params_ != nullptr) {
            ASC_destroyAssociationParameters(&params_);
        }
        if (net_ != nullptr)
            ASC_dropNetwork(&net_);
    }

    // Propose ctx and request the association. On failure *o says why.
    bool
    open(const mms_scu_peer *p, std::vector<context> &ctx, outcome *o)
    {
        peer_ = addr_of(p);
        timeout_s_ = (int)p->timeout_s;
        OFCondition cond = ASC_initializeNetwork(NET_REQUESTOR, 0, timeout_s_, &net_);
        if (cond.good())
            cond = ASC_createAssociationParameters(&params_,
                                                   (long)(p->max_pdu != 0 ? p->max_pdu : 65536));
        if (cond.good() && p->tls != nullptr) {
            layer_.tls = p->tls;
            layer_.host = p->host;
            layer_.timeout_s = timeout_s_;
            cond = ASC_setTransportLayer(net_, &layer_, 0);
            if (cond.good())
                cond = ASC_setTransportLayerType(params_, OFTrue);
        }
        if (cond.bad()) {
            o->cls = MMS_SCU_TRANSIENT;
            o->rc = cond == EC_MemoryExhausted ? MMS_ENOMEM : MMS_EDICOM;
            o->reason = std::string("cannot set up the association: ") + cond.text();
            return false;
        }
        std::string calling = mms__trim(p->calling_ae), called = mms__trim(p->called_ae);
        ASC_setAPTitles(params_, calling.c_str(), called.c_str(), nullptr);
        char local[256] = "localhost";
        gethostname(local, sizeof local - 1);
        local[sizeof local - 1] = '\0';
        std::string remote = std::string(p->host) + ":" + std::to_string(p->port);
        ASC_setPresentationAddresses(params_, local, remote.c_str());
        for (const context &c : ctx) {
            const char *ts[] = {c.ts.c_str()};
            cond = ASC_addPresentationContext(params_, c.id, c.sop_class.c_str(), ts, 1);
            if (cond.bad()) {
                o->cls = MMS_SCU_PERMANENT;
                o->rc = MMS_EDICOM;
                o->reason = std::string("ASC_addPresentationContext: ") + cond.text();
                return false;
            }
        }
        dcmConnectionTimeout.set((Sint32)p->timeout_s);
        cond = ASC_requestAssociation(net_, params_, &assoc_, nullptr, nullptr, DUL_NOBLOCK,
                                      timeout_s_);
        if (cond.bad()) {
            *o = association_failure(cond, params_, peer_);
            if (cond.module() == OFM_dcmtls && !layer_.failure.empty())
                o->reason = "TLS handshake with " + peer_ + " failed: " + layer_.failure;
            else if (!layer_.alert.empty())
                // TLS 1.3 ends the handshake before the server has judged our certificate
                o->reason += " (the peer's TLS alert: " + layer_.alert + ")";
            else if (p->tls != nullptr &&
                     (cond == DUL_NETWORKCLOSED || cond == DUL_PEERABORTEDASSOCIATION ||
                      (cond.module() == OFM_dcmnet && cond.code() == DULC_TCPIOERROR)))
                // and may close before its alert is read
                o->reason += " (after the TLS handshake: the peer may have refused our "
                             "certificate)";
            return false;
        }
        up_ = true;
        set_socket_timeouts();
        for (context &c : ctx) {
            T_ASC_PresentationContext pc;
            if (ASC_findAcceptedPresentationContext(params_, c.id, &pc).good()) {
                c.result = pc.resultReason;
                c.accepted = pc.resultReason == ASC_P_ACCEPTANCE &&
                             std::strcmp(pc.acceptedTransferSyntax, c.ts.c_str()) == 0;
            } else {
                // not accepted: its answer is in the list of all contexts
                for (int i = 0, n = ASC_countPresentationContexts(params_); i < n; i++)
                    if (ASC_getPresentationContext(params_, i, &pc).good() &&
                        pc.presentationContextID == c.id)
                        c.result = pc.resultReason;
            }
        }
        return true;
    }

    // Send one data set on context c; true when a C-STORE-RSP came back (*status, and *o
    // classifies it), false when the association is lost or in doubt (*o says why).
    bool
    store(const item &it, const context &c, DcmDataset *ds, Uint16 *status, outcome *o)
    {
        T_DIMSE_C_StoreRQ req;
        T_DIMSE_C_StoreRSP rsp;
        std::memset(&req, 0, sizeof req);
        std::memset(&rsp, 0, sizeof rsp);
        req.MessageID = assoc_->nextMsgID++;
        copy_uid(req.AffectedSOPClassUID, sizeof req.AffectedSOPClassUID, it.sop_class);
        copy_uid(req.AffectedSOPInstanceUID, sizeof req.AffectedSOPInstanceUID, it.sop_instance);
        req.DataSetType = DIMSE_DATASET_PRESENT;
        req.Priority = DIMSE_PRIORITY_MEDIUM;
        DcmDataset *detail = nullptr;
        OFCondition cond = DIMSE_storeUser(assoc_, c.id, &req, nullptr, ds, nullptr, nullptr,
                                           DIMSE_NONBLOCKING, timeout_s_, &rsp, &detail);
        std::unique_ptr<DcmDataset> hold(detail);
        if (cond.bad()) {
            *o = dimse_failure(cond);
            o->reason = "C-STORE to " + peer_ + ": " + o->reason;
            lost_ = true;
            peer_gone_ = cond == DUL_PEERABORTEDASSOCIATION || cond == DUL_NETWORKCLOSED;
            return false;
        }
        *status = rsp.DimseStatus;
        o->cls = classify_status(rsp.DimseStatus);
        o->rc = o->cls == MMS_SCU_DELIVERED ? 0 : MMS_EDIMSE;
        if (rsp.DimseStatus != STATUS_Success)
            o->reason = "C-STORE to " + peer_ + ": " + status_text(rsp.DimseStatus, detail);
        return true;
    }

    // Release, or abort when the association is in doubt. Returns whether it was released.
    bool
    close()
    {
        if (!up_)
            return false;
        if (!lost_) {
            OFCondition cond = ASC_releaseAssociation(assoc_);
            if (cond.good())
                return true;
            mms_log(MMS_LOG_DEBUG, "Store SCU %s: ASC_releaseAssociation: %s", peer_.c_str(),
                    cond.text());
        }
        if (!peer_gone_) {
            DcmTransportConnection *tc = DUL_getTransportConnection(assoc_->DULassociation);
            if (tc != nullptr)
                shutdown(socket_of::get(tc), SHUT_RD);
            ASC_abortAssociation(assoc_);
        }
        return false;
    }

    const std::string &
    peer() const
    {
        return peer_;
    }

  private:
    client_layer layer_; // outlives net_ (members go after the destructor's body)
    T_ASC_Network *net_ = nullptr;
    T_ASC_Parameters *params_ = nullptr; // owned by assoc_ once requested
    T_ASC_Association *assoc_ = nullptr;
    std::string peer_;
    int timeout_s_ = 30;
    bool up_ = false, lost_ = false, peer_gone_ = false;

    void
    set_socket_timeouts()
    {
        DcmTransportConnection *tc = DUL_getTransportConnection(assoc_->DULassociation);
        if (tc == nullptr)
            return;
        struct timeval tv = {(time_t)timeout_s_, 0};
        DcmNativeSocketType fd = socket_of::get(tc);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
};

// Load a file and bring it into the transfer syntax of context c. On failure *o says why.
bool
load_for(const item &it, const context &c, DcmFileFormat *ff, outcome *o)
{
    o->cls = MMS_SCU_PERMANENT;
    o->rc = MMS_EDICOM;
    OFCondition cond = ff->loadFile(it.path.c_str());
    if (cond.bad()) {
        o->reason = it.path + ": cannot read: " + cond.text();
        return false;
    }
    DcmDataset *ds = ff->getDataset();
    E_TransferSyntax to = DcmXfer(c.ts.c_str()).getXfer();
    if (to != it.xfer) {
        // uncompressed to uncompressed needs no new representation; a compressed file is
        // decoded here (RLE only in this build)
        if (!ds->canWriteXfer(to))
            cond = ds->chooseRepresentation(to, nullptr);
        if (cond.bad() || !ds->canWriteXfer(to)) {
            o->reason = it.path + ": cannot convert from " + uid_name(it.ts) + " to " +
                        uid_name(c.ts) + (cond.bad() ? std::string(": ") + cond.text() : "") +
                        " (the peer did not accept " + uid_name(it.ts) +
                        "; this build decodes RLE only)";
            return false;
        }
    }
    return true;
}

bool
same_file(const std::string &a, const std::string &b)
{
    struct stat sa, sb;
    return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int
check_peer(const mms_scu_peer *p, std::string *msg)
{
    if (p->host == nullptr || p->host[0] == '\0') {
        *msg = "host: missing";
        return MMS_EINVAL;
    }
    if (std::strchr(p->host, ':') != nullptr) {
        *msg = std::string("host: DCMTK 3.6.7 cannot connect to an IPv6 literal: ") +
               mms__printable(p->host);
        return MMS_ENOTSUP;
    }
    for (const char *c = p->host; *c != '\0'; c++)
        if (*c <= 0x20 || *c >= 0x7f) {
            *msg = "host: not a host name or IPv4 address";
            return MMS_EINVAL;
        }
    if (p->port < 1 || p->port > 65535) {
        *msg = "port: must be 1 to 65535";
        return MMS_EINVAL;
    }
    if (std::strlen(p->host) + 1 + std::to_string(p->port).size() > 63) {
        *msg = "host: \"host:port\" longer than 63 characters";
        return MMS_EINVAL;
    }
    if (!ae_valid(p->called_ae)) {
        *msg = "called_ae: not an AE title (1 to 16 characters, no backslash)";
        return MMS_EINVAL;
    }
    if (!ae_valid(p->calling_ae)) {
        *msg = "calling_ae: not an AE title (1 to 16 characters, no backslash)";
        return MMS_EINVAL;
    }
    if (p->timeout_s < 1 || p->timeout_s > 86400) {
        *msg = "timeout_s: must be 1 to 86400";
        return MMS_EINVAL;
    }
    if (p->max_pdu != 0 && (p->max_pdu < 4096 || p->max_pdu > 131072)) {
        *msg = "max_pdu: must be 0 or 4096 to 131072";
        return MMS_EINVAL;
    }
    return 0;
}

// The whole call, with files (n entries, zeroed) to fill. Returns the number of files with
// an outcome; *msg carries a setup failure (a negative return).
int
store_all(const mms_scu_peer *p, const char *const *paths, int n, mms_scu_file *files,
          mms_scu_result *res, std::string *msg)
{
    std::vector<item> items((size_t)n);
    int readable = 0;
    for (int i = 0; i < n; i++) {
        item &it = items[(size_t)i];
        it.path = paths[i];
        outcome o = read_meta(&it);
        copy_uid(files[i].sop_class, sizeof files[i].sop_class, it.sop_class);
        copy_uid(files[i].sop_instance, sizeof files[i].sop_instance, it.sop_instance);
        if (!it.readable) {
            set_file(&files[i], o);
            continue;
        }
        for (int j = 0; j < i && it.same_as < 0; j++)
            if (items[(size_t)j].readable && (items[(size_t)j].sop_instance == it.sop_instance ||
                                              same_file(items[(size_t)j].path, it.path)))
                it.same_as = j;
        readable += it.same_as < 0;
    }

    std::vector<context> ctx = plan_contexts(items);
    if (ctx.size() > max_contexts) {
        *msg = std::to_string(ctx.size()) + " presentation contexts needed, at most " +
               std::to_string(max_contexts) + " fit one association";
        return MMS_EINVAL;
    }

    association a;
    outcome assoc_fail;
    bool open = readable > 0 && a.open(p, ctx, &assoc_fail);
    res->associated = open;
    for (int i = 0; i < n; i++) {
        item &it = items[(size_t)i];
        mms_scu_file *f = &files[i];
        if (!it.readable || it.same_as >= 0)
            continue;
        if (!open) {
            outcome o = assoc_fail;
            if (readable > 0)
                o.reason = "not sent: " + o.reason;
            set_file(f, o);
            continue;
        }
        const context *c = pick_context(ctx, it);
        if (c == nullptr) {
            outcome o;
            o.cls = MMS_SCU_PERMANENT;
            o.rc = MMS_EDIMSE;
            o.reason = no_context_reason(ctx, it, a.peer());
            set_file(f, o);
            continue;
        }
        DcmFileFormat ff;
        outcome o;
        if (!load_for(it, *c, &ff, &o)) {
            set_file(f, o);
            continue;
        }
        Uint16 status = 0;
        f->sent = true;
        copy_uid(f->transfer_syntax, sizeof f->transfer_syntax, c->ts);
        bool answered = a.store(it, *c, ff.getDataset(), &status, &o);
        mms_log(MMS_LOG_DEBUG, "Store SCU %s: %s %s in %s: %s%s", a.peer().c_str(),
                it.sop_instance.c_str(), it.path.c_str(), uid_name(c->ts).c_str(),
                mms_scu_class_name(o.cls), o.reason.empty() ? "" : (": " + o.reason).c_str());
        if (answered) {
            f->has_status = true;
            f->status = status;
            set_file(f, o);
            continue;
        }
        // the association is lost: this file and every later one share the failure
        set_file(f, o);
        outcome rest = o;
        rest.reason = "not sent: " + o.reason;
        for (int j = i + 1; j < n; j++)
            if (items[(size_t)j].readable && items[(size_t)j].same_as < 0)
                set_file(&files[j], rest);
        break;
    }
    res->released = a.close();

    // duplicates: the same file takes the first one's outcome; another file with the same
    // SOP Instance UID is refused
    for (int i = 0; i < n; i++) {
        const item &it = items[(size_t)i];
        if (it.same_as < 0)
            continue;
        const mms_scu_file first = files[it.same_as];
        mms_scu_file *f = &files[i];
        if (same_file(items[(size_t)it.same_as].path, it.path)) {
            *f = first;
            f->sent = false;
            std::snprintf(f->reason, sizeof f->reason,
                          "the same file as file %d (one attempt)%s%.400s", it.same_as + 1,
                          first.reason[0] != '\0' ? ": " : "", first.reason);
        } else {
            f->cls = MMS_SCU_PERMANENT;
            f->rc = MMS_EINVAL;
            std::snprintf(f->reason, sizeof f->reason,
                          "not sent: file %d has the same SOP Instance UID %.64s", it.same_as + 1,
                          it.sop_instance.c_str());
        }
    }
    return n;
}

} // namespace

extern "C" const char *
mms_scu_class_name(enum mms_scu_class cls)
{
    switch (cls) {
    case MMS_SCU_DELIVERED:
        return "delivered";
    case MMS_SCU_TRANSIENT:
        return "transient";
    case MMS_SCU_PERMANENT:
        return "permanent";
    }
    return "?";
}

extern "C" void
mms_scu_result_fini(struct mms_scu_result *res)
{
    if (res == nullptr)
        return;
    std::free(res->files);
    std::memset(res, 0, sizeof *res);
}

extern "C" int
mms_scu_store(const struct mms_scu_peer *peer, const char *const *paths, int n,
              struct mms_scu_result *res, char *why, size_t why_len)
{
    mms_scu_file *files = nullptr;
    std::string msg;
    int rc;
    try {
        if (peer == nullptr || paths == nullptr || res == nullptr || n < 1)
            return mms_why(why, why_len, MMS_EINVAL, "Store SCU: no peer, files or result");
        for (int i = 0; i < n; i++)
            if (paths[i] == nullptr)
                return mms_why(why, why_len, MMS_EINVAL, "Store SCU: path %d is NULL", i + 1);
        rc = check_peer(peer, &msg);
        if (rc < 0)
            return mms_why(why, why_len, rc, "Store SCU: %s", msg.c_str());
        mms__route_dcmtk_log();
        static std::once_flag codecs;
        std::call_once(codecs, [] { DcmRLEDecoderRegistration::registerCodecs(); });
        files = (mms_scu_file *)std::calloc((size_t)n, sizeof *files);
        if (files == nullptr)
            return mms_why(why, why_len, MMS_ENOMEM, "Store SCU: out of memory");
        mms_scu_result r;
        std::memset(&r, 0, sizeof r);
        rc = store_all(peer, paths, n, files, &r, &msg);
        if (rc >= 0) {
            r.n_files = n;
            r.files = files;
            files = nullptr;
            r.cls = MMS_SCU_DELIVERED;
            int first_bad = -1;
            for (int i = 0; i < n; i++) {
                const mms_scu_file *f = &r.files[i];
                r.n_delivered += f->cls == MMS_SCU_DELIVERED;
                r.n_transient += f->cls == MMS_SCU_TRANSIENT;
                r.n_permanent += f->cls == MMS_SCU_PERMANENT;
                if (f->cls != MMS_SCU_DELIVERED && first_bad < 0)
                    first_bad = i;
            }
            if (r.n_transient > 0)
                r.cls = MMS_SCU_TRANSIENT;
            else if (r.n_permanent > 0)
                r.cls = MMS_SCU_PERMANENT;
            *res = r;
            if (first_bad < 0)
                return 0;
            const mms_scu_file *f = &r.files[first_bad];
            return mms_why(why, why_len, f->rc < 0 ? f->rc : MMS_EDIMSE, "%s", f->reason);
        }
    } catch (const std::bad_alloc &) {
        rc = MMS_ENOMEM;
        msg = "out of memory";
    } catch (...) {
        rc = MMS_EDICOM;
        msg = "unexpected exception";
    }
    std::free(files);
    return mms_why(why, why_len, rc, "Store SCU: %s", msg.c_str());
}

// dicom: the Store SCP (scp.h) on DCMTK's dcmnet. Our own socket and accept loop on one
// listening thread, one thread per connection running a DcmThreadSCP, each C-STORE received
// bit-preserving into a file of its own. Threads: see scp.h; every thread here belongs to the
// struct mms_scp and is joined by mms_scp_stop().
//
// Why not DcmSCPPool: in DCMTK 3.6.7 it opens its own socket on the listening thread (an
// "address in use" would come too late), always on every IPv4 address, and its workers delete
// themselves without being joined. Instead we bind and listen ourselves (any address, IPv4 or
// IPv6, port 0 read back with getsockname) and hand each accepted socket to
// ASC_receiveAssociation through dcmExternalSocketHandle, DCMTK's documented way in for a
// socket opened elsewhere (storescp uses it for inetd). That handle is one process-wide value,
// so the hand-over is serialized by ext_lock. No peer can hold that lock: the connection's own
// thread reads the whole A-ASSOCIATE-RQ first (within assoc_timeout_s), and DCMTK reads it back
// from memory (prefix_conn, through our transport layer), so under the lock nothing waits on
// the network.
//
// Admission (docs/conformance.md): a connection that has not yet sent its whole request is
// "pending"; a host has at most max_associations_per_host pending connections and as many
// associations (0: no per-host limit). A new connection beyond the pending limit closes that
// host's oldest pending one, and past pending_cap() pending connections in all, the oldest of
// all: a peer that stalls mid-request can never keep another one out. Refusals are counted by
// reason (mms_scp_refused).
//
// C-STORE answers: 0x0000 or what on_store returns; 0xA700 when free space is under
// min_free_bytes (the data set is read and dropped, nothing is written) or when the file
// cannot be written or synced; 0xA900 when the data set's SOP Instance UID (0008,0018) is
// empty or differs from the request's Affected SOP Instance UID; 0xC000 when the data set
// cannot be parsed; 0x0122 when the request's SOP class is not the presentation context's.
//
// TLS: the connection's thread does the handshake itself, on the non-blocking socket and within
// the same assoc_timeout_s as the request, then reads the request through the SSL; DCMTK gets a
// DcmTLSConnection on that SSL (prefix_tls_conn) and is told the handshake is done. Decrypted
// bytes waiting in the SSL are invisible to poll(), so every wait for the network asks the
// connection first (SSL_pending).
// A request whose Affected SOP Instance UID is missing or empty never gets here: DCMTK's
// command parser calls it a badly formed message, and the association is aborted.
#include "dicom/scp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmlayer.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/scpthrd.h>
#include <dcmtk/dcmtls/tlstrans.h>
#include <dcmtk/oflog/oflog.h>
#include <dcmtk/oflog/spi/logevent.h>
#include <openssl/err.h>

#include "common/crashpoint.h"
#include "common/err.h"
#include "common/log.h"
#include "common/net.h"
#include "common/uid.h"
#include "dicom/text-impl.hh"
#include "dicom/tls-impl.hh"

void mms__route_dcmtk_log(); // below; also used by seg.cc (dicom-impl.hh)

namespace
{

const Uint16 st_success = STATUS_Success;
const Uint16 st_no_class = STATUS_STORE_Refused_SOPClassNotSupported;      // 0x0122
const Uint16 st_resources = STATUS_STORE_Refused_OutOfResources;           // 0xA700
const Uint16 st_bad_data = STATUS_STORE_Error_DataSetDoesNotMatchSOPClass; // 0xA900
const Uint16 st_unreadable = STATUS_STORE_Error_CannotUnderstand;          // 0xC000

const char *ct_classes[] = {UID_CTImageStorage, UID_EnhancedCTImageStorage,
                            UID_LegacyConvertedEnhancedCTImageStorage};

// Accepted in this order of preference when a context proposes several.
const char *transfer_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEG2000TransferSyntax,
};

// How an association ends when the SCP stops (a code of our own in dcmnet's module).
makeOFConditionConst(stopping, OFM_dcmnet, 0x7f00, OF_error, "the Store SCP stops");

// dcmExternalSocketHandle is one value for the whole process.
std::mutex ext_lock;

// A connection whose first bytes come from memory: the A-ASSOCIATE-RQ read beforehand. Base
// is DcmTCPConnection, or DcmTLSConnection (its handshake done already, the SSL its own).
template <class Base> class prefix_conn : public Base
{
  public:
    template <class... Args>
    prefix_conn(std::vector<unsigned char> &&pdu, Args... args)
        : Base(args...), pdu_(std::move(pdu))
    {
    }
    ssize_t
    read(void *buf, size_t n) override
    {
        if (at_ >= pdu_.size())
            return Base::read(buf, n);
        size_t k = std::min(n, pdu_.size() - at_);
        std::memcpy(buf, pdu_.data() + at_, k);
        at_ += k;
        if (at_ == pdu_.size()) { // read to its end: the memory goes
            std::vector<unsigned char>().swap(pdu_);
            at_ = 0;
        }
        return (ssize_t)k;
    }
    OFBool
    networkDataAvailable(int timeout) override
    {
        return at_ < pdu_.size() ? OFTrue : Base::networkDataAvailable(timeout);
    }

  private:
    std::vector<unsigned char> pdu_;
    size_t at_ = 0;
};

// Over TLS: the handshake was done on the connection's thread before the request was read.
class prefix_tls_conn : public prefix_conn<DcmTLSConnection>
{
  public:
    using prefix_conn<DcmTLSConnection>::prefix_conn;
    OFCondition
    serverSideHandshake() override
    {
        return EC_Normal;
    }
};

// Hands the request read beforehand (next, and next_ssl with TLS, set under ext_lock) to the
// connection DCMTK makes; made: that connection, for its thread.
class prefix_layer : public DcmTransportLayer
{
  public:
    std::vector<unsigned char> next;
    SSL *next_ssl = nullptr;
    DcmTransportConnection *made = nullptr;
    bool asked = false; // DCMTK asked for a connection (and closes the socket if none came)
    DcmTransportConnection *
    createConnection(DcmNativeSocketType fd, OFBool) override
    {
        asked = true;
        try {
            if (next_ssl != nullptr)
                made = new prefix_tls_conn(std::move(next), fd, next_ssl);
            else
                made = new prefix_conn<DcmTCPConnection>(std::move(next), fd);
            return made;
        } catch (...) {
            return nullptr;
        }
    }
};

// Split a comma list; items are trimmed. An all-blank list gives no items; an empty item
// in a non-blank list is an error (false).
bool
split_list(const char *list, std::vector<std::string> *out)
{
    out->clear();
    if (list == nullptr || mms__trim(list).empty())
        return true;
    std::string s = list;
    size_t at = 0;
    for (;;) {
        size_t comma = s.find(',', at);
        std::string item =
            mms__trim(s.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
        if (item.empty())
            return false;
        out->push_back(item);
        if (comma == std::string::npos)
            return true;
        at = comma + 1;
    }
}

// The peer of an accepted socket as text; an IPv4-mapped IPv6 address as plain IPv4.
std::string
peer_text(const struct sockaddr_storage &ss)
{
    char buf[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&ss)->sin_addr, buf, sizeof buf);
    } else if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)&ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, a->s6_addr + 12, buf, sizeof buf);
        else
            inet_ntop(AF_INET6, a, buf, sizeof buf);
    }
    return buf;
}

// Free bytes for an unprivileged writer on the file system of dir, or a negative code.
int
free_bytes(const std::string &dir, uint64_t *out)
{
    struct statvfs v;
    if (statvfs(dir.c_str(), &v) != 0)
        return mms_err_errno();
    *out = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    return 0;
}

// Check that the received file holds a file meta group and then exactly dataset_bytes
// (what came over the network), and fsync it. A short write that DCMTK's buffered stream
// did not report shows up here as a size that does not add up.
int
seal(const char *path, uint64_t dataset_bytes, std::string *msg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        *msg = std::string("open: ") + mms_strerror(mms_err_errno());
        return MMS_EIO;
    }
    int rc = 0;
    struct stat sb;
    unsigned char h[144];
    if (fstat(fd, &sb) != 0 || pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        *msg = "file meta information unreadable";
        rc = MMS_EIO;
    } else {
        // (0002,0000) UL, explicit VR little endian, right after the preamble and "DICM"
        uint64_t meta_end = 144 + ((uint64_t)h[140] | (uint64_t)h[141] << 8 |
                                   (uint64_t)h[142] << 16 | (uint64_t)h[143] << 24);
        bool ok = std::memcmp(h + 128, "DICM\x02\x00\x00\x00UL\x04\x00", 12) == 0 &&
                  (uint64_t)sb.st_size == meta_end + dataset_bytes;
        if (!ok) {
            *msg = "file size " + std::to_string((long long)sb.st_size) +
                   " does not match the meta group and the " + std::to_string(dataset_bytes) +
                   " bytes received";
            rc = MMS_EIO;
        } else if (fsync(fd) != 0) {
            *msg = std::string("fsync: ") + mms_strerror(mms_err_errno());
            rc = MMS_EIO;
        }
    }
    close(fd);
    return rc;
}

// The SOP Instance UID (0008,0018) of the data set in a received file, without padding.
OFCondition
dataset_uid(const char *path, std::string *uid)
{
    DcmFileFormat ff;
    OFCondition cond = ff.loadFileUntilTag(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength,
                                           ERM_fileOnly, DcmTagKey(0x0008, 0x0019));
    if (cond.bad())
        return cond;
    OFString v;
    if (ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, v).bad())
        v.clear();
    std::string s = v.c_str();
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0'))
        s.pop_back();
    *uid = mms__trim(s);
    return EC_Normal;
}

} // namespace

struct mms_scp {
    // options
    std::string ae, bind, tmp_dir, space_dir;
    std::vector<std::string> calling;
    bool any_calling = false, any_host = false;
    std::string hosts;      // "" (with any_host false): no host is allowed
    mms_tls *tls = nullptr; // the server context for new connections (under lock), or none
    unsigned max_assoc, max_pdu, timeout_s, assoc_timeout_s, per_host;
    uint64_t min_free;
    mms_scp_store_fn on_store;
    void *ctx;

    DcmSharedSCPConfig cfg;         // read by every association thread
    const char **classes = nullptr; // storage SOP classes accepted
    int n_classes = 0;
    int listen_fd = -1, stop_rd = -1, stop_wr = -1;
    unsigned port = 0;
    T_ASC_Network *net = nullptr;
    prefix_layer layer; // outlives net (dropped in release)
    std::thread listener;

    // associations past negotiation, at most max_assoc, and per host; connections still
    // reading their request (oldest first); all under lock
    std::mutex lock;
    unsigned admitted = 0;
    std::map<std::string, unsigned> per_host_admitted;
    struct pending {
        int fd;
        std::string peer;
        bool evicted;
    };
    std::list<pending *> pend;
    std::atomic<uint64_t> refused[MMS_SCP_REFUSED_N] = {};
    std::atomic<unsigned> connections{0}; // connection threads not yet at their end

    size_t
    pending_cap() const
    {
        return 2 * (size_t)max_assoc + 16;
    }
};

namespace
{

const char *refusal_names[MMS_SCP_REFUSED_N] = {
    "host",    "called_ae", "calling_ae", "per_host_limit", "max_associations",
    "timeout", "protocol",  "tls"};

void
count(mms_scp &s, enum mms_scp_refusal r)
{
    s.refused[r].fetch_add(1, std::memory_order_relaxed);
}

bool
host_allowed(const mms_scp &s, const std::string &peer)
{
    return s.any_host || (!s.hosts.empty() && mms_cidr_match(s.hosts.c_str(), peer.c_str()) == 1);
}

} // namespace

namespace
{

// One connection: the A-ASSOCIATE-RQ, the policy, then the DIMSE messages until release,
// abort, timeout or stop.
class association : public DcmThreadSCP
{
  public:
    // conn: DCMTK's connection when it may hold decrypted bytes (TLS), else nullptr
    association(mms_scp &s, int fd, const std::string &peer, DcmTransportConnection *conn)
        : s_(s), fd_(fd), peer_(peer), conn_(conn)
    {
    }

    OFCondition
    serve(T_ASC_Association *a)
    {
        assoc_ = a;
        return run(a);
    }

  protected:
    OFCondition
    processAssociationRQ() override
    {
        T_ASC_Parameters *p = assoc_->params;
        calling_ = mms__trim(p->DULparams.callingAPTitle);
        std::string called = mms__trim(p->DULparams.calledAPTitle);
        if (!host_allowed(s_, peer_))
            return refuse(MMS_SCP_REFUSED_HOST, ASC_RESULT_REJECTEDPERMANENT,
                          ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON,
                          "host not in allowed_hosts");
        if (called != s_.ae)
            return refuse(MMS_SCP_REFUSED_CALLED_AE, ASC_RESULT_REJECTEDPERMANENT,
                          ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED,
                          "called AE title '" + mms__printable(called.c_str()) + "' is not ours");
        bool known = s_.any_calling;
        for (const std::string &c : s_.calling)
            known = known || c == calling_;
        if (!known)
            return refuse(MMS_SCP_REFUSED_CALLING_AE, ASC_RESULT_REJECTEDPERMANENT,
                          ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED,
                          "calling AE title not in allowed_calling_aes");
        char name[BUFSIZ];
        if (ASC_getApplicationContextName(p, name, sizeof name).bad() ||
            std::strcmp(name, DICOM_STDAPPLICATIONCONTEXT) != 0)
            return refuse(MMS_SCP_REFUSED_PROTOCOL, ASC_RESULT_REJECTEDPERMANENT,
                          ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED,
                          "application context not supported");
        {
            std::lock_guard<std::mutex> g(s_.lock);
            if (s_.admitted >= s_.max_assoc)
                return refuse(MMS_SCP_REFUSED_MAX_ASSOCIATIONS, ASC_RESULT_REJECTEDTRANSIENT,
                              ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                              ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED,
                              "max_associations (" + std::to_string(s_.max_assoc) + ") reached");
            unsigned &mine = s_.per_host_admitted[peer_];
            if (s_.per_host > 0 && mine >= s_.per_host)
                return refuse(MMS_SCP_REFUSED_PER_HOST_LIMIT, ASC_RESULT_REJECTEDTRANSIENT,
                              ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                              ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED,
                              "max_associations_per_host (" + std::to_string(s_.per_host) +
                                  ") reached");
            mine++;
            s_.admitted++;
        }
        accept_and_serve();
        std::lock_guard<std::mutex> g(s_.lock);
        s_.admitted--;
        auto it = s_.per_host_admitted.find(peer_);
        if (it != s_.per_host_admitted.end() && --it->second == 0)
            s_.per_host_admitted.erase(it);
        return EC_Normal;
    }

    // DcmSCPConfig keeps its presentation contexts in a profile of at most 128 entries, too
    // few for accept_all; the contexts are accepted here as storescp does, Verification first.
    OFCondition
    negotiateAssociation() override
    {
        const char *echo[] = {UID_VerificationSOPClass};
        const char *echo_ts[] = {UID_LittleEndianExplicitTransferSyntax,
                                 UID_LittleEndianImplicitTransferSyntax,
                                 UID_BigEndianExplicitTransferSyntax};
        OFCondition cond =
            ASC_acceptContextsWithPreferredTransferSyntaxes(assoc_->params, echo, 1, echo_ts, 3);
        if (cond.good())
            cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
                assoc_->params, s_.classes, s_.n_classes, transfer_syntaxes,
                (int)(sizeof transfer_syntaxes / sizeof transfer_syntaxes[0]));
        return cond;
    }

    OFCondition
    handleIncomingCommand(T_DIMSE_Message *msg, const DcmPresentationContextInfo &info) override
    {
        if (msg->CommandField == DIMSE_C_STORE_RQ)
            return store(msg->msg.CStoreRQ, info);
        return DcmThreadSCP::handleIncomingCommand(msg, info);
    }

    void
    notifyRECEIVEProgress(const unsigned long n) override
    {
        rx_bytes_ = n;
    }

  private:
    mms_scp &s_;
    int fd_;
    std::string peer_, calling_;
    DcmTransportConnection *conn_;
    T_ASC_Association *assoc_ = nullptr;
    uint64_t rx_bytes_ = 0;
    unsigned stored_ = 0, refused_ = 0;

    // counted: the reason for the metrics; MMS_SCP_REFUSED_N: not counted
    OFCondition
    refuse(enum mms_scp_refusal counted, T_ASC_RejectParametersResult result,
           T_ASC_RejectParametersSource source, T_ASC_RejectParametersReason reason,
           const std::string &why)
    {
        if (counted < MMS_SCP_REFUSED_N)
            count(s_, counted);
        mms_log(MMS_LOG_NOTICE, "association from %s@%s refused: %s",
                mms__printable(calling_.c_str()).c_str(), peer_.c_str(), why.c_str());
        T_ASC_RejectParameters rej = {result, source, reason};
        OFCondition cond = ASC_rejectAssociation(assoc_, &rej);
        if (cond.bad())
            mms_log(MMS_LOG_NOTICE, "association from %s: ASC_rejectAssociation: %s", peer_.c_str(),
                    cond.text());
        return EC_Normal;
    }

    void
    accept_and_serve()
    {
        T_ASC_Parameters *p = assoc_->params;
        ASC_setAPTitles(p, nullptr, nullptr, s_.ae.c_str());
        OFCondition cond = negotiateAssociation();
        if (cond.bad()) {
            refuse(MMS_SCP_REFUSED_PROTOCOL, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
                   ASC_REASON_SU_NOREASON, std::string("negotiation failed: ") + cond.text());
            return;
        }
        if (ASC_countAcceptedPresentationContexts(p) == 0) {
            refuse(MMS_SCP_REFUSED_PROTOCOL, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
                   ASC_REASON_SU_NOREASON, "no acceptable presentation context");
            return;
        }
        cond = ASC_acknowledgeAssociation(assoc_);
        if (cond.bad()) {
            mms_log(MMS_LOG_NOTICE, "association from %s@%s: ASC_acknowledgeAssociation: %s",
                    mms__printable(calling_.c_str()).c_str(), peer_.c_str(), cond.text());
            return;
        }
        mms_log(MMS_LOG_INFO, "association from %s@%s accepted",
                mms__printable(calling_.c_str()).c_str(), peer_.c_str());
        cond = receive_loop();
        int level = MMS_LOG_INFO;
        std::string how;
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            how = "released";
            ASC_acknowledgeRelease(assoc_);
        } else if (cond == DUL_PEERABORTEDASSOCIATION) {
            how = "aborted by the peer";
        } else {
            if (cond != stopping)
                level = MMS_LOG_NOTICE;
            how = std::string("aborted: ") + cond.text();
            // DUL_AbortAssociation waits for the peer to close the connection, up to the
            // ACSE timeout; with the reading side shut it sends the A-ABORT and returns
            shutdown(fd_, SHUT_RD);
            ASC_abortAssociation(assoc_);
        }
        mms_log(level, "association from %s@%s %s; %u instances stored, %u refused",
                mms__printable(calling_.c_str()).c_str(), peer_.c_str(), how.c_str(), stored_,
                refused_);
    }

    // DcmSCP::handleAssociation, except that waiting for the next command also watches the
    // stop pipe. Between two messages nothing is in flight (no asynchronous operations are
    // negotiated, so the peer waits for each response), and DCMTK holds no unread PDV: a
    // stop, or timeout_s without a command, ends the association there with an A-ABORT.
    OFCondition
    receive_loop()
    {
        for (;;) {
            struct pollfd p[2] = {{fd_, POLLIN, 0}, {s_.stop_rd, POLLIN, 0}};
            // a TLS record may hold the next command already
            bool buffered = conn_ != nullptr && conn_->networkDataAvailable(0);
            int n = buffered ? 1 : poll(p, 2, (int)s_.timeout_s * 1000);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return makeOFCondition(OFM_dcmnet, 0x7f01, OF_error, "poll failed");
            if (n == 0)
                return makeOFCondition(OFM_dcmnet, 0x7f02, OF_error, "no command within timeout_s");
            if (p[1].revents != 0)
                return stopping;
            T_ASC_PresentationContextID pres;
            T_DIMSE_Message msg;
            OFCondition cond = DIMSE_receiveCommand(assoc_, DIMSE_NONBLOCKING, (int)s_.timeout_s,
                                                    &pres, &msg, nullptr);
            if (cond.bad())
                return cond;
            DcmPresentationContextInfo info;
            getPresentationContextInfo(assoc_, pres, info);
            cond = handleIncomingCommand(&msg, info);
            if (cond.bad())
                return cond;
        }
    }

    // Read the data set off the network and drop it, then answer status.
    OFCondition
    drop(T_DIMSE_C_StoreRQ &req, T_ASC_PresentationContextID pres, Uint16 status, int level,
         const std::string &why)
    {
        DIC_UL bytes = 0, pdvs = 0;
        OFCondition cond =
            DIMSE_ignoreDataSet(assoc_, DIMSE_NONBLOCKING, (int)s_.timeout_s, &bytes, &pdvs);
        if (cond.bad())
            return cond;
        return answer(req, pres, status, level, why);
    }

    // comment: the Error Comment (0000,0902) of a refusal; "" for none.
    OFCondition
    answer(T_DIMSE_C_StoreRQ &req, T_ASC_PresentationContextID pres, Uint16 status, int level,
           const std::string &why, const std::string &comment = std::string())
    {
        // success, or a warning (0xB000, 0xB006, 0xB007): the instance was taken
        if (status == st_success || (status & 0xF000) == 0xB000) {
            stored_++;
            // stored and indexed, but the peer never hears so: it sends the instance again
            MMS_CRASH_POINT("scp.before-response");
            return sendSTOREResponse(pres, req, status);
        }
        refused_++;
        mms_log(level, "C-STORE %s from %s@%s answered 0x%04X: %s",
                mms__printable(req.AffectedSOPInstanceUID).c_str(),
                mms__printable(calling_.c_str()).c_str(), peer_.c_str(), status, why.c_str());
        // LO: at most 64 characters, printable, no backslash
        std::string lo;
        for (char c : comment.empty() ? why : comment)
            if (lo.size() < 64)
                lo.push_back(c >= 0x20 && c < 0x7f && c != '\\' ? c : '?');
        DcmDataset detail;
        if (lo.empty() || detail.putAndInsertString(DCM_ErrorComment, lo.c_str()).bad())
            return sendSTOREResponse(pres, req, status);
        return sendSTOREResponse(pres, req.MessageID, req.AffectedSOPClassUID,
                                 req.AffectedSOPInstanceUID, status, &detail);
    }

    OFCondition
    store(T_DIMSE_C_StoreRQ &req, const DcmPresentationContextInfo &info)
    {
        T_ASC_PresentationContextID pres = info.presentationContextID;
        if (req.DataSetType == DIMSE_DATASET_NULL)
            return DIMSE_BADMESSAGE;
        if (info.abstractSyntax != req.AffectedSOPClassUID)
            return drop(req, pres, st_no_class, MMS_LOG_NOTICE,
                        "SOP class " + mms__printable(req.AffectedSOPClassUID) +
                            " is not the presentation context's");
        std::string inst = mms__trim(req.AffectedSOPInstanceUID);
        if (inst.empty()) // DCMTK's parser refuses this already (see the top of the file)
            return drop(req, pres, st_bad_data, MMS_LOG_NOTICE,
                        "the request has no Affected SOP Instance UID");
        uint64_t avail = 0;
        int rc = free_bytes(s_.space_dir, &avail);
        if (rc < 0)
            return drop(req, pres, st_resources, MMS_LOG_WARNING,
                        s_.space_dir + ": statvfs: " + mms_strerror(rc));
        if (avail < s_.min_free)
            return drop(req, pres, st_resources, MMS_LOG_WARNING,
                        s_.space_dir + ": " + std::to_string(avail) +
                            " bytes free, under min_free");

        unsigned char r[8];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
            return drop(req, pres, st_resources, MMS_LOG_WARNING,
                        std::string("getrandom: ") + mms_strerror(mms_err_errno()));
        char name[32];
        std::snprintf(name, sizeof name, "/rx-%02x%02x%02x%02x%02x%02x%02x%02x.dcm", r[0], r[1],
                      r[2], r[3], r[4], r[5], r[6], r[7]);
        std::string path = s_.tmp_dir + name;
        rx_bytes_ = 0;
        OFCondition cond = receiveSTORERequest(req, pres, OFString(path.c_str()));
        if (cond.bad()) {
            unlink(path.c_str());
            // the data set was read to its end, only the file failed
            if (cond.module() == OFM_dcmnet && cond.code() == DIMSEC_OUTOFRESOURCES)
                return answer(req, pres, st_resources, MMS_LOG_WARNING,
                              std::string("writing the file failed: ") + cond.text());
            mms_log(MMS_LOG_NOTICE, "C-STORE %s from %s@%s: receiving failed: %s",
                    mms__printable(inst.c_str()).c_str(), mms__printable(calling_.c_str()).c_str(),
                    peer_.c_str(), cond.text());
            return cond;
        }
        std::string msg;
        if (seal(path.c_str(), rx_bytes_, &msg) < 0) {
            unlink(path.c_str());
            return answer(req, pres, st_resources, MMS_LOG_WARNING, path + ": " + msg);
        }
        std::string uid;
        cond = dataset_uid(path.c_str(), &uid);
        char bad[96];
        // DCMTK cuts the request's UID to 64 characters: a longer one in the data set is
        // named as what it is, not as a mismatch
        if (cond.good() && !uid.empty() &&
            !mms_uid_check(uid.data(), uid.size(), bad, sizeof bad)) {
            unlink(path.c_str());
            return answer(req, pres, st_bad_data, MMS_LOG_NOTICE,
                          std::string("SOP Instance UID (0008,0018) is not a valid UID: ") + bad);
        }
        if (cond.bad() || uid.empty() || uid != inst) {
            unlink(path.c_str());
            if (cond.bad())
                return answer(req, pres, st_unreadable, MMS_LOG_NOTICE,
                              std::string("data set unreadable: ") + cond.text());
            return answer(req, pres, st_bad_data, MMS_LOG_NOTICE,
                          uid.empty()
                              ? "the data set has no SOP Instance UID (0008,0018)"
                              : "SOP Instance UID (0008,0018) " + mms__printable(uid.c_str()) +
                                    " differs from the request's");
        }
        char comment[256] = "";
        struct mms_scp_store st = {
            path.c_str(), calling_.c_str(), peer_.c_str(), req.AffectedSOPClassUID,
            inst.c_str(), comment,          sizeof comment};
        Uint16 status = s_.on_store(s_.ctx, &st);
        mms_log(MMS_LOG_DEBUG, "C-STORE %s from %s@%s: %s, on_store answered 0x%04X",
                mms__printable(inst.c_str()).c_str(), mms__printable(calling_.c_str()).c_str(),
                peer_.c_str(), path.c_str(), status);
        return answer(req, pres, status, MMS_LOG_NOTICE,
                      comment[0] != '\0' ? std::string("refused by on_store: ") + comment
                                         : std::string("refused by on_store"),
                      comment);
    }
};

// Whether an A-ASSOCIATE-RQ has the structure of PS3.8 9.3.2: a called and a calling AE
// title that are not empty (up to the first NUL, without spaces); each variable item, and
// each sub-item of a presentation context or of the user information, within what holds it;
// the items an application context (0x10), presentation contexts (0x20) and user information
// (0x50); a presentation context one abstract syntax (0x30) and then transfer syntaxes
// (0x40). DCMTK 3.6.7 leaks the lists it has made when it meets a request that breaks this
// (found by tests/fuzz/fuzz-pdu), so such a request is refused here, before DCMTK parses it.
// why: the first thing that is wrong.
bool
request_well_formed(const std::vector<unsigned char> &pdu, std::string *why)
{
    auto u16 = [&](size_t at) { return (size_t)pdu[at] << 8 | pdu[at + 1]; };
    auto fail = [&](const char *what, size_t at) {
        char b[160];
        snprintf(b, sizeof b, "A-ASSOCIATE-RQ: %s at byte %zu", what, at);
        *why = b;
        return false;
    };
    const size_t end = pdu.size();
    for (size_t ae = 10; ae <= 26; ae += 16) { // called, then calling AE title
        bool empty = true;
        for (size_t i = ae; i < ae + 16 && pdu[i] != 0; i++)
            empty = empty && pdu[i] == ' ';
        if (empty)
            return fail(ae == 10 ? "an empty called AE title" : "an empty calling AE title", ae);
    }
    size_t at = 6 + 68; // the PDU header, then the fixed fields up to the first item
    while (at < end) {
        if (end - at < 4 || u16(at + 2) > end - at - 4)
            return fail("an item runs past the request", at);
        const unsigned type = pdu[at];
        const size_t stop = at + 4 + u16(at + 2);
        if (type != 0x10 && type != 0x20 && type != 0x50)
            return fail("an item of unknown type", at);
        if (type == 0x20 || type == 0x50) {
            size_t sub = at + 4 + (type == 0x20 ? 4 : 0); // a context's ID and reserved bytes
            int n = 0;
            if (sub > stop)
                return fail("a presentation context too short for its ID", at);
            for (; sub < stop; n++) {
                if (stop - sub < 4 || u16(sub + 2) > stop - sub - 4)
                    return fail("a sub-item runs past its item", sub);
                if (type == 0x20 && pdu[sub] != (n == 0 ? 0x30 : 0x40))
                    return fail("a presentation context sub-item out of place", sub);
                sub += 4 + u16(sub + 2);
            }
            if (type == 0x20 && n < 2)
                return fail("a presentation context without a transfer syntax", at);
        }
        at = stop;
    }
    return true;
}

// What reading the A-ASSOCIATE-RQ came to.
enum rq_end { RQ_OK, RQ_CLOSED, RQ_TIMEOUT, RQ_EVICTED, RQ_STOPPED, RQ_BAD, RQ_TLS, RQ_HOST };

// Read one whole A-ASSOCIATE-RQ PDU (type 0x01, its 4-byte length, at most DCMTK's
// dcmAssociatePDUSizeLimit) into pdu within assoc_timeout_s, watching the stop pipe; with ssl
// (fd non-blocking) the TLS handshake first, within the same time. A pending connection closed
// by the listener (shutdown) reads as the end of the stream: *evicted says so. why: what was
// wrong with the bytes (RQ_BAD) or the handshake (RQ_TLS).
rq_end
read_request(mms_scp *s, int fd, SSL *ssl, mms_scp::pending *me, std::vector<unsigned char> *pdu,
             std::string *why)
{
    const int64_t deadline_ms = (int64_t)s->assoc_timeout_s * 1000;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t want = 6;
    bool handshaken = ssl == nullptr;
    pdu->resize(0);
    auto closed = [&]() {
        std::lock_guard<std::mutex> g(s->lock);
        return me->evicted ? RQ_EVICTED : RQ_CLOSED;
    };
    for (;;) {
        // one step without waiting, then wait for what it needs: readable (or writable)
        short need = POLLIN;
        if (!handshaken) {
            ERR_clear_error();
            int r = SSL_accept(ssl);
            if (r == 1) {
                handshaken = true;
                continue;
            }
            int e = SSL_get_error(ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) {
                need = POLLOUT;
            } else if (e != SSL_ERROR_WANT_READ) {
                // closed before or during the hello (a port probe, a health check)
                if ((e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) ||
                    (e == SSL_ERROR_SSL &&
                     ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING))
                    return closed();
                rq_end c = closed();
                if (c == RQ_EVICTED)
                    return c;
                *why = mms__tls_failure(ssl, "the handshake failed");
                return RQ_TLS;
            }
        } else {
            size_t have = pdu->size();
            pdu->resize(want);
            ssize_t r = -1;
            bool again = false;
            if (ssl != nullptr) {
                ERR_clear_error();
                int k = SSL_read(ssl, pdu->data() + have, (int)(want - have));
                int e = k > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, k);
                r = k > 0 ? k : 0;
                again = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
                need = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
                ERR_clear_error();
            } else {
                r = recv(fd, pdu->data() + have, want - have, MSG_DONTWAIT);
                again = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
            }
            if (again || r <= 0) {
                pdu->resize(have);
                if (!again)
                    return closed();
            } else {
                pdu->resize(have + (size_t)r);
                if (pdu->size() < want)
                    continue;
                if (want > 6)
                    return request_well_formed(*pdu, why) ? RQ_OK : RQ_BAD;
                const unsigned char *h = pdu->data();
                uint64_t len =
                    (uint64_t)h[2] << 24 | (uint64_t)h[3] << 16 | (uint64_t)h[4] << 8 | h[5];
                if (h[0] != 0x01) {
                    *why = "not an A-ASSOCIATE-RQ (PDU type " + std::to_string(h[0]) + ")";
                    return RQ_BAD;
                }
                if (len > dcmAssociatePDUSizeLimit.get() || len < 68) {
                    *why = "A-ASSOCIATE-RQ of " + std::to_string(len) + " bytes";
                    return RQ_BAD;
                }
                want = 6 + (size_t)len;
                continue;
            }
        }
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            int64_t left = deadline_ms - ((int64_t)(t.tv_sec - t0.tv_sec) * 1000 +
                                          (t.tv_nsec - t0.tv_nsec) / 1000000);
            if (left <= 0)
                return RQ_TIMEOUT;
            struct pollfd p[2] = {{fd, need, 0}, {s->stop_rd, POLLIN, 0}};
            int n = poll(p, 2, (int)left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 || p[1].revents != 0)
                return RQ_STOPPED;
            if (n > 0)
                break;
        }
    }
}

// One accepted connection, on its own thread: read the A-ASSOCIATE-RQ (no lock held), let
// DCMTK take the socket and parse the request from memory, then run the association. fd is
// ours until ASC_receiveAssociation took it; me (the pending record, owned by this thread) is
// off the pending list before fd is closed or handed over.
void
connection_body(mms_scp *s, int fd, const std::string &peer, mms_scp::pending *me)
{
    std::vector<unsigned char> pdu;
    std::string why;
    mms_tls *tls;
    {
        std::lock_guard<std::mutex> g(s->lock);
        tls = mms_tls_ref(s->tls);
    }
    std::unique_ptr<mms_tls, void (*)(mms_tls *)> tls_ref(tls, mms_tls_unref);
    SSL *ssl = nullptr;
    rq_end end = RQ_OK;
    if (tls != nullptr && !host_allowed(*s, peer)) {
        // no handshake (and no work on our key) for a host that is refused anyway
        end = RQ_HOST;
    } else if (tls != nullptr) {
        ssl = mms__tls_new_ssl(tls, fd, nullptr, &why);
        int fl = fcntl(fd, F_GETFL);
        if (ssl == nullptr || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
            end = RQ_TLS;
    }
    if (end == RQ_OK)
        end = read_request(s, fd, ssl, me, &pdu, &why);
    {
        std::lock_guard<std::mutex> g(s->lock);
        s->pend.remove(me);
    }
    if (end == RQ_OK && ssl != nullptr) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
            end = RQ_TLS;
            why = "cannot make the socket blocking again";
        } else {
            mms_log(MMS_LOG_INFO, "connection from %s: %s", peer.c_str(),
                    mms__tls_session(ssl).c_str());
        }
    }
    if (end != RQ_OK) {
        switch (end) {
        case RQ_HOST:
            count(*s, MMS_SCP_REFUSED_HOST);
            mms_log(MMS_LOG_NOTICE,
                    "connection from %s closed before the TLS handshake: host not in "
                    "allowed_hosts",
                    peer.c_str());
            break;
        case RQ_TLS:
            count(*s, MMS_SCP_REFUSED_TLS);
            mms_log(MMS_LOG_NOTICE, "connection from %s closed: TLS: %s", peer.c_str(),
                    why.c_str());
            break;
        case RQ_TIMEOUT:
            count(*s, MMS_SCP_REFUSED_TIMEOUT);
            mms_log(MMS_LOG_NOTICE,
                    "connection from %s closed: no whole association request within "
                    "assoc_timeout_s (%u s)",
                    peer.c_str(), s->assoc_timeout_s);
            break;
        case RQ_EVICTED:
            count(*s, MMS_SCP_REFUSED_PER_HOST_LIMIT);
            mms_log(MMS_LOG_NOTICE,
                    "connection from %s closed: its association request was not complete when "
                    "a newer connection came past the pending limit",
                    peer.c_str());
            break;
        case RQ_BAD:
            count(*s, MMS_SCP_REFUSED_PROTOCOL);
            mms_log(MMS_LOG_NOTICE, "connection from %s closed: %s", peer.c_str(), why.c_str());
            break;
        case RQ_CLOSED: // a port probe is not worth a notice
            mms_log(MMS_LOG_INFO, "connection from %s closed before an association request",
                    peer.c_str());
            break;
        default:
            break;
        }
        SSL_free(ssl);
        close(fd);
        return;
    }
    T_ASC_Association *a = nullptr;
    DcmTransportConnection *made;
    bool asked;
    OFCondition cond;
    {
        // the request is in memory: nothing here waits on the network
        std::lock_guard<std::mutex> g(ext_lock);
        s->layer.next = std::move(pdu);
        s->layer.next_ssl = ssl;
        s->layer.made = nullptr;
        s->layer.asked = false;
        dcmExternalSocketHandle.set(fd);
        cond = ASC_receiveAssociation(s->net, &a, (long)s->max_pdu, nullptr, nullptr,
                                      ssl != nullptr ? OFTrue : OFFalse, DUL_NOBLOCK,
                                      (int)s->assoc_timeout_s);
        dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
        s->layer.next.clear();
        s->layer.next_ssl = nullptr;
        made = s->layer.made;
        asked = s->layer.asked;
    }
    if (cond.bad()) {
        count(*s, MMS_SCP_REFUSED_PROTOCOL);
        mms_log(MMS_LOG_NOTICE, "connection from %s: ASC_receiveAssociation: %s", peer.c_str(),
                cond.text());
        // without a DUL association key DCMTK never wrapped the socket (plain TCP cannot fail
        // after that), so it is still ours to close
        if (a == nullptr || a->DULassociation == nullptr) {
            if (made == nullptr)
                SSL_free(ssl); // else the connection owns it
            if (!asked)        // else DCMTK closed it when no connection came
                close(fd);
        }
        if (a != nullptr) {
            ASC_dropAssociation(a);
            ASC_destroyAssociation(&a);
        }
        return;
    }
    if (ssl != nullptr) {
        // a read or write inside a TLS record blocks on the socket: no longer than timeout_s
        struct timeval tv = {(time_t)s->timeout_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    association w(*s, fd, peer, ssl != nullptr ? made : nullptr);
    w.setSharedConfig(s->cfg);
    w.serve(a); // the association is the worker's now; ~DcmSCP drops and frees it
}

void
connection(mms_scp *s, int fd, std::string peer, mms_scp::pending *me, std::atomic<bool> *done)
{
    try {
        connection_body(s, fd, peer, me);
    } catch (const std::bad_alloc &) {
        mms_log(MMS_LOG_ERR, "connection from %s: out of memory", peer.c_str());
    } catch (...) {
        mms_log(MMS_LOG_ERR, "connection from %s: unexpected exception", peer.c_str());
    }
    done->store(true);
    s->connections.fetch_sub(1);
}

struct conn {
    std::thread t;
    std::atomic<bool> done{false};
    mms_scp::pending rec;
};

// Before a new pending connection from peer is listed: close (shutdown) the oldest pending one
// of that host when it has max_associations_per_host pending, and the oldest of all when
// pending_cap() are pending. Under s->lock.
void
make_room(mms_scp *s, const std::string &peer)
{
    size_t mine = 0;
    mms_scp::pending *oldest_mine = nullptr, *oldest = nullptr;
    for (mms_scp::pending *p : s->pend) {
        if (p->evicted)
            continue;
        if (oldest == nullptr)
            oldest = p;
        if (p->peer == peer && mine++ == 0)
            oldest_mine = p;
    }
    size_t live = 0;
    for (mms_scp::pending *p : s->pend)
        live += p->evicted ? 0 : 1;
    mms_scp::pending *victim = nullptr;
    if (s->per_host > 0 && mine >= s->per_host)
        victim = oldest_mine;
    else if (live >= s->pending_cap())
        victim = oldest;
    if (victim != nullptr) {
        victim->evicted = true;
        shutdown(victim->fd, SHUT_RDWR);
    }
}

// The listening thread: accept until the stop pipe is readable, one thread per connection.
// At most 2 * max_associations connection threads exist (the second half answers the
// over-limit ones with A-ASSOCIATE-RJ); past that, connections wait in the listen backlog.
void
listen_loop(mms_scp *s)
{
    std::list<std::unique_ptr<conn>> conns;
    // associations, their over-limit rejections, and pending connections (make_room)
    const size_t cap = 2 * (size_t)s->max_assoc + s->pending_cap() + 1;
    for (;;) {
        for (auto it = conns.begin(); it != conns.end();) {
            if ((*it)->done.load()) {
                (*it)->t.join();
                it = conns.erase(it);
            } else {
                ++it;
            }
        }
        bool full = conns.size() >= cap;
        struct pollfd p[2] = {{s->stop_rd, POLLIN, 0},
                              {s->listen_fd, (short)(full ? 0 : POLLIN), 0}};
        int n = poll(p, 2, 1000);
        if (n < 0 && errno != EINTR) {
            mms_log(MMS_LOG_ERR, "Store SCP: poll: %s", mms_strerror(mms_err_errno()));
            break;
        }
        if (p[0].revents != 0)
            break;
        if (n > 0 && (p[1].revents & (POLLERR | POLLNVAL)) != 0) {
            mms_log(MMS_LOG_ERR, "Store SCP: the listening socket failed");
            struct pollfd q = {s->stop_rd, POLLIN, 0};
            poll(&q, 1, 1000);
            continue;
        }
        if (n <= 0 || (p[1].revents & POLLIN) == 0)
            continue;
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED) {
                mms_log(MMS_LOG_WARNING, "Store SCP: accept: %s", mms_strerror(-e));
                // out of descriptors or memory: wait a little (or for stop) before retrying
                struct pollfd q = {s->stop_rd, POLLIN, 0};
                poll(&q, 1, 200);
            }
            continue;
        }
        // DCMTK takes an external socket only when it is above 0
        if (fd == 0) {
            int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
            close(fd);
            if (hi < 0)
                continue;
            fd = hi;
        }
        try {
            std::string peer = peer_text(ss);
            conns.push_back(std::unique_ptr<conn>(new conn));
            conn *c = conns.back().get();
            c->rec.fd = fd;
            c->rec.peer = peer;
            c->rec.evicted = false;
            {
                std::lock_guard<std::mutex> g(s->lock);
                make_room(s, peer);
                s->pend.push_back(&c->rec);
            }
            try {
                s->connections.fetch_add(1);
                c->t = std::thread(connection, s, fd, peer, &c->rec, &c->done);
            } catch (...) {
                s->connections.fetch_sub(1);
                {
                    std::lock_guard<std::mutex> g(s->lock);
                    s->pend.remove(&c->rec);
                }
                conns.pop_back();
                throw;
            }
        } catch (...) {
            mms_log(MMS_LOG_WARNING, "Store SCP: a connection closed at once: no memory or "
                                     "thread for it");
            close(fd);
        }
    }
    for (auto &c : conns)
        c->t.join();
}

// Bind and listen on addr:port; the socket in *fd and the port in *port.
int
open_listener(const std::string &addr, unsigned port, int *fd, unsigned *out, std::string *msg)
{
    struct sockaddr_storage ss;
    std::memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr.c_str(), &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof *a4;
    } else if (inet_pton(AF_INET6, addr.c_str(), &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof *a6;
    } else {
        *msg = "bind: not a numeric IPv4 or IPv6 address: " + mms__printable(addr.c_str());
        return MMS_EINVAL;
    }
    int f = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (f < 0) {
        *msg = std::string("socket: ") + mms_strerror(mms_err_errno());
        return MMS_EDIMSE;
    }
    int one = 1, zero = 0;
    setsockopt(f, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // "::" takes IPv4 connections too, seen as IPv4-mapped addresses
    if (ss.ss_family == AF_INET6)
        setsockopt(f, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(f, (struct sockaddr *)&ss, len) != 0 || listen(f, 64) != 0 ||
        getsockname(f, (struct sockaddr *)&ss, &len) != 0) {
        int rc = mms_err_errno();
        *msg = addr + " port " + std::to_string(port) + ": " + mms_strerror(rc);
        close(f);
        return MMS_EDIMSE;
    }
    *fd = f;
    *out = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    return 0;
}

int
check_opts(const struct mms_scp_opts *o, std::string *msg)
{
    std::vector<std::string> items;
    if (o->ae_title == nullptr || !mms__ae_valid(mms__trim(o->ae_title))) {
        *msg = "ae_title: not an AE title (1 to 16 characters, no backslash)";
    } else if (!split_list(o->allowed_calling_aes, &items)) {
        *msg = "allowed_calling_aes: empty item in the list";
    } else if (o->port > 65535) {
        *msg = "port: " + std::to_string(o->port) + " is out of range";
    } else if (o->max_associations < 1 || o->max_associations > 1024) {
        *msg = "max_associations: must be 1 to 1024";
    } else if (o->max_pdu < 4096 || o->max_pdu > 131072) {
        *msg = "max_pdu: must be 4096 to 131072";
    } else if (o->timeout_s < 1 || o->timeout_s > 86400) {
        *msg = "timeout_s: must be 1 to 86400";
    } else if (o->tmp_dir == nullptr || o->tmp_dir[0] == '\0' || std::strlen(o->tmp_dir) > 4000) {
        *msg = "tmp_dir: missing or too long";
    } else if (o->space_dir == nullptr || o->space_dir[0] == '\0') {
        *msg = "space_dir: missing";
    } else if (o->on_store == nullptr) {
        *msg = "on_store: missing";
    } else if (o->assoc_timeout_s < 1 || o->assoc_timeout_s > 300) {
        *msg = "assoc_timeout_s: must be 1 to 300";
    } else if (o->max_associations_per_host > 1024) {
        *msg = "max_associations_per_host: must be 0 to 1024";
    } else if (o->allowed_hosts != nullptr && mms_cidr_match(o->allowed_hosts, "::") < 0) {
        *msg = std::string("allowed_hosts: not `any` nor a list of addresses or CIDR blocks: ") +
               mms__printable(o->allowed_hosts);
    } else {
        for (const std::string &c : items)
            if (c == "any" && items.size() > 1) {
                *msg = "allowed_calling_aes: `any` stands alone";
                return MMS_EINVAL;
            } else if (c != "any" && !mms__ae_valid(c)) {
                *msg = "allowed_calling_aes: not an AE title: " + mms__printable(c.c_str());
                return MMS_EINVAL;
            }
        return 0;
    }
    return MMS_EINVAL;
}

int
start(const struct mms_scp_opts *o, std::unique_ptr<mms_scp> &s, std::string *msg)
{
    int rc = check_opts(o, msg);
    if (rc < 0)
        return rc;
    s->ae = mms__trim(o->ae_title);
    s->bind = o->bind != nullptr && o->bind[0] != '\0' ? o->bind : "0.0.0.0";
    split_list(o->allowed_calling_aes, &s->calling);
    s->any_calling = s->calling.size() == 1 && s->calling[0] == "any";
    s->hosts = o->allowed_hosts != nullptr ? mms__trim(o->allowed_hosts) : "";
    s->any_host = s->hosts == "any";
    s->assoc_timeout_s = o->assoc_timeout_s;
    s->per_host = o->max_associations_per_host;
    s->tmp_dir = o->tmp_dir;
    s->space_dir = o->space_dir;
    s->max_assoc = o->max_associations;
    s->max_pdu = o->max_pdu;
    s->timeout_s = o->timeout_s;
    s->min_free = o->min_free_bytes;
    s->on_store = o->on_store;
    s->ctx = o->ctx;
    s->tls = mms_tls_ref(o->tls);

    struct stat sb;
    if (stat(o->tmp_dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(o->tmp_dir, W_OK | X_OK)) {
        *msg = std::string("tmp_dir: not a writable directory: ") + o->tmp_dir;
        return MMS_EINVAL;
    }

    // what DcmSCP still reads: the DIMSE settings used while receiving a data set. The
    // presentation contexts are not in it (see negotiateAssociation); the listening side
    // (connection and ACSE timeouts) is ours.
    DcmSCPConfig cfg;
    cfg.setAETitle(s->ae.c_str());
    cfg.setMaxReceivePDULength(s->max_pdu);
    cfg.setDIMSETimeout(s->timeout_s);
    cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    cfg.setHostLookupEnabled(OFFalse);
    // the byte count of each data set, checked against the file (seal)
    cfg.setProgressNotificationMode(OFTrue);
    if (o->accept_all) {
        s->classes = dcmAllStorageSOPClassUIDs;
        s->n_classes = numberOfDcmAllStorageSOPClassUIDs;
    } else {
        s->classes = ct_classes;
        s->n_classes = (int)(sizeof ct_classes / sizeof ct_classes[0]);
    }
    s->cfg = DcmSharedSCPConfig(cfg);

    rc = open_listener(s->bind, o->port, &s->listen_fd, &s->port, msg);
    if (rc < 0)
        return rc;
    OFCondition cond;
    {
        // an external handle set keeps DCMTK from opening a listening socket of its own
        std::lock_guard<std::mutex> g(ext_lock);
        dcmExternalSocketHandle.set(s->listen_fd);
        cond = ASC_initializeNetwork(NET_ACCEPTOR, (int)s->port, (int)s->timeout_s, &s->net);
        dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    }
    if (cond.good())
        cond = ASC_setTransportLayer(s->net, &s->layer, 0);
    if (cond.bad()) {
        *msg = std::string("ASC_initializeNetwork: ") + cond.text();
        return MMS_EDIMSE;
    }
    // no reverse lookup of the peer while ext_lock is held: a slow resolver would be a lock
    // that one peer holds for all
    dcmDisableGethostbyaddr.set(OFTrue);
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
        *msg = std::string("pipe: ") + mms_strerror(mms_err_errno());
        return MMS_EDIMSE;
    }
    s->stop_rd = p[0];
    s->stop_wr = p[1];
    try {
        s->listener = std::thread(listen_loop, s.get());
    } catch (const std::system_error &) {
        *msg = "cannot start the listening thread";
        return MMS_ENOMEM;
    }
    return 0;
}

void
release(mms_scp *s)
{
    if (s->listener.joinable()) {
        (void)!write(s->stop_wr, "x", 1);
        s->listener.join();
    }
    if (s->net != nullptr)
        ASC_dropNetwork(&s->net);
    for (int fd : {s->listen_fd, s->stop_rd, s->stop_wr})
        if (fd >= 0)
            close(fd);
    mms_tls_unref(s->tls);
    delete s;
}

} // namespace

extern "C" int
mms_cidr_match(const char *list, const char *addr)
{
    return mms_net_cidr_match(list, addr, nullptr, 0);
}

extern "C" int
mms_scp_start(const struct mms_scp_opts *o, struct mms_scp **out, char *why, size_t why_len)
{
    std::unique_ptr<mms_scp> s;
    std::string msg;
    int rc;
    try {
        if (o == nullptr || out == nullptr)
            return mms_why(why, why_len, MMS_EINVAL, "no options");
        mms__route_dcmtk_log();
        s.reset(new mms_scp);
        rc = start(o, s, &msg);
    } catch (const std::bad_alloc &) {
        rc = MMS_ENOMEM;
        msg = "out of memory";
    } catch (...) {
        rc = MMS_EDICOM;
        msg = "unexpected exception";
    }
    if (rc < 0) {
        if (s)
            release(s.release());
        return mms_why(why, why_len, rc, "Store SCP: %s", msg.c_str());
    }
    *out = s.release();
    return 0;
}

extern "C" uint64_t
mms_scp_refused(const struct mms_scp *s, enum mms_scp_refusal r)
{
    if (s == nullptr || r < 0 || r >= MMS_SCP_REFUSED_N)
        return 0;
    return s->refused[r].load(std::memory_order_relaxed);
}

extern "C" const char *
mms_scp_refusal_name(enum mms_scp_refusal r)
{
    return r >= 0 && r < MMS_SCP_REFUSED_N ? refusal_names[r] : nullptr;
}

extern "C" int
mms_scp_set_tls(struct mms_scp *s, struct mms_tls *t)
{
    if (s == nullptr || t == nullptr)
        return MMS_EINVAL;
    mms_tls *old;
    {
        std::lock_guard<std::mutex> g(s->lock);
        if (s->tls == nullptr)
            return MMS_EINVAL;
        old = s->tls;
        s->tls = mms_tls_ref(t);
    }
    mms_tls_unref(old);
    return 0;
}

extern "C" unsigned
mms_scp_port(const struct mms_scp *s)
{
    return s != nullptr ? s->port : 0;
}

extern "C" unsigned
mms_scp_connections(const struct mms_scp *s)
{
    return s != nullptr ? s->connections.load() : 0;
}

extern "C" void
mms_scp_stop(struct mms_scp *s)
{
    if (s == nullptr)
        return;
    try {
        release(s);
    } catch (...) {
        mms_log(MMS_LOG_ERR, "Store SCP: unexpected exception while stopping");
    }
}

// DCMTK's oflog prints INFO and up on stderr by default: a line per association and per
// C-STORE, unformatted, beside our own. Our log lines already carry the OFCondition text
// with the peer and the call (style.md 2.4, "log once"), so DCMTK's own messages from WARN
// up are routed into mms_log at DEBUG, and nothing of DCMTK reaches stderr directly. This is
// process-wide: every DCMTK user in the process logs this way from the first call.
class mms__dcmtk_log_sink : public dcmtk::log4cplus::Appender
{
  public:
    ~mms__dcmtk_log_sink() override
    {
        destructorImpl();
    }
    void
    close() override
    {
    }

  protected:
    void
    append(const dcmtk::log4cplus::spi::InternalLoggingEvent &ev) override
    {
        mms_log(MMS_LOG_DEBUG, "dcmtk %s: %s", ev.getLoggerName().c_str(), ev.getMessage().c_str());
    }
};

void
mms__route_dcmtk_log()
{
    static std::once_flag once;
    std::call_once(once, [] {
        dcmtk::log4cplus::Logger root = dcmtk::log4cplus::Logger::getRoot();
        root.removeAllAppenders();
        root.addAppender(dcmtk::log4cplus::SharedAppenderPtr(new mms__dcmtk_log_sink));
        root.setLogLevel(OFLogger::WARN_LOG_LEVEL);
    });
}

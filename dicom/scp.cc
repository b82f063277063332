// dicom: the Store SCP (scp.h) on DCMTK's SCP pool: one listening thread (ours), one worker
// thread per association (DCMTK's, at most max_associations), each C-STORE received
// bit-preserving into a file of its own. Threads: see scp.h.
#include "dicom/scp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/dcmnet/scppool.h>
#include <dcmtk/oflog/oflog.h>

#include "common/err.h"
#include "common/log.h"

namespace
{

// The options with their strings owned.
struct settings {
    std::string ae, bind, calling, hosts, tmp_dir, space_dir;
    uint64_t min_free;
    mms_scp_store_fn on_store;
    void *ctx;
    bool loopback_only; // bind is a loopback address: DCMTK listens on all (see start)
};

// The SCP whose settings the workers use. DCMTK's pool constructs its workers itself, with no
// argument, so they find their settings here: one Store SCP per process.
std::mutex active_lock;
const settings *active;

const char *const ct_classes[] = {UID_CTImageStorage, UID_EnhancedCTImageStorage,
                                  UID_LegacyConvertedEnhancedCTImageStorage};

const char *const transfer_syntaxes[] = {
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

bool
in_ae_list(const std::string &list, const std::string &ae)
{
    std::stringstream ss(list);
    std::string item;
    while (std::getline(ss, item, ',')) {
        size_t b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
        if (b != std::string::npos && item.substr(b, e - b + 1) == ae)
            return true;
    }
    return false;
}

bool
is_loopback(const std::string &ip)
{
    return ip.rfind("127.", 0) == 0 || ip == "::1" || ip.rfind("::ffff:127.", 0) == 0;
}

class store_worker : public DcmThreadSCP
{
  protected:
    const settings &
    s() const
    {
        return *active;
    }

    OFBool
    checkCalledAETitleAccepted(const OFString &called) override
    {
        if (called == s().ae.c_str())
            return OFTrue;
        mms_log(MMS_LOG_NOTICE, "association from %s refused: called AE title '%s' is not ours",
                getPeerIP().c_str(), called.c_str());
        return OFFalse;
    }

    OFBool
    checkCallingAETitleAccepted(const OFString &calling) override
    {
        if (s().calling.empty() || in_ae_list(s().calling, calling.c_str()))
            return OFTrue;
        mms_log(MMS_LOG_NOTICE,
                "association from %s refused: calling AE title '%s' is not in "
                "allowed_calling_aes",
                getPeerIP().c_str(), calling.c_str());
        return OFFalse;
    }

    // DCMTK 3.6.7 passes the called presentation address here (empty); the peer's IP
    // address is what is checked
    OFBool
    checkCallingHostAccepted(const OFString &) override
    {
        std::string ip = getPeerIP().c_str();
        bool ok = s().hosts.empty() || mms_cidr_match(s().hosts.c_str(), ip.c_str()) == 1;
        if (ok && s().loopback_only && !is_loopback(ip))
            ok = false;
        if (!ok)
            mms_log(MMS_LOG_NOTICE, "association from %s refused: host not allowed", ip.c_str());
        return ok ? OFTrue : OFFalse;
    }

    OFCondition
    handleIncomingCommand(T_DIMSE_Message *msg, const DcmPresentationContextInfo &info) override
    {
        if (msg->CommandField != DIMSE_C_STORE_RQ)
            return DcmThreadSCP::handleIncomingCommand(msg, info);
        return store(msg->msg.CStoreRQ, info.presentationContextID);
    }

  private:
    OFCondition
    store(T_DIMSE_C_StoreRQ &req, T_ASC_PresentationContextID pres)
    {
        uint8_t r[8];
        char path[4200];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
            return respond(pres, req, 0xA700, "no random name");
        std::snprintf(path, sizeof path, "%s/rx-%02x%02x%02x%02x%02x%02x%02x%02x.dcm",
                      s().tmp_dir.c_str(), r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
        OFCondition cond = receiveSTORERequest(req, pres, path);
        if (cond.bad()) {
            unlink(path);
            mms_log(MMS_LOG_WARNING, "C-STORE from %s@%s: receiving failed: %s",
                    getPeerAETitle().c_str(), getPeerIP().c_str(), cond.text());
            return cond;
        }
        uint16_t status;
        struct statvfs v;
        if (statvfs(s().space_dir.c_str(), &v) != 0 ||
            (uint64_t)v.f_bavail * (uint64_t)v.f_frsize < s().min_free) {
            unlink(path);
            return respond(pres, req, 0xA700, "free space under min_free_mb");
        }
        if (req.AffectedSOPInstanceUID[0] == '\0') {
            unlink(path);
            return respond(pres, req, 0xC000, "no Affected SOP Instance UID");
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        bool synced = fd >= 0 && fsync(fd) == 0;
        if (fd >= 0)
            close(fd);
        if (!synced) {
            unlink(path);
            return respond(pres, req, 0xA700, "the received file could not be synced");
        }
        std::string ae = getPeerAETitle().c_str(), ip = getPeerIP().c_str();
        struct mms_scp_store st = {path, ae.c_str(), ip.c_str(), req.AffectedSOPClassUID,
                                   req.AffectedSOPInstanceUID};
        status = s().on_store(s().ctx, &st);
        return respond(pres, req, status, nullptr);
    }

    OFCondition
    respond(T_ASC_PresentationContextID pres, T_DIMSE_C_StoreRQ &req, uint16_t status,
            const char *why)
    {
        if (why != nullptr)
            mms_log(MMS_LOG_WARNING, "C-STORE from %s@%s answered 0x%04X: %s",
                    getPeerAETitle().c_str(), getPeerIP().c_str(), status, why);
        return sendSTOREResponse(pres, req, status);
    }
};

typedef DcmSCPPool<store_worker> pool_t;

int
fail(char *why, size_t why_len, int rc, const std::string &msg)
{
    if (why != nullptr && why_len > 0)
        std::snprintf(why, why_len, "%s", msg.c_str());
    return rc;
}

// Listen once on the port to see that it is free, or find a free one for port 0 (DCMTK
// opens its own socket in the listening thread, where an error would come too late).
int
probe_port(unsigned port, unsigned *out, std::string *msg)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *msg = mms_strerror(mms_err_errno());
        return MMS_EDIMSE;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons((uint16_t)port);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        *msg = "port " + std::to_string(port) + ": " + mms_strerror(mms_err_errno());
        close(fd);
        return MMS_EDIMSE;
    }
    *out = ntohs(a.sin_port);
    close(fd);
    return 0;
}

} // namespace

struct mms_scp {
    settings s;
    pool_t pool;
    std::thread thread;
    unsigned port;
};

extern "C" int
mms_cidr_match(const char *list, const char *addr)
{
    if (list == nullptr || addr == nullptr)
        return MMS_EINVAL;
    // the address as 16 bytes, IPv4 as IPv4-mapped IPv6
    unsigned char a[16];
    struct in_addr v4;
    std::string as = addr;
    if (inet_pton(AF_INET, as.c_str(), &v4) == 1) {
        std::memset(a, 0, 10);
        a[10] = a[11] = 0xff;
        std::memcpy(a + 12, &v4, 4);
    } else if (inet_pton(AF_INET6, as.c_str(), a) != 1) {
        return MMS_EINVAL;
    }
    std::stringstream ss(list);
    std::string item;
    bool any = false, match = false;
    while (std::getline(ss, item, ',')) {
        size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
        if (b == std::string::npos)
            continue;
        item = item.substr(b, e - b + 1);
        any = true;
        std::string host = item;
        int bits = -1;
        size_t slash = item.find('/');
        if (slash != std::string::npos) {
            host = item.substr(0, slash);
            char *end;
            long n = std::strtol(item.c_str() + slash + 1, &end, 10);
            if (end == item.c_str() + slash + 1 || *end != '\0' || n < 0 || n > 128)
                return MMS_EINVAL;
            bits = (int)n;
        }
        unsigned char net[16];
        if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
            if (bits > 32)
                return MMS_EINVAL;
            std::memset(net, 0, 10);
            net[10] = net[11] = 0xff;
            std::memcpy(net + 12, &v4, 4);
            bits = bits < 0 ? 128 : 96 + bits;
        } else if (inet_pton(AF_INET6, host.c_str(), net) == 1) {
            bits = bits < 0 ? 128 : bits;
        } else {
            return MMS_EINVAL;
        }
        bool same = true;
        for (int i = 0; i < bits && same; i++)
            same = ((a[i / 8] ^ net[i / 8]) & (0x80 >> (i % 8))) == 0;
        match = match || same;
    }
    return !any || match ? 1 : 0;
}

extern "C" int
mms_scp_start(const struct mms_scp_opts *o, struct mms_scp **out, char *why, size_t why_len)
{
    if (o == nullptr || out == nullptr || o->on_store == nullptr || o->ae_title == nullptr ||
        o->tmp_dir == nullptr || o->space_dir == nullptr || o->max_associations < 1)
        return fail(why, why_len, MMS_EINVAL, "invalid Store SCP options");
    if (o->allowed_hosts != nullptr && o->allowed_hosts[0] != '\0' &&
        mms_cidr_match(o->allowed_hosts, "127.0.0.1") < 0)
        return fail(why, why_len, MMS_EINVAL,
                    std::string("allowed_hosts: not a list of addresses or CIDR blocks: ") +
                        o->allowed_hosts);
    std::lock_guard<std::mutex> g(active_lock);
    if (active != nullptr)
        return fail(why, why_len, MMS_EINVAL, "a Store SCP runs already in this process");
    mms_scp *scp;
    try {
        scp = new mms_scp;
        settings &s = scp->s;
        s.ae = o->ae_title;
        s.bind = o->bind != nullptr ? o->bind : "0.0.0.0";
        s.calling = o->allowed_calling_aes != nullptr ? o->allowed_calling_aes : "";
        s.hosts = o->allowed_hosts != nullptr ? o->allowed_hosts : "";
        s.tmp_dir = o->tmp_dir;
        s.space_dir = o->space_dir;
        s.min_free = o->min_free_bytes;
        s.on_store = o->on_store;
        s.ctx = o->ctx;
        // DCMTK 3.6.7 listens on every IPv4 address; a loopback bind address is kept by
        // refusing associations from other hosts
        s.loopback_only = is_loopback(s.bind);
        if (!s.loopback_only && s.bind != "0.0.0.0" && s.bind != "::")
            mms_log(MMS_LOG_WARNING,
                    "[scp] bind = %s: DCMTK listens on all IPv4 addresses; use allowed_hosts "
                    "to restrict who may connect",
                    s.bind.c_str());
    } catch (const std::bad_alloc &) {
        return fail(why, why_len, MMS_ENOMEM, "out of memory");
    }
    std::string msg;
    int rc = probe_port(o->port, &scp->port, &msg);
    if (rc < 0) {
        delete scp;
        return fail(why, why_len, rc, "cannot listen: " + msg);
    }
    // DCMTK's own log says what the daemon's log already says, less plainly
    OFLog::configure(OFLogger::ERROR_LOG_LEVEL);
    DcmSCPConfig &cfg = scp->pool.getConfig();
    cfg.setPort((Uint16)scp->port);
    cfg.setAETitle(scp->s.ae.c_str());
    cfg.setMaxReceivePDULength(o->max_pdu);
    cfg.setACSETimeout(o->timeout_s);
    cfg.setDIMSETimeout(o->timeout_s);
    cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    // the listening thread wakes up every second to see whether it should stop
    cfg.setConnectionBlockingMode(DUL_NOBLOCK);
    cfg.setConnectionTimeout(1);
    cfg.setHostLookupEnabled(OFFalse);
    OFList<OFString> ts;
    for (const char *t : transfer_syntaxes)
        ts.push_back(t);
    OFList<OFString> echo_ts;
    echo_ts.push_back(UID_LittleEndianExplicitTransferSyntax);
    echo_ts.push_back(UID_LittleEndianImplicitTransferSyntax);
    OFCondition cond = cfg.addPresentationContext(UID_VerificationSOPClass, echo_ts);
    if (o->accept_all) {
        for (int i = 0; cond.good() && i < numberOfDcmAllStorageSOPClassUIDs; i++)
            cond = cfg.addPresentationContext(dcmAllStorageSOPClassUIDs[i], ts);
    } else {
        for (const char *c : ct_classes)
            if (cond.good())
                cond = cfg.addPresentationContext(c, ts);
    }
    if (cond.bad()) {
        delete scp;
        return fail(why, why_len, MMS_EDIMSE, std::string("presentation contexts: ") + cond.text());
    }
    scp->pool.setMaxThreads((Uint16)o->max_associations);
    active = &scp->s;
    try {
        scp->thread = std::thread([scp] {
            OFCondition c = scp->pool.listen();
            if (c.bad())
                mms_log(MMS_LOG_ERR, "Store SCP: listening stopped: %s", c.text());
        });
    } catch (...) {
        active = nullptr;
        delete scp;
        return fail(why, why_len, MMS_ENOMEM, "cannot start the listening thread");
    }
    *out = scp;
    return 0;
}

extern "C" unsigned
mms_scp_port(const struct mms_scp *s)
{
    return s->port;
}

extern "C" void
mms_scp_stop(struct mms_scp *s)
{
    if (s == nullptr)
        return;
    s->pool.stopAfterCurrentAssociations();
    if (s->thread.joinable())
        s->thread.join();
    std::lock_guard<std::mutex> g(active_lock);
    active = nullptr;
    delete s;
}

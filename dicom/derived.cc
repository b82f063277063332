// dicom: what the writers of mmsegd's own objects share (derived-impl.hh). Threads: any.
#include "dicom/derived-impl.hh"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "common/err.h"
#include "common/log.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcvrlo.h>
#include <dcmtk/dcmdata/dcvrsh.h>
#include <dcmtk/dcmdata/dcwcache.h>

// A decimal string of v as DICOM DS wants it (at most 16 characters).
std::string
mms__ds(double v)
{
    std::string s;
    mms__ds_append(s, v);
    return s;
}

void
mms__ds_append(std::string &out, double v)
{
    char buf[32];
    int n = 0;
    for (int prec = 10; prec > 0; prec--)
        if ((n = snprintf(buf, sizeof buf, "%.*g", prec, v)) <= 16)
            break;
    out.append(buf, (size_t)n);
}

int
mms__dcm_fail(char *why, size_t why_len, const char *what, const OFCondition &c)
{
    return mms_why(why, why_len, MMS_EDICOM, "%s: %s", what, c.text());
}

// e, given the value text, appended to item (callers append in tag order, so the insertion
// finds its place at the end at once). e is consumed.
OFCondition
mms__dcm_put(DcmItem &item, DcmElement *e, const char *text)
{
    OFCondition c = e->putString(text);
    if (c.good())
        c = item.insert(e);
    if (c.bad())
        delete e;
    return c;
}

// A sequence key with one new, empty item, appended to item; that item in *out.
OFCondition
mms__dcm_put_item(DcmItem &item, const DcmTagKey &key, DcmItem **out)
{
    std::unique_ptr<DcmSequenceOfItems> sq(new DcmSequenceOfItems(DcmTag(key, EVR_SQ)));
    std::unique_ptr<DcmItem> it(new DcmItem());
    OFCondition c = sq->append(it.get());
    if (c.bad())
        return c;
    *out = it.release();
    c = item.insert(sq.get());
    if (c.good())
        sq.release();
    return c;
}

// A code sequence key of one item (Code Value, Coding Scheme Designator, Code Meaning).
OFCondition
mms__dcm_put_code(DcmItem &item, const DcmTagKey &key, const char *value, const char *scheme,
                  const char *meaning)
{
    DcmItem *code = NULL;
    OFCondition c = mms__dcm_put_item(item, key, &code);
    if (c.good())
        c = mms__dcm_put(*code, new DcmShortString(DcmTag(DCM_CodeValue, EVR_SH)), value);
    if (c.good())
        c = mms__dcm_put(*code, new DcmShortString(DcmTag(DCM_CodingSchemeDesignator, EVR_SH)),
                         scheme);
    if (c.good())
        c = mms__dcm_put(*code, new DcmLongString(DcmTag(DCM_CodeMeaning, EVR_LO)), meaning);
    return c;
}

// Every element of item (not in sequences) whose value breaks its VR is left empty, with a
// warning naming it, source and what (the object written).
OFCondition
mms__dcm_blank_invalid(DcmItem &item, const char *source, const char *what)
{
    for (unsigned long i = 0; i < item.card(); i++) {
        DcmElement *e = item.getElement(i);
        if (e == NULL || e->ident() == EVR_SQ || e->getLength() == 0 ||
            e->checkValue("1-n", OFFalse).good())
            continue;
        OFString value;
        e->getOFStringArray(value);
        mms_log(MMS_LOG_WARNING, "%s: %s %s '%.64s' is not valid %s: left empty in the %s", source,
                DcmTag(e->getTag()).getTagName(), e->getTag().toString().c_str(), value.c_str(),
                DcmVR(e->getVR()).getVRName(), what);
        OFCondition c = e->putString("");
        if (c.bad())
            return c;
    }
    return EC_Normal;
}

int
mms__dcm_copy_source(DcmItem &dst, const char *source, const char *study_uid, const char *what,
                     char *why, size_t why_len)
{
    struct copied {
        DcmTagKey key;
        bool type2; // present, empty if need be
    };
    static const copied tags[] = {
        {DCM_SpecificCharacterSet, false},
        {DCM_StudyDate, true},
        {DCM_StudyTime, true},
        {DCM_AccessionNumber, true},
        {DCM_ReferringPhysicianName, true},
        {DCM_StudyDescription, false},
        {DCM_PatientName, true},
        {DCM_PatientID, true},
        {DCM_PatientBirthDate, true},
        {DCM_PatientSex, true},
        {DCM_StudyID, true},
    };
    DcmFileFormat src;
    // values over 4 KiB (pixel data) stay in the file
    OFCondition c = src.loadFile(source, EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (c.bad())
        return mms__dcm_fail(why, why_len, source, c);
    DcmDataset *ds = src.getDataset();
    for (const copied &t : tags) {
        DcmElement *e = NULL;
        if (ds->findAndGetElement(t.key, e).good() && e != NULL) {
            DcmElement *copy = OFstatic_cast(DcmElement *, e->clone());
            c = copy != NULL ? dst.insert(copy, OFTrue) : EC_MemoryExhausted;
            if (c.bad())
                delete copy;
        } else if (t.type2) {
            c = dst.insertEmptyElement(DcmTag(t.key), OFTrue);
        }
        if (c.bad())
            return mms__dcm_fail(why, why_len, source, c);
    }
    c = mms__dcm_blank_invalid(dst, source, what);
    if (c.good())
        c = dst.putAndInsertString(DCM_StudyInstanceUID, study_uid);
    return c.good() ? 0 : mms__dcm_fail(why, why_len, source, c);
}

OFCondition
mms__dcm_put_series(DcmItem &ds, const struct mms__dcm_series &s)
{
    char number[16];
    snprintf(number, sizeof number, "%d", s.series_number);
    const struct {
        DcmTagKey key;
        const char *value;
    } text[] = {
        {DCM_SOPClassUID, s.sop_class},
        {DCM_SOPInstanceUID, s.sop_instance},
        {DCM_Modality, s.modality},
        {DCM_Manufacturer, "mmsegd"},
        {DCM_SeriesDescription, s.description},
        {DCM_ManufacturerModelName, "mmsegd"},
        {DCM_SoftwareVersions, s.software_version},
        {DCM_SeriesInstanceUID, s.series_uid},
        {DCM_SeriesNumber, number},
        {DCM_InstanceNumber, "1"},
    };
    OFCondition c = EC_Normal;
    for (size_t i = 0; c.good() && i < sizeof text / sizeof text[0]; i++)
        c = ds.putAndInsertString(text[i].key, text[i].value);
    return c;
}

void
mms__dcm_now(char date[16], char time_of_day[16])
{
    time_t now = time(NULL);
    struct tm t;
    localtime_r(&now, &t);
    strftime(date, 16, "%Y%m%d", &t);
    strftime(time_of_day, 16, "%H%M%S", &t);
}

namespace
{

// A DCMTK output stream into the file descriptor fd, through a buffer: DCMTK writes a data set
// element by element, a few bytes at a time. The first error is kept (as -errno).
class fd_consumer : public DcmConsumer
{
  public:
    explicit fd_consumer(int fd) : fd_(fd), err_(0), buf_(256 * 1024), n_(0)
    {
    }
    OFBool
    good() const override
    {
        return err_ == 0;
    }
    OFCondition
    status() const override
    {
        return err_ == 0 ? EC_Normal : EC_InvalidStream;
    }
    OFBool
    isFlushed() const override
    {
        return n_ == 0;
    }
    offile_off_t
    avail() const override
    {
        return 2147483647; // as DCMTK's file consumer: no limit
    }
    offile_off_t
    write(const void *buf, offile_off_t buflen) override
    {
        const size_t len = (size_t)buflen;
        if (n_ + len > buf_.size())
            flush();
        if (len >= buf_.size()) // large (a block of Pixel Data): straight through
            mms__dcm_put((const char *)buf, len);
        else if (err_ == 0) {
            memcpy(buf_.data() + n_, buf, len);
            n_ += len;
        }
        return err_ == 0 ? buflen : 0;
    }
    void
    flush() override
    {
        mms__dcm_put(buf_.data(), n_);
        n_ = 0;
    }
    int
    error() const
    {
        return err_;
    }

  private:
    void
    mms__dcm_put(const char *p, size_t len)
    {
        while (err_ == 0 && len > 0) {
            ssize_t w = ::write(fd_, p, len);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                err_ = w < 0 ? -errno : -EIO;
                break;
            }
            p += w;
            len -= (size_t)w;
            written_ += (size_t)w;
        }
#if defined(SYNC_FILE_RANGE_WRITE)
        // start writing back what is written, so that the fsync() that follows has less left
        if (err_ == 0 && written_ - synced_ >= 8u << 20) {
            sync_file_range(fd_, (off_t)synced_, (off_t)(written_ - synced_),
                            SYNC_FILE_RANGE_WRITE);
            synced_ = written_;
        }
#endif
    }

    int fd_, err_;
    std::vector<char> buf_;
    size_t n_, written_ = 0, synced_ = 0;
};

class fd_stream : public DcmOutputStream
{
  public:
    explicit fd_stream(int fd) : DcmOutputStream(&consumer_), consumer_(fd)
    {
    }
    int
    error() const
    {
        return consumer_.error();
    }

  private:
    fd_consumer consumer_;
};

// ff written into fd (explicit VR little endian, as DcmFileFormat::saveFile writes it, without
// recomputing group lengths: the data set has none). tmp names fd's file in messages.
int
write_fd(DcmFileFormat &ff, int fd, const char *tmp, char *why, size_t why_len)
{
    fd_stream out(fd);
    DcmWriteCache wcache;
    ff.transferInit();
    OFCondition c = ff.write(out, EXS_LittleEndianExplicit, EET_UndefinedLength, &wcache,
                             EGL_noChange, EPD_noChange, 0, 0, 0, EWM_fileformat);
    ff.transferEnd();
    if (c.good())
        out.flush();
    if (out.error() < 0)
        return mms_why(why, why_len, out.error(), "%s: %s", tmp, mms_strerror(out.error()));
    if (c.bad())
        return mms__dcm_fail(why, why_len, tmp, c);
    return 0;
}

} // namespace

// ff saved to path through path.tmp, synced and renamed into place.
int
mms__dcm_save(DcmFileFormat &ff, const char *path, char *why, size_t why_len)
{
    std::string tmp = std::string(path) + ".tmp";
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        int rc = mms_err_errno();
        return mms_why(why, why_len, rc, "%s: %s", tmp.c_str(), mms_strerror(rc));
    }
    int rc;
    try {
        rc = write_fd(ff, fd, tmp.c_str(), why, why_len);
    } catch (...) {
        close(fd);
        unlink(tmp.c_str());
        throw;
    }
    if (rc == 0 && fsync(fd) != 0) {
        rc = mms_err_errno();
        mms_why(why, why_len, rc, "%s: fsync: %s", tmp.c_str(), mms_strerror(rc));
    }
    if (close(fd) != 0 && rc == 0) {
        rc = mms_err_errno();
        mms_why(why, why_len, rc, "%s: close: %s", tmp.c_str(), mms_strerror(rc));
    }
    if (rc == 0 && rename(tmp.c_str(), path) != 0) {
        rc = mms_err_errno();
        mms_why(why, why_len, rc, "%s: %s", path, mms_strerror(rc));
    }
    if (rc < 0)
        unlink(tmp.c_str());
    return rc;
}

// dicom: helpers shared by the GDCM readers (module-private; C++ only).
#ifndef MMS_DICOM_IMPL_HH
#define MMS_DICOM_IMPL_HH

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>

#include <gdcmDataSet.h>
#include <gdcmStringFilter.h>
#include <gdcmTag.h>

#include "common/err.h"

// Write "PATH: msg" into why (may be null) and return rc.
inline int
mms__dicom_fail(char *why, size_t why_len, int rc, const char *path, const char *msg)
{
    if (why != nullptr && why_len > 0)
        std::snprintf(why, why_len, "%s: %s", path, msg);
    return rc;
}

// Open a regular, non-empty file for reading: the descriptor in *fd and its size in *size,
// or a negative code with the reason in *msg.
inline int
mms__dicom_open(const char *path, int *fd, uint64_t *size, std::string *msg)
{
    struct stat sb;
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0 || fstat(f, &sb) != 0) {
        int rc = -errno;
        if (f >= 0)
            close(f);
        *msg = mms_strerror(rc);
        return rc;
    }
    const char *bad = !S_ISREG(sb.st_mode) ? "not a regular file"
                      : sb.st_size == 0    ? "empty file"
                                           : nullptr;
    if (bad != nullptr) {
        close(f);
        *msg = bad;
        return MMS_EDICOM;
    }
    *fd = f;
    *size = (uint64_t)sb.st_size;
    return 0;
}

// The value of data element de as text with padding removed ("" when empty).
inline std::string
mms__dicom_element_text(const gdcm::StringFilter &sf, const gdcm::DataElement &de)
{
    // no text in a sequence or in fragments; GDCM 3.0.21's StringFilter asserts on the 64-bit
    // VRs (found by fuzz-prescan: SOP Class UID written as UV)
    const gdcm::VR::VRType vr = de.GetVR();
    if (de.IsEmpty() || de.GetByteValue() == nullptr || vr == gdcm::VR::SQ || vr == gdcm::VR::UV ||
        vr == gdcm::VR::SV || vr == gdcm::VR::OV)
        return std::string();
    std::string v = sf.ToString(de);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\0'))
        v.pop_back();
    size_t b = 0;
    while (b < v.size() && v[b] == ' ')
        b++;
    return v.substr(b);
}

// The value of tag (g, e) of ds as text with padding removed ("" when absent or empty).
inline std::string
mms__dicom_text(const gdcm::StringFilter &sf, const gdcm::DataSet &ds, uint16_t g, uint16_t e)
{
    gdcm::Tag t(g, e);
    if (!ds.FindDataElement(t))
        return std::string();
    return mms__dicom_element_text(sf, ds.GetDataElement(t));
}

// Up to n finite numbers of a multi-valued decimal string (values separated by '\'); the
// count read.
inline int
mms__dicom_numbers(const std::string &s, double *out, int n)
{
    int k = 0;
    const char *p = s.c_str();
    while (k < n && *p != '\0') {
        char *end;
        double v = std::strtod(p, &end);
        if (end == p || !std::isfinite(v))
            break;
        out[k++] = v;
        p = end;
        while (*p == ' ')
            p++;
        if (*p != '\\')
            break;
        p++;
    }
    return k;
}

// Route DCMTK's oflog messages from WARN up into mms_log at DEBUG, once per process (scp.cc).
void mms__route_dcmtk_log();

#endif

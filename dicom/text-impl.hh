/* dicom/: small text helpers shared by the Store SCP and SCU (C++ only, no toolkit). */
#ifndef MMS_DICOM_TEXT_IMPL_HH
#define MMS_DICOM_TEXT_IMPL_HH

#include <string>

/* Text without its leading and trailing blanks (spaces, tabs). */
inline std::string
mms__trim(const std::string &s)
{
    size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

/* Received text made safe for a log line: at most 64 printable characters ("" for NULL). */
inline std::string
mms__printable(const char *s)
{
    std::string out;
    for (; s != nullptr && *s != '\0' && out.size() < 64; s++)
        out += *s >= 0x20 && *s < 0x7f ? *s : '?';
    return out;
}

/* An AE title as PS3.5 allows it (trimmed): 1 to 16 characters of the default repertoire
 * without backslash or control characters. */
inline bool
mms__ae_valid(const std::string &ae)
{
    if (ae.empty() || ae.size() > 16)
        return false;
    for (char c : ae)
        if (c < 0x20 || c >= 0x7f || c == '\\')
            return false;
    return true;
}

#endif

// dicom: what the writers of mmsegd's own objects (the SEG, the RT Structure Set, the
// Secondary Capture) share: dcmdata element helpers and the synced save (module-private; C++
// only). Threads: any.
#ifndef MMS_DICOM_DERIVED_IMPL_HH
#define MMS_DICOM_DERIVED_IMPL_HH

#include <stddef.h>

#include <string>

#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>

// A decimal string of v as DICOM DS wants it (at most 16 characters).
std::string mms__ds(double v);
// The same, appended to out.
void mms__ds_append(std::string &out, double v);

// MMS_EDICOM with "what: DCMTK's text of c" in why.
int mms__dcm_fail(char *why, size_t why_len, const char *what, const OFCondition &c);

// e, given the value text, appended to item (callers append in tag order, so the insertion
// finds its place at the end at once). e is consumed.
OFCondition mms__dcm_put(DcmItem &item, DcmElement *e, const char *text);

// A sequence key with one new, empty item, appended to item; that item in *out.
OFCondition mms__dcm_put_item(DcmItem &item, const DcmTagKey &key, DcmItem **out);

// A code sequence key of one item (Code Value, Coding Scheme Designator, Code Meaning).
OFCondition mms__dcm_put_code(DcmItem &item, const DcmTagKey &key, const char *value,
                              const char *scheme, const char *meaning);

// Every element of item (not in sequences) whose value breaks its VR (a date of "00000000",
// control characters in a name: what a source may carry) is left empty, with a warning naming
// the element, the source file and what is written ("SEG").
OFCondition mms__dcm_blank_invalid(DcmItem &item, const char *source, const char *what);

// Patient and study of a new object from its source file: Specific Character Set, the Patient
// module (Patient's Name, ID, Birth Date, Sex) and the General Study module (Study Date and
// Time, Referring Physician's Name, Study ID, Accession Number, Study Description) are copied
// into dst, the Type 2 ones empty where the source lacks them, invalid values left empty
// (mms__dcm_blank_invalid, what names the object); Study Instance UID is study_uid.
// Returns 0, MMS_EDICOM or -errno (the source unreadable), with why.
int mms__dcm_copy_source(DcmItem &dst, const char *source, const char *study_uid, const char *what,
                         char *why, size_t why_len);

// A new instance in a series of its own: SOP Class and Instance UID, Modality, Series
// Instance UID, Number and Description, Instance Number 1, and the equipment (Manufacturer and
// Manufacturer's Model Name "mmsegd", Software Versions).
struct mms__dcm_series {
    const char *sop_class, *sop_instance, *modality;
    const char *series_uid, *description;
    int series_number;
    const char *software_version;
};
OFCondition mms__dcm_put_series(DcmItem &ds, const struct mms__dcm_series &s);

// The local date (YYYYMMDD) and time (HHMMSS) now, for Content or Structure Set Date and Time.
void mms__dcm_now(char date[16], char time_of_day[16]);

// ff saved to path (explicit VR little endian, group lengths as they are) through path.tmp:
// written through a buffer, handed to writeback as it grows, synced and renamed into place.
// Returns 0, MMS_EDICOM or -errno, with why.
int mms__dcm_save(DcmFileFormat &ff, const char *path, char *why, size_t why_len);

#endif

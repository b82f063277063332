#!/usr/bin/python3
"""Checks for tests/test-intake.sh and tests/test-crash.sh, on the daemon's state directory.

  intake_check.py stored STATE SRC_DIR...   every DICOM image under SRC_DIR is stored in
                                           STATE/instances/xx/yy/DIGEST.dcm, DIGEST being
                                           the SHA-256 of its data set, with the same data set
  intake_check.py ipp DB SRC_DIR           the index holds each file's ImagePositionPatient
  intake_check.py acked STATE LOG...       every file a storescu -v log shows acknowledged
                                           (Success) is stored and indexed with its data set

The data set is the file after its meta information (group 0002), which a receiver rewrites.
Exit status 0 when the check holds; the reason on standard error otherwise.
"""
import hashlib
import os
import re
import sqlite3
import struct
import sys


def dataset(path):
    """The bytes of the data set: after the file meta group (explicit VR little endian)."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 132 or b[128:132] != b"DICM":
        return b
    pos = 132
    while pos + 8 <= len(b):
        group, = struct.unpack_from("<H", b, pos)
        if group != 0x0002:
            break
        vr = b[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"):
            length, = struct.unpack_from("<I", b, pos + 8)
            pos += 12 + length
        else:
            length, = struct.unpack_from("<H", b, pos + 6)
            pos += 8 + length
    return b[pos:]


def is_image(path):
    try:
        import pydicom
        d = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return False
    return "SOPInstanceUID" in d and "Rows" in d


def stored_ok(state, path):
    data = dataset(path)
    digest = hashlib.sha256(data).hexdigest()
    dest = os.path.join(state, "instances", digest[:2], digest[2:4], digest + ".dcm")
    if not os.path.exists(dest):
        return "%s: not stored (no %s)" % (path, dest)
    if dataset(dest) != data:
        return "%s: stored data set differs" % path
    return None


def files(dirs):
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in sorted(names):
                yield os.path.join(root, n)


def cmd_stored(state, dirs):
    bad = []
    n = 0
    for p in files(dirs):
        if not is_image(p):
            continue
        n += 1
        why = stored_ok(state, p)
        if why:
            bad.append(why)
    if bad or n == 0:
        sys.stderr.write("\n".join(bad) or "no image found")
        return 1
    return 0


def index_rows(db):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    con.row_factory = sqlite3.Row
    return con


def row_ipp(row):
    keys = row.keys()
    if "ipp_x" in keys:
        return [row["ipp_x"], row["ipp_y"], row["ipp_z"]]
    return [float(v) for v in re.split(r"[\\ ,]+", str(row["ipp"]).strip()) if v]


def cmd_ipp(db, src):
    import pydicom
    con = index_rows(db)
    bad = []
    for p in files([src]):
        try:
            d = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        if "ImagePositionPatient" not in d:
            continue
        r = con.execute("select * from instances where sop_instance = ?",
                        (str(d.SOPInstanceUID),)).fetchone()
        if r is None:
            bad.append("%s: not indexed" % p)
            continue
        got = row_ipp(r)
        want = [float(v) for v in d.ImagePositionPatient]
        if any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            bad.append("%s: IPP %s, index %s" % (p, want, got))
    if bad:
        sys.stderr.write("\n".join(bad))
        return 1
    return 0


def acked_files(logs):
    """The files storescu -v logs acknowledged: it prints 'Sending file: PATH', then the
    response to it."""
    acked = []
    for log in logs:
        current = None
        with open(log, errors="replace") as f:
            for line in f:
                m = re.search(r"Sending file: (.*)$", line)
                if m:
                    current = m.group(1).strip()
                elif current and "Received Store Response (Success)" in line:
                    acked.append(current)
                    current = None
    return acked


def cmd_acked(state, logs):
    con = index_rows(os.path.join(state, "state.db"))
    acked = acked_files(logs)
    bad = []
    for p in acked:
        why = stored_ok(state, p)
        if why:
            bad.append(why)
            continue
        digest = hashlib.sha256(dataset(p)).hexdigest()
        if con.execute("select count(*) from instances where digest = ?",
                       (digest,)).fetchone()[0] != 1:
            bad.append("%s: stored but not indexed" % p)
    print("%d acknowledged instances checked" % len(acked))
    if bad:
        sys.stderr.write("\n".join(bad))
        return 1
    return 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "stored":
        return cmd_stored(argv[2], argv[3:])
    if len(argv) == 4 and argv[1] == "ipp":
        return cmd_ipp(argv[2], argv[3])
    if len(argv) >= 3 and argv[1] == "acked":
        return cmd_acked(argv[2], argv[3:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

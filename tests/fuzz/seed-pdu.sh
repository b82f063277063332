#!/bin/bash
# tests/fuzz/seed-pdu.sh OUT: the seed corpus of fuzz-pdu: what a peer sends, byte for byte
# (tests/badinput.py's PDU helpers): an A-ASSOCIATE-RQ alone; one with a C-ECHO and the
# release; one with a C-STORE of a real CT slice (pydicom's CT_small, its data set in explicit
# VR little endian) and the release; the same with the data set split over three P-DATA PDUs.
set -u
out=$1
mkdir -p "$out"
top=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON3:-/usr/bin/python3}
. "$top/tests/find-testdata.sh"
find_testdata || td=
"$python" - "$out" "$top/tests" "${td:+$td/pydicom/src/pydicom/data/test_files/CT_small.dcm}" <<'PY' || exit 0
import os, struct, sys
out, tests, ct = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, tests)
import badinput as b

class Capture:
    def __init__(self):
        self.data = b""
    def sendall(self, d):
        self.data += d

VERIFY, CT = "1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"
release = struct.pack(">BBI", 0x05, 0, 4) + b"\0" * 4

def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

rq = b._assoc_rq("MMSEGD", "FUZZ", {1: (VERIFY, ELE), 3: (CT, ELE)})
write("assoc-rq", rq)
echo = b._elem(0, 0x0002, VERIFY.encode()) + b._elem(0, 0x0100, struct.pack("<H", 0x30)) + \
    b._elem(0, 0x0110, struct.pack("<H", 1)) + b._elem(0, 0x0800, struct.pack("<H", 0x0101))
echo = b._elem(0, 0x0000, struct.pack("<I", len(echo))) + echo
c = Capture()
b._send_pdv(c, 1, echo, True)
write("echo", rq + c.data + release)
if ct:
    import io
    import pydicom
    ds = pydicom.dcmread(ct)
    buf = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = ELE
    ds.is_little_endian, ds.is_implicit_VR = True, False
    pydicom.dcmwrite(buf, ds, write_like_original=False)
    whole = buf.getvalue()
    dsb = whole[b._dataset_offset(whole):]
    c = Capture()
    b._send_pdv(c, 3, b._store_rq(1, CT, str(ds.SOPInstanceUID)), True)
    b._send_pdv(c, 3, dsb, False)
    write("store", rq + c.data + release)
    c = Capture()
    b._send_pdv(c, 3, b._store_rq(2, CT, str(ds.SOPInstanceUID)), True)
    third = len(dsb) // 3
    for i, part in enumerate((dsb[:third], dsb[third:2 * third], dsb[2 * third:])):
        pdv = struct.pack(">IBB", len(part) + 2, 3, 2 if i == 2 else 0) + part
        c.sendall(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)
    write("store-split", rq + c.data + release)
PY
exit 0

"""Bad input for the daemon, generated from a valid CT series, and a raw C-STORE client.

    badinput.py make --base DIR --out OUT
        DIR holds a valid uncompressed CT series (CT*.dcm, one slice each). OUT/cases.json
        lists the cases; each instance case is OUT/<name>.dcm (the whole file, for the drop
        folder) and OUT/<name>.ds (the bytes sent as the C-STORE data set), each series case
        a folder OUT/<name>/ of files.
    badinput.py store HOST PORT CALLED CALLING FILE.ds...
        One association; for each data set one C-STORE with the SOP Class, SOP Instance UID
        and transfer syntax of its entry in the cases.json beside it. Prints one line per data
        set: "NAME 0xSTATUS", or "NAME aborted" when the peer aborted or closed, after which
        the remaining data sets are not sent. Exit 0 when the association was accepted.

Nothing here parses what it sends: the bytes go out as generated, as a broken modality or an
attacker would send them. Each case names the finding of the robustness review it stands for.
"""

import copy
import json
import os
import socket
import struct
import sys
import warnings
import zlib

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


# ------------------------------------------------------------------------------ generation
def _load_base(base):
    import pydicom

    paths = sorted(os.path.join(base, f) for f in os.listdir(base) if f.endswith(".dcm"))
    if len(paths) < 10:
        raise SystemExit("badinput: %s holds %d slices, 10 needed" % (base, len(paths)))
    return [pydicom.dcmread(p) for p in paths]


def _encode(ds, ts):
    """(file bytes, data set bytes) of ds written with transfer syntax ts."""
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset

    ds = copy.deepcopy(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.543.1"
    ds.file_meta = meta
    ds.is_little_endian = ts != EXPLICIT_BE
    ds.is_implicit_VR = ts == IMPLICIT_LE
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, write_like_original=False)
    whole = buf.getvalue()
    return whole, whole[_dataset_offset(whole):]


def _dataset_offset(whole):
    """Offset of the data set in a Part 10 file: after the preamble, DICM and group 0002."""
    at = 132
    while at + 8 <= len(whole):
        group, _ = struct.unpack_from("<HH", whole, at)
        if group != 0x0002:
            break
        vr = whole[at + 4:at + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            at += 12 + struct.unpack_from("<I", whole, at + 8)[0]
        else:
            at += 8 + struct.unpack_from("<H", whole, at + 6)[0]
    return at


def _find_implicit(ds_bytes, tag):
    """Offset of the element with this tag in implicit VR LE data set bytes (top level)."""
    at = 0
    want = (tag >> 16, tag & 0xFFFF)
    while at + 8 <= len(ds_bytes):
        g, e, ln = struct.unpack_from("<HHI", ds_bytes, at)
        if (g, e) == want:
            return at
        if ln == 0xFFFFFFFF:
            raise ValueError("undefined length before the wanted tag")
        at += 8 + ln
    raise KeyError("%08x not found" % tag)


def _uid(n, tail):
    return "1.2.826.0.1.3680043.10.543.%d.%s" % (n, tail)


class _Cases:
    def __init__(self, out, follower):
        self.out = out
        self.follower = follower
        self.cases = []
        self.n = 0

    def instance(self, name, finding, expect, whole, ds_bytes, ts, sop_uid, sop_class=CT_IMAGE,
                 route="both"):
        with open(os.path.join(self.out, name + ".dcm"), "wb") as f:
            f.write(whole)
        with open(os.path.join(self.out, name + ".ds"), "wb") as f:
            f.write(ds_bytes)
        self.cases.append({"name": name, "kind": "instance", "finding": finding,
                           "expect": expect, "route": route, "ts": ts, "sop_class": sop_class,
                           "sop_uid": sop_uid})
        if finding != "control" and route != "drop":
            self.n += 1
            ds = _fresh(self.follower, 5000 + self.n, _uid(5000 + self.n, "9"))
            whole, dsb = _encode(ds, IMPLICIT_LE)
            self.instance("after-" + name, "control", "stored", whole, dsb, IMPLICIT_LE,
                          str(ds.SOPInstanceUID), route="store")

    def series(self, name, finding, expect, datasets, reason=None):
        d = os.path.join(self.out, name)
        os.makedirs(d, exist_ok=True)
        for i, ds in enumerate(datasets):
            whole, _ = _encode(ds, EXPLICIT_LE)
            with open(os.path.join(d, "CT%04d.dcm" % (i + 1)), "wb") as f:
                f.write(whole)
        self.cases.append({"name": name, "kind": "series", "finding": finding,
                           "expect": expect, "reason": reason,
                           "series_uid": str(datasets[0].SeriesInstanceUID),
                           "files": len(datasets)})

    def save(self):
        with open(os.path.join(self.out, "cases.json"), "w") as f:
            json.dump(self.cases, f, indent=1)


def _fresh(ds, n, series=None):
    """A copy of slice ds with new SOP Instance (and optionally Series) UIDs."""
    ds = copy.deepcopy(ds)
    ds.SOPInstanceUID = _uid(n, "1")
    if series is not None:
        ds.SeriesInstanceUID = series
    return ds


def make(base, out):
    import random

    warnings.filterwarnings("ignore", module="pydicom")

    os.makedirs(out, exist_ok=True)
    slices = _load_base(base)
    one = slices[len(slices) // 2]
    c = _Cases(out, one)
    k = 100

    # --- controls: a valid instance in every route, stored
    k += 1
    ds = _fresh(one, k, _uid(k, "9"))
    whole, dsb = _encode(ds, IMPLICIT_LE)
    c.instance("valid-implicit", "control", "stored", whole, dsb, IMPLICIT_LE,
               str(ds.SOPInstanceUID))

    # --- undefined length (0xFFFFFFFF) on text elements of an implicit VR LE data set
    for tag, what in [(0x00080018, "sop-uid"), (0x00080060, "modality"),
                      (0x0020000E, "series-uid"), (0x00200032, "ipp"), (0x00200037, "iop"),
                      (0x00280030, "pixel-spacing"), (0x00281051, "window-width")]:
        k += 1
        ds = _fresh(one, k, _uid(k, "9"))
        if tag == 0x00281051 and "WindowWidth" not in ds:
            ds.WindowWidth = "400"
            ds.WindowCenter = "40"
        whole, dsb = _encode(ds, IMPLICIT_LE)
        off = _find_implicit(dsb, tag)
        meta_len = len(whole) - len(dsb)
        dsb = bytearray(dsb)
        struct.pack_into("<I", dsb, off + 4, 0xFFFFFFFF)
        whole = bytearray(whole)
        struct.pack_into("<I", whole, meta_len + off + 4, 0xFFFFFFFF)
        c.instance("undef-len-" + what, "undefined length on a text element (implicit VR LE)",
                   "refused", bytes(whole), bytes(dsb), IMPLICIT_LE, str(ds.SOPInstanceUID))

    # --- huge declared lengths on UI / IS / UT elements, and in the file meta
    for tag, what in [(0x0020000D, "study-uid"), (0x00200013, "instance-number"),
                      (0x00204000, "image-comments")]:
        k += 1
        ds = _fresh(one, k, _uid(k, "9"))
        if tag == 0x00204000:
            ds.ImageComments = "comment"
        whole, dsb = _encode(ds, IMPLICIT_LE)
        off = _find_implicit(dsb, tag)
        meta_len = len(whole) - len(dsb)
        dsb = bytearray(dsb)
        struct.pack_into("<I", dsb, off + 4, 0xFFFFFFF0)
        whole = bytearray(whole)
        struct.pack_into("<I", whole, meta_len + off + 4, 0xFFFFFFF0)
        c.instance("huge-len-" + what, "huge element length (0xFFFFFFF0)", "refused",
                   bytes(whole), bytes(dsb), IMPLICIT_LE, str(ds.SOPInstanceUID))
    k += 1
    ds = _fresh(one, k, _uid(k, "9"))
    whole, dsb = _encode(ds, EXPLICIT_LE)
    whole = bytearray(whole)
    # (0002,0010) Transfer Syntax UID: explicit VR, 2-byte length; make the meta group length
    # (0002,0000) claim 0xFFFFFFF0 bytes instead
    struct.pack_into("<I", whole, 132 + 8, 0xFFFFFFF0)
    c.instance("huge-len-meta", "huge length in the file meta", "refused", bytes(whole), dsb,
               EXPLICIT_LE, str(ds.SOPInstanceUID), route="drop")

    # --- truncation at a few hundred bytes
    for at in (140, 454, 630):
        k += 1
        ds = _fresh(one, k, _uid(k, "9"))
        whole, dsb = _encode(ds, EXPLICIT_LE)
        meta_len = len(whole) - len(dsb)
        c.instance("truncated-%d" % at, "truncated file", "refused", whole[:at],
                   dsb[:max(0, at - meta_len)] if at > meta_len else dsb[:at], EXPLICIT_LE,
                   str(ds.SOPInstanceUID))

    # --- random byte flips in the header (fixed seeds: the same bytes every run)
    for seed in range(6):
        k += 1
        ds = _fresh(one, k, _uid(k, "9"))
        whole, dsb = _encode(ds, IMPLICIT_LE)
        meta_len = len(whole) - len(dsb)
        rng = random.Random(seed)
        header_end = _find_implicit(dsb, 0x7FE00010)
        dsb = bytearray(dsb)
        for _ in range(rng.randint(4, 8)):
            i = rng.randrange(0, header_end)
            dsb[i] ^= 1 << rng.randrange(8)
        whole = whole[:meta_len] + bytes(dsb)
        c.instance("flips-%d" % seed, "random byte flips in the header", "any", whole,
                   bytes(dsb), IMPLICIT_LE, str(ds.SOPInstanceUID))

    # --- deep nesting: 3000 levels of undefined-length sequences, in a group 0000 element
    # and in a plain private sequence, and inside a deflated data set
    def nested(levels, tag):
        g, e = tag >> 16, tag & 0xFFFF
        head = struct.pack("<HHI", g, e, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000,
                                                                  0xFFFFFFFF)
        tail = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        return head * levels + tail * levels

    for tag, what in [(0x00000901, "group0000"), (0x00091010, "private")]:
        k += 1
        ds = _fresh(one, k, _uid(k, "9"))
        whole, dsb = _encode(ds, IMPLICIT_LE)
        meta_len = len(whole) - len(dsb)
        deep = nested(3000, tag)
        if tag >> 16 == 0:
            dsb2 = deep + dsb
        else:
            at = _find_implicit(dsb, 0x00100010)  # before Patient's Name, in tag order
            dsb2 = dsb[:at] + deep + dsb[at:]
        c.instance("nested-" + what, "deep nesting the pre-scan let through", "refused",
                   whole[:meta_len] + dsb2, dsb2, IMPLICIT_LE, str(ds.SOPInstanceUID))
    k += 1
    ds = _fresh(one, k, _uid(k, "9"))
    _, dsb = _encode(ds, EXPLICIT_LE)
    at = dsb.find(struct.pack("<HH", 0x0010, 0x0010))
    levels = 3000
    deep = (struct.pack("<HH2sHI", 0x0009, 0x1010, b"SQ", 0, 0xFFFFFFFF) +
            struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)) * levels + (
            struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        ) * levels
    raw = dsb[:at] + deep + dsb[at:]
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = co.compress(raw) + co.flush()
    meta = _meta_bytes(ds, DEFLATED)
    c.instance("nested-deflated", "nesting inside a deflated data set", "refused",
               meta + deflated, deflated, DEFLATED, str(ds.SOPInstanceUID))

    # --- a deflated data set that inflates 1000-fold (a 431 KB file cost 435 MB): 256 MiB of
    # zeros in a private OB element, compressed as a stream
    k += 1
    ds = _fresh(one, k, _uid(k, "9"))
    _, dsb = _encode(ds, EXPLICIT_LE)
    at = dsb.find(struct.pack("<HH", 0x0010, 0x0010))
    zeros = 256 << 20
    creator = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 12) + b"MMSEGD TEST "
    ob = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, zeros)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [co.compress(dsb[:at] + creator + ob)]
    block = b"\0" * (1 << 20)
    for _ in range(zeros >> 20):
        parts.append(co.compress(block))
    parts.append(co.compress(dsb[at:]))
    parts.append(co.flush())
    deflated = b"".join(parts)
    c.instance("deflate-bomb", "resource amplification (deflate)", "refused",
               _meta_bytes(ds, DEFLATED) + deflated, deflated, DEFLATED,
               str(ds.SOPInstanceUID))

    # --- zero-length pixel data; dimensions promising gigabytes with a few bytes present
    for what, rows, cols, frames, px in [("zero-pixels", None, None, None, b""),
                                         ("huge-dims", 65535, 65535, 1, b"\0" * 64),
                                         ("huge-frames", 512, 512, 999999, b"\0" * 64)]:
        k += 1
        ds = _fresh(one, k, _uid(k, "9"))
        if rows is not None:
            ds.Rows, ds.Columns = rows, cols
        if frames is not None:
            ds.NumberOfFrames = frames
        ds.PixelData = px
        whole, dsb = _encode(ds, EXPLICIT_LE)
        c.instance(what, "pixel data shorter than the dimensions promise", "any", whole, dsb,
                   EXPLICIT_LE, str(ds.SOPInstanceUID))

    # --- UIDs: over 64 characters (two sharing their first 64), bad characters
    long_a = "1.2.826.0.1.3680043.10.543.7." + "1" * 40 + ".1"
    long_b = "1.2.826.0.1.3680043.10.543.7." + "1" * 40 + ".2"
    for name, uid in [("uid-long-a", long_a), ("uid-long-b", long_b),
                      ("uid-dotdot", "1.2.826.0.1.3680043.10.543..5"),
                      ("uid-slash", "1.2.826.0.1/../../etc"),
                      ("uid-newline", "1.2.826.0.1.3680043.10.543.8\n1.2")]:
        k += 1
        ds = _fresh(one, k, _uid(k, "9"))
        ds.SOPInstanceUID = uid
        whole, dsb = _encode(ds, IMPLICIT_LE)
        # the request carries the UID as DCMTK's storescu does: cut to the 64 characters a
        # UI value may have (a longer one in the command itself is a protocol error)
        c.instance(name, "invalid UID (never truncated, never a path)", "refused", whole, dsb,
                   IMPLICIT_LE, uid[:64])

    # --- the same data set again with another file meta (transfer syntax changed)
    k += 1
    ds = _fresh(one, k, _uid(k, "9"))
    whole, dsb = _encode(ds, EXPLICIT_LE)
    c.instance("dup-first", "acknowledged data overwritten (first copy)", "stored", whole, dsb,
               EXPLICIT_LE, str(ds.SOPInstanceUID))
    meta = bytearray(whole[:len(whole) - len(dsb)])
    i = meta.find(EXPLICIT_LE.encode() + b"\0")
    meta[i:i + len(EXPLICIT_BE)] = EXPLICIT_BE.encode()
    # refused and quarantined; the first copy stays byte for byte (the check at the end)
    c.instance("dup-other-meta", "acknowledged data overwritten (same bytes, other meta)",
               "refused", bytes(meta) + dsb, dsb, EXPLICIT_BE, str(ds.SOPInstanceUID),
               route="drop")

    # --- whole series with bad values (C-STORE; each must end failed or skipped, not done)
    def series_with(name, finding, expect, reason, edit):
        nonlocal k
        k += 1
        series = _uid(k, "9")
        out_ds = []
        for j, s in enumerate(slices):
            d = copy.deepcopy(s)
            d.SeriesInstanceUID = series
            d.SOPInstanceUID = _uid(k, "%d" % (j + 1))
            edit(d, j)
            out_ds.append(d)
        c.series(name, finding, expect, out_ds, reason)

    def spacing(v):
        return lambda d, j: setattr(d, "PixelSpacing", [v, v])

    series_with("series-valid", "control", "done", None, lambda d, j: None)
    series_with("spacing-1e30", "Pixel Spacing 1e30", "failed", "spacing", spacing("1e30"))
    series_with("spacing-1e308", "Pixel Spacing 1e308", "failed", "spacing", spacing("1e308"))
    series_with("spacing-1e10", "Pixel Spacing 1e10", "failed", "spacing", spacing("1e10"))
    series_with("spacing-1e-30", "Pixel Spacing 1e-30", "failed", "spacing", spacing("1e-30"))
    series_with("spacing-zero", "Pixel Spacing 0", "failed", "spacing", spacing("0"))
    series_with("spacing-negative", "Pixel Spacing -1", "failed", "spacing", spacing("-1"))
    series_with("slope-1e38", "Rescale Slope 1e38", "failed", "slope",
                lambda d, j: setattr(d, "RescaleSlope", "1e38"))
    series_with("ipp-nan", "Image Position NaN", "failed", "position",
                lambda d, j: setattr(d, "ImagePositionPatient", ["NaN", "0", str(j)]))
    series_with("ipp-same", "every slice at one position", "failed", None,
                lambda d, j: setattr(d, "ImagePositionPatient", ["0", "0", "0"]))
    series_with("for-per-slice", "one frame of reference per slice", "failed", None,
                lambda d, j: setattr(d, "FrameOfReferenceUID", _uid(9000 + j, "4")))

    c.save()
    return c.cases


def _meta_bytes(ds, ts):
    """Preamble, DICM and a file meta group for ds with transfer syntax ts."""
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.543.1"
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


# ------------------------------------------------------------------------------ raw client
def _item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _ae(s):
    return s.encode().ljust(16)[:16]


def _assoc_rq(called, calling, contexts):
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for pc_id, (abstract, ts) in contexts.items():
        body = struct.pack(">BBBB", pc_id, 0, 0, 0) + _item(0x30, abstract.encode())
        body += _item(0x40, ts.encode())
        items += _item(0x20, body)
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.10.543")
    items += _item(0x50, user)
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32 + items
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _recv_pdu(sock):
    head = b""
    while len(head) < 6:
        got = sock.recv(6 - len(head))
        if not got:
            return None, None
        head += got
    kind, _, n = struct.unpack(">BBI", head)
    body = b""
    while len(body) < n:
        got = sock.recv(min(65536, n - len(body)))
        if not got:
            return None, None
        body += got
    return kind, body


def _elem(group, elem, value):
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", group, elem, len(value)) + value


def _store_rq(msg_id, sop_class, sop_uid):
    body = (_elem(0, 0x0002, sop_class.encode()) + _elem(0, 0x0100, struct.pack("<H", 1)) +
            _elem(0, 0x0110, struct.pack("<H", msg_id)) + _elem(0, 0x0700, struct.pack("<H", 0)) +
            _elem(0, 0x0800, struct.pack("<H", 0)) + _elem(0, 0x1000, sop_uid.encode()))
    return _elem(0, 0x0000, struct.pack("<I", len(body))) + body


def _send_pdv(sock, pc_id, data, command):
    chunk = 16000
    for i in range(0, max(len(data), 1), chunk):
        part = data[i:i + chunk]
        last = i + chunk >= len(data)
        mch = (1 if command else 0) | (2 if last else 0)
        pdv = struct.pack(">IBB", len(part) + 2, pc_id, mch) + part
        sock.sendall(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)


def _status(cmd):
    at = 0
    while at + 8 <= len(cmd):
        g, e, n = struct.unpack_from("<HHI", cmd, at)
        if (g, e) == (0, 0x0900):
            return struct.unpack_from("<H", cmd, at + 8)[0]
        at += 8 + n
    return None


def store(host, port, called, calling, files):
    here = os.path.dirname(os.path.abspath(files[0]))
    with open(os.path.join(here, "cases.json")) as f:
        cases = {c["name"]: c for c in json.load(f)}
    todo = [(os.path.basename(p)[:-3], p) for p in files]
    contexts, ids = {}, {}
    for name, _ in todo:
        key = (cases[name]["sop_class"], cases[name]["ts"])
        if key not in ids:
            ids[key] = 2 * len(ids) + 1
            contexts[ids[key]] = key
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(_assoc_rq(called, calling, contexts))
    kind, body = _recv_pdu(sock)
    if kind != 0x02:
        print("association %s" % ("rejected" if kind == 0x03 else "failed"))
        return 1
    accepted = set()
    at = 68
    while at + 4 <= len(body):
        t, _, n = struct.unpack_from(">BBH", body, at)
        if t == 0x21 and body[at + 6] == 0:
            accepted.add(body[at + 4])
        at += 4 + n
    msg = 0
    for name, path in todo:
        pc_id = ids[(cases[name]["sop_class"], cases[name]["ts"])]
        if pc_id not in accepted:
            print("%s not-accepted" % name)
            continue
        msg += 1
        with open(path, "rb") as f:
            data = f.read()
        try:
            _send_pdv(sock, pc_id, _store_rq(msg, cases[name]["sop_class"],
                                             cases[name]["sop_uid"]), True)
            _send_pdv(sock, pc_id, data, False)
            cmd = b""
            while True:
                kind, body = _recv_pdu(sock)
                if kind != 0x04:
                    raise ConnectionError
                at = 0
                done = False
                while at < len(body):
                    n = struct.unpack_from(">I", body, at)[0]
                    cmd += body[at + 6:at + 4 + n]
                    done = done or bool(body[at + 5] & 2)
                    at += 4 + n
                if done:
                    break
        except (ConnectionError, OSError, struct.error):
            print("%s aborted" % name)
            for rest, _ in todo[todo.index((name, path)) + 1:]:
                print("%s not-sent" % rest)
            return 0
        print("%s 0x%04X" % (name, _status(cmd)))
    sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\0" * 4)
    _recv_pdu(sock)
    sock.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "make" and sys.argv[2] == "--base" and \
            sys.argv[4] == "--out":
        make(sys.argv[3], sys.argv[5])
    elif len(sys.argv) >= 7 and sys.argv[1] == "store":
        sys.exit(store(*sys.argv[2:6], sys.argv[6:]))
    else:
        sys.exit(__doc__)

#!/usr/bin/python3
"""Helpers of tests/test-cluster.sh (several `mmsegd serve` nodes on one PostgreSQL index).

  cluster_check.py phantoms OUT FIRST_SEED COUNT SLICES
        COUNT phantom CT series of SLICES slices of 64 x 64 (tools/mmunet/phantom_series.py,
        regular, seeds FIRST_SEED on) under OUT/phSEED; prints "DICOM_DIR SERIES_UID SLICES"
        per series, as tests/serve-util.sh's phantom_pool does
  cluster_check.py acked STATE ROWS LOG...
        every file that a storescu -v log shows acknowledged (Success) is stored in
        STATE/instances/xx/yy/DIGEST.dcm with its data set, and the instances table holds its
        SOP Instance UID with that digest: ROWS is a file of "SOP_INSTANCE|DIGEST" lines (the
        table as psql -At prints it)
  cluster_check.py segs ORTHANC_URL UID=N...
        for each source series UID with N instances: Orthanc holds exactly one SEG (one SOP
        Instance UID; Orthanc keeps one instance per UID however often it is sent) that refers
        to it, and that SEG refers to all N instances
  cluster_check.py settled STATE PATHS
        nothing is left over in the shared state_dir: instances/ holds exactly the files that
        the instances table names (PATHS: its path column, one per line), each named once;
        outbox/ and every node's nodes/NAME/tmp/ are empty
  cluster_check.py nodes STATUS_JSON [NAME...]
        the "nodes" array of `mmsegd status --json` names every NAME; prints the nodes
  cluster_check.py only-node STATUS_JSON NAME
        every job and send of `mmsegd status --json --node NAME` is NAME's; prints how many

STATUS_JSON "-" reads standard input. Exit status 0 when the check holds, with a one-line
summary on standard output; 1 with the problems on standard error.
"""
import hashlib
import json
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from intake_check import acked_files, dataset  # noqa: E402  (dataset: after the file meta)


def cmd_phantoms(out, seed, count, slices):
    sys.path.insert(0, os.path.join(HERE, "..", "tools", "mmunet"))
    import phantom_series as ps
    for s in range(seed, seed + count):
        d = os.path.join(out, "ph%d" % s)
        e = ps.write_variant(s, "regular", d, (slices, 64, 64), (7.5, 4, 4), 0.0)
        print(os.path.join(d, "dicom"), e["series_uid"], e["dims"][2])
    return [], None




def cmd_acked(state, rows_file, logs):
    import pydicom
    rows = {}
    with open(rows_file) as f:
        for line in f:
            if "|" in line:
                sop, digest = line.strip().split("|", 1)
                rows.setdefault(sop, []).append(digest)
    bad = []
    acked = acked_files(logs)
    for p in acked:
        data = dataset(p)
        digest = hashlib.sha256(data).hexdigest()
        dest = os.path.join(state, "instances", digest[:2], digest[2:4], digest + ".dcm")
        sop = str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        if not os.path.exists(dest):
            bad.append("%s: acknowledged, not stored (no %s)" % (p, dest))
        elif dataset(dest) != data:
            bad.append("%s: the stored data set differs" % p)
        if rows.get(sop) != [digest]:
            bad.append("%s: acknowledged; the instances table has %s for %s" %
                       (p, rows.get(sop, "no row"), sop))
    if not acked:
        bad.append("no acknowledged instance in %s" % " ".join(logs))
    return bad, "%d acknowledged instances stored and indexed" % len(acked)


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def cmd_segs(base, wants):
    by_series = {}
    for oid in get(base + "/instances"):
        t = get("%s/instances/%s/tags?simplify" % (base, oid))
        if t.get("Modality") != "SEG":
            continue
        for ref in t.get("ReferencedSeriesSequence", []):
            n = len(ref.get("ReferencedInstanceSequence", []))
            by_series.setdefault(ref.get("SeriesInstanceUID"), {})[t["SOPInstanceUID"]] = n
    bad = []
    for uid, n in wants:
        got = by_series.get(uid, {})
        if len(got) != 1 or list(got.values()) != [n]:
            bad.append("series %s: %d SEG(s) in Orthanc, referring to %s of its %d instances" %
                       (uid, len(got), sorted(got.values()), n))
    return bad, "%d series, one SEG each, referring to all their instances" % len(wants)


def cmd_settled(state, paths_file):
    with open(paths_file) as f:
        rows = [line.strip() for line in f if line.strip()]
    files = set()
    for root, _, names in os.walk(os.path.join(state, "instances")):
        files |= {os.path.relpath(os.path.join(root, n), state) for n in names}
    bad = []
    if len(rows) != len(set(rows)):
        bad.append("a file is indexed twice")
    if files != set(rows):
        bad.append("on disk, not indexed: %s; indexed, not on disk: %s" %
                   (sorted(files - set(rows))[:3], sorted(set(rows) - files)[:3]))
    left = [os.path.join("outbox", n) for n in sorted(os.listdir(os.path.join(state, "outbox")))]
    nodes = os.path.join(state, "nodes")
    for node in sorted(os.listdir(nodes)) if os.path.isdir(nodes) else []:
        t = os.path.join(nodes, node, "tmp")
        left += [os.path.join("nodes", node, "tmp", n)
                 for n in (sorted(os.listdir(t)) if os.path.isdir(t) else [])]
    if left:
        bad.append("left over: %s" % " ".join(left[:5]))
    return bad, "%d instances indexed, %d files; outbox/ and nodes/*/tmp/ empty" % (
        len(rows), len(files))


def load(path):
    return json.load(sys.stdin if path == "-" else open(path))


def cmd_nodes(status, names):
    nodes = status.get("nodes", [])
    have = [x.get("name") for x in nodes]
    bad = ["node %s is not in the status's nodes (%s)" % (n, have) for n in names
           if n not in have]
    return bad, "; ".join("%s roles %s jobs %s sends %s" % (x.get("name"), x.get("roles"),
                                                           x.get("jobs"), x.get("sends"))
                          for x in nodes)


def cmd_only_node(status, name):
    bad = []
    for what in ("jobs", "sends"):
        for x in status.get(what, []):
            if x.get("node") != name:
                bad.append("%s of node %r in the status of node %s: %s" %
                           (what, x.get("node"), name, x))
    return bad[:5], "%d jobs, %d sends, all of %s" % (len(status.get("jobs", [])),
                                                     len(status.get("sends", [])), name)


def main(argv):
    cmd, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    if cmd == "phantoms" and len(args) == 4:
        bad, summary = cmd_phantoms(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "acked" and len(args) >= 3:
        bad, summary = cmd_acked(args[0], args[1], args[2:])
    elif cmd == "segs" and len(args) >= 2:
        wants = [(w.split("=")[0], int(w.split("=")[1])) for w in args[1:]]
        bad, summary = cmd_segs(args[0].rstrip("/"), wants)
    elif cmd == "settled" and len(args) == 2:
        bad, summary = cmd_settled(args[0], args[1])
    elif cmd == "nodes" and len(args) >= 1:
        bad, summary = cmd_nodes(load(args[0]), args[1:])
    elif cmd == "only-node" and len(args) == 2:
        bad, summary = cmd_only_node(load(args[0]), args[1])
    else:
        sys.stderr.write(__doc__)
        return 2
    if bad:
        sys.stderr.write("\n".join(bad) + "\n")
        return 1
    if summary is not None:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

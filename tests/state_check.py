#!/usr/bin/python3
"""Checks of a daemon's state at rest, for the crash and fault tests.

  state_check.py settled STATE STATUS_JSON   nothing is stuck: every series is done, no job
                                             runs, no send is pending or dead, tmp/ and
                                             outbox/ are empty, instances/ holds exactly the
                                             indexed files and each is indexed once
  state_check.py segs ARCHIVE UID=N...       the SEGs in an archive folder, per source series
                                             UID with N instances: exactly one SEG (one SOP
                                             Instance UID) refers to all N instances; other
                                             SEGs of that series refer to fewer (an earlier
                                             version of the series, judged complete before
                                             the rest came) and are counted, not failed

STATUS_JSON is the output of `mmsegd status --json` ("-" reads standard input). Exit status 0
when the check holds, with a one-line summary on standard output; 1 with the problems on
standard error.
"""
import json
import os
import sqlite3
import sys


def settled(state, status):
    bad = []
    for x in status["series"]:
        if x["state"] != "done":
            bad.append("series %s is %s" % (x["series_uid"], x["state"]))
    if status["job_counts"].get("running", 0):
        bad.append("%d job(s) running" % status["job_counts"]["running"])
    for k in ("pending", "dead"):
        if status["send_counts"].get(k, 0):
            bad.append("%d send(s) %s" % (status["send_counts"][k], k))
    for d in ("tmp", "outbox"):
        p = os.path.join(state, d)
        left = sorted(os.listdir(p)) if os.path.isdir(p) else []
        if left:
            bad.append("%s/ holds %s" % (d, " ".join(left[:5])))
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state, "state.db"), uri=True)
    rows = [r[0] for r in db.execute("select path from instances")]
    files = set()
    for root, _, names in os.walk(os.path.join(state, "instances")):
        files |= {os.path.relpath(os.path.join(root, f), state) for f in names}
    if len(rows) != len(set(rows)):
        bad.append("a file is indexed twice")
    if files != set(rows):
        bad.append("on disk, not indexed: %s; indexed, not on disk: %s" %
                   (sorted(files - set(rows))[:3], sorted(set(rows) - files)[:3]))
    return bad, "%d series done, %d instances indexed, %d files" % (
        len(status["series"]), len(rows), len(files))


def segs(archive, wants):
    import pydicom
    by_series = {}
    for name in sorted(os.listdir(archive)):
        ds = pydicom.dcmread(os.path.join(archive, name), stop_before_pixels=True)
        if ds.get("Modality") != "SEG":
            continue
        for ref in ds.get("ReferencedSeriesSequence", []):
            n = len(ref.get("ReferencedInstanceSequence", []))
            by_series.setdefault(str(ref.SeriesInstanceUID), {})[str(ds.SOPInstanceUID)] = n
    bad, earlier = [], 0
    for uid, n in wants:
        got = by_series.get(uid, {})
        full = [s for s, k in got.items() if k == n]
        earlier += len(got) - len(full)
        if len(full) != 1:
            bad.append("series %s: %d SEGs refer to all %d instances (%d SEGs in all)" %
                       (uid, len(full), n, len(got)))
    return bad, "%d series with one complete SEG each; %d SEG(s) of earlier versions" % (
        len(wants) - len(bad), earlier)


def main(argv):
    if len(argv) == 4 and argv[1] == "settled":
        f = sys.stdin if argv[3] == "-" else open(argv[3])
        bad, summary = settled(argv[2], json.load(f))
    elif len(argv) >= 4 and argv[1] == "segs":
        wants = [(a.split("=")[0], int(a.split("=")[1])) for a in argv[3:]]
        bad, summary = segs(argv[2], wants)
    else:
        sys.stderr.write(__doc__)
        return 2
    if bad:
        sys.stderr.write("\n".join(bad) + "\n")
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

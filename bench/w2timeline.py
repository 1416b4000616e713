#!/usr/bin/env python3
"""A W2 job's start and end, for two coordinator binaries alternated: the milliseconds from the
submit call's arrival to the worker's first unit, and from the worker's last unit to the job
view's answer (the long poll that tells the submitter the job ended). Both are read off the
binaries' own log timestamps (the coordinator's tower_http request log and the worker's
dispatch log, one clock), so they show a change at a job's start or end that W2's efficiency,
which the guest's speed swings by several percent, cannot resolve.

    python3 bench/w2timeline.py /tmp/coordinator-a target/release/coordinator
    TL_GROUPS=4 TL_PER=11 TL_END=20000000 python3 bench/w2timeline.py A B   # defaults: 4, 11, 2e9

Each group starts a fresh coordinator of one binary and a release worker on all cores, runs
TL_PER jobs of pi over [0, TL_END) in 200 units (the first one, a warm-up, not counted), and the
binaries take turns group by group in alternating order. Debug logging costs both sides alike.
"""
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["BENCH_RUST_LOG"] = "warn,sparecycles_worker::runner::dispatch=debug,tower_http=debug"
import sidebyside as S  # noqa: E402

UNITS = 200
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMP = re.compile(r"T(\d\d):(\d\d):(\d\d\.\d+)Z")


def stamp(line):
    m = STAMP.search(line)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def lines(path):
    with open(path) as f:
        return ANSI.sub("", f.read()).splitlines()


def run(tmp, binary, jobs, end):
    """Runs `jobs` jobs on a fresh coordinator; returns (start ms, end ms) of each but the first."""
    c = S.Coordinator(tmp, binary=binary)
    try:
        c.worker("w", S.NPROC)
        c.wait_workers(1)
        for i in range(jobs):
            c.run_job(S.prime_job(f"tl-{i}", end, UNITS))
            time.sleep(0.1)
    finally:
        c.stop()
    coord = lines(os.path.join(c.dir, "coordinator.log"))
    worker = lines(os.path.join(c.dir, "w", "worker.log"))
    submits = [stamp(x) for x in coord if "POST uri=/api/v1/jobs " in x and "started processing" in x]
    answers = [stamp(x) for x in coord if "?wait_ms=" in x and "finished processing" in x]
    starts = [stamp(x) for x in worker if "computing unit" in x]
    ends = [stamp(x) for x in worker if "unit computed" in x]
    if len(submits) != jobs or len(answers) != jobs:
        sys.exit(f"{binary}: {len(submits)} submits and {len(answers)} answers logged for {jobs} jobs")
    out = []
    for submit, answer in list(zip(submits, answers))[1:]:
        first = min(t for t in starts if t >= submit)
        last = max(t for t in ends if t <= answer)
        out.append(((first - submit) * 1e3, (answer - last) * 1e3))
    return out


def quartiles(xs):
    xs = sorted(xs)
    return f"median {statistics.median(xs):.2f} ms (p25 {xs[len(xs) // 4]:.2f}, p75 {xs[3 * len(xs) // 4]:.2f})"


def main():
    bins = [os.path.abspath(b) for b in sys.argv[1:]]
    if len(bins) < 2:
        sys.exit(__doc__)
    groups, per = int(os.environ.get("TL_GROUPS", "4")), int(os.environ.get("TL_PER", "11"))
    end = int(float(os.environ.get("TL_END", "2e9")))
    got = {b: [] for b in bins}
    tmp = tempfile.mkdtemp(prefix="w2timeline-")
    try:
        for g in range(groups):
            for b in (bins if g % 2 == 0 else bins[::-1]):
                got[b] += run(tmp, b, per, end)
    finally:
        S.PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for b in bins:
        print(f"{b}: {len(got[b])} jobs over [0, {end}): submit -> first unit {quartiles([x[0] for x in got[b]])}; "
              f"last unit -> job view answered {quartiles([x[1] for x in got[b]])}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""W2 of two worker (or coordinator) binaries, alternated: for A/B-testing a change on a noisy
machine.

Each group starts a fresh release coordinator (target/release) and one worker of the binary
under test on all cores (with AB_SIDE=coordinator: a coordinator of the binary under test and a
release worker; with AB_SIDE=both: each argument is a COORDINATOR:WORKER pair), runs one
warm-up job, then PER jobs of W2 (pi over [0, 2e9) in 200 units), each right after the prime
kernel alone; the binaries take turns group by group, in alternating order. Prints each
binary's median wall time and efficiency (kernel ÷ job) and the CPU per job.

    cp target/release/worker /tmp/worker-a      # build the other version, then:
    python3 bench/w2ab.py /tmp/worker-a target/release/worker
    AB_GROUPS=6 AB_PER=5 python3 bench/w2ab.py A B    # defaults: 4 groups of 5 jobs each
    AB_SIDE=coordinator python3 bench/w2ab.py /tmp/coordinator-a target/release/coordinator
    AB_SIDE=both python3 bench/w2ab.py /tmp/coord-a:/tmp/worker-a COORD_B:WORKER_B   # pairs
"""
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sidebyside as S  # noqa: E402

END, UNITS = 2_000_000_000, 200


def main():
    bins = [os.path.abspath(b) for b in sys.argv[1:]]
    if len(bins) < 2:
        sys.exit(__doc__)
    groups, per = int(os.environ.get("AB_GROUPS", "4")), int(os.environ.get("AB_PER", "5"))
    side = os.environ.get("AB_SIDE", "worker")
    # Which binaries a side runs: (coordinator, worker); None is the release build.
    if side == "both":
        if any(":" not in b for b in sys.argv[1:]):
            sys.exit("AB_SIDE=both takes COORDINATOR:WORKER pairs")
        pair = {b: tuple(os.path.abspath(x) for x in b.split(":", 1)) for b in sys.argv[1:]}
        bins = sys.argv[1:]
    elif side == "coordinator":
        pair = {b: (b, None) for b in bins}
    else:
        pair = {b: (None, b) for b in bins}
    walls = {b: [] for b in bins}
    effs = {b: [] for b in bins}
    # CPU milliseconds per job beside the compute: the coordinator's, the worker's other threads'.
    coord_ms = {b: [] for b in bins}
    other_ms = {b: [] for b in bins}
    compute_ms = {b: [] for b in bins}
    tmp = tempfile.mkdtemp(prefix="w2ab-")
    try:
        for g in range(groups):
            for b in (bins if g % 2 == 0 else bins[::-1]):
                c = S.Coordinator(tmp, binary=pair[b][0])
                try:
                    wp = c.worker("w", S.NPROC, binary=pair[b][1])
                    c.wait_workers(1)
                    c.run_job(S.prime_job("warm-up", END, UNITS))
                    for i in range(per):
                        kc, kt = S.kernel(0, END)
                        before = S.cpu_marks(c.pid, wp.pid)
                        wall, _, count = c.run_job(S.prime_job(f"w2-{i}", END, UNITS))
                        spent = S.cpu_spent(before, S.cpu_marks(c.pid, wp.pid))
                        coord_ms[b].append(spent["coord_cpu_ms"])
                        other_ms[b].append(spent["worker_other_cpu_ms"])
                        compute_ms[b].append(spent["compute_cpu_ms"])
                        if count != kc:
                            sys.exit(f"{b}: wrong answer {count}, the kernel says {kc}")
                        walls[b].append(wall)
                        effs[b].append(kt / wall)
                finally:
                    c.stop()
    finally:
        S.PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for b in bins:
        print(f"{b}: {len(walls[b])} jobs, median wall {statistics.median(walls[b]):.3f} s, "
              f"median efficiency {statistics.median(effs[b]):.3f} (mean {statistics.mean(effs[b]):.3f}); "
              f"CPU per job: coordinator {statistics.median(coord_ms[b]):.1f} ms, worker beside the compute "
              f"{statistics.median(other_ms[b]):.1f} ms, compute {statistics.median(compute_ms[b]):.1f} ms (medians)")


if __name__ == "__main__":
    main()

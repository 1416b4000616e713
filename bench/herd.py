#!/usr/bin/env python3
"""W2 beside a fleet of idle workers, for coordinator binaries one after another: HERD_IDLE
enrolled workers that only run an app no job here uses each keep a waiting lease open (as an
idle volunteer's agent does), while one real worker on all cores runs HERD_JOBS W2 jobs (pi over
[0, 2e9) in 200 units). Prints each binary's median job time and coordinator CPU per job: what
the idle fleet costs the coordinator while work goes on elsewhere.

    python3 bench/herd.py /tmp/coordinator-a target/release/coordinator
    HERD_IDLE=500 HERD_JOBS=10 python3 bench/herd.py A B      # defaults: 200 idle, 12 jobs
"""
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sidebyside as S  # noqa: E402

END, UNITS = 2_000_000_000, 200


def idle_worker(port, i, stop):
    """Enrolls a one-core worker of an app no job uses and keeps a waiting lease open."""
    enrolled = S.Api(port).call("POST", "/api/v1/workers/enroll", {
        "name": f"idle-{i}", "cores": 1, "os": "linux", "arch": "x86_64", "apps": ["mandelbrot"]})
    api = S.Api(port, token=enrolled["token"])
    while not stop.is_set():
        try:
            api.call("POST", "/api/v1/work/lease", {"max_tasks": 1, "wait_ms": 5000})
        except (OSError, RuntimeError):
            time.sleep(0.1)


def run(tmp, binary, idle, jobs):
    c = S.Coordinator(tmp, binary=binary)
    stop = threading.Event()
    try:
        wp = c.worker("w", S.NPROC)
        c.wait_workers(1)
        for i in range(idle):
            threading.Thread(target=idle_worker, args=(c.port, i, stop), daemon=True).start()
        c.wait_workers(idle + 1, timeout=120)
        time.sleep(2)  # every idle lease waiting
        c.run_job(S.prime_job("warm-up", END, UNITS))
        walls, cpus = [], []
        for i in range(jobs):
            before = S.cpu_marks(c.pid, wp.pid)
            wall, _, _ = c.run_job(S.prime_job(f"herd-{i}", END, UNITS))
            cpus.append(S.cpu_spent(before, S.cpu_marks(c.pid, wp.pid))["coord_cpu_ms"])
            walls.append(wall * 1e3)
            time.sleep(0.2)
        return statistics.median(walls), statistics.median(cpus)
    finally:
        stop.set()
        c.stop()


def main():
    bins = [os.path.abspath(b) for b in sys.argv[1:]]
    if not bins:
        sys.exit(__doc__)
    idle, jobs = int(os.environ.get("HERD_IDLE", "200")), int(os.environ.get("HERD_JOBS", "12"))
    tmp = tempfile.mkdtemp(prefix="herd-")
    try:
        for b in bins:
            wall, cpu = run(tmp, b, idle, jobs)
            print(f"{b}: {idle} idle workers waiting; W2 job median {wall:.1f} ms, coordinator CPU per job {cpu:.1f} ms")
    finally:
        S.PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

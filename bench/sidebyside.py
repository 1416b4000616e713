#!/usr/bin/env python3
"""Issue 8 side by side: W1-W4 on SpareCycles, the prime kernel against primesieve, and the
peer kit's W1-W3 (Dask, Celery, Ray), in one run on one machine. Called by bench/run.sh, which
builds the release binaries first; standard library only.

Every process started here is registered and stopped by pid (TERM, then KILL) when its part
ends, and again on exit or on a signal. Everything listens on 127.0.0.1 only, on free ports,
with data in a temporary directory under the output dir.
"""
import atexit
import glob
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
OUT = os.path.abspath(os.environ.get("BENCH_DIR", os.path.join(ROOT, "target", "bench")))
TOKEN = "bench-admin-token-0123456789"
NPROC = os.cpu_count() or 1
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def env_int(name, default):
    return int(float(os.environ.get(name, default)))


def env_float(name, default):
    return float(os.environ.get(name, default))


W1_UNITS = env_int("W1_UNITS", 100_000)
W1_WORKERS = env_int("W1_WORKERS", 1000)
W1_CONCURRENCY = env_int("W1_CONCURRENCY", 64)
W1_BATCH = env_int("W1_BATCH", 16)
W1_QUORUMS = [int(q) for q in os.environ.get("W1_QUORUMS", "1 2").split()]
# Open loop (quorum 1): lease -> compute -> report cycles started per second by the simulated
# fleet, whatever the latency, as real workers call; each rate runs for about W1_OPEN_SECS.
W1_RATES = [float(r) for r in os.environ.get("W1_RATES", "100 250 400").split()]
# Closed loop (quorum 1) again with fewer clients: the same 1,000 simulated workers, fewer calls
# in flight. With 64 always waiting, a lease's latency is 64 ÷ the calls per second (Little's
# law) whatever the coordinator does; with a few, it is the coordinator's own.
W1_CLIENTS = [int(n) for n in os.environ.get("W1_CLIENTS", "8 16").split()]
W1_OPEN_SECS = env_float("W1_OPEN_SECS", 5)
W2_END = env_int("W2_END", 2_000_000_000)
W2_UNITS = env_int("W2_UNITS", 200)
# A job lasts 0.12-0.3 s on these machines and single rounds swing 0.6-1.0 with the noise of a
# shared guest: 15 rounds (5 s) make the medians steady.
W2_ROUNDS = env_int("W2_ROUNDS", 15)
W3_KILL_AT = env_float("W3_KILL_AT", 1.0)
# Seconds of silence before a worker's tasks get spares: the default (60) and a tuned value.
W3_SUSPECT = [int(s) for s in os.environ.get("W3_SUSPECT", "60 2").split()]
W3_TIMEOUT = env_float("W3_TIMEOUT", 300)
W4_UNITS = env_int("W4_UNITS", 1_000_000)
W4_SECS = env_float("W4_SECS", 30)
W4_WORKERS = env_int("W4_WORKERS", 2)
PS_END = env_int("PS_END", W2_END)
PS_THREADS = [int(t) for t in os.environ.get("PS_THREADS", f"1 {NPROC}").split()]
PS_ROUNDS = env_int("PS_ROUNDS", 3)
PROFILE_UNITS = env_int("PROFILE_UNITS", min(W1_UNITS, 30_000))
PROFILE_FREQ = env_int("PROFILE_FREQ", 499)
SKIP = set(os.environ.get("SKIP", "").replace(",", " ").split())
if os.environ.get("SKIP_PEERS") == "1":
    SKIP.add("peers")
if os.environ.get("SKIP_PROFILE") == "1":
    SKIP.add("profile")
PEERS_KIT = os.path.abspath(os.environ.get("PEERS_KIT", os.path.join(ROOT, "..", "shared", "bench", "peers")))
PEER_NAMES = [("dask", "Dask distributed"), ("dask_satinf", "Dask (worker-saturation=inf)"),
              ("celery", "Celery+Redis (defaults)"), ("celery_ackslate", "Celery+Redis (acks_late)"),
              ("ray", "Ray local")]
# Known prime counts, to check answers without trusting either side.
PI = {10**6: 78_498, 10**7: 664_579, 10**8: 5_761_455, 2 * 10**8: 11_078_937,
      10**9: 50_847_534, 2 * 10**9: 98_222_287}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- processes

class Procs:
    """Every child started by this script, so that each can be stopped by its pid."""

    def __init__(self):
        self.live = {}
        self.rusage = {}

    def start(self, args, name, stdout=None, stderr=None, env=None, new_session=False):
        p = subprocess.Popen(args, stdout=stdout or subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=new_session)
        self.live[p.pid] = (p, name)
        return p

    def reap(self, p, timeout=None):
        """Wait for p; returns its exit code and keeps its CPU time (user + system)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                self.rusage[p.pid] = ru.ru_utime + ru.ru_stime
                self.live.pop(p.pid, None)
                return p.returncode
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.01)

    def stop(self, p, sig=signal.SIGTERM, grace=10.0):
        if p.pid not in self.live:
            return p.returncode
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        rc = self.reap(p, grace)
        if rc is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = self.reap(p)
        return rc

    def stop_all(self):
        for p, _ in list(self.live.values()):
            self.stop(p, grace=5.0)

    def cpu(self, p):
        return self.rusage.get(p.pid)


PROCS = Procs()
atexit.register(PROCS.stop_all)


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping every process this run started")
    PROCS.stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    """CPU seconds (user + system) of a live process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return None


# Name prefix of the worker's compute pool threads (worker/src/runner/compute.rs).
COMPUTE_THREADS = "compute-"


def thread_cpu_ms(pid):
    """CPU milliseconds of a live process, from its threads' schedstat (nanoseconds, not ticks: a
    W2 job is 0.2 s): (compute pool threads, the other threads)."""
    compute = other = 0
    for t in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(t + "/comm") as f:
                name = f.read().strip()
            with open(t + "/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if name.startswith(COMPUTE_THREADS):
            compute += ns
        else:
            other += ns
    return compute / 1e6, other / 1e6


def cpu_marks(coord_pid, worker_pid):
    """CPU milliseconds so far of the worker's compute threads, its other threads, the
    coordinator and this client; two of these around a job give its CPU (`cpu_spent`)."""
    compute, other = thread_cpu_ms(worker_pid)
    return {"compute_cpu_ms": compute, "worker_other_cpu_ms": other,
            "coord_cpu_ms": sum(thread_cpu_ms(coord_pid)), "client_cpu_ms": time.process_time() * 1e3}


def cpu_spent(before, after):
    return {k: round(after[k] - before[k], 1) for k in before}


def proc_rss_mib(pid):
    """(VmRSS, VmHWM) in MiB from /proc/PID/status."""
    vals = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    vals[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        return None, None
    return vals.get("VmRSS"), vals.get("VmHWM")


def ctx_switches(pid):
    """Context switches (voluntary + involuntary) over all threads of a live process."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
    except (OSError, ValueError):
        return None
    return total


class CpuWindow:
    """Over a part of the run: how many cores the machine was busy, how many of those were
    this benchmark's own processes, and the rest ("foreign": other users' builds). Own CPU is
    this script plus its waited children, so every part reaps its processes before it ends."""

    @staticmethod
    def _busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return (sum(v) - v[3] - v[4] - v[7]) / CLK

    @staticmethod
    def _own():
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def __enter__(self):
        self.t0, self.b0, self.o0 = time.monotonic(), self._busy(), self._own()
        self.load0 = os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        wall = max(time.monotonic() - self.t0, 1e-9)
        busy = (self._busy() - self.b0) / wall
        own = (self._own() - self.o0) / wall
        self.stats = {"wall_s": round(wall, 2), "sys_cores": round(busy, 2), "own_cores": round(own, 2),
                      "foreign_cores": round(max(0.0, busy - own), 2),
                      "load1_start": self.load0, "load1_end": os.getloadavg()[0]}
        return False


# ---------------------------------------------------------------- HTTP

class Api:
    """One persistent loopback HTTP connection (polling must cost the machine little)."""

    def __init__(self, port, token=TOKEN):
        self.port, self.token = port, token
        self.conn = None

    def call(self, method, path, body=None, timeout=30):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            headers = {"authorization": f"Bearer {self.token}"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["content-type"] = "application/json"
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {r.status}: {raw[:300]!r}")
            ctype = r.getheader("content-type", "")
            return json.loads(raw) if "json" in ctype else raw.decode(errors="replace")
        raise RuntimeError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()


def prime_job(name, end, units, quorum=1):
    return {"name": name, "app": "prime-count",
            "params": {"start": 0, "end": end, "unit_size": -(-end // units)},
            "redundancy": {"min_quorum": quorum, "adaptive": False}}


def count_of(body):
    if isinstance(body, dict):
        return body.get("count")
    m = re.search(r"\d+", str(body))
    return int(m.group()) if m else None


class Coordinator:
    def __init__(self, tmp, extra=(), binary=None):
        self.dir = tempfile.mkdtemp(prefix="coord-", dir=tmp)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "coordinator.log"), "w")
        self.p = PROCS.start([binary or os.path.join(BIN, "coordinator"), "serve", "--listen", f"127.0.0.1:{self.port}",
                              "--data-dir", os.path.join(self.dir, "data"), "--admin-token", TOKEN,
                              # Rate limits are a flood guard; the benchmarks measure the dispatch path.
                              "--rate-limit-per-token", "0", "--rate-limit-per-ip", "0", *extra],
                             "coordinator", stderr=self.log, env=dict(os.environ, RUST_LOG=os.environ.get("BENCH_RUST_LOG", "warn")))
        self.api = Api(self.port)
        # Its workers are stopped with it, inside the part's CPU window: a worker left running
        # would count as "foreign" CPU there and keep retrying during the later parts.
        self.workers = []
        for _ in range(300):
            try:
                self.api.call("GET", "/healthz", timeout=2)
                return
            except (OSError, RuntimeError):
                if self.p.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"coordinator did not start; see {self.log.name}")

    @property
    def pid(self):
        return self.p.pid

    def worker(self, name, cores, extra=(), binary=None):
        wdir = os.path.join(self.dir, name)
        os.makedirs(wdir, exist_ok=True)
        args = [binary or os.path.join(BIN, "worker"), "run", "--coordinator", self.url, "--state-dir", wdir,
                "--config", os.path.join(wdir, "none.toml"), "--name", name, "--cores", str(cores),
                "--idle-minutes", "0", "--pause-on-battery", "false", *extra]
        p = PROCS.start(args, name, stderr=open(os.path.join(wdir, "worker.log"), "w"),
                        env=dict(os.environ, RUST_LOG=os.environ.get("BENCH_RUST_LOG", "warn")))
        self.workers.append(p)
        return p

    def wait_workers(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws = self.api.call("GET", "/api/v1/workers")
            ws = ws.get("workers", ws) if isinstance(ws, dict) else ws
            if len(ws) >= n:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{n} workers did not enroll within {timeout}s")

    def run_job(self, spec, poll=0.01, timeout=600, on_tick=None):
        """Submit, wait until final; returns (seconds from submit to assembled result, view, count).
        The end is awaited with the job view's long poll (`?wait_ms=`): the answer comes as the
        job ends, with no polling error and no polling load; with on_tick, each look waits at
        most `poll` seconds, and on_tick is called between them."""
        t0 = time.monotonic()
        job = self.api.call("POST", "/api/v1/jobs", spec)
        wait_ms = max(1, int(poll * 1000)) if on_tick else 20_000
        while True:
            if on_tick:
                on_tick(time.monotonic() - t0)
            view = self.api.call("GET", f"/api/v1/jobs/{job['id']}?wait_ms={wait_ms}")
            if view["state"] in ("completed", "failed", "canceled"):
                break
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"job not finished after {timeout}s: {view['units']}")
        wall = time.monotonic() - t0
        if view["state"] != "completed":
            return wall, view, None
        return wall, view, count_of(self.api.call("GET", f"/api/v1/jobs/{job['id']}/result"))

    def stop(self):
        self.api.close()
        for w in self.workers:
            PROCS.stop(w)
        PROCS.stop(self.p)
        self.log.close()


def kernel(start, end, threads=0):
    """The prime kernel alone (apps/examples/prime_kernel): (count, seconds it measured)."""
    out = subprocess.run([os.path.join(BIN, "examples", "prime_kernel"), str(start), str(end), str(threads)],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1])


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- our workloads

W1_PATTERNS = {
    "accepted_s": r"accepted in ([\d.]+) s",
    "wall_s": r"completed in ([\d.]+) s",
    "units_per_s": r"([\d.]+) units/s",
    "tasks_per_unit": r"\(([\d.]+) per unit\)",
    "lease_p50_ms": r"lease\s+p50 ([\d.]+) ms",
    "lease_p99_ms": r"lease\s+p50 [\d.]+ ms\s+p99 ([\d.]+) ms",
    "report_p50_ms": r"report\s+p50 ([\d.]+) ms",
    "report_p99_ms": r"report\s+p50 [\d.]+ ms\s+p99 ([\d.]+) ms",
    "coord_cpu_s": r"coordinator: ([\d.]+) CPU s",
    "coord_cores": r"\(([\d.]+) cores\)",
    "coord_peak_rss_mib": r"peak ([\d.]+) MiB",
}


def w1_once(tmp, units, quorum, profile_to=None, rate=None, binary=None, concurrency=W1_CONCURRENCY):
    c = Coordinator(tmp, binary=binary)
    perf = None
    try:
        if profile_to:
            perf = PROCS.start(["perf", "record", "-e", "cpu-clock", "-F", str(PROFILE_FREQ), "-g", "-p", str(c.pid), "-o", profile_to],
                               "perf", stderr=open(profile_to + ".log", "w"))
            time.sleep(0.5)
        outf = os.path.join(c.dir, "bench.out")
        cs0 = ctx_switches(c.pid)
        with open(outf, "w") as fo:
            b = PROCS.start([os.path.join(BIN, "coordinator"), "bench", "--coordinator", c.url, "--token", TOKEN,
                             "--units", str(units), "--workers", str(W1_WORKERS), "--concurrency",
                             str(concurrency), "--batch", str(W1_BATCH), "--quorum", str(quorum),
                             "--pid", str(c.pid), *(["--rate", str(rate)] if rate else [])],
                            "bench", stdout=fo, stderr=subprocess.STDOUT)
            rc = PROCS.reap(b)
        cs1 = ctx_switches(c.pid)
        if perf is not None:
            PROCS.stop(perf, sig=signal.SIGINT, grace=60)
        text = open(outf).read()
        r = {"units": units, "quorum": quorum, "workers": W1_WORKERS, "concurrency": concurrency, "rate": rate,
             "batch": W1_BATCH, "exit": rc, "output": text.strip(), "loadgen_cpu_s": PROCS.cpu(b),
             "coord_ctx_switches_per_unit": (cs1 - cs0) / units if cs0 is not None and cs1 is not None else None}
        for k, pat in W1_PATTERNS.items():
            m = re.search(pat, text)
            r[k] = float(m.group(1)) if m else None
        m = re.search(r"result: (.*)", text)
        r["count"] = count_of(m.group(1)) if m else None
        r["expected"] = PI.get(units * 10) or kernel(0, units * 10)[0]
        r["correct"] = r["count"] == r["expected"]
        if r["wall_s"] and r["loadgen_cpu_s"] is not None:
            r["loadgen_cores"] = round(r["loadgen_cpu_s"] / r["wall_s"], 2)
        return r
    finally:
        if perf is not None and perf.pid in PROCS.live:
            PROCS.stop(perf, sig=signal.SIGINT, grace=60)
        c.stop()


def w1(tmp):
    res = {}
    for q in W1_QUORUMS:
        log(f"W1: {W1_UNITS} units, quorum {q}, {W1_WORKERS} simulated workers")
        with CpuWindow() as w:
            r = w1_once(tmp, W1_UNITS, q)
        r["cpu"] = w.stats
        log(f"W1 q{q}: {r['units_per_s']} units/s, lease p99 {r['lease_p99_ms']} ms, correct={r['correct']}")
        res[f"q{q}"] = r
    for n in W1_CLIENTS if 1 in W1_QUORUMS else []:
        log(f"W1: {W1_UNITS} units, quorum 1, {W1_WORKERS} simulated workers, {n} clients")
        with CpuWindow() as w:
            r = w1_once(tmp, W1_UNITS, 1, concurrency=n)
        r["cpu"] = w.stats
        log(f"W1 q1 {n} clients: {r['units_per_s']} units/s, lease p50/p99 {r['lease_p50_ms']}/{r['lease_p99_ms']} ms, "
            f"correct={r['correct']}")
        res[f"q1c{n}"] = r
    for rate in W1_RATES:
        units = int(rate * W1_BATCH * W1_OPEN_SECS)
        log(f"W1 open loop: {rate:g} cycles/s, {units} units")
        with CpuWindow() as w:
            r = w1_once(tmp, units, 1, rate=rate)
        r["cpu"] = w.stats
        log(f"W1 open {rate:g}/s: lease p50/p99 {r['lease_p50_ms']}/{r['lease_p99_ms']} ms, correct={r['correct']}")
        res[f"open{rate:g}"] = r
    return res


def w2(tmp):
    log(f"W2: pi([0, {W2_END})) in {W2_UNITS} units, one worker on {NPROC} cores, {W2_ROUNDS} rounds")
    rounds = []
    with CpuWindow() as w:
        c = Coordinator(tmp)
        try:
            wp = c.worker("w2", NPROC)
            c.wait_workers(1)
            for i in range(W2_ROUNDS):
                k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                kc, kt = kernel(0, W2_END)
                k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                # Where the job's time goes: the CPU of the worker's compute threads (the
                # kernel's work), of its other threads, of the coordinator and of this client,
                # against the kernel alone's CPU.
                before = cpu_marks(c.pid, wp.pid)
                wall, view, count = c.run_job(prime_job(f"w2-{i}", W2_END, W2_UNITS))
                spent = cpu_spent(before, cpu_marks(c.pid, wp.pid))
                server = (view["finished_at"] - view["created_at"]) / 1000 if view.get("finished_at") else None
                rounds.append({"kernel_s": kt, "kernel_count": kc, "ours_s": wall, "server_s": server,
                               "count": count, "correct": count == kc == PI.get(W2_END, kc),
                               "efficiency": kt / wall,
                               "worker_cores": round((spent["compute_cpu_ms"] + spent["worker_other_cpu_ms"]) / 1e3 / wall, 2),
                               "coord_cores": round(spent["coord_cpu_ms"] / 1e3 / wall, 2),
                               "kernel_cpu_ms": round((k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime) * 1e3, 1),
                               **spent})
                log(f"W2 round {i + 1}: kernel {kt:.3f}s, SpareCycles {wall:.3f}s, eff {kt / wall:.3f}")
        finally:
            c.stop()
    return {"end": W2_END, "units": W2_UNITS, "rounds": rounds, "cpu": w.stats,
            "kernel_s": median([r["kernel_s"] for r in rounds]), "ours_s": median([r["ours_s"] for r in rounds]),
            # Each job against the kernel run just before it: the guest's speed drifts within a
            # run (0.73 by the ratio of the two medians against 0.93 paired in one 15-round
            # run, issue 8), and the pairing cancels what the ratio of medians does not.
            "efficiency": median([r["efficiency"] for r in rounds]),
            "efficiency_of_medians": (median([r["kernel_s"] for r in rounds]) / median([r["ours_s"] for r in rounds])
                                      if rounds else None),
            "correct": all(r["correct"] for r in rounds), "cpu_ms": w2_cpu(rounds)}


def w2_cpu(rounds):
    """Medians of the W2 rounds' CPU accounting, and the efficiency the overhead CPU alone allows."""
    keys = ("kernel_cpu_ms", "compute_cpu_ms", "worker_other_cpu_ms", "coord_cpu_ms", "client_cpu_ms")
    if not rounds or any(r.get(k) is None for r in rounds for k in keys):
        return None
    m = {k: median([r[k] for r in rounds]) for k in keys}
    rest = m["worker_other_cpu_ms"] + m["coord_cpu_ms"] + m["client_cpu_ms"]
    m["cap"] = m["compute_cpu_ms"] / (m["compute_cpu_ms"] + rest) if m["compute_cpu_ms"] else None
    return m


def w3_once(tmp, suspect, kill_at):
    extra = ["--suspect-after-secs", str(suspect)]
    # A worker heartbeats often enough that only a dead one looks silent.
    wextra = ["--heartbeat-secs", str(max(1, min(10, suspect // 2)))]
    cores = max(1, NPROC // 2)
    c = Coordinator(tmp, extra)
    kill = kill_at is not None
    rec = {"suspect_after_s": suspect, "kill_at_s": kill_at, "workers": f"2 x {cores} cores"}
    try:
        procs = {name: c.worker(name, cores, wextra) for name in ("w3-a", "w3-b")}
        c.wait_workers(2)

        def tick(t):
            if kill and "killed_at_s" not in rec and t >= kill_at:
                # The worker holding more units dies: only one holding units tests recovery,
                # and in a job this short one worker may have leased every unit left.
                held, name = max((w["in_flight"], w["name"]) for w in c.api.call("GET", "/api/v1/workers")
                                 if w["name"] in procs)
                if held > 0:
                    os.kill(procs[name].pid, signal.SIGKILL)
                    rec["killed_at_s"] = round(t, 3)
                    rec["victim_held"] = held

        wall, view, count = c.run_job(prime_job("w3", W2_END, W2_UNITS), timeout=W3_TIMEOUT, on_tick=tick)
        rec.update(wall_s=wall, count=count, correct=count == PI.get(W2_END, count) and count is not None,
                   state=view["state"], tasks_created=view.get("tasks_created"))
        if kill and "killed_at_s" not in rec:
            rec["note"] = "job finished before the kill time, or with no worker holding units"
        return rec
    finally:
        c.stop()


def w3(tmp):
    res = []
    for suspect in W3_SUSPECT:
        log(f"W3: two workers, SIGKILL one at {W3_KILL_AT}s; --suspect-after-secs {suspect}")
        with CpuWindow() as w:
            base = w3_once(tmp, suspect, None)
            kill_at, note = W3_KILL_AT, None
            if base["wall_s"] < 1.5 * W3_KILL_AT:
                # The job is over (or nearly) before the kill time: kill half-way instead, as the
                # peer kit does for its short W2, so that a worker really dies holding units.
                kill_at = round(base["wall_s"] / 2, 3)
                note = f"the job takes {base['wall_s']:.2f} s without a kill, so the kill came half-way"
            r = w3_once(tmp, suspect, kill_at)
        r["no_kill_s"] = base["wall_s"]
        r["extra_s"] = r["wall_s"] - base["wall_s"]
        r["kill_note"] = note
        r["cpu"] = w.stats
        log(f"W3 suspect {suspect}s: {r['wall_s']:.2f}s (no kill {base['wall_s']:.2f}s), correct={r['correct']}, "
            f"killed at {r.get('killed_at_s')} holding {r.get('victim_held')} tasks")
        res.append(r)
    return res


def w4(tmp):
    log(f"W4: submit {W4_UNITS} units, then {W4_WORKERS} workers for {W4_SECS}s; RSS from /proc")
    with CpuWindow() as w:
        c = Coordinator(tmp)
        samples, stop = [], threading.Event()

        def sampler():
            while not stop.is_set():
                rss, _ = proc_rss_mib(c.pid)
                if rss is not None:
                    samples.append((time.monotonic(), rss))
                stop.wait(0.05)

        th = threading.Thread(target=sampler, daemon=True)
        try:
            idle_rss, _ = proc_rss_mib(c.pid)
            th.start()
            spec = prime_job("w4", W4_UNITS * 10, W4_UNITS)
            t0 = time.monotonic()
            job = c.api.call("POST", "/api/v1/jobs", spec)
            accepted = time.monotonic() - t0
            t_sub = time.monotonic()
            for i in range(W4_WORKERS):
                c.worker(f"w4-{i}", max(1, NPROC // W4_WORKERS))
            time.sleep(W4_SECS)
            view = c.api.call("GET", f"/api/v1/jobs/{job['id']}")
            _, hwm = proc_rss_mib(c.pid)
            cpu = proc_cpu_s(c.pid)
            stop.set()
            th.join()
            try:
                c.api.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
            except (OSError, RuntimeError) as e:
                log(f"W4: cancel failed ({e}); the coordinator is stopped anyway")
        finally:
            stop.set()
            c.stop()
    during = [r for t, r in samples if t >= t_sub]
    r = {"units": W4_UNITS, "accepted_s": accepted, "rss_idle_mib": idle_rss,
         "rss_peak_mib": max(during) if during else None, "rss_median_mib": median(during),
         "rss_last_mib": during[-1] if during else None, "vmhwm_mib": hwm, "samples": len(during),
         "secs": W4_SECS, "workers": W4_WORKERS, "units_done": view["units"]["done"], "state": view["state"],
         "coord_cpu_s": cpu, "cpu": w.stats}
    log(f"W4: accepted in {accepted:.3f}s; RSS peak {r['rss_peak_mib']:.1f} MiB; {r['units_done']} units done")
    return r


def primesieve():
    ps = shutil.which("primesieve")
    if not ps:
        return {"error": "primesieve not installed"}
    log(f"kernel vs primesieve over [0, {PS_END}), threads {PS_THREADS}, {PS_ROUNDS} rounds")
    res = []
    with CpuWindow() as w:
        for t in PS_THREADS:
            ks, ps_s = [], []
            for _ in range(PS_ROUNDS):
                kc, kt = kernel(0, PS_END, t)
                # primesieve's interval is closed: [0, END-1] is our [0, END).
                out = subprocess.run([ps, "0", str(PS_END - 1), "-t", str(t), "-q", "--time"],
                                     capture_output=True, text=True, check=True).stdout
                secs = float(re.search(r"Seconds:\s*([\d.]+)", out).group(1))
                pc = int(re.findall(r"^\s*(\d+)\s*$", out, re.M)[-1])
                if pc != kc:
                    raise RuntimeError(f"kernel says {kc}, primesieve says {pc}")
                ks.append(kt)
                ps_s.append(secs)
            res.append({"threads": t, "kernel_s": median(ks), "primesieve_s": median(ps_s),
                        "ratio": median(ks) / median(ps_s), "count": kc})
            log(f"threads {t}: kernel {median(ks):.3f}s, primesieve {median(ps_s):.3f}s")
    version = subprocess.run([ps, "--version"], capture_output=True, text=True).stdout.split(",")[0]
    return {"end": PS_END, "rows": res, "version": version, "cpu": w.stats}


def perf_works():
    """perf with a software clock event: a VM often has no hardware counters, but sampling on
    cpu-clock works wherever perf_event_open is allowed."""
    if not shutil.which("perf"):
        return False
    with tempfile.NamedTemporaryFile(dir=OUT) as f:
        r = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", f.name, "--", "true"],
                           capture_output=True, text=True)
    return r.returncode == 0


def profile(tmp):
    if not perf_works():
        return {"error": "perf unavailable (install linux-perf; needs perf_event access)"}
    data = os.path.join(OUT, "w1-coordinator.perf.data")
    log(f"profile: perf record -g on the coordinator during W1 q1 with {PROFILE_UNITS} units")
    r = w1_once(tmp, PROFILE_UNITS, 1, profile_to=data)
    def perf_report(fields):
        return subprocess.run(["perf", "report", "-i", data, "--no-children", "-F", fields, "--stdio", "-g", "none"],
                              capture_output=True, text=True).stdout

    rep = perf_report("overhead,dso,sym")
    # Monomorphised copies of one function demangle to the same name: add them up.
    sums = {}
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if m:
            key = (m.group(2), m.group(3).strip())
            sums[key] = sums.get(key, 0.0) + float(m.group(1))
    rows = [{"pct": round(v, 2), "dso": k[0], "symbol": k[1]} for k, v in sorted(sums.items(), key=lambda kv: -kv[1])]
    by_dso = []
    for line in perf_report("overhead,dso").splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            by_dso.append({"pct": float(m.group(1)), "dso": m.group(2)})
    by_thread = []
    for line in perf_report("overhead,comm").splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if m:
            by_thread.append({"pct": float(m.group(1)), "thread": m.group(2)})
    with open(os.path.join(OUT, "w1-profile.txt"), "w") as f:
        f.write(rep)
    return {"units": PROFILE_UNITS, "units_per_s": r["units_per_s"], "coord_cores": r["coord_cores"],
            "loadgen_cores": r.get("loadgen_cores"), "ctx_per_unit": r.get("coord_ctx_switches_per_unit"),
            "top": rows[:12], "by_dso": by_dso[:6],
            "by_thread": by_thread[:6]}


# ---------------------------------------------------------------- peers

def peers(tmp):
    run_peers = os.path.join(PEERS_KIT, "run_peers.sh")
    if not os.path.exists(run_peers):
        return {"error": f"no peer kit at {PEERS_KIT}"}
    # The kit keeps its virtualenv and byte code next to itself; run a copy under OUT so that
    # nothing is written into the shared kit (the copy's .venv is reused by later runs).
    kit = os.path.join(OUT, "peers-kit")
    os.makedirs(kit, exist_ok=True)
    for name in os.listdir(PEERS_KIT):
        if name in (".venv", "results", "__pycache__"):
            continue
        src, dst = os.path.join(PEERS_KIT, name), os.path.join(kit, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dst)
    out = os.path.join(OUT, "peers")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, BENCH_OUT=out, PYTHONDONTWRITEBYTECODE="1")
    # The kit waits up to 900 s for a quiet machine before each run and redoes loaded runs; on a
    # shared machine quiet never comes, so by default it waits briefly, redoes nothing and
    # records the foreign load, as our side does.
    env.setdefault("BENCH_QUIET_MAX_WAIT_S", "3")
    env.setdefault("BENCH_MAX_RETRIES", "0")
    log(f"peers: bash {run_peers} (copy in {kit}), PEERS={env.get('PEERS', 'all')}, "
        f"BENCH_REPEATS={env.get('BENCH_REPEATS', '3 (kit default)')}")
    logf = os.path.join(OUT, "peers.log")
    with CpuWindow() as w, open(logf, "w") as f:
        # Its own session, so that on an interrupt its whole process group can be stopped.
        p = PROCS.start(["bash", os.path.join(kit, "run_peers.sh")], "run_peers", stdout=f,
                        stderr=subprocess.STDOUT, env=env, new_session=True)
        rc = PROCS.reap(p)
    res = {"exit": rc, "log": logf, "cpu": w.stats, "peers": {}}

    def load(name):
        try:
            with open(os.path.join(out, name + ".json")) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    serial = load("serial") or {}
    s_heavy = serial.get("w2_heavy", {}).get("wall_median_s")
    res["serial_w2x10_s"] = s_heavy
    for key, label in PEER_NAMES:
        r = load(key)
        if not r or "w1" not in r:
            if r:
                res["peers"][key] = {"label": label, "error": r.get("error", "no W1")}
            continue
        row = {"label": label, "w1_tasks_per_s": r["w1"]["tasks_per_s_median"], "w1_tasks": r["w1"]["tasks"],
               "versions": r.get("versions")}
        if "w2_heavy" in r:
            wh = r["w2_heavy"]["wall_median_s"]
            row["w2x10_s"] = wh
            row["w2x10_eff"] = s_heavy / (2 * wh) if s_heavy else None
        w3h = r.get("w3_heavy")
        if w3h:
            row["w3_ok"], row["w3_of"] = w3h["ok"], w3h["of"]
            row["w3_s"] = w3h["ok_wall_median_s"]
            row["w3_extra_s"] = w3h["ok_wall_median_s"] - row["w2x10_s"] if w3h["ok"] and "w2x10_s" in row else None
            row["w3_errors"] = w3h["errors"]
            row["w3_kills_landed"] = w3h["kills_landed"]
        fc = [c["foreign_cores"] for k in ("w1", "w2", "w2_heavy") if k in r for c in r[k]["cpu"]]
        fc += [r[k]["cpu"]["foreign_cores"] for k in ("w3", "w3_heavy") if r.get(k)]
        row["max_foreign_cores"] = max(fc) if fc else None
        if not r.get("ok"):
            row["error"] = r.get("error")
        res["peers"][key] = row
    return res


# ---------------------------------------------------------------- report

def fmt(x, nd=0, suffix=""):
    if x is None:
        return "-"
    return f"{x:,.{nd}f}{suffix}"


def verdict(ok):
    return "met" if ok else "**missed**"


def best(peers_res, key, higher=True):
    rows = [(v[key], v["label"]) for v in peers_res.get("peers", {}).values() if v.get(key) is not None]
    if not rows:
        return None, None
    return (max if higher else min)(rows)


def report(res):
    L = []
    m = res["machine"]
    L.append(f"Run {m['date']} on {m['host_desc']}; code at `{m['commit']}`; load average at start "
             f"{m['load_start']}, at end {m.get('load_end', '-')}; command: `{m['command']}`.")
    L.append("")
    L.append("| workload | figure | SpareCycles | best peer | ours ÷ best peer | target | |")
    L.append("|---|---|---|---|---|---|---|")
    pr = res.get("peers") or {}
    bw1, bw1n = best(pr, "w1_tasks_per_s")
    for q, r in (res.get("w1") or {}).items():
        ups = r.get("units_per_s")
        ratio = ups / bw1 if ups and bw1 else None
        if r.get("rate"):
            ok = r.get("lease_p99_ms") is not None and r["lease_p99_ms"] < 10 and r.get("correct")
            L.append(f"| W1 open loop, quorum 1 | lease p50 / p99 at {r['rate']:g} lease-report cycles/s from "
                     f"{r['workers']:,} workers (up to {r['batch']} units each, within quota: {fmt(ups)} units/s end "
                     f"to end); "
                     f"report p50 / p99 | {fmt(r.get('lease_p50_ms'), 1)} / {fmt(r.get('lease_p99_ms'), 1)} ms; "
                     f"{fmt(r.get('report_p50_ms'), 1)} / {fmt(r.get('report_p99_ms'), 1)} ms | - | - | "
                     f"p99 < 10 ms | {verdict(ok)} |")
            continue
        if q.startswith("q1c"):
            ok = (ups is not None and ups >= 20_000 and r.get("lease_p99_ms") is not None and r["lease_p99_ms"] < 10
                  and r.get("correct"))
            L.append(f"| W1 closed loop, quorum 1, {r['concurrency']} clients | units/s; lease p50 / p99; report p50 / "
                     f"p99 ({r['units']:,} units, {r['workers']:,} workers, {r['concurrency']} calls in flight) | "
                     f"{fmt(ups)}; {fmt(r.get('lease_p50_ms'), 1)} / {fmt(r.get('lease_p99_ms'), 1)} ms; "
                     f"{fmt(r.get('report_p50_ms'), 1)} / {fmt(r.get('report_p99_ms'), 1)} ms | - | - | "
                     f">= 20,000 and p99 < 10 ms | {verdict(ok)} |")
            continue
        if q == "q1":
            tgt = ups is not None and ups >= 20_000 and (ratio is None or ratio >= 5)
            L.append(f"| W1 dispatch, quorum 1 | units/s, submit to assembled result ({r['units']:,} units, "
                     f"{r['workers']:,} workers) | {fmt(ups)} | {fmt(bw1)} ({bw1n or '-'}) | {fmt(ratio, 2)}x | "
                     f">= 20,000 and >= 5x | {verdict(tgt)} |")
        else:
            L.append(f"| W1 dispatch, quorum {r['quorum']} | units/s ({r['tasks_per_unit']} tasks per unit) | "
                     f"{fmt(ups)} | {fmt(bw1)} ({bw1n or '-'}; no quorum) | {fmt(ratio, 2)}x | - | |")
        lt = "p99 < 10 ms" if q == "q1" else "-"
        lv = verdict(r.get("lease_p99_ms") is not None and r["lease_p99_ms"] < 10) if q == "q1" else ""
        L.append(f"| W1 {q}, {r['concurrency']} clients | lease p50 / p99 | {fmt(r.get('lease_p50_ms'), 1)} / "
                 f"{fmt(r.get('lease_p99_ms'), 1)} ms "
                 f"| - | - | {lt} | {lv} |")
        L.append(f"| W1 {q}, {r['concurrency']} clients | report p50 / p99 | {fmt(r.get('report_p50_ms'), 1)} / "
                 f"{fmt(r.get('report_p99_ms'), 1)} ms | - | - | - | |")
    w2r = res.get("w2")
    if w2r:
        beff, beffn = best(pr, "w2x10_eff")
        e = w2r["efficiency"]
        L.append(f"| W2 CPU-bound | efficiency = kernel alone ÷ job, each job against the kernel run just before "
                 f"it (π over [0, {w2r['end']:.0e}), {w2r['units']} units; median of {len(w2r['rounds'])} rounds) | "
                 f"{fmt(e, 3)} (the medians: {fmt(w2r['kernel_s'], 3)} s ÷ {fmt(w2r['ours_s'], 3)} s = "
                 f"{fmt(w2r.get('efficiency_of_medians'), 3)}) | {fmt(beff, 2)} ({beffn or '-'}) | "
                 f"{fmt(e / beff if beff else None, 2)}x | >= 0.97 | {verdict(e >= 0.97)} |")
    for r in res.get("w3") or []:
        bw3, bw3n = best(pr, "w3_s", higher=False)
        ok = "correct" if r["correct"] else f"WRONG/none ({r['state']})"
        killed = (f"killed at {r['killed_at_s']} s holding {r.get('victim_held')} tasks" if r.get("killed_at_s") is not None
                  else "kill missed: done first, or no worker held units")
        L.append(f"| W3 fault, suspect-after {r['suspect_after_s']} s | time to a correct answer, one of two "
                 f"workers SIGKILLed | {fmt(r['wall_s'], 2)} s, {ok}, {killed} (no kill: {fmt(r['no_kill_s'], 2)} s, "
                 f"{r['extra_s']:+.2f} s) | {fmt(bw3, 2)} s ({bw3n or '-'}) | "
                 f"{fmt(r['wall_s'] / bw3 if bw3 else None, 2)}x (time) | - | |")
    w4r = res.get("w4")
    if w4r:
        L.append(f"| W4 size | {w4r['units']:,}-unit job: submit to accepted | {fmt(w4r['accepted_s'], 3)} s | - | - "
                 f"| < 2 s | {verdict(w4r['accepted_s'] < 2)} |")
        L.append(f"| W4 size | coordinator RSS while it runs ({w4r['workers']} workers, {w4r['secs']:.0f} s, "
                 f"{w4r['units_done']:,} units done; sampled every 50 ms) | peak {fmt(w4r['rss_peak_mib'], 1)} MiB "
                 f"(idle {fmt(w4r['rss_idle_mib'], 1)}) | - | - | < 300 MB | "
                 f"{verdict(w4r['rss_peak_mib'] is not None and w4r['rss_peak_mib'] * 1.048576 < 300)} |")
    psr = res.get("primesieve")
    if psr and "rows" in psr:
        for r in psr["rows"]:
            L.append(f"| prime kernel vs {psr['version']} | π over [0, {psr['end']:.0e}), {r['threads']} thread(s) | "
                     f"{fmt(r['kernel_s'], 3)} s | primesieve {fmt(r['primesieve_s'], 3)} s | "
                     f"{fmt(r['ratio'], 2)}x (time) | <= 2x | {verdict(r['ratio'] <= 2)} |")
    L.append("")
    if pr.get("peers"):
        L.append(f"Peers in the same run (kit `{PEERS_KIT}`, exit {pr['exit']}; W1 = {next(iter(pr['peers'].values())).get('w1_tasks', '-')} "
                 f"trivial tasks; W2x10 = π(2e9) in 200 ranges, eff = serial {fmt(pr.get('serial_w2x10_s'), 2)} s ÷ "
                 f"(2 × wall); W3 = SIGKILL one busy worker 1 s into W2x10):")
        L.append("")
        L.append("| peer | W1 tasks/s | W2x10 wall s | W2x10 eff | W3 time to correct answer | max foreign cores |")
        L.append("|---|---|---|---|---|---|")
        for v in pr["peers"].values():
            if "w1_tasks_per_s" not in v:
                L.append(f"| {v['label']} | error: {v.get('error')} | | | | |")
                continue
            w3c = "-"
            if "w3_ok" in v:
                w3c = f"{v['w3_ok']}/{v['w3_of']} ok"
                if v.get("w3_s") is not None:
                    w3c += f", {v['w3_s']:.2f} s ({v['w3_extra_s']:+.2f})"
                if v.get("w3_errors"):
                    w3c += ", " + "/".join(v["w3_errors"])
                if v.get("w3_kills_landed", v["w3_of"]) < v["w3_of"]:
                    w3c += f", {v['w3_of'] - v['w3_kills_landed']} kill(s) missed"
            L.append(f"| {v['label']} | {fmt(v['w1_tasks_per_s'])} | {fmt(v.get('w2x10_s'), 3)} | "
                     f"{fmt(v.get('w2x10_eff'), 2)} | {w3c} | {fmt(v.get('max_foreign_cores'), 2)} |")
        L.append("")
    elif pr.get("error"):
        L.append(f"Peers: {pr['error']}")
        L.append("")
    L.append("Our side in detail (foreign cores = CPU used by other processes on the machine during that part):")
    L.append("")
    for q, r in (res.get("w1") or {}).items():
        if r.get("rate"):
            L.append(f"- W1 open loop {r['rate']:g} cycles/s: {r['units']:,} units in {fmt(r.get('wall_s'), 2)} s; "
                     f"coordinator {fmt(r.get('coord_cores'), 2)} cores; result {r.get('count')} "
                     f"({'correct' if r.get('correct') else 'WRONG'}); foreign {r['cpu']['foreign_cores']} cores")
            continue
        L.append(f"- W1 {q}: accepted in {fmt(r.get('accepted_s'), 3)} s, completed in {fmt(r.get('wall_s'), 2)} s; "
                 f"coordinator {fmt(r.get('coord_cores'), 2)} cores (peak RSS {fmt(r.get('coord_peak_rss_mib'))} MiB), "
                 f"load generator {fmt(r.get('loadgen_cores'), 2)} cores; coordinator context switches per unit "
                 f"{fmt(r.get('coord_ctx_switches_per_unit'), 1)} (all threads, including enrolment); result {r.get('count')} "
                 f"({'correct' if r.get('correct') else 'WRONG'}); foreign {r['cpu']['foreign_cores']} cores")
    if w2r:
        rr = "; ".join(f"{x['kernel_s']:.3f}/{x['ours_s']:.3f} s (worker {x.get('worker_cores')} cores, "
                       f"coordinator {x.get('coord_cores')} cores)" for x in w2r["rounds"])
        L.append(f"- W2 rounds (kernel/job): {rr}; answers {'correct' if w2r['correct'] else 'WRONG'}; "
                 f"foreign {w2r['cpu']['foreign_cores']} cores")
        acct = w2r.get("cpu_ms")
        if acct:
            L.append(f"- W2 CPU per job, median ms: kernel alone {fmt(acct['kernel_cpu_ms'], 1)}; the job's compute "
                     f"threads {fmt(acct['compute_cpu_ms'], 1)}, the rest of the worker {fmt(acct['worker_other_cpu_ms'], 1)}, "
                     f"coordinator {fmt(acct['coord_cpu_ms'], 1)}, the benchmark's client {fmt(acct['client_cpu_ms'], 1)}. "
                     f"Everything beside the compute shares the same {NPROC} cores, so it alone caps the efficiency at "
                     f"{fmt(acct['cap'], 3)} (compute ÷ (compute + the rest))")
    for r in res.get("w3") or []:
        L.append(f"- W3 suspect-after {r['suspect_after_s']} s: {r['workers']}, {r.get('tasks_created')} tasks for "
                 f"{W2_UNITS} units" + (f"; {r['kill_note']}" if r.get("kill_note") else "")
                 + f"; foreign {r['cpu']['foreign_cores']} cores")
    if w4r:
        L.append(f"- W4: RSS median {fmt(w4r['rss_median_mib'], 1)} MiB, last {fmt(w4r['rss_last_mib'], 1)} MiB, "
                 f"VmHWM {fmt(w4r['vmhwm_mib'], 1)} MiB over {w4r['samples']} samples; coordinator CPU "
                 f"{fmt(w4r['coord_cpu_s'], 1)} s; foreign {w4r['cpu']['foreign_cores']} cores")
    prof = res.get("profile")
    if prof and "top" in prof:
        L.append("")
        L.append(f"Coordinator profile during W1 quorum 1 ({prof['units']:,} units, {fmt(prof['units_per_s'])} units/s "
                 f"under perf; coordinator {fmt(prof['coord_cores'], 2)} cores, load generator "
                 f"{fmt(prof['loadgen_cores'], 2)} cores; {fmt(prof.get('ctx_per_unit'), 1)} coordinator context "
                 f"switches per unit). Self time by binary: "
                 + ", ".join(f"{d['dso']} {d['pct']:.1f}%" for d in prof["by_dso"]) + ". By thread: "
                 + ", ".join(f"{d['thread']} {d['pct']:.1f}%" for d in prof.get("by_thread", [])) + ". Top symbols:")
        L.append("")
        L.append("| self % | binary | symbol |")
        L.append("|---|---|---|")
        for t in prof["top"]:
            sym = t["symbol"].replace("|", "\\|")
            L.append(f"| {t['pct']:.1f} | {t['dso']} | `{sym[:110]}` |")
    elif prof:
        L.append(f"Profile: {prof.get('error')}")
    return "\n".join(L) + "\n"


def main():
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="run-", dir=OUT)
    atexit.register(shutil.rmtree, tmp, True)
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    def rev(ref):
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", ref], capture_output=True,
                              text=True).stdout.strip() or "?"

    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    commit = f"{rev('HEAD')}{' + uncommitted changes' if dirty else ''} (main {rev('main')})"
    res = {"machine": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "host_desc": f"{NPROC} cores '{cpu}', {mem:.1f} GiB, kernel {os.uname().release}",
                       "commit": commit, "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                       "command": os.environ.get("BENCH_COMMAND", "bash bench/run.sh"),
                       "nice": os.nice(0)}}
    parts = [("w1", lambda: w1(tmp)), ("w2", lambda: w2(tmp)), ("w3", lambda: w3(tmp)), ("w4", lambda: w4(tmp)),
             ("primesieve", primesieve), ("peers", lambda: peers(tmp)), ("profile", lambda: profile(tmp))]
    failed = []
    for name, fn in parts:
        if name in SKIP:
            continue
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001 - one broken part must not lose the others' figures
            log(f"{name} FAILED: {type(e).__name__}: {e}")
            res[name + "_error"] = f"{type(e).__name__}: {e}"
            failed.append(name)
            PROCS.stop_all()
    res["machine"]["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    text = report(res)
    if failed:
        text += "\nFailed parts: " + ", ".join(f"{n} ({res[n + '_error']})" for n in failed) + "\n"
    with open(os.path.join(OUT, "RESULTS.md"), "w") as f:
        f.write(text)
    print()
    print(text)
    log(f"written {os.path.join(OUT, 'RESULTS.md')} and results.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

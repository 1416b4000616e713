#!/usr/bin/env python3
"""W1 of two coordinator binaries, alternated: for A/B-testing a change on a noisy machine.

Each run starts a fresh coordinator of one binary (temporary data dir, rate limits off) and
drives it with one load generator (`coordinator bench`, the same binary for both sides:
BENCHBIN, default A) in the closed loop of W1, or the open loop with RATE; the binaries take
turns pair by pair, in alternating order. Prints each run's units/s, coordinator CPU and lease
latency, then the ratios B ÷ A per pair.

    cp target/release/coordinator /tmp/coordinator-a    # build the other version, then:
    python3 bench/w1ab.py /tmp/coordinator-a target/release/coordinator
    UNITS=100000 PAIRS=4 python3 bench/w1ab.py A B      # defaults: 50,000 units, 4 pairs
    RATE=100 UNITS=8000 python3 bench/w1ab.py A B       # open loop, cycles/s
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

A, B = sys.argv[1], sys.argv[2]
UNITS = os.environ.get("UNITS", "50000")
PAIRS = int(os.environ.get("PAIRS", "4"))
QUORUM = os.environ.get("Q", "1")
BENCH = os.environ.get("BENCHBIN", A)
RATE = os.environ.get("RATE")
TOKEN = "bench-admin-token-0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(binary):
    data = tempfile.mkdtemp()
    port = free_port()
    with open(os.path.join(data, "c.log"), "w") as log:
        coord = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{port}", "--rate-limit-per-token", "0",
             "--rate-limit-per-ip", "0", "--data-dir", data, "--admin-token", TOKEN],
            stdout=subprocess.DEVNULL, stderr=log)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            args = [BENCH, "bench", "--coordinator", f"http://127.0.0.1:{port}", "--token", TOKEN,
                    "--units", UNITS, "--workers", "1000", "--concurrency", "64", "--batch", "16",
                    "--quorum", QUORUM, "--pid", str(coord.pid)]
            if RATE:
                args += ["--rate", RATE]
            return subprocess.run(args, capture_output=True, text=True).stdout
        finally:
            coord.terminate()
            coord.wait()
            shutil.rmtree(data, ignore_errors=True)


results = {"A": [], "B": []}
for i in range(PAIRS):
    order = (("A", A), ("B", B)) if i % 2 == 0 else (("B", B), ("A", A))
    for name, binary in order:
        out = run(binary)
        ups = re.search(r"([\d.]+) units/s", out)
        cpu = re.search(r"coordinator: [^\n]*", out)
        lease = re.search(r"lease [^\n]*", out)
        if not ups or "result:" not in out:
            sys.exit(f"{name} ({binary}) failed:\n{out}")
        print(name, ups.group(1), "units/s |", cpu.group(0) if cpu else "", "|",
              lease.group(0) if lease else "", flush=True)
        results[name].append(float(ups.group(1)))
for name, figures in results.items():
    print(name, sorted(figures))
print("ratios B/A per pair:", [round(b / a, 3) for a, b in zip(results["A"], results["B"])])

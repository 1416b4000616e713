#!/usr/bin/env python3
"""W1 of two coordinator binaries, alternated: for A/B-testing a change on a noisy machine.

Each run starts a fresh coordinator of one binary and drives it as bench/run.sh's W1 does
(`sidebyside.w1_once`: the release load generator in target/release for both sides, 1,000
simulated workers, 64 clients, batches of 16, the answer checked), in the closed loop or, with
RATE, the open loop; the binaries take turns pair by pair, in alternating order. Prints each
run's units/s, coordinator CPU per unit and lease latency, then the ratios B ÷ A per pair.

    cp target/release/coordinator /tmp/coordinator-a    # build the other version, then:
    python3 bench/w1ab.py /tmp/coordinator-a target/release/coordinator
    UNITS=100000 PAIRS=4 python3 bench/w1ab.py A B      # defaults: 50,000 units, 4 pairs
    RATE=100 UNITS=8000 python3 bench/w1ab.py A B       # open loop, cycles/s
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sidebyside as S  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    bins = {"A": os.path.abspath(sys.argv[1]), "B": os.path.abspath(sys.argv[2])}
    units, pairs = int(os.environ.get("UNITS", "50000")), int(os.environ.get("PAIRS", "4"))
    quorum, rate = int(os.environ.get("Q", "1")), os.environ.get("RATE")
    rate = float(rate) if rate else None
    ups = {"A": [], "B": []}
    tmp = tempfile.mkdtemp(prefix="w1ab-")
    try:
        for i in range(pairs):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                r = S.w1_once(tmp, units, quorum, rate=rate, binary=bins[name])
                if not r["correct"] or r["units_per_s"] is None:
                    sys.exit(f"{name} ({bins[name]}) failed:\n{r['output']}")
                cpu_us = r["coord_cpu_s"] / units * 1e6 if r["coord_cpu_s"] is not None else float("nan")
                print(f"{name} {r['units_per_s']:.0f} units/s | coordinator {cpu_us:.1f} µs CPU per unit, "
                      f"{r['coord_cores']} cores | lease p50 {r['lease_p50_ms']} ms p99 {r['lease_p99_ms']} ms",
                      flush=True)
                ups[name].append(r["units_per_s"])
    finally:
        S.PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for name, figures in ups.items():
        print(name, sorted(figures))
    print("ratios B/A per pair:", [round(b / a, 3) for a, b in zip(ups["A"], ups["B"])])


if __name__ == "__main__":
    main()

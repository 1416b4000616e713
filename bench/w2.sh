#!/usr/bin/env bash
# W2 alone: prime-count over [0, W2_END) in W2_UNITS units on one local worker with all cores,
# against the same kernel called directly in one process; prints both wall times and the ratio.
# The job's end is seen on the coordinator's event stream (no polling error). Same code as the
# W2 part of bench/run.sh.
#
#   bash bench/w2.sh                      # W2_END=2e9, 200 units, 15 rounds
#   W2_END=1000000000 W2_UNITS=100 W2_ROUNDS=5 bash bench/w2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p sparecycles-coordinator -p sparecycles-worker -p sparecycles-apps \
  --bin coordinator --bin worker --example prime_kernel
export BENCH_COMMAND="${BENCH_COMMAND:-$(env | grep -E '^W2_' | sort | tr '\n' ' ')bash bench/w2.sh}"
SKIP="w1 w3 w4 primesieve peers profile" BENCH_DIR="${BENCH_DIR:-target/bench-w2}" \
  exec python3 bench/sidebyside.py

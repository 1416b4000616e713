#!/usr/bin/env bash
# Issue 8 side by side, in one go on one machine: W1 dispatch (quorum 1 and 2), W2 CPU-bound,
# W3 fault, W4 size on SpareCycles; the prime kernel against primesieve; and the peer kit's
# W1-W3 (Dask, Celery, Ray). Prints one markdown table (ours vs the best peer) and writes it to
# target/bench/RESULTS.md (raw figures in target/bench/results.json). Loopback only.
#
#   bash bench/run.sh                                   # everything, full sizes (7 min with
#                                                       # BENCH_REPEATS=1 on a quiet machine)
#   SKIP_PEERS=1 W1_UNITS=5000 W1_WORKERS=100 W2_END=200000000 W2_ROUNDS=1 \
#     W3_SUSPECT=2 W4_UNITS=100000 W4_SECS=3 PS_END=200000000 PS_ROUNDS=1 \
#     PROFILE_UNITS=3000 bash bench/run.sh              # smoke run, about a minute
#
# Sizes (defaults): W1_UNITS=100000 W1_WORKERS=1000 W1_CONCURRENCY=64 W1_BATCH=16
#   W1_QUORUMS="1 2" W1_CLIENTS="8 16" (quorum 1 with fewer clients) W1_RATES="100 250 400"
#   (open loop, cycles/s) W1_OPEN_SECS=5; W2_END=2000000000 W2_UNITS=200 W2_ROUNDS=15; W3_KILL_AT=1.0
#   W3_SUSPECT="60 2" (--suspect-after-secs: the default and a tuned value); W4_UNITS=1000000
#   W4_SECS=30 W4_WORKERS=2; PS_END=$W2_END PS_THREADS="1 $(nproc)" PS_ROUNDS=3;
#   PROFILE_UNITS=30000 PROFILE_FREQ=499.
# Parts: SKIP="w1 w2 w3 w4 primesieve peers profile" (any subset); SKIP_PEERS=1; SKIP_PROFILE=1.
# Peers: PEERS_KIT (default ../shared/bench/peers), and the kit's own variables pass through
#   (PEERS, BENCH_REPEATS, BENCH_W1_TASKS, SKIP_SERIAL, BENCH_QUIET_MAX_WAIT_S, ...). The kit
#   runs from a copy in target/bench/peers-kit, so nothing is written into the shared kit. Here
#   it waits at most BENCH_QUIET_MAX_WAIT_S=3 s for a quiet machine and redoes no loaded run
#   (BENCH_MAX_RETRIES=0): both sides run under the same load, which the table records.
# BENCH_NICE=-10 runs everything (ours and the peers alike) at that priority on a shared machine.
# BENCH_DIR: where results go (default target/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_COMMAND="${BENCH_COMMAND:-$(env | grep -E '^(W[1-4]_|PS_|PROFILE_|SKIP|PEERS|BENCH_(REPEATS|W1_TASKS|NICE))' \
  | sort | tr '\n' ' ')bash bench/run.sh}"
if [ -n "${BENCH_NICE:-}" ]; then renice -n "$BENCH_NICE" -p $$ >/dev/null; fi

echo "building release binaries"
cargo build --release --quiet -p sparecycles-coordinator -p sparecycles-worker -p sparecycles-apps \
  --bin coordinator --bin worker --example prime_kernel

case " ${SKIP:-} " in *" primesieve "*) ;; *)
  if ! command -v primesieve >/dev/null 2>&1; then
    echo "installing primesieve (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq primesieve >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq primesieve >/dev/null; } \
      || echo "primesieve: could not install; that part will say so"
  fi ;;
esac
case " ${SKIP:-} " in *" profile "*) ;; *)
  if [ "${SKIP_PROFILE:-0}" != 1 ] && ! command -v perf >/dev/null 2>&1; then
    echo "installing perf (apt-get linux-perf)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null 2>&1 \
      || echo "perf: could not install; the profile part will say so"
  fi ;;
esac

exec python3 bench/sidebyside.py

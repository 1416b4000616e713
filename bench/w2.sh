#!/usr/bin/env bash
# W2: prime-count over [0, END) in UNITS units on one local worker with all cores, against the
# same kernel called directly in one process. Prints both wall times and the ratio.
#
#   bash bench/w2.sh            # END=2e9, 200 units, 3 rounds
#   END=1000000000 UNITS=100 ROUNDS=5 bash bench/w2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
END=${END:-2000000000}
UNITS=${UNITS:-200}
ROUNDS=${ROUNDS:-3}
UNIT_SIZE=$(( (END + UNITS - 1) / UNITS ))

cargo build --release --quiet --bin coordinator --bin worker --example prime_kernel -p sparecycles-coordinator -p sparecycles-worker -p sparecycles-apps
BIN=target/release
TMP=$(mktemp -d)
TOKEN=bench-admin-token-0123456789
cleanup() { [ -n "${WPID:-}" ] && kill "$WPID" 2>/dev/null; [ -n "${CPID:-}" ] && kill "$CPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$BIN/coordinator" serve --listen 127.0.0.1:$PORT --rate-limit-per-token 0 --rate-limit-per-ip 0 --data-dir "$TMP/data" --admin-token $TOKEN >/dev/null 2>"$TMP/c.log" &
CPID=$!
for _ in $(seq 100); do curl -fs "$URL/healthz" >/dev/null && break; sleep 0.1; done
"$BIN/worker" run --coordinator "$URL" --state-dir "$TMP/w" --name bench >/dev/null 2>"$TMP/w.log" &
WPID=$!
sleep 1

run_job() {
  local t0 t1 id state
  t0=$(date +%s.%N)
  id=$(curl -fs -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"name\":\"w2\",\"app\":\"prime-count\",\"params\":{\"start\":0,\"end\":$END,\"unit_size\":$UNIT_SIZE},\"redundancy\":{\"min_quorum\":1}}" \
    "$URL/api/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    state=$(curl -fs "$URL/api/v1/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    [ "$state" = completed ] && break
    [ "$state" = failed ] && { echo "job failed" >&2; exit 1; }
    sleep 0.02
  done
  t1=$(date +%s.%N)
  echo "$(curl -fs "$URL/api/v1/jobs/$id/result") $(python3 -c "print(f'{$t1-$t0:.3f}')")"
}

echo "W2: pi([0, $END)) in $UNITS units; $(nproc) cores; $(date -u +%FT%TZ)"
for r in $(seq "$ROUNDS"); do
  k=$("$BIN/examples/prime_kernel" 0 "$END")
  j=$(run_job)
  kt=${k##* }; jt=${j##* }
  echo "round $r: kernel alone ${kt}s (${k% *}) | SpareCycles ${jt}s (${j% *}) | efficiency $(python3 -c "print(f'{$kt/$jt:.3f}')")"
done

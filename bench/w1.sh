#!/usr/bin/env bash
# W1 dispatch: UNITS trivial units (prime-count over 10 numbers each), quorum 1 and 2, WORKERS
# simulated workers over real HTTP against a release coordinator on SQLite.
#
#   bash bench/w1.sh                     # 100,000 units, 1,000 workers
#   UNITS=20000 WORKERS=200 bash bench/w1.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UNITS=${UNITS:-100000}
WORKERS=${WORKERS:-1000}
CONCURRENCY=${CONCURRENCY:-64}
BATCH=${BATCH:-16}
cargo build --release --quiet --bin coordinator -p sparecycles-coordinator
BIN=target/release/coordinator
TOKEN=bench-admin-token-0123456789
echo "W1 on $(nproc) cores, $(date -u +%FT%TZ)"
for Q in 1 2; do
  TMP=$(mktemp -d)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BIN" serve --listen 127.0.0.1:$PORT --rate-limit-per-token 0 --rate-limit-per-ip 0 --data-dir "$TMP" --admin-token $TOKEN >/dev/null 2>"$TMP/c.log" &
  CPID=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  "$BIN" bench --coordinator "http://127.0.0.1:$PORT" --token $TOKEN --units "$UNITS" \
    --workers "$WORKERS" --concurrency "$CONCURRENCY" --batch "$BATCH" --quorum "$Q" --pid $CPID || true
  kill $CPID; wait $CPID 2>/dev/null || true
  rm -rf "$TMP"
done

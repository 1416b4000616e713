#!/usr/bin/env bash
# Worker agent figures for BENCHMARKS.md ("Worker agent"): the worker's resident memory idle
# and while computing (release build, 2 compute threads), sampled from /proc/PID/status.
# Usage: bench/agent.sh   (builds release binaries; needs only 127.0.0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin coordinator --bin worker
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
port=$((20000 + RANDOM % 20000))
url=http://127.0.0.1:$port
target/release/coordinator serve --listen 127.0.0.1:$port --rate-limit-per-token 0 --rate-limit-per-ip 0 --data-dir "$tmp/c" --admin-token bench-admin-token-0123456789 \
    >/dev/null 2>&1 &
sleep 1
RUST_LOG=warn target/release/worker run --coordinator "$url" --state-dir "$tmp/w" --config "$tmp/none.toml" \
    --cores 2 --idle-minutes 0 2>/dev/null &
wpid=$!
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$wpid/status; }
sleep 5
echo "worker RSS idle (enrolled, no work):      $(rss)"
cat > "$tmp/job.toml" <<SPEC
name = "agent-bench"
app = "prime-count"
[params]
start = 0
end = 20_000_000_000
unit_size = 2_000_000_000
[redundancy]
min_quorum = 1
SPEC
target/release/coordinator submit "$tmp/job.toml" --coordinator "$url" --token bench-admin-token-0123456789 >/dev/null
sleep 6
echo "worker RSS computing prime-count (2 threads): $(rss)"
sleep 4
echo "worker RSS computing, 4 s later:             $(rss)"

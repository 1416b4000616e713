#!/usr/bin/env bash
# Starts three coordinators on one PostgreSQL database behind nginx, on this machine, to try
# the deployment: http://127.0.0.1:8080/ (the dashboard), workers pointed at the same URL.
# Ctrl-C stops everything.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/sparecycles deploy/run-local.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/sparecycles}"
BIN="${BIN:-target/release/coordinator}"
STATE="${STATE:-sparecycles-deploy}"
[ -x "$BIN" ] || cargo build --release --bin coordinator

# Every coordinator must accept the same admin token: make one, keep it with the state.
mkdir -p "$STATE"
if [ -z "${SPARECYCLES_ADMIN_TOKEN:-}" ]; then
    [ -f "$STATE/admin.token" ] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=' \
        | sed 's/^/sca_/' > "$STATE/admin.token")
    SPARECYCLES_ADMIN_TOKEN="$(cat "$STATE/admin.token")"
fi
export SPARECYCLES_ADMIN_TOKEN SPARECYCLES_DATABASE_URL="$DATABASE_URL"

# Create the database if the server lets us (migrations run when a coordinator starts).
DB_NAME="${DATABASE_URL##*/}"; DB_NAME="${DB_NAME%%\?*}"
psql "${DATABASE_URL%/*}/postgres" -qAtc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" \
    | grep -q 1 || psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE \"$DB_NAME\""

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for port in 8081 8082 8083; do
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$STATE/$port" --rate-limit-per-ip 0 \
        > "$STATE/coordinator-$port.log" 2>&1 &
    pids+=($!)
done
nginx -c "$PWD/deploy/nginx.conf" -g 'daemon off;' &
pids+=($!)

echo "three coordinators behind nginx: http://127.0.0.1:8080/ (logs in $STATE/)"
echo "admin token: $STATE/admin.token"
wait -n "${pids[@]}"

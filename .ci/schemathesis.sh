#!/usr/bin/env bash
# Property-based API tests: schemathesis generates requests from /api/v1/openapi.json and sends
# them, with the admin token and then a worker's, to a coordinator started here on a free
# loopback port with a throwaway data dir. It fails on any 5xx and any response that does not
# match the document.
# Runs locally as is: .ci/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
    # --clear: a venv moved with its directory keeps dead paths in its scripts.
    python3 -m venv --clear "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

cargo build --locked --bin coordinator
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TOKEN="schemathesis-admin-token-$RANDOM$RANDOM"
URL="http://127.0.0.1:$PORT"
target/debug/coordinator serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
    --admin-token "$TOKEN" --rate-limit-per-token 0 --rate-limit-per-ip 0 \
    >"$WORK/coordinator.log" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 60); do
    python3 -c "import urllib.request; urllib.request.urlopen('$URL/readyz', timeout=1)" \
        2>/dev/null && break
    sleep 0.5
done

run() {
    "$VENV/bin/schemathesis" run "$URL/api/v1/openapi.json" \
        --checks not_a_server_error,response_schema_conformance \
        --exclude-path /api/v1/events \
        --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" \
        --request-timeout 40 \
        --workers 2 \
        --seed "${SCHEMATHESIS_SEED:-1}" \
        --no-color \
        "$@"
}

# The event stream never ends by design: it is left out. Everything else is exercised within a
# time budget that keeps CI short: first as the admin, then the worker protocol as a worker
# (enrolled here; the admin token opens no worker endpoint).
status=0
run --header "Authorization: Bearer $TOKEN" --max-time "${SCHEMATHESIS_MAX_TIME:-100}" \
    || status=$?
# A job with many units, so that leases hand out real tasks.
WORKER_TOKEN="$(python3 - "$URL" "$TOKEN" <<'PY'
import json, sys, urllib.request
url, admin = sys.argv[1], sys.argv[2]
def post(path, body, headers):
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json", **headers})
    return json.load(urllib.request.urlopen(req, timeout=10))
post("/api/v1/jobs", {"name": "for schemathesis", "app": "collatz",
                      "params": {"start": 1, "end": 1000000, "unit_size": 100}},
     {"Authorization": "Bearer " + admin})
print(post("/api/v1/workers/enroll",
           {"name": "schemathesis", "cores": 2, "os": "linux", "arch": "x86_64",
            "apps": ["prime-count", "collatz", "monte-carlo-pi", "mandelbrot", "integrate"]},
           {})["token"])
PY
)"
run --header "Authorization: Bearer $WORKER_TOKEN" --include-path-regex '^/api/v1/work/' \
    --phases examples,coverage,fuzzing \
    --max-time "${SCHEMATHESIS_WORKER_MAX_TIME:-40}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "== last coordinator log lines"
    tail -40 "$WORK/coordinator.log"
fi
exit "$status"

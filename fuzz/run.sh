#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: fuzz/run.sh [seconds per target, default 60].
# Builds with cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP for its -Z flags, no
# sanitizer: the code is safe Rust, the fuzzers look for panics, aborts, hangs and blow-ups).
# Corpora grow in fuzz/corpus/<target> from fuzz/seeds/<target>; a crash lands in
# fuzz/artifacts/<target>: copy it to fuzz/regressions/<target>/ once fixed, where
# `cargo test -p sparecycles-coordinator fuzz_` replays it.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
TARGETS=(job_spec result_payload)
# Debug assertions on: an arithmetic overflow is a finding too.
cargo fuzz build --sanitizer none --release --debug-assertions
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t for ${SECONDS_PER_TARGET}s"
    cargo fuzz run --sanitizer none --release --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
        2>&1 | tee "artifacts/$t.log" | grep -E "DONE|^Done|^stat::|^==|panicked" || true
    if ls "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* >/dev/null 2>&1; then
        echo "$t: found inputs that fail, in fuzz/artifacts/$t"
        exit 1
    fi
done

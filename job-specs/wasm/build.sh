#!/bin/sh
# Rebuilds the example modules from their WebAssembly text format with wat2wasm (Debian/Ubuntu:
# `apt-get install wabt`), and writes each module's SHA-256 into its job spec (`module = ...`).
set -eu
cd "$(dirname "$0")"
for wat in nqueens.wat mc-integrate.wat; do
    wasm="${wat%.wat}.wasm"
    wat2wasm "$wat" -o "$wasm"
    sha=$(sha256sum "$wasm" | cut -d' ' -f1)
    sed -i "s/^module = \".*\"/module = \"$sha\"/" "${wat%.wat}.toml"
    echo "$sha  $wasm"
done

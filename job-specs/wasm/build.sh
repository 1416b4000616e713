#!/bin/sh
# Rebuilds the example modules from their WebAssembly text format with wat2wasm (Debian/Ubuntu:
# `apt-get install wabt`), then prints each module's SHA-256: the hash job specs name.
set -eu
cd "$(dirname "$0")"
for wat in nqueens.wat mc-integrate.wat; do
    wasm="${wat%.wat}.wasm"
    wat2wasm "$wat" -o "$wasm"
    echo "$(sha256sum "$wasm" | cut -d' ' -f1)  $wasm"
done

//! Module apps: computations a submitter sends as WebAssembly, run in a sandbox that can touch
//! nothing outside the module's own memory. A module app is an [`App`](sparecycles_apps::App)
//! like the built-in ones, named `wasm:<sha256 of its binary>`; the ABI it exports is described
//! in `job-specs/wasm/README.md`.

mod app;
mod sandbox;

use sha2::{Digest, Sha256};
use sparecycles_protocol::is_sha256_hex;

pub use app::{COORDINATOR_CALL_LIMIT, DEFAULT_FUEL, MAX_FUEL, MAX_PIECES, WasmApp};
pub use sandbox::MEMORY_LIMIT;

/// App names of module jobs start with this, followed by the module's SHA-256 in hex.
pub const MODULE_PREFIX: &str = "wasm:";
/// What a worker that takes any module declares among its apps.
pub const ANY_MODULE: &str = "wasm:*";
/// Largest accepted module, binary or text.
pub const MAX_MODULE_BYTES: usize = 4 << 20;

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The app name of the module with hash `sha256`.
pub fn app_name(sha256: &str) -> String {
    format!("{MODULE_PREFIX}{sha256}")
}

/// The module hash an app name refers to, if it names a module app.
pub fn module_hash(app: &str) -> Option<&str> {
    app.strip_prefix(MODULE_PREFIX).filter(|h| is_sha256_hex(h))
}

/// The binary form of an uploaded module: binary modules as they are, text-format ones
/// (`.wat`) assembled. The hash of a module is the hash of its binary form.
pub fn to_binary(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "the module is {} bytes; the limit is {MAX_MODULE_BYTES}",
            bytes.len()
        ));
    }
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        "the module is neither a binary WebAssembly module nor UTF-8 text format".to_owned()
    })?;
    wat::parse_str(text).map_err(|e| format!("invalid WebAssembly text format: {e}"))
}

#[cfg(test)]
mod tests;

//! The example job specs of `job-specs/`, built into the binary: the demo runs them and the
//! dashboard offers them. A test checks that every file of the folder is listed.

/// File name and TOML text of every example spec.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "prime-count.toml",
        include_str!("../../job-specs/prime-count.toml"),
    ),
    ("collatz.toml", include_str!("../../job-specs/collatz.toml")),
    (
        "monte-carlo-pi.toml",
        include_str!("../../job-specs/monte-carlo-pi.toml"),
    ),
    (
        "mandelbrot.toml",
        include_str!("../../job-specs/mandelbrot.toml"),
    ),
    (
        "integrate.toml",
        include_str!("../../job-specs/integrate.toml"),
    ),
];

/// The example module jobs of `job-specs/wasm/` (run by the demo, which uploads their modules
/// first): spec file, TOML text, and the built module the spec names.
pub const MODULE_EXAMPLES: &[(&str, &str, &[u8])] = &[
    (
        "wasm/nqueens.toml",
        include_str!("../../job-specs/wasm/nqueens.toml"),
        include_bytes!("../../job-specs/wasm/nqueens.wasm"),
    ),
    (
        "wasm/mc-integrate.toml",
        include_str!("../../job-specs/wasm/mc-integrate.toml"),
        include_bytes!("../../job-specs/wasm/mc-integrate.wasm"),
    ),
];

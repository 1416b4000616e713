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

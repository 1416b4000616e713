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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_example_is_listed_and_names_its_module() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../job-specs/wasm");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.ends_with(".toml"))
            .map(|f| format!("wasm/{f}"))
            .collect();
        files.sort();
        let mut listed: Vec<String> = MODULE_EXAMPLES
            .iter()
            .map(|(f, ..)| f.to_string())
            .collect();
        listed.sort();
        assert_eq!(
            files, listed,
            "add new job-specs/wasm/*.toml to MODULE_EXAMPLES"
        );
        for (file, text, module) in MODULE_EXAMPLES {
            let spec: sparecycles_protocol::JobSpec = toml::from_str(text).unwrap();
            assert_eq!(
                spec.module.as_deref(),
                Some(sparecycles_wasm::sha256_hex(module).as_str()),
                "{file}: run job-specs/wasm/build.sh"
            );
        }
    }
}

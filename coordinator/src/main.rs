//! `coordinator`: serve the API, submit jobs, run the demo.

fn main() -> std::process::ExitCode {
    sparecycles_coordinator::cli::main()
}

//! `coordinator`: serve the API, submit jobs, run the demo.

// glibc's malloc was ~8 % of the coordinator's CPU in W1 (issue 8): every call allocates its
// request, JSON and answer across the async threads and the SQLite writer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sparecycles_coordinator::cli::main()
}

//! `coordinator`: serve the API, submit jobs, run the demo.

// glibc's malloc was ~8 % of the coordinator's CPU in W1 (issue 8): every call allocates its
// request, JSON and answer across the async threads and the SQLite writer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keep_freed_c_heap();
    sparecycles_coordinator::cli::main()
}

/// SQLite allocates with glibc's malloc, not the global allocator. Every statement with a
/// temporary b-tree (the lease's `IN (SELECT ...)`, a `RETURNING`) creates and frees a page cache
/// of ~85 KB, and glibc gave the freed top of the writer thread's heap back to the kernel each
/// time: an `madvise`, a TLB shootdown on both cores, and page faults on the next statement.
/// Keeping up to 256 MiB of free heap: W1's `madvise` calls 1,645 -> 2 per 20,000 units, units/s
/// +11-20 % (medians of two sets of five alternated pairs; issue 8).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_c_heap() {
    // SAFETY: mallopt only sets a malloc parameter (and takes malloc's own lock); it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_c_heap() {}

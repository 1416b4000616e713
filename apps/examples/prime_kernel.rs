//! The prime-count kernel alone, in one process, for benchmarks:
//! `cargo run --release -p sparecycles-apps --example prime_kernel -- START END [THREADS]`.
//! Prints the count and the wall time in seconds.

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.replace('_', "")
                .parse()
                .expect("numbers: START END [THREADS]")
        })
        .collect();
    let (start, end) = (args[0], args[1]);
    let threads = args.get(2).copied().unwrap_or(0) as usize;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let t = std::time::Instant::now();
    let count = pool.install(|| sparecycles_apps::prime_count::count_primes(start, end));
    println!("{count} {:.3}", t.elapsed().as_secs_f64());
}

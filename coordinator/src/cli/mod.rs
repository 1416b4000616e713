//! The `coordinator` command line: `serve`, `submit`, `upload-module`, `demo`, `bench`, `token`.

mod bench;
mod client;
mod demo;
mod module;
mod serve;
mod submit;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::ApiClient;

/// Default address of a coordinator.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "coordinator",
    version,
    about = "SpareCycles coordinator: turns idle PCs into one computer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: HTTP API, dashboard and scheduler, on embedded SQLite.
    Serve(serve::ServeArgs),
    /// Submit a job spec (TOML or JSON) to a running coordinator.
    Submit(submit::SubmitArgs),
    /// Upload a WebAssembly module (.wasm or .wat); prints the SHA-256 job specs name.
    UploadModule(module::UploadArgs),
    /// Start a coordinator and two local workers, run the example jobs, keep serving.
    Demo(demo::DemoArgs),
    /// Load-test a running coordinator with simulated workers over HTTP (benchmarks).
    Bench(bench::BenchArgs),
    /// Create, list and revoke submitter tokens (admin).
    Token(token::TokenArgs),
}

/// Where the CLI finds a coordinator and its admin token.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the coordinator.
    #[arg(long, env = "SPARECYCLES_URL", default_value = DEFAULT_URL)]
    pub coordinator: String,
    /// Admin token (default: read from DATA_DIR/admin.token).
    #[arg(long, env = "SPARECYCLES_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir of a local coordinator, to find its admin.token.
    #[arg(long, default_value = "sparecycles-data")]
    pub data_dir: PathBuf,
    /// Also trust this CA certificate (PEM), for a coordinator with a private certificate.
    #[arg(long, env = "SPARECYCLES_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

impl Connection {
    /// A client of the coordinator with this connection's token and trust.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let ca =
            match &self.ca_cert {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --ca-cert {}: {e}", path.display())
                })?),
                None => None,
            };
        ApiClient::with_ca(&self.coordinator, &self.token()?, ca.as_deref())
    }

    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let path = self.data_dir.join("admin.token");
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| {
                anyhow::anyhow!(
                    "no admin token: pass --token, set SPARECYCLES_ADMIN_TOKEN, or run next to the \
                     coordinator's data dir ({}: {e})",
                    path.display()
                )
            })
    }
}

/// How much nicer than the process the async threads run when the store is embedded SQLite.
const ASYNC_NICENESS: i32 = 10;

/// Makes the calling thread `ASYNC_NICENESS` nicer than `base`, the process's niceness as the
/// main thread read it before the runtime started. Absolute, not added to the caller's own: a
/// thread started by a runtime thread (the blocking pool's) inherits the raised value, and
/// adding to it made some threads 19. With embedded SQLite every write goes through one writer
/// thread, the serial part of dispatch; the async threads wake tens of thousands of times a
/// second under load and kept preempting it (30,000 involuntary switches in a 5 s W1 run).
/// Nicer, they yield to it: W1 +12 %, lease latency no worse (issue 8, BENCHMARKS.md). Not
/// with PostgreSQL, whose server processes do the writing. Returns whether it worked; failing
/// is not fatal.
pub fn yield_to_the_sqlite_writer(base: Option<i32>) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::setpriority_process;
        let Some(base) = base else {
            return false;
        };
        let tid = rustix::thread::gettid();
        setpriority_process(Some(tid), (base + ASYNC_NICENESS).min(19)).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = base;
        false
    }
}

/// The calling thread's niceness (on the main thread, before other threads start: the
/// process's).
fn own_niceness() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Parses arguments, runs the command, and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws progress bars: keep routine logs off its screen unless asked for.
    init_tracing(if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info,tower_http=warn,sqlx=warn"
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let embedded_sqlite = match &cli.command {
        Command::Serve(args) => args.database_url.is_none(),
        Command::Demo(_) => true,
        _ => false,
    };
    if embedded_sqlite {
        // Half the cores for async threads (at least one) unless TOKIO_WORKER_THREADS says
        // otherwise: the SQLite writer and readers run on threads of their own, and on 2 cores a
        // second async thread only added hand-offs (context switches per W2 job 124 -> 88,
        // coordinator CPU -5 %, W1 units/s and lease latency unchanged; issue 8).
        if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            builder.worker_threads((cores / 2).max(1));
        }
        let base = own_niceness();
        builder.on_thread_start(move || {
            yield_to_the_sqlite_writer(base);
        });
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Submit(args) => submit::run(args).await,
            Command::UploadModule(args) => module::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Token(args) => token::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

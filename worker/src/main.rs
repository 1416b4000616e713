//! `worker`: the SpareCycles agent a volunteer runs. Parses flags, sets up logging and TLS, and
//! turns Ctrl-C / SIGTERM into the runner's graceful shutdown.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sparecycles_worker::RunConfig;
use sparecycles_worker::runner::{all_cores, default_name, default_state_dir};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "SpareCycles worker: lends this machine's idle cores to a coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute work units for the coordinator until stopped (Ctrl-C or SIGTERM).
    Run(RunArgs),
    /// Enroll with the coordinator (if not already) and print this worker's id.
    Enroll {
        #[command(flatten)]
        connection: Connection,
        /// Enroll anew even if credentials for this coordinator are stored.
        #[arg(long)]
        force: bool,
    },
}

/// Where the coordinator and the state are, and who this worker is.
#[derive(Debug, Args)]
struct Connection {
    /// Base URL of the coordinator, e.g. http://coordinator.example:8080
    #[arg(long, env = "SPARECYCLES_COORDINATOR", value_name = "URL")]
    coordinator: String,
    /// Threads to compute with [default: all cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    cores: Option<u32>,
    /// Where credentials and undelivered results are kept
    /// [default: $XDG_STATE_HOME/sparecycles-worker or ~/.local/state/sparecycles-worker]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Name shown on the dashboard [default: the host name]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Your account name; machines with the same owner are credited together
    #[arg(long, value_name = "OWNER")]
    owner: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    /// Seconds between progress reports to the coordinator
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_secs: u64,
    /// Tasks to keep leased beyond the running one
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=1000))]
    prefetch: u64,
    /// Milliseconds to wait before asking again when the coordinator has no work
    #[arg(long, value_name = "N", default_value_t = 1000, hide = true)]
    idle_poll_ms: u64,
}

impl Connection {
    fn into_config(self) -> anyhow::Result<RunConfig> {
        let state_dir = match self.state_dir {
            Some(dir) => dir,
            None => default_state_dir()
                .context("no state dir: set --state-dir, $XDG_STATE_HOME or $HOME")?,
        };
        let mut config = RunConfig::new(self.coordinator, state_dir);
        config.cores = self.cores.map_or_else(all_cores, |n| n as usize);
        config.name = self.name.unwrap_or_else(default_name);
        config.owner = self.owner.filter(|o| !o.trim().is_empty());
        Ok(config)
    }
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, without a backtrace dump.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<()> {
    // reqwest is built without a crypto provider; ring is the one the workspace already builds.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    match Cli::parse().command {
        Command::Run(args) => {
            let mut config = args.connection.into_config()?;
            config.heartbeat_interval = Duration::from_secs(args.heartbeat_secs);
            config.idle_poll = Duration::from_millis(args.idle_poll_ms.max(10));
            config.prefetch = args.prefetch as usize;
            sparecycles_worker::run(config, shutdown_signal()).await
        }
        Command::Enroll { connection, force } => {
            let config = connection.into_config()?;
            let credentials = sparecycles_worker::enroll(&config, force).await?;
            println!("{}", credentials.worker_id);
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (how systemd stops a service).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}

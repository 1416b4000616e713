//! `worker`: the SpareCycles agent a volunteer runs. Parses flags and the config file, sets up
//! logging and TLS, turns Ctrl-C / SIGTERM into the runner's graceful shutdown, and installs
//! itself as a systemd service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use sparecycles_worker::prefs::{Settings, default_config_path, is_root};
use sparecycles_worker::runner::{EnrollKey, all_cores, default_name, default_state_dir};
use sparecycles_worker::status::{Status, TOKEN_FILE};
use sparecycles_worker::{Client, Credentials, RunConfig, StateDir, Transport, install};
use tracing_subscriber::EnvFilter;

/// Where a system-wide service keeps its state (systemd's `StateDirectory=`).
const SYSTEM_STATE_DIR: &str = "/var/lib/sparecycles-worker";

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
        prefs: Prefs,
        /// Enroll anew even if credentials for this coordinator are stored.
        #[arg(long)]
        force: bool,
    },
    /// Show the config file's path and the settings in effect (flags over file over defaults).
    Config {
        #[command(flatten)]
        prefs: Prefs,
        /// Write the settings in effect (with the given flags) to the config file.
        #[arg(long)]
        save: bool,
    },
    /// Install and start a systemd service running `worker run` with these settings.
    Install {
        #[command(flatten)]
        prefs: Prefs,
        #[command(flatten)]
        target: InstallTarget,
    },
    /// Stop and remove the systemd service.
    Uninstall {
        #[command(flatten)]
        target: InstallTarget,
    },
    /// What the worker computes, why it is paused, results waiting, credit.
    Status {
        #[command(flatten)]
        prefs: Prefs,
    },
}

/// The settings, and the file they may come from.
#[derive(Debug, Args)]
struct Prefs {
    /// The config file (TOML; the same keys as these flags, with underscores)
    /// [default: ~/.config/sparecycles-worker/config.toml; as root /etc/sparecycles-worker/config.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Args)]
struct InstallTarget {
    /// A service of this user (systemctl --user) instead of a system-wide one
    #[arg(long)]
    user: bool,
    /// Print what would be written and run, and change nothing
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    prefs: Prefs,
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

impl Prefs {
    fn config_path(&self) -> anyhow::Result<PathBuf> {
        match &self.config {
            Some(path) => Ok(path.clone()),
            None => default_config_path().context("no config path: set --config or $HOME"),
        }
    }

    /// The flags over the config file.
    fn merged(&self) -> anyhow::Result<Settings> {
        let file = Settings::load(&self.config_path()?)?;
        Ok(self.settings.clone().or(file))
    }

    fn state_dir(settings: &Settings) -> anyhow::Result<PathBuf> {
        match &settings.state_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_state_dir()
                .context("no state dir: set --state-dir, $XDG_STATE_HOME or $HOME"),
        }
    }

    fn into_config(self) -> anyhow::Result<RunConfig> {
        let settings = self.merged()?;
        let policy = settings.policy()?;
        let modules = settings.module_policy()?;
        let Some(coordinator) = settings.coordinator.clone() else {
            bail!(
                "no coordinator: pass --coordinator URL or set coordinator in {}",
                self.config_path()?.display()
            );
        };
        let mut config = RunConfig::new(coordinator, Self::state_dir(&settings)?);
        config.transport = transport(&settings)?;
        config.enroll_key = settings.enroll_key.clone().map(EnrollKey);
        config.cores = settings.cores.map_or_else(all_cores, |n| n as usize);
        config.name = settings.name.unwrap_or_else(default_name);
        config.owner = settings.owner.filter(|o| !o.trim().is_empty());
        config.policy = policy;
        config.idle_source = settings.idle_source;
        config.status_port = settings.status_port;
        config.modules = modules;
        Ok(config)
    }
}

/// How to reach the coordinator, from `--ca-cert` and `--insecure`.
fn transport(settings: &Settings) -> anyhow::Result<Transport> {
    let ca_cert_pem = match &settings.ca_cert {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Transport {
        ca_cert_pem,
        insecure: settings.insecure.unwrap_or(false),
    })
}

fn main() -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // One async thread unless TOKIO_WORKER_THREADS says otherwise: units compute on threads of
    // their own and blocking work goes to spawn_blocking, so the async side only talks to the
    // coordinator, and a thread per core only added hand-offs that preempt the units (W2: 70 ->
    // 41 context switches and ~4.9 -> 3.6 ms of CPU per job beside the compute; issue 8).
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.build() {
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
            let mut config = args.prefs.into_config()?;
            config.heartbeat_interval = Duration::from_secs(args.heartbeat_secs);
            config.idle_poll = Duration::from_millis(args.idle_poll_ms.max(10));
            config.prefetch = args.prefetch as usize;
            sparecycles_worker::run(config, shutdown_signal()).await
        }
        Command::Enroll { prefs, force } => {
            let config = prefs.into_config()?;
            let credentials = sparecycles_worker::enroll(&config, force).await?;
            println!("{}", credentials.worker_id);
            Ok(())
        }
        Command::Config { prefs, save } => config_command(&prefs, save),
        Command::Install { prefs, target } => install_command(&prefs, &target),
        Command::Uninstall { target } => uninstall_command(&target),
        Command::Status { prefs } => status_command(&prefs).await,
    }
}

fn config_command(prefs: &Prefs, save: bool) -> anyhow::Result<()> {
    let path = prefs.config_path()?;
    let settings = prefs.merged()?;
    settings.policy()?;
    settings.module_policy()?;
    if save {
        write_config(&path, &settings)?;
    }
    let exists = if path.exists() {
        ""
    } else {
        " (not created yet)"
    };
    println!("# config file: {}{exists}", path.display());
    print!("{}", settings.to_toml());
    Ok(())
}

fn write_config(path: &Path, settings: &Settings) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = format!(
        "# SpareCycles worker settings; `worker run --help` explains each key.\n{}",
        settings.to_toml()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn install_command(prefs: &Prefs, target: &InstallTarget) -> anyhow::Result<()> {
    if !target.user && !target.dry_run && !is_root() {
        bail!("a system-wide service needs root: run with sudo, or pass --user");
    }
    let config_path = match (&prefs.config, target.user) {
        (Some(path), _) => std::path::absolute(path)?,
        (None, true) => default_config_path().context("no config path: set --config or $HOME")?,
        (None, false) => PathBuf::from("/etc/sparecycles-worker/config.toml"),
    };
    let mut settings = prefs.settings.clone().or(Settings::load(&config_path)?);
    if settings.coordinator.is_none() {
        bail!("no coordinator: pass --coordinator URL");
    }
    if !target.user && settings.state_dir.is_none() {
        settings.state_dir = Some(PathBuf::from(SYSTEM_STATE_DIR));
    }
    settings.policy()?;
    settings.module_policy()?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let unit_path = install::unit_path(target.user).context("no unit path: set $HOME")?;
    let unit = install::unit_file(&exe, &config_path, target.user);
    let commands = install::systemctl_commands(target.user, true);
    if target.dry_run {
        println!(
            "# would write {}:\n{}",
            config_path.display(),
            settings.to_toml()
        );
        println!("# would write {}:\n{unit}", unit_path.display());
        for cmd in &commands {
            println!("# would run: {}", cmd.join(" "));
        }
        return Ok(());
    }
    write_config(&config_path, &settings)?;
    if let Some(dir) = unit_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&unit_path, unit).with_context(|| format!("writing {}", unit_path.display()))?;
    println!(
        "wrote {} and {}",
        config_path.display(),
        unit_path.display()
    );
    run_all(&commands)
}

fn uninstall_command(target: &InstallTarget) -> anyhow::Result<()> {
    let unit_path = install::unit_path(target.user).context("no unit path: set $HOME")?;
    let commands = install::systemctl_commands(target.user, false);
    if target.dry_run {
        for cmd in &commands[..1] {
            println!("# would run: {}", cmd.join(" "));
        }
        println!("# would remove {}", unit_path.display());
        println!("# would run: {}", commands[1].join(" "));
        return Ok(());
    }
    run_all(&commands[..1])?;
    match std::fs::remove_file(&unit_path) {
        Ok(()) => println!("removed {}", unit_path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", unit_path.display())),
    }
    run_all(&commands[1..])?;
    println!("the config file and the state dir (credentials, results) were kept");
    Ok(())
}

fn run_all(commands: &[Vec<String>]) -> anyhow::Result<()> {
    for cmd in commands {
        let status = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .status()
            .with_context(|| format!("running {}", cmd.join(" ")))?;
        if !status.success() {
            bail!("{} failed ({status})", cmd.join(" "));
        }
    }
    Ok(())
}

async fn status_command(prefs: &Prefs) -> anyhow::Result<()> {
    let settings = prefs.merged()?;
    let state_dir = Prefs::state_dir(&settings)?;
    let now = sparecycles_protocol::now_millis();
    match Status::read(&state_dir) {
        Some(status) => {
            print!("{}", status.describe(now));
            if let (Some(page), Ok(token)) = (
                &status.page,
                std::fs::read_to_string(state_dir.join(TOKEN_FILE)),
            ) {
                println!("page link:   {page}#token={}", token.trim());
            }
        }
        None => println!(
            "state:       never ran with state dir {}",
            state_dir.display()
        ),
    }
    let state = StateDir::open(&state_dir)?;
    if let Some(Credentials {
        coordinator, token, ..
    }) = state.load_credentials().ok().flatten()
    {
        let client = Client::with_transport(&coordinator, Some(token), &transport(&settings)?)?;
        match tokio::time::timeout(Duration::from_secs(5), client.me()).await {
            Ok(Ok(me)) => println!(
                "credit:      {:.2} ({} valid, {} invalid, {} errors, {} in flight)",
                me.credit, me.valid, me.invalid, me.errors, me.in_flight
            ),
            Ok(Err(e)) => println!("credit:      unknown ({e})"),
            Err(_) => println!("credit:      unknown (the coordinator did not answer)"),
        }
    }
    Ok(())
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

//! `coordinator serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::auth::{ADMIN_PREFIX, Secret, generate_token};
use crate::http::limit::RateLimits;
use crate::{AppState, OpenStore, Settings, serve_with};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the database and the admin token live.
    #[arg(long, default_value = "sparecycles-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL database shared by several coordinators (postgres://user@host/db); without
    /// it the coordinator keeps an embedded SQLite database in the data dir.
    #[arg(long, env = "SPARECYCLES_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Admin token (default: DATA_DIR/admin.token, generated on first start).
    #[arg(long, env = "SPARECYCLES_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seconds without a heartbeat or lease after which a worker's tasks get spare copies.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub suspect_after_secs: u64,
    /// Consecutive valid results after which a worker may compute units alone.
    #[arg(long, default_value_t = 10)]
    pub trust_streak: u64,
    /// Fraction of a trusted worker's units still replicated as a spot check (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub spot_check: f64,
    /// Require this key to enroll a worker (give it to your volunteers); without it enrollment
    /// is open.
    #[arg(long, env = "SPARECYCLES_ENROLL_KEY", hide_env_values = true)]
    pub enroll_key: Option<String>,
    /// Requests per second allowed per token (bursts of twice that); 0: no limit.
    #[arg(long, default_value_t = RateLimits::default().per_token)]
    pub rate_limit_per_token: u32,
    /// Requests per second allowed per client IP (bursts of twice that); 0: no limit. Behind
    /// a reverse proxy every request comes from the proxy: limit per IP there instead.
    #[arg(long, default_value_t = RateLimits::default().per_ip)]
    pub rate_limit_per_ip: u32,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The scheduler settings these flags ask for.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.spot_check),
            "--spot-check must be between 0 and 1"
        );
        let mut settings = Settings {
            suspect_after: std::time::Duration::from_secs(self.suspect_after_secs),
            ..Settings::default()
        };
        settings.trust.streak_to_trust = self.trust_streak;
        settings.trust.spot_check = self.spot_check;
        if let Some(key) = &self.enroll_key {
            anyhow::ensure!(
                key.len() >= 16,
                "the enrollment key must be at least 16 characters"
            );
            settings.enroll_key = Some(Secret::new(key.clone()));
        }
        settings.rate_limits = RateLimits {
            per_token: self.rate_limit_per_token,
            per_ip: self.rate_limit_per_ip,
        };
        Ok(settings)
    }
}

/// The admin token: given, or kept in `dir/admin.token` (generated and printed once).
pub fn admin_token(dir: &Path, given: Option<String>) -> anyhow::Result<Secret> {
    if let Some(t) = given {
        anyhow::ensure!(
            t.len() >= 16,
            "the admin token must be at least 16 characters"
        );
        return Ok(Secret::new(t));
    }
    let path = dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(Secret::new(t.trim()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = generate_token(ADMIN_PREFIX);
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    println!("Admin token (saved to {}): {token}", path.display());
    Ok(Secret::new(token))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = args.settings()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let token = admin_token(&args.data_dir, args.admin_token.clone())?;
    let store = OpenStore::open(&args.data_dir, args.database_url.as_deref()).await?;
    let state = AppState::new(store.store(), token, settings);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "SpareCycles coordinator listening on {scheme}://{addr} (dashboard: {scheme}://{addr}/)"
    );
    let backend = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    tracing::info!(%addr, data_dir = %args.data_dir.display(), backend, tls = tls.is_some(), enroll_key = args.enroll_key.is_some(), "coordinator started");
    serve_with(listener, tls, state, super::shutdown_signal()).await?;
    store.close().await;
    tracing::info!("coordinator stopped");
    Ok(ExitCode::SUCCESS)
}

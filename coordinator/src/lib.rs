//! The SpareCycles coordinator: splits jobs into work units, leases them to workers over HTTP,
//! validates results by quorum and assembles the answers.
//!
//! `serve` runs the API and the background transitioner on a listener the caller bound, until
//! the caller's shutdown future resolves (tests bind `127.0.0.1:0`).

pub mod auth;
pub mod cli;
pub mod events;
pub mod examples;
pub mod fuzz_harness;
pub mod http;
pub mod metrics;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod tls;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use state::{AppState, Settings};

use crate::auth::Secret;
use crate::store::{PostgresStore, SqliteStore, Store};

/// Opens the embedded SQLite store in `data_dir` and builds the shared state.
pub async fn open_state(
    data_dir: &Path,
    admin_token: Secret,
    settings: Settings,
) -> anyhow::Result<(AppState, SqliteStore)> {
    std::fs::create_dir_all(data_dir)?;
    let store = SqliteStore::open(data_dir).await?;
    let state = AppState::new(Arc::new(store.clone()), admin_token, settings);
    Ok((state, store))
}

/// An open store of either backend, kept to be closed on exit.
#[derive(Clone)]
pub enum OpenStore {
    Sqlite(SqliteStore),
    Postgres(Arc<PostgresStore>),
}

impl OpenStore {
    /// PostgreSQL at `database_url` when given (`postgres://…`), else SQLite in `data_dir`.
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        match database_url {
            Some(url) => {
                anyhow::ensure!(
                    url.starts_with("postgres://") || url.starts_with("postgresql://"),
                    "--database-url must be a postgres:// URL (SQLite is the default without it)"
                );
                Ok(OpenStore::Postgres(Arc::new(
                    PostgresStore::open(url).await?,
                )))
            }
            None => {
                std::fs::create_dir_all(data_dir)?;
                Ok(OpenStore::Sqlite(SqliteStore::open(data_dir).await?))
            }
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            OpenStore::Sqlite(s) => Arc::new(s.clone()),
            OpenStore::Postgres(p) => p.clone(),
        }
    }

    /// Closes the connections (checkpointing SQLite's WAL, giving up PostgreSQL leadership).
    pub async fn close(&self) {
        match self {
            OpenStore::Sqlite(s) => s.close().await,
            OpenStore::Postgres(p) => p.close().await,
        }
    }
}

/// Serves the API on `listener` and runs the transitioner, until `shutdown` resolves; then
/// drains in-flight requests and stops the background loop.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, None, state, shutdown).await
}

/// Like [`serve`], over HTTPS with `tls` (see [`tls::server_config`]); `None`: plain HTTP.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let transitioner = {
        let state = state.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            scheduler::transition::run(state, async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await;
        })
    };
    let snapshots = {
        let state = state.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            events::run(state, async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await;
        })
    };
    let hub_state = state.clone();
    let app = http::router(state);
    let mut rx = stop_rx.clone();
    let server = match tls {
        Some(config) => tokio::spawn(tls::serve(listener, config, app, stop_rx)),
        None => {
            // The client address feeds the per-IP rate limit.
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            });
            tokio::spawn(async move { server.await })
        }
    };
    shutdown.await;
    // Event streams and waiting leases never end by themselves: end them so the server can
    // drain.
    hub_state.begin_shutdown();
    let _ = stop_tx.send(true);
    server.await??;
    transitioner.await?;
    snapshots.await?;
    Ok(())
}

//! `coordinator demo`: a complete system in one command. Starts a coordinator on embedded
//! SQLite, local workers (the real agent, in this process, over real HTTP), submits the example
//! jobs from `job-specs/` (module jobs too, uploading their modules first), shows their progress
//! and results, and keeps serving until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sparecycles_protocol::{JobState, JobView};
use tokio::sync::watch;

use super::client::ApiClient;
use super::serve::admin_token;
use super::submit::{follow, parse_spec, save};
use crate::{Settings, open_state, serve};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address to listen on (a free port is used if this one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo keeps its database, worker state and results.
    #[arg(long, default_value = "sparecycles-demo-data")]
    pub data_dir: PathBuf,
    /// Number of local workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Exit once the example jobs end instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=64).contains(&args.workers),
        "--workers must be 1 to 64"
    );
    let started = Instant::now();
    let token = admin_token(&args.data_dir, None)?;
    let (state, store) = open_state(&args.data_dir, token.clone(), Settings::default()).await?;
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            println!(
                "{} is not available ({e}); using a free port instead",
                args.listen
            );
            tokio::net::TcpListener::bind((args.listen.ip(), 0)).await?
        }
    };
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    println!("SpareCycles demo");
    println!("  dashboard:   {url}/");
    println!("  data dir:    {}", args.data_dir.display());
    println!(
        "  admin token: in {}",
        args.data_dir.join("admin.token").display()
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(serve(listener, state, stopped(stop_rx.clone())));

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cores = (cpus / args.workers).max(1);
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let config = sparecycles_worker::RunConfig {
            name: format!("demo-worker-{}", i + 1),
            cores,
            ..sparecycles_worker::RunConfig::new(
                &url,
                args.data_dir.join(format!("worker-{}", i + 1)),
            )
        };
        workers.push(tokio::spawn(sparecycles_worker::run(
            config,
            stopped(stop_rx.clone()),
        )));
    }
    println!(
        "  workers:     {} local, {cores} core(s) each",
        args.workers
    );

    let client = ApiClient::new(&url, token.expose())?;
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>22} {wide_bar} {pos}/{len} units {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut followers = Vec::new();
    for (_, _, module) in crate::examples::MODULE_EXAMPLES {
        client.upload_module(module.to_vec()).await?;
    }
    let modules = crate::examples::MODULE_EXAMPLES
        .iter()
        .map(|(file, text, _)| (file, text));
    for (file, text) in crate::examples::EXAMPLES
        .iter()
        .map(|(f, t)| (f, t))
        .chain(modules)
    {
        let spec = parse_spec(text, false).with_context(|| format!("job-specs/{file}"))?;
        let job = client.submit(&spec).await?;
        let bar = bars.add(ProgressBar::new(job.units.total));
        bar.set_style(style.clone());
        bar.set_prefix(job.name.clone());
        followers.push(tokio::spawn(follow(client.clone(), job, bar)));
    }
    let mut ok = true;
    for f in followers {
        let job = f.await??;
        ok &= job.state == JobState::Completed;
        report(&client, &job, &args.data_dir).await?;
    }
    println!(
        "Demo jobs {} in {:.1} s (including start-up).",
        if ok { "completed" } else { "ended with errors" },
        started.elapsed().as_secs_f64()
    );
    if !args.exit {
        println!(
            "Still serving: dashboard at {url}/ ; submit more with `coordinator submit --coordinator {url} --data-dir {} FILE`. Ctrl-C stops.",
            args.data_dir.display()
        );
        super::shutdown_signal().await;
    }
    let _ = stop_tx.send(true);
    for w in workers {
        if let Err(e) = w.await? {
            tracing::warn!(error = format!("{e:#}"), "worker stopped with an error");
        }
    }
    server.await??;
    store.close().await;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn report(client: &ApiClient, job: &JobView, dir: &std::path::Path) -> anyhow::Result<()> {
    if job.state != JobState::Completed {
        println!(
            "  {}: {} ({})",
            job.name,
            job.state,
            job.error.as_deref().unwrap_or("")
        );
        return Ok(());
    }
    let result = client.result(job.id).await?;
    let replicas = job.tasks_created as f64 / job.units.total.max(1) as f64;
    if result.content_type.starts_with("application/json") {
        println!(
            "  {}: {}  ({} units, {replicas:.2} tasks/unit)",
            job.name,
            String::from_utf8_lossy(&result.body),
            job.units.total
        );
    } else {
        let path = dir.join(format!("{}.png", job.name));
        save(&result, &job.name, Some(&path))?;
        println!(
            "  {}: {} bytes of {} saved to {}  ({} units)",
            job.name,
            result.body.len(),
            result.content_type,
            path.display(),
            job.units.total
        );
    }
    Ok(())
}

//! `coordinator bench`: a load generator that simulates many workers over real HTTP, so the
//! coordinator's own cost per unit is what is measured (issue 8, W1). Each simulated worker
//! enrolls, then loops lease -> compute (a trivial prime-count unit) -> report, either from a
//! fixed number of clients (closed loop) or at a fixed rate (open loop). Prints units/s
//! from submit to assembled result, lease and report latency percentiles, and the
//! coordinator's CPU time and RSS when given its pid.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sparecycles_apps::ComputeCtx;
use sparecycles_protocol::{
    EnrollRequest, EnrollResponse, JobSpec, JobState, LeaseRequest, LeaseResponse, ReportRequest,
    ReportResponse, TaskResult,
};
use tokio::sync::Mutex;

use super::Connection;
use super::client::ApiClient;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Units in the job.
    #[arg(long, default_value_t = 100_000)]
    pub units: u64,
    /// Simulated workers (each enrolled with its own token).
    #[arg(long, default_value_t = 1000)]
    pub workers: usize,
    /// Concurrent HTTP clients driving them (each takes the next idle worker).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tasks asked for per lease call.
    #[arg(long, default_value_t = 16)]
    pub batch: u32,
    /// min_quorum of the job (adaptive replication off, so it is exact).
    #[arg(long, default_value_t = 1)]
    pub quorum: u32,
    /// Open loop: start this many lease -> compute -> report cycles per second, whatever the
    /// answers' latency (each by the next idle simulated worker), instead of `--concurrency`
    /// clients each starting its next cycle when the last one ends.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Pid of the coordinator, to report its CPU time and peak RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub conn: Connection,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Ok(r),
        _ => Err(format!(
            "{s}: expected calls per second, above 0 and at most 1000000"
        )),
    }
}

/// CPU seconds (user + system) and RSS in MiB of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<f64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<f64>()
            .ok()
    };
    Some((cpu, kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[derive(Default)]
struct Lat {
    lease: Vec<Duration>,
    report: Vec<Duration>,
    /// Leases answered with no task (quota full, or nothing left to lease).
    empty_leases: u64,
    /// Calls that failed, by call and reason: a refused or failed call must not pass for an
    /// empty lease in the figures.
    failed: std::collections::BTreeMap<String, u64>,
}

/// What one simulated lease -> compute -> report cycle needs.
#[derive(Clone)]
struct Sim {
    http: reqwest::Client,
    base: String,
    batch: u32,
    /// Tokens of the simulated workers not in a cycle now.
    idle: Arc<Mutex<Vec<String>>>,
    lat: Arc<Mutex<Lat>>,
}

impl Sim {
    /// Posts `body` to `path` as the worker with `token`; the reason when it failed.
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &B,
    ) -> Result<T, String> {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                }
                .to_owned()
            })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        answer.json().await.map_err(|_| "unreadable answer".into())
    }

    /// One cycle of the next idle simulated worker: lease, compute, report. `false` when no
    /// worker was idle or the lease gave no task.
    async fn cycle(&self) -> bool {
        let Some(token) = self.idle.lock().await.pop() else {
            return false;
        };
        let t = Instant::now();
        let ask = LeaseRequest {
            max_tasks: self.batch,
            held: None,
            wait_ms: None,
        };
        let lease: Result<LeaseResponse, String> =
            self.post("/api/v1/work/lease", &token, &ask).await;
        let lease_time = t.elapsed();
        let tasks = match &lease {
            Ok(l) => l.tasks.as_slice(),
            Err(_) => &[],
        };
        let app = sparecycles_apps::find("prime-count").expect("built in");
        let results: Vec<TaskResult> = tasks
            .iter()
            .map(
                |task| match app.compute(&task.params, &task.unit, &ComputeCtx::new()) {
                    Ok(out) => TaskResult::success(task.task_id, out),
                    Err(e) => TaskResult::failure(task.task_id, e.to_string()),
                },
            )
            .collect();
        let mut report = None;
        if !results.is_empty() {
            let t = Instant::now();
            let answer: Result<ReportResponse, String> = self
                .post("/api/v1/work/report", &token, &ReportRequest { results })
                .await;
            report = Some((t.elapsed(), answer.err()));
        }
        let got = !tasks.is_empty();
        {
            let mut l = self.lat.lock().await;
            l.lease.push(lease_time);
            match &lease {
                Ok(_) if !got => l.empty_leases += 1,
                Ok(_) => {}
                Err(why) => *l.failed.entry(format!("lease {why}")).or_default() += 1,
            }
            if let Some((time, failed)) = report {
                l.report.push(time);
                if let Some(why) = failed {
                    *l.failed.entry(format!("report {why}")).or_default() += 1;
                }
            }
        }
        self.idle.lock().await.insert(0, token);
        got
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let base = args.conn.coordinator.trim_end_matches('/').to_owned();
    let client = ApiClient::new(&base, &args.conn.token()?)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    // Enroll the simulated fleet.
    let mut tokens = Vec::with_capacity(args.workers);
    for i in 0..args.workers {
        let req = EnrollRequest {
            name: format!("sim-{i}"),
            cores: 1,
            os: "linux".into(),
            arch: std::env::consts::ARCH.into(),
            apps: vec!["prime-count".into()],
            owner: Some(format!("sim-owner-{}", i % 100)),
            enroll_key: None,
        };
        let resp: EnrollResponse = http
            .post(format!("{base}/api/v1/workers/enroll"))
            .json(&req)
            .send()
            .await
            .context("enroll")?
            .error_for_status()?
            .json()
            .await?;
        tokens.push(resp.token);
    }
    let before = args.pid.and_then(proc_usage);
    let spec: JobSpec = serde_json::from_value(json!({
        "name": format!("bench-{}-units-q{}", args.units, args.quorum),
        "app": "prime-count",
        "params": {"start": 0, "end": args.units * 10, "unit_size": 10},
        "redundancy": {"min_quorum": args.quorum, "adaptive": false},
        "unit_timeout_secs": 600
    }))?;
    let started = Instant::now();
    let job = client.submit(&spec).await?;
    let accepted = started.elapsed();

    let idle = Arc::new(Mutex::new(tokens));
    let lat = Arc::new(Mutex::new(Lat::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sim = Sim {
        http,
        base: base.clone(),
        batch: args.batch,
        idle,
        lat: lat.clone(),
    };
    let mut drivers = Vec::new();
    match args.rate {
        // Closed loop: each client starts its next cycle when its last one ends.
        None => {
            for _ in 0..args.concurrency {
                let (sim, stop) = (sim.clone(), stop.clone());
                drivers.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if !sim.cycle().await {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }));
            }
        }
        // Open loop: cycles start on a fixed schedule whatever the answers' latency, as a fleet
        // of real workers would call; latency is then service time plus queueing at that load.
        Some(rate) => {
            let stop = stop.clone();
            drivers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let sim = sim.clone();
                    tokio::spawn(async move { sim.cycle().await });
                }
            }));
        }
    }
    let done = loop {
        let j = client.job(job.id).await?;
        if j.state.is_final() {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for d in drivers {
        let _ = d.await;
    }
    let after = args.pid.and_then(proc_usage);
    anyhow::ensure!(
        done.state == JobState::Completed,
        "bench job ended {}",
        done.state
    );
    let result = client.result(job.id).await?;
    let mut l = lat.lock().await;
    l.lease.sort();
    l.report.sort();
    let load = match args.rate {
        Some(rate) => format!("open loop, {rate} cycles/s"),
        None => format!("{} clients", args.concurrency),
    };
    println!(
        "W1 {} units, quorum {}, {} simulated workers, {load}, batch {}:",
        args.units, args.quorum, args.workers, args.batch
    );
    println!(
        "  accepted in {:.3} s; completed in {:.2} s: {:.0} units/s end to end",
        accepted.as_secs_f64(),
        wall.as_secs_f64(),
        args.units as f64 / wall.as_secs_f64()
    );
    println!(
        "  tasks created: {} ({:.2} per unit)",
        done.tasks_created,
        done.tasks_created as f64 / args.units as f64
    );
    println!(
        "  lease  p50 {:.2} ms  p99 {:.2} ms  ({} calls, {} empty)",
        percentile(&l.lease, 0.5),
        percentile(&l.lease, 0.99),
        l.lease.len(),
        l.empty_leases
    );
    println!(
        "  report p50 {:.2} ms  p99 {:.2} ms  ({} calls)",
        percentile(&l.report, 0.5),
        percentile(&l.report, 0.99),
        l.report.len()
    );
    if !l.failed.is_empty() {
        let failed: Vec<String> = l
            .failed
            .iter()
            .map(|(why, n)| format!("{why}: {n}"))
            .collect();
        println!("  failed calls: {}", failed.join(", "));
    }
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "  coordinator: {:.1} CPU s ({:.2} cores), RSS {:.0} MiB now, peak {:.0} MiB",
            a.0 - b.0,
            (a.0 - b.0) / wall.as_secs_f64(),
            a.1,
            a.2
        );
    }
    println!("  result: {}", String::from_utf8_lossy(&result.body));
    Ok(ExitCode::SUCCESS)
}

//! The worker as a guest on a volunteer's PC, end to end with the real binaries: checkpoints
//! that survive SIGKILL, a long coordinator outage, pausing on user activity (through an
//! injected idle source), graceful stop handing leases back, and the systemd unit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sparecycles_protocol::JobState;

use crate::helpers::{Coordinator, db, spec, tasks_of};

const LONG: Duration = Duration::from_secs(300);

fn worker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coordinator")).with_file_name("worker")
}

/// A `worker run` with the flags a test needs; its state dir and log survive restarts.
struct Agent {
    child: Option<Child>,
    url: String,
    state: PathBuf,
    args: Vec<String>,
    logs: Vec<PathBuf>,
}

impl Agent {
    fn start(c: &Coordinator, name: &str, args: &[&str]) -> Agent {
        // Make sure the binary exists (the shared harness builds it when missing).
        drop(c.worker(&format!("{name}-probe"), 1));
        let mut agent = Agent {
            child: None,
            url: c.url.clone(),
            state: c.dir.join(name),
            args: args.iter().map(|s| s.to_string()).collect(),
            logs: Vec::new(),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.state).unwrap();
        let log = self
            .state
            .with_extension(format!("{}.log", self.logs.len()));
        let child = Command::new(worker_bin())
            .args(["run", "--coordinator", &self.url, "--state-dir"])
            .arg(&self.state)
            .args(["--config"])
            .arg(self.state.join("none.toml"))
            .args(["--heartbeat-secs", "1", "--idle-poll-ms", "100"])
            .args(&self.args)
            .env("RUST_LOG", "info,sparecycles_worker=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn worker");
        self.logs.push(log);
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for the exit (at most `within`).
    fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn log(&self, run: usize) -> String {
        std::fs::read_to_string(&self.logs[run]).unwrap_or_default()
    }

    fn status(&self) -> Value {
        std::fs::read(self.state.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    fn checkpoints(&self) -> Vec<Value> {
        std::fs::read_dir(self.state.join("checkpoints"))
            .into_iter()
            .flatten()
            .flatten()
            // Not the leftovers of a write the kill interrupted (`.NAME.RANDOM.tmp`).
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// `worker status` for this state dir.
    fn status_command(&self) -> String {
        let out = Command::new(worker_bin())
            .args(["status", "--state-dir"])
            .arg(&self.state)
            .arg("--config")
            .arg(self.state.join("none.toml"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, _) in self.logs.iter().enumerate() {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "--- worker log {i} ---\n{}",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
        self.kill();
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_resumes_its_unit_from_the_checkpoint() {
    let c = Coordinator::start();
    let api = c.api();
    // One unit of ~10 s on one core, checkpointed every second.
    let job = api
        .submit(&spec(json!({
            "name": "one long collatz unit",
            "app": "collatz",
            "params": {"start": 1, "end": 60_000_001u64, "unit_size": 60_000_000u64},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    let mut agent = Agent::start(
        &c,
        "resumer",
        &[
            "--cores",
            "1",
            "--idle-minutes",
            "0",
            "--checkpoint-secs",
            "1",
        ],
    );
    wait_for("a checkpoint past 20%", LONG, || {
        agent
            .checkpoints()
            .into_iter()
            .find(|cp| cp["progress"].as_f64().unwrap_or(0.0) >= 0.2)
    });
    agent.kill();
    // What the crash left behind: the last checkpoint written before the SIGKILL.
    let saved = agent.checkpoints();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let next = saved[0]["checkpoint"]["next"].as_u64().unwrap();
    let progress = saved[0]["progress"].as_f64().unwrap();
    assert!(next > 12_000_000, "{saved:?}");

    agent.spawn();
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    // The record below 6e7 (OEIS A006877).
    assert_eq!(
        api.result_json(job.id).await,
        json!({"max_steps": 744, "argmax": 36_791_535})
    );
    // The second run started at the saved position, not at the unit's start.
    let log = agent.log(1);
    let resumed = log
        .lines()
        .find(|l| l.contains("resuming unit from checkpoint"))
        .unwrap_or_else(|| panic!("no resumption in the log:\n{log}"));
    assert!(
        resumed.contains(&format!("\"next\":{next}")),
        "resumed elsewhere than the checkpoint at {next}: {resumed}"
    );
    assert!(resumed.contains(&progress.to_string()), "{resumed}");
    assert!(
        agent.checkpoints().is_empty(),
        "the checkpoint outlived its unit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_user_active_nothing_computes_and_idle_resumes_within_a_second() {
    let c = Coordinator::start();
    let api = c.api();
    let idle_file = c.dir.join("idle-state");
    std::fs::write(&idle_file, "active").unwrap();
    let source = format!("file:{}", idle_file.display());
    let job = api
        .submit(&spec(json!({
            "name": "pausable",
            "app": "collatz",
            "params": {"start": 1, "end": 30_000_001u64, "unit_size": 30_000_000u64},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    let agent = Agent::start(
        &c,
        "guest",
        &[
            "--cores",
            "1",
            "--idle-source",
            &source,
            "--status-port",
            "0",
        ],
    );
    let (page, token) = wait_for("the status page", LONG, || {
        let page = agent.status()["page"].as_str()?.to_owned();
        let token = std::fs::read_to_string(agent.state.join("page.token")).ok()?;
        Some((page, token.trim().to_owned()))
    });
    let http = api.http.clone();
    let live = |http: &reqwest::Client| {
        let (page, token) = (page.clone(), token.clone());
        let http = http.clone();
        async move {
            http.get(format!("{page}api/status"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let progress = |s: &Value| s["current"]["progress"].as_f64().unwrap_or(0.0);

    // User active: paused, nothing leased, nothing computed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = live(&http).await;
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(s["pause"]["reason"], "user_active", "{s}");
    assert_eq!(progress(&s), 0.0);
    assert_eq!(api.job(job.id).await.units.in_progress, 0);
    let text = agent.status_command();
    assert!(
        text.contains("paused:      the computer is in use"),
        "{text}"
    );
    assert!(text.contains("credit:      0.00"), "{text}");

    // Idle: it leases and computes within a second or so.
    std::fs::write(&idle_file, "idle").unwrap();
    let t0 = Instant::now();
    while progress(&live(&http).await) == 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(3), "did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = t0.elapsed();

    // Active again: progress stops within a second and stays put.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&idle_file, "active").unwrap();
    let t1 = Instant::now();
    let mut last = progress(&live(&http).await);
    let mut last_change = Duration::ZERO;
    while t1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let p = progress(&live(&http).await);
        if p != last {
            last = p;
            last_change = t1.elapsed();
        }
    }
    assert!(
        last_change < Duration::from_secs(1),
        "still computing {last_change:?} after the user came back"
    );
    assert!(last < 1.0);
    assert_eq!(live(&http).await["state"], "paused");

    // Idle again: resumes where it stopped within a second.
    std::fs::write(&idle_file, "idle").unwrap();
    let t2 = Instant::now();
    while progress(&live(&http).await) <= last {
        assert!(
            t2.elapsed() < Duration::from_secs(1),
            "did not resume within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = t2.elapsed();
    println!(
        "agent figures: start after idle {started:?}, compute stopped {last_change:?} after \
         \"active\", resumed {resumed:?} after \"idle\""
    );
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(
        api.result_json(job.id).await,
        json!({"max_steps": 704, "argmax": 15_733_191})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_20_second_coordinator_outage_loses_no_result() {
    let mut c = Coordinator::start();
    let api = c.api();
    let job = api
        .submit(&spec(json!({
            "name": "survives an outage",
            "app": "collatz",
            "params": {"start": 1, "end": 10_000_001u64, "unit_size": 250_000},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    let args = ["--cores", "1", "--idle-minutes", "0", "--prefetch", "6"];
    let a = Agent::start(&c, "a", &args);
    let b = Agent::start(&c, "b", &args);
    let before = api.wait_done(job.id, 2, LONG).await;
    c.kill();
    // While it is down the workers finish their buffered units into their outboxes.
    let outboxed = wait_for(
        "results waiting in an outbox",
        Duration::from_secs(20),
        || {
            let n = a.status()["outbox"].as_u64().unwrap_or(0)
                + b.status()["outbox"].as_u64().unwrap_or(0);
            (n > 0).then_some(n)
        },
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    c.restart();
    let after = api.job(job.id).await;
    assert!(
        after.units.done >= before.units.done,
        "finished units were lost"
    );
    let done = api.wait(job.id, LONG).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.units.done, 40);
    assert_eq!(
        api.result_json(job.id).await,
        json!({"max_steps": 685, "argmax": 8_400_511})
    );
    assert!(outboxed > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_unstarted_leases_back_at_once() {
    let c = Coordinator::start();
    let api = c.api();
    let job = api
        .submit(&spec(json!({
            "name": "handed back",
            "app": "collatz",
            // Units of about a second: status.json is rewritten once a second, and with units
            // of 0.1 s the whole job could pass between two snapshots of a full buffer.
            "params": {"start": 1, "end": 100_000_001u64, "unit_size": 10_000_000},
            "redundancy": {"min_quorum": 1},
            "unit_timeout_secs": 3600
        })))
        .await;
    let mut agent = Agent::start(
        &c,
        "leaver",
        &["--cores", "1", "--idle-minutes", "0", "--prefetch", "3"],
    );
    wait_for("a unit computing with others buffered", LONG, || {
        let s = agent.status();
        (s["current"].is_object() && s["buffered"].as_u64() >= Some(3)).then_some(())
    });
    assert!(
        agent.terminate(Duration::from_secs(10)),
        "no clean exit after SIGTERM"
    );
    assert!(
        agent.log(0).contains("handed unstarted tasks back"),
        "{}",
        agent.log(0)
    );
    let pool = db(&c).await;
    let leased = tasks_of(&pool, "leaver", "leased").await;
    // At most the interrupted unit stays leased (kept with its checkpoint for the next run).
    assert!(leased <= 1, "{leased} tasks still leased");
    let unsent: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND state = 'unsent'")
            .bind(job.id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    // Every unit not finished and not kept for resumption is back in the queue at once.
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM tasks WHERE job_id = $1 GROUP BY state")
            .bind(job.id.to_string())
            .fetch_all(&pool)
            .await
            .unwrap();
    let count = |st: &str| states.iter().find(|(s, _)| s == st).map_or(0, |(_, n)| *n);
    assert_eq!(
        count("unsent") + count("success") + count("error") + count("leased"),
        10,
        "{states:?}"
    );
    assert!(count("leased") <= 1, "{states:?}");
    assert!(unsent > 0, "nothing was handed back: {states:?}");
}

#[test]
fn install_dry_run_prints_a_valid_systemd_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(worker_bin())
        .args([
            "install",
            "--user",
            "--dry-run",
            "--coordinator",
            "http://127.0.0.1:9",
        ])
        .args(["--cores", "2", "--idle-minutes", "5", "--config"])
        .arg(tmp.path().join("config.toml"))
        .env("HOME", tmp.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("idle_minutes = 5.0"), "{stdout}");
    let unit: String = stdout
        .split("sparecycles-worker.service:\n")
        .nth(1)
        .and_then(|rest| rest.split("# would run").next())
        .unwrap_or_else(|| panic!("no unit in:\n{stdout}"))
        .to_owned();
    assert!(
        unit.contains("[Service]") && unit.contains(" run --config "),
        "{unit}"
    );
    assert!(
        !tmp.path().join("config.toml").exists(),
        "a dry run wrote the config"
    );
    let path = tmp.path().join("sparecycles-worker.service");
    std::fs::write(&path, &unit).unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Err(_) => eprintln!("systemd-analyze not available; unit not verified"),
        Ok(verify) => {
            let errors = String::from_utf8_lossy(&verify.stderr);
            // Without a running systemd (containers) verify cannot load anything: skip.
            if errors.contains("Failed to") && errors.contains("manager") {
                eprintln!("systemd-analyze cannot run here: {errors}");
            } else {
                assert!(verify.status.success(), "{errors}");
                assert!(!errors.contains(&*path.to_string_lossy()), "{errors}");
            }
        }
    }
}

//! Test harness: starts the real `coordinator` and `worker` binaries on 127.0.0.1 with free
//! ports and temporary data dirs, and a typed HTTP client for the API. Everything is stopped
//! when the handles drop; logs of a failed test are printed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sparecycles_protocol::{
    EnrollRequest, EnrollResponse, ErrorBody, JobSpec, JobView, LeaseRequest, LeaseResponse,
    ReportRequest, ReportResponse, TaskResult,
};
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coordinator"))
}

/// The worker binary lives next to the coordinator's; build it if this test run did not.
pub fn worker_bin() -> PathBuf {
    let path = coordinator_bin().with_file_name(format!("worker{}", std::env::consts::EXE_SUFFIX));
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        if !path.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "sparecycles-worker", "--bin", "worker"])
                .status()
                .expect("cargo build of the worker");
            assert!(status.success(), "building the worker binary failed");
        }
    });
    path
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A running `coordinator serve` process.
pub struct Coordinator {
    child: Option<Child>,
    pub url: String,
    pub addr: String,
    pub dir: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
    /// Its PostgreSQL database, when the suite runs on PostgreSQL (see `backend.rs`).
    pg: Option<crate::backend::TestDb>,
}

impl Coordinator {
    /// Starts a coordinator on a free port with a fresh data dir.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a coordinator with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let pg = if extra.iter().any(|f| f == "--database-url") {
            None
        } else {
            crate::backend::fresh_database()
        };
        if let Some(db) = &pg {
            extra.extend(["--database-url".to_owned(), db.url.clone()]);
        }
        let mut c = Self::spawn(&dir, "127.0.0.1:0", &extra);
        c._tmp = Some(tmp);
        c.pg = pg;
        c
    }

    fn spawn(dir: &Path, listen: &str, extra: &[String]) -> Self {
        let log = dir.join(format!("coordinator-{}.log", Uuid::new_v4()));
        let mut child = Command::new(coordinator_bin())
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(dir.join("data"))
            .args(["--admin-token", ADMIN_TOKEN])
            .args(extra)
            .env("RUST_LOG", "info,sparecycles_coordinator=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url);
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("coordinator did not start:\n{}", tail(&log)));
        let addr = url.split("://").nth(1).unwrap_or_default().to_owned();
        Coordinator {
            child: Some(child),
            url,
            addr,
            dir: dir.to_path_buf(),
            log,
            extra: extra.to_vec(),
            _tmp: None,
            pg: None,
        }
    }

    /// SIGKILLs the coordinator (a crash, not a clean stop).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the coordinator (a clean stop) and waits for it to exit, at most `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts it again on the same address and data dir.
    pub fn restart(&mut self) {
        self.kill();
        let tmp = self._tmp.take();
        let mut pg = self.pg.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The port may linger briefly; retry until it binds.
            let attempt =
                std::panic::catch_unwind(|| Self::spawn(&self.dir, &self.addr, &self.extra));
            match attempt {
                Ok(mut c) => {
                    c._tmp = tmp;
                    c.pg = pg.take();
                    *self = c;
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }

    /// Path of the SQLite database.
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it stores in PostgreSQL (the suite's backend, or `--database-url` given).
    pub fn on_postgres(&self) -> bool {
        self.pg.is_some() || self.extra.iter().any(|f| f == "--database-url")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data").join("sparecycles.db")
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// Starts a worker process against this coordinator.
    pub fn worker(&self, name: &str, cores: usize) -> Worker {
        Worker::start(&self.url, &self.dir.join(name), name, cores)
    }

    /// Starts a worker process with extra `run` flags.
    pub fn worker_with(&self, name: &str, cores: usize, extra: &[&str]) -> Worker {
        Worker::start_with(&self.url, &self.dir.join(name), name, cores, extra)
    }

    /// Everything the coordinator has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- coordinator log ({}) ---\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
        self.kill();
    }
}

/// A running `worker run` process.
pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    pub fn start(url: &str, state_dir: &Path, name: &str, cores: usize) -> Self {
        Self::start_with(url, state_dir, name, cores, &[])
    }

    pub fn start_with(
        url: &str,
        state_dir: &Path,
        name: &str,
        cores: usize,
        extra: &[&str],
    ) -> Self {
        std::fs::create_dir_all(state_dir).expect("worker dir");
        let log = state_dir.with_extension(format!("{}.log", Uuid::new_v4()));
        let child = Command::new(worker_bin())
            .args(["run", "--coordinator", url, "--state-dir"])
            .arg(state_dir)
            .args(["--name", name, "--cores", &cores.to_string()])
            .args(["--heartbeat-secs", "1", "--idle-poll-ms", "100"])
            // Compute even while someone uses this machine (the tests are run from a desktop).
            .args(["--idle-minutes", "0", "--pause-on-battery", "false"])
            .args(extra)
            .env("RUST_LOG", "info,sparecycles_worker=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn worker");
        Worker {
            child: Some(child),
            log,
        }
    }

    /// SIGSTOPs the worker: a hung machine, silent but with its connections still open.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONTs a frozen worker.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([which, &c.id().to_string()])
                .status();
        }
    }

    /// SIGKILLs the worker.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- worker log ({}) ---\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
        self.kill();
    }
}

/// Sends a request; returns status, content type and body text.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, String, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, resp.text().await.unwrap_or_default())
}

/// A typed client of the coordinator's HTTP API.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
}

impl Api {
    /// A client of an HTTPS coordinator that trusts `ca_pem` (besides the system's roots).
    pub fn with_ca(url: &str, ca_pem: &[u8]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            url: url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA PEM"))
                .build()
                .expect("client"),
        }
    }

    pub fn new(url: &str) -> Self {
        // reqwest is built without a default TLS provider; the binaries install ring, so do we.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            url: url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub async fn submit(&self, spec: &JobSpec) -> JobView {
        let resp = self
            .http
            .post(format!("{}/api/v1/jobs", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(spec)
            .send()
            .await
            .expect("submit");
        assert_eq!(
            resp.status(),
            201,
            "submit refused: {}",
            resp.text().await.unwrap_or_default()
        );
        resp.json().await.expect("job view")
    }

    /// POSTs raw JSON with a token; returns status, content type and parsed body.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String, Value) {
        self.post_bytes(
            path,
            token,
            Some("application/json"),
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// POSTs bytes (with a content type, if given) and a token; returns status, content type
    /// and the body, parsed as JSON when it is JSON.
    pub async fn post_bytes(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (status, ct, text) = send(req).await;
        (
            status,
            ct,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics body")
    }

    pub async fn job(&self, id: Uuid) -> JobView {
        self.http
            .get(format!("{}/api/v1/jobs/{id}", self.url))
            .send()
            .await
            .expect("get job")
            .json()
            .await
            .expect("job view")
    }

    pub async fn jobs(&self) -> Vec<JobView> {
        let list: sparecycles_protocol::JobList = self
            .http
            .get(format!("{}/api/v1/jobs", self.url))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("job list");
        list.jobs
    }

    /// Waits for a job to end (retrying through coordinator restarts), returns its final view.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> JobView {
        let deadline = Instant::now() + timeout;
        loop {
            let job = match self
                .http
                .get(format!("{}/api/v1/jobs/{id}", self.url))
                .send()
                .await
            {
                Ok(resp) => resp.json::<JobView>().await.ok(),
                Err(_) => None, // the coordinator may be restarting
            };
            if let Some(job) = job.filter(|j| j.state.is_final()) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end in time");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the job has at least `n` units done.
    pub async fn wait_done(&self, id: Uuid, n: u64, timeout: Duration) -> JobView {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if job.units.done >= n || job.state.is_final() {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job did not reach {n} units: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn result_json(&self, id: Uuid) -> Value {
        let resp = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/result", self.url))
            .send()
            .await
            .expect("result");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json result")
    }

    pub async fn result_bytes(&self, id: Uuid) -> (String, Vec<u8>) {
        let resp = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/result", self.url))
            .send()
            .await
            .expect("result");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        (ct, resp.bytes().await.expect("body").to_vec())
    }

    pub async fn enroll(&self, name: &str) -> EnrollResponse {
        self.enroll_with_apps(name, sparecycles_apps::names()).await
    }

    /// Enrolls a one-core worker that declares these apps.
    pub async fn enroll_with_apps(&self, name: &str, apps: Vec<String>) -> EnrollResponse {
        let req = EnrollRequest {
            name: name.into(),
            cores: 1,
            os: "linux".into(),
            arch: "x86_64".into(),
            apps,
            owner: None,
            enroll_key: None,
        };
        let resp = self
            .http
            .post(format!("{}/api/v1/workers/enroll", self.url))
            .json(&req)
            .send()
            .await
            .expect("enroll");
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("enroll response")
    }

    /// Every enrolled worker, as the admin sees them.
    pub async fn workers(&self) -> Vec<sparecycles_protocol::WorkerView> {
        self.http
            .get(format!("{}/api/v1/workers", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("workers")
            .json()
            .await
            .expect("workers' JSON")
    }

    /// Leases up to `max_tasks` tasks as a worker, at once (no wait, no held tasks named).
    pub async fn lease(&self, token: &str, max_tasks: u32) -> LeaseResponse {
        let req = LeaseRequest {
            max_tasks,
            held: None,
            wait_ms: None,
        };
        self.worker_call(token, "/api/v1/work/lease", &req).await
    }

    /// Leases up to `max_tasks` tasks as a worker, waiting up to `wait_ms` for work to appear.
    pub async fn lease_waiting(&self, token: &str, max_tasks: u32, wait_ms: u32) -> LeaseResponse {
        let req = LeaseRequest {
            max_tasks,
            held: None,
            wait_ms: Some(wait_ms),
        };
        self.worker_call(token, "/api/v1/work/lease", &req).await
    }

    /// Reports results as a worker and returns the coordinator's answer (accepted, refused).
    pub async fn report(&self, token: &str, results: Vec<TaskResult>) -> ReportResponse {
        self.worker_call(token, "/api/v1/work/report", &ReportRequest { results })
            .await
    }

    /// POSTs a typed body as a worker and parses a typed answer.
    pub async fn worker_call<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> R {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("worker call");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }
}

/// Whether `worker`'s tasks are marked spared, as (spared, not spared).
pub async fn spared_of(c: &Coordinator, worker: &str) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(CASE WHEN t.spared THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN t.spared THEN 0 ELSE 1 END), 0) \
         FROM tasks t JOIN workers w ON w.id = t.worker_id WHERE w.name = $1",
    )
    .bind(worker)
    .fetch_one(&db(c).await)
    .await
    .unwrap();
    (sqlx::Row::get(&row, 0), sqlx::Row::get(&row, 1))
}

/// A job spec from JSON (the same shape the API takes).
pub fn spec(json: Value) -> JobSpec {
    serde_json::from_value(json).expect("spec")
}

/// Asserts a body is a problem+json document and returns its detail.
pub fn problem_detail(content_type: &str, body: &Value) -> String {
    assert!(
        content_type.starts_with("application/problem+json"),
        "expected problem+json, got {content_type}: {body}"
    );
    let problem: ErrorBody = serde_json::from_value(body.clone()).expect("problem body");
    problem.detail
}

/// Counts primes in [start, end) by a plain sieve, independently of the apps crate.
pub fn naive_prime_count(start: u64, end: u64) -> u64 {
    let n = end as usize;
    let mut composite = vec![false; n.max(2)];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            if i as u64 >= start {
                count += 1;
            }
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

/// Access to the coordinator's database (SQLite file or PostgreSQL), for checks the API does
/// not expose. Queries must run on both: `$1` placeholders, and integers, text and floats only.
/// How many tasks of the worker named `worker` are in `state`.
pub async fn tasks_of(pool: &sqlx::AnyPool, worker: &str, state: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks t JOIN workers w ON w.id = t.worker_id \
         WHERE w.name = $1 AND t.state = $2",
    )
    .bind(worker)
    .bind(state)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn db(c: &Coordinator) -> sqlx::AnyPool {
    open_db(c, "ro").await
}

/// Like [`db`], writable: for tests that corrupt what the coordinator stored.
pub async fn db_writable(c: &Coordinator) -> sqlx::AnyPool {
    open_db(c, "rw").await
}

async fn open_db(c: &Coordinator, sqlite_mode: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = match &c.pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}?mode={sqlite_mode}", c.db_path().display()),
    };
    sqlx::AnyPool::connect(&url).await.expect("open db")
}

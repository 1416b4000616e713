//! Fault injection: workers driven from the test over the public protocol, which compute
//! honestly with the built-in apps or misbehave (lie, collude, stall, report others' tasks).
//! They exist only in this test harness: no release build of the worker can behave like this.

use serde_json::{Value, json};
use sparecycles_apps::ComputeCtx;
use sparecycles_protocol::{
    EnrollRequest, EnrollResponse, LeaseRequest, LeaseResponse, ReportRequest, ReportResponse,
    TaskAssignment, TaskResult,
};
use uuid::Uuid;

use crate::helpers::Api;

/// How a fake worker behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behavior {
    Honest,
    /// Always reports a wrong answer.
    AlwaysWrong,
    /// Reports a wrong answer half of the time.
    RandomWrong,
    /// Reports the same wrong answer as every other colluder.
    Collude,
    /// Leases work and never reports it.
    Stall,
    /// Reports results for task ids that belong to other workers.
    Steal,
    /// Honest within a relative error of `1e-12` (a different float summation order).
    Jitter,
    /// Off by a relative error of `1e-6`.
    Off,
    /// Adds a claim for credit to its outputs.
    Greedy,
}

pub struct FakeWorker {
    pub api: Api,
    pub token: String,
    pub behavior: Behavior,
    /// Task ids of other workers, for the thief to report.
    pub stolen: Vec<Uuid>,
    /// Every task this worker leased (a thief must not "steal" its own).
    leased: Vec<Uuid>,
}

/// Honest output of a task, computed here with the built-in app.
pub fn honest(task: &TaskAssignment) -> Value {
    let app = sparecycles_apps::find(&task.app).expect("app");
    app.compute(&task.params, &task.unit, &ComputeCtx::new())
        .expect("compute")
}

/// A wrong but well-formed prime count: each kind of liar is off by its own amount, so liars
/// of different kinds never agree by accident (colluders agree on purpose).
fn corrupt(output: &Value, by: u64) -> Value {
    json!({"count": output["count"].as_u64().expect("prime-count output") + by})
}

fn scale(output: &Value, factor: f64) -> Value {
    let mut out = output.clone();
    if let Some(v) = out.get("value").and_then(Value::as_f64) {
        out["value"] = json!(v * factor);
    }
    out
}

impl FakeWorker {
    pub async fn enroll(api: &Api, name: &str, owner: &str, behavior: Behavior) -> Self {
        let req = EnrollRequest {
            name: name.into(),
            cores: 1,
            os: "linux".into(),
            arch: "x86_64".into(),
            apps: sparecycles_apps::names(),
            owner: Some(owner.into()),
            enroll_key: None,
        };
        let resp: EnrollResponse = api
            .http
            .post(format!("{}/api/v1/workers/enroll", api.url))
            .json(&req)
            .send()
            .await
            .expect("enroll")
            .json()
            .await
            .expect("enroll answer");
        FakeWorker {
            api: api.clone(),
            token: resp.token,
            behavior,
            stolen: Vec::new(),
            leased: Vec::new(),
        }
    }

    /// One round: lease up to `max` tasks, compute or misbehave, report. Returns the tasks
    /// leased, or `None` once the coordinator refuses this worker (banned).
    pub async fn round(&mut self, max: u32) -> Option<usize> {
        let resp = self
            .api
            .http
            .post(format!("{}/api/v1/work/lease", self.api.url))
            .bearer_auth(&self.token)
            .json(&LeaseRequest {
                max_tasks: max,
                held: None,
                wait_ms: None,
            })
            .send()
            .await
            .ok()?;
        if resp.status() == 403 {
            return None;
        }
        let lease: LeaseResponse = resp.json().await.ok()?;
        let n = lease.tasks.len();
        self.leased.extend(lease.tasks.iter().map(|t| t.task_id));
        if self.behavior == Behavior::Stall {
            return Some(n);
        }
        let mut results = Vec::new();
        for task in &lease.tasks {
            let truth = honest(task);
            let output = match self.behavior {
                Behavior::Honest | Behavior::Stall | Behavior::Steal => truth,
                Behavior::AlwaysWrong => corrupt(&truth, 1),
                Behavior::RandomWrong if rand::random::<bool>() => corrupt(&truth, 2),
                Behavior::RandomWrong => truth,
                Behavior::Collude => corrupt(&truth, 3),
                Behavior::Jitter => scale(&truth, 1.0 + 1e-12),
                Behavior::Off => scale(&truth, 1.0 + 1e-6),
                Behavior::Greedy => {
                    let mut t = truth;
                    t["credit"] = json!(1e9);
                    t
                }
            };
            let task_id = if self.behavior == Behavior::Steal {
                self.stolen.retain(|id| !self.leased.contains(id));
                self.stolen.pop().unwrap_or(task.task_id)
            } else {
                task.task_id
            };
            results.push(TaskResult::success(task_id, output));
        }
        if !results.is_empty() {
            let _: Option<ReportResponse> = async {
                self.api
                    .http
                    .post(format!("{}/api/v1/work/report", self.api.url))
                    .bearer_auth(&self.token)
                    .json(&ReportRequest { results })
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
        }
        Some(n)
    }
}

/// Runs fake workers round after round until `done` says stop (checked between rounds).
pub async fn run_until<F, Fut>(mut workers: Vec<FakeWorker>, max: u32, done: F) -> Vec<FakeWorker>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "fake fleet did not finish in time"
        );
        let mut idle = true;
        let rounds = workers.iter_mut().map(|w| w.round(max));
        for n in futures_join(rounds).await {
            if n.unwrap_or(0) > 0 {
                idle = false;
            }
        }
        if idle {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    workers
}

/// Awaits futures concurrently (all workers lease at the same time, like a real fleet).
async fn futures_join<T>(
    futs: impl Iterator<Item = impl std::future::Future<Output = T>>,
) -> Vec<T> {
    futures_util::future::join_all(futs).await
}

//! The worker protocol: enroll, lease, heartbeat, report (documented in README.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Millis;

/// Most tasks one lease call may ask for.
pub const MAX_LEASE_TASKS: u32 = 1000;
/// Most results one report call may carry.
pub const MAX_REPORT_RESULTS: usize = 1000;
/// Longest accepted error message in a report, in bytes; longer ones are refused.
pub const MAX_ERROR_BYTES: usize = 4096;
/// Longest accepted worker name, OS or arch string, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
/// Most app names a worker may declare.
pub const MAX_APPS: usize = 64;

/// `POST /api/v1/workers/enroll`. `Debug` leaves out the enrollment key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4096))]
    pub cores: u32,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, example = "linux")
    )]
    pub os: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, example = "x86_64")
    )]
    pub arch: String,
    /// Apps this worker can compute.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 64, example = json!(["collatz", "prime-count"])))]
    pub apps: Vec<String>,
    /// The volunteer's account name; several workers may share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The project's enrollment key, when the coordinator requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enroll_key: Option<String>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("name", &self.name)
            .field("cores", &self.cores)
            .field("os", &self.os)
            .field("arch", &self.arch)
            .field("apps", &self.apps)
            .field("owner", &self.owner)
            .field(
                "enroll_key",
                &self.enroll_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Answer to enrollment. The token is shown once; the coordinator keeps only its hash.
/// `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    pub worker_id: Uuid,
    pub token: String,
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("worker_id", &self.worker_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `POST /api/v1/work/lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    #[cfg_attr(feature = "openapi", schema(maximum = 1000))]
    pub max_tasks: u32,
    /// Every task the worker still holds (queued, computing, or a result not yet delivered).
    /// Tasks leased to it that it does not name were lost on the way (the coordinator crashed
    /// after committing the lease, or the answer was cut off); the coordinator sends them
    /// again instead of letting them sit until their deadline. Omitted by old workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
    pub held: Option<Vec<Uuid>>,
    /// When there is no task now, how long (ms) the coordinator may hold the request waiting
    /// for one (a long poll; capped at [`MAX_LEASE_WAIT_MS`]). Work appears at once instead of
    /// at the next poll; a lease that waited gets at most one task per core of the worker (its
    /// cores idle until the answer), and asks again for more. Omitted or 0: answer at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u32>,
}

/// The longest a lease may wait for work.
pub const MAX_LEASE_WAIT_MS: u32 = 30_000;

/// One task handed to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskAssignment {
    pub task_id: Uuid,
    pub job_id: Uuid,
    pub unit_id: Uuid,
    /// Position of the unit in its job.
    pub unit_seq: u64,
    pub app: String,
    /// The job's parameters.
    pub params: Value,
    /// The unit's slice of them (a range, a tile, a seed block).
    pub unit: Value,
    /// The task must be reported before this time (ms since the epoch).
    pub deadline: Millis,
}

/// Answer to a lease: possibly fewer tasks than asked for, possibly none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseResponse {
    pub tasks: Vec<TaskAssignment>,
    /// How many tasks this worker may hold at once, leased and not yet reported; it grows
    /// with valid results and halves on failures. Workers size their buffer by it, so that
    /// they lease many tasks at a time instead of a few each call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u32>,
}

/// Progress of one in-flight task, 0.0 to 1.0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskProgress {
    pub task_id: Uuid,
    pub progress: f64,
}

/// `POST /api/v1/work/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub tasks: Vec<TaskProgress>,
}

/// Tasks the worker should stop: their job was canceled or paused, or their unit is decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    pub abort: Vec<Uuid>,
}

/// One result: exactly one of `output` (the app's JSON output) or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    pub task_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a result says, once checked to carry exactly one of output and error.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResultKind<'a> {
    Output(&'a Value),
    Error(&'a str),
}

impl TaskResult {
    pub fn success(task_id: Uuid, output: Value) -> Self {
        TaskResult {
            task_id,
            output: Some(output),
            error: None,
        }
    }

    pub fn failure(task_id: Uuid, error: impl Into<String>) -> Self {
        TaskResult {
            task_id,
            output: None,
            error: Some(error.into()),
        }
    }

    /// `None` when the result carries both or neither of output and error.
    pub fn kind(&self) -> Option<TaskResultKind<'_>> {
        match (&self.output, &self.error) {
            (Some(o), None) => Some(TaskResultKind::Output(o)),
            (None, Some(e)) => Some(TaskResultKind::Error(e)),
            _ => None,
        }
    }
}

/// `POST /api/v1/work/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub results: Vec<TaskResult>,
}

/// A result the coordinator did not take, and why. Refusals are final: resending will not help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusedResult {
    pub task_id: Uuid,
    pub reason: String,
}

/// Answer to a report: every task id of the request is in exactly one of the two lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportResponse {
    pub accepted: Vec<Uuid>,
    pub refused: Vec<RefusedResult>,
}

/// A worker as `GET /api/v1/workers` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerView {
    pub worker_id: Uuid,
    pub name: String,
    pub owner: Option<String>,
    pub os: String,
    pub arch: String,
    pub cores: u32,
    pub apps: Vec<String>,
    pub created_at: Millis,
    pub last_seen: Millis,
    pub in_flight: u64,
    pub valid: u64,
    pub invalid: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Total credit: the declared work of every valid result.
    pub credit: f64,
    /// Recent average credit per day (exponentially decaying, 7-day half-life).
    pub recent_credit: f64,
    /// Consecutive valid results; a long streak makes the worker trusted.
    pub streak: u64,
    /// Whether its units may currently go out alone (adaptive replication).
    pub trusted: bool,
    /// Most tasks it may hold at once; halves on errors, grows with valid results.
    pub quota: u32,
    pub banned: bool,
}

/// One line of the public leaderboard: no ids, no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderboardEntry {
    /// Worker name, or owner name in the by-owner table.
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    /// Workers counted (1 in the per-worker table).
    pub workers: u64,
    pub valid: u64,
    pub credit: f64,
    pub recent_credit: f64,
}

/// `GET /api/v1/leaderboard`: best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Leaderboard {
    pub workers: Vec<LeaderboardEntry>,
    pub owners: Vec<LeaderboardEntry>,
}

/// `POST /api/v1/work/release`: a worker hands back tasks leased to it that it will not
/// compute (it is shutting down); they are reissued at once instead of timing out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub tasks: Vec<Uuid>,
}

/// The tasks that were released; the others were not (or no longer) leased to this worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseResponse {
    pub released: Vec<Uuid>,
}

/// A worker's open line to the coordinator: held open for `wait_ms` (at most
/// [`MAX_PRESENCE_WAIT_MS`]), then answered, and opened again by the worker at once. A worker
/// process that dies closes it, which the coordinator notices at once: the dead worker's tasks
/// get spare copies within a second instead of after the silence limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PresenceRequest {
    /// How long (ms) the coordinator holds the request open.
    pub wait_ms: u32,
}

/// The longest a presence request is held: well under the worker's request timeout.
pub const MAX_PRESENCE_WAIT_MS: u32 = 30_000;

/// Presence lines one worker may hold open at once (more are refused with 409). A worker needs
/// one, two for a moment after a connection reset; more would only tie up connections.
pub const MAX_PRESENCE_LINES: usize = 4;

/// The answer to a presence request that ran its time (or met a coordinator shutting down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceResponse {
    /// How long (ms) the request was held.
    pub held_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_kind_needs_exactly_one() {
        let id = Uuid::nil();
        assert!(matches!(
            TaskResult::success(id, serde_json::json!({"count": 1})).kind(),
            Some(TaskResultKind::Output(_))
        ));
        assert!(matches!(
            TaskResult::failure(id, "boom").kind(),
            Some(TaskResultKind::Error("boom"))
        ));
        let both = TaskResult {
            task_id: id,
            output: Some(Value::Null),
            error: Some("x".into()),
        };
        assert!(both.kind().is_none());
    }

    #[test]
    fn report_wire_shape() {
        let json = serde_json::json!({"results": [
            {"task_id": Uuid::nil(), "output": {"count": 4}},
            {"task_id": Uuid::nil(), "error": "overflow"}
        ]});
        let req: ReportRequest = serde_json::from_value(json).unwrap();
        assert_eq!(req.results.len(), 2);
        assert_eq!(req.results[1].error.as_deref(), Some("overflow"));
    }
}

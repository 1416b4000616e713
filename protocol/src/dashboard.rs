//! Wire types of the dashboard's read views: the live event stream (`/api/v1/events`), fleet
//! totals, a job's unit map, and the example job specs.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JobState, JobView, Millis};

/// Most cells in a unit map; bigger jobs put several units in each cell.
pub const MAX_UNIT_CELLS: u64 = 4096;

/// Fleet totals, public (no names, no ids).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FleetView {
    /// Workers seen within the last [`FleetView::online_window_secs`].
    pub workers_online: u64,
    pub workers_total: u64,
    /// Cores of the online workers.
    pub cores_online: u64,
    pub online_window_secs: u64,
    /// Tasks out on workers now.
    pub tasks_in_flight: u64,
    /// Tasks waiting for a worker (the queue depth).
    pub tasks_unsent: u64,
    /// Units with a canonical result, over all jobs ever.
    pub units_done_total: u64,
}

/// Units finished per minute, oldest first, for the throughput chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThroughputPoint {
    /// Start of the minute, ms since the epoch.
    pub at: Millis,
    /// Units done in that minute, per second.
    pub units_per_sec: f64,
}

/// What the dashboard needs to draw its overview; sent on connect and whenever it changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    pub at: Millis,
    pub jobs: Vec<JobView>,
    pub fleet: FleetView,
    /// The last hour, a point per minute.
    pub throughput: Vec<ThroughputPoint>,
}

/// A live event (SSE `event: update`); the snapshot follows shortly with the new totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Workers reported `count` results of a job (summed over up to 100 ms).
    ResultsReported { job_id: Uuid, count: u64 },
    /// The transitioner decided `count` units of a job, done or failed (summed over up to
    /// 100 ms).
    UnitsDecided { job_id: Uuid, count: u64 },
    /// A job was submitted or changed state.
    JobChanged { job_id: Uuid, state: JobState },
    /// A worker enrolled.
    WorkerEnrolled { name: String, cores: u32 },
}

/// `GET /api/v1/jobs/{id}/units`: the job's units as cells, `units_per_cell` units each (the
/// last cell may hold fewer). The per-cell arrays have one entry per cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitMap {
    pub job_id: Uuid,
    pub unit_count: u64,
    pub units_per_cell: u64,
    /// Units with a canonical result.
    pub done: Vec<u32>,
    pub failed: Vec<u32>,
    /// Open units with a task out on a worker.
    pub running: Vec<u32>,
    /// Units that exist as rows (the rest are created lazily as leasing reaches them).
    pub created: Vec<u32>,
    pub tasks: TaskStats,
}

/// Validation figures of one job, counted over its tasks (BOINC's results).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStats {
    pub total: u64,
    pub unsent: u64,
    pub in_flight: u64,
    /// Successful results that agreed with the canonical one.
    pub valid: u64,
    /// Successful results that disagreed with the canonical one.
    pub invalid: u64,
    /// Successful results still waiting for a quorum.
    pub pending: u64,
    pub errors: u64,
    pub timed_out: u64,
    /// Open units with a quorum of results that do not agree (more replicas are out).
    pub inconclusive_units: u64,
}

/// An example job spec from `job-specs/`, served by `GET /api/v1/job-specs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExampleSpec {
    pub file: String,
    pub app: String,
    /// The TOML text.
    pub toml: String,
}

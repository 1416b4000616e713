//! Wire types shared by the coordinator, the worker, the CLI and the tests.
//!
//! Everything that crosses HTTP is defined here once; no crate writes JSON bodies by hand.

pub mod dashboard;
pub mod error;
pub mod job;
pub mod token;
pub mod work;

pub use error::ErrorBody;
pub use job::{
    JobCounts, JobList, JobSpec, JobState, JobView, ModuleView, Redundancy, RedundancySpec,
    SpecError, is_sha256_hex,
};
pub use token::{TokenCreated, TokenList, TokenRequest, TokenView};
pub use work::{
    EnrollRequest, EnrollResponse, HeartbeatRequest, HeartbeatResponse, Leaderboard,
    LeaderboardEntry, LeaseRequest, LeaseResponse, RefusedResult, ReportRequest, ReportResponse,
    TaskAssignment, TaskProgress, TaskResult, TaskResultKind, WorkerView,
};

/// Milliseconds since the Unix epoch: every timestamp on the wire and in the store.
pub type Millis = i64;

/// The current time in milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

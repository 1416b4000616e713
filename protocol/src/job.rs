//! Job specs (what a submitter sends) and job views (what the API returns).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Millis;

/// Longest accepted job name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted app name, in characters.
pub const MAX_APP_CHARS: usize = 64;
/// Largest accepted `min_quorum`.
pub const MAX_QUORUM: u32 = 10;
/// Largest accepted `max_total_results` and `max_error_results`.
pub const MAX_RESULTS_PER_UNIT: u32 = 50;
/// Longest accepted unit timeout: one week.
pub const MAX_UNIT_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Default unit timeout: ten minutes.
pub const DEFAULT_UNIT_TIMEOUT_SECS: u64 = 600;
/// Accepted priorities are `-PRIORITY_RANGE..=PRIORITY_RANGE`.
pub const PRIORITY_RANGE: i32 = 1000;
/// The longest `GET /api/v1/jobs/{id}?wait_ms=` holds its answer for the job to end.
pub const MAX_JOB_WAIT_MS: u64 = 30_000;

/// A job as submitted: the JSON body of `POST /api/v1/jobs`, and the TOML files in `job-specs/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// A built-in app; empty when the job runs a module.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64, example = "collatz"))]
    pub app: String,
    /// The SHA-256 (hex) of an uploaded WebAssembly module, instead of a built-in app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The app's parameters (see the example job specs, `GET /api/v1/job-specs`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object, example = json!({"start": 1, "end": 1000, "unit_size": 100})))]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redundancy: Option<RedundancySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604800))]
    pub unit_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = -1000, maximum = 1000))]
    pub priority: Option<i32>,
}

/// The redundancy policy as written in a spec: every field optional, defaults filled by
/// [`RedundancySpec::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedundancySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_quorum: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_results: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_results: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_results: Option<u32>,
    /// Adaptive replication: trusted workers' units may go out alone [true].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<bool>,
    /// Never give two tasks of a unit to workers of the same owner [false].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_owners: Option<bool>,
}

/// A checked redundancy policy (BOINC's semantics; see ARCHITECTURE.md, "The result model").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Redundancy {
    /// Agreeing successful results needed to accept a unit.
    pub min_quorum: u32,
    /// Tasks created up front for each unit.
    pub target_results: u32,
    /// Errors and timeouts after which the unit fails.
    pub max_error_results: u32,
    /// Tasks ever created for a unit before it fails.
    pub max_total_results: u32,
    /// Trusted workers' units may go out with a quorum of 1, except spot checks.
    #[serde(default)]
    pub adaptive: bool,
    /// Replicas of a unit go to workers of different owners.
    #[serde(default)]
    pub distinct_owners: bool,
}

/// Why a spec was refused; the message is shown to the submitter as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn spec_err<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(msg.into()))
}

impl RedundancySpec {
    /// Fills defaults and checks the policy is coherent.
    pub fn resolve(&self) -> Result<Redundancy, SpecError> {
        let min_quorum = self.min_quorum.unwrap_or(2);
        if min_quorum == 0 || min_quorum > MAX_QUORUM {
            return spec_err(format!(
                "redundancy.min_quorum must be between 1 and {MAX_QUORUM}, got {min_quorum}"
            ));
        }
        let target_results = self.target_results.unwrap_or(min_quorum);
        if target_results < min_quorum || target_results > MAX_RESULTS_PER_UNIT {
            return spec_err(format!(
                "redundancy.target_results must be between min_quorum ({min_quorum}) and \
                 {MAX_RESULTS_PER_UNIT}, got {target_results}"
            ));
        }
        let max_error_results = self.max_error_results.unwrap_or(3);
        if max_error_results == 0 || max_error_results > MAX_RESULTS_PER_UNIT {
            return spec_err(format!(
                "redundancy.max_error_results must be between 1 and {MAX_RESULTS_PER_UNIT}, \
                 got {max_error_results}"
            ));
        }
        let max_total_results = self.max_total_results.unwrap_or(min_quorum + 4);
        if max_total_results < target_results || max_total_results > MAX_RESULTS_PER_UNIT {
            return spec_err(format!(
                "redundancy.max_total_results must be between target_results ({target_results}) \
                 and {MAX_RESULTS_PER_UNIT}, got {max_total_results}"
            ));
        }
        Ok(Redundancy {
            min_quorum,
            target_results,
            max_error_results,
            max_total_results,
            adaptive: self.adaptive.unwrap_or(true),
            distinct_owners: self.distinct_owners.unwrap_or(false),
        })
    }
}

impl JobSpec {
    /// Checks everything that does not depend on the app (the app checks `params`).
    pub fn check_common(&self) -> Result<(Redundancy, u64, i32), SpecError> {
        let name_chars = self.name.chars().count();
        if self.name.trim().is_empty() {
            return spec_err("name must not be empty");
        }
        if name_chars > MAX_NAME_CHARS {
            return spec_err(format!(
                "name is {name_chars} characters long; the limit is {MAX_NAME_CHARS}"
            ));
        }
        if self.name.chars().any(char::is_control) {
            return spec_err("name must not contain control characters");
        }
        match &self.module {
            None if self.app.is_empty() => {
                return spec_err("a job names an app, or a module by its sha256");
            }
            None if self.app.chars().count() > MAX_APP_CHARS => {
                return spec_err(format!("app must be 1 to {MAX_APP_CHARS} characters"));
            }
            None => {}
            Some(_) if !self.app.is_empty() => {
                return spec_err("a job names an app or a module, not both");
            }
            Some(m) if !is_sha256_hex(m) => {
                return spec_err(format!(
                    "module must be a SHA-256 in hex (64 lowercase hex digits), got {m:?}"
                ));
            }
            Some(_) => {}
        }
        if !self.params.is_object() {
            return spec_err("params must be an object (a table in TOML)");
        }
        let redundancy = self.redundancy.clone().unwrap_or_default().resolve()?;
        let timeout = self.unit_timeout_secs.unwrap_or(DEFAULT_UNIT_TIMEOUT_SECS);
        if timeout == 0 || timeout > MAX_UNIT_TIMEOUT_SECS {
            return spec_err(format!(
                "unit_timeout_secs must be between 1 and {MAX_UNIT_TIMEOUT_SECS}, got {timeout}"
            ));
        }
        let priority = self.priority.unwrap_or(0);
        if !(-PRIORITY_RANGE..=PRIORITY_RANGE).contains(&priority) {
            return spec_err(format!(
                "priority must be between -{PRIORITY_RANGE} and {PRIORITY_RANGE}, got {priority}"
            ));
        }
        Ok((redundancy, timeout, priority))
    }
}

/// Whether `s` is written as module hashes are: 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `POST /api/v1/modules`: the stored module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleView {
    /// SHA-256 of the module's binary form: what job specs name as `module`.
    pub sha256: String,
    /// Size of the binary form in bytes.
    pub size: u64,
    /// The app name jobs of this module show (`wasm:<sha256>`).
    pub app: String,
}

/// The life of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Completed,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed, failed and canceled jobs never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Canceled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unit counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCounts {
    /// Units the job splits into.
    pub total: u64,
    /// Units with a canonical result.
    pub done: u64,
    /// Units that failed (too many errors or disagreeing results).
    pub failed: u64,
    /// Units with at least one task out on a worker or a result awaiting its quorum.
    pub in_progress: u64,
}

/// A job as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: Uuid,
    pub name: String,
    pub app: String,
    pub state: JobState,
    pub params: Value,
    pub redundancy: Redundancy,
    pub unit_timeout_secs: u64,
    pub priority: i32,
    pub units: JobCounts,
    /// Tasks (replicas) created so far, over all units.
    pub tasks_created: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    #[serde(default)]
    pub finished_at: Option<Millis>,
    /// Why the job failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Media type of the result, once the job is completed.
    #[serde(default)]
    pub result_type: Option<String>,
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: Value) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn defaults_follow_boinc() {
        let r = RedundancySpec::default().resolve().unwrap();
        assert_eq!(
            r,
            Redundancy {
                min_quorum: 2,
                target_results: 2,
                max_error_results: 3,
                max_total_results: 6,
                adaptive: true,
                distinct_owners: false,
            }
        );
    }

    #[test]
    fn incoherent_redundancy_is_refused() {
        let bad = RedundancySpec {
            min_quorum: Some(3),
            target_results: Some(2),
            ..Default::default()
        };
        assert!(bad.resolve().unwrap_err().0.contains("target_results"));
        let zero = RedundancySpec {
            min_quorum: Some(0),
            ..Default::default()
        };
        assert!(zero.resolve().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            spec(serde_json::json!({"name": "x", "app": "a", "params": {}, "redundnacy": {}}))
                .unwrap_err();
        assert!(err.to_string().contains("redundnacy"));
    }

    #[test]
    fn common_checks() {
        let mut s = spec(serde_json::json!({"name": "x", "app": "a", "params": {}})).unwrap();
        assert!(s.check_common().is_ok());
        s.name = " ".into();
        assert!(s.check_common().is_err());
        s.name = "ok".into();
        s.params = serde_json::json!([1]);
        assert!(s.check_common().is_err());
        s.params = serde_json::json!({});
        s.unit_timeout_secs = Some(0);
        assert!(s.check_common().is_err());
        s.unit_timeout_secs = None;
        s.module = Some("ab".repeat(32));
        assert!(s.check_common().unwrap_err().0.contains("not both"));
        s.app.clear();
        assert!(s.check_common().is_ok());
        s.module = Some("AB".repeat(32));
        assert!(s.check_common().unwrap_err().0.contains("64 lowercase"));
        s.module = None;
        assert!(s.check_common().is_err());
    }

    #[test]
    fn job_state_round_trips() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{st}\""));
        }
    }
}

//! Quorum validation: what to do with one unit given its tasks (pure; no I/O).
//!
//! BOINC's rules: a group of at least `min_quorum` agreeing successful results makes the
//! canonical result; otherwise create more tasks while under `max_total_results`, and fail the
//! unit after `max_error_results` errors or when no quorum can be reached any more.

use serde_json::Value;
use sparecycles_protocol::Redundancy;
use uuid::Uuid;

/// Where a task stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Unsent,
    Leased,
    Success,
    Error,
    TimedOut,
    Aborted,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Unsent => "unsent",
            TaskState::Leased => "leased",
            TaskState::Success => "success",
            TaskState::Error => "error",
            TaskState::TimedOut => "timed_out",
            TaskState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "unsent" => TaskState::Unsent,
            "leased" => TaskState::Leased,
            "success" => TaskState::Success,
            "error" => TaskState::Error,
            "timed_out" => TaskState::TimedOut,
            "aborted" => TaskState::Aborted,
            _ => return None,
        })
    }
}

/// One task of the unit under decision, in creation order.
#[derive(Debug, Clone)]
pub struct TaskSnapshot {
    pub id: Uuid,
    pub worker_id: Option<Uuid>,
    pub state: TaskState,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// Leased to a worker that stopped sending heartbeats: a spare task may replace it.
    pub suspect: bool,
}

/// What the transitioner must do with a unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Still waiting for results; create `new_tasks` more tasks.
    Pending { new_tasks: u32 },
    /// A quorum agreed.
    Valid {
        canonical: Uuid,
        valid: Vec<Uuid>,
        invalid: Vec<Uuid>,
    },
    /// The unit cannot be completed; the reason is shown to the submitter.
    Failed { reason: String },
}

/// Decides a unit from its tasks. `agree` is the app's `compare`.
pub fn decide(
    policy: &Redundancy,
    tasks: &[TaskSnapshot],
    agree: impl Fn(&Value, &Value) -> bool,
) -> Decision {
    let quorum = policy.min_quorum as usize;
    let successes: Vec<(&TaskSnapshot, &Value)> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Success)
        .filter_map(|t| t.output.as_ref().map(|o| (t, o)))
        .collect();

    if successes.len() >= quorum {
        for (candidate, out) in &successes {
            let group: Vec<Uuid> = successes
                .iter()
                .filter(|(_, other)| agree(out, other))
                .map(|(t, _)| t.id)
                .collect();
            if group.len() >= quorum {
                let invalid = successes
                    .iter()
                    .map(|(t, _)| t.id)
                    .filter(|id| !group.contains(id))
                    .collect();
                return Decision::Valid {
                    canonical: candidate.id,
                    valid: group,
                    invalid,
                };
            }
        }
    }

    let errors: Vec<&TaskSnapshot> = tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Error | TaskState::TimedOut))
        .collect();
    if errors.len() >= policy.max_error_results as usize {
        let last = errors
            .iter()
            .rev()
            .find_map(|t| t.error.as_deref())
            .unwrap_or("timed out");
        return Decision::Failed {
            reason: format!(
                "{} of its tasks failed or timed out (max_error_results = {}); last error: {last}",
                errors.len(),
                policy.max_error_results
            ),
        };
    }

    let in_flight = tasks
        .iter()
        .filter(|t| t.state == TaskState::Unsent || (t.state == TaskState::Leased && !t.suspect))
        .count();
    // Without a quorum, each missing success needs a task; with disagreeing successes, one more
    // result may break the tie.
    let wanted = if successes.len() < quorum {
        quorum - successes.len()
    } else {
        1
    };
    let missing = wanted.saturating_sub(in_flight);
    // Aborted tasks (canceled before any work, or set aside from a banned worker) do not count.
    let created = tasks
        .iter()
        .filter(|t| t.state != TaskState::Aborted)
        .count();
    let room = (policy.max_total_results as usize).saturating_sub(created);
    let create = missing.min(room);
    let suspects = tasks
        .iter()
        .filter(|t| t.state == TaskState::Leased && t.suspect)
        .count();
    if in_flight + create + suspects == 0 {
        return Decision::Failed {
            reason: format!(
                "no {quorum} agreeing results among {} successful ones after {} tasks \
                 (max_total_results = {})",
                successes.len(),
                created,
                policy.max_total_results
            ),
        };
    }
    Decision::Pending {
        new_tasks: create as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(q: u32) -> Redundancy {
        Redundancy {
            min_quorum: q,
            target_results: q,
            max_error_results: 3,
            max_total_results: q + 4,
            adaptive: false,
            distinct_owners: false,
        }
    }

    fn task(n: u128, state: TaskState, output: Option<Value>) -> TaskSnapshot {
        TaskSnapshot {
            id: Uuid::from_u128(n),
            worker_id: Some(Uuid::from_u128(100 + n)),
            state,
            output,
            error: (state == TaskState::Error).then(|| "boom".to_owned()),
            suspect: false,
        }
    }

    fn eq(a: &Value, b: &Value) -> bool {
        a == b
    }

    #[test]
    fn two_agreeing_results_make_the_quorum() {
        let tasks = [
            task(1, TaskState::Success, Some(json!({"count": 4}))),
            task(2, TaskState::Success, Some(json!({"count": 4}))),
        ];
        assert_eq!(
            decide(&policy(2), &tasks, eq),
            Decision::Valid {
                canonical: Uuid::from_u128(1),
                valid: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
                invalid: vec![]
            }
        );
    }

    #[test]
    fn one_result_is_not_a_quorum_of_two() {
        let tasks = [
            task(1, TaskState::Success, Some(json!({"count": 4}))),
            task(2, TaskState::Leased, None),
        ];
        assert_eq!(
            decide(&policy(2), &tasks, eq),
            Decision::Pending { new_tasks: 0 }
        );
    }

    #[test]
    fn disagreement_asks_for_a_tie_breaker_and_marks_the_liar() {
        let mut tasks = vec![
            task(1, TaskState::Success, Some(json!({"count": 4}))),
            task(2, TaskState::Success, Some(json!({"count": 5}))),
        ];
        assert_eq!(
            decide(&policy(2), &tasks, eq),
            Decision::Pending { new_tasks: 1 }
        );
        tasks.push(task(3, TaskState::Success, Some(json!({"count": 5}))));
        assert_eq!(
            decide(&policy(2), &tasks, eq),
            Decision::Valid {
                canonical: Uuid::from_u128(2),
                valid: vec![Uuid::from_u128(2), Uuid::from_u128(3)],
                invalid: vec![Uuid::from_u128(1)]
            }
        );
    }

    #[test]
    fn errors_and_timeouts_get_replacements_then_fail_the_unit() {
        let mut tasks = vec![
            task(1, TaskState::Success, Some(json!({"count": 4}))),
            task(2, TaskState::TimedOut, None),
        ];
        assert_eq!(
            decide(&policy(2), &tasks, eq),
            Decision::Pending { new_tasks: 1 }
        );
        tasks.push(task(3, TaskState::Error, None));
        tasks.push(task(4, TaskState::Error, None));
        match decide(&policy(2), &tasks, eq) {
            Decision::Failed { reason } => assert!(reason.contains("boom"), "{reason}"),
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn no_quorum_within_max_total_results_fails() {
        let p = Redundancy {
            min_quorum: 2,
            target_results: 2,
            max_error_results: 3,
            max_total_results: 3,
            adaptive: false,
            distinct_owners: false,
        };
        let tasks: Vec<_> = (1..=3)
            .map(|n| task(n, TaskState::Success, Some(json!({"count": n}))))
            .collect();
        assert!(matches!(decide(&p, &tasks, eq), Decision::Failed { .. }));
    }

    #[test]
    fn a_suspected_worker_gets_a_spare_task() {
        let mut slow = task(2, TaskState::Leased, None);
        let tasks = vec![
            task(1, TaskState::Success, Some(json!({"count": 4}))),
            slow.clone(),
        ];
        assert_eq!(
            decide(&policy(2), &tasks, eq),
            Decision::Pending { new_tasks: 0 }
        );
        slow.suspect = true;
        let tasks = vec![task(1, TaskState::Success, Some(json!({"count": 4}))), slow];
        assert_eq!(
            decide(&policy(2), &tasks, eq),
            Decision::Pending { new_tasks: 1 }
        );
    }

    #[test]
    fn quorum_of_one_accepts_the_first_result() {
        let tasks = [task(1, TaskState::Success, Some(json!({"count": 4})))];
        assert!(matches!(
            decide(&policy(1), &tasks, eq),
            Decision::Valid { .. }
        ));
    }
}

//! Prometheus metrics: the names (the Grafana dashboard in `dashboards/grafana/` uses exactly
//! these), the process-wide recorder, and small helpers the handlers and loops call.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sparecycles_protocol::dashboard::FleetView;

pub const TASKS_LEASED: &str = "sparecycles_tasks_leased_total";
pub const RESULTS_REPORTED: &str = "sparecycles_results_reported_total";
pub const RESULTS_VALID: &str = "sparecycles_results_valid_total";
pub const RESULTS_INVALID: &str = "sparecycles_results_invalid_total";
pub const TASKS_TIMED_OUT: &str = "sparecycles_tasks_timed_out_total";
pub const TASKS_RESENT: &str = "sparecycles_tasks_resent_total";
pub const UNITS_DONE: &str = "sparecycles_units_done_total";
pub const UNITS_FAILED: &str = "sparecycles_units_failed_total";
pub const QUEUE_DEPTH: &str = "sparecycles_queue_depth";
pub const TASKS_IN_FLIGHT: &str = "sparecycles_tasks_in_flight";
pub const WORKERS_ONLINE: &str = "sparecycles_workers_online";
pub const CORES_ONLINE: &str = "sparecycles_cores_online";
pub const HTTP_DURATION: &str = "sparecycles_http_request_duration_seconds";
/// Requests answered 429 by the rate limits (appears once the first one was).
pub const RATE_LIMITED: &str = "sparecycles_rate_limited_total";
/// Leased tasks given a spare copy because their worker went silent or its presence line
/// dropped, by `reason` (appears once the first one was).
pub const TASKS_SPARED: &str = "sparecycles_tasks_spared_total";
/// PostgreSQL transactions aborted (a deadlock or a serialization failure) and run again, by
/// `what` (appears once the first one was). Each costs up to `deadlock_timeout` (1 s).
pub const DB_RETRIES: &str = "sparecycles_db_retries_total";

/// Every metric this coordinator exports, for tests and the Grafana check.
pub const ALL: &[&str] = &[
    TASKS_LEASED,
    RESULTS_REPORTED,
    RESULTS_VALID,
    RESULTS_INVALID,
    TASKS_TIMED_OUT,
    TASKS_RESENT,
    UNITS_DONE,
    UNITS_FAILED,
    QUEUE_DEPTH,
    TASKS_IN_FLIGHT,
    WORKERS_ONLINE,
    CORES_ONLINE,
    HTTP_DURATION,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        // Every counter exists from the start, so dashboards and alerts see zeros, not gaps.
        for name in [
            TASKS_LEASED,
            RESULTS_VALID,
            RESULTS_INVALID,
            TASKS_TIMED_OUT,
            TASKS_RESENT,
            UNITS_DONE,
            UNITS_FAILED,
        ] {
            metrics::counter!(name).absolute(0);
        }
        for outcome in ["success", "error"] {
            metrics::counter!(RESULTS_REPORTED, "outcome" => outcome).absolute(0);
        }
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(TASKS_LEASED, "Tasks leased to workers.");
    describe_counter!(
        TASKS_RESENT,
        "Leased tasks sent again because the worker never received them."
    );
    describe_counter!(
        RESULTS_REPORTED,
        "Results accepted from workers, by outcome."
    );
    describe_counter!(RESULTS_VALID, "Results that agreed with the canonical one.");
    describe_counter!(
        RESULTS_INVALID,
        "Results that disagreed with the canonical one."
    );
    describe_counter!(TASKS_TIMED_OUT, "Tasks not reported by their deadline.");
    describe_counter!(
        TASKS_SPARED,
        "Leased tasks given a spare copy, by reason: the worker went silent, or its presence \
         line dropped."
    );
    describe_counter!(
        DB_RETRIES,
        "PostgreSQL transactions aborted by a deadlock or a serialization failure and retried."
    );
    describe_counter!(UNITS_DONE, "Units that reached a canonical result.");
    describe_counter!(UNITS_FAILED, "Units that failed.");
    describe_gauge!(QUEUE_DEPTH, "Tasks waiting for a worker.");
    describe_gauge!(TASKS_IN_FLIGHT, "Tasks out on workers.");
    describe_gauge!(WORKERS_ONLINE, "Workers seen in the last 90 seconds.");
    describe_gauge!(CORES_ONLINE, "Cores of the online workers.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency.");
}

/// Sets the fleet gauges (from the dashboard's snapshot loop).
pub fn fleet(f: &FleetView) {
    metrics::gauge!(QUEUE_DEPTH).set(f.tasks_unsent as f64);
    metrics::gauge!(TASKS_IN_FLIGHT).set(f.tasks_in_flight as f64);
    metrics::gauge!(WORKERS_ONLINE).set(f.workers_online as f64);
    metrics::gauge!(CORES_ONLINE).set(f.cores_online as f64);
    // Histograms keep a little state between scrapes; this drains it.
    handle().run_upkeep();
}

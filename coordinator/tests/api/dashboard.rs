//! The dashboard's server side: the event stream, the unit map, the example specs, TOML specs,
//! and `/metrics` (Prometheus text that the Grafana dashboard can rely on). The page itself is
//! tested in headless Chromium by `dashboards/e2e/` (run by `.ci/run`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use sparecycles_protocol::dashboard::{ExampleSpec, Snapshot, UnitMap};
use sparecycles_protocol::{JobState, JobView};

use crate::helpers::{ADMIN_TOKEN, Coordinator, spec};

const LONG: Duration = Duration::from_secs(120);

/// Reads SSE frames until one named `name` arrives; returns its data.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String, name: &str) -> String {
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if event == name {
                return data;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an event within 20 s")
            .expect("stream")
            .expect("stream still open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_stream_snapshots_and_updates_live() {
    let c = Coordinator::start();
    let api = c.api();
    let mut resp = api
        .http
        .get(format!("{}/api/v1/events", c.url))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buf = String::new();
    let first: Snapshot =
        serde_json::from_str(&next_event(&mut resp, &mut buf, "snapshot").await).unwrap();
    assert!(first.jobs.is_empty());

    let _w = c.worker("w1", 1);
    let job = api
        .submit(&spec(json!({
            "name": "live",
            "app": "prime-count",
            "params": {"start": 0, "end": 2_000_000, "unit_size": 100_000},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    // Updates name the job; snapshots follow with its progress, until it completes.
    let update: Value =
        serde_json::from_str(&next_event(&mut resp, &mut buf, "update").await).unwrap();
    assert!(update["type"].is_string(), "{update}");
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let snap: Snapshot =
            serde_json::from_str(&next_event(&mut resp, &mut buf, "snapshot").await).unwrap();
        let mine = snap
            .jobs
            .iter()
            .find(|j| j.id == job.id)
            .expect("job in snapshot");
        if mine.state == JobState::Completed {
            assert_eq!(mine.units.done, 20);
            assert_eq!(snap.fleet.workers_total, 1);
            assert!(snap.fleet.units_done_total >= 20);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "job never completed");
    }

    // The unit map of a finished job: every unit done, figures consistent.
    let map: UnitMap = api
        .http
        .get(format!("{}/api/v1/jobs/{}/units", c.url, job.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(map.unit_count, 20);
    assert_eq!(map.units_per_cell, 1);
    assert_eq!(map.done, vec![1; 20]);
    assert!(map.tasks.valid >= 20);
    assert_eq!(map.tasks.in_flight + map.tasks.unsent, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unit_maps_of_huge_jobs_are_bucketed() {
    let c = Coordinator::start();
    let api = c.api();
    let job = api
        .submit(&spec(json!({
            "name": "huge",
            "app": "prime-count",
            "params": {"start": 0, "end": 1_000_000_000_000u64, "unit_size": 1_000_000},
        })))
        .await;
    let map: UnitMap = api
        .http
        .get(format!("{}/api/v1/jobs/{}/units", c.url, job.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(map.unit_count, 1_000_000);
    assert!(map.done.len() <= 4096 && map.done.len() as u64 * map.units_per_cell >= 1_000_000);
    assert!(map.created.iter().map(|&n| n as u64).sum::<u64>() > 0);
    let missing = api
        .http
        .get(format!("{}/api/v1/jobs/0000/units", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn toml_specs_are_accepted_and_examples_served() {
    let c = Coordinator::start();
    let api = c.api();
    let examples: Vec<ExampleSpec> = api
        .http
        .get(format!("{}/api/v1/job-specs", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mandel = examples.iter().find(|e| e.app == "mandelbrot").unwrap();
    let post = |body: String| {
        api.http
            .post(format!("{}/api/v1/jobs", c.url))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/toml")
            .body(body)
            .send()
    };
    let resp = post(mandel.toml.clone()).await.unwrap();
    assert_eq!(resp.status(), 201);
    let job: JobView = resp.json().await.unwrap();
    assert_eq!(job.app, "mandelbrot");

    // A TOML syntax error and a bad parameter: 422 with a message saying what is wrong.
    let resp = post("name = \"x\"\napp = = 1\n".into()).await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("TOML"), "{body}");
    let bad = mandel.toml.replace("tile = 128", "tile = 0");
    let resp = post(bad).await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("tile"), "{body}");
    assert_eq!(api.jobs().await.len(), 1, "refused specs create nothing");
}

/// Metric families in Prometheus text: checks every line's syntax, returns the family names
/// (histogram series folded into their family).
fn parse_prometheus(text: &str) -> BTreeSet<String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut families = BTreeSet::new();
    let mut typed = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_default();
            assert!(name_ok(name), "bad name in {line:?}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad type in {line:?}"
                );
                typed.insert(name.to_owned());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value = value.trim();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(name_ok(k), "bad label in {line:?}");
                    assert!(!v.trim_end_matches('"').contains('\n'));
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "bad series in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        families.insert(family.to_owned());
    }
    families
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_grafana_names_only_existing_metrics() {
    let c = Coordinator::start();
    let api = c.api();
    let _w = c.worker("m1", 1);
    let job = api
        .submit(&spec(json!({
            "name": "metered",
            "app": "prime-count",
            "params": {"start": 0, "end": 1_000_000, "unit_size": 100_000},
            "redundancy": {"min_quorum": 1}
        })))
        .await;
    assert_eq!(api.wait(job.id, LONG).await.state, JobState::Completed);
    // Gauges come from the snapshot loop (every few seconds).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let resp = api
        .http
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    let families = parse_prometheus(&text);
    for name in sparecycles_coordinator::metrics::ALL {
        assert!(families.contains(*name), "{name} missing from:\n{text}");
    }
    assert!(text.contains("sparecycles_units_done_total 10"), "{text}");
    assert!(text.contains("sparecycles_http_request_duration_seconds_bucket{"));
    assert!(
        text.contains("route=\"/api/v1/jobs/{id}\""),
        "routes are templates"
    );

    // Every metric the Grafana dashboard queries exists.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/grafana/sparecycles.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10);
    let mut named = BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("sparecycles_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            named.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    assert!(!named.is_empty());
    for name in &named {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| families.contains(*f))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the Grafana dashboard queries {name}, which /metrics does not export"
        );
    }
}

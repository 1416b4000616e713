//! The runner against a tiny in-process fake coordinator: enrollment, leasing, computing,
//! reporting through the outbox, re-enrollment on 401, aborts, backoff and shutdown.

mod fake_coordinator;

use std::path::Path;
use std::time::Duration;

use fake_coordinator::{Fake, Shared, spawn_fake};
use serde_json::{Value, json};
use sparecycles_protocol::{TaskAssignment, TaskResult, now_millis};
use sparecycles_worker::{Credentials, Outbox, RunConfig, StateDir};
use tokio::sync::oneshot;
use uuid::Uuid;

/// A prime-count task over `[start, end)` as one unit.
fn prime_task(start: u64, end: u64) -> TaskAssignment {
    let params = json!({"start": start, "end": end, "unit_size": end - start});
    let app = sparecycles_apps::find("prime-count").unwrap();
    let unit = app.plan(&params).unwrap().unit(0);
    task("prime-count", params, unit)
}

fn task(app: &str, params: Value, unit: Value) -> TaskAssignment {
    TaskAssignment {
        task_id: Uuid::now_v7(),
        job_id: Uuid::now_v7(),
        unit_id: Uuid::now_v7(),
        unit_seq: 0,
        app: app.into(),
        params,
        unit,
        deadline: now_millis() + 600_000,
    }
}

fn config(base: &str, state: &Path) -> RunConfig {
    let mut config = RunConfig::new(base, state);
    config.cores = 2;
    config.name = "test-worker".into();
    config.heartbeat_interval = Duration::from_millis(50);
    config.idle_poll = Duration::from_millis(20);
    config
}

/// Starts `run` in the background; send on the returned channel to stop it.
fn start(
    config: RunConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(sparecycles_worker::run(config, async move {
        let _ = rx.await;
    }));
    (tx, handle)
}

async fn stop(tx: oneshot::Sender<()>, handle: tokio::task::JoinHandle<anyhow::Result<()>>) {
    tx.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(15), handle)
        .await
        .expect("run did not stop in time");
    ended.unwrap().unwrap();
}

/// Polls until `cond` holds on the fake's state (or fails after 30 s).
async fn wait_for(fake: &Shared, what: &str, cond: impl Fn(&Fake) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond(&fake.lock().unwrap()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_of(result: &TaskResult) -> u64 {
    result.output.as_ref().unwrap()["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_computes_and_reports_through_an_outage() {
    let fake = Shared::default();
    let ranges = [(0, 100), (100, 200), (200, 300), (300, 400), (400, 500)];
    let unknown = task("no-such-app", json!({}), json!({}));
    {
        let mut f = fake.lock().unwrap();
        f.queue
            .extend(ranges.iter().map(|&(a, b)| prime_task(a, b)));
        f.queue.push_back(unknown.clone());
        f.failing_reports = 2;
    }
    let base = spawn_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = start(config(&base, dir.path()));

    wait_for(&fake, "six results", |f| f.accepted.len() == 6).await;
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.enrolls.len(), 1);
        assert_eq!(f.enrolls[0].name, "test-worker");
        assert_eq!(f.enrolls[0].cores, 2);
        // The built-in apps, and any module (the default module policy).
        let mut apps = sparecycles_apps::names();
        apps.push("wasm:*".into());
        assert_eq!(f.enrolls[0].apps, apps);
        assert!(f.report_calls >= 3, "the 503s were retried");
        let total: u64 = f
            .accepted
            .iter()
            .filter(|r| r.output.is_some())
            .map(count_of)
            .sum();
        assert_eq!(total, 95, "primes below 500");
        let failure = f
            .accepted
            .iter()
            .find(|r| r.task_id == unknown.task_id)
            .unwrap();
        assert_eq!(
            failure.error.as_deref(),
            Some("app no-such-app not supported by this worker")
        );
    }
    stop(tx, handle).await;

    let state = StateDir::open(dir.path()).unwrap();
    let creds = state.load_credentials().unwrap().unwrap();
    assert_eq!(creds.coordinator, base.trim_end_matches('/'));
    assert_eq!(creds.token, "token-1");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.credentials_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        Outbox::open(state.outbox_dir())
            .unwrap()
            .list()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_old_outbox_and_reenrolls_on_401() {
    let fake = Shared::default();
    let base = spawn_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // A previous run, enrolled with a coordinator that has since lost its database.
    let state = StateDir::open(dir.path()).unwrap();
    state
        .save_credentials(&Credentials {
            coordinator: base.trim_end_matches('/').to_owned(),
            worker_id: Uuid::now_v7(),
            token: "stale".into(),
            apps: Vec::new(),
        })
        .unwrap();
    let outbox = Outbox::open(state.outbox_dir()).unwrap();
    let old = TaskResult::success(Uuid::now_v7(), json!({"count": 4}));
    outbox.write(&old).unwrap();

    let (tx, handle) = start(config(&base, dir.path()));
    wait_for(&fake, "the old result", |f| {
        f.refused.contains(&old.task_id)
    })
    .await;
    // The refusal is final: the result leaves the outbox.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !outbox.list().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "outbox not emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New work flows under the new identity.
    fake.lock().unwrap().queue.push_back(prime_task(0, 100));
    wait_for(&fake, "a new result", |f| f.accepted.len() == 1).await;
    assert_eq!(count_of(&fake.lock().unwrap().accepted[0]), 25);
    assert_eq!(
        fake.lock().unwrap().enrolls.len(),
        1,
        "one re-enrollment for all loops"
    );
    stop(tx, handle).await;
    assert_eq!(state.load_credentials().unwrap().unwrap().token, "token-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_coordinator_cannot_take_does_not_block_the_others() {
    let fake = Shared::default();
    let base = spawn_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let outbox = Outbox::open(state.outbox_dir()).unwrap();
    let olds: Vec<TaskResult> = (0..5)
        .map(|i| TaskResult::success(Uuid::now_v7(), json!({"count": i})))
        .collect();
    for r in &olds {
        outbox.write(r).unwrap();
    }
    let poison = olds[3].task_id;
    fake.lock().unwrap().poison = Some(poison);

    let (tx, handle) = start(config(&base, dir.path()));
    wait_for(&fake, "the other results", |f| f.refused.len() == 4).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !outbox.list().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "poison result kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!fake.lock().unwrap().refused.contains(&poison));
    stop(tx, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_abort_cancels_the_running_unit() {
    let fake = Shared::default();
    // Long enough to still be running when the first heartbeats go out.
    let long = prime_task(0, 200_000_000_000);
    let short = prime_task(0, 100);
    {
        let mut f = fake.lock().unwrap();
        f.queue.extend([long.clone(), short.clone()]);
        f.abort.push(long.task_id);
    }
    let base = spawn_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = start(config(&base, dir.path()));

    wait_for(&fake, "the short unit", |f| {
        f.accepted.iter().any(|r| r.task_id == short.task_id)
    })
    .await;
    // The short unit ran beside the long one (one lane per core) and was reported; the long
    // one, aborted by the coordinator's answer to a heartbeat, never is.
    wait_for(&fake, "a heartbeat", |f| !f.heartbeats.is_empty()).await;
    // Heartbeats go out every 50 ms while a task is held: once they stop, the long unit (a
    // quarter of a minute of work) is no longer held, so the abort canceled it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = fake.lock().unwrap().heartbeats.len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = fake.lock().unwrap().heartbeats.len();
        if now == seen {
            break;
        }
        seen = now;
        assert!(
            tokio::time::Instant::now() < deadline,
            "heartbeats went on: the aborted unit is still held"
        );
    }
    {
        let f = fake.lock().unwrap();
        assert!(f.accepted.iter().all(|r| r.task_id != long.task_id));
        let first = &f.heartbeats[0];
        assert_eq!(
            first.tasks[0].task_id, long.task_id,
            "oldest current task first"
        );
    }
    stop(tx, handle).await;
    let f = fake.lock().unwrap();
    assert!(
        f.accepted.iter().all(|r| r.task_id != long.task_id),
        "the aborted unit is never reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_cleanly_while_the_coordinator_is_down() {
    // A port that nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = start(config(&base, dir.path()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop(tx, handle).await;
    assert!(
        StateDir::open(dir.path())
            .unwrap()
            .load_credentials()
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_answered_during_the_stop_is_handed_back() {
    let fake = Shared::default();
    {
        let mut f = fake.lock().unwrap();
        // The coordinator has leased the tasks when the stop comes; its answer is on its way.
        f.lease_delay = Some(Duration::from_millis(300));
        f.queue
            .extend((0..3).map(|i| prime_task(i * 1000, (i + 1) * 1000)));
    }
    let base = spawn_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = start(config(&base, dir.path()));
    wait_for(&fake, "a lease asked", |f| f.lease_calls >= 1).await;
    let leased: Vec<Uuid> = fake.lock().unwrap().leased.iter().copied().collect();
    assert_eq!(leased.len(), 3, "the first lease took every task");
    stop(tx, handle).await;
    let f = fake.lock().unwrap();
    let mut released = f.released.clone();
    released.sort();
    let mut expected = leased;
    expected.sort();
    assert_eq!(released, expected, "the leased tasks were not handed back");
    assert!(f.accepted.is_empty(), "nothing was computed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_go_out_while_a_paused_unit_holds_the_cores() {
    let fake = Shared::default();
    // Units finished just before a long one are kept back for a moment to go out together;
    // a pause that stops the long one must not keep them back with it.
    let short: Vec<_> = (0..5u64)
        .map(|i| prime_task(i * 100, (i + 1) * 100))
        .collect();
    let long = prime_task(0, 200_000_000_000);
    {
        let mut f = fake.lock().unwrap();
        f.queue.extend(short.iter().cloned());
        f.queue.push_back(long.clone());
    }
    let base = spawn_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let idle = dir.path().join("idle");
    std::fs::write(&idle, "idle").unwrap();
    let mut config = config(&base, &dir.path().join("state"));
    config.prefetch = 8;
    config.idle_source = Some(format!("file:{}", idle.display()));
    config.policy.idle_after = Duration::from_secs(60);
    let (tx, handle) = start(config);

    wait_for(&fake, "the long unit running", |f| {
        f.heartbeats
            .iter()
            .any(|h| h.tasks.first().is_some_and(|t| t.task_id == long.task_id))
    })
    .await;
    // The volunteer is back: computing pauses.
    std::fs::write(&idle, "active").unwrap();
    wait_for(&fake, "the five short results", |f| {
        short
            .iter()
            .all(|s| f.accepted.iter().any(|r| r.task_id == s.task_id))
    })
    .await;
    assert!(
        fake.lock()
            .unwrap()
            .accepted
            .iter()
            .all(|r| r.task_id != long.task_id),
        "the long unit is paused, not finished"
    );
    stop(tx, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_unit_s_result_does_not_wait_for_the_next_units() {
    let fake = Shared::default();
    // A long unit, then more buffered units than "running out" allows, each endless: the long
    // unit's result must go out while they compute, not when the next one ends.
    let long = prime_task(0, 1_000_000_000);
    let endless: Vec<_> = (0..10).map(|_| prime_task(0, 200_000_000_000)).collect();
    {
        let mut f = fake.lock().unwrap();
        f.queue.push_back(long.clone());
        f.queue.extend(endless.iter().cloned());
    }
    let base = spawn_fake(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&base, dir.path());
    config.prefetch = 12;
    let (tx, handle) = start(config);
    wait_for(&fake, "the long unit's result", |f| {
        f.accepted.iter().any(|r| r.task_id == long.task_id)
    })
    .await;
    let count = fake
        .lock()
        .unwrap()
        .accepted
        .iter()
        .find(|r| r.task_id == long.task_id)
        .map(count_of);
    assert_eq!(count, Some(50_847_534));
    stop(tx, handle).await;
}

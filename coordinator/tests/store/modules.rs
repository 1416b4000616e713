//! Modules: stored once under their hash; module jobs leased only to workers that take them.

use sparecycles_coordinator::store::{LeaseAsk, NewJob, Store};
use uuid::Uuid;

use crate::NOW;
use crate::harness::{Fresh, redundancy, worker};

async fn modules_are_stored_once(f: Fresh) {
    let s = f.store.as_ref();
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    assert!(s.put_module(&a, b"\0asm one", NOW).await.unwrap());
    assert!(
        !s.put_module(&a, b"\0asm two", NOW + 1).await.unwrap(),
        "stored once"
    );
    assert_eq!(
        s.module(&a).await.unwrap().as_deref(),
        Some(&b"\0asm one"[..])
    );
    assert_eq!(s.module(&b).await.unwrap(), None);
}
contract!(modules_stored_once, modules_are_stored_once);

async fn lease(s: &dyn Store, w: Uuid, apps: &[&str]) -> usize {
    let apps: Vec<String> = apps.iter().map(|a| a.to_string()).collect();
    let ask = LeaseAsk {
        worker: w,
        owner: None,
        apps: &apps,
        max: 10,
        trusted: false,
        spot_check: 0.0,
        batch_units: 4,
    };
    s.lease(ask, NOW).await.unwrap().len()
}

async fn module_jobs_go_to_workers_that_take_them(f: Fresh) {
    let s = f.store.as_ref();
    let app = format!("wasm:{}", "c".repeat(64));
    s.create_job(
        NewJob {
            id: Uuid::now_v7(),
            name: "module".into(),
            app: app.clone(),
            params: serde_json::json!({"args": [8]}),
            priority: 0,
            redundancy: redundancy(3, false),
            unit_timeout_ms: 60_000,
            unit_count: 2,
            initial_units: 2,
            owner: None,
        },
        NOW,
    )
    .await
    .unwrap();
    let w = worker(s, None, 20, NOW).await;
    assert_eq!(lease(s, w, &["prime-count"]).await, 0, "built-in apps only");
    let other = format!("wasm:{}", "d".repeat(64));
    assert_eq!(
        lease(s, w, &["prime-count", &other]).await,
        0,
        "another module"
    );
    assert_eq!(lease(s, w, &[&app]).await, 2, "this module, by name");
    let any = worker(s, None, 20, NOW).await;
    assert_eq!(lease(s, any, &["wasm:*"]).await, 2, "any module");
}
contract!(
    module_jobs_leased_by_app,
    module_jobs_go_to_workers_that_take_them
);

//! Submitter tokens and job owners, on every backend.

use sparecycles_coordinator::store::NewJob;
use sparecycles_protocol::Redundancy;
use uuid::Uuid;

use crate::NOW;
use crate::harness::{Fresh, redundancy};

async fn owned_job(f: &Fresh, owner: Option<Uuid>, at: i64) -> Uuid {
    let r: Redundancy = redundancy(1, false);
    f.store
        .create_job(
            NewJob {
                id: Uuid::now_v7(),
                name: "owned".into(),
                app: crate::harness::APP.into(),
                params: serde_json::json!({"start": 0, "end": 100, "unit_size": 10}),
                priority: 0,
                redundancy: r,
                unit_timeout_ms: 60_000,
                unit_count: 10,
                initial_units: 2,
                owner,
            },
            at,
        )
        .await
        .expect("create job")
        .id
}

async fn submitters_are_found_by_hash_until_revoked(f: Fresh) {
    let s = f.store.as_ref();
    let a = Uuid::now_v7();
    let b = Uuid::now_v7();
    s.create_submitter(a, "alice", "hash-a", NOW).await.unwrap();
    s.create_submitter(b, "bob", "hash-b", NOW + 1)
        .await
        .unwrap();
    assert!(
        s.create_submitter(Uuid::now_v7(), "dup", "hash-a", NOW)
            .await
            .is_err(),
        "token hashes are unique"
    );
    assert_eq!(
        s.submitter_by_token_hash("hash-a")
            .await
            .unwrap()
            .unwrap()
            .id,
        a
    );
    assert!(s.submitter_by_token_hash("nope").await.unwrap().is_none());
    let names: Vec<String> = s
        .submitters()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    let revoked = s.revoke_submitter(a, NOW + 5).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 5));
    let again = s.revoke_submitter(a, NOW + 9).await.unwrap().unwrap();
    assert_eq!(
        again.revoked_at,
        Some(NOW + 5),
        "the first revocation's time stays"
    );
    assert!(s.submitter_by_token_hash("hash-a").await.unwrap().is_none());
    assert!(
        s.revoke_submitter(Uuid::now_v7(), NOW)
            .await
            .unwrap()
            .is_none()
    );

    // Jobs keep their owner; each submitter lists its own, newest first.
    let a1 = owned_job(&f, Some(a), NOW).await;
    let b1 = owned_job(&f, Some(b), NOW + 1).await;
    let a2 = owned_job(&f, Some(a), NOW + 2).await;
    let admin = owned_job(&f, None, NOW + 3).await;
    let ids = |rows: Vec<sparecycles_coordinator::store::JobRow>| -> Vec<Uuid> {
        rows.into_iter().map(|j| j.id).collect()
    };
    assert_eq!(ids(s.jobs_owned_by(a, 10).await.unwrap()), [a2, a1]);
    assert_eq!(ids(s.jobs_owned_by(b, 10).await.unwrap()), [b1]);
    assert_eq!(ids(s.jobs_owned_by(a, 1).await.unwrap()), [a2]);
    assert_eq!(s.job(a1).await.unwrap().unwrap().owner, Some(a));
    assert_eq!(s.job(admin).await.unwrap().unwrap().owner, None);
}
contract!(submitters, submitters_are_found_by_hash_until_revoked);

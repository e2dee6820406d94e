#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::meta_time;

fn queued_state() -> SyncState {
    let mut state = SyncState {
        status: SyncStatus::Queued,
        last_sync_job: Some("job-1".into()),
        ..SyncState::default()
    };
    state
        .meta
        .insert("time_queued".into(), meta_time(Utc::now()));
    state
}

fn new_task(key: &str, row: Option<i64>, text: &str) -> NewTask {
    super::new_task(key, row, json!({ "text": text }))
}

fn new_storage(project: i64, kind: StorageKind, storage_type: &str) -> NewStorage {
    NewStorage {
        kind,
        storage_type: storage_type.into(),
        project,
        title: Some("t".into()),
        description: None,
        synchronizable: true,
        settings: Settings::default(),
    }
}

#[tokio::test]
async fn storages_need_a_project_and_list_by_id_with_filters() {
    let db = InMemory::new();
    let err = db
        .insert_storage(new_storage(99, StorageKind::Import, "s3"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Invalid pk \"99\""), "{err}");

    let p1 = db.add_project(1);
    let p2 = db.add_project(1);
    let a = db
        .insert_storage(new_storage(p1, StorageKind::Import, "s3"))
        .await
        .unwrap();
    let b = db
        .insert_storage(new_storage(p2, StorageKind::Export, "s3"))
        .await
        .unwrap();
    let c = db
        .insert_storage(new_storage(p1, StorageKind::Export, "gcs"))
        .await
        .unwrap();
    assert_eq!(a.sync, SyncState::default());
    let ids = |list: Vec<Storage>| list.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.storages(StorageFilter::default()).await.unwrap()),
        vec![a.id, b.id, c.id]
    );
    let only = StorageFilter {
        project: Some(p1),
        kind: Some(StorageKind::Export),
        storage_type: None,
    };
    assert_eq!(ids(db.storages(only).await.unwrap()), vec![c.id]);
    let by_type = StorageFilter {
        storage_type: Some("s3"),
        ..StorageFilter::default()
    };
    assert_eq!(ids(db.storages(by_type).await.unwrap()), vec![a.id, b.id]);
}

#[tokio::test]
async fn update_storage_keeps_the_sync_state_and_needs_the_storage() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let id = db.add_storage(project, StorageKind::Import, "s3");
    let stored = db.storage(id).await.unwrap().unwrap();
    let queued = queued_state();
    assert!(db
        .update_sync(id, &SyncGuard::of(&stored.sync), &queued)
        .await
        .unwrap());

    let mut changed = stored.clone();
    changed.title = Some("renamed".into());
    changed.sync = SyncState::default();
    db.update_storage(&changed).await.unwrap();
    let now = db.storage(id).await.unwrap().unwrap();
    assert_eq!(now.title.as_deref(), Some("renamed"));
    assert_eq!(now.sync, queued, "the configuration only");

    changed.id = 12345;
    let err = db.update_storage(&changed).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn update_sync_is_a_compare_and_set() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let id = db.add_storage(project, StorageKind::Import, "s3");
    let initial = SyncGuard::of(&SyncState::default());
    let queued = queued_state();
    assert!(db.update_sync(id, &initial, &queued).await.unwrap());
    assert!(
        !db.update_sync(id, &initial, &SyncState::default())
            .await
            .unwrap(),
        "the row moved on: the stale writer loses"
    );
    let wrong_job = SyncGuard {
        status: SyncStatus::Queued,
        job: Some("another".into()),
    };
    assert!(!db.update_sync(id, &wrong_job, &queued).await.unwrap());
    assert!(!db.update_sync(999, &initial, &queued).await.unwrap());
    assert_eq!(db.storage(id).await.unwrap().unwrap().sync, queued);
}

#[tokio::test]
async fn each_queued_storage_is_claimed_once_however_many_claim() {
    let db = Arc::new(InMemory::new());
    let project = db.add_project(1);
    let mut queued = Vec::new();
    for _ in 0..20 {
        let id = db.add_storage(project, StorageKind::Import, "s3");
        db.update_sync(id, &SyncGuard::of(&SyncState::default()), &queued_state())
            .await
            .unwrap();
        queued.push(id);
    }
    let idle = db.add_storage(project, StorageKind::Import, "s3");
    let now = Utc::now();
    let lease = now + chrono::Duration::seconds(30);
    let claims = (0..8).map(|_| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(storage) = db.claim_queued(&[], now, lease, None).await.unwrap() {
                assert_eq!(storage.sync.status, SyncStatus::InProgress);
                assert_eq!(storage.sync.lease_until, Some(lease));
                mine.push(storage.id);
                tokio::task::yield_now().await;
            }
            mine
        })
    });
    let mut claimed: Vec<i64> = futures::future::join_all(claims)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    claimed.sort_unstable();
    assert_eq!(
        claimed, queued,
        "every queued storage once, the idle one never"
    );
    let stored = db.storage(queued[0]).await.unwrap().unwrap();
    assert_eq!(stored.sync.meta["time_in_progress"], meta_time(now));
    assert_eq!(
        db.storage(idle).await.unwrap().unwrap().sync.status,
        SyncStatus::Initialized
    );
}

#[tokio::test]
async fn claims_skip_the_storages_they_are_told_to() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let first = db.add_storage(project, StorageKind::Import, "s3");
    let second = db.add_storage(project, StorageKind::Export, "s3");
    for id in [first, second] {
        db.update_sync(id, &SyncGuard::of(&SyncState::default()), &queued_state())
            .await
            .unwrap();
    }
    let now = Utc::now();
    let claimed = db
        .claim_queued(&[first], now, now, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, second);
    assert!(db
        .claim_queued(&[first], now, now, None)
        .await
        .unwrap()
        .is_none());
}

/// Queues `n` import storages of a new project of `organization`.
async fn queued_storages(db: &InMemory, organization: i64, n: usize) -> Vec<i64> {
    let project = db.add_project(organization);
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = db.add_storage(project, StorageKind::Import, "s3");
        db.update_sync(id, &SyncGuard::of(&SyncState::default()), &queued_state())
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_tenant_at_its_cap_waits_while_other_tenants_are_claimed() {
    let db = InMemory::new();
    // Organisation 1 queued first (lower ids): without a cap it would take
    // every claim.
    let busy = queued_storages(&db, 1, 4).await;
    let other = queued_storages(&db, 2, 2).await;
    let now = Utc::now();
    let mut claimed = Vec::new();
    while let Some(storage) = db.claim_queued(&[], now, now, Some(2)).await.unwrap() {
        claimed.push(storage.id);
    }
    // Fewest running first: 1, 2, 1, 2; then organisation 1 is at its cap.
    assert_eq!(claimed, vec![busy[0], other[0], busy[1], other[1]]);
    let storages = db
        .storages_with_status(&[SyncStatus::Queued])
        .await
        .unwrap();
    assert_eq!(
        storages.iter().map(|s| s.id).collect::<Vec<_>>(),
        busy[2..].to_vec(),
        "the capped organisation's other jobs stay queued"
    );

    // One of organisation 1's jobs ends: one more of its jobs may run.
    let running = db.storage(busy[0]).await.unwrap().unwrap();
    let mut done = running.sync.clone();
    done.status = SyncStatus::Completed;
    db.update_sync(busy[0], &SyncGuard::of(&running.sync), &done)
        .await
        .unwrap();
    let next = db
        .claim_queued(&[], now, now, Some(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, busy[2]);
    assert!(db
        .claim_queued(&[], now, now, Some(2))
        .await
        .unwrap()
        .is_none());
    // Without a cap the rest is claimed.
    let last = db.claim_queued(&[], now, now, None).await.unwrap().unwrap();
    assert_eq!(last.id, busy[3]);
}

#[tokio::test]
async fn storage_tenants_are_the_organisations_of_their_projects() {
    let db = InMemory::new();
    let a = queued_storages(&db, 7, 1).await[0];
    let b = queued_storages(&db, 9, 1).await[0];
    let tenants = db.storage_tenants(&[a, b, 12345]).await.unwrap();
    assert_eq!(tenants, HashMap::from([(a, 7), (b, 9)]));
}

#[tokio::test]
async fn create_tasks_dedupes_on_key_and_row_within_a_storage() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let storage = db.add_storage(project, StorageKind::Import, "s3");
    let other = db.add_storage(project, StorageKind::Import, "s3");
    let batch = [
        new_task("a.json", Some(0), "a0"),
        new_task("a.json", Some(1), "a1"),
        new_task("a.json", Some(1), "repeat within the batch"),
        new_task("b.jpg", None, "b"),
    ];
    assert_eq!(
        db.create_tasks(project, storage, batch.to_vec())
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        db.create_tasks(project, storage, batch.to_vec())
            .await
            .unwrap(),
        0,
        "nothing twice"
    );
    assert_eq!(
        db.create_tasks(project, other, batch[..1].to_vec())
            .await
            .unwrap(),
        1,
        "another storage links its own objects"
    );
    assert_eq!(
        db.linked_rows(storage),
        vec![
            ("a.json".into(), Some(0)),
            ("a.json".into(), Some(1)),
            ("b.jpg".into(), None)
        ]
    );
    let texts: Vec<Value> = db
        .tasks(project)
        .iter()
        .map(|t| t.data["text"].clone())
        .collect();
    assert_eq!(
        texts,
        vec![json!("a0"), json!("a1"), json!("b"), json!("a0")]
    );
    let keys = vec!["a.json".to_string(), "b.jpg".into(), "c.jpg".into()];
    let linked = db.linked_keys(storage, &keys).await.unwrap();
    assert_eq!(
        linked,
        HashMap::from([("a.json".to_string(), 2), ("b.jpg".to_string(), 1)])
    );
}

#[tokio::test]
async fn create_tasks_needs_the_storage_and_the_project() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let storage = db.add_storage(project, StorageKind::Import, "s3");
    let task = [new_task("a", None, "a")];
    let err = db
        .create_tasks(project, 999, task.to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("storage 999"), "{err}");
    let err = db
        .create_tasks(998, storage, task.to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("project 998"), "{err}");
    assert_eq!(db.task_count(), 0);
}

#[tokio::test]
async fn unfinished_objects_are_not_reported_as_linked() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let storage = db.add_storage(project, StorageKind::Import, "s3");
    db.begin_object(storage, "big.jsonl").await.unwrap();
    db.create_tasks(project, storage, vec![new_task("big.jsonl", Some(0), "x")])
        .await
        .unwrap();
    let keys = ["big.jsonl".to_string()];
    assert!(db.linked_keys(storage, &keys).await.unwrap().is_empty());
    assert_eq!(db.unfinished(storage), vec!["big.jsonl".to_string()]);
    db.finish_object(storage, "big.jsonl").await.unwrap();
    assert_eq!(
        db.linked_keys(storage, &keys).await.unwrap()["big.jsonl"],
        1
    );
    assert!(db.unfinished(storage).is_empty());
}

#[tokio::test]
async fn a_failing_batch_writes_nothing_and_later_batches_work() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let storage = db.add_storage(project, StorageKind::Import, "s3");
    db.fail_create_tasks_call(Some(2));
    db.create_tasks(project, storage, vec![new_task("a", None, "a")])
        .await
        .unwrap();
    let err = db
        .create_tasks(project, storage, vec![new_task("b", None, "b")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert_eq!(db.linked_rows(storage), vec![("a".into(), None)]);
    db.create_tasks(project, storage, vec![new_task("b", None, "b")])
        .await
        .unwrap();
    assert_eq!(db.create_tasks_calls(), 3);
    assert_eq!(db.task_count(), 2);
}

#[tokio::test]
async fn deleting_a_storage_deletes_its_links_not_its_tasks() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let storage = db.add_storage(project, StorageKind::Import, "s3");
    db.create_tasks(project, storage, vec![new_task("a", None, "a")])
        .await
        .unwrap();
    db.begin_object(storage, "big").await.unwrap();
    assert!(db.delete_storage(storage).await.unwrap());
    assert!(!db.delete_storage(storage).await.unwrap());
    assert!(db.links(storage).is_empty());
    assert!(db.unfinished(storage).is_empty());
    assert_eq!(db.task_count(), 1);
    assert!(db
        .linked_keys(storage, &["a".to_string()])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn annotations_are_exported_by_project_in_pages() {
    let db = InMemory::new();
    let project = db.add_project(1);
    let other = db.add_project(1);
    let storage = db.add_storage(project, StorageKind::Import, "s3");
    let elsewhere = db.add_storage(other, StorageKind::Import, "s3");
    db.create_tasks(project, storage, vec![new_task("a", None, "a")])
        .await
        .unwrap();
    db.create_tasks(other, elsewhere, vec![new_task("b", None, "b")])
        .await
        .unwrap();
    let task = db.tasks(project)[0].id;
    let foreign = db.tasks(other)[0].id;
    let ids: Vec<i64> = (0..5)
        .map(|i| db.add_annotation(task, json!([i]), Some(7)).unwrap())
        .collect();
    db.add_annotation(foreign, json!([]), None).unwrap();
    assert!(db.add_annotation(12345, json!([]), None).is_err());

    assert_eq!(db.count_annotations(project).await.unwrap(), 5);
    let page = db.annotations_for_export(project, 0, 2).await.unwrap();
    assert_eq!(page.iter().map(|a| a.id).collect::<Vec<_>>(), ids[..2]);
    let rest = db
        .annotations_for_export(project, ids[1], 10)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|a| a.id).collect::<Vec<_>>(), ids[2..]);
    let one = db.annotation_for_export(ids[3]).await.unwrap().unwrap();
    assert_eq!(one.payload["result"], json!([3]));
    assert_eq!(one.payload["task"]["id"], task);
    assert_eq!(one.payload["task"]["data"]["text"], "a");
    assert_eq!(one.payload["completed_by"], 7);
    assert!(db.delete_annotation(ids[3]));
    assert!(db.annotation_for_export(ids[3]).await.unwrap().is_none());
    assert_eq!(db.count_annotations(project).await.unwrap(), 4);
}

#[tokio::test]
async fn tokens_and_projects_decide_who_sees_what() {
    let db = InMemory::new();
    let mine = db.add_project(10);
    let theirs = db.add_project(20);
    let caller = db.add_user(10, "secret-token");
    db.add_user(20, "other-token");
    assert_eq!(
        db.authenticate("secret-token").await.unwrap(),
        Some(caller.clone())
    );
    for wrong in ["", "secret-tokeN", "secret-token2", "secret"] {
        assert_eq!(db.authenticate(wrong).await.unwrap(), None, "{wrong:?}");
    }
    assert!(db.project_visible(&caller, mine).await.unwrap());
    assert!(!db.project_visible(&caller, theirs).await.unwrap());
    assert!(!db.project_visible(&caller, 999).await.unwrap());
}

#[test]
fn constant_time_eq_compares_whole_slices() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(constant_time_eq(b"", b""));
}

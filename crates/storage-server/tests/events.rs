//! Event-driven sync through the running server: a watched local folder
//! (inotify) and providers' pushes become task changes without a sync
//! request, exactly once.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{storage_id, Server};

/// How long a change may take to show up: the debounce plus a batch, with
/// room for a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// The project's task count.
async fn task_count(server: &Server, project: i64) -> u64 {
    let (_, page) = server
        .get(&format!("/api/tasks?project={project}&page_size=1"))
        .await;
    page["total"].as_u64().unwrap()
}

/// Polls until the project holds `expected` tasks; returns how long it took.
async fn wait_for_tasks(server: &Server, project: i64, expected: u64) -> Duration {
    let started = Instant::now();
    loop {
        let count = task_count(server, project).await;
        if count == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the project has {count} tasks, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A storage of `folder` (created empty) with `watch` on, Files mode,
/// following deletions; returns its path once its first (reconciling)
/// sync has finished.
async fn watched_storage(server: &Server, project: i64, folder: &str, extra: Value) -> String {
    std::fs::create_dir_all(server.root.join(folder)).unwrap();
    let mut body = json!({
        "project": project,
        "path": server.path(folder),
        "use_blob_urls": true,
        "recursive_scan": true,
        "watch": true,
        "on_object_deleted": "delete",
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let path = server
        .create_storage("/api/storages/localfiles", body)
        .await;
    // The watch starts within a poll interval and queues a sync for what
    // it could not see.
    let started = Instant::now();
    loop {
        let (_, storage) = server.get(&path).await;
        if storage["meta"]["events"].is_object() && storage["status"] == "completed" {
            return path;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the watch did not start: {storage}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write(server: &Server, relative: &str) {
    let path = server.root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"x").unwrap();
}

#[tokio::test]
async fn a_watched_folder_follows_files_created_moved_in_and_deleted() {
    let server = Server::start().await;
    let project = server.project().await;
    let path = watched_storage(&server, project, "watched", json!({"deletion_guard": 30})).await;
    let syncs_before = server.get(&path).await.1["meta"]["attempts"].clone();

    for i in 0..5 {
        write(&server, &format!("watched/new{i}.jpg"));
    }
    let created = wait_for_tasks(&server, project, 5).await;

    // A folder written elsewhere and moved in raises one event, for the
    // folder; its files are found by walking it.
    for i in 0..3 {
        write(&server, &format!("staging/batch/m{i}.jpg"));
    }
    std::fs::rename(
        server.root.join("staging/batch"),
        server.root.join("watched/batch"),
    )
    .unwrap();
    wait_for_tasks(&server, project, 8).await;

    std::fs::remove_file(server.root.join("watched/new0.jpg")).unwrap();
    std::fs::remove_file(server.root.join("watched/batch/m1.jpg")).unwrap();
    wait_for_tasks(&server, project, 6).await;

    // A file outside the storage's filter is ignored, not imported. The
    // guard is tightened below one file in seven for the last step, so that
    // however the watch batches its removals, the first batch is refused.
    let (status, _) = server
        .patch(
            &path,
            json!({"regex_filter": ".*\\.jpg", "deletion_guard": 10}),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    write(&server, "watched/notes.txt");
    write(&server, "watched/last.jpg");
    wait_for_tasks(&server, project, 7).await;

    // The ignored `.txt` event may be counted just after the task lands.
    let started = std::time::Instant::now();
    let storage = loop {
        let (_, storage) = server.get(&path).await;
        let received = storage["meta"]["events"]["received"].as_u64().unwrap_or(0);
        if received >= 12 || started.elapsed() > Duration::from_secs(10) {
            break storage;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = &storage["meta"]["events"];
    assert!(events["received"].as_u64().unwrap() >= 12, "{storage}");
    assert!(events["applied"].as_u64().unwrap() >= 11, "{storage}");
    assert!(events["ignored"].as_u64().unwrap() >= 1, "{storage}");
    assert_eq!(events["failed"], 0, "{storage}");
    assert_eq!(events["tasks_created"], 9, "{storage}");
    assert_eq!(events["tasks_deleted"], 2, "{storage}");
    assert!(events["last_event_at"].is_string(), "{storage}");
    // No sync ran for any of it (the settings change restarted the watch,
    // whose start reconciles once).
    let attempts = storage["meta"]["attempts"].as_u64().unwrap();
    assert!(attempts <= syncs_before.as_u64().unwrap() + 1, "{storage}");

    let (_, tasks) = server
        .get(&format!("/api/tasks?project={project}&page_size=100"))
        .await;
    let mut urls: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| {
            task["data"]["image"]
                .as_str()
                .or(task["data"]["$undefined$"].as_str())
                .unwrap_or("")
        })
        .collect();
    urls.sort_unstable();
    assert_eq!(urls.len(), 7, "{tasks}");
    assert!(urls.iter().all(|url| url.ends_with(".jpg")), "{urls:?}");

    // Removing more than the deletion guard allows waits for a confirmed
    // sync, as a sync's listing would (a debounce window may split the five
    // removals; each part is over the guard).
    for name in ["new1", "new2", "new3", "new4", "last"] {
        std::fs::remove_file(server.root.join(format!("watched/{name}.jpg"))).unwrap();
    }
    let started = Instant::now();
    let storage = loop {
        let (_, storage) = server.get(&path).await;
        let error = storage["meta"]["events"]["last_error"]
            .as_str()
            .unwrap_or("");
        if error.starts_with("Deletion guard") {
            break storage;
        }
        assert!(started.elapsed() < PATIENCE, "{storage}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(task_count(&server, project).await, 7, "{storage}");
    server
        .post(&format!("{path}/sync"), json!({"confirm_deletions": true}))
        .await;
    server.wait_synced(&path).await;
    assert_eq!(task_count(&server, project).await, 2);

    let (_, _, metrics) = server
        .call_text(reqwest::Method::GET, "/metrics", None)
        .await;
    let applied = metrics
        .lines()
        .find(|line| {
            line.starts_with("storage_events_total")
                && line.contains("outcome=\"applied\"")
                && line.contains("storage_type=\"localfiles\"")
        })
        .unwrap_or_else(|| panic!("no applied events counted:\n{metrics}"));
    let counted: f64 = applied.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= 11.0, "{applied}");
    eprintln!("5 files became tasks in {created:?}");
    assert_eq!(storage_id(&path), storage["id"].as_i64().unwrap());
}

#[tokio::test]
async fn ten_thousand_files_created_at_once_become_exactly_ten_thousand_tasks() {
    const FILES: u64 = 10_000;
    let server = Server::start().await;
    let project = server.project().await;
    let path = watched_storage(&server, project, "burst", json!({})).await;
    let folder = server.root.join("burst");
    let started = Instant::now();
    for i in 0..FILES {
        std::fs::write(folder.join(format!("f{i:05}.jpg")), b"x").unwrap();
    }
    let written = started.elapsed();
    wait_for_tasks(&server, project, FILES).await;
    let all = started.elapsed();
    // Settled: late duplicates would show up here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(task_count(&server, project).await, FILES);
    let (_, storage) = server.get(&path).await;
    assert!(
        storage["meta"]["events"]["received"].as_u64().unwrap() > 0,
        "{storage}"
    );
    eprintln!("{FILES} files written in {written:?}, all tasks after {all:?}");
}

#[tokio::test]
async fn a_watched_folder_deleted_and_recreated_is_watched_again() {
    let server = Server::start().await;
    let project = server.project().await;
    let path = watched_storage(
        &server,
        project,
        "again",
        json!({"on_object_deleted": "keep"}),
    )
    .await;
    write(&server, "again/a.jpg");
    wait_for_tasks(&server, project, 1).await;

    std::fs::remove_dir_all(server.root.join("again")).unwrap();
    std::fs::create_dir_all(server.root.join("again")).unwrap();
    // Let the watch notice the new folder before writing into it; a file
    // written earlier is still found by the reconciling sync it queues.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    write(&server, "again/b.jpg");
    write(&server, "again/c.jpg");
    wait_for_tasks(&server, project, 3).await;
    let (_, storage) = server.get(&path).await;
    assert_ne!(storage["status"], "failed", "{storage}");
}

#[tokio::test]
async fn a_storage_without_watch_ignores_changes() {
    let server = Server::start().await;
    let project = server.project().await;
    std::fs::create_dir_all(server.root.join("still")).unwrap();
    let path = server.local_storage(project, "still", true).await;
    write(&server, "still/a.jpg");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(task_count(&server, project).await, 0);
    let (_, storage) = server.get(&path).await;
    assert_eq!(storage["watch"], false, "{storage}");
    assert!(storage["meta"].get("events").is_none(), "{storage}");
}

/// Events wait while the storage's sync is queued or running (here one
/// another instance would run: the row says `in_progress`), and are applied
/// once it has ended; a push is answered 503 meanwhile.
#[tokio::test]
async fn events_wait_behind_a_running_sync() {
    use storage_core::persist::{StorageRepository, SyncGuard};
    use storage_core::{SyncState, SyncStatus};

    let server = Server::start().await;
    let project = server.project().await;
    let path = watched_storage(&server, project, "busy", json!({})).await;
    let id = storage_id(&path);
    let stored = server.db.storage(id).await.unwrap().unwrap();
    let running = SyncState {
        status: SyncStatus::InProgress,
        last_sync_job: Some("another-instance".into()),
        lease_until: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..stored.sync.clone()
    };
    assert!(server
        .db
        .update_sync(id, &SyncGuard::of(&stored.sync), &running)
        .await
        .unwrap());

    write(&server, "busy/waiting.jpg");
    let batch = storage_core::events::EventBatch {
        events: vec![storage_core::events::ObjectEvent::written(
            server.path("busy/waiting.jpg"),
        )],
        ..Default::default()
    };
    assert!(matches!(
        server.sync.apply_events(id, &batch).await.unwrap(),
        storage_core::jobs::EventsApplied::Busy
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        task_count(&server, project).await,
        0,
        "applied during the sync"
    );

    let done = SyncState {
        status: SyncStatus::Completed,
        lease_until: None,
        ..running.clone()
    };
    assert!(server
        .db
        .update_sync(id, &SyncGuard::of(&running), &done)
        .await
        .unwrap());
    wait_for_tasks(&server, project, 1).await;
}

/// A symlink in a watched folder that leads out of the document root is
/// never read or imported, as in a sync; the files after it still are.
#[tokio::test]
async fn a_symlink_out_of_the_document_root_is_not_imported() {
    let server = Server::start().await;
    let project = server.project().await;
    let path = watched_storage(&server, project, "linked", json!({})).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.jpg"), b"not yours").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.jpg"),
        server.root.join("linked/secret.jpg"),
    )
    .unwrap();
    write(&server, "linked/after.jpg");
    wait_for_tasks(&server, project, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, tasks) = server
        .get(&format!("/api/tasks?project={project}&page_size=10"))
        .await;
    assert_eq!(tasks["total"], 1, "{tasks}");
    assert!(!tasks.to_string().contains("secret"), "{tasks}");
    let (_, storage) = server.get(&path).await;
    assert!(
        storage["meta"]["events"]["received"].as_u64().unwrap() >= 2,
        "{storage}"
    );
}

//! Sharded listing (`shard_listing`) on a real SQLite file, over real HTTP:
//! a local folder's sync split by its subfolders among four workers gives
//! exactly one task per file, counts that are the sum of its shards, the
//! same confinement to the document root as one listing, and per-file
//! problems reported from whichever shard met them. Two instances on
//! PostgreSQL sharing one storage, and one of them killed, are in
//! `scale_out.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::RunnerConfig;
use support::{fast_runner, Server};

fn four_workers() -> RunnerConfig {
    RunnerConfig {
        workers: 4,
        ..fast_runner()
    }
}

async fn server() -> Server {
    Server::start_in(tempfile::tempdir().unwrap(), four_workers()).await
}

/// Every task's file, paged through the API.
async fn task_files(server: &Server, project: i64) -> Vec<String> {
    let (status, body) = server
        .get(&format!("/api/tasks?project={project}&page_size=10000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["storage_filename"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_sync_creates_each_task_once_and_counts_the_sum_of_its_shards() {
    const FOLDERS: usize = 8;
    const PER_FOLDER: usize = 30;
    let server = server().await;
    let mut files = vec![
        ("photos/a.jpg".to_string(), "x"),
        ("photos/b.jpg".to_string(), "x"),
        ("photos/c.jpg".to_string(), "x"),
        ("photos/f03/deep/d1.jpg".to_string(), "x"),
        ("photos/f03/deep/d2.jpg".to_string(), "x"),
    ];
    for folder in 0..FOLDERS {
        for file in 0..PER_FOLDER {
            files.push((format!("photos/f{folder:02}/img_{file:03}.jpg"), "x"));
        }
    }
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    server.write_files(&borrowed);
    let expected = files.len();
    // A folder link out of the document root, and one back into the
    // storage's own folder: neither is listed, as in one listing.
    let outside = server.root.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.jpg"), b"x").unwrap();
    std::os::unix::fs::symlink(&outside, server.root.join("photos/escape")).unwrap();
    std::os::unix::fs::symlink(server.root.join("photos"), server.root.join("photos/again"))
        .unwrap();

    let project = server.project().await;
    let storage = server
        .create_storage(
            "/api/storages/localfiles",
            json!({"project": project, "path": server.path("photos"), "use_blob_urls": true,
                   "recursive_scan": true, "shard_listing": true}),
        )
        .await;
    let synced = server.sync_and_wait(&storage).await;
    assert_eq!(synced["status"], "completed", "{synced}");
    assert_eq!(synced["shard_listing"], true, "{synced}");
    assert_eq!(synced["last_sync_count"], expected, "{synced}");
    let meta = &synced["meta"];
    // The objects directly under the folder, and one part per subfolder
    // (the two links included: their parts list nothing).
    assert_eq!(meta["shards"], 1 + FOLDERS + 2, "{synced}");
    assert_eq!(meta["objects_listed"], expected, "{synced}");
    assert_eq!(meta["tasks_existed"], 0, "{synced}");

    let listed = task_files(&server, project).await;
    let distinct: HashSet<&String> = listed.iter().collect();
    assert_eq!(
        (listed.len(), distinct.len()),
        (expected, expected),
        "one task per file"
    );
    for (path, _) in &files {
        assert!(
            distinct.contains(&server.path(path)),
            "no task for {path}: {listed:?}"
        );
    }

    let again = server.sync_and_wait(&storage).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(again["meta"]["tasks_existed"], expected, "{again}");
    assert_eq!(task_files(&server, project).await.len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_task_file_in_one_shard_is_reported_and_the_others_import() {
    let server = server().await;
    server.write_files(&[
        ("tasks/top.json", r#"{"data": {"image": "top.jpg"}}"#),
        (
            "tasks/a/1.json",
            r#"[{"image": "a1.jpg"}, {"image": "a2.jpg"}]"#,
        ),
        ("tasks/b/1.json", r#"{"data": {"image": "b1.jpg"}}"#),
        ("tasks/b/broken.json", r#"{"data": {"image": "#),
        ("tasks/c/d/1.json", r#"{"image": "cd1.jpg"}"#),
    ]);
    let project = server.project().await;
    let storage = server
        .create_storage(
            "/api/storages/localfiles",
            json!({"project": project, "path": server.path("tasks"), "use_blob_urls": false,
                   "recursive_scan": true, "shard_listing": true}),
        )
        .await;
    let synced = server.sync_and_wait(&storage).await;
    assert_eq!(synced["status"], "completed_with_errors", "{synced}");
    assert_eq!(synced["last_sync_count"], 5, "{synced}");
    assert_eq!(synced["meta"]["shards"], 4, "{synced}");
    assert_eq!(synced["meta"]["files_failed"], 1, "{synced}");
    let traceback = synced["traceback"].as_str().unwrap_or_default();
    assert!(traceback.contains("broken.json"), "{synced}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_listing_needs_recursive_scan_and_keeps_deleted_objects_tasks() {
    let server = server().await;
    server.write_files(&[("flat/a.jpg", "x")]);
    let project = server.project().await;
    let base = json!({"project": project, "path": server.path("flat"), "use_blob_urls": true,
                      "shard_listing": true});
    let (status, body) = server.post("/api/storages/localfiles", base.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["validation_errors"]["shard_listing"][0]
            .as_str()
            .is_some_and(|m| m.contains("recursive_scan")),
        "{body}"
    );

    let mut deleting = base.clone();
    deleting["recursive_scan"] = json!(true);
    deleting["on_object_deleted"] = json!("delete");
    let (status, body) = server.post("/api/storages/localfiles", deleting).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["validation_errors"]["shard_listing"][0]
            .as_str()
            .is_some_and(|m| m.contains("on_object_deleted")),
        "{body}"
    );

    // Saved without sharding, it cannot be switched on beside deletions.
    let mut plain = base;
    plain["shard_listing"] = json!(false);
    plain["recursive_scan"] = json!(true);
    plain["on_object_deleted"] = json!("mark");
    let storage = server
        .create_storage("/api/storages/localfiles", plain)
        .await;
    let (status, body) = server.patch(&storage, json!({"shard_listing": true})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, unchanged): (StatusCode, Value) = server.get(&storage).await;
    assert_eq!(unchanged["shard_listing"], false, "{unchanged}");
}

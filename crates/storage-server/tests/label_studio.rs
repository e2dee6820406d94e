//! This server on the database of a real, unchanged Label Studio 1.23.2
//! (`--label-studio-database-url`, `--label-studio-url`): storages made in
//! Label Studio are synced by this server into Label Studio's own tables,
//! and Label Studio's API, Data Manager and its own sync see the result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::label_studio::{LabelStudio, LS_TOKEN};
use support::process::{command, Process};
use support::Api;

/// This server on `ls`'s database, authenticating through `ls`.
fn our_server(ls: &LabelStudio, dir: &Path) -> (Process, Api) {
    let mut server = command(&dir.join("ours"));
    server
        .arg("--label-studio-database-url")
        .arg(&ls.database_url)
        .arg("--label-studio-url")
        .arg(&ls.base)
        .arg("--local-files-document-root")
        .arg(&ls.files);
    let process = Process::start(server, dir, "ours");
    let api = Api::new(process.base.clone(), LS_TOKEN);
    (process, api)
}

fn write_files(root: &Path, folder: &str, count: usize, contents: impl Fn(usize) -> String) {
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..count {
        let name = if folder == "images" {
            format!("img_{i:06}.jpg")
        } else {
            format!("task_{i:06}.json")
        };
        std::fs::write(dir.join(name), contents(i)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_through_this_server_writes_tasks_label_studio_lists_and_its_own_sync_finds_linked()
{
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    syncs_files_and_tasks_modes_into_label_studio(&ls, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_on_label_studio_s_postgresql_database() {
    let dir = tempfile::tempdir().unwrap();
    let database = storage_testing::postgres::fresh_database("label_studio").await;
    let ls = LabelStudio::start_on_postgres(dir.path(), &database).await;
    syncs_files_and_tasks_modes_into_label_studio(&ls, dir.path()).await;
    drop(ls);
    storage_testing::postgres::drop_database(&database).await;
}

/// Files mode (100 images) and Tasks mode (50 task files with a
/// prediction each), each storage created in Label Studio and synced by
/// this server: what Label Studio then shows and does.
async fn syncs_files_and_tasks_modes_into_label_studio(ls: &LabelStudio, dir: &Path) {
    write_files(&ls.files, "images", 100, |_| "x".into());
    write_files(&ls.files, "tasks", 50, |i| {
        json!({
            "data": {"image": format!("https://example.com/{i}.jpg"), "n": i},
            "predictions": [{"model_version": "m1", "score": 0.5,
                "result": [{"from_name": "c", "to_name": "image", "type": "choices",
                            "value": {"choices": ["a"]}}]}],
        })
        .to_string()
    });
    let files_project = ls.project("files mode").await;
    let files_storage = ls.local_storage(files_project, "images", true).await;
    let tasks_project = ls.project("tasks mode").await;
    let tasks_storage = ls.local_storage(tasks_project, "tasks", false).await;
    let (server, ours) = our_server(ls, dir);

    // Label Studio's token is checked by Label Studio.
    let mut stranger = ours.clone();
    stranger.token = "not-a-label-studio-token".into();
    let (status, body) = stranger
        .post(
            &format!("/api/storages/localfiles/{files_storage}/sync"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    for (project, storage, expected) in [
        (files_project, files_storage, 100),
        (tasks_project, tasks_storage, 50),
    ] {
        let path = format!("/api/storages/localfiles/{storage}");
        let answer = ours.ok(Method::POST, &format!("{path}/sync"), None).await;
        assert_eq!(
            answer["id"], storage,
            "Label Studio's id on the wire: {answer}"
        );
        assert_eq!(answer["project"], project, "{answer}");

        let synced = ls.wait_synced(&path).await;
        assert_eq!(
            synced["status"],
            "completed",
            "{synced}\n{}",
            server.log_text()
        );
        assert_eq!(synced["last_sync_count"], expected, "{synced}");
        assert!(
            synced["meta"]["time_in_progress"].is_string(),
            "Label Studio's meta keys: {synced}"
        );
        let tasks = ls.tasks(project).await;
        assert_eq!(
            tasks.len(),
            expected as usize,
            "Label Studio lists every task"
        );
        let mut inner: Vec<i64> = tasks
            .iter()
            .map(|t| t["inner_id"].as_i64().unwrap())
            .collect();
        inner.sort_unstable();
        assert_eq!(
            inner,
            (1..=expected).collect::<Vec<_>>(),
            "inner ids continue"
        );

        // Label Studio's own sync, bypassing this server, finds every
        // object linked and creates nothing.
        let again = ls.api.ok(Method::POST, &format!("{path}/sync"), None).await;
        let again = if again["status"] == "completed" {
            again
        } else {
            ls.wait_synced(&path).await
        };
        assert_eq!(again["status"], "completed", "{again}");
        assert_eq!(again["last_sync_count"], 0, "{again}");
        assert_eq!(ls.tasks(project).await.len(), expected as usize);
    }

    // Files mode: the task data Label Studio resolves to its own local
    // files URL, as for the tasks of its own sync.
    let tasks = ls.tasks(files_project).await;
    let image = tasks[0]["data"]["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with("/data/local-files/?d="),
        "Label Studio resolves the task's file: {}",
        tasks[0]
    );
    // Tasks mode: data unwrapped from `data`, the prediction counted.
    let tasks = ls.tasks(tasks_project).await;
    let first = tasks
        .iter()
        .find(|t| t["data"]["n"] == 0)
        .expect("the first file's task");
    assert_eq!(
        first["data"]["image"], "https://example.com/0.jpg",
        "{first}"
    );
    assert_eq!(first["total_predictions"], 1, "{first}");
    let predictions = ls
        .api
        .ok(
            Method::GET,
            &format!("/api/predictions?task={}", first["id"]),
            None,
        )
        .await;
    let prediction: &Value = &predictions[0];
    assert_eq!(prediction["model_version"], "m1", "{predictions}");
    assert_eq!(prediction["result"][0]["value"]["choices"][0], "a");
}

/// `(tasks, distinct inner ids, smallest, largest)` of `project`, read
/// from Label Studio's SQLite file.
async fn inner_ids(ls: &LabelStudio, project: i64) -> (i64, i64, i64, i64) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&ls.database_url).await.unwrap();
    let row: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT inner_id), COALESCE(MIN(inner_id), 0), \
         COALESCE(MAX(inner_id), 0) FROM task WHERE project_id = $1",
    )
    .bind(project)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    row
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_midway_is_not_left_in_progress_and_ends_exact_after_a_restart() {
    // Enough that the sync runs for seconds, so the kill lands mid-way.
    const FILES: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "images", FILES as usize, |_| "x".into());
    let project = ls.project("killed").await;
    let storage = ls.local_storage(project, "images", true).await;
    let path = format!("/api/storages/localfiles/{storage}");

    let (mut first, ours) = our_server(&ls, dir.path());
    ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    // Killed once Label Studio shows the sync running with tasks written.
    let started = std::time::Instant::now();
    loop {
        let shown = ls.api.ok(Method::GET, &path, None).await;
        if shown["status"] == "in_progress" && shown["last_sync_count"].as_i64() > Some(0) {
            break;
        }
        assert_ne!(shown["status"], "completed", "the sync ended before the kill: {shown}");
        assert!(started.elapsed().as_secs() < 120, "no progress shown: {shown}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.kill();
    let (written, ..) = inner_ids(&ls, project).await;
    assert!(written < FILES, "killed midway: {written} tasks written");

    // The next start takes the dead job over and finishes it exactly.
    let (second, _) = our_server(&ls, dir.path());
    let synced = ls.wait_synced(&path).await;
    assert_eq!(synced["status"], "completed", "{synced}\n{}", second.log_text());
    assert_eq!(synced["last_sync_count"], FILES, "{synced}");
    assert_eq!(
        inner_ids(&ls, project).await,
        (FILES, FILES, 1, FILES),
        "one task per file, inner ids 1..{FILES}"
    );
}

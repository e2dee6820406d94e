//! Scale-out: two processes of the `storage-server` binary on one PostgreSQL
//! database (`scripts/postgres.sh start`), driven over real HTTP through
//! Label Studio's REST API.
//!
//! - Twenty storages synced at once are shared by both instances: every job
//!   is started exactly once, by one of them, and ends `completed` with one
//!   task per file.
//! - An instance killed (SIGKILL) in the middle of a sync leaves its job
//!   `in_progress` under a lease it no longer renews; the other instance
//!   takes the job over when the lease expires and finishes it with exactly
//!   one task per file.
//! - One storage split into shards (`shard_listing`) is synced by both
//!   instances at once; killing one mid-sync leaves its job and shards to
//!   the other, with exactly one task per file and exact counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use support::process::{self, Process};
use support::receiver::{Received, Receiver};
use support::Api;

const TOKEN: &str = "scale-out-token-0123456789";

/// How long a test waits for a state it expects before it fails (a bound
/// against hanging, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(240);

/// One server process and its API.
struct Instance {
    process: Process,
    api: Api,
}

impl std::ops::Deref for Instance {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Instance {
    /// Starts an instance on `database` with the document root `root`, and
    /// waits until it listens.
    fn start(name: &'static str, dir: &Path, database: &str, root: &Path, extra: &[&str]) -> Self {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let mut command = process::command(&data);
        command
            .args(["--log-json", "true", "--local-files-document-root"])
            .arg(root)
            .args(["--database-url", database])
            .args(extra)
            .env("STORAGE_API_TOKEN", TOKEN)
            .env("RUST_LOG", "info");
        let process = Process::start(command, dir, name);
        let api = Api::new(process.base.clone(), TOKEN);
        Self { process, api }
    }

    async fn storage(&self, id: i64) -> Value {
        self.ok(Method::GET, &format!("/api/storages/localfiles/{id}"), None)
            .await
    }

    /// Ids of the storages whose sync this instance started, one entry per
    /// start, from its JSON log lines ("sync started", in the `sync` span).
    fn started_syncs(&self) -> Vec<i64> {
        let log = std::fs::read_to_string(&self.process.log).unwrap();
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["fields"]["message"] == "sync started")
            .map(|line| {
                let span = if line["span"]["storage"].is_i64() {
                    line["span"].clone()
                } else {
                    line["spans"]
                        .as_array()
                        .and_then(|spans| spans.iter().find(|s| s["storage"].is_i64()))
                        .cloned()
                        .unwrap_or_else(|| {
                            panic!("no storage id on a \"sync started\" line: {line}")
                        })
                };
                span["storage"].as_i64().unwrap()
            })
            .collect()
    }

    /// `(storage, job)` of every scheduled sync this instance queued, from
    /// its JSON log lines ("scheduled sync queued").
    fn scheduled_jobs(&self) -> Vec<(i64, String)> {
        self.log_lines("scheduled sync queued")
            .map(|line| {
                let fields = &line["fields"];
                (
                    fields["storage"].as_i64().unwrap(),
                    fields["job"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The job id of every sync this instance started.
    fn started_jobs(&self) -> Vec<String> {
        self.log_lines("sync started")
            .map(|line| {
                let spans = line["spans"].as_array().cloned().unwrap_or_default();
                spans
                    .iter()
                    .chain(std::iter::once(&line["span"]))
                    .find_map(|span| span["job"].as_str())
                    .unwrap_or_else(|| panic!("no job id on a \"sync started\" line: {line}"))
                    .to_string()
            })
            .collect()
    }

    fn log_lines(&self, message: &'static str) -> impl Iterator<Item = Value> {
        let log = std::fs::read_to_string(&self.process.log).unwrap();
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(move |line| line["fields"]["message"] == message)
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// SIGKILL: no shutdown, no last progress write, connections dropped.
    fn kill(&mut self) {
        self.process.kill();
    }
}

/// Writes `count` one-byte `.jpg` files into `root/folder`.
fn write_files(root: &Path, folder: &str, count: usize) -> PathBuf {
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..count {
        std::fs::write(dir.join(format!("img_{i:06}.jpg")), b"x").unwrap();
    }
    dir
}

async fn create_project(instance: &Instance) -> i64 {
    let body = json!({"title": "scale-out", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"});
    instance.ok(Method::POST, "/api/projects", Some(body)).await["id"]
        .as_i64()
        .unwrap()
}

async fn create_storage(instance: &Instance, project: i64, folder: &Path) -> i64 {
    create_storage_with(instance, project, folder, json!({})).await
}

async fn create_storage_with(
    instance: &Instance,
    project: i64,
    folder: &Path,
    extra: Value,
) -> i64 {
    let mut body = json!({"project": project, "path": folder, "use_blob_urls": true});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    instance
        .ok(Method::POST, "/api/storages/localfiles", Some(body))
        .await["id"]
        .as_i64()
        .unwrap()
}

async fn request_sync(instance: &Instance, storage: i64) {
    instance
        .sync(&format!("/api/storages/localfiles/{storage}"))
        .await;
}

/// The storage once its sync has ended (any final status).
async fn wait_finished(instance: &Instance, storage: i64) -> Value {
    let path = format!("/api/storages/localfiles/{storage}");
    instance
        .wait_synced_within(&path, PATIENCE, String::new)
        .await
}

/// Every task of the project, paged through the API: (storage file name
/// of each task, inner ids).
async fn all_tasks(instance: &Instance, project: i64) -> (Vec<String>, Vec<i64>) {
    const PAGE: usize = 10_000;
    let (mut files, mut inner) = (Vec::new(), Vec::new());
    for page in 1.. {
        let body = instance
            .ok(
                Method::GET,
                &format!("/api/tasks?project={project}&page={page}&page_size={PAGE}"),
                None,
            )
            .await;
        let tasks = body["tasks"].as_array().unwrap();
        for task in tasks {
            files.push(
                task["storage_filename"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no file: {task}"))
                    .to_string(),
            );
            inner.push(task["inner_id"].as_i64().unwrap());
        }
        // The page after the last is Label Studio's 404 "Invalid page.".
        if tasks.len() < PAGE || files.len() as u64 >= body["total"].as_u64().unwrap() {
            break;
        }
    }
    (files, inner)
}

/// The keys of the storage's links and the inner ids of the project's
/// tasks, read in the database itself (paging 100,000 tasks through a debug
/// build takes minutes).
async fn links_and_inner_ids(
    db: &sqlx::PgPool,
    storage: i64,
    project: i64,
) -> (Vec<String>, Vec<i64>) {
    let files = sqlx::query_scalar("SELECT key FROM storage_links WHERE storage_id = $1")
        .bind(storage)
        .fetch_all(db)
        .await
        .unwrap();
    let inner = sqlx::query_scalar("SELECT inner_id FROM tasks WHERE project_id = $1")
        .bind(project)
        .fetch_all(db)
        .await
        .unwrap();
    (files, inner)
}

/// Asserts that the tasks are exactly one per file: `expected` tasks, no
/// file twice, inner ids 1..=expected.
fn assert_one_task_per_file(files: &[String], inner: &[i64], expected: usize) {
    assert_eq!(files.len(), expected, "task count");
    let distinct: HashSet<&String> = files.iter().collect();
    assert_eq!(distinct.len(), expected, "a file has more than one task");
    let mut inner = inner.to_vec();
    inner.sort_unstable();
    assert_eq!(
        inner,
        (1..=expected as i64).collect::<Vec<_>>(),
        "inner ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_storages_sync_concurrently_across_two_instances() {
    const STORAGES: usize = 20;
    const FILES: usize = 500;
    let database = storage_testing::postgres::fresh_database("scale_out_twenty").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("files");
    let folders: Vec<PathBuf> = (0..STORAGES)
        .map(|n| write_files(&root, &format!("s{n:02}"), FILES))
        .collect();

    // Both start at once (four sync workers each, the default): the schema
    // and the admin user are still set up once.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Instance::start("a", dir.path(), &database, &root, &[]));
        let b = scope.spawn(|| Instance::start("b", dir.path(), &database, &root, &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let instances = [&a, &b];

    // One project, so the instances also contend for its task numbering.
    let project = create_project(&a).await;
    let mut storages = Vec::new();
    for (n, folder) in folders.iter().enumerate() {
        storages.push(create_storage(instances[n % 2], project, folder).await);
    }
    // Requests alternate between the instances; either may run any job.
    for (n, storage) in storages.iter().enumerate() {
        request_sync(instances[n % 2], *storage).await;
    }
    for (n, storage) in storages.iter().enumerate() {
        let state = wait_finished(instances[(n + 1) % 2], *storage).await;
        assert_eq!(state["status"], "completed", "{state}");
        assert_eq!(state["last_sync_count"], FILES, "{state}");
        assert_eq!(state["meta"]["tasks_existed"], 0, "{state}");
    }

    let (files, inner) = all_tasks(&b, project).await;
    assert_one_task_per_file(&files, &inner, STORAGES * FILES);
    for folder in &folders {
        let prefix = format!("{}/", folder.display());
        let in_folder = files.iter().filter(|f| f.starts_with(&prefix)).count();
        assert_eq!(in_folder, FILES, "tasks of {}", folder.display());
    }

    // Every job started exactly once, and both instances ran some.
    let (by_a, by_b) = (a.started_syncs(), b.started_syncs());
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "a ran {by_a:?}, b ran {by_b:?}"
    );
    let mut started: Vec<i64> = by_a.iter().chain(&by_b).copied().collect();
    started.sort_unstable();
    assert_eq!(
        started, storages,
        "each job once: a ran {by_a:?}, b ran {by_b:?}"
    );
    drop((a, b));
    storage_testing::postgres::drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_sync_is_finished_by_the_other() {
    // Enough files that the sync is still running when the kill comes.
    const FILES: usize = 100_000;
    // Short leases so the takeover comes soon; the heartbeat renews every second.
    let lease = ["--sync-lease-seconds", "2", "--sync-workers", "1"];
    let database = storage_testing::postgres::fresh_database("scale_out_kill").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("files");
    let folder = write_files(&root, "many", FILES);

    let mut a = Instance::start("a", dir.path(), &database, &root, &lease);
    let project = create_project(&a).await;
    let storage = create_storage(&a, project, &folder).await;
    request_sync(&a, storage).await;

    // Wait until a's heartbeat has written progress: a holds the job.
    let started = Instant::now();
    let before = loop {
        let state = a.storage(storage).await;
        if state["status"] == "in_progress" && state["last_sync_count"].as_u64().unwrap_or(0) > 0 {
            break state;
        }
        assert!(
            matches!(state["status"].as_str(), Some("queued" | "in_progress")),
            "the sync ended before the kill (raise FILES): {state}"
        );
        assert!(started.elapsed() < PATIENCE, "no progress: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The second instance starts only now, so the job is a's alone. Its
    // start-up (done once it listens) must leave a's live job alone.
    let b = Instance::start("b", dir.path(), &database, &root, &lease);
    let state = b.storage(storage).await;
    assert_eq!(
        state["status"], "in_progress",
        "the sync ended before the kill (raise FILES): {state}"
    );
    assert!(
        state["meta"].get("resumes").is_none(),
        "b took over a's live job at start-up: {state}"
    );
    a.kill();

    let finished = wait_finished(&b, storage).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(
        finished["last_sync_job"], before["last_sync_job"],
        "the same job, resumed: {finished}"
    );
    assert_eq!(
        finished["meta"]["resumes"], 1,
        "taken over once: {finished}"
    );
    assert_eq!(a.started_syncs(), vec![storage]);
    assert_eq!(b.started_syncs(), vec![storage], "b finished the job");

    let total = b
        .ok(
            Method::GET,
            &format!("/api/tasks?project={project}&page_size=1"),
            None,
        )
        .await;
    assert_eq!(total["total"], FILES, "task count");
    // Paging 100,000 tasks through a debug build takes minutes: the rows
    // are checked in the database itself.
    let db = sqlx::PgPool::connect(&database).await.unwrap();
    let (files, inner) = links_and_inner_ids(&db, storage, project).await;
    db.close().await;
    assert_one_task_per_file(&files, &inner, FILES);
    let expected: HashSet<String> = (0..FILES)
        .map(|i| format!("{}/img_{i:06}.jpg", folder.display()))
        .collect();
    assert!(
        files.iter().all(|f| expected.contains(f)),
        "a task for a file that does not exist"
    );
    drop(b);
    storage_testing::postgres::drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_storage_is_synced_in_shards_by_both_instances_and_survives_a_kill() {
    const FOLDERS: usize = 16;
    const PER_FOLDER: usize = 5_000;
    const FILES: usize = FOLDERS * PER_FOLDER;
    let flags = ["--sync-lease-seconds", "2", "--sync-workers", "2"];
    let database = storage_testing::postgres::fresh_database("scale_out_shards").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("files");
    let folder = root.join("sharded");
    for part in 0..FOLDERS {
        write_files(&folder, &format!("part{part:02}"), PER_FOLDER);
    }
    let (mut a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Instance::start("a", dir.path(), &database, &root, &flags));
        let b = scope.spawn(|| Instance::start("b", dir.path(), &database, &root, &flags));
        (a.join().unwrap(), b.join().unwrap())
    });
    let project = create_project(&a).await;
    let storage = create_storage_with(
        &a,
        project,
        &folder,
        json!({"recursive_scan": true, "shard_listing": true}),
    )
    .await;
    request_sync(&a, storage).await;

    // Both instances work on the one storage: each has ended a shard.
    let started = Instant::now();
    loop {
        let ended = |instance: &Instance| instance.log_lines("shard ended").count();
        if ended(&a) > 0 && ended(&b) > 0 {
            break;
        }
        let state = b.storage(storage).await;
        assert!(
            matches!(state["status"].as_str(), Some("queued" | "in_progress")),
            "the sync ended before both instances ran a shard (raise PER_FOLDER): {state}"
        );
        assert!(started.elapsed() < PATIENCE, "no shard ended: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Whatever a held (the job, shards, or both) is taken over once its
    // leases run out.
    a.kill();

    let finished = wait_finished(&b, storage).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(
        finished["last_sync_count"], FILES,
        "exact count: {finished}"
    );
    assert_eq!(finished["meta"]["tasks_existed"], 0, "{finished}");
    assert_eq!(finished["meta"]["shards"], FOLDERS + 1, "{finished}");

    let db = sqlx::PgPool::connect(&database).await.unwrap();
    let (files, inner) = links_and_inner_ids(&db, storage, project).await;
    let shards_left: i64 = sqlx::query_scalar("SELECT count(*) FROM listing_shards")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    assert_one_task_per_file(&files, &inner, FILES);
    assert_eq!(shards_left, 0, "the ended job's shards are removed");
    drop(b);
    storage_testing::postgres::drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_syncs_are_queued_once_across_two_instances() {
    const STORAGES: usize = 6;
    const FILES: usize = 50;
    const RUNS: u64 = 4;
    let flags = ["--min-sync-interval", "1"];
    let database = storage_testing::postgres::fresh_database("scale_out_schedule").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("files");
    let folders: Vec<PathBuf> = (0..STORAGES)
        .map(|n| write_files(&root, &format!("s{n:02}"), FILES))
        .collect();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Instance::start("a", dir.path(), &database, &root, &flags));
        let b = scope.spawn(|| Instance::start("b", dir.path(), &database, &root, &flags));
        (a.join().unwrap(), b.join().unwrap())
    });
    let project = create_project(&a).await;
    let mut storages = Vec::new();
    for (n, folder) in folders.iter().enumerate() {
        let instance = [&a, &b][n % 2];
        let extra = json!({"sync_interval": 1});
        storages.push(create_storage_with(instance, project, folder, extra).await);
    }

    // No sync request at all. A file added while the schedule runs is
    // picked up by a later run.
    let started = Instant::now();
    let mut added = false;
    for storage in &storages {
        loop {
            let state = b.storage(*storage).await;
            let attempts = state["meta"]["attempts"].as_u64().unwrap_or(0);
            if attempts >= RUNS && state["status"] == "completed" {
                break;
            }
            if attempts >= 2 && !added {
                std::fs::write(folders[0].join("late.jpg"), b"x").unwrap();
                added = true;
            }
            assert!(
                matches!(
                    state["status"].as_str(),
                    Some("initialized" | "queued" | "in_progress" | "completed")
                ),
                "{state}"
            );
            assert!(
                started.elapsed() < PATIENCE,
                "not run {RUNS} times: {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let late = folders[0].join("late.jpg").display().to_string();
    loop {
        let (files, _) = all_tasks(&a, project).await;
        if files.contains(&late) {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "late.jpg never synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (files, inner) = all_tasks(&a, project).await;
    assert_one_task_per_file(&files, &inner, STORAGES * FILES + 1);
    let (mut a, mut b) = (a, b);
    a.kill();
    b.kill();

    // Each scheduled job queued by one instance and started once.
    let queued: Vec<(i64, String)> = a
        .scheduled_jobs()
        .into_iter()
        .chain(b.scheduled_jobs())
        .collect();
    let distinct: HashSet<&String> = queued.iter().map(|(_, job)| job).collect();
    assert_eq!(
        distinct.len(),
        queued.len(),
        "a job queued twice: {queued:?}"
    );
    let mut started_jobs: Vec<String> = a
        .started_jobs()
        .into_iter()
        .chain(b.started_jobs())
        .collect();
    started_jobs.sort();
    let before = started_jobs.len();
    started_jobs.dedup();
    assert_eq!(started_jobs.len(), before, "a job started twice");
    // Every run was a scheduled one; at the kill at most one per storage
    // was still waiting.
    for job in &started_jobs {
        assert!(distinct.contains(job), "started, never queued: {job}");
    }
    assert!(started_jobs.len() + STORAGES >= queued.len());
    for storage in &storages {
        let runs = queued.iter().filter(|(s, _)| s == storage).count() as u64;
        assert!(runs >= RUNS, "storage {storage}: {runs} scheduled runs");
    }
    storage_testing::postgres::drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_each_webhook_event_once_and_in_order() {
    const EVENTS: usize = 300;
    let flags = ["--allow-private-endpoints", "true"];
    let database = storage_testing::postgres::fresh_database("scale_out_webhooks").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Instance::start("a", dir.path(), &database, &root, &flags));
        let b = scope.spawn(|| Instance::start("b", dir.path(), &database, &root, &flags));
        (a.join().unwrap(), b.join().unwrap())
    });
    let receiver = Receiver::start().await;
    // Slow enough that both couriers find deliveries waiting while one is
    // in flight.
    receiver.answer_after(Duration::from_millis(5));
    let project = create_project(&a).await;
    let (status, webhook) = a
        .post(
            "/api/webhooks/",
            json!({"project": project, "url": receiver.url}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{webhook}");
    // Events recorded through both instances, delivered by both couriers.
    for i in 0..EVENTS {
        let instance = [&a, &b][i % 2];
        instance
            .import(project, json!([{"image": format!("{i}.jpg")}]))
            .await;
    }
    let accepted = receiver
        .wait_accepted(PATIENCE, "every event", |r| r.len() >= EVENTS)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = receiver.received();
    let numbers: Vec<i64> = received.iter().map(Received::number).collect();
    let unique: HashSet<i64> = numbers.iter().copied().collect();
    assert_eq!(
        (received.len(), unique.len(), accepted.len()),
        (EVENTS, EVENTS, EVENTS),
        "an event was sent twice"
    );
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(numbers, sorted, "the webhook's events arrived out of order");
    let (_, shown) = b.get(&format!("/api/webhooks/{}/", webhook["id"])).await;
    assert_eq!(shown["delivery"]["delivered"], EVENTS, "{shown}");
}

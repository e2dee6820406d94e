//! S3 event notifications through SQS, on moto (started by `./scripts/test`):
//! a bucket whose notification configuration sends its events to a queue,
//! and a storage with `sqs_queue_url`. Objects put and deleted become task
//! changes without a sync request and without listing the bucket (listings
//! are counted by a proxy in front of moto), exactly once, across a
//! SIGKILL of the server.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use storage_core::EndpointPolicy;
use storage_s3::{S3Backend, S3Options};
use support::process::{self, Process};
use support::sqs::{ListingCounter, NotifiedBucket};
use support::{Api, Server, TOKEN};

/// moto is shared with every other test of the run: generous.
const PATIENCE: Duration = Duration::from_secs(300);

async fn task_total(api: &Api, project: i64) -> u64 {
    let (_, page) = api
        .get(&format!("/api/tasks?project={project}&page_size=1"))
        .await;
    page["total"].as_u64().unwrap_or(0)
}

/// Polls until the project holds `expected` tasks; how long it took.
async fn wait_for_tasks(
    api: &Api,
    project: i64,
    expected: u64,
    context: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    loop {
        let total = task_total(api, project).await;
        if total == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{total} tasks, expected {expected}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every task's URL: no two alike.
async fn assert_no_duplicates(api: &Api, project: i64, expected: u64) {
    let (_, page) = api
        .get(&format!(
            "/api/tasks?project={project}&page_size=5000&resolve_uri=false"
        ))
        .await;
    let mut urls: Vec<String> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["data"].to_string())
        .collect();
    assert_eq!(urls.len() as u64, expected);
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len() as u64, expected, "duplicate tasks");
}

fn options() -> S3Options {
    S3Options::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn a_thousand_puts_become_a_thousand_tasks_without_a_sync_or_a_listing() {
    const OBJECTS: u64 = 1000;
    let bucket = NotifiedBucket::create().await;
    let proxy = ListingCounter::start(bucket.moto.endpoint.clone()).await;
    let server = Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![Arc::new(S3Backend::new(options()))],
    )
    .await;
    let project = server.project().await;
    // An import storage is created over a prefix that holds an object.
    bucket.put(["in/seed.jpg".to_string()].into_iter()).await;
    let path = server
        .create_storage(
            "/api/storages/s3",
            bucket.storage(project, &proxy.endpoint, json!({})),
        )
        .await;
    wait_for_tasks(&server, project, 1, String::new).await;
    let listed_before = proxy.count();

    let started = Instant::now();
    bucket
        .put((0..OBJECTS).map(|i| format!("in/o{i:04}.jpg")))
        .await;
    let put = started.elapsed();
    wait_for_tasks(&server, project, OBJECTS + 1, String::new).await;
    let all = started.elapsed();
    eprintln!("{OBJECTS} objects put in {put:?}; all their tasks after {all:?}");
    assert_eq!(
        proxy.count(),
        listed_before,
        "the events were applied without listing the bucket"
    );

    for i in 0..10 {
        bucket.delete(&format!("in/o{i:04}.jpg")).await;
    }
    wait_for_tasks(&server, project, OBJECTS + 1 - 10, String::new).await;

    // Messages that are no changes of this storage's objects are dropped
    // without blocking those behind them.
    bucket.send("this is not a notification").await;
    bucket
        .send(
            &json!({"Records": [{"eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "someone-elses"}, "object": {"key": "in/x.jpg"}}}]})
            .to_string(),
        )
        .await;
    bucket
        .put(["out/elsewhere.jpg".to_string()].into_iter())
        .await;
    bucket.put((0..5).map(|i| format!("in/late{i}.jpg"))).await;
    wait_for_tasks(&server, project, OBJECTS + 1 - 10 + 5, String::new).await;
    assert_eq!(proxy.count(), listed_before);

    let (_, storage) = server.get(&path).await;
    let events = &storage["meta"]["events"];
    assert_eq!(events["failed"], 0, "{storage}");
    assert!(events["ignored"].as_u64().unwrap() >= 3, "{storage}");
    assert_eq!(events["tasks_created"], OBJECTS + 1 + 5, "{storage}");
    assert_eq!(events["tasks_deleted"], 10, "{storage}");
    assert_no_duplicates(&server, project, OBJECTS + 1 - 10 + 5).await;

    // What a sync would find is already there.
    let synced = server.sync_and_wait(&path).await;
    assert_eq!(synced["last_sync_count"], 0, "{synced}");
    assert_eq!(task_total(&server, project).await, OBJECTS + 1 - 10 + 5);
}

#[tokio::test]
async fn a_server_killed_while_messages_are_in_flight_ends_with_exact_counts() {
    const OBJECTS: u64 = 400;
    let bucket = NotifiedBucket::create().await;
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut command = process::command(dir.path());
        command
            .args(["--token", TOKEN, "--allow-private-endpoints", "true"])
            .env("RUST_BACKTRACE", "1");
        let process = Process::start(command, dir.path(), "server");
        let api = Api::new(process.base.clone(), TOKEN);
        (process, api)
    };
    let (mut first, api) = start();
    let (status, project) = api.post("/api/projects", json!({"title": "sqs"})).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project = project["id"].as_i64().unwrap();
    bucket.put(["in/seed.jpg".to_string()].into_iter()).await;
    api.create_storage(
        "/api/storages/s3",
        bucket.storage(project, &bucket.moto.endpoint, json!({})),
    )
    .await;
    wait_for_tasks(&api, project, 1, || first.log_text()).await;

    bucket
        .put((0..OBJECTS).map(|i| format!("in/o{i:04}.jpg")))
        .await;
    // Killed once some of the events are applied and others are received
    // but not yet deleted.
    let started = Instant::now();
    while task_total(&api, project).await < 50 {
        assert!(started.elapsed() < PATIENCE, "{}", first.log_text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied_before = task_total(&api, project).await;
    first.kill();

    let (second, api) = start();
    // Messages received by the killed server come back once their
    // visibility runs out (30 s).
    wait_for_tasks(&api, project, OBJECTS + 1, || second.log_text()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(task_total(&api, project).await, OBJECTS + 1);
    assert_no_duplicates(&api, project, OBJECTS + 1).await;
    eprintln!("killed with about {applied_before} tasks; exact after the restart");
}

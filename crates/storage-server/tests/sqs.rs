//! S3 event notifications through SQS, on moto (started by `./scripts/test`):
//! a bucket whose notification configuration sends its events to a queue,
//! and a storage with `sqs_queue_url`. Objects put and deleted become task
//! changes without a sync request and without listing the bucket (listings
//! are counted by a proxy in front of moto), exactly once, across a
//! SIGKILL of the server.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::EndpointPolicy;
use storage_s3::{S3Backend, S3Options};
use storage_testing::S3Server;
use support::buckets::s3_builder;
use support::process::{self, Process};
use support::{serve_on_loopback, Api, Server, TOKEN};

const PATIENCE: Duration = Duration::from_secs(120);

/// A bucket of its own on moto whose events go to a queue of its own.
struct NotifiedBucket {
    moto: S3Server,
    bucket: String,
    queue_url: String,
    store: AmazonS3,
}

/// What moto needs to tell the service a request is for: a SigV4
/// credential scope (moto checks no signature).
fn scope(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

async fn sqs_call(moto: &S3Server, action: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/", moto.endpoint))
        .header("authorization", scope("sqs"))
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .header("content-type", "application/x-amz-json-1.0")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "SQS {action}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

impl NotifiedBucket {
    async fn create() -> Self {
        let moto = storage_testing::moto();
        let name = format!("sqs-{}", uuid::Uuid::new_v4().simple());
        let client = reqwest::Client::new();
        let put = client
            .put(format!("{}/{name}", moto.endpoint))
            .header("authorization", scope("s3"))
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.text().await.unwrap());
        let queue = sqs_call(&moto, "CreateQueue", json!({"QueueName": name})).await;
        let queue_url = queue["QueueUrl"].as_str().unwrap().to_string();
        let config = format!(
            "<NotificationConfiguration><QueueConfiguration>\
             <Queue>arn:aws:sqs:us-east-1:123456789012:{name}</Queue>\
             <Event>s3:ObjectCreated:*</Event><Event>s3:ObjectRemoved:*</Event>\
             </QueueConfiguration></NotificationConfiguration>"
        );
        let notified = client
            .put(format!("{}/{name}?notification", moto.endpoint))
            .header("authorization", scope("s3"))
            .header("content-type", "application/xml")
            .body(config)
            .send()
            .await
            .unwrap();
        assert!(
            notified.status().is_success(),
            "{}",
            notified.text().await.unwrap()
        );
        let store = s3_builder(&moto)
            .with_bucket_name(&name)
            .with_retry(storage_testing::quick_retry())
            .build()
            .unwrap();
        Self {
            moto,
            bucket: name,
            queue_url,
            store,
        }
    }

    /// Puts `keys` (16 at a time).
    async fn put(&self, keys: impl Iterator<Item = String>) {
        futures::stream::iter(keys)
            .for_each_concurrent(16, |key| async move {
                self.store
                    .put(&Path::from(key.as_str()), "x".into())
                    .await
                    .unwrap_or_else(|e| panic!("putting {key}: {e}"));
            })
            .await;
    }

    async fn delete(&self, key: &str) {
        self.store.delete(&Path::from(key)).await.unwrap();
    }

    /// A storage body over `prefix`, through `endpoint` (moto or a proxy).
    fn storage(&self, project: i64, endpoint: &str, extra: Value) -> Value {
        let mut body = json!({
            "project": project,
            "bucket": self.bucket,
            "prefix": "in",
            "use_blob_urls": true,
            "s3_endpoint": endpoint,
            "aws_access_key_id": self.moto.access_key_id,
            "aws_secret_access_key": self.moto.secret_access_key,
            "region_name": "us-east-1",
            "sqs_queue_url": self.queue_url,
            "on_object_deleted": "delete",
            "deletion_guard": 100,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    /// Sends a message of our own to the queue (a poison message, a
    /// notification of another bucket).
    async fn send(&self, body: &str) {
        sqs_call(
            &self.moto,
            "SendMessage",
            json!({"QueueUrl": self.queue_url, "MessageBody": body}),
        )
        .await;
    }
}

/// A proxy in front of moto that counts the bucket listings it forwards.
struct ListingCounter {
    endpoint: String,
    listings: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl ListingCounter {
    async fn start(upstream: String) -> Self {
        let listings = Arc::new(AtomicUsize::new(0));
        let counted = listings.clone();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (client, upstream, counted) = (client.clone(), upstream.clone(), counted.clone());
            async move {
                let (parts, body) = request.into_parts();
                let query = parts.uri.query().unwrap_or_default();
                if parts.method == http::Method::GET && query.contains("list-type=") {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let mut forwarded = client.request(
                    parts.method.clone(),
                    format!("{upstream}{}", parts.uri.path_and_query().unwrap()),
                );
                for (name, value) in &parts.headers {
                    if name != http::header::HOST {
                        forwarded = forwarded.header(name, value);
                    }
                }
                let answer = forwarded.body(body).send().await.unwrap();
                let mut response = axum::response::Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    response = response.header(name, value);
                }
                response
                    .body(axum::body::Body::from(answer.bytes().await.unwrap()))
                    .unwrap()
            }
        });
        let (endpoint, server) = serve_on_loopback(app).await;
        Self {
            endpoint,
            listings,
            _server: server,
        }
    }

    fn count(&self) -> usize {
        self.listings.load(Ordering::SeqCst)
    }
}

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

//! Bounded and fair work (issue 12, finding 6): an S3 endpoint that answers
//! `ListObjectsV2` with empty pages and a fresh continuation token forever,
//! slowly (a tarpit), must not hold sync workers forever, must not keep
//! another organisation's syncs waiting, must stop when its storage is
//! deleted, and must not hang a connection check.
//!
//! The tarpit is an HTTP server of the test on a loopback port (the
//! storages are allowed private endpoints, as `--allow-private-endpoints`
//! does for the binary). It answers honestly (one object, last page) until
//! the test turns it hostile, as an attacker's endpoint would pass the
//! connection check at creation and misbehave afterwards.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::persist::StorageRepository;
use storage_core::{Backend, EndpointPolicy, RunnerConfig};
use storage_s3::S3Backend;
use support::buckets::no_retry_s3;
use support::{envelope, fast_runner, serve_on_loopback, storage_id, Api, Server, Setup};

/// How the tarpit behaves and what it has seen.
#[derive(Debug, Default)]
struct Tarpit {
    hostile: AtomicBool,
    /// Listing requests answered so far.
    pages: AtomicU64,
}

/// Every request is a listing here: the honest answer holds one object and
/// ends; the hostile one, 200 ms later, holds nothing and a new token.
async fn answer(State(tarpit): State<Arc<Tarpit>>) -> impl IntoResponse {
    let page = tarpit.pages.fetch_add(1, Ordering::SeqCst);
    let body = if tarpit.hostile.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Name>tarpit</Name><Prefix>p/</Prefix><KeyCount>0</KeyCount>\
             <MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>\
             <NextContinuationToken>token-{page}</NextContinuationToken>\
             </ListBucketResult>"
        )
    } else {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>tarpit</Name><Prefix>p/</Prefix><KeyCount>1</KeyCount>\
         <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>\
         <Contents><Key>p/a.jpg</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>\
         <ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>1</Size>\
         <StorageClass>STANDARD</StorageClass></Contents>\
         </ListBucketResult>"
            .to_owned()
    };
    ([(CONTENT_TYPE, "application/xml")], body)
}

/// A tarpit on a loopback port: its state and base URL.
async fn tarpit() -> (Arc<Tarpit>, String) {
    let tarpit = Arc::new(Tarpit::default());
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(tarpit.clone());
    let (base, _server) = serve_on_loopback(app).await;
    (tarpit, base)
}

/// A server whose S3 storages may use loopback endpoints.
async fn server(runner: RunnerConfig) -> Server {
    let options = no_retry_s3(EndpointPolicy::allow_private());
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(S3Backend::new(options))];
    Server::start_setup(
        tempfile::tempdir().unwrap(),
        Setup {
            runner,
            backends,
            ..Setup::default()
        },
    )
    .await
}

fn runner(stall: Duration, max_duration: Duration) -> RunnerConfig {
    let mut runner = RunnerConfig {
        workers: 4,
        max_duration,
        check_timeout: Duration::from_secs(2),
        ..fast_runner()
    };
    runner.import.listing_stall_timeout = stall;
    runner
}

fn s3_body(project: i64, endpoint: &str) -> Value {
    json!({
        "project": project,
        "bucket": "tarpit",
        "prefix": "p",
        "s3_endpoint": endpoint,
        "aws_access_key_id": "AKIDTARPIT",
        "aws_secret_access_key": "tarpit-secret",
        "region_name": "us-east-1",
        "use_blob_urls": true,
    })
}

/// The API of a new user of a new organisation.
async fn other_organisation(server: &Server, name: &str) -> Api {
    let org = server.db.ensure_organization(name).await.unwrap();
    let user = server
        .db
        .ensure_user(&format!("{name}@example.com"), org)
        .await
        .unwrap();
    let token = format!("token-of-{name}-0123456789");
    server.db.set_user_token(user, &token).await.unwrap();
    Api::new(server.api.base.clone(), token)
}

async fn status(api: &Api, path: &str) -> Value {
    let (code, storage) = api.get(path).await;
    assert_eq!(code, StatusCode::OK, "{storage}");
    storage
}

/// Polls until `path`'s status is one of `wanted`; fails after `patience`.
async fn wait_status(api: &Api, path: &str, wanted: &[&str], patience: Duration) -> Value {
    let started = Instant::now();
    loop {
        let storage = status(api, path).await;
        if wanted.contains(&storage["status"].as_str().unwrap_or_default()) {
            return storage;
        }
        assert!(
            started.elapsed() < patience,
            "{path} not {wanted:?} after {patience:?}: {storage}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_organisation_on_a_tarpit_cannot_hold_every_worker() {
    let stall = Duration::from_secs(4);
    let server = server(runner(stall, Duration::from_secs(600))).await;
    let (tarpit, endpoint) = tarpit().await;

    // Organisation A (the admin's): four storages on the tarpit.
    let project_a = server.project().await;
    let mut storages_a = Vec::new();
    for _ in 0..4 {
        storages_a.push(
            server
                .create_storage("/api/storages/s3", s3_body(project_a, &endpoint))
                .await,
        );
    }
    // Organisation B: one local-files storage.
    let b = other_organisation(&server, "b").await;
    let project_b = b.project().await;
    std::fs::create_dir_all(server.root.join("b")).unwrap();
    server.write_files(&[("b/1.jpg", "x"), ("b/2.jpg", "y")]);
    let storage_b = b
        .create_storage(
            "/api/storages/localfiles",
            json!({"project": project_b, "path": server.path("b"), "use_blob_urls": true}),
        )
        .await;

    tarpit.hostile.store(true, Ordering::SeqCst);
    let started = Instant::now();
    for path in &storages_a {
        server.sync(path).await;
    }
    // Every worker a job of A may take is taken before B asks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.sync(&storage_b).await;

    let done = wait_status(
        &b,
        &storage_b,
        &["completed", "failed", "completed_with_errors"],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["last_sync_count"], 2, "{done}");
    assert!(
        started.elapsed() < stall,
        "B's sync finished only after A's jobs gave up: {:?}",
        started.elapsed()
    );
    let mut running = 0;
    for path in &storages_a {
        if status(&server, path).await["status"] == "in_progress" {
            running += 1;
        }
    }
    assert_eq!(
        running, 3,
        "A holds workers - 1 workers while B syncs; its fourth job waits"
    );

    // A's jobs fail with a clear message within the limit: three at once,
    // then the fourth, each `stall` after it started (plus slack).
    for path in &storages_a {
        let failed = wait_status(&server, path, &["failed", "completed"], 3 * stall).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        let traceback = failed["traceback"].as_str().unwrap();
        assert!(
            traceback.contains(&format!(
                "the listing of s3://tarpit/p returned no new object for {} s",
                stall.as_secs()
            )) && traceback.contains("the endpoint may be misbehaving")
                && traceback.contains("--sync-listing-stall-seconds"),
            "{traceback}"
        );
    }
    assert!(
        started.elapsed() < 2 * stall + Duration::from_secs(3),
        "A's jobs took {:?}",
        started.elapsed()
    );
    assert!(
        tarpit.pages.load(Ordering::SeqCst) > 4,
        "the tarpit was listed"
    );
    server.stop().await;
}

/// The tarpit's page count once it has stopped growing for a second.
async fn settled_pages(tarpit: &Tarpit, patience: Duration) -> u64 {
    let started = Instant::now();
    let mut last = tarpit.pages.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = tarpit.pages.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        assert!(
            started.elapsed() < patience,
            "the tarpit is still being listed {patience:?} later ({now} pages)"
        );
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_storage_stops_its_running_job_within_seconds() {
    let server = server(runner(Duration::from_secs(600), Duration::from_secs(600))).await;
    let (tarpit, endpoint) = tarpit().await;
    let project = server.project().await;
    let path = server
        .create_storage("/api/storages/s3", s3_body(project, &endpoint))
        .await;
    tarpit.hostile.store(true, Ordering::SeqCst);
    server.sync(&path).await;
    wait_status(&server, &path, &["in_progress"], Duration::from_secs(5)).await;
    let before = tarpit.pages.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        tarpit.pages.load(Ordering::SeqCst) > before,
        "the job lists the tarpit"
    );

    let (code, body) = server.delete(&path).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let deleted = Instant::now();
    let settled = settled_pages(&tarpit, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        tarpit.pages.load(Ordering::SeqCst),
        settled,
        "the deleted storage's job still lists its endpoint"
    );
    assert!(deleted.elapsed() < Duration::from_secs(10));
    assert!(server
        .db
        .storage(storage_id(&path))
        .await
        .unwrap()
        .is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_longer_than_the_maximum_duration_fails_naming_the_flag() {
    let server = server(runner(Duration::from_secs(600), Duration::from_secs(3))).await;
    let (tarpit, endpoint) = tarpit().await;
    let project = server.project().await;
    let path = server
        .create_storage("/api/storages/s3", s3_body(project, &endpoint))
        .await;
    tarpit.hostile.store(true, Ordering::SeqCst);
    let started = Instant::now();
    server.sync(&path).await;
    let failed = wait_status(
        &server,
        &path,
        &["failed", "completed"],
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let traceback = failed["traceback"].as_str().unwrap();
    assert!(
        traceback.contains("ran longer than the maximum job duration of 3 s")
            && traceback.contains("--sync-max-duration-seconds"),
        "{traceback}"
    );
    let settled = settled_pages(&tarpit, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(tarpit.pages.load(Ordering::SeqCst), settled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checking_a_tarpit_connection_times_out() {
    let server = server(runner(Duration::from_secs(600), Duration::from_secs(600))).await;
    let (tarpit, endpoint) = tarpit().await;
    let project = server.project().await;
    tarpit.hostile.store(true, Ordering::SeqCst);

    for path in ["/api/storages/s3/validate", "/api/storages/s3"] {
        let started = Instant::now();
        let (code, body) = tokio::time::timeout(
            Duration::from_secs(10),
            server.post(path, s3_body(project, &endpoint)),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer within 10 s"));
        let took = started.elapsed();
        let errors = envelope(code, &body, StatusCode::BAD_REQUEST);
        let message = errors.to_string();
        assert!(
            message.contains("Checking the connection timed out after 2 s")
                && message.contains("listing s3://tarpit/p")
                && message.contains("--storage-check-timeout-seconds"),
            "{path}: {body}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{path} answered after {took:?}"
        );
    }
    let (_, storages) = server
        .get(&format!("/api/storages/s3?project={project}"))
        .await;
    assert_eq!(storages, json!([]), "no storage was created");
    server.stop().await;
}

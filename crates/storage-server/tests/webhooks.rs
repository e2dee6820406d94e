//! Webhooks end to end: the `storage-server` binary on a SQLite file, a
//! receiver on a loopback port ([`support::receiver`]), Label Studio's
//! webhook API over real HTTP.
//!
//! - The API speaks Label Studio's wire format (fields, errors, `info`
//!   without a token) with the extensions: a `secret` never shown, header
//!   values that look like credentials masked (and kept when sent back
//!   masked), a PATCH without `actions` keeping them, URLs under the
//!   endpoint policy.
//! - A sync of 12,000 files is announced: `STORAGE_SYNC_STARTED`,
//!   `TASKS_CREATED` covering exactly the 12,000 tasks in batches of at
//!   most 5,000, `STORAGE_SYNC_COMPLETED` with the counts; every request
//!   signed and verified.
//! - A receiver answering 500 for a minute gets every event once it
//!   answers 200 again, each id accepted once, in order.
//! - 1,000 undelivered events survive a SIGKILL of the server and are
//!   delivered, once each and in order, by the restarted one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_core::webhooks::signature::verify;
use support::process::{self, Process};
use support::receiver::{Received, Receiver};
use support::{envelope, Api};

const TOKEN: &str = "webhook-test-token-0123456789";
const SECRET: &str = "receiver-shared-secret";

/// How long a test waits for what it expects before it fails (a bound
/// against hanging, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(180);

/// The server binary on `data` (kept across restarts), allowing loopback
/// webhook URLs; retries at most `max_backoff` seconds apart.
fn start(dir: &Path, data: &Path, name: &str, extra: &[&str]) -> (Process, Api) {
    let mut command = process::command(data);
    command
        .args(["--allow-private-endpoints", "true"])
        .args(extra)
        .env("STORAGE_API_TOKEN", TOKEN)
        .env("RUST_LOG", "warn,storage_core::webhooks=info");
    let process = Process::start(command, dir, name);
    let api = Api::new(process.base.clone(), TOKEN);
    (process, api)
}

async fn create_webhook(api: &Api, project: i64, url: &str, body: Value) -> Value {
    let mut request = json!({"project": project, "url": url});
    request
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    let (status, webhook) = api.post("/api/webhooks/", request).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    webhook
}

/// Writes `count` one-byte files into `<data>/local-files/<folder>`.
fn write_files(data: &Path, folder: &str, count: usize) -> PathBuf {
    let dir = data.join("local-files").join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..count {
        std::fs::write(dir.join(format!("f{i:06}.jpg")), b"x").unwrap();
    }
    dir
}

/// Asserts that each event was accepted once, in the order of its id.
fn assert_once_in_order(accepted: &[Received]) {
    let numbers: Vec<i64> = accepted.iter().map(Received::number).collect();
    let unique: HashSet<i64> = numbers.iter().copied().collect();
    assert_eq!(
        unique.len(),
        numbers.len(),
        "an event was accepted twice: {numbers:?}"
    );
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(numbers, sorted, "one webhook's events arrived out of order");
}

fn assert_signed(received: &Received) {
    let signature = received.signature.as_deref().expect("a signature header");
    assert!(
        verify(
            SECRET,
            &received.id,
            received.timestamp,
            &received.body,
            signature
        ),
        "the signature of {} does not verify",
        received.id
    );
    let age = chrono::Utc::now().timestamp() - received.timestamp;
    assert!(
        (0..600).contains(&age),
        "webhook-timestamp {} is not now",
        received.timestamp
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_api_speaks_label_studios_wire_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, api) = start(dir.path(), &data, "server", &[]);
    let receiver = Receiver::start().await;
    let project = api.project().await;

    // The catalogue needs no token, as in Label Studio.
    let info = api
        .raw(Method::GET, "/api/webhooks/info/", None, None)
        .await;
    assert_eq!(info.status(), StatusCode::OK);
    let info: Value = info.json().await.unwrap();
    assert_eq!(
        info["TASKS_CREATED"],
        json!({"name": "Task created", "description": "", "key": "tasks", "organization-only": false})
    );
    assert_eq!(info["STORAGE_SYNC_COMPLETED"]["key"], "storage");
    let (_, only) = api.get("/api/webhooks/info/?organization-only=true").await;
    assert_eq!(
        only.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["PROJECT_CREATED", "PROJECT_DELETED"]
    );

    // Label Studio's errors, each field named.
    let (status, body) = api
        .post("/api/webhooks/", json!({"url": receiver.url}))
        .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Project not found."))
    );
    let (status, body) = api
        .post(
            "/api/webhooks/",
            json!({"project": project, "actions": ["NOPE"], "headers": {"bad name": "x"},
                   "is_active": "maybe"}),
        )
        .await;
    let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(errors["url"], json!(["This field is required."]));
    assert_eq!(
        errors["actions"],
        json!(["\"NOPE\" is not a valid choice."])
    );
    assert!(
        errors["headers"][0].as_str().unwrap().contains("bad name"),
        "{errors}"
    );
    assert!(errors["is_active"].is_array(), "{errors}");
    let (status, body) = api
        .post(
            "/api/webhooks/",
            json!({"project": project, "url": receiver.url, "actions": ["PROJECT_CREATED"]}),
        )
        .await;
    let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(
        errors["non_field_errors"],
        json!(["Project webhook can't contain organization-only action."])
    );
    let (status, body) = api
        .post(
            "/api/webhooks/",
            json!({"project": project, "url": "ftp://example.com/in"}),
        )
        .await;
    let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
    assert!(
        errors["url"][0].as_str().unwrap().contains("http or https"),
        "{errors}"
    );

    // Created: Label Studio's keys in its order, then the extensions; the
    // secret is never shown, the Authorization header's value masked.
    let webhook = create_webhook(
        &api,
        project,
        &receiver.url,
        json!({"secret": SECRET, "send_for_all_actions": false, "actions": ["TASKS_CREATED"],
               "headers": {"Authorization": "Bearer receiver-token", "X-Team": "labelling"}}),
    )
    .await;
    let keys: Vec<&str> = webhook
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "organization",
            "project",
            "url",
            "send_payload",
            "send_for_all_actions",
            "headers",
            "is_active",
            "actions",
            "created_at",
            "updated_at",
            "consecutive_failures",
            "has_secret",
            "delivery"
        ]
    );
    assert_eq!(
        webhook["headers"],
        json!({"Authorization": "********", "X-Team": "labelling"})
    );
    assert_eq!(webhook["has_secret"], true);
    let text = api.call_text(Method::GET, "/api/webhooks/", None).await.2;
    assert!(
        !text.contains(SECRET) && !text.contains("receiver-token"),
        "{text}"
    );
    let id = webhook["id"].as_i64().unwrap();
    let path = format!("/api/webhooks/{id}/");

    // A PATCH without actions keeps them (Label Studio wipes them); a
    // masked header value sent back keeps the stored one.
    let (status, patched) = api
        .patch(
            &path,
            json!({"headers": {"Authorization": "********", "X-Team": "review"}, "send_payload": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["actions"], json!(["TASKS_CREATED"]));
    assert_eq!(patched["send_payload"], false);
    let (_, listed) = api.get(&format!("/api/webhooks/?project={project}")).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, none) = api.get("/api/webhooks/?project=isnull").await;
    assert_eq!(none, json!([]));

    // What the receiver gets: the stored header values, the signature, and
    // with send_payload off only the action.
    api.import(project, json!([{"image": "a.jpg"}])).await;
    let accepted = receiver
        .wait_accepted(PATIENCE, "TASKS_CREATED", |r| !r.is_empty())
        .await;
    let event = &accepted[0];
    assert_eq!(event.json, json!({"action": "TASKS_CREATED"}));
    assert_eq!(event.headers["authorization"], "Bearer receiver-token");
    assert_eq!(event.headers["x-team"], "review");
    assert_eq!(event.headers["content-type"], "application/json");
    assert_signed(event);
    let (_, shown) = api.get(&path).await;
    assert_eq!(shown["delivery"]["delivered"], 1, "{shown}");
    assert_eq!(shown["delivery"]["last_status"], 200, "{shown}");

    let (status, put) = api
        .call(
            Method::PUT,
            &path,
            Some(json!({"url": receiver.url, "is_active": false})),
        )
        .await;
    assert_eq!(
        (status, &put["is_active"]),
        (StatusCode::OK, &json!(false)),
        "{put}"
    );
    let (status, _) = api.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_obey_the_endpoint_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = process::command(&dir.path().join("data"));
    command.env("STORAGE_API_TOKEN", TOKEN);
    let server = Process::start(command, dir.path(), "strict");
    let api = Api::new(server.base.clone(), TOKEN);
    let project = api.project().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest",
        "http://localhost/x",
    ] {
        let (status, body) = api
            .post("/api/webhooks/", json!({"project": project, "url": url}))
            .await;
        let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(
            errors.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["url"],
            "{url}: {errors}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_is_announced_from_its_start_to_its_end() {
    const FILES: usize = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let folder = write_files(&data, "many", FILES);
    let (_server, api) = start(dir.path(), &data, "server", &[]);
    let receiver = Receiver::start().await;
    let project = api.project().await;
    create_webhook(&api, project, &receiver.url, json!({"secret": SECRET})).await;
    let storage = api
        .create_storage(
            "/api/storages/localfiles",
            json!({"project": project, "path": folder, "use_blob_urls": true}),
        )
        .await;
    let storage_id: i64 = storage.rsplit('/').next().unwrap().parse().unwrap();
    let ended = api.sync_and_wait(&storage).await;
    assert_eq!(ended["status"], "completed", "{ended}");

    let accepted = receiver
        .wait_accepted(PATIENCE, "STORAGE_SYNC_COMPLETED", |r| {
            r.iter().any(|e| e.action() == "STORAGE_SYNC_COMPLETED")
        })
        .await;
    assert_once_in_order(&accepted);
    accepted.iter().for_each(assert_signed);
    let actions: Vec<&str> = accepted.iter().map(Received::action).collect();
    assert_eq!(
        actions.first(),
        Some(&"STORAGE_SYNC_STARTED"),
        "{actions:?}"
    );
    assert_eq!(
        actions.last(),
        Some(&"STORAGE_SYNC_COMPLETED"),
        "{actions:?}"
    );

    let mut ids = Vec::new();
    for event in accepted.iter().filter(|e| e.action() == "TASKS_CREATED") {
        let tasks = event.json["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 5_000, "{} tasks in one event", tasks.len());
        assert_eq!(event.json["project"]["id"], project);
        for task in tasks {
            assert_eq!(task["project"], project);
            assert!(
                task["data"]["image"]
                    .as_str()
                    .unwrap()
                    .starts_with("/data/local-files/"),
                "{task}"
            );
            ids.push(task["id"].as_i64().unwrap());
        }
    }
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        (ids.len(), unique.len()),
        (FILES, FILES),
        "TASKS_CREATED covers each task once"
    );

    let started = &accepted[0].json["storage"];
    assert_eq!(
        (started["id"].as_i64(), started["status"].as_str()),
        (Some(storage_id), Some("in_progress"))
    );
    let completed = &accepted.last().unwrap().json["storage"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["last_sync_count"], FILES);
    assert_eq!(completed["type"], "localfiles");
    assert_eq!(completed["kind"], "import");
    assert_eq!(completed["meta"]["tasks_existed"], 0);
    assert_eq!(completed["last_sync_job"], ended["last_sync_job"]);

    // For the closing note: the delay from the sync's end (its
    // `last_sync`, the server's clock) to the receiver.
    let end = chrono::DateTime::parse_from_rfc3339(ended["last_sync"].as_str().unwrap()).unwrap();
    let delay = accepted.last().unwrap().wall - end.to_utc();
    eprintln!(
        "webhooks: {} events for a sync of {FILES} files; sync end to STORAGE_SYNC_COMPLETED at the receiver: {} ms",
        accepted.len(),
        delay.num_milliseconds()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_for_a_minute_gets_every_event_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let folder = write_files(&data, "few", 10);
    let (_server, api) = start(
        dir.path(),
        &data,
        "server",
        &["--webhook-max-backoff-seconds", "4"],
    );
    let receiver = Receiver::start().await;
    receiver.fail_for(Duration::from_secs(60));
    let project = api.project().await;
    let webhook = create_webhook(&api, project, &receiver.url, json!({"secret": SECRET})).await;
    let path = format!("/api/webhooks/{}/", webhook["id"]);
    let storage = api
        .create_storage(
            "/api/storages/localfiles",
            json!({"project": project, "path": folder, "use_blob_urls": true}),
        )
        .await;
    api.sync_and_wait(&storage).await;
    let (_, tasks) = api
        .get(&format!("/api/tasks?project={project}&page_size=1"))
        .await;
    let task = tasks["tasks"][0]["id"].as_i64().unwrap();
    let (status, _) = api
        .post(
            &format!("/api/tasks/{task}/annotations"),
            json!({"result": []}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // While it fails: the failures show on the webhook.
    let deadline = Instant::now() + PATIENCE;
    let failing = loop {
        let (_, shown) = api.get(&path).await;
        if shown["consecutive_failures"].as_u64() >= Some(2) {
            break shown;
        }
        assert!(
            Instant::now() < deadline,
            "no failed attempt shows: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(failing["delivery"]["last_status"], 500, "{failing}");
    assert!(
        failing["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{failing}"
    );
    assert_eq!(failing["delivery"]["pending"], 4, "{failing}");

    let accepted = receiver
        .wait_accepted(PATIENCE, "the four events", |r| r.len() >= 4)
        .await;
    assert_once_in_order(&accepted);
    let actions: Vec<&str> = accepted.iter().map(Received::action).collect();
    assert_eq!(
        actions,
        [
            "STORAGE_SYNC_STARTED",
            "TASKS_CREATED",
            "STORAGE_SYNC_COMPLETED",
            "ANNOTATION_CREATED"
        ]
    );
    assert_eq!(
        accepted[3].json["annotation"]["task"], task,
        "{}",
        accepted[3].json
    );
    assert!(
        receiver.received().len() > 4,
        "the failing minute saw attempts"
    );
    // Each id was attempted until accepted, and never again after.
    for event in &accepted {
        let after = receiver
            .received()
            .into_iter()
            .filter(|r| r.id == event.id && r.at > event.at)
            .count();
        assert_eq!(
            after, 0,
            "{} was sent again after it was accepted",
            event.id
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, shown) = api.get(&path).await;
    assert_eq!(
        (
            &shown["delivery"]["delivered"],
            &shown["delivery"]["pending"],
            &shown["delivery"]["failed"]
        ),
        (&json!(4), &json!(0), &json!(0)),
        "{shown}"
    );
    assert_eq!(
        (
            &shown["consecutive_failures"],
            &shown["delivery"]["last_status"]
        ),
        (&json!(0), &json!(200))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_survive_a_sigkill_and_are_delivered_once_in_order() {
    const EVENTS: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--webhook-max-backoff-seconds", "2"];
    let (mut server, api) = start(dir.path(), &data, "first", &flags);
    let receiver = Receiver::start().await;
    receiver.fail_for(Duration::from_secs(3600));
    let project = api.project().await;
    let webhook = create_webhook(&api, project, &receiver.url, json!({"secret": SECRET})).await;
    let path = format!("/api/webhooks/{}/", webhook["id"]);
    for i in 0..EVENTS {
        api.import(project, json!([{"image": format!("{i}.jpg")}]))
            .await;
    }
    let (_, shown) = api.get(&path).await;
    assert_eq!(shown["delivery"]["pending"], EVENTS, "{shown}");
    server.kill();
    receiver.recover();

    let (_restarted, api) = start(dir.path(), &data, "second", &flags);
    let accepted = receiver
        .wait_accepted(PATIENCE, "every event", |r| r.len() >= EVENTS)
        .await;
    assert_eq!(accepted.len(), EVENTS);
    assert_once_in_order(&accepted);
    accepted.iter().for_each(assert_signed);
    let seconds = (accepted.last().unwrap().at - accepted[0].at).as_secs_f64();
    eprintln!(
        "webhooks: {EVENTS} events delivered to a loopback receiver in {seconds:.2} s ({:.0} events/s)",
        EVENTS as f64 / seconds.max(1e-3)
    );
    let (_, shown) = api.get(&path).await;
    assert_eq!(shown["delivery"]["pending"], 0, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_by_a_sigkill_is_sent_again_at_once_by_the_restarted_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, api) = start(dir.path(), &data, "first", &[]);
    let receiver = Receiver::start().await;
    // The first request hangs: the server is killed while it waits.
    receiver.answer_after(Duration::from_secs(300));
    let project = api.project().await;
    create_webhook(&api, project, &receiver.url, json!({"secret": SECRET})).await;
    api.import(project, json!([{"image": "a.jpg"}])).await;
    let deadline = Instant::now() + PATIENCE;
    while receiver.received().is_empty() {
        assert!(Instant::now() < deadline, "the event was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    receiver.answer_after(Duration::ZERO);

    // Well within the claim's lease (2 × 10 s + 10 s): the embedded
    // database's only process releases its claims when it starts.
    let restarted = Instant::now();
    let (_server, _api) = start(dir.path(), &data, "second", &[]);
    let id = receiver.received()[0].id.clone();
    loop {
        let again = receiver.received().iter().filter(|r| r.id == id).count();
        if again >= 2 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "the cut delivery waited for its lease to expire"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

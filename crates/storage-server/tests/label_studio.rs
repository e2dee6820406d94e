//! This server on the database of a real, unchanged Label Studio 1.23.2
//! (`--label-studio-database-url`, `--label-studio-url`): storages made in
//! Label Studio are synced by this server into Label Studio's own tables,
//! and Label Studio's API, Data Manager and its own sync see the result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use object_store::ObjectStoreExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::buckets::s3_builder;
use support::label_studio::{LabelStudio, SyncProxy, LS_TOKEN};
use support::process::{command, Process};
use support::Api;

/// This server on `ls`'s database, authenticating through `ls`.
fn our_server(ls: &LabelStudio, dir: &Path) -> (Process, Api) {
    our_server_with(ls, dir, &[])
}

/// [`our_server`] with more flags.
fn our_server_with(ls: &LabelStudio, dir: &Path, flags: &[&str]) -> (Process, Api) {
    let mut server = command(&dir.join("ours"));
    server.args(flags);
    server
        .arg("--label-studio-database-url")
        .arg(&ls.database_url)
        .arg("--label-studio-url")
        .arg(&ls.base)
        .arg("--local-files-document-root")
        .arg(&ls.files)
        // The emulators listen on loopback.
        .args(["--allow-private-endpoints", "true"]);
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
    on_label_studio_s_postgresql(
        "label_studio",
        syncs_files_and_tasks_modes_into_label_studio,
    )
    .await;
}

/// Label Studio on a fresh database `name` of the test PostgreSQL, with
/// `test` run against it; the database is dropped afterwards.
async fn on_label_studio_s_postgresql(name: &str, test: impl AsyncFnOnce(&LabelStudio, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    let database = storage_testing::postgres::fresh_database(name).await;
    let ls = LabelStudio::start_on_postgres(dir.path(), &database).await;
    test(&ls, dir.path()).await;
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
    // Webhooks for TASKS_CREATED only, made in Label Studio.
    let receiver = support::receiver::Receiver::start().await;
    for project in [files_project, tasks_project] {
        ls.api
            .ok(
                Method::POST,
                "/api/webhooks/",
                Some(
                    json!({"project": project, "url": receiver.url, "send_payload": true,
                    "send_for_all_actions": false, "actions": ["TASKS_CREATED"]}),
                ),
            )
            .await;
    }
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
        let again = ls.own_sync(&path).await;
        assert_eq!(again["status"], "completed", "{again}");
        assert_eq!(again["last_sync_count"], 0, "{again}");
        assert_eq!(ls.tasks(project).await.len(), expected as usize);
    }

    // Files mode: the task data Label Studio resolves to its own local
    // files URL, as for the tasks of its own sync, and serves the file.
    let tasks = ls.tasks(files_project).await;
    let image = tasks[0]["data"]["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with("/data/local-files/?d="),
        "Label Studio resolves the task's file: {}",
        tasks[0]
    );
    let media = ls
        .api
        .client
        .get(format!("{}{image}", ls.base))
        .header("Authorization", format!("Token {LS_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), StatusCode::OK, "{image}");
    assert_eq!(
        media.text().await.unwrap(),
        "x",
        "the file's bytes through Label Studio"
    );
    // Its Data Manager shows the data column the summary now has.
    for (project, column) in [(files_project, "image"), (tasks_project, "n")] {
        let columns = ls
            .api
            .ok(
                Method::GET,
                &format!("/api/dm/columns?project={project}"),
                None,
            )
            .await;
        assert!(
            columns["columns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == column && c["parent"] == "data"),
            "the Data Manager's data column {column}: {columns}"
        );
    }
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

    // Label Studio's webhook got every created task, with their project's
    // counts (Label Studio's own re-syncs above created none).
    let started = std::time::Instant::now();
    loop {
        let received = receiver.received();
        let tasks = |project: i64| -> usize {
            received
                .iter()
                .filter(|r| r.action() == "TASKS_CREATED" && r.json["project"]["id"] == project)
                .map(|r| r.json["tasks"].as_array().map_or(0, Vec::len))
                .sum()
        };
        if tasks(files_project) == 100 && tasks(tasks_project) == 50 {
            let last = received
                .iter()
                .rfind(|r| r.json["project"]["id"] == tasks_project)
                .unwrap();
            assert_eq!(
                last.json["project"]["total_predictions_number"], 50,
                "{}",
                last.json
            );
            break;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "webhooks: {} for files, {} for tasks",
            tasks(files_project),
            tasks(tasks_project)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `(tasks, distinct inner ids, smallest, largest)` of `project`, read
/// from Label Studio's database.
async fn inner_ids(ls: &LabelStudio, project: i64) -> (i64, i64, i64, i64) {
    use sqlx::Connection;
    const SQL: &str = "SELECT COUNT(*), COUNT(DISTINCT inner_id), \
         CAST(COALESCE(MIN(inner_id), 0) AS BIGINT), CAST(COALESCE(MAX(inner_id), 0) AS BIGINT) \
         FROM task WHERE project_id = $1";
    if ls.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&ls.database_url).await.unwrap();
        sqlx::query_as(SQL)
            .bind(project)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&ls.database_url)
            .await
            .unwrap();
        sqlx::query_as(SQL)
            .bind(project)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_storage_made_in_label_studio_is_synced_by_this_server_with_its_credentials() {
    const SECRET: &str = "label-studio-kept-secret-0123456789";
    let moto = storage_testing::moto();
    let prefix = storage_testing::unique_prefix("label-studio-s3");
    let bucket = s3_builder(&moto).build().unwrap();
    for i in 0..20 {
        bucket
            .put(
                &object_store::path::Path::from(format!("{prefix}/img_{i:02}.jpg")),
                "jpeg".into(),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    let project = ls.project("s3 bucket").await;
    // Created through Label Studio's API, which checks the bucket itself.
    let storage = ls
        .api
        .ok(
            Method::POST,
            "/api/storages/s3",
            Some(json!({
                "project": project, "bucket": moto.bucket, "prefix": prefix,
                "use_blob_urls": true, "presign": false, "region_name": "us-east-1",
                "s3_endpoint": moto.endpoint, "aws_access_key_id": moto.access_key_id,
                // moto takes any secret: a recognisable one, looked for below.
                "aws_secret_access_key": SECRET,
            })),
        )
        .await;
    let path = format!("/api/storages/s3/{}", storage["id"]);
    let (server, ours) = our_server(&ls, dir.path());
    let answer = ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    assert_eq!(answer["id"], storage["id"]);
    assert!(
        !answer.to_string().contains(SECRET),
        "a secret in the answer: {answer}"
    );
    let synced = ls.wait_synced(&path).await;
    assert_eq!(
        synced["status"],
        "completed",
        "{synced}\n{}",
        server.log_text()
    );
    assert_eq!(synced["last_sync_count"], 20, "{synced}");
    let tasks = ls.tasks(project).await;
    assert_eq!(tasks.len(), 20);
    // Label Studio's own sync finds every object linked.
    let again = ls.own_sync(&path).await;
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(ls.tasks(project).await.len(), 20);
    assert!(!server.log_text().contains(SECRET), "the secret in the log");
}

/// Bucket event notifications (S3 through SQS, on moto) keep a storage
/// made in Label Studio in step with no sync request: objects put become
/// tasks, objects deleted take theirs with them.
#[tokio::test(flavor = "multi_thread")]
async fn s3_event_notifications_keep_a_label_studio_storage_in_step_with_no_sync_request() {
    let bucket = support::sqs::NotifiedBucket::create().await;
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    let project = ls.project("s3 events").await;
    let mut body = bucket.storage(project, &bucket.moto.endpoint, json!({"presign": false}));
    // What Label Studio has no column for is this server's, set below.
    let ours_only = ["sqs_queue_url", "on_object_deleted", "deletion_guard"];
    let settings: serde_json::Map<String, Value> = ours_only
        .iter()
        .map(|field| (field.to_string(), body[*field].take()))
        .collect();
    for field in ours_only {
        body.as_object_mut().unwrap().remove(field);
    }
    // Label Studio checks that the prefix holds an object.
    bucket
        .put(std::iter::once("in/img_0.jpg".to_string()))
        .await;
    let storage = ls
        .api
        .ok(Method::POST, "/api/storages/s3", Some(body))
        .await;
    let path = format!("/api/storages/s3/{}", storage["id"]);
    let (server, ours) = our_server(&ls, dir.path());
    let (status, answer) = ours.patch(&path, Value::Object(settings)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    assert_eq!(ls.wait_synced(&path).await["last_sync_count"], 1);

    bucket.put((1..5).map(|i| format!("in/img_{i}.jpg"))).await;
    let wait_for = |expected: usize| {
        let ls = &ls;
        let server = &server;
        async move {
            let started = std::time::Instant::now();
            loop {
                let tasks = ls.tasks_while_deleting(project).await;
                let count = tasks.as_ref().map(Vec::len);
                if let Some(tasks) = tasks.filter(|tasks| tasks.len() == expected) {
                    return tasks;
                }
                assert!(
                    started.elapsed().as_secs() < 120,
                    "{count:?} tasks, expected {expected}\n{}",
                    server.log_text()
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    wait_for(5).await;
    bucket.delete("in/img_0.jpg").await;
    let tasks = wait_for(4).await;
    assert!(
        tasks
            .iter()
            .all(|t| !t["data"].to_string().contains("img_0.jpg")),
        "{tasks:?}"
    );
    // Label Studio's own sync finds the remaining objects linked.
    let again = ls.own_sync(&path).await;
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(ls.tasks(project).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_s_sync_button_runs_this_server_s_sync_through_the_proxy_rule() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-venv/bin/python");
    assert!(
        python.exists() && Path::new("/usr/bin/chromium").exists(),
        "Chromium and Playwright are not installed: run scripts/browser.sh install (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "tasks", 3, |i| {
        json!({"image": "https://example.com/x.jpg", "caption": format!("hello-ui-{i}")})
            .to_string()
    });
    let project = ls.project("ui sync").await;
    let storage = ls.local_storage(project, "tasks", false).await;
    let (server, _) = our_server(&ls, dir.path());
    let proxy = SyncProxy::start(&ls.base, &server.base).await;

    // Kept as the test's artefacts.
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui/sync_button.py");
    let mut browser = std::process::Command::new(&python);
    browser
        .arg(&script)
        .arg(&proxy.base)
        .arg(project.to_string())
        .arg("hello-ui-0")
        .arg(&shots);
    // Off the runtime's threads: the proxy answers the browser meanwhile.
    let run = tokio::task::spawn_blocking(move || browser.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser run failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        server.log_text()
    );
    let outcome: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(outcome["sync_status"], 200, "{outcome}");
    // The button's request went to this server, which ran the sync.
    let synced = proxy.synced.lock().unwrap().clone();
    assert_eq!(
        synced,
        vec![(format!("/api/storages/localfiles/{storage}/sync"), 200)],
        "the proxy's record"
    );
    let shown = ls
        .wait_synced(&format!("/api/storages/localfiles/{storage}"))
        .await;
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["last_sync_count"], 3, "{shown}");
    assert!(
        shown["last_sync_job"].is_string(),
        "this server's job id (Label Studio's own sync without Redis leaves none): {shown}"
    );
    for shot in ["storage-settings.png", "data-manager.png"] {
        let bytes = std::fs::read(shots.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
}

/// Google's OAuth token endpoint as Label Studio's service-account
/// credentials call it (RFC 7523: a JWT bearer grant), answering a token
/// that fake-gcs does not check. It records the grants it was sent.
async fn google_token_double() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::State;
    let grants: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
    let app = axum::Router::new()
        .route(
            "/token",
            axum::routing::post(
                |State(grants): State<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
                 body: String| async move {
                    grants.lock().unwrap().push(body);
                    axum::Json(json!({"access_token": "ls-test-token", "expires_in": 3600,
                                      "token_type": "Bearer"}))
                },
            ),
        )
        .with_state(std::sync::Arc::clone(&grants));
    let (base, _server) = support::serve_on_loopback(app).await;
    (format!("{base}/token"), grants)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gcs_storage_made_in_label_studio_is_synced_by_this_server() {
    use storage_testing::gcs_shim::{GcsShim, TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM};
    let emulator = storage_testing::fake_gcs();
    let shim = GcsShim::start(&emulator.endpoint).await;
    let prefix = storage_testing::unique_prefix("label-studio-gcs");
    let bucket = shim.object_store(&emulator.bucket);
    for i in 0..12 {
        bucket
            .put(
                &object_store::path::Path::from(format!("{prefix}/img_{i:02}.jpg")),
                "jpeg".into(),
            )
            .await
            .unwrap();
    }
    let (token_uri, grants) = google_token_double().await;
    // One key for both: Label Studio's client signs in at the token
    // double and reads fake-gcs (STORAGE_EMULATOR_HOST); this server reads
    // through the write shim (`gcs_base_url`, no OAuth).
    let mut key: Value =
        serde_json::from_str(&shim.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM))
            .unwrap();
    key["token_uri"] = json!(token_uri);
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start_with_env(
        dir.path(),
        &[("STORAGE_EMULATOR_HOST", emulator.endpoint.as_str())],
    )
    .await;
    let project = ls.project("gcs bucket").await;
    let storage = ls
        .api
        .ok(
            Method::POST,
            "/api/storages/gcs",
            Some(json!({
                "project": project, "bucket": emulator.bucket, "prefix": prefix,
                "use_blob_urls": true, "presign": false,
                "google_application_credentials": key.to_string(),
                "google_project_id": "test-project",
            })),
        )
        .await;
    let path = format!("/api/storages/gcs/{}", storage["id"]);
    let (server, ours) = our_server(&ls, dir.path());
    let answer = ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    assert_eq!(answer["id"], storage["id"]);
    assert!(
        !answer.to_string().contains("PRIVATE KEY"),
        "a key in the answer: {answer}"
    );
    let synced = ls.wait_synced(&path).await;
    assert_eq!(
        synced["status"],
        "completed",
        "{synced}\n{}",
        server.log_text()
    );
    assert_eq!(synced["last_sync_count"], 12, "{synced}");
    assert_eq!(ls.tasks(project).await.len(), 12);
    // Label Studio's own sync finds every object linked.
    let again = ls.own_sync(&path).await;
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(ls.tasks(project).await.len(), 12);
    // Label Studio signed in with the key's JWT bearer grant.
    let grants = grants.lock().unwrap().clone();
    assert!(
        grants.iter().any(|g| g
            .contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
            && g.contains("assertion=")),
        "grants: {grants:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_are_whoever_label_studio_says_they_are_token_access_token_or_session() {
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "images", 3, |_| "x".into());
    let project = ls.project("auth").await;
    let storage = ls.local_storage(project, "images", true).await;
    let (server, ours) = our_server(&ls, dir.path());
    let path = format!("/api/storages/localfiles/{storage}");
    let sync = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    };
    let url = ours.url(&format!("{path}/sync"));
    let client = &ours.client;

    // The browser's session, as the UI's Sync button sends it.
    let session = ls.session().await;
    let (status, body) = sync(client.post(&url).header("Cookie", &session)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "session: {body}\n{}",
        server.log_text()
    );
    ls.wait_synced(&path).await;
    // Another site's page cannot use the browser's session.
    let (status, body) = sync(
        client
            .post(&url)
            .header("Cookie", &session)
            .header("Origin", "https://evil.example"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "cross-site: {body}");
    // A session Label Studio does not know is no session.
    let (status, body) = sync(
        client
            .post(&url)
            .header("Cookie", "sessionid=0123456789abcdefghijklmnopqrstuv"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "unknown session: {body}");

    // A personal access token's access token.
    let access = ls.access_token(&session).await;
    let (status, body) = sync(client.post(&url).bearer_auth(&access)).await;
    assert_eq!(status, StatusCode::OK, "bearer: {body}");
    ls.wait_synced(&path).await;
    let (status, body) = sync(client.post(&url).bearer_auth("not.a.jwt")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "bad bearer: {body}");

    // Nothing at all.
    let (status, body) = sync(client.post(&url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous: {body}");
    // Ids no Label Studio storage can have are not found, whatever their size.
    for id in ["0", "9223372036854775807", "99999999999999999999", "-1"] {
        let url = ours.url(&format!("/api/storages/localfiles/{id}/sync"));
        let (status, body) = sync(client.post(&url).bearer_auth(&access)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
    }
    assert_eq!(ls.tasks(project).await.len(), 3);
    // Neither the session nor the tokens reach this server's log.
    let log = server.log_text();
    for secret in [session.as_str(), access.as_str(), LS_TOKEN] {
        for part in secret.split("; ") {
            let value = part.split('=').next_back().unwrap_or(part);
            assert!(!log.contains(value), "a credential in the log:\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_midway_is_not_left_in_progress_and_ends_exact_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    // An embedded SQLite file has one server: the next start takes the
    // dead job over at once.
    killed_midway_then_finished(&ls, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_a_killed_sync_is_taken_over_once_its_lease_ends() {
    // Instances may share PostgreSQL: the job is taken over only once its
    // (2 s) lease ends.
    on_label_studio_s_postgresql("label_studio_kill", killed_midway_then_finished).await;
}

/// A sync of 100,000 files through this server, SIGKILLed once Label
/// Studio shows it running with tasks written; a new server finishes it
/// with exactly one task per file.
async fn killed_midway_then_finished(ls: &LabelStudio, dir: &Path) {
    // Enough that the sync runs for seconds, so the kill lands mid-way.
    const FILES: i64 = 100_000;
    write_files(&ls.files, "images", FILES as usize, |_| "x".into());
    let project = ls.project("killed").await;
    let storage = ls.local_storage(project, "images", true).await;
    let path = format!("/api/storages/localfiles/{storage}");
    let lease = ["--sync-lease-seconds", "2"];

    let (mut first, ours) = our_server_with(ls, dir, &lease);
    ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    // Killed once Label Studio shows the sync running with tasks written.
    let started = std::time::Instant::now();
    loop {
        let shown = ls.api.ok(Method::GET, &path, None).await;
        if shown["status"] == "in_progress" && shown["last_sync_count"].as_i64() > Some(0) {
            break;
        }
        assert_ne!(
            shown["status"], "completed",
            "the sync ended before the kill: {shown}"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "no progress shown: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.kill();
    let (written, ..) = inner_ids(ls, project).await;
    assert!(written < FILES, "killed midway: {written} tasks written");

    // The next server takes the dead job over and finishes it exactly.
    let (second, _) = our_server_with(ls, dir, &lease);
    let synced = ls.wait_synced(&path).await;
    assert_eq!(
        synced["status"],
        "completed",
        "{synced}\n{}",
        second.log_text()
    );
    assert_eq!(synced["last_sync_count"], FILES, "{synced}");
    assert_eq!(
        inner_ids(ls, project).await,
        (FILES, FILES, 1, FILES),
        "one task per file, inner ids 1..{FILES}"
    );
}

/// Rows of `sql` (SQLite) read from Label Studio's file, each column as
/// `quote()` writes it.
async fn rows(ls: &LabelStudio, sql: &str, project: i64) -> Vec<Vec<String>> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(&ls.database_url)
        .await
        .unwrap();
    let rows = sqlx::query(sql)
        .bind(project)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.iter()
        .map(|row| (0..row.len()).map(|i| row.get::<String, _>(i)).collect())
        .collect()
}

/// What must be equal, column by column, between a project synced by Label
/// Studio and one synced by this server: every column of `task`, its link
/// row, its predictions and annotations (by key and row, not by id, time
/// or job), and the project summary. JSON columns are compared as JSON
/// (`json()` writes them one way), not as the text each side wrote.
/// Of the summary's `all_data_columns` the columns are compared, not their
/// counts: Label Studio's signals count some tasks twice (101 for 100
/// tasks with annotations), this server counts each task once (checked
/// below). `task.updated_by_id` is left out: Label Studio writes the user whose
/// request ran the sync when it syncs inside the request, and no one from
/// its background worker; this server writes the last annotation's author.
const PARITY: &[(&str, &str)] = &[
    (
        "task",
        "SELECT quote(l.key), quote(l.row_index), quote(l.row_group), quote(l.object_exists), \
         quote(json(t.data)), quote(t.is_labeled), quote(json(t.meta)), quote(t.overlap), \
         quote(t.file_upload_id), quote(t.total_annotations), \
         quote(t.cancelled_annotations), quote(t.total_predictions), quote(t.comment_count), \
         quote(t.last_comment_updated_at), quote(t.unresolved_comment_count), \
         quote(t.precomputed_agreement), quote(t.allow_skip) \
         FROM task t JOIN io_storages_localfilesimportstoragelink l ON l.task_id = t.id \
         WHERE t.project_id = $1 ORDER BY l.key, l.row_index",
    ),
    (
        "inner ids",
        "SELECT quote(inner_id) FROM task WHERE project_id = $1 ORDER BY inner_id",
    ),
    (
        "prediction",
        "SELECT quote(l.key), quote(json(p.result)), quote(p.score), quote(p.model_version), \
         quote(p.cluster), quote(p.mislabeling), quote(p.neighbors), quote(p.model_run_id), \
         quote(p.model_id), quote(p.project_id = t.project_id) \
         FROM prediction p JOIN task t ON t.id = p.task_id \
         JOIN io_storages_localfilesimportstoragelink l ON l.task_id = t.id \
         WHERE t.project_id = $1 ORDER BY l.key, p.id",
    ),
    (
        "task_completion",
        "SELECT quote(l.key), quote(json(a.result)), quote(a.was_cancelled), \
         quote(json(a.prediction)), quote(a.lead_time), quote(a.result_count), \
         quote(a.completed_by_id), quote(a.ground_truth), quote(a.parent_prediction_id), \
         quote(a.last_action), quote(a.last_created_by_id), quote(a.updated_by_id), \
         quote(a.draft_created_at), quote(a.import_id), quote(a.bulk_created), \
         quote(a.parent_annotation_id), quote(a.project_id = t.project_id), \
         quote(length(a.unique_id)) \
         FROM task_completion a JOIN task t ON t.id = a.task_id \
         JOIN io_storages_localfilesimportstoragelink l ON l.task_id = t.id \
         WHERE t.project_id = $1 ORDER BY l.key, a.id",
    ),
    (
        "projects_projectsummary",
        "SELECT (SELECT group_concat(key) FROM json_each(all_data_columns)), \
         quote(json(common_data_columns)), \
         quote(json(created_annotations)), quote(json(created_labels)), \
         quote(json(created_labels_drafts)) \
         FROM projects_projectsummary WHERE project_id = $1",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn label_studio_s_own_sync_and_this_server_write_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "images", 100, |_| "x".into());
    write_files(&ls.files, "tasks", 100, |i| {
        let choice = json!([{"from_name": "c", "to_name": "image", "type": "choices",
                             "value": {"choices": ["a"]}}]);
        let mut task = json!({
            "data": {"image": format!("https://example.com/{i}.jpg"), "n": i},
            "predictions": [{"model_version": "m1", "score": 0.5, "result": choice}],
        });
        if i % 2 == 0 {
            task["annotations"] = json!([{"result": choice, "completed_by": 1, "lead_time": 2.5}]);
        }
        task.to_string()
    });
    let (_server, ours) = our_server(&ls, dir.path());
    for (folder, use_blob_urls) in [("images", true), ("tasks", false)] {
        let theirs_project = ls.project(&format!("{folder} by Label Studio")).await;
        let theirs = ls
            .local_storage(theirs_project, folder, use_blob_urls)
            .await;
        let ours_project = ls.project(&format!("{folder} by this server")).await;
        let ours_storage = ls.local_storage(ours_project, folder, use_blob_urls).await;

        let path = format!("/api/storages/localfiles/{theirs}");
        ls.api.ok(Method::POST, &format!("{path}/sync"), None).await;
        let by_label_studio = ls.wait_synced(&path).await;
        let path = format!("/api/storages/localfiles/{ours_storage}");
        ours.ok(Method::POST, &format!("{path}/sync"), None).await;
        let by_us = ls.wait_synced(&path).await;
        for key in ["status", "last_sync_count"] {
            assert_eq!(
                by_us[key], by_label_studio[key],
                "{folder}: {key}\nLabel Studio: {by_label_studio}\nthis server: {by_us}"
            );
        }
        for (table, sql) in PARITY {
            let expected = rows(&ls, sql, theirs_project).await;
            assert!(
                !expected.is_empty() || *table != "task",
                "{folder}: no tasks"
            );
            assert_eq!(
                rows(&ls, sql, ours_project).await,
                expected,
                "{folder}: {table} differs from Label Studio's own sync"
            );
        }
        let counts = rows(
            &ls,
            "SELECT quote(json(all_data_columns)) FROM projects_projectsummary \
             WHERE project_id = $1",
            ours_project,
        )
        .await;
        let expected = if folder == "images" {
            r#"'{"$undefined$":100}'"#
        } else {
            r#"'{"image":100,"n":100}'"#
        };
        assert_eq!(
            counts,
            vec![vec![expected.to_string()]],
            "{folder}: one count a task"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_sync_writes_label_studio_s_annotations_as_its_own_export_sync_does() {
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "images", 3, |_| "x".into());
    let project = ls.project("export").await;
    let import = ls.local_storage(project, "images", true).await;
    let (server, ours) = our_server(&ls, dir.path());
    let path = format!("/api/storages/localfiles/{import}");
    ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    ls.wait_synced(&path).await;
    // Annotations made in Label Studio, before its export storages exist.
    let mut annotations = Vec::new();
    for task in ls.tasks(project).await {
        let annotation = ls
            .api
            .ok(
                Method::POST,
                &format!("/api/tasks/{}/annotations", task["id"]),
                Some(json!({"result": [{"from_name": "c", "to_name": "image",
                    "type": "choices", "value": {"choices": ["a"]}}], "lead_time": 1.5})),
            )
            .await;
        annotations.push(annotation["id"].as_i64().unwrap());
    }
    let mut written = Vec::new();
    let mut export_paths = Vec::new();
    for (folder, engine) in [("by-label-studio", &ls.api), ("by-this-server", &ours)] {
        std::fs::create_dir_all(ls.files.join(folder)).unwrap();
        let storage = ls
            .api
            .ok(
                Method::POST,
                "/api/storages/export/localfiles",
                Some(json!({"project": project, "path": ls.files.join(folder)})),
            )
            .await;
        let path = format!("/api/storages/export/localfiles/{}", storage["id"]);
        export_paths.push(path.clone());
        let answer = engine.ok(Method::POST, &format!("{path}/sync"), None).await;
        assert_eq!(answer["id"], storage["id"], "{answer}");
        let synced = ls.wait_synced(&path).await;
        assert_eq!(
            synced["status"],
            "completed",
            "{synced}\n{}",
            server.log_text()
        );
        let mut files = std::collections::BTreeMap::new();
        for id in &annotations {
            let text = std::fs::read_to_string(ls.files.join(folder).join(id.to_string()))
                .unwrap_or_else(|_| panic!("annotation {id} not written {folder}"));
            let mut payload: Value = serde_json::from_str(&text).unwrap();
            // Relative to when it was written.
            payload.as_object_mut().unwrap().remove("created_ago");
            files.insert(*id, payload);
        }
        written.push(files);
    }
    assert_eq!(
        written[1], written[0],
        "this server's export equals Label Studio's own"
    );
    // Export link rows as Label Studio keeps them: one per annotation and
    // storage, renewed (not added) by the next sync.
    ours.ok(Method::POST, &format!("{}/sync", export_paths[1]), None)
        .await;
    ls.wait_synced(&export_paths[1]).await;
    let links = rows(
        &ls,
        "SELECT quote(COUNT(*)), quote(COUNT(DISTINCT annotation_id)) \
         FROM io_storages_localfilesexportstoragelink WHERE object_exists AND storage_id > $1 \
         GROUP BY storage_id ORDER BY storage_id",
        0,
    )
    .await;
    let three = vec!["3".to_string(), "3".to_string()];
    assert_eq!(
        links,
        vec![three.clone(), three],
        "export links of both storages"
    );
    assert_eq!(
        written[1][&annotations[0]]["completed_by"]["email"],
        "admin@example.com"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_fires_label_studio_s_tasks_created_webhooks_as_its_own_sync_does() {
    let receiver = support::receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "images", 5, |_| "x".into());
    let (server, ours) = our_server(&ls, dir.path());
    let mut bodies = Vec::new();
    for (title, engine) in [
        ("hooks by Label Studio", &ls.api),
        ("hooks by this server", &ours),
    ] {
        let project = ls.project(title).await;
        // A project webhook, made in Label Studio.
        ls.api
            .ok(
                Method::POST,
                "/api/webhooks/",
                Some(
                    json!({"project": project, "url": receiver.url, "send_payload": true,
                    "send_for_all_actions": true, "headers": {"X-From": title}}),
                ),
            )
            .await;
        let storage = ls.local_storage(project, "images", true).await;
        let path = format!("/api/storages/localfiles/{storage}");
        engine.ok(Method::POST, &format!("{path}/sync"), None).await;
        ls.wait_synced(&path).await;
        let started = std::time::Instant::now();
        let received = loop {
            let received: Vec<_> = receiver
                .received()
                .into_iter()
                .filter(|r| r.headers.get("x-from").map(String::as_str) == Some(title))
                .filter(|r| r.action() == "TASKS_CREATED")
                .collect();
            if !received.is_empty() {
                break received;
            }
            assert!(
                started.elapsed().as_secs() < 30,
                "no TASKS_CREATED for {title}:\n{}",
                server.log_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(received.len(), 1, "one webhook for one batch of {title}");
        bodies.push(received[0].json.clone());
    }
    let keys = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let (theirs, ours) = (&bodies[0], &bodies[1]);
    assert_eq!(keys(ours), keys(theirs), "the body's keys");
    assert_eq!(
        keys(&ours["project"]),
        keys(&theirs["project"]),
        "the project's keys"
    );
    assert_eq!(ours["tasks"].as_array().unwrap().len(), 5);
    assert_eq!(
        keys(&ours["tasks"][0]),
        keys(&theirs["tasks"][0]),
        "a task's keys"
    );
    // The same values where the projects and tasks are alike.
    for key in [
        "label_config",
        "data_types",
        "maximum_annotations",
        "organization",
        "created_by",
    ] {
        assert_eq!(
            ours["project"][key], theirs["project"][key],
            "project {key}"
        );
    }
    assert_eq!(ours["project"]["task_number"], 5);
    assert_eq!(
        ours["tasks"][0]["data"], theirs["tasks"][0]["data"],
        "task data shown alike"
    );
    for secret in ["token", "task_data_login", "task_data_password"] {
        assert_eq!(ours["project"][secret], Value::Null, "{secret} withheld");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn label_studio_s_own_sync_is_never_taken_over_by_this_server() {
    // Enough that Label Studio's own sync runs for seconds.
    const FILES: i64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "images", FILES as usize, |_| "x".into());
    let project = ls.project("left alone").await;
    let storage = ls.local_storage(project, "images", true).await;
    // Running beside it, with a lease short enough to take over a sync
    // it thought dead.
    let mut command = command(&dir.path().join("ours"));
    command
        .arg("--label-studio-database-url")
        .arg(&ls.database_url)
        .arg("--label-studio-url")
        .arg(&ls.base)
        .arg("--local-files-document-root")
        .arg(&ls.files)
        .args(["--sync-lease-seconds", "2"])
        .env("RUST_LOG", "info");
    let server = Process::start(command, dir.path(), "ours");

    let path = format!("/api/storages/localfiles/{storage}");
    let synced = ls.api.ok(Method::POST, &format!("{path}/sync"), None).await;
    let synced = if synced["status"] == "completed" {
        synced
    } else {
        ls.wait_synced(&path).await
    };
    assert_eq!(synced["status"], "completed", "{synced}");
    assert_eq!(synced["last_sync_count"], FILES, "{synced}");
    assert_eq!(
        synced["last_sync_job"],
        Value::Null,
        "Label Studio's own job: {synced}"
    );
    assert_eq!(
        inner_ids(&ls, project).await,
        (FILES, FILES, 1, FILES),
        "one task per file"
    );
    let log = server.log_text();
    assert!(
        !log.contains("sync started"),
        "this server ran a sync:\n{log}"
    );
    assert!(
        !log.contains("resuming"),
        "this server took a sync over:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_label_studio_schema_it_was_not_tested_with_is_refused_naming_what_was_found() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("label_studio.sqlite3");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT);
         INSERT INTO django_migrations (app, name, applied) VALUES
           ('io_storages', '0022_normalize_localfiles_paths', '2026-01-01'),
           ('io_storages', '0023_a_future_change', '2026-06-01'),
           ('tasks', '0060_add_allow_skip_to_task', '2026-01-01');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let before = std::fs::read(&file).unwrap();

    let output = command(&dir.path().join("ours"))
        .arg("--label-studio-database-url")
        .arg(format!("sqlite://{}", file.display()))
        .args(["--label-studio-url", "http://127.0.0.1:9"])
        .args(["--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "refused");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("io_storages 0023_a_future_change"), "{said}");
    assert!(said.contains("1.23.x"), "{said}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "nothing written to it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn this_server_s_own_settings_of_a_label_studio_storage_are_kept_beside_it_and_a_schedule_runs(
) {
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    write_files(&ls.files, "images", 4, |_| "x".into());
    let project = ls.project("scheduled").await;
    let storage = ls.local_storage(project, "images", true).await;
    let (server, ours) = our_server_with(&ls, dir.path(), &["--min-sync-interval", "1"]);
    let path = format!("/api/storages/localfiles/{storage}");

    // What Label Studio keeps is edited in Label Studio only.
    for (field, value) in [("path", json!("/elsewhere")), ("title", json!("renamed"))] {
        let (status, body) = ours.patch(&path, json!({ field: value })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(body.to_string().contains(field), "names {field}: {body}");
    }
    // Storages are made and deleted in Label Studio: a clear 400 here, and
    // nothing written.
    let (status, body) = ours
        .post(
            "/api/storages/localfiles",
            json!({"project": project, "path": ls.files.join("images"), "use_blob_urls": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("in Label Studio"), "{body}");
    let (status, body) = ours.delete(&path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let listed = ls
        .api
        .ok(
            Method::GET,
            &format!("/api/storages/localfiles?project={project}"),
            None,
        )
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    // Sharded listing needs a shard queue this database has no table for:
    // refused by name rather than ignored.
    ls.api
        .ok(
            Method::PATCH,
            &path,
            Some(json!({"recursive_scan": true, "path": ls.files.join("images")})),
        )
        .await;
    let (status, body) = ours
        .patch(
            &path,
            json!({"shard_listing": true, "recursive_scan": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains("shard_listing")
            && body.to_string().contains("Label Studio's database"),
        "{body}"
    );
    // A schedule is this server's own: kept in its table, not Label Studio's.
    let (status, body) = ours.patch(&path, json!({"sync_interval": 1})).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", server.log_text());
    assert_eq!(body["sync_interval"], 1, "{body}");
    assert_eq!(
        body["path"],
        ls.files.join("images").to_str().unwrap(),
        "{body}"
    );
    let shown = ls.api.ok(Method::GET, &path, None).await;
    assert!(
        shown.get("sync_interval").is_none(),
        "Label Studio's row: {shown}"
    );
    assert_eq!(shown["title"], "images", "{shown}");

    // Synced on schedule, with no sync request.
    let started = std::time::Instant::now();
    while ls.tasks(project).await.len() < 4 {
        assert!(
            started.elapsed().as_secs() < 60,
            "no scheduled sync:\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, again) = ours.get(&path).await;
    assert_eq!(again["sync_interval"], 1, "kept: {again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_and_deleted_objects_update_mark_and_delete_label_studio_s_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let ls = LabelStudio::start(dir.path()).await;
    follows_the_folder(&ls, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_following_on_label_studio_s_postgresql_database() {
    on_label_studio_s_postgresql("label_studio_follow", follows_the_folder).await;
}

/// One number read from Label Studio's database, SQLite or PostgreSQL.
async fn count_rows(ls: &LabelStudio, sql: &str) -> i64 {
    use sqlx::Connection;
    if ls.database_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&ls.database_url)
            .await
            .unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(&ls.database_url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// The project summary's `all_data_columns`, through Label Studio's API.
async fn summary_columns(ls: &LabelStudio, project: i64) -> Value {
    let summary = ls
        .api
        .ok(
            Method::GET,
            &format!("/api/projects/{project}/summary/"),
            None,
        )
        .await;
    summary["all_data_columns"].clone()
}

/// A task file of one task whose data is `data`.
fn task_file(data: Value) -> String {
    json!({"data": data}).to_string()
}

/// This server's change and deletion policies and its folder watch on a
/// storage made in Label Studio: changed task files update the tasks
/// without annotations, annotated tasks of gone objects are kept and
/// marked, the others deleted as Label Studio deletes a task (its
/// `TASKS_DELETED` webhook, its summary), and Label Studio's own sync
/// still finds every object linked.
async fn follows_the_folder(ls: &LabelStudio, dir: &Path) {
    let folder = ls.files.join("followed");
    std::fs::create_dir_all(&folder).unwrap();
    let image = |i: usize| format!("https://example.com/{i}.jpg");
    for i in 0..4 {
        std::fs::write(
            folder.join(format!("task_{i}.json")),
            task_file(json!({"image": image(i), "n": i})),
        )
        .unwrap();
    }
    // File 0's task has a prediction: deleting the task deletes it too.
    std::fs::write(
        folder.join("task_0.json"),
        json!({"data": {"image": image(0), "n": 0},
               "predictions": [{"model_version": "m1", "result": []}]})
        .to_string(),
    )
    .unwrap();
    let rows = |n: usize| {
        Value::Array(
            (0..n)
                .map(|r| json!({"image": image(10 + r), "n": 10 + r}))
                .collect(),
        )
        .to_string()
    };
    std::fs::write(folder.join("rows.json"), rows(3)).unwrap();
    let project = ls.project("followed").await;
    let storage = ls.local_storage(project, "followed", false).await;
    let receiver = support::receiver::Receiver::start().await;
    ls.api
        .ok(
            Method::POST,
            "/api/webhooks/",
            Some(
                json!({"project": project, "url": receiver.url, "send_payload": true,
                "send_for_all_actions": false, "actions": ["TASKS_DELETED"]}),
            ),
        )
        .await;
    let (server, ours) = our_server(ls, dir);
    let path = format!("/api/storages/localfiles/{storage}");
    let (status, body) = ours
        .patch(
            &path,
            json!({"on_object_changed": "update", "on_object_deleted": "delete",
                   "deletion_guard": 100}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    let synced = ls.wait_synced(&path).await;
    assert_eq!(
        synced["last_sync_count"],
        7,
        "{synced}\n{}",
        server.log_text()
    );

    let by_n = |tasks: &[Value], n: i64| {
        tasks
            .iter()
            .find(|t| t["data"]["n"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no task n={n} in {tasks:?}"))
    };
    let tasks = ls.tasks(project).await;
    let annotated = by_n(&tasks, 1)["id"].as_i64().unwrap();
    let deleted = [
        by_n(&tasks, 0)["id"].as_i64().unwrap(),
        by_n(&tasks, 12)["id"].as_i64().unwrap(),
    ];
    ls.api
        .ok(
            Method::POST,
            &format!("/api/tasks/{annotated}/annotations/"),
            Some(
                json!({"result": [{"from_name": "c", "to_name": "image", "type": "choices",
                                    "value": {"choices": ["a"]}}]}),
            ),
        )
        .await;

    let columns = summary_columns(ls, project).await;
    // Gone: an unannotated file (deleted with its prediction), an
    // annotated one (kept, marked) and the last row of rows.json. Changed:
    // file 2's data and row 0's.
    std::fs::remove_file(folder.join("task_0.json")).unwrap();
    std::fs::remove_file(folder.join("task_1.json")).unwrap();
    std::fs::write(
        folder.join("task_2.json"),
        task_file(json!({"image": image(2), "m": "changed"})),
    )
    .unwrap();
    let mut two_rows: Vec<Value> = serde_json::from_str(&rows(2)).unwrap();
    two_rows[0]["n"] = json!(100);
    std::fs::write(folder.join("rows.json"), Value::Array(two_rows).to_string()).unwrap();

    ours.ok(Method::POST, &format!("{path}/sync"), None).await;
    let synced = ls.wait_synced(&path).await;
    assert_eq!(
        synced["status"],
        "completed",
        "{synced}\n{}",
        server.log_text()
    );
    let tasks = ls.tasks(project).await;
    let mut shown: Vec<Value> = tasks.iter().map(|t| t["data"].clone()).collect();
    shown.sort_by_key(|data| data["image"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        shown,
        vec![
            json!({"image": image(1), "n": 1}),
            json!({"image": image(10), "n": 100}),
            json!({"image": image(11), "n": 11}),
            json!({"image": image(2), "m": "changed"}),
            json!({"image": image(3), "n": 3}),
        ],
        "Label Studio's tasks: {tasks:?}\n{}",
        server.log_text()
    );
    let links = "io_storages_localfilesimportstoragelink";
    assert_eq!(
        count_rows(
            ls,
            &format!(
                "SELECT COUNT(*) FROM {links} WHERE task_id = {annotated} AND NOT object_exists"
            )
        )
        .await,
        1,
        "the annotated task of a gone file is marked"
    );
    assert_eq!(
        count_rows(
            ls,
            &format!(
                "SELECT COUNT(*) FROM prediction WHERE task_id = {}",
                deleted[0]
            )
        )
        .await,
        0,
        "a deleted task's prediction goes with it"
    );
    // Label Studio's own deletion webhook, with the deleted ids.
    let hooks = receiver
        .wait_accepted(std::time::Duration::from_secs(30), "TASKS_DELETED", |got| {
            got.iter()
                .map(|hook| hook.json["tasks"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
                >= 2
        })
        .await;
    let mut ids: Vec<i64> = hooks
        .iter()
        .flat_map(|hook| hook.json["tasks"].as_array().cloned().unwrap_or_default())
        .map(|task| task["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    let mut deleted = deleted.to_vec();
    deleted.sort_unstable();
    assert_eq!(
        ids,
        deleted,
        "{:?}",
        hooks.iter().map(|h| &h.json).collect::<Vec<_>>()
    );
    assert_eq!(hooks[0].action(), "TASKS_DELETED");
    assert_eq!(hooks[0].json["project"]["id"], project);
    // The summary's data columns follow: two tasks with `image` and `n`
    // deleted, one whose `n` became `m`. (Label Studio's own annotation
    // save counted the annotated task's columns once more: compared with
    // the summary before the changes.)
    let after = summary_columns(ls, project).await;
    assert_eq!(
        after,
        json!({"image": columns["image"].as_i64().unwrap() - 2,
               "n": columns["n"].as_i64().unwrap() - 3, "m": 1}),
        "before: {columns}"
    );

    // Label Studio's own sync still finds every object linked.
    let again = ls.own_sync(&path).await;
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(ls.tasks(project).await.len(), 5);

    // Watched: a new file becomes a task and a deleted one's task goes,
    // with no sync request.
    let (status, body) = ours.patch(&path, json!({"watch": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    std::fs::write(
        folder.join("task_9.json"),
        task_file(json!({"image": image(9), "n": 9})),
    )
    .unwrap();
    std::fs::remove_file(folder.join("task_3.json")).unwrap();
    let started = std::time::Instant::now();
    loop {
        let tasks = ls.tasks_while_deleting(project).await.unwrap_or_default();
        let ns: Vec<&Value> = tasks.iter().map(|t| &t["data"]["n"]).collect();
        if ns.contains(&&json!(9)) && !ns.contains(&&json!(3)) {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the watch did not apply: {ns:?}\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

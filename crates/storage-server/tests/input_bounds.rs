//! Input bounds of issue 12 (finding 9 and the bucket names of finding 13)
//! over a real socket: a `prefix` longer than an object key may be, an
//! empty `gcs_base_url` in a key JSON, and the bucket names `.` and `..`
//! are 400s naming their field on every storage route, never a dropped
//! connection or a 500.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::{Backend, EndpointPolicy};
use storage_gcs::{GcsBackend, GcsOptions};
use storage_gcs_sa::GcsSaBackend;
use storage_s3::{S3Backend, S3Options};
use storage_testing::gcs_shim::{TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM};
use support::{envelope, fast_runner, Server};

const TARGET: &str = "target@project.iam.gserviceaccount.com";

async fn server() -> Server {
    let open = EndpointPolicy::allow_private();
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(S3Backend::new(S3Options::new().with_endpoint_policy(open))),
        Arc::new(GcsBackend::new(
            GcsOptions::new().with_endpoint_policy(open),
        )),
        Arc::new(GcsSaBackend::new(
            GcsOptions::new().with_endpoint_policy(open),
        )),
    ];
    Server::start_with(tempfile::tempdir().unwrap(), fast_runner(), backends).await
}

fn gcs_key(base_url: Option<&str>) -> String {
    let mut key = json!({"type": "service_account", "client_email": TEST_CLIENT_EMAIL,
                         "private_key": TEST_PRIVATE_KEY_PEM, "private_key_id": "k",
                         "disable_oauth": true});
    if let Some(base) = base_url {
        key["gcs_base_url"] = json!(base);
    }
    key.to_string()
}

/// A valid body of each bucket backend, with `extra` fields on top.
fn bodies(project: i64, extra: &Value) -> Vec<(&'static str, Value)> {
    let mut out = vec![
        (
            "s3",
            json!({"project": project, "bucket": "bkt", "s3_endpoint": "http://127.0.0.1:9",
                   "aws_access_key_id": "k", "aws_secret_access_key": "s"}),
        ),
        (
            "gcs",
            json!({"project": project, "bucket": "bkt",
                   "google_application_credentials": gcs_key(Some("http://127.0.0.1:9"))}),
        ),
        (
            "gcs_sa",
            json!({"project": project, "bucket": "bkt", "target_service_account_email": TARGET}),
        ),
    ];
    for (_, body) in &mut out {
        for (field, value) in extra.as_object().unwrap() {
            body[field] = value.clone();
        }
    }
    out
}

/// Every route that takes storage settings: create and validate (import
/// and export) of each bucket backend, and PATCH of an S3 storage on moto.
async fn expect_field_error(
    server: &Server,
    project: i64,
    extra: Value,
    field: &str,
) -> Vec<String> {
    let moto = storage_testing::moto();
    let (status, created) = server
        .post(
            "/api/storages/s3",
            json!({"project": project, "bucket": moto.bucket, "s3_endpoint": moto.endpoint,
                   "aws_access_key_id": moto.access_key_id,
                   "aws_secret_access_key": moto.secret_access_key, "region_name": "us-east-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let existing = format!("/api/storages/s3/{}", created["id"]);
    let mut calls = Vec::new();
    for (backend, body) in bodies(project, &extra) {
        for route in [
            format!("/api/storages/{backend}"),
            format!("/api/storages/{backend}/validate"),
            format!("/api/storages/export/{backend}"),
            format!("/api/storages/export/{backend}/validate"),
        ] {
            calls.push(("POST", route, body.clone()));
        }
    }
    calls.push(("PATCH", existing.clone(), extra.clone()));
    let mut messages = Vec::new();
    for (method, route, body) in calls {
        let (status, answer) = if method == "POST" {
            server.post(&route, body).await
        } else {
            server.patch(&route, body).await
        };
        let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
        let message = errors[field][0]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {route}: no {field} error: {answer}"));
        messages.push(message.to_string());
    }
    assert_eq!(
        server.get(&existing).await.0,
        StatusCode::OK,
        "still serving"
    );
    messages
}

#[tokio::test]
async fn a_prefix_longer_than_an_object_key_is_a_400_naming_prefix() {
    let server = server().await;
    let project = server.project().await;
    // Over S3's and GCS's 1,024-byte key limit, in bytes (two-byte `é`), and
    // far over the URI limit once percent-encoded.
    for prefix in ["a".repeat(1025), "é".repeat(513), "%".repeat(70_000)] {
        for message in
            expect_field_error(&server, project, json!({ "prefix": prefix }), "prefix").await
        {
            assert!(message.contains("1024 bytes"), "{message}");
            assert!(
                !message.contains(&prefix),
                "the prefix is not echoed: {message}"
            );
        }
    }
    // At the limit: no prefix error (the closed endpoint fails later).
    let (status, answer) = server
        .post(
            "/api/storages/s3/validate",
            bodies(project, &json!({ "prefix": "é".repeat(512) }))[0]
                .1
                .clone(),
        )
        .await;
    assert!(
        answer["validation_errors"].get("prefix").is_none(),
        "{status}: {answer}"
    );
}

#[tokio::test]
async fn an_empty_gcs_base_url_is_a_400_naming_the_credentials() {
    let server = server().await;
    let project = server.project().await;
    for base in ["", "  "] {
        let body = json!({"project": project, "bucket": "bkt",
                          "google_application_credentials": gcs_key(Some(base))});
        for route in [
            "/api/storages/gcs",
            "/api/storages/gcs/validate",
            "/api/storages/export/gcs",
        ] {
            let (status, answer) = server.post(route, body.clone()).await;
            let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
            let message = errors["google_application_credentials"][0]
                .as_str()
                .unwrap();
            assert!(message.contains("gcs_base_url"), "{route}: {message}");
            assert!(!message.contains("PRIVATE KEY"), "{message}");
        }
    }
    // Other URLs a client cannot use are refused as well, never a panic.
    for base in ["relative/path", "http://", "ftp://127.0.0.1:9"] {
        let body = json!({"project": project, "bucket": "bkt",
                          "google_application_credentials": gcs_key(Some(base))});
        let (status, answer) = server.post("/api/storages/gcs/validate", body).await;
        let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
        assert!(
            errors["google_application_credentials"][0].is_string(),
            "{base}: {answer}"
        );
    }
    // Without the field, the default endpoint is used: no credentials error.
    let body = json!({"project": project, "bucket": "bkt", "google_application_credentials": gcs_key(None)});
    let (_, answer) = server.post("/api/storages/gcs/validate", body).await;
    assert!(
        answer["validation_errors"]
            .get("google_application_credentials")
            .is_none(),
        "{answer}"
    );
}

#[tokio::test]
async fn the_bucket_names_dot_and_dot_dot_are_refused() {
    let server = server().await;
    let project = server.project().await;
    for bucket in [".", ".."] {
        for message in
            expect_field_error(&server, project, json!({ "bucket": bucket }), "bucket").await
        {
            assert!(message.contains("Invalid bucket name"), "{message}");
        }
    }
}

/// Issue 12, finding 13: the documented `presign_ttl` bound is the one
/// enforced (7 days), wherever the field appears. `openapi.rs` proves the
/// file is what the server serves.
#[test]
fn the_documented_presign_ttl_maximum_is_the_enforced_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut maxima = Vec::new();
    fn walk(value: &Value, maxima: &mut Vec<Value>) {
        match value {
            Value::Object(map) => {
                if let Some(ttl) = map.get("presign_ttl") {
                    maxima.push(ttl["maximum"].clone());
                }
                map.values().for_each(|v| walk(v, maxima));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, maxima)),
            _ => {}
        }
    }
    walk(&doc, &mut maxima);
    assert!(!maxima.is_empty());
    assert!(maxima.iter().all(|max| *max == json!(10080)), "{maxima:?}");
}

/// Issue 12, finding 13: a local file whose name cannot become a task URL
/// (control characters, not UTF-8) is reported by name (escaped) in
/// `traceback` and counted in `meta.files_failed`, in Files and Tasks
/// mode, in the folder itself and (with `recursive_scan`) in its
/// subfolders; the other files are imported; folders with such names are
/// not files and are not reported (a recursive listing looks inside them).
#[cfg(unix)]
#[tokio::test]
async fn local_file_names_that_cannot_become_task_urls_are_reported() {
    use std::os::unix::ffi::OsStrExt;

    let server = Server::start().await;
    let project = server.project().await;
    for (folder, use_blob_urls, good) in [("media", true, "ok.jpg"), ("tasks", false, "ok.json")] {
        let dir = server.root.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(good), r#"{"text": "ok"}"#).unwrap();
        std::fs::write(dir.join("line\nbreak.json"), "{}").unwrap();
        std::fs::write(
            dir.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9.json")),
            "{}",
        )
        .unwrap();
        std::fs::create_dir(dir.join("folder\tname")).unwrap();

        let path = server.local_storage(project, folder, use_blob_urls).await;
        let done = server.sync_and_wait(&path).await;
        assert_eq!(done["status"], "completed_with_errors", "{done}");
        assert_eq!(done["last_sync_count"], 1, "{done}");
        assert_eq!(done["meta"]["files_failed"], 2, "{done}");
        let base = server.path(folder);
        let traceback: Vec<&str> = done["traceback"].as_str().unwrap().lines().collect();
        assert_eq!(
            traceback,
            vec![
                format!("{base}/latin1-\\xe9.json: the file name is not valid UTF-8, so it cannot become a task; rename the file"),
                format!("{base}/line\\nbreak.json: the file name has control characters or other bytes a task URL cannot carry, so it cannot become a task; rename the file"),
            ],
            "{folder}"
        );
    }

    let nested = server.root.join("nested");
    for (dir, good) in [("", "top.json"), ("sub/deeper", "deep.json")] {
        let dir = nested.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(good), r#"{"text": "ok"}"#).unwrap();
        std::fs::write(dir.join("tab\there.json"), "{}").unwrap();
    }
    let bad_folder = nested.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&bad_folder).unwrap();
    std::fs::write(bad_folder.join("inside.json"), r#"{"text": "ok"}"#).unwrap();
    let path = server
        .create_storage(
            "/api/storages/localfiles",
            json!({"project": project, "path": server.path("nested"), "use_blob_urls": false,
                   "recursive_scan": true}),
        )
        .await;
    let done = server.sync_and_wait(&path).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["last_sync_count"], 2, "{done}");
    assert_eq!(done["meta"]["files_failed"], 3, "{done}");
    let base = server.path("nested");
    let mut traceback: Vec<&str> = done["traceback"].as_str().unwrap().lines().collect();
    traceback.sort_unstable();
    assert_eq!(
        traceback,
        vec![
            format!("{base}/caf\\xe9/inside.json: the file name is not valid UTF-8, so it cannot become a task; rename the file"),
            format!("{base}/sub/deeper/tab\\there.json: the file name has control characters or other bytes a task URL cannot carry, so it cannot become a task; rename the file"),
            format!("{base}/tab\\there.json: the file name has control characters or other bytes a task URL cannot carry, so it cannot become a task; rename the file"),
        ],
    );
}

/// Issue 12, finding 13: `/metrics` counts every organisation's syncs, so
/// by default only an administrator's token (the admin user) or the scrape
/// token reads it; any other user's token gets 403, in the admin's
/// organisation or another.
#[tokio::test]
async fn metrics_need_an_administrator_or_the_scrape_token() {
    use reqwest::Method;
    use storage_api::{MetricsAccess, MetricsToken};
    use storage_core::persist::Authenticator as _;

    for metrics in [
        None,
        Some(MetricsAccess::Token(MetricsToken::new("scrape-7c1"))),
    ] {
        let scrape = metrics.is_some();
        let setup = support::Setup {
            metrics,
            ..support::Setup::default()
        };
        let server = Server::start_setup(tempfile::tempdir().unwrap(), setup).await;
        let admin = server
            .db
            .authenticate(support::TOKEN)
            .await
            .unwrap()
            .unwrap();
        let member = server
            .db
            .ensure_user("member@example.com", admin.organization_id)
            .await
            .unwrap();
        server
            .db
            .set_user_token(member, "member-token")
            .await
            .unwrap();
        let other_org = server.db.ensure_organization("other").await.unwrap();
        let stranger = server
            .db
            .ensure_user("stranger@example.com", other_org)
            .await
            .unwrap();
        server
            .db
            .set_user_token(stranger, "stranger-token")
            .await
            .unwrap();

        let status = |header: String| {
            let server = &server;
            async move {
                server
                    .raw(Method::GET, "/metrics", None, Some(&header))
                    .await
                    .status()
            }
        };
        assert_eq!(
            status(format!("Token {}", support::TOKEN)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(format!("Bearer {}", support::TOKEN)).await,
            StatusCode::OK
        );
        for user in ["member-token", "stranger-token"] {
            let (status, answer) = {
                let response = server
                    .raw(
                        Method::GET,
                        "/metrics",
                        None,
                        Some(&format!("Token {user}")),
                    )
                    .await;
                (response.status(), response.json::<Value>().await.unwrap())
            };
            envelope(status, &answer, StatusCode::FORBIDDEN);
            assert_eq!(
                answer["detail"],
                "You do not have permission to perform this action."
            );
        }
        assert_eq!(
            status("Token nobody".into()).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status("Bearer scrape-7c1".into()).await,
            if scrape {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        );
        // The users keep their own API.
        let (code, _, _) = server
            .api
            .call_text(Method::GET, "/api/storages/types", None)
            .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            server
                .raw(
                    Method::GET,
                    "/api/storages/types",
                    None,
                    Some("Token member-token")
                )
                .await
                .status(),
            StatusCode::OK
        );
        server.stop().await;
    }
}

//! What existing Label Studio clients need besides the storage routes:
//! `/health` and `/api/version` without a token, CORS for browser apps,
//! and the files preview (`POST /api/storages/{type}/files`), against the
//! `storage-server` binary (CORS is its layer) or a server in this process.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::process::{self, Process};
use support::{envelope, Api, Server};

const TOKEN: &str = "clients-token-0123456789";

fn server(dir: &std::path::Path, args: &[&str]) -> Process {
    let mut command = process::command(dir);
    command.args(["--token", TOKEN]).args(args);
    Process::start(command, dir, "server")
}

async fn get_json(url: String) -> (StatusCode, Value) {
    let response = reqwest::get(&url).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn health_and_version_answer_without_a_token_and_health_sees_the_database() {
    let database = storage_testing::postgres::fresh_database("clients_health").await;
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &["--database-url", &database]);

    for path in ["/health", "/health/"] {
        let (status, body) = get_json(format!("{}{path}", server.base)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, json!({"status": "UP", "database": "UP"}), "{path}");
    }
    for path in ["/api/version", "/api/version/"] {
        let (status, body) = get_json(format!("{}{path}", server.base)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["release"], "1.23.2", "{body}");
        assert_eq!(body["label-studio-os-package"]["short_version"], "1.23");
        // Every key SDK 2's VersionResponse requires.
        for key in [
            "backend",
            "dm2",
            "edition",
            "label-studio-converter",
            "label-studio-frontend",
            "label-studio-os-backend",
            "label-studio-os-package",
            "lsf",
        ] {
            assert!(body.get(key).is_some(), "{key} missing: {body}");
        }
        assert_eq!(
            body["storage-connections"]["version"],
            env!("CARGO_PKG_VERSION")
        );
    }

    // The database goes away: health says so (503) within its deadline.
    storage_testing::postgres::drop_database(&database).await;
    let started = Instant::now();
    let (status, body) = get_json(format!("{}/health", server.base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, json!({"status": "DOWN", "database": "DOWN"}));
    assert!(started.elapsed() < Duration::from_secs(10));
    // The reason goes to the log (copied from the server's stdout by a
    // thread: give it a moment).
    let logged = || {
        server
            .log_text()
            .contains("health check: the database is unreachable")
    };
    while !logged() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged(), "{}", server.log_text());
}

/// A browser's preflight for a cross-origin JSON POST with a token.
async fn preflight(base: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{base}/api/storages/localfiles"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn browsers_on_other_origins_may_call_the_api_as_configured() {
    let dir = tempfile::tempdir().unwrap();

    // Default: any origin, as Label Studio; never credentials.
    let any = server(dir.path(), &[]);
    let answer = preflight(&any.base, "https://app.example.com").await;
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(header(&answer, "access-control-allow-origin"), Some("*"));
    let methods = header(&answer, "access-control-allow-methods").unwrap();
    for method in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = header(&answer, "access-control-allow-headers").unwrap();
    assert!(headers.contains("authorization") && headers.contains("content-type"));
    assert_eq!(header(&answer, "access-control-max-age"), Some("86400"));
    assert_eq!(header(&answer, "access-control-allow-credentials"), None);

    // The actual request (and an error answer) carry the header too.
    let actual = reqwest::Client::new()
        .get(format!("{}/api/storages/types", any.base))
        .header("Origin", "https://app.example.com")
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(actual.status(), StatusCode::OK);
    assert_eq!(header(&actual, "access-control-allow-origin"), Some("*"));
    let denied = reqwest::Client::new()
        .get(format!("{}/api/storages/types", any.base))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&denied, "access-control-allow-origin"), Some("*"));
    drop(any);

    // A list: those origins only, echoed, with `Vary: origin`.
    let listed = tempfile::tempdir().unwrap();
    let listed = server(
        listed.path(),
        &[
            "--cors-allowed-origins",
            "https://app.example.com, http://localhost:3000",
        ],
    );
    let answer = preflight(&listed.base, "http://localhost:3000").await;
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert!(header(&answer, "vary").unwrap().contains("origin"));
    let answer = preflight(&listed.base, "https://evil.example.com").await;
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    drop(listed);

    // Empty: no CORS at all.
    let none = tempfile::tempdir().unwrap();
    let none = server(none.path(), &["--cors-allowed-origins", ""]);
    let answer = preflight(&none.base, "https://app.example.com").await;
    assert_eq!(header(&answer, "access-control-allow-origin"), None);
    drop(none);

    // A value that is not an origin stops the start with the flag named.
    let bad = tempfile::tempdir().unwrap();
    let output = process::command(bad.path())
        .args([
            "--cors-allowed-origins",
            "app.example.com",
            "--addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("--cors-allowed-origins")
            && text.contains("\"app.example.com\" is not an origin"),
        "{text}"
    );
}

fn keys(files: &Value) -> Vec<Value> {
    files["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].clone())
        .collect()
}

#[tokio::test]
async fn files_preview_lists_what_a_sync_would_import_and_creates_nothing() {
    let server = Server::start().await;
    let project = server.project().await;
    server.write_files(&[
        ("preview/a.jpg", "aa"),
        ("preview/b.jpg", "bbb"),
        ("preview/c.jpg", "c"),
        ("preview/notes.txt", "text"),
        ("preview/sub/d.jpg", "deep"),
    ]);
    let body = |extra: Value| {
        let mut body = json!({"project": project, "path": server.path("preview"),
                              "regex_filter": ".*\\.jpg", "use_blob_urls": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    // Every match, regex applied, no sentinel when nothing more follows.
    let (status, all) = server
        .post("/api/storages/localfiles/files", body(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        keys(&all),
        ["a.jpg", "b.jpg", "c.jpg"]
            .map(|f| json!(server.path(&format!("preview/{f}"))))
            .to_vec(),
        "{all}"
    );
    let first = &all["files"][0];
    assert_eq!(first["size"], 2);
    let modified = first["last_modified"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(modified).is_ok() && modified.ends_with('Z'),
        "{modified}"
    );

    // A limit below the count: that many, then `key: null` (more follow).
    let (status, two) = server
        .post(
            "/api/storages/localfiles/files/",
            body(json!({"limit": "2", "recursive_scan": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{two}");
    assert_eq!(keys(&two).len(), 3, "{two}");
    assert_eq!(
        two["files"][2],
        json!({"key": null, "last_modified": null, "size": null})
    );

    // Nothing was created.
    let (_, storages) = server
        .get(&format!("/api/storages/localfiles?project={project}"))
        .await;
    assert_eq!(storages, json!([]));

    // With `id`, the stored storage is the base.
    let path = server.local_storage(project, "preview", true).await;
    let (status, stored) = server
        .post(
            "/api/storages/localfiles/files",
            json!({"project": project, "id": support::storage_id(&path), "limit": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(keys(&stored).len(), 4, "no regex stored: {stored}");

    // Bad input: 400s naming the field.
    for limit in [json!(0), json!(-1), json!("many"), json!(10_001), json!([])] {
        let (status, error) = server
            .post(
                "/api/storages/localfiles/files",
                body(json!({ "limit": limit })),
            )
            .await;
        let error = envelope(status, &error, StatusCode::BAD_REQUEST);
        assert!(
            error["limit"][0]
                .as_str()
                .unwrap()
                .contains("from 1 to 10000"),
            "limit {limit}: {error}"
        );
    }
    let (status, error) = server
        .post(
            "/api/storages/localfiles/files",
            json!({"path": server.path("preview")}),
        )
        .await;
    let error = envelope(status, &error, StatusCode::BAD_REQUEST);
    assert_eq!(error["project"], json!(["This field is required."]));

    // Export storages have no preview (Label Studio has none either).
    let (status, _) = server
        .post("/api/storages/export/localfiles/files", body(json!({})))
        .await;
    assert!(status.is_client_error(), "{status}");

    // Another organisation's caller sees none of it.
    let org = server.db.ensure_organization("other").await.unwrap();
    let user = server
        .db
        .ensure_user("other@example.com", org)
        .await
        .unwrap();
    server
        .db
        .set_user_token(user, "other-token-0123456789")
        .await
        .unwrap();
    let (status, error) = Api::new(server.base.clone(), "other-token-0123456789")
        .post("/api/storages/localfiles/files", body(json!({})))
        .await;
    let error = envelope(status, &error, StatusCode::BAD_REQUEST);
    assert!(
        error["project"][0]
            .as_str()
            .unwrap()
            .starts_with("Invalid pk"),
        "{error}"
    );
}

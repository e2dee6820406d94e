//! A storage endpoint that answers like AWS's `SignatureDoesNotMatch`
//! (whose body carries the access key id, the string to sign and the
//! canonical request with the session token), and echoes the key id in its
//! message: none of it reaches `traceback`, the 424 of `/resolve`, a
//! validate answer or the log; the error code does.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use support::process::{self, Process};
use support::{serve_on_loopback, Api};

const TOKEN: &str = "provider-text-token-0123456789";
const KEY_ID: &str = "AKIALEAKTEST00000001";
const SESSION: &str = "SESSIONLEAKTOKEN0123456789";
const BODY: &str = "{\"text\": \"a task\"}";

/// Lists one object; refuses to read it (and, once `refuse_listing` is
/// set, to list) with AWS's body.
async fn endpoint(State(refuse_listing): State<Arc<AtomicBool>>, req: Request) -> Response {
    let listing = req.uri().query().is_some_and(|q| q.contains("list-type=2"));
    let signature_error = || {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch</Code>\
             <Message>The request signature we calculated does not match the signature you provided for {KEY_ID}.</Message>\
             <AWSAccessKeyId>{KEY_ID}</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 20260101T000000Z</StringToSign>\
             <CanonicalRequest>GET /leaky/t.json x-amz-security-token:{SESSION}</CanonicalRequest>\
             <RequestId>1</RequestId></Error>"
        );
        (
            StatusCode::FORBIDDEN,
            [("content-type", "application/xml")],
            body,
        )
            .into_response()
    };
    match (req.method().clone(), listing) {
        (Method::GET, true) if refuse_listing.load(Ordering::SeqCst) => signature_error(),
        (Method::GET, true) => (
            [("content-type", "application/xml")],
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>leaky</Name><Prefix></Prefix>\
                 <KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>\
                 <Contents><Key>t.json</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>\
                 <ETag>\"abc\"</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>",
                BODY.len()
            ),
        )
            .into_response(),
        (Method::HEAD, false) => (
            [
                ("content-length", BODY.len().to_string()),
                ("etag", "\"abc\"".to_string()),
                ("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT".to_string()),
            ],
            "",
        )
            .into_response(),
        _ => signature_error(),
    }
}

fn assert_clean(what: &str, text: &str) {
    for secret in [
        KEY_ID,
        SESSION,
        "StringToSign",
        "CanonicalRequest",
        "<Error>",
    ] {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

#[tokio::test]
async fn provider_bodies_and_echoed_keys_never_leave_the_server() {
    let refuse_listing = Arc::new(AtomicBool::new(false));
    let app = axum::Router::new()
        .fallback(endpoint)
        .with_state(refuse_listing.clone());
    let (endpoint_url, _endpoint) = serve_on_loopback(app).await;

    let dir = tempfile::tempdir().unwrap();
    let mut command = process::command(dir.path());
    command.args(["--token", TOKEN, "--allow-private-endpoints", "true"]);
    let server = Process::start(command, dir.path(), "server");
    let api = Api::new(server.base.clone(), TOKEN);
    let project = api.project().await;
    let storage = |use_blob_urls: bool| {
        json!({"project": project, "bucket": "leaky", "s3_endpoint": endpoint_url,
               "region_name": "us-east-1", "aws_access_key_id": KEY_ID,
               "aws_secret_access_key": "secretsecretsecretsecret", "aws_session_token": SESSION,
               "use_blob_urls": use_blob_urls, "presign": false})
    };

    // A Tasks-mode sync reads the object: refused.
    let tasks_mode = api.create_storage("/api/storages/s3", storage(false)).await;
    let failed = api.sync_and_wait(&tasks_mode).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let traceback = failed["traceback"].as_str().unwrap();
    assert!(traceback.contains("SignatureDoesNotMatch"), "{traceback}");
    assert_clean("traceback", traceback);
    let (_, listed) = api
        .get(&format!("/api/storages/s3?project={project}"))
        .await;
    assert_clean("the storage list", &listed.to_string());

    // Files mode, no presign: /resolve streams the object, and fails.
    let files_mode = api.create_storage("/api/storages/s3", storage(true)).await;
    let synced = api.sync_and_wait(&files_mode).await;
    assert_eq!(synced["status"], "completed", "{synced}");
    let (_, tasks) = api.get(&format!("/api/tasks?project={project}")).await;
    let task = tasks["tasks"][0]["id"].as_i64().unwrap();
    let uri = base64::engine::general_purpose::URL_SAFE.encode("s3://leaky/t.json");
    let (status, _, text) = api
        .call_text(
            reqwest::Method::GET,
            &format!("/tasks/{task}/resolve/?fileuri={uri}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FAILED_DEPENDENCY.as_u16(), "{text}");
    assert_clean("the 424", &text);

    // Validate against a listing that answers the same: a 400 that names
    // the problem, nothing more.
    refuse_listing.store(true, Ordering::SeqCst);
    let (status, answer) = api.post("/api/storages/s3/validate", storage(true)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST.as_u16(), "{answer}");
    assert!(answer.to_string().contains("rejected"), "{answer}");
    assert_clean("validate", &answer.to_string());

    assert_clean("the log", &server.log_text());
}

//! Inputs that `scripts/fuzz-api.sh` (Schemathesis over `/api/schema`) and
//! its probes found to crash a request, kept as tests over a real socket.
//! Each must be answered with a 400 naming the field: never a 5xx, never a
//! dropped connection.
//!
//! The S3 settings below once reached the S3 client, which builds request
//! hosts and headers with `unwrap` and so panicked the request's task (the
//! client saw the connection close without an answer).

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::EndpointPolicy;
use storage_s3::{S3Backend, S3Options};
use support::{envelope, Server, TOKEN};

/// A server with an S3 backend that accepts loopback endpoints, so every
/// request below that got past validation would go to a closed port on
/// 127.0.0.1 and never off the machine.
async fn s3_server() -> Server {
    let backend =
        S3Backend::new(S3Options::new().with_endpoint_policy(EndpointPolicy::allow_private()));
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![Arc::new(backend)],
    )
    .await
}

/// A loopback port nothing listens on.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Posts `body` and fails clearly when the server drops the connection.
async fn post(server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url(path))
        .header("Authorization", format!("Token {TOKEN}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path} {body}: no answer (did the handler panic?): {e}"));
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Every route that checks S3 settings, so none of them can reach the
/// client with the value.
const ROUTES: [&str; 4] = [
    "/api/storages/s3/validate",
    "/api/storages/export/s3/validate",
    "/api/storages/s3",
    "/api/storages/export/s3",
];

async fn assert_rejected(
    server: &Server,
    project: i64,
    extra: Value,
    field: &str,
    secret: Option<&str>,
) {
    let mut body = json!({
        "project": project,
        "bucket": "fuzz-bucket",
        "s3_endpoint": closed_endpoint(),
        "aws_access_key_id": "AKIAFUZZ",
        "aws_secret_access_key": "fuzz-secret",
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    for route in ROUTES {
        let (status, answer) = post(server, route, &body).await;
        let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
        assert!(
            errors[field][0].is_string(),
            "{route} {body}: {answer} should name {field}"
        );
        if let Some(secret) = secret {
            assert!(
                !answer.to_string().contains(secret),
                "{route}: the answer shows the credential: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn s3_region_that_is_not_a_host_label_is_a_400() {
    let server = s3_server().await;
    let project = server.project().await;
    // Found by probing: with a region of "a b" the AWS host
    // `s3.a b.amazonaws.com` is no URI; a line break breaks the signed
    // Authorization header even with a custom endpoint.
    for region in ["eu\nwest", "a b", "\u{fc}", "x/y", "x#y"] {
        assert_rejected(
            &server,
            project,
            json!({"region_name": region}),
            "region_name",
            None,
        )
        .await;
    }
    // Region names in use stay accepted (the closed endpoint then answers).
    for region in ["us-east-1", "auto", "garage", "eu_local.1"] {
        let mut body = json!({"project": project, "bucket": "fuzz-bucket", "s3_endpoint": closed_endpoint(), "region_name": region});
        body["aws_access_key_id"] = json!("AKIAFUZZ");
        body["aws_secret_access_key"] = json!("fuzz-secret");
        let (status, answer) = post(&server, "/api/storages/s3/validate", &body).await;
        let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
        assert!(errors.get("region_name").is_none(), "{region}: {answer}");
    }
}

#[tokio::test]
async fn s3_credentials_with_control_characters_are_a_400_without_echo() {
    let server = s3_server().await;
    let project = server.project().await;
    // Found by probing: both go into request headers.
    assert_rejected(
        &server,
        project,
        json!({"aws_access_key_id": "AKIA\nLEAKED"}),
        "aws_access_key_id",
        Some("LEAKED"),
    )
    .await;
    assert_rejected(
        &server,
        project,
        json!({"aws_session_token": "session\r\nLEAKED"}),
        "aws_session_token",
        Some("LEAKED"),
    )
    .await;
}

#[tokio::test]
async fn s3_access_point_arn_with_characters_outside_a_url_is_a_400() {
    let server = s3_server().await;
    let project = server.project().await;
    // Found by Schemathesis (POST /api/storages/export/s3 with this bucket):
    // the ARN passed the bucket check and went into the request URL.
    for bucket in [
        "arn:aws:s3:us-east-1:123456789012:accesspoint/a b",
        "arn:aws:s3:us-east-1:123456789012:outpost/x\u{0}",
    ] {
        assert_rejected(&server, project, json!({"bucket": bucket}), "bucket", None).await;
    }
}

#[tokio::test]
async fn the_server_still_answers_after_rejected_s3_settings() {
    let server = s3_server().await;
    let project = server.project().await;
    let body = json!({"project": project, "bucket": "arn:aws:s3:us-east-1:123456789012:accesspoint/a b",
                      "region_name": "a b", "s3_endpoint": closed_endpoint()});
    let (status, answer) = post(&server, "/api/storages/s3/validate", &body).await;
    let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(
        errors["bucket"][0].is_string() && errors["region_name"][0].is_string(),
        "{answer}"
    );
    let (status, list) = server
        .get(&format!("/api/storages/s3?project={project}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]), "nothing was saved");
}

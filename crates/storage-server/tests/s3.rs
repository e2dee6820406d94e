//! S3 storages against real S3 servers started by `./scripts/test`: moto
//! (S3 and STS; accepts any signature) and SeaweedFS (checks SigV4). The
//! shared bucket conformance suite runs against both, then the S3-only
//! behaviour: secrets, credential and endpoint errors, the endpoint policy,
//! AssumeRole and SSE-KMS.

#![allow(clippy::unwrap_used)]

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::signer::Signer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::{Backend, EndpointPolicy};
use storage_s3::{S3Backend, S3Options};
use storage_testing::conformance::Seed;
use storage_testing::{unique_prefix, S3Server};
use support::buckets::s3_builder;
use support::{envelope, Server};

fn options() -> S3Options {
    S3Options::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
}

fn s3_client(server: &S3Server) -> AmazonS3 {
    s3_builder(server)
        .with_retry(storage_testing::quick_retry())
        .build()
        .unwrap()
}

fn connection(server: &S3Server) -> Value {
    json!({
        "s3_endpoint": server.endpoint,
        "aws_access_key_id": server.access_key_id,
        "aws_secret_access_key": server.secret_access_key,
        "region_name": "us-east-1",
    })
}

fn bucket(server: S3Server, case: &str) -> conformance::Bucket {
    conformance::Bucket {
        backend: Arc::new(S3Backend::new(options())),
        storage_type: "s3",
        scheme: "s3",
        bucket: server.bucket.clone(),
        connection: connection(&server),
        seed: Seed::new(
            server.object_store(),
            unique_prefix(&format!("{}-{case}", server.name)),
        ),
        expiry_param: "X-Amz-Expires",
        guards: Vec::new(),
    }
}

async fn moto_bucket(case: &str) -> conformance::Bucket {
    bucket(storage_testing::moto(), case)
}

async fn seaweedfs_bucket(case: &str) -> conformance::Bucket {
    bucket(storage_testing::seaweedfs(), case)
}

mod moto {
    use super::*;
    crate::conformance_cases!(moto_bucket);
}

mod seaweedfs {
    use super::*;
    crate::conformance_cases!(seaweedfs_bucket);
}

async fn start(options: S3Options) -> Server {
    let backend: Arc<dyn Backend> = Arc::new(S3Backend::new(options));
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![backend],
    )
    .await
}

fn errors(status: StatusCode, body: &Value) -> Value {
    envelope(status, body, StatusCode::BAD_REQUEST)
}

#[tokio::test]
async fn secrets_are_write_only_kept_by_partial_patch_and_cleared_by_empty() {
    let s3 = storage_testing::seaweedfs();
    let seed = Seed::new(s3.object_store(), unique_prefix("secrets"));
    seed.put("a.txt", "a").await;
    let prefix = &seed.prefix;
    let server = start(options()).await;
    let project = server.project().await;
    let mut body = connection(&s3);
    body["project"] = json!(project);
    body["bucket"] = json!(s3.bucket);
    body["prefix"] = json!(prefix);
    body["use_blob_urls"] = json!(true);
    body["aws_session_token"] = json!("");
    let (status, created) = server.post("/api/storages/s3", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/storages/s3/{}", created["id"]);
    let shown = [
        created.clone(),
        server.get(&path).await.1,
        server
            .get(&format!("/api/storages/s3?project={project}"))
            .await
            .1,
        server
            .get(&format!("/api/storages/?project={project}"))
            .await
            .1,
        server.patch(&path, json!({"title": "renamed"})).await.1,
    ];
    for body in &shown {
        let text = body.to_string();
        assert!(
            !text.contains(&s3.secret_access_key) && !text.contains(&s3.access_key_id),
            "{text}"
        );
        assert!(
            !text.contains("aws_secret_access_key") && !text.contains("aws_access_key_id"),
            "{text}"
        );
        assert!(!text.contains("aws_session_token"), "{text}");
    }
    assert_eq!(
        created["s3_endpoint"], s3.endpoint,
        "non-secret fields are shown"
    );
    // The PATCH above sent no secret: SeaweedFS still accepts the signature.
    let done = server.sync_and_wait(&path).await;
    assert_eq!(
        (done["status"].clone(), done["last_sync_count"].clone()),
        (json!("completed"), json!(1)),
        "{done}"
    );
    // Sending "" clears them: requests become anonymous and are refused.
    let (status, answer) = server
        .patch(
            &path,
            json!({"aws_access_key_id": "", "aws_secret_access_key": ""}),
        )
        .await;
    let errors = errors(status, &answer);
    assert!(
        errors["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains("access denied"),
        "{answer}"
    );
}

#[tokio::test]
async fn credential_and_endpoint_errors_say_what_is_wrong() {
    let s3 = storage_testing::seaweedfs();
    let server = start(options()).await;
    let project = server.project().await;
    let base = |extra: Value| {
        let mut body = connection(&s3);
        body["project"] = json!(project);
        body["bucket"] = json!(s3.bucket);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            json!({"aws_secret_access_key": "wrong-secret"}),
            "non_field_errors",
            "the access key id or the secret access key is wrong",
        ),
        (
            json!({"aws_access_key_id": "no-such-key"}),
            "non_field_errors",
            "the access key id or the secret access key is wrong",
        ),
        (
            json!({"s3_endpoint": "http://127.0.0.1:9"}),
            "non_field_errors",
            "Cannot reach the S3 endpoint http://127.0.0.1:9",
        ),
        (
            json!({"aws_secret_access_key": null}),
            "aws_secret_access_key",
            "Access Key ID and Secret Access Key must be provided together.",
        ),
        (
            json!({"bucket": "bad/name"}),
            "bucket",
            "Invalid bucket name",
        ),
        (json!({"bucket": ""}), "bucket", "This field is required."),
        (
            json!({"presign_ttl": 10081}),
            "presign_ttl",
            "Ensure this value is less than or equal to 10080",
        ),
        (
            json!({"role_arn": "not-an-arn"}),
            "role_arn",
            "is not an IAM role ARN",
        ),
        (
            json!({"role_arn": "arn:aws:iam::123456789012:role/x"}),
            "role_arn",
            "no AWS credentials of its own",
        ),
        (
            json!({"s3_endpoint": "ftp://host"}),
            "s3_endpoint",
            "must use http or https",
        ),
    ];
    for (extra, field, message) in cases {
        let (status, answer) = server
            .post("/api/storages/s3/validate", base(extra.clone()))
            .await;
        let errors = errors(status, &answer);
        let got = errors[field][0]
            .as_str()
            .unwrap_or_else(|| panic!("{extra}: {answer}"));
        assert!(
            got.contains(message),
            "{extra}: {got:?} should contain {message:?}"
        );
        assert!(
            !answer.to_string().contains("testsecret"),
            "no secret in errors: {answer}"
        );
    }
}

/// Keys the bucket rejects are the storage's input to fix: a 400 naming the
/// key fields, never the API caller's 401 "Invalid token.".
#[tokio::test]
async fn rejected_keys_are_a_400_naming_the_key_fields() {
    let s3 = storage_testing::seaweedfs();
    let server = start(options()).await;
    let project = server.project().await;
    let mut body = connection(&s3);
    body["project"] = json!(project);
    body["bucket"] = json!(s3.bucket);
    body["aws_secret_access_key"] = json!("wrong-secret");
    let (status, answer) = server.post("/api/storages/s3/validate", body).await;
    let errors = errors(status, &answer);
    for field in ["aws_access_key_id", "aws_secret_access_key"] {
        assert_eq!(
            errors[field],
            json!(["The storage provider rejected this credential."]),
            "{answer}"
        );
    }
    assert!(
        errors["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains("the access key id or the secret access key is wrong"),
        "{answer}"
    );
    assert!(!answer.to_string().contains("wrong-secret"), "{answer}");
}

#[tokio::test]
async fn private_endpoints_are_refused_unless_allowed() {
    let server = start(S3Options::new().with_retry(storage_testing::quick_retry())).await;
    let project = server.project().await;
    let moto = storage_testing::moto();
    for endpoint in [
        moto.endpoint.as_str(),
        "http://169.254.169.254",
        "http://[::1]:9000",
        "http://2130706433:9000",
        "http://0x7f.1:9000",
        "http://10.1.2.3",
        "http://localhost:9000",
    ] {
        let mut body = connection(&moto);
        body["project"] = json!(project);
        body["bucket"] = json!(moto.bucket);
        body["s3_endpoint"] = json!(endpoint);
        for route in [
            "/api/storages/s3/validate",
            "/api/storages/s3",
            "/api/storages/export/s3",
        ] {
            let (status, answer) = server.post(route, body.clone()).await;
            let errors = errors(status, &answer);
            let message = errors["s3_endpoint"][0]
                .as_str()
                .unwrap_or_else(|| panic!("{endpoint} {route}: {answer}"));
            assert!(message.contains("--allow-private-endpoints"), "{message}");
        }
    }
    let (status, answer) = server
        .post("/api/storages/s3/validate", json!({"project": project, "bucket": "b", "s3_endpoint": "http://169.254.169.254/latest"}))
        .await;
    assert!(
        errors(status, &answer)["s3_endpoint"][0]
            .as_str()
            .unwrap()
            .contains("metadata"),
        "{answer}"
    );
}

#[tokio::test]
async fn role_arn_assumes_the_role_with_the_servers_credentials() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("assume-role"));
    seed.put("a.txt", "a").await;
    let prefix = &seed.prefix;
    let sts = url::Url::parse(&moto.endpoint).unwrap();
    let server = start(
        options()
            .with_server_credentials("testing", "testing", None)
            .with_sts_endpoint(sts),
    )
    .await;
    let project = server.project().await;
    let (status, created) = server
        .post(
            "/api/storages/s3",
            json!({"project": project, "bucket": moto.bucket, "prefix": prefix, "use_blob_urls": true, "s3_endpoint": moto.endpoint,
                   "role_arn": "arn:aws:iam::123456789012:role/label-studio", "external_id": "ext-123"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["role_arn"],
        "arn:aws:iam::123456789012:role/label-studio"
    );
    let path = format!("/api/storages/s3/{}", created["id"]);
    let done = server.sync_and_wait(&path).await;
    assert_eq!(
        (done["status"].clone(), done["last_sync_count"].clone()),
        (json!("completed"), json!(1)),
        "{done}"
    );
}

#[tokio::test]
async fn export_uses_sse_kms_when_a_key_is_set() {
    let moto = storage_testing::moto();
    let prefix = unique_prefix("sse");
    let server = start(options()).await;
    let project = server.project_with(json!([{"text": "t"}])).await;
    let mut body = connection(&moto);
    body["project"] = json!(project);
    body["bucket"] = json!(moto.bucket);
    body["prefix"] = json!(prefix);
    body["aws_sse_kms_key_id"] = json!("alias/label-studio");
    let (status, export) = server.post("/api/storages/export/s3", body).await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    assert_eq!(
        export["aws_sse_kms_key_id"], "alias/label-studio",
        "not a secret: shown"
    );
    let (_, annotation) = server.annotate_first_task(project).await;
    // S3 serves SSE-KMS objects to SigV4-signed requests only.
    let location = format!("{prefix}/{}", annotation["id"]).into();
    let url = s3_client(&moto)
        .signed_url(http::Method::HEAD, &location, Duration::from_secs(60))
        .await
        .unwrap();
    let head = reqwest::Client::new()
        .head(url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK, "{url}");
    assert_eq!(head.headers()["x-amz-server-side-encryption"], "aws:kms");
}

/// The validation report of a SeaweedFS storage signed with `key`.
async fn seaweedfs_report(export: bool, key: (&str, &str), extra: Value) -> Value {
    let server_s3 = storage_testing::seaweedfs();
    let seed = Seed::new(server_s3.object_store(), unique_prefix("seaweedfs-report"));
    seed.put("t.json", r#"{"text": "a"}"#).await;
    let server = Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![Arc::new(S3Backend::new(options())) as Arc<dyn Backend>],
    )
    .await;
    let project = server.project().await;
    let mut body = json!({"project": project, "bucket": server_s3.bucket, "prefix": seed.prefix,
        "s3_endpoint": server_s3.endpoint, "aws_access_key_id": key.0,
        "aws_secret_access_key": key.1, "region_name": "us-east-1"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let kind = if export { "export/" } else { "" };
    let (status, report) = server
        .post(
            &format!("/api/storages/{kind}s3/validate?report=true"),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(
        !report.to_string().contains(key.1),
        "the secret is in the report"
    );
    report
}

#[tokio::test]
async fn validation_report_of_a_read_only_key_fails_the_export_write() {
    let report = seaweedfs_report(
        true,
        storage_testing::SEAWEEDFS_READ_ONLY,
        json!({"can_delete_objects": true}),
    )
    .await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(
        support::report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "write=failed",
            "delete=skipped"
        ],
        "{report}"
    );
    let message = support::report_message(&report, "write");
    assert!(
        message.contains("AccessDenied") || message.contains("403"),
        "{message}"
    );
}

#[tokio::test]
async fn validation_report_of_a_list_only_key_fails_read_and_presign() {
    let report = seaweedfs_report(
        false,
        storage_testing::SEAWEEDFS_LIST_ONLY,
        json!({"use_blob_urls": false, "presign": true}),
    )
    .await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(
        support::report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "read=failed",
            "presign=failed"
        ],
        "{report}"
    );
    assert_eq!(
        support::report_message(&report, "list"),
        format!(
            "1 object matches under prefix \"{}\"",
            report_prefix(&report)
        )
    );
    let presign = support::report_message(&report, "presign");
    assert!(
        presign.contains("403") && presign.contains("browsers will not load"),
        "{presign}"
    );
    // The same key suits Files mode without presign: nothing is read.
    let report = seaweedfs_report(
        false,
        storage_testing::SEAWEEDFS_LIST_ONLY,
        json!({"use_blob_urls": true, "presign": false}),
    )
    .await;
    assert_eq!(report["valid"], true, "{report}");
}

/// The prefix a report's `list` message names.
fn report_prefix(report: &Value) -> String {
    support::report_message(report, "list")
        .split('"')
        .nth(1)
        .unwrap()
        .to_string()
}

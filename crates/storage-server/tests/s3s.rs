//! `s3s` storages (Label Studio Enterprise's "Amazon S3 with IAM role")
//! through the real HTTP server: the bucket conformance suite against moto's
//! S3 with the role assumed at moto's STS, then the role-only behaviour
//! against the STS double (`ExternalId` enforced, short sessions, counted
//! calls) in front of moto's S3 (which accepts the double's made-up session
//! keys).

#![allow(clippy::unwrap_used)]

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::{Backend, EndpointPolicy};
use storage_s3::{S3Backend, S3Options};
use storage_testing::conformance::Seed;
use storage_testing::sts_double::{StsDouble, SERVER_PRINCIPAL};
use storage_testing::{unique_prefix, S3Server};
use support::{envelope, Server, TOKEN};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/label-studio";
const SERVER_KEY: &str = "AKIASERVERBASEKEY001";
const SERVER_SECRET: &str = "serverBaseSecret/DoNotLeak";

/// Server-wide options: the server's own keys are the base identity, STS
/// is `sts`.
fn options(sts: url::Url) -> S3Options {
    S3Options::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
        .with_server_credentials(SERVER_KEY, SERVER_SECRET, None)
        .with_sts_endpoint(sts)
}

/// What every `s3s` body on moto carries: no keys, only the role.
fn connection(moto: &S3Server) -> Value {
    json!({
        "s3_endpoint": moto.endpoint,
        "region_name": "us-east-1",
        "role_arn": ROLE_ARN,
        "external_id": "org-external-id",
    })
}

async fn moto_bucket(case: &str) -> conformance::Bucket {
    let moto = storage_testing::moto();
    let sts = url::Url::parse(&moto.endpoint).unwrap();
    conformance::Bucket {
        backend: Arc::new(S3Backend::with_iam_role(options(sts))),
        storage_type: "s3s",
        scheme: "s3",
        bucket: moto.bucket.clone(),
        connection: connection(&moto),
        seed: Seed::new(moto.object_store(), unique_prefix(&format!("s3s-{case}"))),
        expiry_param: "X-Amz-Expires",
        guards: Vec::new(),
    }
}

mod moto {
    use super::*;
    crate::conformance_cases!(moto_bucket);
}

async fn start(sts: url::Url) -> Server {
    let backend: Arc<dyn Backend> = Arc::new(S3Backend::with_iam_role(options(sts)));
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![backend],
    )
    .await
}

fn body(moto: &S3Server, project: i64, extra: Value) -> Value {
    let mut body = connection(moto);
    body["project"] = json!(project);
    body["bucket"] = json!(moto.bucket);
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn assert_no_secret(answer: &Value, secrets: &[&str]) {
    let text = answer.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    for field in [
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    ] {
        assert!(answer.get(field).is_none(), "{field} in {text}");
    }
}

#[tokio::test]
async fn the_whole_flow_over_http_with_moto_sts() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("s3s-flow"));
    seed.put("files/a.txt", "alpha").await;
    seed.put(
        "tasks/t.json",
        r#"[{"data": {"text": "one"}}, {"data": {"text": "two"}}]"#,
    )
    .await;
    let server = start(url::Url::parse(&moto.endpoint).unwrap()).await;
    let project = server.project().await;

    // Listed among the types, with its Enterprise title.
    let (status, types) = server.get("/api/storages/types").await;
    assert_eq!(status, StatusCode::OK, "{types}");
    assert!(
        types
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "s3s" && t["title"] == "Amazon S3 with IAM Role"),
        "{types}"
    );

    // Validate, then create (Files mode, presigned).
    let files = body(
        &moto,
        project,
        json!({"prefix": seed.key("files"), "use_blob_urls": true, "presign": true, "presign_ttl": 15}),
    );
    let (status, answer) = server
        .post("/api/storages/s3s/validate", files.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, created) = server.post("/api/storages/s3s/", files).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["type"], "s3s");
    assert_eq!(created["role_arn"], ROLE_ARN);
    assert_eq!(created["external_id"], "org-external-id");
    assert_eq!(created["legacy_auth"], false);
    assert_no_secret(&created, &[SERVER_SECRET]);
    let files_path = format!("/api/storages/s3s/{}", created["id"]);
    let done = server.sync_and_wait(&files_path).await;
    assert_eq!(
        (done["status"].clone(), done["last_sync_count"].clone()),
        (json!("completed"), json!(1)),
        "{done}"
    );

    // Tasks mode.
    let (status, tasks_storage) = server
        .post(
            "/api/storages/s3s",
            body(&moto, project, json!({"prefix": seed.key("tasks")})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tasks_storage}");
    let tasks_path = format!("/api/storages/s3s/{}", tasks_storage["id"]);
    let done = server.sync_and_wait(&tasks_path).await;
    assert_eq!(done["last_sync_count"], json!(2), "{done}");

    // Resolve: 303 to a URL signed with the session, fetched back from moto.
    let (_, tasks) = server
        .get(&format!(
            "/api/tasks?project={project}&page_size=100&resolve_uri=true"
        ))
        .await;
    let tasks = tasks["tasks"].as_array().unwrap().clone();
    let uri = format!("s3://{}/{}", moto.bucket, seed.key("files/a.txt"));
    let encoded = base64::engine::general_purpose::URL_SAFE.encode(&uri);
    let file_task = tasks
        .iter()
        .find(|t| t.to_string().contains(&encoded))
        .unwrap_or_else(|| panic!("no task for {uri} in {tasks:?}"));
    let resolve = file_task["data"]
        .as_object()
        .unwrap()
        .values()
        .find_map(Value::as_str)
        .unwrap()
        .to_string();
    let response = server
        .client
        .get(server.url(&resolve))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let signed = response.headers()["location"].to_str().unwrap().to_string();
    assert!(signed.contains("X-Amz-Security-Token="), "{signed}");
    assert!(!signed.contains(SERVER_KEY), "{signed}");
    let fetched = reqwest::get(&signed).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK, "{signed}");
    assert_eq!(fetched.bytes().await.unwrap(), "alpha");

    // Export, then delete everything.
    let (status, export) = server
        .post(
            "/api/storages/export/s3s/",
            body(
                &moto,
                project,
                json!({"prefix": seed.key("out"), "can_delete_objects": true}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    assert_no_secret(&export, &[SERVER_SECRET]);
    let export_path = format!("/api/storages/export/s3s/{}", export["id"]);
    let (_, annotation) = server.annotate_first_task(project).await;
    let done = server.sync_and_wait(&export_path).await;
    assert_eq!(done["status"], "completed", "{done}");
    let object = format!("out/{}", annotation["id"]);
    let written = seed.read(&object).await.expect("the exported annotation");
    let written: Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(written["id"], annotation["id"], "{written}");
    for path in [&files_path, &tasks_path, &export_path] {
        let (status, answer) = server.delete(path).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
        assert_eq!(server.get(path).await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn role_arn_is_required_on_create_and_validate_not_on_patch() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("s3s-required"));
    seed.put("a.txt", "a").await;
    let sts = StsDouble::builder().start().await;
    let server = start(sts.endpoint()).await;
    let project = server.project().await;
    let mut without = body(&moto, project, json!({"prefix": seed.prefix}));
    without.as_object_mut().unwrap().remove("role_arn");
    for route in [
        "/api/storages/s3s",
        "/api/storages/s3s/validate",
        "/api/storages/export/s3s",
        "/api/storages/export/s3s/validate",
    ] {
        let (status, answer) = server.post(route, without.clone()).await;
        assert_eq!(
            envelope(status, &answer, StatusCode::BAD_REQUEST),
            json!({"role_arn": ["This field is required."]}),
            "{route}"
        );
    }
    assert_eq!(sts.calls(), 0, "nothing is assumed for a refused body");

    let (status, created) = server
        .post(
            "/api/storages/s3s",
            body(&moto, project, json!({"prefix": seed.prefix})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/storages/s3s/{}", created["id"]);
    let (status, patched) = server
        .patch(&path, json!({"title": "renamed", "legacy_auth": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["role_arn"], ROLE_ARN);
    assert_eq!(patched["legacy_auth"], true);
}

#[tokio::test]
async fn a_refused_assume_role_is_explained_in_words() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("s3s-external-id"));
    seed.put("a.txt", "a").await;
    let sts = StsDouble::builder()
        .require_external_id("org-external-id")
        .start()
        .await;
    let server = start(sts.endpoint()).await;
    let project = server.project().await;

    let wrong = body(
        &moto,
        project,
        json!({"prefix": seed.prefix, "external_id": "someone-elses-id"}),
    );
    for route in ["/api/storages/s3s/validate", "/api/storages/s3s"] {
        let (status, answer) = server.post(route, wrong.clone()).await;
        let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
        let message = errors["non_field_errors"][0].as_str().unwrap();
        assert!(
            message.starts_with(&format!("Cannot assume role {ROLE_ARN}: ")),
            "{message}"
        );
        assert!(
            message.contains("trust policy") && message.contains("external_id"),
            "{message}"
        );
        let text = answer.to_string();
        for never in [SERVER_PRINCIPAL, "not authorized to perform", SERVER_SECRET] {
            assert!(!text.contains(never), "{never} in {text}");
        }
    }
    let (status, created) = server
        .post(
            "/api/storages/s3s",
            body(&moto, project, json!({"prefix": seed.prefix})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let requests = sts.requests();
    assert_eq!(
        requests.last().unwrap().external_id.as_deref(),
        Some("org-external-id")
    );
    assert!(
        requests.iter().all(|r| r.problems.is_empty()
            && r.key_id.as_deref() == Some(SERVER_KEY)
            && r.role_arn.as_deref() == Some(ROLE_ARN)),
        "{requests:?}"
    );
}

#[tokio::test]
async fn the_storages_own_keys_are_the_base_identity_and_stay_write_only() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("s3s-own-keys"));
    seed.put("a.txt", "a").await;
    let sts = StsDouble::builder().start().await;
    let server = start(sts.endpoint()).await;
    let project = server.project().await;
    let (status, created) = server
        .post(
            "/api/storages/s3s",
            body(
                &moto,
                project,
                json!({"prefix": seed.prefix, "aws_access_key_id": "AKIASTORAGEOWNKEY001",
                       "aws_secret_access_key": "storageOwnSecret/xyz"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_no_secret(&created, &["AKIASTORAGEOWNKEY001", "storageOwnSecret/xyz"]);
    let path = format!("/api/storages/s3s/{}", created["id"]);
    let (_, fetched) = server.get(&path).await;
    assert_no_secret(&fetched, &["AKIASTORAGEOWNKEY001", "storageOwnSecret/xyz"]);
    let (_, listed) = server
        .get(&format!("/api/storages/s3s?project={project}"))
        .await;
    assert_no_secret(&listed, &["AKIASTORAGEOWNKEY001", "storageOwnSecret/xyz"]);
    assert_eq!(
        sts.requests().last().unwrap().key_id.as_deref(),
        Some("AKIASTORAGEOWNKEY001")
    );
}

/// Create (validate included) then three syncs: the session is assumed
/// once at validation and reused while it lasts.
#[tokio::test]
async fn sessions_are_cached_across_syncs() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("s3s-cache"));
    seed.put("a.txt", "a").await;
    let sts = StsDouble::builder().start().await;
    let server = start(sts.endpoint()).await;
    let project = server.project().await;
    let (status, created) = server
        .post(
            "/api/storages/s3s",
            body(
                &moto,
                project,
                json!({"prefix": seed.prefix, "use_blob_urls": true}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let after_create = sts.calls();
    let path = format!("/api/storages/s3s/{}", created["id"]);
    for _ in 0..3 {
        let done = server.sync_and_wait(&path).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    println!(
        "STS AssumeRole calls: {after_create} for create, {} for create + three syncs",
        sts.calls()
    );
    assert_eq!((after_create, sts.calls()), (1, 1));
}

/// A presigned URL never outlives the session it is signed with.
#[tokio::test]
async fn presigned_urls_end_with_the_session() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("s3s-expiry"));
    seed.put("media/clip.bin", "0123456789").await;
    // Ten minutes left: beyond the five-minute refresh margin, so cached.
    let sts = StsDouble::builder().expires_in(600).start().await;
    let server = start(sts.endpoint()).await;
    let project = server.project().await;
    let (status, created) = server
        .post(
            "/api/storages/s3s",
            body(
                &moto,
                project,
                json!({"prefix": seed.key("media"), "use_blob_urls": true, "presign": true, "presign_ttl": 60}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/storages/s3s/{}", created["id"]);
    server.sync_and_wait(&path).await;
    let (_, tasks) = server
        .get(&format!(
            "/api/tasks?project={project}&page_size=10&resolve_uri=true"
        ))
        .await;
    let resolve = tasks["tasks"][0]["data"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let response = server
        .client
        .get(server.url(&resolve))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let signed = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let param = |name: &str| {
        signed
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let expires: u64 = param("X-Amz-Expires").unwrap().parse().unwrap();
    assert!(
        (500..=600).contains(&expires),
        "presign_ttl asks 3600 s, the session has 600 s left: {signed}"
    );
    assert!(
        param("X-Amz-Security-Token").is_some_and(|t| t.starts_with("stsDoubleSessionToken")),
        "{signed}"
    );
    assert!(
        param("X-Amz-Credential").is_some_and(|c| c.starts_with("ASIASTSDOUBLE")),
        "{signed}"
    );
    let fetched = reqwest::get(signed.as_str()).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap(), "0123456789");
}

#[tokio::test]
async fn rejected_base_keys_and_an_unreachable_sts_are_explained() {
    let moto = storage_testing::moto();
    let seed = Seed::new(moto.object_store(), unique_prefix("s3s-base-keys"));
    seed.put("a.txt", "a").await;
    let sts = StsDouble::builder().accept_key_id(SERVER_KEY).start().await;
    let server = start(sts.endpoint()).await;
    let project = server.project().await;
    let (status, answer) = server
        .post(
            "/api/storages/s3s/validate",
            body(
                &moto,
                project,
                json!({"prefix": seed.prefix, "aws_access_key_id": "AKIAUNKNOWNKEY000001",
                       "aws_secret_access_key": "unknownSecret/abc"}),
            ),
        )
        .await;
    let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
    let message = errors["non_field_errors"][0].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "Cannot assume role {ROLE_ARN}: AWS STS did not accept"
        )),
        "{message}"
    );
    assert!(message.contains("aws_access_key_id"), "{message}");
    assert_no_secret(&answer, &["unknownSecret/abc", "security token included"]);
    assert_eq!(
        sts.requests().last().unwrap().key_id.as_deref(),
        Some("AKIAUNKNOWNKEY000001")
    );

    // Nothing listens on port 9 of the loopback.
    let unreachable = start(url::Url::parse("http://127.0.0.1:9/").unwrap()).await;
    let project = unreachable.project().await;
    let (status, answer) = unreachable
        .post(
            "/api/storages/s3s/validate",
            body(&moto, project, json!({"prefix": seed.prefix})),
        )
        .await;
    let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
    let message = errors["non_field_errors"][0].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "Cannot assume role {ROLE_ARN}: the STS endpoint http://127.0.0.1:9/ cannot be reached"
        )),
        "{message}"
    );
}

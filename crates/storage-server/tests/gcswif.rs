//! GCS through Workload Identity Federation (`gcswif`) against fake-gcs
//! (started by `./scripts/test`): the server's subject token file is
//! exchanged at a double of Google's STS (which checks the token-exchange
//! form, the audience built from the storage's pool fields and the subject
//! token), and the federated token impersonates the storage's service
//! account at the IAM Credentials double (which accepts only that token).
//! The bucket conformance suite runs on it, then what is particular to it.

#![allow(clippy::unwrap_used)]

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::EndpointPolicy;
use storage_gcs::sts::{provider_audience, SubjectToken};
use storage_gcs::GcsOptions;
use storage_gcs_sa::{GcsWifBackend, WifOptions};
use storage_testing::conformance::Seed;
use storage_testing::gcs_sa_rig::GcsSaRig;
use storage_testing::google_sts_double::{GoogleStsDouble, JWT_TOKEN_TYPE};
use storage_testing::iam_double::IamDouble;
use storage_testing::unique_prefix;
use support::{envelope, Server};

const TARGET: &str = "reader@data-project.iam.gserviceaccount.com";
const DENIED: &str = "locked@data-project.iam.gserviceaccount.com";
// The rig writes a key for it; this type never uses it (the IAM double
// must see the federated token, not this identity).
const UNUSED_BASE: &str = "label-studio@server-project.iam.gserviceaccount.com";
const PROJECT_NUMBER: &str = "123456789012";
const POOL: &str = "label-studio-pool";
const PROVIDER: &str = "label-studio-app-production";
const SUBJECT: &str = "eyJhbGciOiJSUzI1NiJ9.platform-issued-subject-token.sig";
const FEDERATED: &str = "federated-token-from-sts-double";

/// fake-gcs behind its shim, the IAM double accepting the federated token,
/// the STS double, the subject token file and the backend using them all.
struct WifSetup {
    rig: GcsSaRig,
    sts: GoogleStsDouble,
    backend: Arc<GcsWifBackend>,
    _subject_dir: tempfile::TempDir,
}

async fn wif_setup() -> WifSetup {
    let rig = IamDouble::builder()
        .base_email(UNUSED_BASE)
        .base_token(FEDERATED)
        .target(TARGET)
        .denied(DENIED)
        .start_with_fake_gcs()
        .await;
    let sts = GoogleStsDouble::start(
        &provider_audience(PROJECT_NUMBER, POOL, PROVIDER),
        SUBJECT,
        FEDERATED,
    )
    .await;
    let subject_dir = tempfile::tempdir().unwrap();
    let file = subject_dir.path().join("token");
    std::fs::write(&file, format!("{SUBJECT}\n")).unwrap();
    let options = GcsOptions::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
        .with_base_url(rig.base_url())
        .with_iam_endpoint(rig.iam.endpoint());
    let wif = WifOptions {
        subject: Some(SubjectToken {
            file,
            token_type: JWT_TOKEN_TYPE.into(),
        }),
        sts_endpoint: sts.endpoint(),
    };
    WifSetup {
        backend: Arc::new(GcsWifBackend::new(options, wif)),
        rig,
        sts,
        _subject_dir: subject_dir,
    }
}

fn pool_fields() -> Value {
    json!({
        "google_project_number": PROJECT_NUMBER,
        "google_wif_pool_id": POOL,
        "google_wif_provider_id": PROVIDER,
        "google_service_account_email": TARGET,
    })
}

async fn gcswif_bucket(case: &str) -> conformance::Bucket {
    let setup = wif_setup().await;
    conformance::Bucket {
        backend: setup.backend.clone(),
        storage_type: "gcswif",
        scheme: "gs",
        bucket: setup.rig.emulator.bucket.clone(),
        connection: pool_fields(),
        seed: Seed::new(
            setup.rig.shim.object_store(&setup.rig.emulator.bucket),
            unique_prefix(&format!("gcswif-{case}")),
        ),
        expiry_param: "X-Goog-Expires",
        guards: vec![
            Box::new(setup.rig),
            Box::new(setup.sts),
            Box::new(setup._subject_dir),
        ],
    }
}

mod gcswif {
    use super::*;
    crate::conformance_cases!(gcswif_bucket);

    #[tokio::test]
    async fn pushed_notifications_apply_exactly() {
        let bucket = gcswif_bucket("push").await;
        conformance::pushed_notifications_apply_exactly(&bucket, conformance::pubsub_push).await;
    }
}

async fn server_with(setup: &WifSetup) -> (Server, i64) {
    let server = Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![setup.backend.clone()],
    )
    .await;
    let project = server.project().await;
    (server, project)
}

fn body(project: i64, bucket: &str, prefix: &str, extra: Value) -> Value {
    let mut body = pool_fields();
    let map = body.as_object_mut().unwrap();
    map.insert("project".into(), json!(project));
    map.insert("bucket".into(), json!(bucket));
    map.insert("prefix".into(), json!(prefix));
    map.extend(extra.as_object().unwrap().clone());
    body
}

/// Create plus three syncs exchange the subject token once and impersonate
/// once: both tokens are cached until shortly before they expire. STS is
/// called as Google's protocol says (form fields, no Authorization), and
/// only the federated token reaches the IAM API.
#[tokio::test]
async fn tokens_are_exchanged_once_and_cached_across_syncs() {
    let setup = wif_setup().await;
    let emulator = &setup.rig.emulator;
    let seed = Seed::new(
        setup.rig.shim.object_store(&emulator.bucket),
        unique_prefix("gcswif-tokens"),
    );
    for i in 0..3 {
        seed.put(&format!("f{i}.txt"), "x").await;
    }
    let (server, project) = server_with(&setup).await;
    let (status, created) = server
        .post(
            "/api/storages/gcswif",
            body(
                project,
                &emulator.bucket,
                &seed.prefix,
                json!({"use_blob_urls": true}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["type"], "gcswif");
    assert_eq!(created["google_wif_pool_id"], POOL);
    let path = format!("/api/storages/gcswif/{}", created["id"]);
    for _ in 0..3 {
        server.post(&format!("{path}/sync"), json!({})).await;
        let done = server.wait_synced(&path).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let (_, tasks) = server.get(&format!("/api/tasks?project={project}")).await;
    assert_eq!(tasks["total"], 3, "{tasks}");

    let exchanges = setup.sts.requests();
    eprintln!(
        "create + 3 syncs: {} STS exchanges, {} generateAccessToken calls",
        exchanges.len(),
        setup.rig.iam.calls().generate_access_token
    );
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    let exchange = &exchanges[0];
    assert_eq!(exchange.status, 200);
    assert!(!exchange.authorized, "STS is called without Authorization");
    assert_eq!(
        exchange.form["subject_token"], SUBJECT,
        "the file's token, trimmed"
    );
    assert_eq!(
        exchange.form["audience"],
        format!("//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}")
    );
    // The create-time check forces one impersonation; the syncs reuse it.
    assert!(
        setup.rig.iam.calls().generate_access_token <= 2,
        "{:?}",
        setup.rig.iam.calls()
    );
    let requests = setup.rig.iam.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.caller.as_deref() == Some(format!("token:{FEDERATED}").as_str())),
        "only the federated token impersonates: {requests:?}"
    );
}

/// Each way the chain can break is a 400 that says what to fix, without
/// the provider's body or any token.
#[tokio::test]
async fn validation_explains_each_broken_link() {
    let setup = wif_setup().await;
    let bucket = setup.rig.emulator.bucket.clone();
    let (server, project) = server_with(&setup).await;
    let validate = |extra: Value| {
        let body = body(project, &bucket, "p", extra);
        let server = &server;
        async move { server.post("/api/storages/gcswif/validate", body).await }
    };
    let field_error = |status: StatusCode, answer: &Value, field: &str| -> String {
        envelope(status, answer, StatusCode::BAD_REQUEST)[field][0]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} error: {answer}"))
            .to_string()
    };

    // The form first, before any network call.
    let (status, answer) =
        validate(json!({"google_project_number": "my-project", "google_wif_pool_id": "Pool/../x"}))
            .await;
    assert!(
        field_error(status, &answer, "google_project_number").contains("is not a project number")
    );
    assert!(field_error(status, &answer, "google_wif_pool_id")
        .contains("is not a workload identity id"));
    let (status, answer) = validate(json!({"google_service_account_email": ""})).await;
    assert_eq!(
        field_error(status, &answer, "google_service_account_email"),
        "This field is required."
    );
    assert!(setup.sts.requests().is_empty());

    // A provider the pool does not have: STS's own words, and what to check.
    let (status, answer) = validate(json!({"google_wif_provider_id": "other-provider"})).await;
    let message = field_error(status, &answer, "non_field_errors");
    assert!(
        message.contains("Google STS refused")
            && message.contains("pool or provider is disabled or deleted"),
        "{message}"
    );
    assert!(
        !message.contains(SUBJECT) && !message.contains(FEDERATED),
        "{message}"
    );

    // A service account the federated identity may not impersonate.
    let (status, answer) = validate(json!({"google_service_account_email": DENIED})).await;
    let message = field_error(status, &answer, "non_field_errors");
    assert!(
        message.contains("roles/iam.serviceAccountTokenCreator"),
        "{message}"
    );

    // A server without a subject token says how to give it one.
    let (server, project) = {
        let backend = Arc::new(GcsWifBackend::new(GcsOptions::new(), WifOptions::default()));
        let server = Server::start_with(
            tempfile::tempdir().unwrap(),
            support::fast_runner(),
            vec![backend],
        )
        .await;
        let project = server.project().await;
        (server, project)
    };
    let (status, answer) = server
        .post(
            "/api/storages/gcswif/validate",
            body(project, &bucket, "p", json!({})),
        )
        .await;
    let message = field_error(status, &answer, "non_field_errors");
    assert!(
        message.contains("--gcs-wif-subject-token-file"),
        "{message}"
    );
}

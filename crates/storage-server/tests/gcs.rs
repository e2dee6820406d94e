//! GCS and GCS SA storages against fake-gcs-server (started by
//! `./scripts/test`) through the test harness's write adapter, and, for GCS
//! SA, a local double of the IAM Credentials API. The shared bucket
//! conformance suite runs against both, then the GCS-only behaviour.

#![allow(clippy::unwrap_used)]

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::{Backend, EndpointPolicy};
use storage_gcs::{GcsBackend, GcsOptions};
use storage_gcs_sa::GcsSaBackend;
use storage_testing::conformance::Seed;
use storage_testing::gcs_sa_rig::GcsSaRig;
use storage_testing::gcs_shim::{GcsShim, TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM};
use storage_testing::iam_double::IamDouble;
use storage_testing::unique_prefix;
use support::{envelope, Server};

const TARGET: &str = "reader@data-project.iam.gserviceaccount.com";
const DENIED: &str = "locked@data-project.iam.gserviceaccount.com";
const MISSING: &str = "ghost-account@data-project.iam.gserviceaccount.com";
const BASE: &str = "label-studio@server-project.iam.gserviceaccount.com";
/// A target that may read (its tokens are issued) but not sign.
const NO_SIGN: &str = "no-sign@data-project.iam.gserviceaccount.com";

fn options() -> GcsOptions {
    GcsOptions::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
}

async fn gcs_bucket(case: &str) -> conformance::Bucket {
    let emulator = storage_testing::fake_gcs();
    let shim = GcsShim::start(&emulator.endpoint).await;
    conformance::Bucket {
        backend: Arc::new(GcsBackend::new(options())),
        storage_type: "gcs",
        scheme: "gs",
        bucket: emulator.bucket.clone(),
        connection: json!({"google_application_credentials": shim.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM)}),
        seed: Seed::new(
            shim.object_store(&emulator.bucket),
            unique_prefix(&format!("gcs-{case}")),
        ),
        expiry_param: "X-Goog-Expires",
        guards: vec![Box::new(shim)],
    }
}

/// A GCS SA backend on the rig: the server's own identity impersonates
/// through the IAM double, which checks the JWTs object_store signs.
struct SaSetup {
    rig: GcsSaRig,
    backend: Arc<GcsSaBackend>,
}

async fn sa_setup() -> SaSetup {
    let rig = IamDouble::builder()
        .base_email(BASE)
        .target(TARGET)
        .denied(DENIED)
        .target(NO_SIGN)
        .denied_sign_blob(NO_SIGN)
        .missing(MISSING)
        .start_with_fake_gcs()
        .await;
    let backend = Arc::new(GcsSaBackend::new(
        options()
            .with_base_url(rig.base_url())
            .with_iam_endpoint(rig.iam.endpoint())
            .with_application_credentials(rig.identity_key.clone()),
    ));
    SaSetup { rig, backend }
}

async fn gcs_sa_bucket(case: &str) -> conformance::Bucket {
    let setup = sa_setup().await;
    conformance::Bucket {
        backend: setup.backend.clone(),
        storage_type: "gcs_sa",
        scheme: "gs",
        bucket: setup.rig.emulator.bucket.clone(),
        connection: json!({"target_service_account_email": TARGET}),
        seed: Seed::new(
            setup.rig.shim.object_store(&setup.rig.emulator.bucket),
            unique_prefix(&format!("gcs-sa-{case}")),
        ),
        expiry_param: "X-Goog-Expires",
        guards: vec![Box::new(setup.rig)],
    }
}

mod gcs {
    use super::*;
    crate::conformance_cases!(gcs_bucket);

    #[tokio::test]
    async fn pubsub_pushes_apply_exactly() {
        let bucket = gcs_bucket("pubsub").await;
        conformance::pushed_notifications_apply_exactly(&bucket, conformance::pubsub_push).await;
    }
}

mod gcs_sa {
    use super::*;
    crate::conformance_cases!(gcs_sa_bucket);

    #[tokio::test]
    async fn pubsub_pushes_apply_exactly() {
        let bucket = gcs_sa_bucket("pubsub").await;
        conformance::pushed_notifications_apply_exactly(&bucket, conformance::pubsub_push).await;
    }
}

async fn server_with(backend: Arc<dyn Backend>) -> Server {
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![backend],
    )
    .await
}

fn field_error(status: StatusCode, body: &Value, field: &str) -> String {
    let errors = envelope(status, body, StatusCode::BAD_REQUEST);
    errors[field][0]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} error: {body}"))
        .to_string()
}

#[tokio::test]
async fn gcs_credentials_are_checked_and_never_echoed() {
    let emulator = storage_testing::fake_gcs();
    let shim = GcsShim::start(&emulator.endpoint).await;
    let credentials = shim.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM);
    let server = server_with(Arc::new(GcsBackend::new(options()))).await;
    let project = server.project().await;
    let body = |extra: Value| {
        let mut body = json!({"project": project, "bucket": emulator.bucket, "google_application_credentials": credentials});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let message = |status, answer: &Value, field| field_error(status, answer, field);

    let (status, answer) = server
        .post(
            "/api/storages/gcs/validate",
            body(json!({"google_application_credentials": "{not json"})),
        )
        .await;
    assert!(message(status, &answer, "google_application_credentials")
        .starts_with("Google Application Credentials must be valid JSON string."));
    let (status, answer) = server
        .post(
            "/api/storages/gcs/validate",
            body(json!({"google_application_credentials": "{\"type\": \"x\"}"})),
        )
        .await;
    assert!(
        message(status, &answer, "google_application_credentials").contains("lacks client_email")
    );
    let (status, answer) = server
        .post(
            "/api/storages/gcs/validate",
            body(json!({"presign_ttl": 10081})),
        )
        .await;
    assert!(message(status, &answer, "presign_ttl").contains("10080"));
    let (status, answer) = server
        .post(
            "/api/storages/gcs/validate",
            body(json!({"bucket": "Bad_Bucket"})),
        )
        .await;
    assert!(message(status, &answer, "bucket").contains("Invalid bucket name"));

    let (status, created) = server
        .post("/api/storages/gcs", body(json!({"use_blob_urls": true})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/storages/gcs/{}", created["id"]);
    for shown in [
        created.clone(),
        server.get(&path).await.1,
        server
            .get(&format!("/api/storages/gcs?project={project}"))
            .await
            .1,
    ] {
        let text = shown.to_string();
        assert!(
            !text.contains("google_application_credentials") && !text.contains("PRIVATE KEY"),
            "{text}"
        );
    }
    // A partial PATCH keeps the key; syncing still works.
    server.patch(&path, json!({"title": "t"})).await;
    server.post(&format!("{path}/sync"), json!({})).await;
    assert_eq!(server.wait_synced(&path).await["status"], "completed");
}

#[tokio::test]
async fn gcs_base_url_obeys_the_endpoint_policy() {
    let strict = server_with(Arc::new(GcsBackend::new(GcsOptions::new()))).await;
    let project = strict.project().await;
    for base in [
        "http://127.0.0.1:17160",
        "http://169.254.169.254",
        "http://[::1]:4443",
    ] {
        let key = json!({"type": "service_account", "client_email": TEST_CLIENT_EMAIL, "private_key": TEST_PRIVATE_KEY_PEM,
                         "private_key_id": "k", "gcs_base_url": base, "disable_oauth": true});
        let (status, answer) = strict
            .post("/api/storages/gcs/validate", json!({"project": project, "bucket": "conformance", "google_application_credentials": key.to_string()}))
            .await;
        let message = field_error(status, &answer, "google_application_credentials");
        assert!(
            message.contains("--allow-private-endpoints"),
            "{base}: {message}"
        );
        assert!(!message.contains("PRIVATE KEY"));
    }
}

#[tokio::test]
async fn gcs_sa_impersonates_with_cached_tokens_and_signs_as_the_target() {
    let setup = sa_setup().await;
    let emulator = &setup.rig.emulator;
    let seed = Seed::new(
        setup.rig.shim.object_store(&emulator.bucket),
        unique_prefix("gcs-sa-tokens"),
    );
    for i in 0..3 {
        seed.put(&format!("f{i}.txt"), "x").await;
    }
    let prefix = &seed.prefix;
    let server = server_with(setup.backend.clone()).await;
    let project = server.project().await;
    let (status, created) = server
        .post("/api/storages/gcs_sa", json!({"project": project, "bucket": emulator.bucket, "prefix": prefix, "use_blob_urls": true,
               "target_service_account_email": TARGET, "presign_ttl": 5}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["type"], "gcs_sa");
    assert_eq!(created["target_service_account_email"], TARGET);
    let path = format!("/api/storages/gcs_sa/{}", created["id"]);
    for _ in 0..3 {
        server.post(&format!("{path}/sync"), json!({})).await;
        assert_eq!(server.wait_synced(&path).await["status"], "completed");
    }
    let requests = setup.rig.iam.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.caller.as_deref() == Some(format!("jwt:{BASE}").as_str())),
        "the base identity asks: {requests:?}"
    );
    // The create-time check forces one token; every later call reuses the cache.
    assert!(
        setup.rig.iam.calls().generate_access_token <= 2,
        "{:?}",
        setup.rig.iam.calls()
    );

    let (_, tasks) = server.get(&format!("/api/tasks?project={project}")).await;
    let url = tasks["tasks"][0]["data"]["$undefined$"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            tasks["tasks"][0]["data"]["image"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap();
    let response = server
        .client
        .get(server.url(&url))
        .header("Authorization", format!("Token {}", support::TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let signed = response.headers()["location"].to_str().unwrap().to_string();
    assert!(
        signed.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256"),
        "{signed}"
    );
    assert!(
        signed.contains(&format!("X-Goog-Credential={}", TARGET.replace('@', "%40"))),
        "signed as the target: {signed}"
    );
    assert!(signed.contains("X-Goog-Expires=300"), "{signed}");
    assert!(
        signed.contains("response-content-type=text%2Fplain"),
        "typed from the key's extension: {signed}"
    );
    assert_eq!(setup.rig.iam.calls().sign_blob, 1);
    let fetched = reqwest::get(&signed).await.unwrap();
    assert_eq!(
        fetched.status(),
        StatusCode::OK,
        "the emulator serves the object through the URL"
    );
    assert_eq!(fetched.headers()["content-type"], "text/plain");
    assert_eq!(fetched.bytes().await.unwrap(), "x");
}

#[tokio::test]
async fn gcs_sa_validation_explains_each_known_failure() {
    let setup = sa_setup().await;
    let emulator = &setup.rig.emulator;
    let server = server_with(setup.backend.clone()).await;
    let project = server.project().await;
    let validate = |email: &str| {
        server.post(
            "/api/storages/gcs_sa/validate",
            json!({"project": project, "bucket": emulator.bucket, "target_service_account_email": email}),
        )
    };
    let (status, answer) = validate("not-an-email").await;
    assert!(field_error(status, &answer, "target_service_account_email")
        .contains("is not a service account email"));
    assert_eq!(
        setup.rig.iam.calls().generate_access_token,
        0,
        "the form is checked before any network call"
    );

    let (status, answer) = validate(DENIED).await;
    let message = field_error(status, &answer, "non_field_errors");
    assert!(
        message.contains("iam.serviceAccounts.getAccessToken")
            && message.contains("roles/iam.serviceAccountTokenCreator"),
        "{message}"
    );
    let (status, answer) = validate(MISSING).await;
    let message = field_error(status, &answer, "non_field_errors");
    assert!(message.contains("not found"), "{message}");

    let (status, answer) = server
        .post("/api/storages/gcs_sa/validate", json!({"project": project, "bucket": "no-such-bucket-here", "target_service_account_email": TARGET}))
        .await;
    let message = field_error(status, &answer, "non_field_errors");
    assert!(
        message.contains("Cannot find bucket no-such-bucket-here"),
        "{message}"
    );
}

#[tokio::test]
async fn gcs_sa_validation_report_names_a_target_that_cannot_sign() {
    let setup = sa_setup().await;
    let emulator = &setup.rig.emulator;
    let seed = Seed::new(
        setup.rig.shim.object_store(&emulator.bucket),
        unique_prefix("gcs-sa-report"),
    );
    seed.put("a.jpg", "x").await;
    let server = server_with(setup.backend.clone()).await;
    let project = server.project().await;
    let (status, report) = server
        .post("/api/storages/gcs_sa/validate?report=true", json!({"project": project, "bucket": emulator.bucket,
               "prefix": seed.prefix, "use_blob_urls": true, "presign": true, "target_service_account_email": NO_SIGN}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        support::report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "read=skipped",
            "presign=failed"
        ],
        "{report}"
    );
    let message = support::report_message(&report, "presign");
    assert!(
        message.contains("signBlob") && message.contains("roles/iam.serviceAccountTokenCreator"),
        "{message}"
    );
}

/// A double of Google's certificates endpoint serving the public half of
/// the test service-account key, and OIDC tokens signed with that key as
/// Pub/Sub signs its authenticated pushes (RS256, `kid` in the header).
struct GoogleCerts {
    url: url::Url,
    key: ring::rsa::KeyPair,
    _server: tokio::task::JoinHandle<()>,
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl GoogleCerts {
    async fn start() -> Self {
        use base64::Engine;
        let der: String = TEST_PRIVATE_KEY_PEM
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap();
        let key = ring::rsa::KeyPair::from_pkcs8(&der).unwrap();
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(key.public());
        let keys = json!({"keys": [
            {"kid": "other-kid", "kty": "RSA", "alg": "RS256", "use": "sig", "n": base64url(&[1; 256]), "e": "AQAB"},
            {"kid": "test-kid", "kty": "RSA", "alg": "RS256", "use": "sig",
             "n": base64url(&public.n), "e": base64url(&public.e)},
        ]});
        let app = axum::Router::new().route(
            "/oauth2/v3/certs",
            axum::routing::get(move || {
                let keys = keys.clone();
                async move { axum::Json(keys) }
            }),
        );
        let (base, server) = support::serve_on_loopback(app).await;
        Self {
            url: format!("{base}/oauth2/v3/certs").parse().unwrap(),
            key,
            _server: server,
        }
    }

    /// A token with these claims, signed with the key of `kid`.
    fn token(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
        let signed = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{signed}.{}", base64url(&signature))
    }
}

/// `token` with its claims replaced by `claims`, its signature kept.
fn forged_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        base64url(claims.to_string().as_bytes()),
        parts[2]
    )
}

/// Authenticated Pub/Sub push: a storage with `pubsub_service_account` and
/// `pubsub_audience` takes pushes whose OIDC token Google's keys verify,
/// for that audience and account, unexpired, without `?token=`; anything
/// else is refused with the reason.
#[tokio::test]
async fn pubsub_pushes_with_a_verified_oidc_token_need_no_token() {
    const ACCOUNT: &str = "pubsub-push@label-studio.iam.gserviceaccount.com";
    const AUDIENCE: &str = "https://labels.example.com/pubsub";
    let certs = GoogleCerts::start().await;
    let b = gcs_bucket("oidc").await;
    let server = server_with(Arc::new(GcsBackend::new(
        options().with_pubsub_certs_url(&certs.url),
    )))
    .await;
    let project = server.project().await;
    b.seed.put("o/a.jpg", "x").await;
    let mut body = b.connection.clone();
    body["project"] = json!(project);
    body["bucket"] = json!(b.bucket);
    body["prefix"] = json!(b.seed.key("o"));
    body["use_blob_urls"] = json!(true);
    body["pubsub_service_account"] = json!(ACCOUNT);
    let (status, answer) = server.post("/api/storages/gcs", body.clone()).await;
    assert_eq!(
        field_error(status, &answer, "pubsub_audience"),
        "Set pubsub_service_account and pubsub_audience together"
    );
    body["pubsub_audience"] = json!(AUDIENCE);
    let path = server.create_storage("/api/storages/gcs", body).await;

    let now = chrono::Utc::now().timestamp();
    let claims = |changes: Value| {
        let mut claims = json!({
            "iss": "https://accounts.google.com", "aud": AUDIENCE, "azp": "1234",
            "email": ACCOUNT, "email_verified": true, "sub": "1234",
            "iat": now, "exp": now + 3600,
        });
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let push = conformance::pubsub_push(&b, &b.seed.key("o/a.jpg"), true, "oidc-1");
    let send = |authorization: String| {
        let (server, path, push) = (&server, &path, push.clone());
        async move {
            let response = server
                .raw(
                    reqwest::Method::POST,
                    &format!("{path}/notifications"),
                    Some(push),
                    Some(&authorization),
                )
                .await;
            let status = response.status();
            (status, response.text().await.unwrap())
        }
    };

    for (token, says) in [
        (
            certs.token("test-kid", &claims(json!({"aud": "https://elsewhere"}))),
            "audience",
        ),
        (
            certs.token(
                "test-kid",
                &claims(json!({"email": "someone@else.iam.gserviceaccount.com"})),
            ),
            "signed for",
        ),
        (
            certs.token("test-kid", &claims(json!({"exp": now - 3600}))),
            "expired",
        ),
        (
            certs.token(
                "test-kid",
                &claims(json!({"iss": "https://evil.example.com"})),
            ),
            "issuer",
        ),
        (
            certs.token("test-kid", &claims(json!({"email_verified": false}))),
            "signed for",
        ),
        (certs.token("other-kid", &claims(json!({}))), "signature"),
        (
            certs.token("no-such-kid", &claims(json!({}))),
            "no Google key",
        ),
        (
            forged_claims(
                &certs.token("test-kid", &claims(json!({}))),
                &claims(json!({"email": "x@evil.example.com"})),
            ),
            "signature",
        ),
        ("not.a.jwt".to_string(), "refused"),
    ] {
        let (status, text) = send(format!("Bearer {token}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{says}: {text}");
        assert!(text.contains(says), "{says}: {text}");
    }
    let (status, text) = send(format!("Token {}", support::TOKEN)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert_eq!(
        server.get(&format!("/api/tasks?project={project}")).await.1["total"],
        0
    );

    let (status, text) = send(format!(
        "Bearer {}",
        certs.token("test-kid", &claims(json!({})))
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        server.get(&format!("/api/tasks?project={project}")).await.1["total"],
        1
    );
}

//! The IAM Credentials client, impersonated credentials and signBlob URL signing against
//! `storage_testing::iam_double::IamDouble` over real HTTP on 127.0.0.1.
//!
//! No test reaches a non-loopback address: base identities are static tokens or
//! service-account keys (self-signed JWTs, made locally), and the object_store
//! comparison signs with a local signer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use http::Method;
use object_store::gcp::{
    GcpCredential, GcpCredentialProvider, GcpSigningCredential, GoogleCloudStorageBuilder,
    ServiceAccountKey,
};
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::{ClientOptions, CredentialProvider, StaticCredentialProvider};
use sha2::{Digest, Sha256};
use storage_gcs::iam::{
    valid_service_account_email, IamCredentials, IamError, IamOperation, ImpersonatedCredentials,
    CLOUD_PLATFORM_SCOPE,
};
use storage_gcs::signer::{signed_url, BlobSigner, IamBlobSigner};
use storage_testing::iam_double::IamDouble;
use url::Url;

const SERVER_TOKEN: &str = "server-base-token";
const TARGET: &str = "label-studio-reader@data-project.iam.gserviceaccount.com";
const DENIED: &str = "locked-account@data-project.iam.gserviceaccount.com";
const NO_SIGN: &str = "no-signing@data-project.iam.gserviceaccount.com";
const MISSING: &str = "does-not-exist@data-project.iam.gserviceaccount.com";
const BASE_EMAIL: &str = "label-studio-server@vendor-project.iam.gserviceaccount.com";

async fn double() -> IamDouble {
    IamDouble::builder()
        .base_token(SERVER_TOKEN)
        .base_email(BASE_EMAIL)
        .target(TARGET)
        .denied(DENIED)
        .denied_sign_blob(NO_SIGN)
        .missing(MISSING)
        .start()
        .await
}

fn static_base(token: &str) -> GcpCredentialProvider {
    Arc::new(StaticCredentialProvider::new(GcpCredential {
        bearer: token.to_owned(),
    }))
}

fn options() -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(true)
        .with_timeout(Duration::from_secs(5))
}

fn iam_at(endpoint: Url, base: GcpCredentialProvider) -> Arc<IamCredentials> {
    Arc::new(IamCredentials::new(endpoint, base, options()))
}

fn iam(double: &IamDouble) -> Arc<IamCredentials> {
    iam_at(double.endpoint(), static_base(SERVER_TOKEN))
}

/// The test RSA key (PKCS#8 PEM): the committed fixture, or a throw-away one from
/// `openssl` if the fixture is not there.
fn test_key_pem() -> String {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../storage-testing/fixtures/test-service-account-key.pem"
    );
    if let Ok(pem) = std::fs::read_to_string(fixture) {
        return pem;
    }
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("the test key fixture is missing and openssl cannot run");
    assert!(out.status.success(), "openssl genpkey failed");
    String::from_utf8(out.stdout).expect("PEM is text")
}

#[tokio::test]
async fn fetches_the_target_token_once_and_serves_it_from_the_cache() {
    let double = double().await;
    let creds = ImpersonatedCredentials::new(iam(&double), TARGET);

    let first = creds.get_credential().await.expect("token");
    let second = creds.get_credential().await.expect("cached token");
    assert_eq!(first.bearer, "ya29.double-1");
    assert_eq!(second.bearer, "ya29.double-1");
    assert_eq!(double.calls().generate_access_token, 1);

    let requests = double.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "generateAccessToken");
    assert_eq!(request.email, TARGET);
    assert_eq!(request.caller.as_deref(), Some("token:server-base-token"));
    assert_eq!(request.scopes, vec![CLOUD_PLATFORM_SCOPE.to_owned()]);
    assert_eq!(request.lifetime.as_deref(), Some("3600s"));
    assert_eq!(request.status, 200);

    // Debug never shows a token.
    let debug = format!("{creds:?} {:?}", creds.iam());
    assert!(
        !debug.contains("ya29") && !debug.contains(SERVER_TOKEN),
        "{debug}"
    );
    assert!(debug.contains(TARGET), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_callers_share_one_call() {
    let double = double().await;
    let creds = Arc::new(ImpersonatedCredentials::new(iam(&double), TARGET));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let creds = Arc::clone(&creds);
        tasks.spawn(async move { creds.get_credential().await.map(|c| c.bearer.clone()) });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task").expect("token"), "ya29.double-1");
    }
    assert_eq!(double.calls().generate_access_token, 1);
}

#[tokio::test]
async fn refreshes_a_token_near_its_expiry_and_token_now_forces_a_fetch() {
    let double = IamDouble::builder()
        .base_token(SERVER_TOKEN)
        .target(TARGET)
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await;
    let creds = ImpersonatedCredentials::new(iam(&double), TARGET)
        .with_refresh_before(Duration::from_secs(1))
        .with_scopes(["https://www.googleapis.com/auth/devstorage.read_write"])
        .with_lifetime(Duration::from_secs(600));

    assert_eq!(
        creds.get_credential().await.expect("token").bearer,
        "ya29.double-1"
    );
    assert_eq!(
        creds.get_credential().await.expect("cached").bearer,
        "ya29.double-1"
    );
    assert_eq!(double.calls().generate_access_token, 1);

    // Issued for at most 3 s (whole seconds), refreshed 1 s before: after 2.2 s it is due.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        creds.get_credential().await.expect("refreshed").bearer,
        "ya29.double-2"
    );
    assert_eq!(double.calls().generate_access_token, 2);

    assert_eq!(
        creds.token_now().await.expect("forced").bearer,
        "ya29.double-3"
    );
    assert_eq!(
        creds.get_credential().await.expect("cached").bearer,
        "ya29.double-3"
    );
    assert_eq!(double.calls().generate_access_token, 3);

    let request = &double.requests()[0];
    assert_eq!(request.lifetime.as_deref(), Some("600s"));
    assert_eq!(
        request.scopes,
        vec!["https://www.googleapis.com/auth/devstorage.read_write".to_owned()]
    );
}

#[tokio::test]
async fn generate_access_token_reports_google_expiry() {
    let double = double().await;
    let before = Utc::now();
    let token = iam(&double)
        .generate_access_token(TARGET, &[CLOUD_PLATFORM_SCOPE], Duration::from_secs(1200))
        .await
        .expect("token");
    assert_eq!(token.token, "ya29.double-1");
    let left = token.expire_time - before;
    assert!(
        (1198..=1201).contains(&left.num_seconds()),
        "expire_time {} is not ~1200 s after {before}",
        token.expire_time
    );
    assert!(!format!("{token:?}").contains("ya29"));
}

#[tokio::test]
async fn a_denied_target_names_the_permission_and_the_role() {
    let double = double().await;
    let creds = ImpersonatedCredentials::new(iam(&double), DENIED);

    let err = creds.token_now().await.expect_err("denied");
    assert!(
        matches!(&err, IamError::PermissionDenied { operation: IamOperation::GenerateAccessToken, email, .. } if email == DENIED),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "the server's identity lacks iam.serviceAccounts.getAccessToken on {DENIED} (grant it roles/iam.serviceAccountTokenCreator"
        )),
        "{text}"
    );
    assert!(
        text.contains("Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."),
        "{text}"
    );
    assert!(!text.contains(SERVER_TOKEN), "{text}");

    // As a CredentialProvider: object_store's PermissionDenied, with the same text.
    let err = creds.get_credential().await.expect_err("denied");
    assert!(
        matches!(err, object_store::Error::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("roles/iam.serviceAccountTokenCreator"),
        "{err}"
    );
    // And as a storage error.
    let err = storage_core::Error::from(creds.token_now().await.expect_err("denied"));
    assert!(
        matches!(err, storage_core::Error::PermissionDenied { .. }),
        "{err:?}"
    );
    // 403s are not retried.
    assert_eq!(double.calls().generate_access_token, 3);

    // signBlob: its own permission.
    let err = iam(&double)
        .sign_blob(NO_SIGN, b"payload")
        .await
        .expect_err("denied");
    assert_eq!(
        err.to_string(),
        format!(
            "the server's identity lacks iam.serviceAccounts.signBlob on {NO_SIGN} (grant it roles/iam.serviceAccountTokenCreator \
             on that service account); Google said: Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist)."
        )
    );
    // ... while the same account's tokens work.
    ImpersonatedCredentials::new(iam(&double), NO_SIGN)
        .token_now()
        .await
        .expect("generateAccessToken is allowed");
}

#[tokio::test]
async fn a_missing_service_account_says_what_an_email_looks_like() {
    let double = double().await;
    for email in [
        MISSING,
        "never-configured@data-project.iam.gserviceaccount.com",
    ] {
        let err = ImpersonatedCredentials::new(iam(&double), email)
            .token_now()
            .await
            .expect_err("missing");
        assert!(matches!(err, IamError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "service account {email} not found (it should look like name@project.iam.gserviceaccount.com); \
                 Google said: Not found; Gaia id not found for email {email}"
            )
        );
    }
    let err = ImpersonatedCredentials::new(iam(&double), MISSING)
        .get_credential()
        .await
        .expect_err("missing");
    // Not object_store's NotFound: that would read as a missing object.
    assert!(
        matches!(err, object_store::Error::Generic { store: "GCS", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_rejected_base_token_is_unauthenticated_and_not_quoted() {
    let double = double().await;
    let iam = iam_at(double.endpoint(), static_base("stale-base-token"));
    let err = ImpersonatedCredentials::new(Arc::clone(&iam), TARGET)
        .token_now()
        .await
        .expect_err("rejected");
    assert!(matches!(err, IamError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    let endpoint = double.endpoint().as_str().trim_end_matches('/').to_owned();
    assert!(
        text.starts_with(&format!(
            "the IAM Credentials API at {endpoint} rejected the server's own Google credentials"
        )),
        "{text}"
    );
    assert!(
        text.contains("Request had invalid authentication credentials"),
        "{text}"
    );
    assert!(!text.contains("stale-base-token"), "{text}");

    let err = ImpersonatedCredentials::new(iam, TARGET)
        .get_credential()
        .await
        .expect_err("rejected");
    assert!(
        matches!(err, object_store::Error::Unauthenticated { .. }),
        "{err:?}"
    );
    assert_eq!(double.requests()[0].caller, None);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let endpoint = Url::parse(&format!("http://127.0.0.1:{port}")).expect("URL");
    let err = ImpersonatedCredentials::new(iam_at(endpoint, static_base(SERVER_TOKEN)), TARGET)
        .token_now()
        .await
        .expect_err("unreachable");
    assert!(
        matches!(
            err,
            IamError::Network {
                transient: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot reach the IAM Credentials API at http://127.0.0.1:{port} (generateAccessToken for {TARGET})"
        )),
        "{text}"
    );
    assert!(!text.contains(SERVER_TOKEN), "{text}");
}

#[tokio::test]
async fn plain_http_needs_allow_http() {
    let double = double().await;
    let iam = IamCredentials::new(
        double.endpoint(),
        static_base(SERVER_TOKEN),
        ClientOptions::new(),
    );
    let err = iam.sign_blob(TARGET, b"x").await.expect_err("http refused");
    assert!(
        matches!(
            err,
            IamError::Network {
                transient: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("URL scheme is not allowed"),
        "{err}"
    );
    assert_eq!(double.calls().sign_blob, 0);
}

#[tokio::test]
async fn a_self_signed_jwt_of_the_base_account_is_accepted() {
    let double = double().await;
    let key_json = serde_json::json!({
        "type": "service_account",
        "client_email": BASE_EMAIL,
        "private_key": test_key_pem(),
        "private_key_id": "test-key-1",
    })
    .to_string();
    // No disable_oauth: object_store makes self-signed JWTs from the key (no network).
    let base = GoogleCloudStorageBuilder::new()
        .with_service_account_key(key_json)
        .with_bucket_name("x")
        .build()
        .expect("store")
        .credentials()
        .clone();
    let jwt = base.get_credential().await.expect("jwt");
    assert_eq!(jwt.bearer.split('.').count(), 3, "object_store made a JWT");

    let creds = ImpersonatedCredentials::new(iam_at(double.endpoint(), base), TARGET);
    assert_eq!(
        creds.token_now().await.expect("token").bearer,
        "ya29.double-1"
    );
    assert_eq!(
        double.requests()[0].caller.as_deref(),
        Some(format!("jwt:{BASE_EMAIL}").as_str())
    );

    // A JWT of another account is rejected.
    let other = IamDouble::builder()
        .base_email("someone-else@vendor-project.iam.gserviceaccount.com")
        .target(TARGET)
        .start()
        .await;
    let err = ImpersonatedCredentials::new(
        iam_at(
            other.endpoint(),
            Arc::new(StaticCredentialProvider::new(GcpCredential {
                bearer: jwt.bearer.clone(),
            })),
        ),
        TARGET,
    )
    .token_now()
    .await
    .expect_err("other issuer");
    assert!(matches!(err, IamError::Unauthenticated { .. }), "{err:?}");
}

fn query(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn sign_blob_signs_v4_urls_for_the_target() {
    let double = double().await;
    let signer = IamBlobSigner::new(iam(&double), TARGET);
    assert_eq!(signer.email(), TARGET);
    let now = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
        .expect("time")
        .with_timezone(&Utc);
    let base = Url::parse("http://127.0.0.1:4443").expect("URL");
    let url = signed_url(
        &base,
        "my-bucket",
        &Path::from("dir/a b.json"),
        Method::GET,
        Duration::from_secs(300),
        None,
        &signer,
        now,
    )
    .await
    .expect("signed URL");

    assert_eq!(double.calls().sign_blob, 1);
    let request = &double.requests()[0];
    assert_eq!(request.email, TARGET);
    assert_eq!(request.caller.as_deref(), Some("token:server-base-token"));
    let payload = request.payload.clone().expect("payload");
    let string_to_sign = String::from_utf8(payload.clone()).expect("text");
    assert!(
        string_to_sign.starts_with(
            "GOOG4-RSA-SHA256\n20260304T050607Z\n20260304/auto/storage/goog4_request\n"
        ),
        "{string_to_sign}"
    );

    assert_eq!(url.scheme(), "http");
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    assert_eq!(url.port(), Some(4443));
    assert_eq!(url.path(), "/my-bucket/dir/a%20b.json");
    assert_eq!(
        query(&url),
        vec![
            ("X-Goog-Algorithm".to_owned(), "GOOG4-RSA-SHA256".to_owned()),
            (
                "X-Goog-Credential".to_owned(),
                format!("{TARGET}/20260304/auto/storage/goog4_request")
            ),
            ("X-Goog-Date".to_owned(), "20260304T050607Z".to_owned()),
            ("X-Goog-Expires".to_owned(), "300".to_owned()),
            ("X-Goog-SignedHeaders".to_owned(), "host".to_owned()),
            (
                "X-Goog-Signature".to_owned(),
                hex::encode(IamDouble::fake_signature(&payload))
            ),
        ]
    );

    // Over 7 days: refused before any call.
    let err = signed_url(
        &base,
        "b",
        &Path::from("o"),
        Method::GET,
        Duration::from_secs(604_801),
        None,
        &signer,
        now,
    )
    .await
    .expect_err("too long");
    assert!(matches!(err, IamError::InvalidRequest { .. }), "{err:?}");
    assert_eq!(double.calls().sign_blob, 1);

    // A target without signBlob permission.
    let err = signed_url(
        &base,
        "b",
        &Path::from("o"),
        Method::GET,
        Duration::from_secs(60),
        None,
        &IamBlobSigner::new(iam(&double), NO_SIGN),
        now,
    )
    .await
    .expect_err("denied");
    assert!(
        err.to_string()
            .contains("lacks iam.serviceAccounts.signBlob on"),
        "{err}"
    );
}

/// An object_store signer that records what it signs and "signs" with SHA-256.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<Vec<u8>>>>);

impl object_store::client::Signer for Recording {
    fn sign(&self, string_to_sign: &[u8]) -> object_store::Result<Vec<u8>> {
        self.0.lock().expect("lock").push(string_to_sign.to_vec());
        Ok(Sha256::digest(string_to_sign).to_vec())
    }
}

/// A BlobSigner that records what it signs and "signs" with SHA-256.
#[derive(Debug, Default)]
struct LocalSha256 {
    signed: Mutex<Vec<Vec<u8>>>,
}

#[async_trait::async_trait]
impl BlobSigner for LocalSha256 {
    async fn sign(&self, string_to_sign: &[u8]) -> Result<Vec<u8>, IamError> {
        self.signed
            .lock()
            .expect("lock")
            .push(string_to_sign.to_vec());
        Ok(Sha256::digest(string_to_sign).to_vec())
    }

    fn email(&self) -> &str {
        TARGET
    }
}

/// object_store's own local-key signer, fed the same inputs, produces the same string to
/// sign and (with the same stand-in signature) the identical URL.
///
/// Keys are built with `Path::parse` (as object_store's listings do), so `as_ref()` is the
/// literal key. (`Path::from` escapes characters such as `~` to `%7E` *in the key*;
/// object_store's `signed_url` then treats that `%7E` as URL encoding and signs a URL for
/// `~`, while its get/put address the literal `%7E` key. `signed_url` here always
/// addresses the same object as object_store's get/put: see the last assertion.)
#[tokio::test]
async fn matches_object_stores_local_key_signer() {
    let recorded = Recording::default();
    let store = GoogleCloudStorageBuilder::new()
        .with_service_account_key(
            r#"{"disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}"#,
        )
        .with_bucket_name("my-bucket_1.x")
        .with_signing_credentials(Arc::new(StaticCredentialProvider::new(
            GcpSigningCredential {
                email: TARGET.to_owned(),
                private_key: Some(ServiceAccountKey::new(Box::new(recorded.clone()))),
            },
        )))
        .build()
        .expect("store");
    let base = Url::parse("https://storage.googleapis.com").expect("URL");

    for (key, method, secs, content_type) in [
        ("test-object", Method::GET, 10, None),
        ("dir/sub dir/file-1_a.b~c.txt", Method::PUT, 300, None),
        ("ünï/çødé.json", Method::GET, 604_800, None),
        ("scans/page 1.pdf", Method::GET, 60, Some("application/pdf")),
    ] {
        let path = Path::parse(key).expect("valid key");
        let theirs = store
            .signed_url_opts(
                method.clone(),
                &path,
                Duration::from_secs(secs),
                &storage_core::bucket::response_type_options(content_type),
            )
            .await
            .expect("object_store URL");
        let date = query(&theirs)
            .into_iter()
            .find(|(k, _)| k == "X-Goog-Date")
            .expect("X-Goog-Date")
            .1;
        let now = NaiveDateTime::parse_from_str(&date, "%Y%m%dT%H%M%SZ")
            .expect("date")
            .and_utc();

        let local = LocalSha256::default();
        let ours = signed_url(
            &base,
            "my-bucket_1.x",
            &path,
            method,
            Duration::from_secs(secs),
            content_type,
            &local,
            now,
        )
        .await
        .expect("our URL");

        let theirs_signed = recorded
            .0
            .lock()
            .expect("lock")
            .pop()
            .expect("object_store signed");
        let ours_signed = local.signed.lock().expect("lock").pop().expect("we signed");
        assert_eq!(
            String::from_utf8_lossy(&ours_signed),
            String::from_utf8_lossy(&theirs_signed),
            "string to sign for {key:?}"
        );
        // The same URL up to the order of its query (object_store puts
        // extra parameters first; the signature does not depend on it).
        let sorted = |url: &Url| {
            let mut pairs = query(url);
            pairs.sort();
            (url[..url::Position::AfterPath].to_owned(), pairs)
        };
        assert_eq!(sorted(&ours), sorted(&theirs), "URL for {key:?}");
    }

    let escaped = Path::from("file~1");
    assert_eq!(escaped.as_ref(), "file%7E1");
    let now = Utc::now();
    let ours = signed_url(
        &base,
        "b",
        &escaped,
        Method::GET,
        Duration::from_secs(60),
        None,
        &LocalSha256::default(),
        now,
    )
    .await
    .expect("our URL");
    assert_eq!(ours.path(), "/b/file%257E1");
}

#[test]
fn service_account_emails_are_checked() {
    assert!(valid_service_account_email(TARGET));
    assert!(valid_service_account_email(
        "my-project@appspot.gserviceaccount.com"
    ));
    assert!(valid_service_account_email(
        "123456789-compute@developer.gserviceaccount.com"
    ));
    assert!(!valid_service_account_email("label-studio@gmail.com"));
    assert!(!valid_service_account_email("label-studio"));
    assert!(!valid_service_account_email(
        "ls@data-project.iam.gserviceaccount.com"
    ));
}

//! STS AssumeRole credential provider against a loopback STS stub (axum),
//! against moto's STS (started by `./scripts/test`).

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use object_store::aws::AwsCredential;
use object_store::{ClientOptions, CredentialProvider};
use storage_s3::{AssumeRole, AssumeRoleConfig};
use url::Url;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/label-studio-import";
const BASE_KEY_ID: &str = "AKIABASEKEY000000001";
const BASE_SECRET: &str = "baseSecret/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "eu-west-1";

/// How the stub answers.
#[derive(Clone)]
struct StubOptions {
    /// `ExternalId` the "trust policy" requires (`None`: any or none).
    require_external_id: Option<String>,
    /// Seconds until the returned credentials expire.
    expires_in: i64,
    /// Delay before answering (lets concurrent callers pile up).
    delay: Duration,
    /// The first N calls answer 503 (transient failure).
    fail_first: usize,
}

impl Default for StubOptions {
    fn default() -> Self {
        Self {
            require_external_id: None,
            expires_in: 3600,
            delay: Duration::ZERO,
            fail_first: 0,
        }
    }
}

struct Stub {
    options: StubOptions,
    calls: AtomicUsize,
    issued: AtomicUsize,
    /// While set, every call is refused with AccessDenied (trust policy changed).
    refuse: AtomicBool,
    /// Form fields of every call.
    forms: Mutex<Vec<HashMap<String, String>>>,
    /// Request checks that failed (the test asserts this stays empty).
    problems: Mutex<Vec<String>>,
}

struct RunningStub {
    state: Arc<Stub>,
    addr: SocketAddr,
}

impl RunningStub {
    async fn start(options: StubOptions) -> Self {
        let state = Arc::new(Stub {
            options,
            calls: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
            refuse: AtomicBool::new(false),
            forms: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/", post(sts))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { state, addr }
    }

    fn endpoint(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).unwrap()
    }

    fn config(&self) -> AssumeRoleConfig {
        AssumeRoleConfig::new(ROLE_ARN)
            .with_region(REGION)
            .with_sts_endpoint(self.endpoint())
            .with_session_name("ls-storage-42")
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn last_form(&self) -> HashMap<String, String> {
        self.state.forms.lock().unwrap().last().cloned().unwrap()
    }

    /// Fails the test if any request broke the STS protocol.
    fn assert_no_problems(&self) {
        let problems = self.state.problems.lock().unwrap();
        assert!(
            problems.is_empty(),
            "STS stub saw bad requests: {problems:?}"
        );
    }
}

fn base_credential() -> AwsCredential {
    AwsCredential {
        key_id: BASE_KEY_ID.to_owned(),
        secret_key: BASE_SECRET.to_owned(),
        token: None,
    }
}

fn options() -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(true)
        .with_timeout(Duration::from_secs(10))
}

fn provider(config: AssumeRoleConfig) -> AssumeRole {
    AssumeRole::new(config, base_credential(), options())
}

fn temp_secret(n: usize) -> String {
    format!("tempSecret{n}/wJalrXUtnFEMI/K7MDENG")
}

fn temp_token(n: usize) -> String {
    format!("FwoGZXIvYXdzEBYaD{n}SessionTokenValue+/=")
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
    )
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml")], body).into_response()
}

/// Checks `AWS4-HMAC-SHA256 Credential=<key>/<yyyymmdd>/<region>/sts/aws4_request, ...`
/// (the signature itself is not verified) and returns the key id.
fn check_authorization(headers: &HeaderMap, problems: &mut Vec<String>) -> Option<String> {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        problems.push("no Authorization header".into());
        return None;
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 Credential=") else {
        problems.push(format!("not a SigV4 Authorization: {auth}"));
        return None;
    };
    let scope = rest.split(',').next().unwrap_or_default();
    let parts: Vec<&str> = scope.split('/').collect();
    match parts.as_slice() {
        [key, date, region, "sts", "aws4_request"] => {
            if date.len() != 8 || !date.chars().all(|c| c.is_ascii_digit()) {
                problems.push(format!("bad scope date in {scope}"));
            }
            if *region != REGION {
                problems.push(format!("scope region {region}, expected {REGION}"));
            }
            for part in ["SignedHeaders=", "Signature="] {
                if !rest.contains(part) {
                    problems.push(format!("Authorization lacks {part}"));
                }
            }
            for header in ["x-amz-date", "x-amz-content-sha256"] {
                if !headers.contains_key(header) {
                    problems.push(format!("no {header} header"));
                }
            }
            Some((*key).to_owned())
        }
        _ => {
            problems.push(format!("bad credential scope {scope}"));
            None
        }
    }
}

async fn sts(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: String) -> Response {
    let call = stub.calls.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(stub.options.delay).await;

    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    stub.forms.lock().unwrap().push(form.clone());

    let mut problems = Vec::new();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        problems.push(format!("content-type {content_type:?}"));
    }
    let key_id = check_authorization(&headers, &mut problems);
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("Action") != Some("AssumeRole") {
        problems.push(format!("Action {:?}", field("Action")));
    }
    if field("Version") != Some("2011-06-15") {
        problems.push(format!("Version {:?}", field("Version")));
    }
    if !field("RoleArn").is_some_and(|arn| arn.starts_with("arn:aws:iam::")) {
        problems.push(format!("RoleArn {:?}", field("RoleArn")));
    }
    if !field("RoleSessionName").is_some_and(|n| (2..=64).contains(&n.len())) {
        problems.push(format!("RoleSessionName {:?}", field("RoleSessionName")));
    }
    match field("DurationSeconds").map(str::parse::<u64>) {
        Some(Ok(900..=43_200)) => {}
        other => problems.push(format!("DurationSeconds {other:?}")),
    }
    if !problems.is_empty() {
        let message = problems.join("; ");
        stub.problems.lock().unwrap().extend(problems);
        return xml(
            StatusCode::BAD_REQUEST,
            error_xml("ValidationError", &message),
        );
    }

    if call <= stub.options.fail_first {
        return xml(
            StatusCode::SERVICE_UNAVAILABLE,
            error_xml("ServiceUnavailable", "Service is unavailable, try again"),
        );
    }
    if key_id.as_deref() != Some(BASE_KEY_ID) {
        return xml(
            StatusCode::FORBIDDEN,
            error_xml(
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ),
        );
    }
    if stub.refuse.load(Ordering::SeqCst) {
        return xml(
            StatusCode::FORBIDDEN,
            error_xml("AccessDenied", "trust policy no longer allows this server"),
        );
    }
    if let Some(required) = &stub.options.require_external_id {
        if field("ExternalId") != Some(required.as_str()) {
            let message = format!(
                "User: arn:aws:iam::123456789012:user/label-studio-server is not authorized \
                 to perform: sts:AssumeRole on resource: {}",
                field("RoleArn").unwrap_or_default()
            );
            return xml(StatusCode::FORBIDDEN, error_xml("AccessDenied", &message));
        }
    }

    let n = stub.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expiration = (chrono::Utc::now() + chrono::Duration::seconds(stub.options.expires_in))
        .format("%Y-%m-%dT%H:%M:%SZ");
    let body = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
         <AssumeRoleResult>\n\
         <SourceIdentity>label-studio</SourceIdentity>\n\
         <AssumedRoleUser>\n\
         <Arn>arn:aws:sts::123456789012:assumed-role/label-studio-import/{session}</Arn>\n\
         <AssumedRoleId>AROA3XFRBF535PLBIFPI4:{session}</AssumedRoleId>\n\
         </AssumedRoleUser>\n\
         <Credentials>\n\
         <AccessKeyId>ASIATEMPKEY{n:08}</AccessKeyId>\n\
         <SecretAccessKey>{secret}</SecretAccessKey>\n\
         <SessionToken>{token}</SessionToken>\n\
         <Expiration>{expiration}</Expiration>\n\
         </Credentials>\n\
         <PackedPolicySize>6</PackedPolicySize>\n\
         </AssumeRoleResult>\n\
         <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>\n\
         </AssumeRoleResponse>",
        session = field("RoleSessionName").unwrap_or_default(),
        secret = temp_secret(n),
        token = temp_token(n),
    );
    xml(StatusCode::OK, body)
}

#[tokio::test]
async fn success_returns_temporary_credentials_with_token() {
    let stub = RunningStub::start(StubOptions {
        require_external_id: Some("ext-123".into()),
        ..Default::default()
    })
    .await;
    let assume = provider(stub.config().with_external_id("ext-123"));

    let credential = assume.get_credential().await.unwrap();

    assert_eq!(credential.key_id, "ASIATEMPKEY00000001");
    assert_eq!(credential.secret_key, temp_secret(1));
    assert_eq!(credential.token.as_deref(), Some(temp_token(1).as_str()));
    assert_eq!(stub.calls(), 1);
    stub.assert_no_problems();

    let form = stub.last_form();
    assert_eq!(form["Action"], "AssumeRole");
    assert_eq!(form["Version"], "2011-06-15");
    assert_eq!(form["RoleArn"], ROLE_ARN);
    assert_eq!(form["RoleSessionName"], "ls-storage-42");
    assert_eq!(form["ExternalId"], "ext-123");
    assert_eq!(form["DurationSeconds"], "3600");
}

#[tokio::test]
async fn without_external_id_none_is_sent_and_duration_is_clamped() {
    let stub = RunningStub::start(StubOptions::default()).await;
    let mut config = stub
        .config()
        .with_external_id("")
        .with_session_name("user@example.com / project #7");
    // Set directly (bypassing with_duration's clamp): clamped again when sent.
    config.duration = Duration::from_secs(10);
    let assume = provider(config);

    assume.get_credential().await.unwrap();

    stub.assert_no_problems();
    let form = stub.last_form();
    assert!(!form.contains_key("ExternalId"), "{form:?}");
    assert_eq!(form["DurationSeconds"], "900");
    assert_eq!(form["RoleSessionName"], "user@example.com---project--7");
}

#[tokio::test]
async fn second_call_within_validity_is_served_from_cache() {
    let stub = RunningStub::start(StubOptions::default()).await;
    let assume = provider(stub.config());

    let first = assume.get_credential().await.unwrap();
    let second = assume.get_credential().await.unwrap();

    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(stub.calls(), 1);
    stub.assert_no_problems();
}

#[tokio::test]
async fn credentials_expiring_within_refresh_before_are_refreshed() {
    // Expire in 60 s: inside the default 5 min refresh margin, so every call refreshes.
    let stub = RunningStub::start(StubOptions {
        expires_in: 60,
        ..Default::default()
    })
    .await;
    let assume = provider(stub.config());

    let first = assume.get_credential().await.unwrap();
    let second = assume.get_credential().await.unwrap();

    assert_eq!(stub.calls(), 2);
    assert_eq!(first.key_id, "ASIATEMPKEY00000001");
    assert_eq!(second.key_id, "ASIATEMPKEY00000002");
    assert_eq!(second.token.as_deref(), Some(temp_token(2).as_str()));

    // With a 10 s margin the same 60 s credential is served from the cache.
    let cached = provider(stub.config().with_refresh_before(Duration::from_secs(10)));
    let a = cached.get_credential().await.unwrap();
    let b = cached.get_credential().await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(stub.calls(), 3);
    stub.assert_no_problems();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_sts_call() {
    let stub = RunningStub::start(StubOptions {
        delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let assume = Arc::new(provider(stub.config()));

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let assume = Arc::clone(&assume);
            tokio::spawn(async move { assume.get_credential().await })
        })
        .collect();
    let credentials: Vec<Arc<AwsCredential>> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();

    assert_eq!(stub.calls(), 1);
    assert!(credentials.iter().all(|c| Arc::ptr_eq(c, &credentials[0])));
    stub.assert_no_problems();
}

#[tokio::test]
async fn wrong_external_id_is_permission_denied_without_secrets() {
    let stub = RunningStub::start(StubOptions {
        require_external_id: Some("ext-123".into()),
        ..Default::default()
    })
    .await;

    for config in [
        stub.config().with_external_id("wrong-456"),
        stub.config(), // none at all
    ] {
        let assume = provider(config);
        let error = assume.get_credential().await.unwrap_err();
        let text = error.to_string();
        eprintln!("error text: {text}");
        assert!(
            matches!(error, object_store::Error::PermissionDenied { .. }),
            "{error:?}"
        );
        assert!(text.contains("AccessDenied"), "{text}");
        assert!(text.contains(ROLE_ARN), "{text}");
        assert!(text.contains("is not authorized to perform"), "{text}");
        assert!(!text.contains(BASE_SECRET), "{text}");
        assert!(!text.contains("wrong-456"), "{text}");
        let debug = format!("{error:?}");
        assert!(!debug.contains(BASE_SECRET), "{debug}");
    }
    // Not retried: one STS call per attempt above.
    assert_eq!(stub.calls(), 2);
    stub.assert_no_problems();

    // assume_now reports the same error early, and succeeds with the right id.
    let wrong = provider(stub.config().with_external_id("nope"));
    let error = wrong.assume_now().await.unwrap_err();
    assert!(matches!(
        error,
        object_store::Error::PermissionDenied { .. }
    ));
    let right = provider(stub.config().with_external_id("ext-123"));
    right.assume_now().await.unwrap();
}

#[tokio::test]
async fn rejected_base_credentials_are_unauthenticated() {
    let stub = RunningStub::start(StubOptions::default()).await;
    let other_base = AwsCredential {
        key_id: "AKIAOTHERKEY00000000".into(),
        secret_key: BASE_SECRET.into(),
        token: Some("baseSessionToken".into()),
    };
    let assume = AssumeRole::new(stub.config(), other_base, options());

    let error = assume.get_credential().await.unwrap_err();
    let text = error.to_string();
    eprintln!("error text: {text}");

    assert!(
        matches!(error, object_store::Error::Unauthenticated { .. }),
        "{error:?}"
    );
    assert!(text.contains("InvalidClientTokenId"), "{text}");
    assert!(!text.contains(BASE_SECRET), "{text}");
    assert!(!text.contains("baseSessionToken"), "{text}");
    stub.assert_no_problems();
}

#[tokio::test]
async fn transient_sts_failures_are_retried() {
    let stub = RunningStub::start(StubOptions {
        fail_first: 1,
        ..Default::default()
    })
    .await;
    let assume = provider(stub.config());

    let credential = assume.get_credential().await.unwrap();

    assert_eq!(credential.key_id, "ASIATEMPKEY00000001");
    assert_eq!(stub.calls(), 2);
    stub.assert_no_problems();
}

#[tokio::test]
async fn network_error_names_the_endpoint() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint = Url::parse(&format!("http://{addr}/")).unwrap();
    let assume = provider(AssumeRoleConfig::new(ROLE_ARN).with_sts_endpoint(endpoint));

    let error = assume.get_credential().await.unwrap_err();
    let text = error.to_string();
    eprintln!("error text: {text}");

    assert!(
        matches!(error, object_store::Error::Generic { store: "S3", .. }),
        "{error:?}"
    );
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.contains(ROLE_ARN), "{text}");
    assert!(!text.contains(BASE_SECRET), "{text}");
}

#[tokio::test]
async fn failed_refresh_falls_back_to_a_still_valid_credential() {
    // 120 s validity is inside the 5 min refresh margin: every call wants a refresh.
    let stub = RunningStub::start(StubOptions {
        expires_in: 120,
        ..Default::default()
    })
    .await;
    let assume = provider(stub.config());
    let first = assume.get_credential().await.unwrap();

    stub.state.refuse.store(true, Ordering::SeqCst);
    let second = assume.get_credential().await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(stub.calls(), 2);

    // Right after a failure STS is not asked again while the credential is usable...
    let third = assume.get_credential().await.unwrap();
    assert!(Arc::ptr_eq(&first, &third));
    assert_eq!(stub.calls(), 2);

    // ...but assume_now always asks and reports the failure.
    let error = assume.assume_now().await.unwrap_err();
    assert!(
        matches!(error, object_store::Error::PermissionDenied { .. }),
        "{error:?}"
    );
    assert_eq!(stub.calls(), 3);

    // Recovery: the next forced call succeeds and replaces the credential.
    stub.state.refuse.store(false, Ordering::SeqCst);
    assume.assume_now().await.unwrap();
    assert_eq!(stub.calls(), 4);
    let fresh = assume.get_credential().await.unwrap();
    assert_ne!(fresh.key_id, first.key_id);
    stub.assert_no_problems();
}

#[tokio::test]
async fn failed_refresh_of_an_almost_expired_credential_is_an_error() {
    let stub = RunningStub::start(StubOptions {
        expires_in: 20,
        ..Default::default()
    })
    .await;
    let assume = provider(stub.config());
    assume.get_credential().await.unwrap();

    stub.state.refuse.store(true, Ordering::SeqCst);
    let error = assume.get_credential().await.unwrap_err();

    assert!(
        matches!(error, object_store::Error::PermissionDenied { .. }),
        "{error:?}"
    );
    assert_eq!(stub.calls(), 2);
}

#[tokio::test]
async fn assume_now_forces_a_call() {
    let stub = RunningStub::start(StubOptions::default()).await;
    let assume = provider(stub.config());

    assume.get_credential().await.unwrap();
    assume.assume_now().await.unwrap();
    let credential = assume.get_credential().await.unwrap();

    assert_eq!(stub.calls(), 2);
    assert_eq!(credential.key_id, "ASIATEMPKEY00000002");
}

#[tokio::test]
async fn debug_output_has_no_secret() {
    let stub = RunningStub::start(StubOptions::default()).await;
    let config = stub.config().with_external_id("ext-secretish-123");
    let assume = provider(config.clone());
    let credential = assume.get_credential().await.unwrap();

    let debug = format!("{assume:?} {config:?} {credential:?}");

    assert!(debug.contains(ROLE_ARN), "{debug}");
    assert!(debug.contains(&stub.endpoint().to_string()), "{debug}");
    for secret in [
        BASE_SECRET,
        BASE_KEY_ID,
        &temp_secret(1),
        &temp_token(1),
        "ext-secretish-123",
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    let provider_debug = format!("{assume:#?}");
    assert!(!provider_debug.contains("ASIATEMPKEY"), "{provider_debug}");
}

#[test]
fn config_defaults_and_builders() {
    let config = AssumeRoleConfig::new(ROLE_ARN);
    assert_eq!(config.role_arn, ROLE_ARN);
    assert_eq!(config.external_id, None);
    assert_eq!(config.session_name, "label-studio");
    assert_eq!(config.duration, Duration::from_secs(3600));
    assert_eq!(config.sts_endpoint.as_str(), "https://sts.amazonaws.com/");
    assert_eq!(config.region, "us-east-1");
    assert_eq!(config.refresh_before, Duration::from_secs(300));

    let regional = AssumeRoleConfig::new(ROLE_ARN).with_region("eu-west-1");
    assert_eq!(regional.region, "eu-west-1");
    assert_eq!(
        regional.sts_endpoint.as_str(),
        "https://sts.eu-west-1.amazonaws.com/"
    );
    let china = AssumeRoleConfig::new(ROLE_ARN).with_region("cn-north-1");
    assert_eq!(
        china.sts_endpoint.as_str(),
        "https://sts.cn-north-1.amazonaws.com.cn/"
    );
    let back = regional.clone().with_region("");
    assert_eq!(back.region, "us-east-1");
    assert_eq!(back.sts_endpoint.as_str(), "https://sts.amazonaws.com/");

    // An explicit endpoint wins whatever the order.
    let custom = Url::parse("https://vpce-1.sts.eu-west-1.vpce.amazonaws.com/").unwrap();
    let before = AssumeRoleConfig::new(ROLE_ARN)
        .with_sts_endpoint(custom.clone())
        .with_region("eu-west-1");
    let after = AssumeRoleConfig::new(ROLE_ARN)
        .with_region("eu-west-1")
        .with_sts_endpoint(custom.clone());
    assert_eq!(before.sts_endpoint, custom);
    assert_eq!(after.sts_endpoint, custom);
    assert_eq!(before.region, "eu-west-1");

    let clamped = AssumeRoleConfig::new(ROLE_ARN).with_duration(Duration::from_secs(60));
    assert_eq!(clamped.duration, Duration::from_secs(900));
    let clamped = AssumeRoleConfig::new(ROLE_ARN).with_duration(Duration::from_secs(100_000));
    assert_eq!(clamped.duration, Duration::from_secs(43_200));
    let kept = AssumeRoleConfig::new(ROLE_ARN).with_duration(Duration::from_secs(7200));
    assert_eq!(kept.duration, Duration::from_secs(7200));

    let with_id = AssumeRoleConfig::new(ROLE_ARN)
        .with_external_id("ext-123")
        .with_session_name("s1")
        .with_refresh_before(Duration::from_secs(60));
    assert_eq!(with_id.external_id.as_deref(), Some("ext-123"));
    assert_eq!(with_id.session_name, "s1");
    assert_eq!(with_id.refresh_before, Duration::from_secs(60));
    assert_eq!(with_id.with_external_id("").external_id, None);
}

/// moto's STS (same port as its S3), then S3 calls and a presigned GET with
/// the temporary credentials. Fails with instructions when moto is not running.
#[tokio::test]
async fn moto_assume_role_then_s3() {
    use object_store::aws::AmazonS3Builder;
    use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
    use object_store::path::Path;
    use object_store::signer::Signer;
    use object_store::{ObjectStoreExt, RetryConfig};

    let endpoint = storage_testing::moto()
        .endpoint
        .trim_end_matches('/')
        .to_owned();
    let base = AwsCredential {
        key_id: "testing".into(),
        secret_key: "testing".into(),
        token: None,
    };
    let config = AssumeRoleConfig::new("arn:aws:iam::123456789012:role/label-studio")
        .with_external_id("ext-123")
        .with_sts_endpoint(Url::parse(&format!("{endpoint}/")).unwrap());
    let assume = Arc::new(AssumeRole::new(config, base, options()));

    let credential = assume.get_credential().await.unwrap();
    assert!(credential.key_id.starts_with("ASIA"), "{credential:?}");
    assert!(credential.token.is_some());

    // A fresh bucket (moto creates it on an unsigned PUT).
    let client = ReqwestConnector::default().connect(&options()).unwrap();
    let bucket = format!("assume-role-{}", uuid::Uuid::new_v4().simple());
    let request = http::Request::builder()
        .method("PUT")
        .uri(format!("{endpoint}/{bucket}"))
        .body(HttpRequestBody::empty())
        .unwrap();
    let response = client.execute(request).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let store = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_credentials(assume.clone())
        .with_client_options(options())
        .with_retry(RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .unwrap();
    let path = Path::from("dir/a.txt");
    store.put(&path, "hello".into()).await.unwrap();
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"hello");

    let url = store
        .signed_url(http::Method::GET, &path, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(
        url.query()
            .unwrap_or_default()
            .contains("X-Amz-Security-Token="),
        "{url}"
    );
    assert!(
        url.query()
            .unwrap_or_default()
            .contains("X-Amz-Credential=ASIA"),
        "{url}"
    );
    let request = http::Request::builder()
        .method("GET")
        .uri(url.as_str())
        .body(HttpRequestBody::empty())
        .unwrap();
    let response = client.execute(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.into_body().bytes().await.unwrap().as_ref(),
        b"hello"
    );
}

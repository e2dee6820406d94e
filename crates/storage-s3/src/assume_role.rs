//! STS `AssumeRole` (with `ExternalId`) credential provider for object_store.
//!
//! Label Studio's S3 storages may carry a `role_arn` and an `external_id`: the server's
//! own AWS credentials call [STS AssumeRole] and the temporary credentials it returns
//! are used for every S3 call and for presigning. object_store 0.14 only implements
//! `AssumeRoleWithWebIdentity`, so [`AssumeRole`] does the call itself:
//!
//! * a form-encoded `POST` to the STS endpoint, SigV4-signed (service `sts`) with
//!   object_store's own [`AwsAuthorizer`] and sent with object_store's HTTP client (so
//!   [`ClientOptions`] such as `allow_http`, proxies, timeouts and DNS resolvers apply);
//! * the XML answer is parsed into an [`AwsCredential`] with its session token;
//! * the credential is cached and refreshed [`AssumeRoleConfig::refresh_before`] ahead of
//!   its expiry; concurrent callers share one in-flight STS call.
//!
//! Credentials (base or temporary) and the external id are never logged nor printed by
//! `Debug`, and never appear in error messages.
//!
//! [STS AssumeRole]: https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html

use std::fmt;
use std::sync::Arc;

use std::time::{Duration, Instant};
use storage_core::credentials::{CredentialCache, Expiring};
use storage_core::failure::{ServiceError, REJECTED_CREDENTIAL_CODES};
use storage_core::retry::{Classify, RetryPolicy};
use storage_core::Retry;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{
    HttpClient, HttpConnector, HttpErrorKind, HttpRequest, HttpRequestBody,
};
use object_store::{ClientOptions, CredentialProvider};
use serde::Deserialize;
use url::Url;

/// The STS API version sent with every request.
const STS_VERSION: &str = "2011-06-15";
/// The store name used in [`object_store::Error::Generic`].
const STORE: &str = "S3";
/// Shortest session STS accepts (`DurationSeconds`).
const MIN_DURATION: Duration = Duration::from_secs(900);
/// Longest session STS accepts (`DurationSeconds`); the role's own maximum may be lower.
const MAX_DURATION: Duration = Duration::from_secs(43_200);
/// Default session duration.
const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
/// Default margin before expiry at which the credential is refreshed.
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Default `RoleSessionName`.
const DEFAULT_SESSION_NAME: &str = "label-studio";
/// Default signing region (the global endpoint signs as us-east-1).
const DEFAULT_REGION: &str = "us-east-1";
/// Most characters of a non-STS error body quoted in an error message.
const MAX_BODY_QUOTE: usize = 200;

/// Configuration of an [`AssumeRole`] credential provider.
///
/// Built object_store style: [`AssumeRoleConfig::new`] then `with_*` methods.
///
/// ```
/// use storage_s3::AssumeRoleConfig;
/// use std::time::Duration;
///
/// let config = AssumeRoleConfig::new("arn:aws:iam::123456789012:role/label-studio")
///     .with_external_id("ext-123")
///     .with_region("eu-west-1")
///     .with_duration(Duration::from_secs(7200));
/// assert_eq!(config.sts_endpoint.as_str(), "https://sts.eu-west-1.amazonaws.com/");
/// ```
#[derive(Clone)]
pub struct AssumeRoleConfig {
    /// ARN of the role to assume (`RoleArn`).
    pub role_arn: String,
    /// `ExternalId` required by the role's trust policy; `None` (or an empty string)
    /// sends no `ExternalId`.
    pub external_id: Option<String>,
    /// `RoleSessionName` (default `label-studio`). Characters STS does not accept are
    /// replaced by `-` and it is cut to 64 characters when sent.
    pub session_name: String,
    /// Requested session duration (`DurationSeconds`, default 1 h). Clamped to STS's
    /// 900 s..=43200 s when sent; the role's maximum session duration may be lower.
    pub duration: Duration,
    /// STS endpoint the form is posted to (default `https://sts.amazonaws.com/`, or the
    /// regional `https://sts.<region>.amazonaws.com/` after [`Self::with_region`]).
    pub sts_endpoint: Url,
    /// Region used in the SigV4 credential scope (default `us-east-1`).
    pub region: String,
    /// The cached credential is refreshed once it expires within this margin
    /// (default 5 min). Keep it well below [`Self::duration`].
    pub refresh_before: Duration,
    /// How STS calls that fail in a way that may pass are retried.
    pub retry: RetryPolicy,
}

impl AssumeRoleConfig {
    /// A configuration assuming `role_arn` with the defaults: no external id, session
    /// name `label-studio`, 1 h sessions, global endpoint `https://sts.amazonaws.com/`
    /// signed for `us-east-1`, refresh 5 min before expiry.
    pub fn new(role_arn: impl Into<String>) -> Self {
        Self {
            role_arn: role_arn.into(),
            external_id: None,
            session_name: DEFAULT_SESSION_NAME.to_owned(),
            duration: DEFAULT_DURATION,
            sts_endpoint: default_endpoint(DEFAULT_REGION),
            region: DEFAULT_REGION.to_owned(),
            refresh_before: DEFAULT_REFRESH_BEFORE,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets how STS calls that fail in a way that may pass are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the `ExternalId`; an empty string means none.
    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Self {
        let external_id = external_id.into();
        self.external_id = (!external_id.is_empty()).then_some(external_id);
        self
    }

    /// Sets the `RoleSessionName` (shows up in CloudTrail as the session's name).
    pub fn with_session_name(mut self, session_name: impl Into<String>) -> Self {
        self.session_name = session_name.into();
        self
    }

    /// Sets the requested session duration, clamped to 900 s..=43200 s.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = clamp_duration(duration);
        self
    }

    /// Sets the signing region. Unless an explicit endpoint was set with
    /// [`Self::with_sts_endpoint`] (before or after), the endpoint becomes the regional
    /// `https://sts.<region>.amazonaws.com/` (`.amazonaws.com.cn` for `cn-*` regions).
    /// An empty region means `us-east-1` with the global endpoint.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        let region = region.into();
        let region = if region.is_empty() {
            DEFAULT_REGION.to_owned()
        } else {
            region
        };
        let endpoint_is_derived = self.sts_endpoint == default_endpoint(&self.region)
            || self.sts_endpoint == default_endpoint(DEFAULT_REGION);
        if endpoint_is_derived {
            self.sts_endpoint = if region == DEFAULT_REGION {
                default_endpoint(DEFAULT_REGION)
            } else {
                regional_endpoint(&region)
            };
        }
        self.region = region;
        self
    }

    /// Sets the STS endpoint explicitly (e.g. a VPC endpoint, or an emulator in tests).
    pub fn with_sts_endpoint(mut self, endpoint: Url) -> Self {
        self.sts_endpoint = endpoint;
        self
    }

    /// Sets how long before expiry the cached credential is refreshed.
    pub fn with_refresh_before(mut self, refresh_before: Duration) -> Self {
        self.refresh_before = refresh_before;
        self
    }

    /// The STS endpoint (same as the [`Self::sts_endpoint`] field).
    pub fn sts_endpoint(&self) -> &Url {
        &self.sts_endpoint
    }
}

impl fmt::Debug for AssumeRoleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRoleConfig")
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id.as_ref().map(|_| "******"))
            .field("session_name", &self.session_name)
            .field("duration", &self.duration)
            .field("sts_endpoint", &self.sts_endpoint.as_str())
            .field("region", &self.region)
            .field("refresh_before", &self.refresh_before)
            .field("retry", &self.retry)
            .finish()
    }
}

/// The default endpoint for a region: the global one for `us-east-1`.
fn default_endpoint(region: &str) -> Url {
    if region == DEFAULT_REGION {
        Url::parse("https://sts.amazonaws.com/").expect("static URL is valid")
    } else {
        regional_endpoint(region)
    }
}

/// `https://sts.<region>.amazonaws.com/` (`.com.cn` in China); the global endpoint if the
/// region does not make a valid host name.
fn regional_endpoint(region: &str) -> Url {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Url::parse(&format!("https://sts.{region}.{suffix}/"))
        .unwrap_or_else(|_| default_endpoint(DEFAULT_REGION))
}

fn clamp_duration(duration: Duration) -> Duration {
    duration.clamp(MIN_DURATION, MAX_DURATION)
}

/// `RoleSessionName` must match `[\w+=,.@-]{2,64}`.
fn sanitize_session_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.len() < 2 {
        DEFAULT_SESSION_NAME.to_owned()
    } else {
        cleaned
    }
}

/// An object_store [`CredentialProvider`] that assumes an IAM role through STS
/// `AssumeRole` (optionally with `ExternalId`), signing the STS call with base
/// credentials, and caches the temporary credentials until shortly before they expire.
///
/// Use it with `AmazonS3Builder::with_credentials(Arc::new(assume_role))` (and do not
/// also set keys on the builder); presigned URLs then carry `X-Amz-Security-Token`.
///
/// `Debug` shows the role ARN and the STS endpoint only.
pub struct AssumeRole {
    config: AssumeRoleConfig,
    base: Base,
    /// The HTTP client, or why it could not be built (reported by every STS call).
    client: Result<HttpClient, String>,
    cache: CredentialCache<AwsCredential>,
}

/// Where the credentials signing the STS call come from.
enum Base {
    Static(Arc<AwsCredential>),
    Provider(Arc<dyn CredentialProvider<Credential = AwsCredential>>),
}

impl Base {
    async fn get(&self) -> object_store::Result<Arc<AwsCredential>> {
        match self {
            Self::Static(credential) => Ok(Arc::clone(credential)),
            Self::Provider(provider) => provider.get_credential().await,
        }
    }
}

impl fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRole")
            .field("role_arn", &self.config.role_arn)
            .field("sts_endpoint", &self.config.sts_endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl AssumeRole {
    /// A provider that signs the STS call with the static base credentials `base` (the
    /// server's own keys, as `AwsCredential` or `Arc<AwsCredential>`; a session token in
    /// them is sent too) and sends it with an HTTP client built from `options`
    /// (`allow_http`, timeouts, proxy, DNS resolver, ...).
    ///
    /// Makes no network call; see [`Self::assume_now`] to check the role early. If the
    /// HTTP client cannot be built from `options`, every credential request fails with
    /// that reason.
    pub fn new(
        config: AssumeRoleConfig,
        base: impl Into<Arc<AwsCredential>>,
        options: ClientOptions,
    ) -> Self {
        Self::build(config, Base::Static(base.into()), &options)
    }

    /// Like [`Self::new`], but the base credentials come from a provider (asked once per
    /// STS call), e.g. another [`AssumeRole`] for role chaining.
    pub fn with_base_provider(
        config: AssumeRoleConfig,
        base: Arc<dyn CredentialProvider<Credential = AwsCredential>>,
        options: ClientOptions,
    ) -> Self {
        Self::build(config, Base::Provider(base), &options)
    }

    /// Like [`Self::with_base_provider`], with a ready [`HttpClient`] (e.g. from the same
    /// `HttpConnector` the S3 store uses).
    pub fn with_http_client(
        config: AssumeRoleConfig,
        base: Arc<dyn CredentialProvider<Credential = AwsCredential>>,
        client: HttpClient,
    ) -> Self {
        Self {
            config,
            base: Base::Provider(base),
            client: Ok(client),
            cache: CredentialCache::default(),
        }
    }

    fn build(config: AssumeRoleConfig, base: Base, options: &ClientOptions) -> Self {
        // The STS endpoint is the operator's; but a redirect from it is not
        // followed, and the environment's proxy is not used.
        let client = storage_core::endpoint::PolicyConnector::new(
            storage_core::EndpointPolicy::allow_private(),
        )
        .connect(options)
        .map_err(|e| error_chain(&e));
        Self {
            config,
            base,
            client,
            cache: CredentialCache::default(),
        }
    }

    /// The configuration this provider was built with.
    pub fn config(&self) -> &AssumeRoleConfig {
        &self.config
    }

    /// Calls STS now, whatever is cached, and caches the new credential on success.
    ///
    /// Meant for validating a storage's settings: the error is the same one S3 calls
    /// would report (see [`CredentialProvider::get_credential`] on this type).
    ///
    /// # Errors
    ///
    /// As [`CredentialProvider::get_credential`].
    pub async fn assume_now(&self) -> object_store::Result<()> {
        self.cache.refresh_now(|| self.fetch()).await.map(|_| ())
    }

    /// How long the cached session credential has left (`None` before the first STS
    /// call): a URL presigned with it stops working then, whatever it says.
    pub async fn session_left(&self) -> Option<Duration> {
        self.cache
            .expires_at()
            .await
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// One credential fetch: STS calls retried under core's [`RetryPolicy`]
    /// while they fail in a way that may pass (network, throttling, 5xx).
    async fn fetch(&self) -> object_store::Result<Expiring<AwsCredential>> {
        self.config
            .retry
            .run(|| self.call_sts())
            .await
            .map_err(|failure| failure.error)
    }

    /// One signed STS `AssumeRole` call.
    async fn call_sts(&self) -> Result<Expiring<AwsCredential>, Failure> {
        let config = &self.config;
        let client = self.client.as_ref().map_err(|e| {
            Failure::fatal(generic(format!(
                "STS AssumeRole of {}: cannot build an HTTP client for {}: {e}",
                config.role_arn, config.sts_endpoint
            )))
        })?;
        let base = self.base.get().await.map_err(Failure::fatal)?;

        let duration = clamp_duration(config.duration);
        let session_name = sanitize_session_name(&config.session_name);
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", "AssumeRole")
                .append_pair("Version", STS_VERSION)
                .append_pair("RoleArn", &config.role_arn)
                .append_pair("RoleSessionName", &session_name);
            if let Some(external_id) = config.external_id.as_deref().filter(|e| !e.is_empty()) {
                form.append_pair("ExternalId", external_id);
            }
            form.append_pair("DurationSeconds", &duration.as_secs().to_string());
            Bytes::from(form.finish())
        };

        let mut request: HttpRequest = http::Request::builder()
            .method(Method::POST)
            .uri(config.sts_endpoint.as_str())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
            )
            .body(HttpRequestBody::from(body))
            .map_err(|e| {
                Failure::fatal(generic(format!(
                    "invalid STS endpoint {}: {e}",
                    config.sts_endpoint
                )))
            })?;
        AwsAuthorizer::new(&base, "sts", &config.region)
            .try_authorize(&mut request, None)
            .map_err(Failure::fatal)?;
        drop(base);

        let started = Instant::now();
        let sent_at = Utc::now();
        let response = client.execute(request).await.map_err(|e| {
            let retryable = matches!(
                e.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
            Failure {
                error: service_error(ServiceError {
                    unreachable: true,
                    message: format!(
                        "STS AssumeRole of {} could not reach {}: {}",
                        config.role_arn,
                        config.sts_endpoint,
                        error_chain(&e)
                    ),
                    ..ServiceError::default()
                }),
                retryable,
            }
        })?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| Failure {
            error: service_error(ServiceError {
                status: Some(status.as_u16()),
                unreachable: true,
                message: format!(
                    "STS AssumeRole of {}: reading the answer of {} failed: {}",
                    config.role_arn,
                    config.sts_endpoint,
                    error_chain(&e)
                ),
                ..ServiceError::default()
            }),
            retryable: true,
        })?;

        if !status.is_success() {
            return Err(self.error_response(status, &body));
        }

        // Never quote a successful body: it holds the secret key and the token.
        let parsed: AssumeRoleResponse =
            quick_xml::de::from_reader(body.as_ref()).map_err(|e| {
                Failure::fatal(generic(format!(
                    "STS AssumeRole of {}: unexpected answer from {} (HTTP {status}): {e}",
                    config.role_arn, config.sts_endpoint
                )))
            })?;
        let creds = parsed.result.credentials;
        let expiration = DateTime::parse_from_rfc3339(creds.expiration.trim())
            .map_err(|e| {
                Failure::fatal(generic(format!(
                    "STS AssumeRole of {}: Expiration {:?} from {} is not an RFC 3339 time: {e}",
                    config.role_arn, creds.expiration, config.sts_endpoint
                )))
            })?
            .with_timezone(&Utc);

        // Monotonic deadline: what STS says is left (by our wall clock), but never more
        // than the requested duration (guards against a local clock running behind).
        let left = (expiration - sent_at).to_std().unwrap_or(Duration::ZERO);
        let expires_at = started + left.min(duration);
        tracing::debug!(
            role_arn = %config.role_arn,
            endpoint = %config.sts_endpoint,
            %expiration,
            "STS AssumeRole succeeded"
        );
        Ok(Expiring {
            value: Arc::new(AwsCredential {
                key_id: creds.access_key_id,
                secret_key: creds.secret_access_key,
                token: Some(creds.session_token),
            }),
            expires_at,
        })
    }

    /// Maps a non-2xx STS answer to an object_store error.
    fn error_response(&self, status: StatusCode, body: &[u8]) -> Failure {
        let config = &self.config;
        let path = config.sts_endpoint.to_string();
        let Ok(parsed) = quick_xml::de::from_reader::<_, ErrorResponse>(body) else {
            let text = String::from_utf8_lossy(body);
            let mut quote: String = text.trim().chars().take(MAX_BODY_QUOTE).collect();
            if text.trim().chars().count() > MAX_BODY_QUOTE {
                quote.push('…');
            }
            return Failure {
                error: service_error(ServiceError {
                    status: Some(status.as_u16()),
                    message: format!(
                        "STS AssumeRole of {} failed: {} answered HTTP {status}: {quote}",
                        config.role_arn, config.sts_endpoint
                    ),
                    ..ServiceError::default()
                }),
                retryable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
            };
        };
        let code = parsed
            .error
            .code
            .unwrap_or_else(|| "unknown error".to_owned());
        let message = parsed.error.message.unwrap_or_default();
        let request_id = parsed
            .request_id
            .map(|id| format!(" (request id {id})"))
            .unwrap_or_default();
        let text = format!(
            "STS AssumeRole of {} was refused ({code}): {message}{request_id}",
            config.role_arn
        );
        let service = |message: String| ServiceError {
            status: Some(status.as_u16()),
            code: Some(code.clone()),
            unreachable: false,
            message,
        };
        let error = if code == "AccessDenied" {
            object_store::Error::PermissionDenied {
                path,
                source: Box::new(service(text)),
            }
        } else if REJECTED_CREDENTIAL_CODES.contains(&code.as_str()) {
            object_store::Error::Unauthenticated {
                path,
                source: Box::new(service(format!(
                    "{text} (the server's own AWS credentials were not accepted)"
                ))),
            }
        } else {
            service_error(service(format!("{text} (HTTP {status})")))
        };
        let retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || matches!(code.as_str(), "Throttling" | "ThrottlingException");
        Failure { error, retryable }
    }
}

#[async_trait]
impl CredentialProvider for AssumeRole {
    type Credential = AwsCredential;

    /// The cached temporary credential, or a fresh one from STS when none is cached or
    /// it expires within `refresh_before`. Concurrent callers wait for one shared call.
    ///
    /// If a refresh fails while the cached credential is still valid for at least 30 s,
    /// the cached one is returned (and the failure logged), and STS is asked again no
    /// sooner than 10 s later.
    ///
    /// # Errors
    ///
    /// `PermissionDenied` when STS answers `AccessDenied` (e.g. a wrong external id or a
    /// trust policy that does not name the server's identity), `Unauthenticated` when
    /// the base credentials are rejected (`InvalidClientTokenId`,
    /// `SignatureDoesNotMatch`, ...), `Generic` (store `S3`) otherwise, including network
    /// failures, which name the endpoint. Messages never contain secrets.
    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let what = format!("STS AssumeRole of {}", self.config.role_arn);
        self.cache
            .get(self.config.refresh_before, &what, || self.fetch())
            .await
    }
}

/// An error and whether trying again may help.
struct Failure {
    error: object_store::Error,
    retryable: bool,
}

impl Classify for Failure {
    fn retry(&self) -> Retry {
        if self.retryable {
            Retry::Temporary
        } else {
            Retry::Permanent
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Failure {
    fn fatal(error: object_store::Error) -> Self {
        Self {
            error,
            retryable: false,
        }
    }
}

/// `error: cause: cause ...` (reqwest puts the useful part, e.g. "Connection refused",
/// in the sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    storage_core::failure::chain_text(error, ": ")
}

/// A `Generic` error whose source says what STS answered, for
/// [`storage_core::failure::Failure`].
fn service_error(service: ServiceError) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(service),
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

/// `<AssumeRoleResponse><AssumeRoleResult><Credentials>…`
#[derive(Deserialize)]
struct AssumeRoleResponse {
    #[serde(rename = "AssumeRoleResult")]
    result: AssumeRoleResult,
}

#[derive(Deserialize)]
struct AssumeRoleResult {
    #[serde(rename = "Credentials")]
    credentials: StsCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// `<ErrorResponse><Error><Code>…</Code><Message>…</Message></Error><RequestId>…`
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorResponse {
    error: StsError,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

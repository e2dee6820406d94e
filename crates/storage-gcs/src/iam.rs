//! A client of Google's [IAM Service Account Credentials API] with a configurable
//! endpoint, and an object_store credential provider that impersonates a service account.
//!
//! object_store 0.14 calls `https://iamcredentials.googleapis.com/...:signBlob` itself
//! (hard-coded) to sign URLs without a private key, and cannot impersonate a service
//! account. This module does both through object_store's own HTTP client (so
//! [`ClientOptions`] such as `allow_http`, timeouts, proxies and the DNS resolver apply):
//!
//! * [`IamCredentials::generate_access_token`]:
//!   `POST {endpoint}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`, a
//!   short-lived OAuth token of another service account;
//! * [`IamCredentials::sign_blob`]:
//!   `POST {endpoint}/v1/projects/-/serviceAccounts/{email}:signBlob`, an RSA-SHA256
//!   signature made with a Google-managed key of that service account (used for V4
//!   signed URLs, see [`crate::signer`]);
//! * [`ImpersonatedCredentials`]: a [`CredentialProvider`] for
//!   `GoogleCloudStorageBuilder::with_credentials` that caches the impersonated token and
//!   refreshes it shortly before it expires.
//!
//! Both calls authenticate with the *base* identity given to [`IamCredentials::new`]
//! (for `gcs_sa`, the server's own Application Default Credentials); that identity needs
//! `roles/iam.serviceAccountTokenCreator` on the target service account.
//!
//! Tokens never appear in `Debug` output, logs or error messages.
//!
//! [IAM Service Account Credentials API]: https://cloud.google.com/iam/docs/reference/credentials/rest

use std::fmt;
use std::sync::Arc;

use std::time::{Duration, Instant};
use storage_core::credentials::{CredentialCache, Expiring};
use storage_core::retry::{Classify, RetryPolicy};

use async_trait::async_trait;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use object_store::client::{
    HttpClient, HttpConnector, HttpErrorKind, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use object_store::gcp::{GcpCredential, GcpCredentialProvider};
use object_store::{ClientOptions, CredentialProvider};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use url::Url;

/// Google's public IAM Service Account Credentials endpoint.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// The OAuth scope giving access to every Google Cloud API the identity may use
/// (the default scope of [`ImpersonatedCredentials`]).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The role that grants `iam.serviceAccounts.getAccessToken` and `signBlob`.
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";

/// Default lifetime requested for impersonated tokens (Google's default maximum).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Default margin before expiry at which a cached token is refreshed.
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Most characters of a non-JSON error body quoted in an error message.
const MAX_BODY_QUOTE: usize = 200;
/// The store name used in [`object_store::Error::Generic`].
const STORE: &str = "GCS";

/// Characters escaped in the service-account segment of the request path (everything
/// but RFC 3986 unreserved characters and `@`).
const EMAIL_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// The two IAM Credentials methods this module calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamOperation {
    /// `generateAccessToken` (needs `iam.serviceAccounts.getAccessToken`).
    GenerateAccessToken,
    /// `signBlob` (needs `iam.serviceAccounts.signBlob`).
    SignBlob,
}

impl IamOperation {
    /// The API method name, e.g. `generateAccessToken`.
    pub fn method(self) -> &'static str {
        match self {
            Self::GenerateAccessToken => "generateAccessToken",
            Self::SignBlob => "signBlob",
        }
    }

    /// The IAM permission the caller needs on the service account.
    pub fn permission(self) -> &'static str {
        match self {
            Self::GenerateAccessToken => "iam.serviceAccounts.getAccessToken",
            Self::SignBlob => "iam.serviceAccounts.signBlob",
        }
    }
}

impl fmt::Display for IamOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())
    }
}

/// Why an IAM Credentials call (or a URL signature built on one) failed.
///
/// Every message names the problem and, where Google sent one, quotes Google's own
/// error `message`. No message contains a token.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IamError {
    /// HTTP 403: the caller lacks the permission on the service account (or, as Google
    /// says, the account may not exist).
    #[error(
        "the server's identity lacks {} on {email} (grant it {TOKEN_CREATOR_ROLE} on that service account){}",
        operation.permission(),
        google_said(message)
    )]
    PermissionDenied {
        /// The service account the call was about.
        email: String,
        /// The call that was refused.
        operation: IamOperation,
        /// Google's error message (may be empty).
        message: String,
    },

    /// HTTP 403 because the IAM Service Account Credentials API is disabled in the
    /// project of the caller's identity.
    #[error(
        "the IAM Service Account Credentials API (iamcredentials.googleapis.com) is not enabled in the project of the server's identity; enable it and retry{}",
        google_said(message)
    )]
    ApiDisabled {
        /// The service account the call was about.
        email: String,
        /// Google's error message.
        message: String,
    },

    /// HTTP 404: no such service account.
    #[error(
        "service account {email} not found (it should look like name@project.iam.gserviceaccount.com){}",
        google_said(message)
    )]
    NotFound {
        /// The service account the call was about.
        email: String,
        /// Google's error message (may be empty).
        message: String,
    },

    /// HTTP 401: the base identity's token was rejected.
    #[error(
        "the IAM Credentials API at {endpoint} rejected the server's own Google credentials (the base identity's token is invalid or expired){}",
        google_said(message)
    )]
    Unauthenticated {
        /// The API endpoint.
        endpoint: String,
        /// Google's error message (may be empty).
        message: String,
    },

    /// The base identity's own token could not be obtained.
    #[error(
        "cannot get the server's own Google credentials to call the IAM Credentials API: {message}"
    )]
    BaseCredentials {
        /// What object_store reported.
        message: String,
    },

    /// The endpoint could not be reached (DNS, connection, TLS, timeout).
    #[error(
        "cannot reach the IAM Credentials API at {endpoint} ({operation} for {email}): {message}"
    )]
    Network {
        /// The API endpoint.
        endpoint: String,
        /// The call that failed.
        operation: IamOperation,
        /// The service account the call was about.
        email: String,
        /// The transport error.
        message: String,
        /// Whether it may pass (connect failures, timeouts, dropped connections); not for
        /// e.g. a plain-HTTP endpoint without `allow_http`.
        transient: bool,
    },

    /// Any other non-2xx answer (400, 429, 5xx, ...).
    #[error(
        "the IAM Credentials API at {endpoint} answered HTTP {status} to {operation} for {email}{}",
        google_said(message)
    )]
    Rejected {
        /// The API endpoint.
        endpoint: String,
        /// The call that failed.
        operation: IamOperation,
        /// The service account the call was about.
        email: String,
        /// The HTTP status code.
        status: u16,
        /// Google's error message, or the start of the body.
        message: String,
    },

    /// A 2xx answer that is not what the API returns.
    #[error("unexpected answer from the IAM Credentials API at {endpoint} to {operation} for {email}: {message}")]
    InvalidResponse {
        /// The API endpoint.
        endpoint: String,
        /// The call that failed.
        operation: IamOperation,
        /// The service account the call was about.
        email: String,
        /// What is wrong with it.
        message: String,
    },

    /// The request cannot be made as asked (bad endpoint, expiry too long, ...).
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },

    /// A [`crate::signer::BlobSigner`] other than IAM failed.
    #[error("signing failed: {message}")]
    Signer {
        /// What the signer reported.
        message: String,
    },
}

/// `; Google said: <message>` or nothing.
fn google_said(message: &str) -> String {
    if message.trim().is_empty() {
        String::new()
    } else {
        format!("; Google said: {}", message.trim())
    }
}

impl IamError {
    /// Whether trying again later may succeed (network failures, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { transient, .. } => *transient,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The object_store error kind for this failure, used by [`ImpersonatedCredentials`]
    /// as a [`CredentialProvider`]: `PermissionDenied` for 403s, `Unauthenticated` for a
    /// rejected base identity, `Generic` (store `GCS`) otherwise — including a missing
    /// service account, which must not look like a missing object.
    pub fn into_object_store(self, path: &str) -> object_store::Error {
        let path = path.to_owned();
        match self {
            Self::PermissionDenied { .. } | Self::ApiDisabled { .. } => {
                object_store::Error::PermissionDenied {
                    path,
                    source: Box::new(self),
                }
            }
            Self::Unauthenticated { .. } => object_store::Error::Unauthenticated {
                path,
                source: Box::new(self),
            },
            other => object_store::Error::Generic {
                store: STORE,
                source: Box::new(other),
            },
        }
    }
}

impl Classify for IamError {
    fn retry(&self) -> storage_core::Retry {
        if self.is_retryable() {
            storage_core::Retry::Temporary
        } else {
            storage_core::Retry::Permanent
        }
    }
}

impl From<IamError> for storage_core::Error {
    /// `PermissionDenied` for 403s, `CredentialsRejected` for a rejected base identity,
    /// `InvalidConfig` (general) for a missing service account and invalid requests,
    /// `Backend` otherwise (retryable for network failures, 429 and 5xx).
    fn from(err: IamError) -> Self {
        match err {
            IamError::PermissionDenied { .. } | IamError::ApiDisabled { .. } => {
                Self::PermissionDenied {
                    reason: err.to_string(),
                }
            }
            // The server's own identity was rejected or is missing: no
            // setting of the storage holds it.
            IamError::Unauthenticated { .. } | IamError::BaseCredentials { .. } => {
                Self::CredentialsRejected {
                    fields: Vec::new(),
                    code: None,
                    message: err.to_string(),
                }
            }
            IamError::NotFound { .. } | IamError::InvalidRequest { .. } => {
                Self::invalid_general(err.to_string())
            }
            other => Self::Backend {
                context: "IAM Credentials API".to_owned(),
                retry: other.retry(),
                source: Box::new(other),
            },
        }
    }
}

/// A short-lived OAuth access token returned by `generateAccessToken`.
///
/// `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token (`ya29....`). Secret.
    pub token: String,
    /// When Google says it expires.
    pub expire_time: DateTime<Utc>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"******")
            .field("expire_time", &self.expire_time)
            .finish()
    }
}

/// A client of the IAM Service Account Credentials API that authenticates with a base
/// identity (an object_store GCP credential provider).
///
/// `Debug` shows the endpoint only.
pub struct IamCredentials {
    endpoint: Url,
    base: GcpCredentialProvider,
    /// The HTTP client, or why it could not be built (reported by every call).
    client: Result<HttpClient, String>,
    retry: RetryPolicy,
}

impl fmt::Debug for IamCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamCredentials")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl IamCredentials {
    /// A client of the API at `endpoint` (normally [`Self::default_endpoint`]; a path in
    /// it is kept as a prefix), authenticating with the tokens of `base` (the caller's
    /// own identity, e.g. `GoogleCloudStorage::credentials().clone()`), sending requests
    /// with an HTTP client built from `options` (put `with_allow_http(true)` there for a
    /// plain-HTTP endpoint, and the server's DNS resolver).
    ///
    /// Makes no network call. If the HTTP client cannot be built from `options`, every
    /// call fails with that reason.
    pub fn new(endpoint: Url, base: GcpCredentialProvider, options: ClientOptions) -> Self {
        let client = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| error_chain(&e));
        Self {
            endpoint,
            base,
            client,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets how calls that fail in a way that may pass are retried (default
    /// [`RetryPolicy::default`]).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Like [`Self::new`] with a ready [`HttpClient`].
    pub fn with_http_client(
        endpoint: Url,
        base: GcpCredentialProvider,
        client: HttpClient,
    ) -> Self {
        Self {
            endpoint,
            base,
            client: Ok(client),
            retry: RetryPolicy::default(),
        }
    }

    /// `https://iamcredentials.googleapis.com`.
    pub fn default_endpoint() -> Url {
        Url::parse(DEFAULT_IAM_ENDPOINT).expect("static URL is valid")
    }

    /// The API endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// A short-lived access token of `target_email` for `scopes`, valid for `lifetime`
    /// (whole seconds, at least 1; Google allows up to 1 h unless the organisation
    /// extends it to 12 h).
    ///
    /// # Errors
    ///
    /// [`IamError::PermissionDenied`] (403: the base identity lacks
    /// `iam.serviceAccounts.getAccessToken`), [`IamError::NotFound`] (404),
    /// [`IamError::Unauthenticated`] (401), [`IamError::Network`], ... — see [`IamError`].
    /// Transient failures (network, 429, 5xx) are retried twice first.
    pub async fn generate_access_token(
        &self,
        target_email: &str,
        scopes: &[&str],
        lifetime: Duration,
    ) -> Result<AccessToken, IamError> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            scope: &'a [&'a str],
            lifetime: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            access_token: String,
            expire_time: String,
        }

        let operation = IamOperation::GenerateAccessToken;
        let body = Body {
            scope: scopes,
            lifetime: format!("{}s", lifetime.as_secs().max(1)),
        };
        let body = serde_json::to_vec(&body).map_err(|e| IamError::InvalidRequest {
            message: format!("cannot encode the {operation} request: {e}"),
        })?;
        let answer = self
            .call(operation, target_email, Bytes::from(body))
            .await?;
        // Never quote a successful body: it holds the token.
        // serde's message may quote values (the token): report the position only.
        let answer: Answer = serde_json::from_slice(&answer).map_err(|e| {
            self.invalid_response(
                operation,
                target_email,
                format!(
                    "no accessToken and expireTime strings in the JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let expire_time = DateTime::parse_from_rfc3339(answer.expire_time.trim())
            .map_err(|e| {
                self.invalid_response(
                    operation,
                    target_email,
                    format!(
                        "expireTime {:?} is not an RFC 3339 time: {e}",
                        answer.expire_time
                    ),
                )
            })?
            .with_timezone(&Utc);
        if answer.access_token.is_empty() {
            return Err(self.invalid_response(
                operation,
                target_email,
                "empty accessToken".to_owned(),
            ));
        }
        tracing::debug!(
            endpoint = %self.endpoint,
            target = target_email,
            %expire_time,
            "IAM generateAccessToken succeeded"
        );
        Ok(AccessToken {
            token: answer.access_token,
            expire_time,
        })
    }

    /// The RSA-SHA256 signature of `payload` made with a Google-managed key of
    /// `signer_email` (raw bytes, decoded from Google's base64).
    ///
    /// # Errors
    ///
    /// [`IamError::PermissionDenied`] (403: the base identity lacks
    /// `iam.serviceAccounts.signBlob`), [`IamError::NotFound`] (404), ... — see
    /// [`IamError`]. Transient failures are retried twice first.
    pub async fn sign_blob(&self, signer_email: &str, payload: &[u8]) -> Result<Vec<u8>, IamError> {
        #[derive(serde::Serialize)]
        struct Body {
            payload: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            #[serde(default)]
            key_id: Option<String>,
            signed_blob: String,
        }

        let operation = IamOperation::SignBlob;
        let body = serde_json::to_vec(&Body {
            payload: BASE64_STANDARD.encode(payload),
        })
        .map_err(|e| IamError::InvalidRequest {
            message: format!("cannot encode the {operation} request: {e}"),
        })?;
        let answer = self
            .call(operation, signer_email, Bytes::from(body))
            .await?;
        let answer: Answer = serde_json::from_slice(&answer).map_err(|e| {
            self.invalid_response(
                operation,
                signer_email,
                format!("not a signBlob answer: {e}"),
            )
        })?;
        let signature = BASE64_STANDARD
            .decode(answer.signed_blob.trim())
            .map_err(|e| {
                self.invalid_response(
                    operation,
                    signer_email,
                    format!("signedBlob is not base64: {e}"),
                )
            })?;
        if signature.is_empty() {
            return Err(self.invalid_response(
                operation,
                signer_email,
                "empty signedBlob".to_owned(),
            ));
        }
        tracing::debug!(
            endpoint = %self.endpoint,
            signer = signer_email,
            key_id = answer.key_id.as_deref().unwrap_or(""),
            "IAM signBlob succeeded"
        );
        Ok(signature)
    }

    fn invalid_response(&self, operation: IamOperation, email: &str, message: String) -> IamError {
        IamError::InvalidResponse {
            endpoint: self.endpoint_text(),
            operation,
            email: email.to_owned(),
            message,
        }
    }

    /// The endpoint as shown in messages (no trailing slash).
    fn endpoint_text(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }

    /// `{endpoint}/v1/projects/-/serviceAccounts/{email}:{method}`.
    fn method_url(&self, operation: IamOperation, email: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{}:{}",
            self.endpoint_text(),
            utf8_percent_encode(email, EMAIL_ENCODE_SET),
            operation.method()
        )
    }

    /// One API call, retried under core's [`RetryPolicy`] while it fails in a
    /// way that may pass; returns the body of the 2xx answer.
    async fn call(
        &self,
        operation: IamOperation,
        email: &str,
        body: Bytes,
    ) -> Result<Bytes, IamError> {
        self.retry
            .run(|| self.call_once(operation, email, body.clone()))
            .await
    }

    async fn call_once(
        &self,
        operation: IamOperation,
        email: &str,
        body: Bytes,
    ) -> Result<Bytes, IamError> {
        let endpoint = self.endpoint_text();
        let client = self.client.as_ref().map_err(|e| IamError::InvalidRequest {
            message: format!(
                "cannot build an HTTP client for the IAM Credentials API at {endpoint}: {e}"
            ),
        })?;
        if !matches!(self.endpoint.scheme(), "http" | "https") || !self.endpoint.has_host() {
            return Err(IamError::InvalidRequest {
                message: format!(
                    "the IAM Credentials endpoint {endpoint} is not an http(s) URL with a host"
                ),
            });
        }
        let base = self
            .base
            .get_credential()
            .await
            .map_err(|e| IamError::BaseCredentials {
                message: error_chain(&e),
            })?;
        let mut builder = http::Request::builder()
            .method(Method::POST)
            .uri(self.method_url(operation, email))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        if !base.bearer.is_empty() {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", base.bearer)).map_err(|_| {
                    IamError::BaseCredentials {
                        message: "the token contains characters not allowed in an HTTP header"
                            .to_owned(),
                    }
                })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        drop(base);
        let request: HttpRequest =
            builder
                .body(HttpRequestBody::from(body))
                .map_err(|e| IamError::InvalidRequest {
                    message: format!(
                        "cannot build the {operation} request for {email} at {endpoint}: {e}"
                    ),
                })?;

        let network = |message: String, transient: bool| IamError::Network {
            endpoint: endpoint.clone(),
            operation,
            email: email.to_owned(),
            message,
            transient,
        };
        let response = client.execute(request).await.map_err(|e| {
            let transient = matches!(
                e.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
            network(error_chain(&e), transient)
        })?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| {
            network(
                format!("reading the answer failed: {}", error_chain(&e)),
                true,
            )
        })?;
        if status.is_success() {
            return Ok(body);
        }
        Err(error_response(&endpoint, operation, email, status, &body))
    }
}

/// Maps a non-2xx answer to an [`IamError`].
fn error_response(
    endpoint: &str,
    operation: IamOperation,
    email: &str,
    status: StatusCode,
    body: &[u8],
) -> IamError {
    #[derive(Deserialize)]
    struct Envelope {
        error: GoogleError,
    }
    #[derive(Deserialize)]
    struct GoogleError {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        details: Vec<serde_json::Value>,
    }

    let parsed = serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error);
    let message = match &parsed {
        Some(error) => error.message.clone().unwrap_or_default(),
        None => {
            let text = String::from_utf8_lossy(body);
            let mut quote: String = text.trim().chars().take(MAX_BODY_QUOTE).collect();
            if text.trim().chars().count() > MAX_BODY_QUOTE {
                quote.push('…');
            }
            quote
        }
    };
    let email = email.to_owned();
    match status {
        StatusCode::FORBIDDEN => {
            let service_disabled = parsed.as_ref().is_some_and(|e| {
                e.details
                    .iter()
                    .any(|d| d.get("reason").and_then(|r| r.as_str()) == Some("SERVICE_DISABLED"))
            }) || message.contains("has not been used in project")
                || message.contains("API has not been used")
                || message.contains("it is disabled");
            if service_disabled {
                IamError::ApiDisabled { email, message }
            } else {
                IamError::PermissionDenied {
                    email,
                    operation,
                    message,
                }
            }
        }
        StatusCode::NOT_FOUND => IamError::NotFound { email, message },
        StatusCode::UNAUTHORIZED => IamError::Unauthenticated {
            endpoint: endpoint.to_owned(),
            message,
        },
        _ => {
            let message = match parsed.as_ref().and_then(|e| e.status.as_deref()) {
                Some(code) if !message.is_empty() => format!("{code}: {message}"),
                Some(code) => code.to_owned(),
                None => message,
            };
            IamError::Rejected {
                endpoint: endpoint.to_owned(),
                operation,
                email,
                status: status.as_u16(),
                message,
            }
        }
    }
}

/// An object_store [`CredentialProvider`] giving short-lived tokens of a target service
/// account, obtained with `generateAccessToken` through [`IamCredentials`] (the base
/// identity impersonates the target).
///
/// The token is cached until [`Self::with_refresh_before`] (default 5 min) before it
/// expires; concurrent callers wait for one shared refresh. Use it as
/// `GoogleCloudStorageBuilder::new().with_credentials(Arc::new(provider))`.
///
/// `Debug` shows the target, scopes and endpoint, never the token.
pub struct ImpersonatedCredentials {
    iam: Arc<IamCredentials>,
    target_email: String,
    scopes: Vec<String>,
    lifetime: Duration,
    refresh_before: Duration,
    cache: CredentialCache<GcpCredential>,
}

impl fmt::Debug for ImpersonatedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpersonatedCredentials")
            .field("target_email", &self.target_email)
            .field("scopes", &self.scopes)
            .field("lifetime", &self.lifetime)
            .field("refresh_before", &self.refresh_before)
            .field("endpoint", &self.iam.endpoint().as_str())
            .finish_non_exhaustive()
    }
}

impl ImpersonatedCredentials {
    /// Tokens of `target_email` through `iam`, with scope [`CLOUD_PLATFORM_SCOPE`], a
    /// 1 h lifetime and a refresh 5 min before expiry. Makes no network call (see
    /// [`Self::token_now`]).
    pub fn new(iam: Arc<IamCredentials>, target_email: impl Into<String>) -> Self {
        Self {
            iam,
            target_email: target_email.into(),
            scopes: vec![CLOUD_PLATFORM_SCOPE.to_owned()],
            lifetime: DEFAULT_LIFETIME,
            refresh_before: DEFAULT_REFRESH_BEFORE,
            cache: CredentialCache::default(),
        }
    }

    /// Sets the OAuth scopes requested (e.g.
    /// `https://www.googleapis.com/auth/devstorage.read_write`).
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the token lifetime requested (default 1 h; whole seconds).
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets how long before expiry the cached token is refreshed (default 5 min).
    pub fn with_refresh_before(mut self, refresh_before: Duration) -> Self {
        self.refresh_before = refresh_before;
        self
    }

    /// The impersonated service account.
    pub fn target_email(&self) -> &str {
        &self.target_email
    }

    /// The IAM client used.
    pub fn iam(&self) -> &Arc<IamCredentials> {
        &self.iam
    }

    /// Asks for a new token now, whatever is cached, and caches it on success. Meant for
    /// validating a storage's settings: the typed error says what is wrong.
    ///
    /// # Errors
    ///
    /// As [`IamCredentials::generate_access_token`].
    pub async fn token_now(&self) -> Result<Arc<GcpCredential>, IamError> {
        self.cache.refresh_now(|| self.fetch()).await
    }

    /// The cached token, or a fresh one when none is cached or it expires within the
    /// refresh margin. Concurrent callers wait for one shared call.
    ///
    /// If a refresh fails while the cached token is still valid for at least 30 s, the
    /// cached one is returned (and the failure logged), and the API is asked again no
    /// sooner than 10 s later.
    ///
    /// # Errors
    ///
    /// As [`IamCredentials::generate_access_token`].
    pub async fn token(&self) -> Result<Arc<GcpCredential>, IamError> {
        let what = format!("impersonation of {}", self.target_email);
        self.cache
            .get(self.refresh_before, &what, || self.fetch())
            .await
    }

    async fn fetch(&self) -> Result<Expiring<GcpCredential>, IamError> {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let started = Instant::now();
        let sent_at = Utc::now();
        let token = self
            .iam
            .generate_access_token(&self.target_email, &scopes, self.lifetime)
            .await?;
        // Monotonic deadline: what Google says is left (by our wall clock), but never
        // more than the requested lifetime (guards against a local clock running behind).
        let left = (token.expire_time - sent_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let requested = Duration::from_secs(self.lifetime.as_secs().max(1));
        Ok(Expiring {
            value: Arc::new(GcpCredential {
                bearer: token.token,
            }),
            expires_at: started + left.min(requested),
        })
    }
}

#[async_trait]
impl CredentialProvider for ImpersonatedCredentials {
    type Credential = GcpCredential;

    /// [`ImpersonatedCredentials::token`], with the error mapped by
    /// [`IamError::into_object_store`].
    async fn get_credential(&self) -> object_store::Result<Arc<GcpCredential>> {
        self.token()
            .await
            .map_err(|e| e.into_object_store(&self.target_email))
    }
}

/// Whether `email` has the form of a Google service account:
///
/// * `<name>@<project>.iam.gserviceaccount.com` (user-managed; `name` is 6–30 characters
///   of `[a-z0-9-]`, starting with a letter and not ending with `-`; `project` is a
///   project id, optionally followed by the domain of a domain-scoped project, e.g.
///   `name@my-project.example.com.iam.gserviceaccount.com`);
/// * `<project>@appspot.gserviceaccount.com` (App Engine default);
/// * `<number>-compute@developer.gserviceaccount.com` (Compute Engine default).
///
/// A project id is 6–30 characters of `[a-z0-9-]`, starting with a letter and not ending
/// with `-`. Upper case and surrounding spaces are rejected (trim first if needed).
///
/// ```
/// use storage_gcs::iam::valid_service_account_email;
/// assert!(valid_service_account_email("label-studio@my-project.iam.gserviceaccount.com"));
/// assert!(!valid_service_account_email("someone@gmail.com"));
/// ```
pub fn valid_service_account_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if let Some(project) = domain.strip_suffix(".iam.gserviceaccount.com") {
        return valid_account_name(local) && valid_project(project);
    }
    match domain {
        "appspot.gserviceaccount.com" => valid_project_id(local),
        "developer.gserviceaccount.com" => local.strip_suffix("-compute").is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 20
                && n.bytes().all(|b| b.is_ascii_digit())
                && !n.starts_with('0')
        }),
        _ => false,
    }
}

/// `[a-z][a-z0-9-]*[a-z0-9]`, 6–30 characters.
fn valid_account_name(name: &str) -> bool {
    (6..=30).contains(&name.len()) && lower_dashed(name)
}

/// A project id, or `<project id>.<domain>` for domain-scoped projects.
fn valid_project(project: &str) -> bool {
    match project.split_once('.') {
        None => valid_project_id(project),
        Some((id, domain)) => valid_project_id(id) && valid_domain(domain),
    }
}

/// `[a-z][a-z0-9-]*[a-z0-9]`, 6–30 characters.
fn valid_project_id(id: &str) -> bool {
    (6..=30).contains(&id.len()) && lower_dashed(id)
}

/// Dot-separated DNS labels of `[a-z0-9-]`, not starting or ending with `-`.
fn valid_domain(domain: &str) -> bool {
    domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Starts with `a-z`, only `a-z0-9-`, does not end with `-`.
fn lower_dashed(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// `error: cause: cause ...` (reqwest puts the useful part, e.g. "Connection refused",
/// in the sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    storage_core::failure::chain_text(error, ": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_user_managed_and_default_service_accounts() {
        for email in [
            "label-studio@my-project.iam.gserviceaccount.com",
            "abcdef@abcdef.iam.gserviceaccount.com",
            "a23456789012345678901234567890@p23456789012345678901234567890.iam.gserviceaccount.com",
            "service-123@gcp-sa-storage.iam.gserviceaccount.com",
            "reader@my-project.example.com.iam.gserviceaccount.com",
            "my-project@appspot.gserviceaccount.com",
            "123456789012-compute@developer.gserviceaccount.com",
        ] {
            assert!(valid_service_account_email(email), "{email}");
        }
    }

    #[test]
    fn rejects_other_forms() {
        for email in [
            "",
            "label-studio",
            "someone@gmail.com",
            "short@my-project.iam.gserviceaccount.com",
            "a234567890123456789012345678901@my-project.iam.gserviceaccount.com",
            "1abcdef@my-project.iam.gserviceaccount.com",
            "abcdef-@my-project.iam.gserviceaccount.com",
            "Label-Studio@my-project.iam.gserviceaccount.com",
            "label_studio@my-project.iam.gserviceaccount.com",
            "label-studio@proj.iam.gserviceaccount.com",
            "label-studio@1project.iam.gserviceaccount.com",
            "label-studio@my-project-.iam.gserviceaccount.com",
            "label-studio@.iam.gserviceaccount.com",
            "label-studio@my-project.iam.gserviceaccount.com ",
            " label-studio@my-project.iam.gserviceaccount.com",
            "label-studio@my-project.iam.gserviceaccount.com.evil.com",
            "a@b@my-project.iam.gserviceaccount.com",
            "label-studio@my-project.gserviceaccount.com",
            "label-studio@my-project.example.iam.gserviceaccount.com",
            "x@appspot.gserviceaccount.com",
            "-compute@developer.gserviceaccount.com",
            "12ab-compute@developer.gserviceaccount.com",
            "0123-compute@developer.gserviceaccount.com",
            "123456789012@developer.gserviceaccount.com",
        ] {
            assert!(!valid_service_account_email(email), "{email:?}");
        }
    }

    #[test]
    fn google_errors_map_to_messages_that_name_the_problem() {
        let body = br#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).","status":"PERMISSION_DENIED"}}"#;
        let err = error_response(
            "https://iam.example",
            IamOperation::GenerateAccessToken,
            "t@p.iam.gserviceaccount.com",
            StatusCode::FORBIDDEN,
            body,
        );
        assert_eq!(
            err.to_string(),
            "the server's identity lacks iam.serviceAccounts.getAccessToken on t@p.iam.gserviceaccount.com \
             (grant it roles/iam.serviceAccountTokenCreator on that service account); Google said: \
             Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
        );

        let disabled = br#"{"error":{"code":403,"message":"IAM Service Account Credentials API has not been used in project 1 before or it is disabled.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED"}]}}"#;
        let err = error_response(
            "e",
            IamOperation::SignBlob,
            "t",
            StatusCode::FORBIDDEN,
            disabled,
        );
        assert!(matches!(err, IamError::ApiDisabled { .. }), "{err:?}");

        let err = error_response(
            "e",
            IamOperation::SignBlob,
            "t",
            StatusCode::BAD_GATEWAY,
            b"<html>bad gateway</html>",
        );
        assert_eq!(
            err.to_string(),
            "the IAM Credentials API at e answered HTTP 502 to signBlob for t; Google said: <html>bad gateway</html>"
        );
        assert!(err.is_retryable());

        let err = error_response(
            "e",
            IamOperation::GenerateAccessToken,
            "t",
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"Lifetime too long","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(
            err.to_string(),
            "the IAM Credentials API at e answered HTTP 400 to generateAccessToken for t; Google said: INVALID_ARGUMENT: Lifetime too long"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn errors_map_to_object_store_and_storage_core_kinds() {
        let denied = IamError::PermissionDenied {
            email: "t".into(),
            operation: IamOperation::SignBlob,
            message: String::new(),
        };
        assert!(matches!(
            denied.clone().into_object_store("t"),
            object_store::Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            storage_core::Error::from(denied),
            storage_core::Error::PermissionDenied { .. }
        ));
        let missing = IamError::NotFound {
            email: "t".into(),
            message: String::new(),
        };
        assert!(matches!(
            missing.clone().into_object_store("t"),
            object_store::Error::Generic { .. }
        ));
        assert!(matches!(
            storage_core::Error::from(missing),
            storage_core::Error::InvalidConfig(_)
        ));
        let network = IamError::Network {
            endpoint: "e".into(),
            operation: IamOperation::SignBlob,
            email: "t".into(),
            message: "refused".into(),
            transient: true,
        };
        assert_eq!(
            storage_core::Error::from(network).retry(),
            storage_core::Retry::Temporary
        );
    }

    #[test]
    fn access_token_debug_hides_the_token() {
        let token = AccessToken {
            token: "ya29.secret".into(),
            expire_time: Utc::now(),
        };
        assert!(!format!("{token:?}").contains("secret"));
    }
}

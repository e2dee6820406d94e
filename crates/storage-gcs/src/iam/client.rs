//! The IAM Credentials API client: `generateAccessToken` and `signBlob` through
//! object_store's HTTP client.

use std::fmt;
use std::time::Duration;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::Method;
use object_store::client::{
    HttpClient, HttpConnector, HttpErrorKind, HttpRequest, HttpRequestBody,
};
use object_store::gcp::GcpCredentialProvider;
use object_store::ClientOptions;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use storage_core::retry::RetryPolicy;
use url::Url;

use super::error::{error_chain, error_response};
use super::{IamError, IamOperation, DEFAULT_IAM_ENDPOINT};

/// Characters escaped in the service-account segment of the request path (everything
/// but RFC 3986 unreserved characters and `@`).
const EMAIL_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

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
        // The IAM endpoint is the operator's; but a redirect from it is not
        // followed, and the environment's proxy is not used.
        let client = storage_core::endpoint::PolicyConnector::new(
            storage_core::EndpointPolicy::allow_private(),
        )
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

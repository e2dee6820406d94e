//! Workload Identity Federation: a subject token from outside Google (a file
//! the platform keeps fresh, as Kubernetes and most CI systems provide)
//! exchanged at Google's Security Token Service for a federated access token.
//!
//! `POST {endpoint}/v1/token` with the token-exchange grant
//! (`grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, the pool
//! provider's `audience`, `scope`, `requested_token_type`, `subject_token`,
//! `subject_token_type`), no `Authorization` header; the answer is
//! `{"access_token", "issued_token_type", "token_type": "Bearer", "expires_in"}`.
//! The federated token then impersonates a service account through
//! [`IamCredentials`](crate::iam::IamCredentials) (`gcswif`).
//!
//! Tokens never appear in `Debug` output, logs or error messages; nor does the
//! subject token.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Method;
use object_store::client::{HttpClient, HttpConnector, HttpRequest, HttpRequestBody};
use object_store::gcp::GcpCredential;
use object_store::{ClientOptions, CredentialProvider};
use serde::Deserialize;
use storage_core::credentials::{CredentialCache, Expiring};
use url::Url;

use crate::iam::CLOUD_PLATFORM_SCOPE;

/// Google's public Security Token Service.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.googleapis.com";
/// The subject token type of an OIDC ID token (what Kubernetes, GitHub Actions
/// and most identity providers hand out).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// A cached federated token is replaced this long before it expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// The audience of a workload identity pool provider:
/// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q`.
///
/// ```
/// assert_eq!(
///     storage_gcs::sts::provider_audience("123", "pool", "prov"),
///     "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/prov"
/// );
/// ```
pub fn provider_audience(project_number: &str, pool: &str, provider: &str) -> String {
    format!(
        "//iam.googleapis.com/projects/{project_number}/locations/global/workloadIdentityPools/{pool}/providers/{provider}"
    )
}

/// Where the subject token comes from, and its type: configured by the
/// operator, never by a storage (a user must not make the server read its
/// files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectToken {
    /// The file holding the token, read at every exchange (platforms rotate it).
    pub file: PathBuf,
    /// Its type, e.g. [`JWT_TOKEN_TYPE`].
    pub token_type: String,
}

/// An object_store [`CredentialProvider`] giving federated access tokens for
/// one audience: the subject token exchanged at Google's STS, cached until 5
/// minutes before it expires (concurrent callers share one exchange).
pub struct StsTokenExchange {
    endpoint: Url,
    audience: String,
    subject: SubjectToken,
    client: Result<HttpClient, String>,
    cache: CredentialCache<GcpCredential>,
}

impl fmt::Debug for StsTokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsTokenExchange")
            .field("endpoint", &self.endpoint.as_str())
            .field("audience", &self.audience)
            .field("subject_token_file", &self.subject.file)
            .finish_non_exhaustive()
    }
}

impl StsTokenExchange {
    /// Exchanges `subject` for `audience` at `endpoint` (normally
    /// [`DEFAULT_STS_ENDPOINT`]) with an HTTP client built from `options`. The
    /// endpoint is the operator's: trusted, but no redirect is followed and
    /// the environment's proxy is not used. Makes no network call.
    pub fn new(
        endpoint: Url,
        audience: impl Into<String>,
        subject: SubjectToken,
        options: &ClientOptions,
    ) -> Self {
        let client = storage_core::endpoint::PolicyConnector::new(
            storage_core::EndpointPolicy::allow_private(),
        )
        .connect(options)
        .map_err(|e| e.to_string());
        Self {
            endpoint,
            audience: audience.into(),
            subject,
            client,
            cache: CredentialCache::default(),
        }
    }

    /// The audience tokens are asked for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// A federated token, cached or fresh.
    ///
    /// # Errors
    ///
    /// What to fix, in words: the subject token file cannot be read, STS
    /// refused the exchange (its `error_description`, which names no secret),
    /// or it could not be reached.
    pub async fn token(&self) -> Result<Arc<GcpCredential>, String> {
        let what = format!("the token exchange for {}", self.audience);
        self.cache
            .get(REFRESH_BEFORE, &what, || self.exchange())
            .await
    }

    async fn exchange(&self) -> Result<Expiring<GcpCredential>, String> {
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            expires_in: Option<u64>,
        }
        #[derive(Deserialize)]
        struct Refusal {
            error: Option<String>,
            error_description: Option<String>,
        }

        let client = self
            .client
            .as_ref()
            .map_err(|e| format!("cannot build an HTTP client for Google STS: {e}"))?;
        let subject = std::fs::read_to_string(&self.subject.file).map_err(|e| {
            format!(
                "cannot read the workload identity subject token file {} ({e}); the server's \
                 --gcs-wif-subject-token-file must name a readable file",
                self.subject.file.display()
            )
        })?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", TOKEN_EXCHANGE_GRANT)
            .append_pair("audience", &self.audience)
            .append_pair("scope", CLOUD_PLATFORM_SCOPE)
            .append_pair("requested_token_type", ACCESS_TOKEN_TYPE)
            .append_pair("subject_token", subject.trim())
            .append_pair("subject_token_type", &self.subject.token_type)
            .finish();
        let url = format!("{}/v1/token", self.endpoint.as_str().trim_end_matches('/'));
        let request: HttpRequest = http::Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(HttpRequestBody::from(Bytes::from(form)))
            .map_err(|e| format!("cannot build the token exchange request to {url}: {e}"))?;
        let started = Instant::now();
        let response = client
            .execute(request)
            .await
            .map_err(|e| format!("Google STS at {url} could not be reached: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| format!("reading Google STS's answer failed: {e}"))?;
        if !status.is_success() {
            // STS's refusals are OAuth errors: a code and a description
            // about the request (audience, token, pool), never a secret.
            let refusal: Option<Refusal> = serde_json::from_slice(&body).ok();
            let reason = refusal
                .and_then(|r| r.error_description.or(r.error))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(format!(
                "Google STS refused to exchange the workload identity token for {}: {}; check \
                 the pool and provider ids, the project number and the provider's attribute \
                 conditions",
                self.audience,
                storage_core::redact::without_quoted_values(&reason)
            ));
        }
        // Never quote a successful body: it holds the token.
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| "Google STS answered without an access_token".to_string())?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        tracing::debug!(audience = %self.audience, ?lifetime, "Google STS token exchange succeeded");
        Ok(Expiring {
            value: Arc::new(GcpCredential {
                bearer: answer.access_token,
            }),
            expires_at: started + lifetime,
        })
    }
}

#[async_trait]
impl CredentialProvider for StsTokenExchange {
    type Credential = GcpCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<GcpCredential>> {
        self.token()
            .await
            .map_err(|message| object_store::Error::Generic {
                store: "GCS",
                source: message.into(),
            })
    }
}

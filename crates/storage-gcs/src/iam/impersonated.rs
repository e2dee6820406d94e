//! A credential provider that impersonates a service account through
//! [`IamCredentials`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use object_store::gcp::GcpCredential;
use object_store::CredentialProvider;
use storage_core::credentials::{CredentialCache, Expiring};

use super::{IamCredentials, IamError, CLOUD_PLATFORM_SCOPE};

/// Default lifetime requested for impersonated tokens (Google's default maximum).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Default margin before expiry at which a cached token is refreshed.
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);

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

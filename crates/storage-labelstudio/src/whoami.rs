//! Callers authenticated by Label Studio itself: the caller's credentials
//! (a legacy `Token`, a `Bearer` access token, or the browser's session
//! cookie) are forwarded to its `/api/current-user/whoami`, and the answer
//! (the user and the active organisation) is kept briefly.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use storage_core::persist::{Authenticator, Caller, Credential};
use storage_core::{Error, Result, Retry};

/// How long an answer of Label Studio is reused: a revoked token keeps
/// working here this long at most.
const CACHE_FOR: Duration = Duration::from_secs(10);

/// Answers kept at most; expired ones are dropped when it is reached.
const CACHE_ENTRIES: usize = 10_000;

/// How long Label Studio may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Answers by SHA-256 of the token, with when they were given.
type Answers = HashMap<[u8; 32], (Option<Caller>, Instant)>;

/// An [`Authenticator`] that asks Label Studio who a token belongs to.
pub struct WhoAmI {
    url: reqwest::Url,
    client: reqwest::Client,
    /// By SHA-256 of the credential: credentials themselves are not kept.
    cache: Mutex<Answers>,
}

// Written by hand: the cache is keyed by hashes of secrets.
impl fmt::Debug for WhoAmI {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhoAmI")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl WhoAmI {
    /// Asks the Label Studio at `base` (`http://label-studio:8080`).
    pub fn new(base: &str) -> Result<Self> {
        let mut url = reqwest::Url::parse(base)
            .map_err(|err| Error::invalid("label_studio_url", err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(
                "label_studio_url",
                "expected an http(s) URL",
            ));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let url = url
            .join("api/current-user/whoami")
            .map_err(|err| Error::invalid("label_studio_url", err.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A redirect (to a login page) is not an answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| Error::backend("building the Label Studio client", err))?;
        Ok(Self {
            url,
            client,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Option<Caller>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < CACHE_FOR)
            .map(|(caller, _)| caller.clone())
    }

    fn keep(&self, key: [u8; 32], caller: Option<Caller>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
        }
        if cache.len() < CACHE_ENTRIES {
            cache.insert(key, (caller, Instant::now()));
        }
    }

    /// The caller Label Studio says `header: value` proves, from the
    /// cache when it answered less than [`CACHE_FOR`] ago.
    async fn who(&self, header: &'static str, value: String) -> Result<Option<Caller>> {
        let mut hasher = Sha256::new();
        hasher.update(header.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        if let Some(caller) = self.cached(&key) {
            return Ok(caller);
        }
        let caller = self.ask(header, value).await?;
        self.keep(key, caller.clone());
        Ok(caller)
    }

    async fn ask(&self, header: &'static str, value: String) -> Result<Option<Caller>> {
        let unreachable = |err: reqwest::Error| Error::Backend {
            context: format!("asking Label Studio at {} who the caller is", self.url),
            // Without the URL: reqwest's errors quote it, not the token.
            source: Box::new(err.without_url()),
            retry: Retry::Temporary,
        };
        let response = self
            .client
            .get(self.url.clone())
            .header(header, value)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) || status.is_redirection() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::Backend {
                context: format!("asking Label Studio at {} who the caller is", self.url),
                source: format!("it answered {status}").into(),
                retry: Retry::Temporary,
            });
        }
        let user: Value = response.json().await.map_err(unreachable)?;
        let (Some(user_id), Some(organization_id)) = (
            user.get("id").and_then(Value::as_i64),
            user.get("active_organization").and_then(Value::as_i64),
        ) else {
            return Ok(None);
        };
        Ok(Some(Caller {
            user_id,
            organization_id,
        }))
    }
}

#[async_trait]
impl Authenticator for WhoAmI {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        self.who("Authorization", format!("Token {token}")).await
    }

    async fn authenticate_credential(&self, credential: Credential<'_>) -> Result<Option<Caller>> {
        match credential {
            Credential::Bearer(token) => self.who("Authorization", format!("Bearer {token}")).await,
            Credential::Session(cookie) => self.who("Cookie", cookie.to_string()).await,
        }
    }
}

//! A cache for short-lived credentials (STS AssumeRole, GCS impersonation):
//! one refresh at a time, renewed shortly before expiry, and a still-valid
//! credential kept when a refresh fails.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// A cached credential is used while it has at least this long to live,
/// even when its refresh failed.
const MIN_USABLE_VALIDITY: Duration = Duration::from_secs(30);
/// After a failed refresh, while the cached credential is still usable, the
/// issuer is not asked again for this long (an outage must not slow every
/// call down).
const RETRY_REFRESH_AFTER: Duration = Duration::from_secs(10);

/// A credential and when it stops working (monotonic clock).
#[derive(Debug)]
pub struct Expiring<T> {
    /// The credential.
    pub value: Arc<T>,
    /// When it expires.
    pub expires_at: Instant,
}

impl<T> Expiring<T> {
    fn valid_for(&self, margin: Duration) -> bool {
        Instant::now()
            .checked_add(margin)
            .is_some_and(|t| t < self.expires_at)
    }
}

#[derive(Debug)]
struct State<T> {
    cached: Option<Expiring<T>>,
    failed_at: Option<Instant>,
}

impl<T> State<T> {
    /// Caches `fresh` (the issuer answered: no failure to remember).
    fn store(&mut self, fresh: Expiring<T>) -> Arc<T> {
        let value = Arc::clone(&fresh.value);
        self.cached = Some(fresh);
        self.failed_at = None;
        value
    }
}

/// One cached credential; concurrent callers share one refresh.
///
/// ```
/// use std::time::{Duration, Instant};
/// use std::sync::Arc;
/// use storage_core::credentials::{CredentialCache, Expiring};
/// # tokio_test::block_on(async {
/// let cache = CredentialCache::default();
/// let fetch = || async { Ok::<_, String>(Expiring { value: Arc::new("token"), expires_at: Instant::now() + Duration::from_secs(3600) }) };
/// let first = cache.get(Duration::from_secs(300), "demo", fetch).await.unwrap();
/// let again = cache.get(Duration::from_secs(300), "demo", || async { Err::<Expiring<&str>, _>("not called".to_string()) }).await.unwrap();
/// assert!(Arc::ptr_eq(&first, &again));
/// # });
/// ```
#[derive(Debug)]
pub struct CredentialCache<T> {
    state: Mutex<State<T>>,
}

impl<T> Default for CredentialCache<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                cached: None,
                failed_at: None,
            }),
        }
    }
}

impl<T> CredentialCache<T> {
    /// The cached credential while it has more than `refresh_before` left,
    /// else a fresh one from `fetch`. When `fetch` fails and the cached one
    /// still works, it is returned (and the failure logged with `what`).
    pub async fn get<E, F, Fut>(
        &self,
        refresh_before: Duration,
        what: &str,
        fetch: F,
    ) -> Result<Arc<T>, E>
    where
        E: Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Expiring<T>, E>>,
    {
        let mut state = self.state.lock().await;
        if let Some(cached) = &state.cached {
            let failed_recently = state
                .failed_at
                .is_some_and(|at| at.elapsed() < RETRY_REFRESH_AFTER);
            if cached.valid_for(refresh_before)
                || (failed_recently && cached.valid_for(MIN_USABLE_VALIDITY))
            {
                return Ok(Arc::clone(&cached.value));
            }
        }
        match fetch().await {
            Ok(fresh) => Ok(state.store(fresh)),
            Err(error) => {
                state.failed_at = Some(Instant::now());
                match &state.cached {
                    Some(cached) if cached.valid_for(MIN_USABLE_VALIDITY) => {
                        tracing::warn!(credential = what, %error, "refreshing a credential failed; using the cached one until it expires");
                        Ok(Arc::clone(&cached.value))
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// When the cached credential expires (`None` before the first fetch):
    /// what a URL signed with it must not outlive.
    pub async fn expires_at(&self) -> Option<Instant> {
        self.state
            .lock()
            .await
            .cached
            .as_ref()
            .map(|c| c.expires_at)
    }

    /// A fresh credential from `fetch`, whatever is cached (to prove at
    /// validation time that the issuer answers).
    pub async fn refresh_now<E, F, Fut>(&self, fetch: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Expiring<T>, E>>,
    {
        let mut state = self.state.lock().await;
        let fresh = fetch().await?;
        Ok(state.store(fresh))
    }
}

//! One retry policy for every call to a storage or credential service:
//! listing, reads, export writes, STS AssumeRole, the IAM Credentials API.
//!
//! An error is retried only when it says a later attempt may succeed
//! ([`Classify`]), with exponential backoff and jitter, at most
//! [`RetryPolicy::max_attempts`] attempts and never past
//! [`RetryPolicy::deadline`]. object_store's own client retries each HTTP
//! request briefly; this is the outer loop around a whole operation.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::{Error, Retry};

/// Whether an error is worth another attempt.
pub trait Classify {
    /// [`Retry::Temporary`] when a later attempt may succeed.
    fn retry(&self) -> Retry;
}

impl Classify for Error {
    fn retry(&self) -> Retry {
        Error::retry(self)
    }
}

/// How often and for how long an operation that failed with a temporary
/// error is tried again.
///
/// The wait before attempt `n + 1` is `initial_backoff * multiplier^(n-1)`,
/// capped at `max_backoff`, then jittered to between half and all of it (so
/// that many syncs failing at once do not come back at once).
///
/// ```
/// use std::time::Duration;
/// use storage_core::retry::RetryPolicy;
/// let policy = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_deadline(Duration::from_secs(10));
/// assert_eq!(policy.max_attempts, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt, before jitter.
    pub initial_backoff: Duration,
    /// Each further wait is this many times the previous one.
    pub multiplier: u32,
    /// No single wait is longer than this.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt started.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, waits of about 0.2 s then 0.8 s, within 30 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            multiplier: 4,
            max_backoff: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Sets the number of attempts in all (0 is taken as 1: no retry).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the wait before the second attempt.
    pub fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets the factor between two waits (0 is taken as 1).
    pub fn with_multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier.max(1);
        self
    }

    /// Sets the longest single wait.
    pub fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Sets the time after which no retry starts.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The retry state of one operation, started now.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 1,
            started: Instant::now(),
        }
    }

    /// Runs `operation` until it succeeds, fails with a permanent error, or
    /// the policy allows no further attempt; returns the last result.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use storage_core::retry::RetryPolicy;
    /// let result = RetryPolicy::default()
    ///     .run(|| async { Ok::<_, storage_core::Error>(7) })
    ///     .await;
    /// assert_eq!(result.unwrap(), 7);
    /// # });
    /// ```
    pub async fn run<T, E, F, Fut>(&self, mut operation: F) -> Result<T, E>
    where
        E: Classify + Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = self.backoff();
        loop {
            match operation().await {
                Err(err) if backoff.again(&err).await => continue,
                other => return other,
            }
        }
    }

    /// The wait after failed attempt `attempt` (1-based), jittered: for
    /// loops that keep their attempts elsewhere (the webhook outbox keeps
    /// them in the database).
    ///
    /// ```
    /// use std::time::Duration;
    /// use storage_core::retry::RetryPolicy;
    /// let policy = RetryPolicy::default().with_initial_backoff(Duration::from_secs(2));
    /// let wait = policy.jittered_delay(1);
    /// assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2));
    /// ```
    pub fn jittered_delay(&self, attempt: u32) -> Duration {
        jitter(self.base_delay(attempt), random_unit())
    }

    /// The wait after failed attempt `attempt` (1-based), before jitter.
    fn base_delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1)
            .saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The retry state of one operation under a [`RetryPolicy`], for loops that
/// cannot be written as one closure (a listing resumed mid-stream).
///
/// ```
/// # tokio_test::block_on(async {
/// let mut retry = storage_core::retry::RetryPolicy::default().backoff();
/// let result: storage_core::Result<u32> = loop {
///     match async { Ok(7) }.await {
///         Err(err) if retry.again(&err).await => continue,
///         other => break other,
///     }
/// };
/// assert_eq!(result.unwrap(), 7);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
    started: Instant,
}

impl Backoff {
    /// After a failure: waits and returns true when another attempt is
    /// allowed and worth it, else returns false at once.
    pub async fn again<E: Classify + Display>(&mut self, err: &E) -> bool {
        let Some(wait) = self.next_wait(err.retry(), self.started.elapsed(), random_unit()) else {
            return false;
        };
        tracing::warn!(attempt = self.attempt, error = %err, "temporary failure, retrying");
        tokio::time::sleep(wait).await;
        self.attempt += 1;
        true
    }

    /// Starts over, as after a success (a stream that made progress).
    pub fn reset(&mut self) {
        self.attempt = 1;
        self.started = Instant::now();
    }

    /// The wait before the next attempt, or `None` when there is none: a
    /// permanent error, no attempt left, or the deadline passed by then.
    /// `unit` in `[0, 1)` picks the jitter.
    fn next_wait(&self, retry: Retry, elapsed: Duration, unit: f64) -> Option<Duration> {
        if retry != Retry::Temporary || self.attempt >= self.policy.max_attempts {
            return None;
        }
        let wait = jitter(self.policy.base_delay(self.attempt), unit);
        (elapsed.saturating_add(wait) <= self.policy.deadline).then_some(wait)
    }
}

/// Between half and all of `delay`: `unit` in `[0, 1)` picks where.
fn jitter(delay: Duration, unit: f64) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// A number in `[0, 1)`, different on every call; std's hasher keys are
/// random, which is all jitter needs (no extra dependency).
fn random_unit() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn temporary() -> Error {
        Error::Backend {
            context: "listing".into(),
            source: "connection reset".into(),
            retry: Retry::Temporary,
        }
    }

    #[test]
    fn waits_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default()
            .with_initial_backoff(100 * MS)
            .with_multiplier(3)
            .with_max_backoff(1000 * MS);
        let waits: Vec<_> = (1..=5).map(|a| policy.base_delay(a)).collect();
        assert_eq!(waits, [100 * MS, 300 * MS, 900 * MS, 1000 * MS, 1000 * MS]);
        // Huge attempt numbers saturate instead of overflowing.
        assert_eq!(policy.base_delay(u32::MAX), 1000 * MS);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_wait() {
        for unit in [0.0, 0.25, 0.5, 0.999_999, 1.0, -3.0, 7.0] {
            let wait = jitter(800 * MS, unit);
            assert!((400 * MS..=800 * MS).contains(&wait), "{unit}: {wait:?}");
        }
        assert_eq!(jitter(800 * MS, 0.0), 400 * MS);
        for _ in 0..1000 {
            let unit = random_unit();
            assert!((0.0..1.0).contains(&unit), "{unit}");
        }
        let distinct: std::collections::HashSet<u64> =
            (0..50).map(|_| random_unit().to_bits()).collect();
        assert!(distinct.len() > 40, "jitter must vary: {distinct:?}");
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let backoff = RetryPolicy::default().backoff();
        assert_eq!(
            backoff.next_wait(Retry::Permanent, Duration::ZERO, 0.5),
            None
        );
        assert!(backoff
            .next_wait(Retry::Temporary, Duration::ZERO, 0.5)
            .is_some());
    }

    #[test]
    fn attempts_are_counted() {
        let mut backoff = RetryPolicy::default().with_max_attempts(2).backoff();
        assert!(backoff
            .next_wait(Retry::Temporary, Duration::ZERO, 0.5)
            .is_some());
        backoff.attempt = 2;
        assert_eq!(
            backoff.next_wait(Retry::Temporary, Duration::ZERO, 0.5),
            None
        );
        backoff.reset();
        assert!(backoff
            .next_wait(Retry::Temporary, Duration::ZERO, 0.5)
            .is_some());
    }

    #[test]
    fn no_retry_starts_after_the_deadline() {
        let backoff = RetryPolicy::default()
            .with_initial_backoff(200 * MS)
            .with_deadline(Duration::from_secs(1))
            .backoff();
        // 0.8 s elapsed + at least 0.1 s of wait: still in time.
        assert_eq!(
            backoff.next_wait(Retry::Temporary, 800 * MS, 0.0),
            Some(100 * MS)
        );
        // The full 0.2 s would end past the deadline.
        assert_eq!(backoff.next_wait(Retry::Temporary, 900 * MS, 1.0), None);
        assert_eq!(
            backoff.next_wait(Retry::Temporary, Duration::from_secs(2), 0.0),
            None
        );
    }

    #[tokio::test]
    async fn run_retries_temporary_failures_then_gives_the_last_error() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), Error> = RetryPolicy::default()
            .with_initial_backoff(MS)
            .with_max_attempts(3)
            .run(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(temporary())
            })
            .await;
        assert!(matches!(result, Err(Error::Backend { .. })));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        let calls = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), Error> = RetryPolicy::default()
            .run(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(Error::invalid("bucket", "bad"))
            })
            .await;
        assert!(matches!(result, Err(Error::InvalidConfig(_))));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn run_stops_at_the_first_success() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let started = Instant::now();
        let result = RetryPolicy::default()
            .with_initial_backoff(20 * MS)
            .with_max_attempts(5)
            .run(|| async {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < 2 {
                    Err(temporary())
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 2);
        // Two waits: 10..=20 ms then 40..=80 ms.
        let waited = started.elapsed();
        assert!(waited >= 50 * MS, "{waited:?}");
    }
}

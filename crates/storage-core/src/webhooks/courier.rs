//! The courier: claims due deliveries from the outbox, posts them, and
//! records each outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody};
use object_store::ClientOptions;
use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};
use url::Url;

use super::signature::{sign, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::{Attempt, Delivery, Event, EventRenderer, Outcome, WebhookRepository};
use crate::endpoint::PolicyConnector;
use crate::retry::RetryPolicy;
use crate::{EndpointPolicy, Error, Result};

/// How the courier delivers.
#[derive(Debug, Clone)]
pub struct CourierConfig {
    /// Webhooks posted to at once (one webhook's deliveries go in order,
    /// one after another).
    pub concurrency: usize,
    /// How long one attempt may take, connection included.
    pub timeout: Duration,
    /// How long after an event its delivery is retried before it is given
    /// up.
    pub retry_for: Duration,
    /// The waits between attempts: exponential with jitter
    /// ([`RetryPolicy::jittered_delay`]); its attempt count and deadline
    /// are not used ([`CourierConfig::retry_for`] bounds the retries).
    pub backoff: RetryPolicy,
    /// How often the outbox is looked at when nothing woke the courier
    /// (events recorded by another process, retries coming due).
    pub poll_interval: Duration,
    /// The addresses webhook URLs may reach (checked again at every
    /// connection).
    pub policy: EndpointPolicy,
}

impl Default for CourierConfig {
    /// 8 at once, 10 s per attempt, retried for 24 hours with waits from
    /// about 1 s doubling up to 10 minutes; private addresses refused.
    fn default() -> Self {
        Self {
            concurrency: 8,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(24 * 3600),
            backoff: RetryPolicy::default()
                .with_initial_backoff(Duration::from_secs(1))
                .with_multiplier(2)
                .with_max_backoff(Duration::from_secs(600)),
            poll_interval: Duration::from_millis(250),
            policy: EndpointPolicy::strict(),
        }
    }
}

/// Deliveries of one webhook claimed and posted as one run, at most.
const RUN_LENGTH: usize = 50;

/// Bodies rendered at once within a run, at most: with `concurrency` runs,
/// what a round holds in memory.
const RENDER_CHUNK: usize = 5;

/// What a run keeps of its lease after its last post may have ended.
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

impl CourierConfig {
    /// How long a claim holds: an attempt's timeout and a margin for
    /// recording its outcome. A courier that died is replaced after it.
    fn lease(&self) -> Duration {
        self.timeout.saturating_mul(2) + Duration::from_secs(10)
    }
}

/// Delivers the outbox's events to their webhooks (see the module
/// documentation of [`crate::webhooks`]).
///
/// Cheap to clone; clones share one loop.
#[derive(Debug, Clone)]
pub struct Courier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    repository: Arc<dyn WebhookRepository>,
    renderer: Arc<dyn EventRenderer>,
    client: HttpClient,
    config: CourierConfig,
    wake: Notify,
    shutdown: watch::Sender<bool>,
}

impl Courier {
    /// A courier over `repository`, rendering bodies with `renderer`. Call
    /// [`Courier::start`] to deliver in the background.
    pub fn new(
        repository: Arc<dyn WebhookRepository>,
        renderer: Arc<dyn EventRenderer>,
        config: CourierConfig,
    ) -> Result<Self> {
        let client = PolicyConnector::new(config.policy)
            .with_timeout(config.timeout)
            .connect(&ClientOptions::new().with_allow_http(true))
            .map_err(|err| Error::backend("building the webhook HTTP client", err))?;
        Ok(Self {
            inner: Arc::new(Inner {
                repository,
                renderer,
                client,
                config,
                wake: Notify::new(),
                shutdown: watch::channel(false).0,
            }),
        })
    }

    /// Releases the claims a previous run of the only process using the
    /// database left (see [`WebhookRepository::release_claims`]); call
    /// before [`Courier::start`] when the database is exclusive (SQLite).
    pub async fn recover(&self) -> Result<()> {
        self.inner.repository.release_claims().await
    }

    /// Starts the delivery loop.
    pub fn start(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.run().await });
    }

    /// Looks at the outbox now rather than at the next poll (call it after
    /// recording events).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops the loop after its current round.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Claims and attempts the deliveries due now, once; returns how many
    /// were attempted.
    pub async fn deliver_due(&self) -> Result<usize> {
        self.inner.round().await
    }
}

impl Inner {
    async fn run(&self) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let attempted = match self.round().await {
                Ok(attempted) => attempted,
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the webhook outbox; trying again");
                    0
                }
            };
            if attempted > 0 {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn round(&self) -> Result<usize> {
        let now = Utc::now();
        let lease_until = now + chrono::Duration::from_std(self.config.lease()).unwrap_or_default();
        let deliveries = self
            .repository
            .claim_deliveries(now, lease_until, self.config.concurrency.max(1), RUN_LENGTH)
            .await?;
        if deliveries.is_empty() {
            return Ok(0);
        }
        // One run per webhook, in id order; the runs go at once.
        let mut runs: Vec<Vec<Delivery>> = Vec::new();
        for delivery in deliveries {
            match runs
                .iter_mut()
                .find(|run| run[0].webhook.id == delivery.webhook.id)
            {
                Some(run) => run.push(delivery),
                None => runs.push(vec![delivery]),
            }
        }
        let count = runs.iter().map(Vec::len).sum();
        join_all(runs.into_iter().map(|run| self.post_run(run))).await;
        Ok(count)
    }

    /// Posts one webhook's run in order until one fails or the claim
    /// would run out, and records what became of each.
    async fn post_run(&self, run: Vec<Delivery>) {
        let mut attempts = Vec::with_capacity(run.len());
        let mut untried = Vec::new();
        let mut stopped = false;
        let mut deliveries = run.into_iter();
        loop {
            // A few bodies at a time, read together (their project and
            // tasks once), so a run of large payloads never sits in memory
            // whole.
            let chunk: Vec<Delivery> = deliveries.by_ref().take(RENDER_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            if stopped {
                untried.extend(chunk);
                continue;
            }
            let bodies = self.bodies(&chunk).await;
            for delivery in chunk {
                // A post that may take the whole timeout must end before
                // the lease, or another courier could take the rest
                // meanwhile.
                let latest_start = delivery.lease_until
                    - chrono::Duration::from_std(self.config.timeout + LEASE_MARGIN)
                        .unwrap_or_default();
                if stopped || Utc::now() > latest_start {
                    stopped = true;
                    untried.push(delivery);
                    continue;
                }
                let body = match bodies.get(&delivery.event.id) {
                    Some(Ok(body)) => Ok(body.clone()),
                    Some(Err(err)) => Err((None, format!("its body could not be built: {err}"))),
                    // The webhook does not want the payload.
                    None => Ok(body(&delivery.event, None)),
                };
                let result = match body {
                    Ok(body) => self.post(&delivery, body).await,
                    Err(failure) => Err(failure),
                };
                let (attempt, outcome) = self.outcome(&delivery, result);
                stopped = outcome != Outcome::Delivered;
                attempts.push((delivery, attempt, outcome));
            }
        }
        let webhook = attempts
            .first()
            .map(|(d, _, _)| d.webhook.id)
            .or_else(|| untried.first().map(|d| d.webhook.id));
        match self.repository.record_attempts(&attempts, &untried).await {
            Ok(recorded) if recorded < attempts.len() => tracing::warn!(
                webhook,
                lost = attempts.len() - recorded,
                "webhook deliveries' claim expired before their outcome was recorded; \
                 they will be attempted again"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(
                webhook,
                error = %err,
                "could not record webhook deliveries; they will be attempted again"
            ),
        }
    }

    /// The bodies of the events of `chunk` whose webhook wants the
    /// payload, each serialised once.
    async fn bodies(&self, chunk: &[Delivery]) -> HashMap<i64, Result<Bytes>> {
        let mut events: Vec<&Event> = Vec::new();
        for delivery in chunk {
            if delivery.webhook.send_payload && !events.iter().any(|e| e.id == delivery.event.id) {
                events.push(&delivery.event);
            }
        }
        let rendered = self.renderer.render_all(&events).await;
        events
            .iter()
            .zip(rendered)
            .map(|(event, payload)| (event.id, payload.map(|p| body(event, Some(p)))))
            .collect()
    }

    /// The attempt a post made, and what follows it.
    fn outcome(
        &self,
        delivery: &Delivery,
        result: Result<u16, (Option<u16>, String)>,
    ) -> (Attempt, Outcome) {
        let at = Utc::now();
        match result {
            Ok(status) => (
                Attempt {
                    at,
                    status: Some(status),
                    error: None,
                },
                Outcome::Delivered,
            ),
            Err((status, error)) => {
                let outcome = self.after_failure(&delivery.event, delivery.attempt, at);
                let (webhook, event, attempt) =
                    (delivery.webhook.id, delivery.event.id, delivery.attempt);
                match outcome {
                    Outcome::GivenUp => tracing::error!(
                        webhook, event, attempt, %error,
                        "webhook delivery given up: its retries ran out"
                    ),
                    _ => tracing::warn!(
                        webhook, event, attempt, %error,
                        "webhook delivery failed; it will be retried"
                    ),
                }
                (
                    Attempt {
                        at,
                        status,
                        error: Some(error),
                    },
                    outcome,
                )
            }
        }
    }

    /// When a failed attempt `attempt` of `event` is tried again, or that
    /// it is given up.
    fn after_failure(&self, event: &Event, attempt: u32, now: DateTime<Utc>) -> Outcome {
        let wait = self.config.backoff.jittered_delay(attempt);
        let retry_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
        let deadline = event.created_at
            + chrono::Duration::from_std(self.config.retry_for).unwrap_or_default();
        if retry_at > deadline {
            Outcome::GivenUp
        } else {
            Outcome::RetryAt(retry_at)
        }
    }

    /// Posts `delivery`; its HTTP status when the receiver accepted it
    /// (2xx), else the status if any and why it failed.
    async fn post(&self, delivery: &Delivery, body: Bytes) -> Result<u16, (Option<u16>, String)> {
        let webhook = &delivery.webhook;
        let shown = shown_url(&webhook.url);
        let id = event_id(&delivery.event);
        let timestamp = Utc::now().timestamp();
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(&webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, &id)
            .header(TIMESTAMP_HEADER, timestamp.to_string());
        if let Some(secret) = webhook.secret.as_deref() {
            request = request.header(SIGNATURE_HEADER, sign(secret, &id, timestamp, &body));
        }
        for (name, value) in &webhook.headers {
            if let Some(value) = value.as_str() {
                request = request.header(name.as_str(), value);
            }
        }
        let request = request.body(HttpRequestBody::from(body)).map_err(|err| {
            (
                None,
                format!("the request to {shown} could not be built: {err}"),
            )
        })?;
        let response = self.client.execute(request).await.map_err(|err| {
            let text = err.to_string().replace(&webhook.url, &shown);
            (None, format!("no answer from {shown}: {text}"))
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err((Some(status.as_u16()), format!("{shown} answered {status}")))
        }
    }
}

/// The body of `event`: `{"action": …}`, then the payload's keys when the
/// webhook wants them.
fn body(event: &Event, payload: Option<Map<String, Value>>) -> Bytes {
    let mut out = Map::new();
    out.insert("action".into(), Value::from(event.action.as_str()));
    if let Some(payload) = payload {
        out.extend(payload);
    }
    Bytes::from(serde_json::to_vec(&Value::Object(out)).unwrap_or_default())
}

/// The `webhook-id` of an event.
pub(super) fn event_id(event: &Event) -> String {
    format!("evt_{}", event.id)
}

/// `url` without its query and fragment (they may carry a token), for
/// messages.
fn shown_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "the webhook URL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_leave_out_the_query() {
        assert_eq!(
            shown_url("https://hooks.example.com/in?token=abc#x"),
            "https://hooks.example.com/in"
        );
        assert_eq!(shown_url("not a url"), "the webhook URL");
    }
}

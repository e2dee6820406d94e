//! What webhooks and their outbox keep in the database, and the trait a
//! database implements to keep it ([`WebhookRepository`]).

use std::fmt::{self, Debug};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Action;
use crate::Result;

/// A webhook as stored.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    /// Id.
    pub id: i64,
    /// Owning organisation.
    pub organization: i64,
    /// Its project; `None` for an organisation webhook.
    pub project: Option<i64>,
    /// Where events are posted.
    pub url: String,
    /// Whether bodies carry the payload (else only `{"action": …}`).
    pub send_payload: bool,
    /// Whether every action is sent (else only [`Webhook::actions`]).
    pub send_for_all_actions: bool,
    /// Extra request headers (string values).
    pub headers: Map<String, Value>,
    /// Whether events are recorded for it at all.
    pub is_active: bool,
    /// The actions sent when not [`Webhook::send_for_all_actions`].
    pub actions: Vec<Action>,
    /// The HMAC key of the signature header (extension); never shown.
    pub secret: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// How its deliveries fare.
    pub delivery: DeliveryState,
}

// Written by hand: the secret and the header values (an `Authorization`
// header is common) stay out of logs.
impl Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("url", &self.url)
            .field("send_payload", &self.send_payload)
            .field("send_for_all_actions", &self.send_for_all_actions)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("is_active", &self.is_active)
            .field("actions", &self.actions)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// What the outbox knows of a webhook's deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// When the last attempt ended.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt; `None` when no answer came.
    pub last_status: Option<u16>,
    /// Why the last attempt failed; `None` when it succeeded.
    pub last_error: Option<String>,
    /// Events delivered.
    pub delivered: u64,
    /// Events given up after their retries ran out.
    pub failed: u64,
    /// Events waiting to be delivered.
    pub pending: u64,
    /// Failed attempts since the last accepted one (Label Studio
    /// Enterprise's `consecutive_failures`).
    pub consecutive_failures: u64,
}

/// The fields a client sets on a webhook.
#[derive(Clone, PartialEq)]
pub struct WebhookFields {
    /// Its project (only at creation).
    pub project: Option<i64>,
    /// See [`Webhook::url`].
    pub url: String,
    /// See [`Webhook::send_payload`].
    pub send_payload: bool,
    /// See [`Webhook::send_for_all_actions`].
    pub send_for_all_actions: bool,
    /// See [`Webhook::headers`].
    pub headers: Map<String, Value>,
    /// See [`Webhook::is_active`].
    pub is_active: bool,
    /// See [`Webhook::actions`].
    pub actions: Vec<Action>,
    /// See [`Webhook::secret`].
    pub secret: Option<String>,
}

impl Debug for WebhookFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookFields")
            .field("project", &self.project)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("actions", &self.actions)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl From<&Webhook> for WebhookFields {
    fn from(webhook: &Webhook) -> Self {
        Self {
            project: webhook.project,
            url: webhook.url.clone(),
            send_payload: webhook.send_payload,
            send_for_all_actions: webhook.send_for_all_actions,
            headers: webhook.headers.clone(),
            is_active: webhook.is_active,
            actions: webhook.actions.clone(),
            secret: webhook.secret.clone(),
        }
    }
}

/// Which webhooks of an organisation a listing shows (`?project=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookScope {
    /// All of them.
    All,
    /// Those of one project.
    Project(i64),
    /// Organisation webhooks only (`?project=isnull`).
    OrganizationOnly,
}

/// An event as the outbox keeps it: what happened, and the data its body
/// is rendered from at delivery ([`super::EventRenderer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Id; receivers see it in the `webhook-id` header.
    pub id: i64,
    /// The project it happened in.
    pub project: i64,
    /// What happened.
    pub action: Action,
    /// What the database recorded with it (see [`super::EventRenderer`]).
    pub payload: Value,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// One event to post to one webhook, claimed by a courier.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Id.
    pub id: i64,
    /// The webhook.
    pub webhook: Webhook,
    /// The event.
    pub event: Event,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// Until when the claim holds; the outcome is written only while it
    /// does.
    pub lease_until: DateTime<Utc>,
}

/// How an attempt to deliver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    /// Why it failed; `None` when the receiver accepted it (2xx).
    pub error: Option<String>,
}

/// What is done with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: the delivery is done.
    Delivered,
    /// Failed: tried again at this time.
    RetryAt(DateTime<Utc>),
    /// Failed and out of time: given up (counted in
    /// [`DeliveryState::failed`]).
    GivenUp,
}

/// Webhooks, and their outbox of events.
///
/// Events are recorded by the database itself, in the transaction of the
/// change they announce (tasks created, a sync's status moved); a courier
/// ([`super::Courier`]) claims the due deliveries, posts them and records
/// each outcome here.
#[async_trait]
pub trait WebhookRepository: Send + Sync + Debug {
    /// Creates a webhook of `organization`.
    async fn insert_webhook(&self, organization: i64, fields: WebhookFields) -> Result<Webhook>;

    /// A webhook.
    async fn webhook(&self, id: i64) -> Result<Option<Webhook>>;

    /// The webhooks of `organization` in `scope`, by id.
    async fn webhooks(&self, organization: i64, scope: WebhookScope) -> Result<Vec<Webhook>>;

    /// Writes `fields` (but the project) to webhook `id`; `None` when it
    /// is gone.
    async fn update_webhook(&self, id: i64, fields: WebhookFields) -> Result<Option<Webhook>>;

    /// Deletes webhook `id` and its pending deliveries; false when it did
    /// not exist.
    async fn delete_webhook(&self, id: i64) -> Result<bool>;

    /// Claims, until `lease_until`, the due deliveries of up to `webhooks`
    /// webhooks: for each, its oldest undelivered delivery if it is due and
    /// not held, with up to `per_webhook - 1` of the deliveries behind it
    /// (a run a courier posts in order). However many couriers and
    /// processes claim at once, a delivery goes to one of them, and one
    /// webhook's deliveries are held by one claim at a time. Sorted by id.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        webhooks: usize,
        per_webhook: usize,
    ) -> Result<Vec<Delivery>>;

    /// Releases every claim, as after a crash of the only process using
    /// the database (an embedded SQLite file): its deliveries are taken
    /// again at once instead of when their leases would expire.
    async fn release_claims(&self) -> Result<()>;

    /// Records what became of one webhook's claimed run: `attempts` in the
    /// order they were made (each with what follows it), and `untried`,
    /// the deliveries of the run not posted (the run stopped at a failure
    /// or ran out of its lease), released as they were. Nothing is written
    /// for a delivery whose claim was lost (its lease expired and another
    /// courier took it). Returns how many attempts were recorded.
    async fn record_attempts(
        &self,
        attempts: &[(Delivery, Attempt, Outcome)],
        untried: &[Delivery],
    ) -> Result<usize>;
}

//! Webhooks: Label Studio's API and actions, the sync actions this server
//! adds, and a durable outbox that delivers them.
//!
//! - [`Action`]: the catalogue (`GET /api/webhooks/info/`) and which moves
//!   of a sync's status announce themselves.
//! - [`WebhookRepository`]: webhooks and the outbox, as a database keeps
//!   them. The database records an event in the same transaction as the
//!   change it announces (a batch of tasks, a status move), with one
//!   delivery per active webhook that wants it; a crash never loses one and
//!   never announces a change that was rolled back.
//! - [`Courier`] (feature `cloud`): claims due deliveries with a lease,
//!   posts them, and retries failures with exponential backoff and jitter
//!   for a bounded time; one webhook's deliveries go in order.
//! - [`signature`]: the `webhook-id` / `webhook-timestamp` /
//!   `webhook-signature` headers (Standard Webhooks).
//!
//! Delivery is at least once: a courier that dies after the receiver
//! accepted an event but before recording it posts it again once its lease
//! expires. Receivers deduplicate on `webhook-id`, which is the same on
//! every attempt.

mod action;
#[cfg(feature = "cloud")]
mod courier;
pub mod signature;
mod store;

use std::fmt::Debug;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

pub use action::{Action, UnknownAction};
#[cfg(feature = "cloud")]
pub use courier::{Courier, CourierConfig};
pub use store::{
    Attempt, Delivery, DeliveryState, Event, Outcome, Webhook, WebhookFields, WebhookRepository,
    WebhookScope,
};

use crate::model::meta_time;
use crate::{Result, SyncState};

/// Task ids per `TASKS_CREATED` / `TASKS_DELETED` event, at most: Label
/// Studio's `WEBHOOK_BATCH_SIZE`.
pub const TASKS_PER_EVENT: usize = 5_000;

/// Turns an event as recorded into the keys its body carries besides
/// `action` (Label Studio's payload: `tasks`, `project`, …). A host that
/// shows tasks and storages in its own shapes implements it; [`Recorded`]
/// sends what the database recorded.
#[async_trait]
pub trait EventRenderer: Send + Sync + Debug {
    /// The payload keys of `event`'s body.
    async fn render(&self, event: &Event) -> Result<Map<String, Value>>;

    /// The payload keys of each of `events`, in order. The default renders
    /// them one by one; a renderer that can read what they share once
    /// (their project, their tasks) should.
    async fn render_all(&self, events: &[&Event]) -> Vec<Result<Map<String, Value>>> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            out.push(self.render(event).await);
        }
        out
    }
}

/// Sends the payload as the database recorded it (see [`recorded`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Recorded;

#[async_trait]
impl EventRenderer for Recorded {
    async fn render(&self, event: &Event) -> Result<Map<String, Value>> {
        let mut out = event.payload.as_object().cloned().unwrap_or_default();
        out.insert("project".into(), json!({ "id": event.project }));
        Ok(out)
    }
}

/// The payloads a database records with events, so that it and a renderer
/// agree on their shape.
pub mod recorded {
    use super::*;

    /// `TASKS_CREATED` / `TASKS_DELETED`: `{"tasks": [{"id": …}, …]}`.
    pub fn tasks(ids: &[i64]) -> Value {
        let tasks: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        json!({ "tasks": tasks })
    }

    /// The ids of a payload of [`tasks`].
    pub fn task_ids(payload: &Value) -> Vec<i64> {
        payload["tasks"]
            .as_array()
            .map(|tasks| tasks.iter().filter_map(|t| t["id"].as_i64()).collect())
            .unwrap_or_default()
    }

    /// `ANNOTATION_CREATED` / `ANNOTATION_UPDATED`:
    /// `{"annotation": {"id": …}, "task": {"id": …}}`.
    pub fn annotation(id: i64, task: i64) -> Value {
        json!({ "annotation": { "id": id }, "task": { "id": task } })
    }

    /// `ANNOTATIONS_DELETED`: `{"annotations": [{"id": …}, …]}`, Label
    /// Studio's payload as it is.
    pub fn annotations(ids: &[i64]) -> Value {
        let annotations: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
        json!({ "annotations": annotations })
    }

    /// The sync actions: the storage (`id`, `type`, `kind`) with its sync
    /// state as the move wrote it (`status`, `last_sync`,
    /// `last_sync_count`, `last_sync_job`, `traceback`, `meta`).
    ///
    /// ```
    /// use storage_core::webhooks::recorded;
    /// let state = storage_core::SyncState::default();
    /// let payload = recorded::sync(7, "s3", "import", &state);
    /// assert_eq!(payload["storage"]["id"], 7);
    /// assert_eq!(payload["storage"]["status"], "initialized");
    /// ```
    pub fn sync(id: i64, storage_type: &str, kind: &str, state: &SyncState) -> Value {
        json!({
            "storage": {
                "id": id,
                "type": storage_type,
                "kind": kind,
                "status": state.status,
                "last_sync": state.last_sync.map(meta_time),
                "last_sync_count": state.last_sync_count,
                "last_sync_job": state.last_sync_job,
                "traceback": state.traceback,
                "meta": state.meta,
            }
        })
    }
}

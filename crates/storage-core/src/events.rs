//! Event-driven sync: changes a store announces (a filesystem watch, a
//! queue of bucket notifications, a push) applied through the import
//! engine without listing the bucket.
//!
//! An event is a hint, not a fact. Each key a batch names is looked up
//! (`HEAD`) when the batch is applied, and what the store holds then
//! decides: an object that exists is imported as a sync imports a listed
//! object (dedupe by link, the change policy, Tasks-mode parsing); a key
//! that is gone has its tasks removed as the deletion policy says, within
//! the deletion guard. So a replayed, duplicated or reordered message
//! changes nothing, and no message can create a task for an object the
//! store does not hold.
//!
//! Where events come from is the backend's ([`EventFeed`] for what the
//! server pulls or watches, [`PushedEvents`] for what a provider pushes);
//! when they are applied is the job runner's: never while the storage's
//! sync is queued or running (see
//! [`SyncService::apply_events`](crate::SyncService::apply_events)).

use std::collections::BTreeSet;

use async_trait::async_trait;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};
use serde_json::{json, Map, Value};

use crate::import::{ImportJob, ImportOutcome, ProgressSink};
use crate::{Error, Result, Retry};

/// `watch` (local files): follow the folder through inotify.
pub const WATCH_FIELD: &str = "watch";

/// `sqs_queue_url` (S3): the queue of the bucket's event notifications.
pub const SQS_QUEUE_URL_FIELD: &str = "sqs_queue_url";

/// `pubsub_service_account` (GCS): the account Pub/Sub signs its push
/// OIDC tokens as.
pub const PUBSUB_SERVICE_ACCOUNT_FIELD: &str = "pubsub_service_account";

/// `pubsub_audience` (GCS): the audience of those tokens.
pub const PUBSUB_AUDIENCE_FIELD: &str = "pubsub_audience";

/// The storage fields of event mode: what a stored storage does between
/// syncs, which a one-off command (`storages sync`) has no use for.
pub const FIELDS: [&str; 4] = [
    WATCH_FIELD,
    SQS_QUEUE_URL_FIELD,
    PUBSUB_SERVICE_ACCOUNT_FIELD,
    PUBSUB_AUDIENCE_FIELD,
];

/// The `meta` key under which a storage's event counters are kept; a
/// queued sync keeps it (see `jobs::state::queued`).
pub const EVENTS_META: &str = "events";

/// What an event says happened to an object. Only a hint: the object is
/// looked up when its batch is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectChange {
    /// Created, overwritten, moved in, or its metadata changed.
    Written,
    /// Deleted or moved out.
    Removed,
}

/// One object change a store announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// The object's link key (as [`crate::ImportStorage::object_key`]
    /// gives it: the bucket key, the absolute path of a local file).
    pub key: String,
    /// What happened.
    pub change: ObjectChange,
    /// The provider's id of the message that carried it (a replay of a
    /// message already applied is counted as ignored).
    pub message: Option<String>,
}

impl ObjectEvent {
    /// An object written at `key`.
    pub fn written(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            change: ObjectChange::Written,
            message: None,
        }
    }

    /// An object removed from `key`.
    pub fn removed(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            change: ObjectChange::Removed,
            message: None,
        }
    }
}

/// Events taken from a feed together: applied in one go, acknowledged
/// together once applied.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// The object changes.
    pub events: Vec<ObjectEvent>,
    /// Messages received that were not object changes of this storage
    /// (a test event, another bucket, a malformed message), each with why;
    /// they are logged, counted as ignored and acknowledged with the batch.
    pub ignored: Vec<String>,
    /// The feed may have missed events (a watch queue overflowed, a
    /// watched folder was recreated): a reconciling sync is queued.
    pub resync: bool,
    /// What the feed needs to acknowledge the batch (receipt handles);
    /// opaque to the core.
    pub receipts: Vec<String>,
}

impl EventBatch {
    /// Messages received in all.
    pub fn received(&self) -> u64 {
        (self.events.len() + self.ignored.len()) as u64
    }
}

/// A source of object changes the server follows for one storage: a
/// filesystem watch, a queue it long-polls.
#[async_trait]
pub trait EventFeed: Send + std::fmt::Debug {
    /// Waits for the next batch of at most `max` events (a feed gathers
    /// what arrives close together, up to its debounce).
    async fn next_batch(&mut self, max: usize) -> Result<EventBatch>;

    /// The batch is still being applied (it waits behind a sync, or its
    /// objects are being read): a queue extends its messages' visibility.
    async fn keep_alive(&mut self, batch: &EventBatch) -> Result<()> {
        let _ = batch;
        Ok(())
    }

    /// How often [`EventFeed::keep_alive`] is called while a batch waits
    /// or is applied.
    fn keep_alive_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(20)
    }

    /// The batch was applied and committed (or dropped as bad input): it
    /// is forgotten for good (a queue deletes its messages).
    async fn acknowledge(&mut self, batch: EventBatch) -> Result<()> {
        let _ = batch;
        Ok(())
    }
}

/// What a provider's push to a storage's notification endpoint holds.
#[derive(Debug)]
pub enum PushedEvents {
    /// Object changes (and what was ignored), to apply before answering.
    Batch(EventBatch),
    /// A subscription handshake (Azure Event Grid's validation event):
    /// answered with this body, nothing applied.
    Handshake(Value),
}

/// A provider's push format: who pushes, and how a push to a storage
/// with these settings is read. A body that is not such a push at all is
/// an [`Error::InvalidConfig`] naming what is wrong; a push of anything but
/// a change of this storage's objects is in the batch's `ignored`.
#[derive(Debug, Clone, Copy)]
pub struct PushFormat {
    /// The pushing service (`Google Cloud Pub/Sub`, `Azure Event Grid`).
    pub service: &'static str,
    /// Reads one push.
    pub parse: fn(&crate::Settings, &[u8]) -> Result<PushedEvents>,
}

/// What applying one batch did, counted as `meta.events` and the
/// `storage_events` metric count it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Messages received.
    pub received: u64,
    /// Events applied: their object was looked up and its tasks created,
    /// kept, updated or removed as the storage's policies say.
    pub applied: u64,
    /// Messages that were not changes of this storage's objects (outside
    /// its prefix or filter, another bucket, a test event, malformed).
    pub ignored: u64,
    /// Events whose object could not be looked up or read (named in the
    /// storage's `meta.events.last_error`).
    pub failed: u64,
}

/// The outcome of applying one batch.
#[derive(Debug, Default)]
pub struct AppliedEvents {
    /// The counters.
    pub counts: EventCounts,
    /// What the import engine did with the objects that exist.
    pub import: ImportOutcome,
    /// Why removals were held back by the deletion guard, if they were.
    pub held_back: Option<String>,
    /// The first problems met (objects that could not be looked up, bad
    /// task files), for `meta.events.last_error`.
    pub errors: Vec<String>,
}

/// Problems kept per batch for the storage's `meta`.
const MAX_ERRORS: usize = 10;

impl ImportJob<'_> {
    /// Applies object changes (`keys`, already known to be covered by the
    /// storage's listing) without listing: each key is looked up, those
    /// that exist are imported as a sync would import them, those gone
    /// have their tasks removed as the deletion policy says, within the
    /// guard. A temporary failure of a lookup fails the whole batch (to be
    /// applied again); any other failure of one object is counted and the
    /// rest is applied.
    pub async fn apply_changes(
        &self,
        keys: BTreeSet<String>,
        progress: &dyn ProgressSink,
    ) -> Result<AppliedEvents> {
        let mut applied = AppliedEvents::default();
        let store = self.source.store();
        let lookups = futures::stream::iter(keys)
            .map(|key| {
                let store = store.clone();
                async move {
                    let Some(location) = self.source.location_of(&key) else {
                        return (key, Ok(None));
                    };
                    let found = match store.head(&location).await {
                        Ok(meta) => Ok(Some(meta)),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(err) => Err(Error::from_object_store(
                            format!("looking up \"{key}\""),
                            err,
                        )),
                    };
                    (key, found)
                }
            })
            .buffered(self.config.read_concurrency.max(1));
        let lookups: Vec<(String, Result<Option<ObjectMeta>>)> = lookups.collect().await;

        let mut present = Vec::new();
        let mut gone = Vec::new();
        for (key, found) in lookups {
            match found {
                Ok(Some(meta)) if !meta.location.as_ref().ends_with('/') => {
                    present.push((key, meta))
                }
                Ok(Some(_)) => applied.counts.ignored += 1,
                Ok(None) => gone.push(key),
                Err(err) if err.retry() == Retry::Temporary => return Err(err),
                Err(err) => {
                    applied.counts.failed += 1;
                    applied.note(err.to_string());
                }
            }
        }

        applied.counts.applied += (present.len() + gone.len()) as u64;
        self.import_batch(present, &mut applied.import, progress)
            .await?;
        for line in std::mem::take(&mut applied.import.file_errors) {
            applied.note(line);
        }
        self.remove_gone_keys(gone, &mut applied).await?;
        Ok(applied)
    }

    /// Removes the tasks of `keys` (looked up and gone) that are linked,
    /// unless they are more than the deletion guard allows of the
    /// storage's linked objects: a mass deletion waits, as in a sync, for
    /// a sync with `confirm_deletions`.
    async fn remove_gone_keys(&self, keys: Vec<String>, applied: &mut AppliedEvents) -> Result<()> {
        let Some(gone) = self.follow.gone_tasks() else {
            return Ok(());
        };
        if keys.is_empty() {
            return Ok(());
        }
        let linked = self.sink.linked_keys(self.storage_id, &keys).await?;
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|key| linked.contains_key(key))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        applied.import.progress.missing += keys.len() as u64;
        let all_linked = self.sink.count_linked_objects(self.storage_id).await?;
        let removing = keys.len() as u64;
        if !self.follow.confirm_deletions
            && removing * 100 > u64::from(self.follow.guard_percent) * all_linked
        {
            let reason = format!(
                "Deletion guard: events removed {removing} of {all_linked} linked objects at \
                 once, more than the storage's deletion_guard of {}%; no task was deleted or \
                 marked. If the objects were deleted, sync with {{\"confirm_deletions\": true}}.",
                self.follow.guard_percent
            );
            tracing::warn!(storage = self.storage_id, "{reason}");
            applied.note(reason.clone());
            applied.held_back = Some(reason);
            return Ok(());
        }
        for chunk in keys.chunks(self.config.batch_size.max(1)) {
            let removed = self
                .sink
                .remove_objects(self.storage_id, chunk, gone)
                .await?;
            applied.import.progress.deleted += removed.deleted;
            applied.import.progress.marked += removed.marked;
        }
        Ok(())
    }
}

impl AppliedEvents {
    fn note(&mut self, line: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(line);
        }
    }
}

/// `meta.events` after a batch: `previous` (the storage's `meta`) with
/// the batch's counts added, the time of this batch, and its counts of
/// tasks created and removed; `last_error` is this batch's first problem
/// (kept from before when this batch had none).
pub fn events_meta(
    previous: &Map<String, Value>,
    applied: &AppliedEvents,
    at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let was = previous.get(EVENTS_META).and_then(Value::as_object);
    let count = |name: &str| {
        was.and_then(|m| m.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let c = &applied.counts;
    let p = &applied.import.progress;
    let last_error = match applied.errors.first() {
        Some(error) => Value::String(error.clone()),
        None => was
            .and_then(|m| m.get("last_error"))
            .cloned()
            .unwrap_or(Value::Null),
    };
    json!({
        "received": count("received") + c.received,
        "applied": count("applied") + c.applied,
        "ignored": count("ignored") + c.ignored,
        "failed": count("failed") + c.failed,
        "tasks_created": count("tasks_created") + p.created,
        "tasks_updated": count("tasks_updated") + p.updated,
        "tasks_deleted": count("tasks_deleted") + p.deleted,
        "tasks_marked": count("tasks_marked") + p.marked,
        "last_event_at": crate::model::meta_time(at),
        "last_error": last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_meta_adds_to_what_was_counted() {
        let mut previous = Map::new();
        previous.insert(
            EVENTS_META.into(),
            json!({"received": 3, "applied": 2, "ignored": 1, "failed": 0, "tasks_created": 2,
                   "last_error": "an old problem"}),
        );
        let mut applied = AppliedEvents::default();
        applied.counts = EventCounts {
            received: 5,
            applied: 4,
            ignored: 0,
            failed: 1,
        };
        applied.import.progress.created = 3;
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let meta = events_meta(&previous, &applied, at);
        assert_eq!(meta["received"], 8);
        assert_eq!(meta["applied"], 6);
        assert_eq!(meta["ignored"], 1);
        assert_eq!(meta["failed"], 1);
        assert_eq!(meta["tasks_created"], 5);
        assert_eq!(meta["last_error"], "an old problem");
        assert_eq!(meta["last_event_at"], "2023-11-14 22:13:20.000000+00:00");

        applied.errors.push("looking up \"k\" failed".into());
        let meta = events_meta(&previous, &applied, at);
        assert_eq!(meta["last_error"], "looking up \"k\" failed");
    }
}

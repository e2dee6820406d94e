//! Applying object events (see [`crate::events`]) in turn with syncs, and
//! following the feeds of the storages that have one.
//!
//! One storage's events and syncs never run at once in this process: both
//! take the storage's lock. Events also wait while the storage's sync is
//! queued or running on any instance (its status says so), so a batch is
//! applied after the sync, never into the middle of it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;

use super::runner::Runner;
use crate::events::{events_meta, AppliedEvents, EventBatch, EVENTS_META};
use crate::follow::FollowPolicy;
use crate::import::{ImportJob, NoProgress};
use crate::persist::{StorageFilter, SyncGuard};
use crate::{Error, ImportOptions, Result, Settings, StorageKind};

/// Events a feed hands over at most per batch.
const FEED_BATCH: usize = 1000;

/// How long a feed that could not start waits before it is tried again;
/// also the longest wait between failed reads of a feed.
const RESTART_FAILED_FEED: Duration = Duration::from_secs(60);

/// Message ids remembered per storage, to count replays.
const REMEMBERED_MESSAGES: usize = 10_000;

/// The ids of the messages last applied to one storage, oldest first.
#[derive(Debug, Default)]
pub(super) struct RecentMessages {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentMessages {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn remember(&mut self, id: &str) {
        if self.ids.insert(id.to_string()) {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > REMEMBERED_MESSAGES {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }
}

/// What became of a batch given to
/// [`SyncService::apply_events`](crate::SyncService::apply_events).
#[derive(Debug)]
pub enum EventsApplied {
    /// Applied and committed.
    Applied(AppliedEvents),
    /// Not applied: the storage's sync is queued or running. Apply the
    /// batch again later (a push is answered 503, a feed waits).
    Busy,
}

/// A feed being followed: the settings it was made from (a change starts
/// a new one) and its task.
struct Followed {
    settings: Settings,
    task: JoinHandle<()>,
}

impl Runner {
    /// The lock one storage's syncs and event batches take in turn.
    pub(super) fn storage_lock(&self, id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.storage_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id).or_default().clone()
    }

    /// Applies `batch` to import storage `id`, unless its sync is queued or
    /// running; records the counts in its `meta.events` and the metrics.
    /// A batch that asks for it (`resync`) queues a reconciling sync.
    pub(super) async fn apply_events(&self, id: i64, batch: &EventBatch) -> Result<EventsApplied> {
        let lock = self.storage_lock(id);
        let _turn = lock.lock().await;
        let storage = self
            .storages
            .storage(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("storage {id}")))?;
        if storage.kind != StorageKind::Import {
            return Err(Error::invalid_general(format!(
                "storage {id} is an export storage; events apply to import storages"
            )));
        }
        if storage.sync.status.is_active() {
            return Ok(EventsApplied::Busy);
        }
        let source = self
            .backends
            .require(&storage.storage_type)?
            .import_storage(&storage.settings)
            .await?;
        let mut keys = BTreeSet::new();
        let mut outside = 0u64;
        let replayed = self.replayed(id, batch);
        for event in &batch.events {
            if event.message.as_ref().is_some_and(|m| replayed.contains(m)) {
                tracing::info!(
                    storage = id,
                    message = event.message.as_deref(),
                    "a replayed message was ignored"
                );
                outside += 1;
            } else if source.covers(&event.key) {
                keys.insert(event.key.clone());
            } else {
                outside += 1;
            }
        }
        for reason in &batch.ignored {
            tracing::info!(storage = id, "event ignored: {reason}");
        }
        let options = ImportOptions::from_settings(&storage.settings);
        let job = ImportJob {
            storage_id: id,
            project: storage.project,
            source: source.as_ref(),
            use_blob_urls: options.use_blob_urls,
            sink: self.tasks.as_ref(),
            config: &self.config.import,
            follow: FollowPolicy::of(&options, false),
        };
        let mut applied = job.apply_changes(keys, &NoProgress).await?;
        let counts = &mut applied.counts;
        counts.received = batch.received();
        counts.ignored += outside + batch.ignored.len() as u64;
        // Several events of one key are applied once but each counts.
        counts.applied = counts
            .received
            .saturating_sub(counts.ignored + counts.failed);
        self.metrics.events(&storage.storage_type, counts);
        tracing::info!(
            storage = id,
            received = counts.received,
            applied = counts.applied,
            ignored = counts.ignored,
            failed = counts.failed,
            created = applied.import.progress.created,
            deleted = applied.import.progress.deleted,
            "events applied"
        );
        self.record_events(id, &applied).await?;
        self.remember_messages(id, batch);
        if batch.resync {
            if let Err(err) = self.request_resync(id).await {
                tracing::warn!(storage = id, error = %err, "could not queue a reconciling sync");
            }
        }
        Ok(EventsApplied::Applied(applied))
    }

    /// The message ids of `batch` already applied to storage `id`.
    fn replayed(&self, id: i64, batch: &EventBatch) -> HashSet<String> {
        let recent = self
            .recent_messages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(recent) = recent.get(&id) else {
            return HashSet::new();
        };
        batch
            .events
            .iter()
            .filter_map(|event| event.message.as_ref())
            .filter(|message| recent.contains(message))
            .cloned()
            .collect()
    }

    fn remember_messages(&self, id: i64, batch: &EventBatch) {
        let mut recent = self
            .recent_messages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let recent = recent.entry(id).or_default();
        for message in batch.events.iter().filter_map(|e| e.message.as_deref()) {
            recent.remember(message);
        }
    }

    /// Adds the batch's counts to the storage's `meta.events`, as a
    /// compare-and-set on whatever state the storage is in now.
    async fn record_events(&self, id: i64, applied: &AppliedEvents) -> Result<()> {
        loop {
            let Some(storage) = self.storages.storage(id).await? else {
                return Ok(());
            };
            let mut state = storage.sync.clone();
            let events = events_meta(&state.meta, applied, Utc::now());
            state.meta.insert(EVENTS_META.into(), events);
            if self
                .storages
                .update_sync(id, &SyncGuard::of(&storage.sync), &state)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Queues a sync of `id` unless one is queued or running.
    async fn request_resync(&self, id: i64) -> Result<()> {
        loop {
            let Some(storage) = self.storages.storage(id).await? else {
                return Ok(());
            };
            if storage.sync.status.is_active() {
                return Ok(());
            }
            if self.queue(&storage, Utc::now(), None).await?.is_some() {
                tracing::info!(
                    storage = id,
                    "reconciling sync queued: the feed may have missed events"
                );
                self.wake.notify_one();
                return Ok(());
            }
        }
    }

    /// Follows the feed of every import storage whose backend has one
    /// (watch, queue), starting and stopping them as storages are created,
    /// changed and deleted; checked every poll interval.
    pub(super) async fn feed_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let mut followed: HashMap<i64, Followed> = HashMap::new();
        while !*shutdown.borrow() {
            if let Err(err) = self.refresh_feeds(&mut followed).await {
                tracing::error!(error = %err, "could not refresh the event feeds");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        for (_, feed) in followed {
            feed.task.abort();
        }
    }

    async fn refresh_feeds(self: &Arc<Self>, followed: &mut HashMap<i64, Followed>) -> Result<()> {
        let filter = StorageFilter {
            kind: Some(StorageKind::Import),
            ..StorageFilter::default()
        };
        let storages = self.storages.storages(filter).await?;
        let mut current = HashMap::new();
        for storage in storages {
            current.insert(storage.id, storage);
        }
        followed.retain(|id, feed| {
            let same = current
                .get(id)
                .is_some_and(|s| s.settings == feed.settings && !feed.task.is_finished());
            if !same {
                feed.task.abort();
            }
            same
        });
        for (id, storage) in current {
            if followed.contains_key(&id) {
                continue;
            }
            let Some(backend) = self.backends.get(&storage.storage_type) else {
                continue;
            };
            let task = match backend.event_feed(&storage.settings).await {
                Ok(Some(feed)) => {
                    tracing::info!(storage = id, "following the storage's events");
                    let runner = self.clone();
                    tokio::spawn(async move { runner.follow_feed(id, feed).await })
                }
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(storage = id, error = %err, "could not start the storage's event feed; trying again in {} s", RESTART_FAILED_FEED.as_secs());
                    // Stands for the feed until it is tried again.
                    tokio::spawn(tokio::time::sleep(RESTART_FAILED_FEED))
                }
            };
            followed.insert(
                id,
                Followed {
                    settings: storage.settings,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Takes batches from `feed` and applies them, each acknowledged only
    /// once committed; a batch that waits (a sync runs) or fails for a
    /// temporary reason is kept alive and tried again.
    async fn follow_feed(self: Arc<Self>, id: i64, mut feed: Box<dyn crate::events::EventFeed>) {
        let retry = self.config.poll_interval.max(Duration::from_millis(100));
        let mut read_again = retry;
        loop {
            let batch = match feed.next_batch(FEED_BATCH).await {
                Ok(batch) => {
                    read_again = retry;
                    batch
                }
                Err(err) => {
                    tracing::warn!(storage = id, error = %err, "could not read the storage's events; trying again in {} s", read_again.as_secs_f64());
                    tokio::time::sleep(read_again).await;
                    read_again = (read_again * 2).min(RESTART_FAILED_FEED);
                    continue;
                }
            };
            if batch.received() == 0 && !batch.resync {
                continue;
            }
            loop {
                match self.apply_kept_alive(id, &batch, feed.as_mut()).await {
                    Ok(EventsApplied::Applied(_)) => break,
                    Ok(EventsApplied::Busy) => {}
                    Err(Error::NotFound { .. }) => return,
                    Err(err) => {
                        tracing::warn!(storage = id, error = %err, "events not applied; trying again");
                    }
                }
                keep_alive(id, &batch, feed.as_mut()).await;
                tokio::time::sleep(retry).await;
            }
            if let Err(err) = feed.acknowledge(batch).await {
                tracing::warn!(storage = id, error = %err, "could not acknowledge applied events (they will be applied again, which changes nothing)");
            }
        }
    }

    /// [`Runner::apply_events`], renewing the batch's messages as the feed
    /// asks while it runs (a Tasks-mode batch may read for minutes).
    async fn apply_kept_alive(
        &self,
        id: i64,
        batch: &EventBatch,
        feed: &mut dyn crate::events::EventFeed,
    ) -> Result<EventsApplied> {
        let every = feed.keep_alive_every();
        let applying = self.apply_events(id, batch);
        tokio::pin!(applying);
        loop {
            tokio::select! {
                result = &mut applying => return result,
                () = tokio::time::sleep(every) => keep_alive(id, batch, feed).await,
            }
        }
    }
}

async fn keep_alive(id: i64, batch: &EventBatch, feed: &mut dyn crate::events::EventFeed) {
    if let Err(err) = feed.keep_alive(batch).await {
        tracing::warn!(storage = id, error = %err, "could not keep the events' messages");
    }
}

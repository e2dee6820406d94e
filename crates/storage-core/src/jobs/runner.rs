//! The machinery that runs jobs: workers that claim queued storages and
//! run them, a heartbeat per running job that writes its progress and
//! renews its lease, and a watchdog that recovers jobs whose worker died
//! and jobs that waited too long in the queue. Which state a step writes is
//! decided in [`super::state`]; every write is a compare-and-set on the
//! storage row (status and job id), so two requests, two workers or two
//! server instances never run one storage's sync twice.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::schedule;
use super::state::{self, error_report, Ending};
use super::RunnerConfig;
use crate::export::export_project;
use crate::follow::FollowPolicy;
use crate::import::{ImportJob, ImportProgress, Progress, ProgressSink};
use crate::jobs::state::confirmed_deletions;
use crate::metrics::{export_delta, import_delta, SyncMetrics};
use crate::persist::{AnnotationSource, StorageFilter, StorageRepository, SyncGuard, TaskSink};
use crate::{Backends, Error, ImportOptions, Result, Storage, StorageKind, SyncState, SyncStatus};

/// What the service and its workers share (built by
/// [`super::SyncService::new`]).
#[derive(Debug)]
pub(super) struct Runner {
    pub(super) storages: Arc<dyn StorageRepository>,
    pub(super) tasks: Arc<dyn TaskSink>,
    pub(super) annotations: Arc<dyn AnnotationSource>,
    pub(super) backends: Backends,
    pub(super) config: RunnerConfig,
    pub(super) wake: Notify,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) running: Mutex<HashSet<i64>>,
    /// Held while claiming, so the workers of this process never both see
    /// a tenant below its cap and exceed it together.
    pub(super) claiming: tokio::sync::Mutex<()>,
    pub(super) workers: Mutex<Vec<JoinHandle<()>>>,
    pub(super) metrics: Arc<SyncMetrics>,
    /// The outbox of on-save exports, when the host has one.
    pub(super) exports: std::sync::OnceLock<Arc<dyn crate::persist::ExportOutbox>>,
    /// The shards of split syncs, when the host keeps them.
    pub(super) shards: std::sync::OnceLock<Arc<dyn crate::shards::ShardQueue>>,
    /// Per storage, the lock its syncs and event batches take in turn.
    pub(super) storage_locks: Mutex<std::collections::HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Per storage, the ids of the messages last applied (replays are
    /// counted as ignored).
    pub(super) recent_messages:
        Mutex<std::collections::HashMap<i64, super::events::RecentMessages>>,
}

impl Runner {
    /// Starts the workers and the watchdog.
    pub(super) fn start(self: &Arc<Self>) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for n in 0..self.config.workers.max(1) {
            let runner = self.clone();
            workers.push(tokio::spawn(async move { runner.worker_loop(n).await }));
        }
        let runner = self.clone();
        workers.push(tokio::spawn(async move { runner.watchdog_loop().await }));
        if self.export_outbox().is_some() {
            let runner = self.clone();
            workers.push(tokio::spawn(async move { runner.export_loop().await }));
        }
        let runner = self.clone();
        workers.push(tokio::spawn(async move { runner.feed_loop().await }));
    }

    /// Stops taking jobs and waits for the workers to exit (running jobs
    /// stop at the end of their current batch and are queued again).
    pub(super) async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        self.wake.notify_waiters();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            if let Err(err) = worker.await {
                tracing::error!(error = %err, "sync worker ended abnormally");
            }
        }
    }
}

impl Runner {
    pub(super) fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn worker_loop(self: Arc<Self>, worker: usize) {
        let mut shutdown = self.shutdown.subscribe();
        while !self.stopping() {
            match self.claim().await {
                Ok(Some(storage)) => self.run(storage).await,
                // An idle worker helps with the shards of running syncs.
                Ok(None) if self.run_any_shard().await => {}
                Ok(None) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(err) => {
                    tracing::error!(worker, error = %err, "could not claim a sync job");
                    tokio::time::sleep(self.config.poll_interval).await;
                }
            }
        }
    }

    async fn watchdog_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        while !self.stopping() {
            if let Err(err) = self.recover(false).await {
                tracing::error!(error = %err, "sync watchdog failed");
            }
            if let Err(err) = self.queue_due_syncs().await {
                tracing::error!(error = %err, "could not queue the scheduled syncs");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Queues the storages whose `sync_interval` has come round (see
    /// [`super::schedule`]). Each is a compare-and-set from the state read,
    /// so of several processes one queues it.
    async fn queue_due_syncs(&self) -> Result<()> {
        let now = Utc::now();
        let filter = StorageFilter {
            kind: Some(StorageKind::Import),
            ..StorageFilter::default()
        };
        let mut queued_any = false;
        for storage in self.storages.storages(filter).await? {
            if !schedule::due(&storage, now) {
                continue;
            }
            if let Some(queued) = self.queue(&storage, now, Some(state::SCHEDULED)).await? {
                tracing::info!(
                    storage = storage.id,
                    job = queued.last_sync_job.as_deref(),
                    "scheduled sync queued"
                );
                queued_any = true;
            }
        }
        if queued_any {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    /// Queues a new job of `storage` from the state it was read in, with
    /// `flag`, if any, set in the job's `meta` ([`state::SCHEDULED`],
    /// [`state::CONFIRM_DELETIONS`]):
    /// a compare-and-set, so of several callers at once one queues it.
    /// Returns the state written, or `None` when the row had changed.
    pub(super) async fn queue(
        &self,
        storage: &Storage,
        now: DateTime<Utc>,
        flag: Option<&str>,
    ) -> Result<Option<SyncState>> {
        storage.sync.status.check_move(SyncStatus::Queued)?;
        let mut queued = state::queued(&storage.sync, now, self.config.queue_timeout);
        if let Some(flag) = flag {
            queued.meta.insert(flag.into(), Value::Bool(true));
        }
        let won = self
            .storages
            .update_sync(storage.id, &SyncGuard::of(&storage.sync), &queued)
            .await?;
        Ok(won.then_some(queued))
    }

    /// Moves one queued storage to `in_progress` under this worker's lease.
    /// The repository decides who wins (row locks or compare-and-set), so
    /// workers of several processes may claim at once.
    async fn claim(&self) -> Result<Option<Storage>> {
        // A job still winding down here after losing its lease may be queued
        // again; another process may take it, this one waits until it ends.
        let _claiming = self.claiming.lock().await;
        let skip: Vec<i64> = self.running().iter().copied().collect();
        let now = Utc::now();
        let claimed = self
            .storages
            .claim_queued(
                &skip,
                now,
                now + self.config.lease,
                Some(self.config.tenant_cap()),
            )
            .await?;
        if let Some(storage) = &claimed {
            self.running().insert(storage.id);
        }
        Ok(claimed)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self: &Arc<Self>, storage: Storage) {
        use tracing::Instrument;
        // Every line logged while the job runs, including those of the
        // tasks it spawns (`in_current_span`), carries the storage and job.
        let span = tracing::info_span!(
            "sync",
            storage = storage.id,
            job = storage.sync.last_sync_job.as_deref(),
            kind = storage.kind.as_str(),
            storage_type = storage.storage_type.as_str()
        );
        let (kind, storage_type) = (storage.kind, storage.storage_type.clone());
        self.metrics.running(kind, &storage_type, 1);
        // An event batch being applied finishes first; the counts it wrote
        // are carried by the job's state.
        let lock = self.storage_lock(storage.id);
        let _turn = lock.lock().await;
        let storage = self.with_latest_events(storage).await;
        self.run_job(storage).instrument(span).await;
        self.metrics.running(kind, &storage_type, -1);
    }

    /// `storage` as claimed, with the event counters as stored now (a batch
    /// applied between the claim and the run wrote them).
    async fn with_latest_events(&self, mut storage: Storage) -> Storage {
        if let Ok(Some(latest)) = self.storages.storage(storage.id).await {
            if let Some(events) = latest.sync.meta.get(crate::events::EVENTS_META) {
                storage
                    .sync
                    .meta
                    .insert(crate::events::EVENTS_META.into(), events.clone());
            }
        }
        storage
    }

    async fn run_job(self: &Arc<Self>, storage: Storage) {
        let storage = self.recounted(storage).await;
        let id = storage.id;
        let job = storage.sync.last_sync_job.clone();
        tracing::info!("sync started");
        self.metrics
            .sync_started(storage.kind, &storage.storage_type);
        let started = Instant::now();
        let tracker = Arc::new(Tracker::new(
            self.shutdown.subscribe(),
            Some((self.metrics.clone(), storage.storage_type.clone())),
        ));
        let heartbeat = tokio::spawn(tracing::Instrument::in_current_span(
            self.clone()
                .heartbeat(storage.clone(), tracker.clone(), started),
        ));
        // The engine also stops itself between batches (`Tracker::report`);
        // these stop it wherever it waits, e.g. on an endpoint that answers
        // listing pages without objects forever.
        let result = tokio::select! {
            result = self.execute(&storage, tracker.as_ref()) => result,
            () = tracker.stop.notified() => Err(lease_lost()),
            () = tokio::time::sleep(self.config.max_duration) => {
                Err(too_long(self.config.max_duration))
            }
        };
        heartbeat.abort();
        let _ = heartbeat.await;

        let lost = tracker.is_lost();
        let stopping = self.stopping();
        let last = tracker
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ending = match result {
            _ if lost => {
                if let Ok(None) = self.storages.storage(id).await {
                    tracing::info!("storage deleted while syncing; its job stopped");
                } else {
                    tracing::warn!("sync lost its lease to another worker; its result is dropped");
                    self.metrics.lease_lost(storage.kind, &storage.storage_type);
                }
                self.running().remove(&id);
                return;
            }
            Err(_) if stopping => {
                // Interrupted at a batch boundary by shutdown: resume later.
                tracing::info!("sync interrupted by shutdown; it will resume at the next start");
                self.metrics
                    .interrupted(storage.kind, &storage.storage_type);
                Ending::Interrupted {
                    queue_timeout: self.config.queue_timeout,
                }
            }
            Err(err) => {
                let traceback = self.redacted(&storage, &error_report(&err));
                tracing::warn!(error = %traceback, "sync failed");
                Ending::Failed { traceback }
            }
            Ok(ending) => {
                match &ending {
                    Ending::Imported(outcome) => {
                        tracker.account(&Progress::Import(outcome.progress.clone()))
                    }
                    Ending::Exported(outcome) => {
                        tracker.account(&Progress::Export(outcome.progress.clone()))
                    }
                    Ending::Interrupted { .. } | Ending::Failed { .. } => {}
                }
                ending
            }
        };
        let state = state::ended(
            &storage.sync,
            ending,
            last.as_ref(),
            Utc::now(),
            started.elapsed(),
        );
        match self
            .storages
            .update_sync(
                id,
                &SyncGuard {
                    status: SyncStatus::InProgress,
                    job,
                },
                &state,
            )
            .await
        {
            Ok(true) => {
                if storage.kind == StorageKind::Export && state.status.is_finished() {
                    self.after_export_sync(&storage, &state).await;
                }
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(status = %state.status, count = state.last_sync_count, seconds, "sync finished");
                if state.status.is_finished() {
                    self.metrics.sync_finished(
                        storage.kind,
                        &storage.storage_type,
                        state.status,
                        Some(seconds),
                    );
                }
            }
            Ok(false) => {
                tracing::warn!("storage changed or was deleted while syncing; result dropped")
            }
            Err(err) => tracing::error!(error = %err, "could not save the sync result"),
        }
        self.running().remove(&id);
    }

    /// Runs the import or export; an outcome is `Imported` or `Exported`.
    async fn execute(&self, storage: &Storage, tracker: &Tracker) -> Result<Ending> {
        let backend = self.backends.require(&storage.storage_type)?;
        match storage.kind {
            StorageKind::Import => {
                let source = backend.import_storage(&storage.settings).await?;
                let options = ImportOptions::from_settings(&storage.settings);
                if let Some(outcome) = self
                    .import_sharded(storage, source.as_ref(), &options, tracker)
                    .await?
                {
                    return Ok(Ending::Imported(outcome));
                }
                ImportJob {
                    storage_id: storage.id,
                    project: storage.project,
                    source: source.as_ref(),
                    use_blob_urls: options.use_blob_urls,
                    sink: self.tasks.as_ref(),
                    config: &self.config.import,
                    follow: FollowPolicy::of(&options, confirmed_deletions(&storage.sync)),
                }
                .run(tracker)
                .await
                .map(Ending::Imported)
            }
            StorageKind::Export => {
                let target = backend.export_storage(&storage.settings).await?;
                export_project(
                    storage.project,
                    storage.id,
                    target.as_ref(),
                    self.annotations.as_ref(),
                    &self.config.export,
                    tracker,
                )
                .await
                .map(Ending::Exported)
            }
        }
    }

    /// A resumed import job with the count of tasks its interrupted
    /// attempts created read from their links (see
    /// [`TaskSink::linked_since`]), so that its `last_sync_count` and
    /// `tasks_existed` come out exact.
    async fn recounted(&self, mut storage: Storage) -> Storage {
        let resumed = storage.kind == StorageKind::Import && storage.sync.last_sync_count.is_some();
        if let (true, Some(queued)) = (resumed, queued_at(&storage.sync)) {
            match self.tasks.linked_since(storage.id, queued).await {
                Ok(Some(created)) => {
                    storage.sync.last_sync_count = Some(i64::try_from(created).unwrap_or(i64::MAX))
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(
                    error = %err,
                    "could not count the tasks of the interrupted attempts; the job's counts may be off"
                ),
            }
        }
        storage
    }

    /// Writes the latest progress and renews the lease until aborted.
    async fn heartbeat(self: Arc<Self>, storage: Storage, tracker: Arc<Tracker>, started: Instant) {
        let guard = SyncGuard::of(&storage.sync);
        let mut state = storage.sync.clone();
        loop {
            tokio::time::sleep(self.config.progress_interval).await;
            let now = Utc::now();
            let latest = tracker
                .latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let latest = latest.map(|p| state::resumed_totals(p, &storage.sync));
            state = state::pinged(
                state,
                latest.as_ref(),
                now,
                started.elapsed(),
                self.config.lease,
            );
            match self.storages.update_sync(storage.id, &guard, &state).await {
                Ok(true) => {}
                Ok(false) => {
                    // Deleted, or taken over after an expired lease: the
                    // job stops wherever it is.
                    tracker.lose();
                    return;
                }
                Err(err) => tracing::warn!(error = %err, "could not write sync progress"),
            }
        }
    }

    /// Fails or resumes jobs whose worker died, and fails jobs that waited
    /// too long in the queue (see [`state::recovered`]).
    pub(super) async fn recover(&self, orphans_now: bool) -> Result<()> {
        if let (true, Some(outbox)) = (orphans_now, self.export_outbox()) {
            outbox.release_export_claims().await?;
        }
        let now = Utc::now();
        let active = self
            .storages
            .storages_with_status(&[SyncStatus::Queued, SyncStatus::InProgress])
            .await?;
        for storage in active {
            if self.running().contains(&storage.id) {
                continue;
            }
            let Some(state) = state::recovered(
                &storage.sync,
                now,
                orphans_now,
                self.config.max_resumes,
                self.config.queue_timeout,
            ) else {
                continue;
            };
            let job = storage.sync.last_sync_job.as_deref();
            let resumes = state
                .meta
                .get("resumes")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            match (storage.sync.status, state.status) {
                (_, SyncStatus::Queued) => tracing::warn!(
                    storage = storage.id,
                    job,
                    resumes,
                    "resuming a sync whose worker stopped"
                ),
                (SyncStatus::InProgress, _) => tracing::warn!(
                    storage = storage.id,
                    job,
                    "failing a sync whose worker stopped repeatedly"
                ),
                _ => tracing::warn!(
                    storage = storage.id,
                    job,
                    "failing a sync that was never started"
                ),
            }
            storage.sync.status.check_move(state.status)?;
            if self
                .storages
                .update_sync(storage.id, &SyncGuard::of(&storage.sync), &state)
                .await?
            {
                if state.status == SyncStatus::Queued {
                    self.metrics.resumed(storage.kind, &storage.storage_type);
                    self.wake.notify_one();
                } else {
                    self.metrics.sync_finished(
                        storage.kind,
                        &storage.storage_type,
                        state.status,
                        None,
                    );
                }
            }
        }
        Ok(())
    }

    /// `text` without the storage's secrets (a provider may echo a key id in
    /// its own words).
    pub(super) fn redacted(&self, storage: &Storage, text: &str) -> String {
        let secrets = self
            .backends
            .get(&storage.storage_type)
            .map(|backend| {
                storage
                    .settings
                    .secret_values(&backend.fields(storage.kind))
            })
            .unwrap_or_default();
        crate::redact::without_secrets(text, secrets.iter().map(String::as_str))
    }
}

/// When the job of `state` was queued (its `meta.time_queued`).
pub(super) fn queued_at(state: &SyncState) -> Option<DateTime<Utc>> {
    state
        .meta
        .get("time_queued")
        .and_then(Value::as_str)
        .and_then(|at| DateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f%:z").ok())
        .map(|at| at.to_utc())
}

/// Shared between a running engine and its heartbeat.
pub(super) struct Tracker {
    latest: Mutex<Option<Progress>>,
    lost: AtomicBool,
    /// Notified when `lost` is set.
    pub(super) stop: Notify,
    shutdown: watch::Receiver<bool>,
    /// The progress already added to the metrics.
    counted: Mutex<Option<Progress>>,
    /// The metrics that count the progress, and the storage type to count
    /// it under (none for the shards of a split job: the job counts their
    /// sum).
    metrics: Option<(Arc<SyncMetrics>, String)>,
}

impl Tracker {
    pub(super) fn new(
        shutdown: watch::Receiver<bool>,
        metrics: Option<(Arc<SyncMetrics>, String)>,
    ) -> Self {
        Self {
            latest: Mutex::new(None),
            lost: AtomicBool::new(false),
            stop: Notify::new(),
            shutdown,
            counted: Mutex::new(None),
            metrics,
        }
    }

    /// Marks the run as having lost its lease, and stops it.
    pub(super) fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }

    /// Whether the run lost its lease.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The import progress last reported.
    pub(super) fn latest_import(&self) -> ImportProgress {
        match &*self.latest.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Progress::Import(progress)) => progress.clone(),
            _ => ImportProgress::default(),
        }
    }

    /// Adds to the metrics what this run did since the last call, so the
    /// counters move while a long sync runs and end exact.
    fn account(&self, progress: &Progress) {
        let Some((metrics, storage_type)) = &self.metrics else {
            return;
        };
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        match (progress, counted.as_ref()) {
            (Progress::Import(now), before) => {
                let before = match before {
                    Some(Progress::Import(p)) => p.clone(),
                    _ => ImportProgress::default(),
                };
                metrics.import_progress(storage_type, &import_delta(now, &before));
            }
            (Progress::Export(now), before) => {
                let before = match before {
                    Some(Progress::Export(p)) => p.clone(),
                    _ => Default::default(),
                };
                metrics.export_progress(storage_type, &export_delta(now, &before));
            }
        }
        *counted = Some(progress.clone());
    }
}

impl ProgressSink for Tracker {
    fn report(&self, progress: &Progress) -> Result<()> {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress.clone());
        self.account(progress);
        if self.lost.load(Ordering::SeqCst) {
            return Err(lease_lost());
        }
        if *self.shutdown.borrow() {
            return Err(Error::NotSupported {
                what: "sync interrupted by shutdown".into(),
            });
        }
        Ok(())
    }
}

pub(super) fn lease_lost() -> Error {
    Error::PermissionDenied {
        reason: "the sync job lost its lease to another worker, or its storage was deleted".into(),
    }
}

fn too_long(max_duration: std::time::Duration) -> Error {
    Error::backend(
        "running the sync",
        format!(
            "it ran longer than the maximum job duration of {} s and was stopped (the \
             server's --sync-max-duration-seconds)",
            max_duration.as_secs_f64()
        ),
    )
}

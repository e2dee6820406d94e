//! The job runner: `queued` storages are claimed by background workers,
//! run with a renewed lease, and recovered when their worker died.
//!
//! Every state change is a compare-and-set on the storage row (status and
//! job id), so two requests, two workers or two server instances never run
//! one storage's sync twice.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::export::{export_project, ExportConfig, ExportOutcome};
use crate::import::{
    ImportConfig, ImportJob, ImportOutcome, ImportProgress, Progress, ProgressSink,
};
use crate::metrics::{export_delta, import_delta, SyncMetrics};
use crate::model::meta_time;
use crate::persist::{AnnotationSource, StorageRepository, SyncGuard, TaskSink};
use crate::{
    Backends, Error, ExportStorage, ImportOptions, ImportStorage, Result, Storage, StorageKind,
    SyncState, SyncStatus,
};

/// Tuning of the job runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Syncs that run at once.
    pub workers: usize,
    /// How long a worker holds a running job without renewing it.
    pub lease: Duration,
    /// How often progress is written (and the lease renewed).
    pub progress_interval: Duration,
    /// How long a job may wait in `queued` before it is failed.
    pub queue_timeout: Duration,
    /// How often expired leases and stale queues are looked for, and how
    /// often idle workers look for queued jobs queued by another instance.
    pub poll_interval: Duration,
    /// How many times a job whose worker died is resumed before it is
    /// failed.
    pub max_resumes: u64,
    /// Import tuning.
    pub import: ImportConfig,
    /// Export tuning.
    pub export: ExportConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            lease: Duration::from_secs(30),
            progress_interval: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
            max_resumes: 3,
            import: ImportConfig::default(),
            export: ExportConfig::default(),
        }
    }
}

/// Starts, runs and recovers storage syncs; also exports single
/// annotations when they are saved or deleted.
#[derive(Debug, Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storages: Arc<dyn StorageRepository>,
    tasks: Arc<dyn TaskSink>,
    annotations: Arc<dyn AnnotationSource>,
    backends: Backends,
    config: RunnerConfig,
    wake: Notify,
    shutdown: watch::Sender<bool>,
    running: Mutex<HashSet<i64>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<SyncMetrics>,
}

impl SyncService {
    /// A runner over the given persistence and backends. Call
    /// [`SyncService::start`] to run jobs.
    pub fn new(
        storages: Arc<dyn StorageRepository>,
        tasks: Arc<dyn TaskSink>,
        annotations: Arc<dyn AnnotationSource>,
        backends: Backends,
        config: RunnerConfig,
    ) -> Self {
        let metrics = Arc::new(SyncMetrics::for_storage_types(
            backends.iter().map(|b| b.name()),
        ));
        Self {
            inner: Arc::new(Inner {
                storages,
                tasks,
                annotations,
                backends,
                config,
                wake: Notify::new(),
                shutdown: watch::channel(false).0,
                running: Mutex::new(HashSet::new()),
                workers: Mutex::new(Vec::new()),
                metrics,
            }),
        }
    }

    /// The backends this service builds storages with.
    pub fn backends(&self) -> &Backends {
        &self.inner.backends
    }

    /// The storage repository.
    pub fn storages(&self) -> &Arc<dyn StorageRepository> {
        &self.inner.storages
    }

    /// The runner's Prometheus metrics.
    pub fn metrics(&self) -> &SyncMetrics {
        &self.inner.metrics
    }

    /// Reads the queued and in-progress storages of every instance from the
    /// repository into the metrics' gauges; call before encoding them.
    pub async fn refresh_metrics(&self) -> Result<()> {
        let active = self
            .inner
            .storages
            .storages_with_status(&[SyncStatus::Queued, SyncStatus::InProgress])
            .await?;
        self.inner.metrics.set_active(&active);
        Ok(())
    }

    /// Starts the workers and the watchdog.
    pub fn start(&self) {
        let mut workers = self.inner.workers.lock().unwrap_or_else(|e| e.into_inner());
        for n in 0..self.inner.config.workers.max(1) {
            let inner = self.inner.clone();
            workers.push(tokio::spawn(async move { inner.worker_loop(n).await }));
        }
        let inner = self.inner.clone();
        workers.push(tokio::spawn(async move { inner.watchdog_loop().await }));
    }

    /// Stops taking jobs, lets running jobs reach the end of their current
    /// batch, puts them back in `queued` (they resume at the next start) and
    /// waits for the workers to exit.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.wake.notify_waiters();
        let workers =
            std::mem::take(&mut *self.inner.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            if let Err(err) = worker.await {
                tracing::error!(error = %err, "sync worker ended abnormally");
            }
        }
    }

    /// Queues a sync of storage `id` and returns the storage as it is now.
    ///
    /// When a sync of that storage is already queued or running, nothing is
    /// queued and the storage is returned unchanged: concurrent requests
    /// start one job.
    pub async fn request_sync(&self, id: i64) -> Result<Storage> {
        loop {
            let mut storage = self.inner.load(id).await?;
            if storage.sync.status.is_active() {
                return Ok(storage);
            }
            let now = Utc::now();
            let queued = queued_state(&storage.sync, now, self.inner.config.queue_timeout);
            storage.sync.status.check_move(SyncStatus::Queued)?;
            if self
                .inner
                .storages
                .update_sync(id, &SyncGuard::of(&storage.sync), &queued)
                .await?
            {
                tracing::info!(
                    storage = id,
                    job = queued.last_sync_job.as_deref(),
                    "sync queued"
                );
                storage.sync = queued;
                self.inner.wake.notify_one();
                return Ok(storage);
            }
        }
    }

    /// Fails or resumes jobs whose worker died, and fails jobs that waited
    /// too long in the queue. With `orphans_now`, every `in_progress` job
    /// not run by this process counts as dead (single-instance start-up).
    pub async fn recover(&self, orphans_now: bool) -> Result<()> {
        self.inner.recover(orphans_now).await
    }

    /// Writes annotation `id` to every export storage of `project`. Returns
    /// how many writes failed (each is logged with its storage).
    pub async fn annotation_saved(&self, project: i64, id: i64) -> Result<usize> {
        let Some(annotation) = self.inner.annotations.annotation_for_export(id).await? else {
            return Err(Error::not_found(format!("annotation {id}")));
        };
        let mut failures = 0;
        for (storage, target) in self.inner.export_targets(project).await? {
            let result = match target {
                Ok(target) => crate::export::export_annotation(target.as_ref(), &annotation).await,
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                failures += 1;
                tracing::warn!(storage = storage, annotation = id, error = %err, "annotation export failed");
            }
        }
        Ok(failures)
    }

    /// Deletes the object of annotation `id` from every export storage of
    /// `project` that has `can_delete_objects`. Returns how many deletions
    /// failed.
    pub async fn annotation_deleted(&self, project: i64, id: i64) -> Result<usize> {
        let mut failures = 0;
        for (storage, target) in self.inner.export_targets(project).await? {
            let result = match target {
                Ok(target) if target.can_delete_objects() => {
                    crate::export::delete_annotation(target.as_ref(), id).await
                }
                Ok(_) => Ok(()),
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                failures += 1;
                tracing::warn!(storage = storage, annotation = id, error = %err, "annotation delete failed");
            }
        }
        Ok(failures)
    }

    /// Builds the import source of a stored storage.
    pub async fn import_storage(&self, storage: &Storage) -> Result<Arc<dyn ImportStorage>> {
        self.inner
            .backends
            .require(&storage.storage_type)?
            .import_storage(&storage.settings)
            .await
    }

    /// Builds the export target of a stored storage.
    pub async fn export_storage(&self, storage: &Storage) -> Result<Arc<dyn ExportStorage>> {
        self.inner
            .backends
            .require(&storage.storage_type)?
            .export_storage(&storage.settings)
            .await
    }
}

type ExportTarget = (i64, Result<Arc<dyn ExportStorage>>);

impl Inner {
    async fn load(&self, id: i64) -> Result<Storage> {
        self.storages
            .storage(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("storage {id}")))
    }

    async fn export_targets(&self, project: i64) -> Result<Vec<ExportTarget>> {
        let storages = self
            .storages
            .storages(crate::persist::StorageFilter {
                project: Some(project),
                kind: Some(StorageKind::Export),
                storage_type: None,
            })
            .await?;
        let mut targets = Vec::with_capacity(storages.len());
        for storage in storages {
            let target = match self.backends.require(&storage.storage_type) {
                Ok(backend) => backend.export_storage(&storage.settings).await,
                Err(err) => Err(err),
            };
            targets.push((storage.id, target));
        }
        Ok(targets)
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn worker_loop(self: Arc<Self>, worker: usize) {
        let mut shutdown = self.shutdown.subscribe();
        while !self.stopping() {
            match self.claim().await {
                Ok(Some(storage)) => self.run(storage).await,
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
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Moves one queued storage to `in_progress` under this worker's lease.
    /// The repository decides who wins (row locks or compare-and-set), so
    /// workers of several processes may claim at once.
    async fn claim(&self) -> Result<Option<Storage>> {
        // A job still winding down here after losing its lease may be queued
        // again; another process may take it, this one waits until it ends.
        let skip: Vec<i64> = self.running().iter().copied().collect();
        let now = Utc::now();
        let claimed = self
            .storages
            .claim_queued(&skip, now, now + self.config.lease)
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
        self.run_job(storage).instrument(span).await;
        self.metrics.running(kind, &storage_type, -1);
    }

    async fn run_job(self: &Arc<Self>, storage: Storage) {
        let id = storage.id;
        let job = storage.sync.last_sync_job.clone();
        tracing::info!("sync started");
        self.metrics
            .sync_started(storage.kind, &storage.storage_type);
        let started = Instant::now();
        let tracker = Arc::new(Tracker {
            latest: Mutex::new(None),
            lost: AtomicBool::new(false),
            shutdown: self.shutdown.subscribe(),
            counted: Mutex::new(None),
            metrics: self.metrics.clone(),
            storage_type: storage.storage_type.clone(),
        });
        let heartbeat = tokio::spawn(tracing::Instrument::in_current_span(
            self.clone()
                .heartbeat(storage.clone(), tracker.clone(), started),
        ));
        let result = self.execute(&storage, tracker.as_ref()).await;
        heartbeat.abort();
        let _ = heartbeat.await;

        let lost = tracker.lost.load(Ordering::SeqCst);
        let stopping = self.stopping();
        let last = tracker
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let last = last.map(|p| resumed_totals(p, &storage.sync));
        let now = Utc::now();
        let mut state = storage.sync.clone();
        state.lease_until = None;
        state
            .meta
            .insert("duration".into(), json!(started.elapsed().as_secs_f64()));
        match result {
            _ if lost => {
                tracing::warn!("sync lost its lease to another worker; its result is dropped");
                self.metrics.lease_lost(storage.kind, &storage.storage_type);
                self.running().remove(&id);
                return;
            }
            Err(_) if stopping => {
                // Interrupted at a batch boundary by shutdown: resume later.
                state.status = SyncStatus::Queued;
                state.lease_until = Some(now + self.config.queue_timeout);
                apply_progress(&mut state, last.as_ref());
                tracing::info!("sync interrupted by shutdown; it will resume at the next start");
                self.metrics
                    .interrupted(storage.kind, &storage.storage_type);
            }
            Err(err) => {
                state.status = SyncStatus::Failed;
                state.traceback = Some(error_report(&err));
                state.meta.insert("time_failure".into(), meta_time(now));
                apply_progress(&mut state, last.as_ref());
                tracing::warn!(error = %err, "sync failed");
            }
            Ok(Finished::Import(mut outcome)) => {
                tracker.account(&Progress::Import(outcome.progress.clone()));
                outcome.progress = resumed_import(outcome.progress, &storage.sync);
                finish_import(&mut state, &outcome, now)
            }
            Ok(Finished::Export(outcome)) => {
                tracker.account(&Progress::Export(outcome.progress.clone()));
                finish_export(&mut state, &outcome, now)
            }
        }
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

    async fn execute(&self, storage: &Storage, tracker: &Tracker) -> Result<Finished> {
        let backend = self.backends.require(&storage.storage_type)?;
        match storage.kind {
            StorageKind::Import => {
                let source = backend.import_storage(&storage.settings).await?;
                let options = ImportOptions::from_settings(&storage.settings);
                ImportJob {
                    storage_id: storage.id,
                    project: storage.project,
                    source: source.as_ref(),
                    use_blob_urls: options.use_blob_urls,
                    sink: self.tasks.as_ref(),
                    config: &self.config.import,
                }
                .run(tracker)
                .await
                .map(Finished::Import)
            }
            StorageKind::Export => {
                let target = backend.export_storage(&storage.settings).await?;
                export_project(
                    storage.project,
                    target.as_ref(),
                    self.annotations.as_ref(),
                    &self.config.export,
                    tracker,
                )
                .await
                .map(Finished::Export)
            }
        }
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
            let latest = latest.map(|p| resumed_totals(p, &storage.sync));
            apply_progress(&mut state, latest.as_ref());
            state.meta.insert("time_last_ping".into(), meta_time(now));
            state
                .meta
                .insert("duration".into(), json!(started.elapsed().as_secs_f64()));
            state.lease_until = Some(now + self.config.lease);
            match self.storages.update_sync(storage.id, &guard, &state).await {
                Ok(true) => {}
                Ok(false) => {
                    tracker.lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(err) => tracing::warn!(error = %err, "could not write sync progress"),
            }
        }
    }

    async fn recover(&self, orphans_now: bool) -> Result<()> {
        let now = Utc::now();
        let active = self
            .storages
            .storages_with_status(&[SyncStatus::Queued, SyncStatus::InProgress])
            .await?;
        for storage in active {
            if self.running().contains(&storage.id) {
                continue;
            }
            let expired = storage.sync.lease_until.is_none_or(|until| until < now);
            let mut state = storage.sync.clone();
            match storage.sync.status {
                SyncStatus::InProgress if expired || orphans_now => {
                    let resumes = state
                        .meta
                        .get("resumes")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if resumes < self.config.max_resumes {
                        state.status = SyncStatus::Queued;
                        state.meta.insert("resumes".into(), json!(resumes + 1));
                        state.lease_until = Some(now + self.config.queue_timeout);
                        tracing::warn!(
                            storage = storage.id,
                            job = storage.sync.last_sync_job.as_deref(),
                            resumes = resumes + 1,
                            "resuming a sync whose worker stopped"
                        );
                    } else {
                        state.status = SyncStatus::Failed;
                        state.lease_until = None;
                        state.meta.insert("time_failure".into(), meta_time(now));
                        state.traceback = Some(format!(
                            "The sync job stopped without finishing: its worker stopped renewing its lease \
                             (the server process was probably killed or restarted). It was resumed {resumes} \
                             times and stopped again each time; start a new sync to try again."
                        ));
                        tracing::warn!(
                            storage = storage.id,
                            job = storage.sync.last_sync_job.as_deref(),
                            "failing a sync whose worker stopped repeatedly"
                        );
                    }
                }
                SyncStatus::Queued if expired => {
                    state.status = SyncStatus::Failed;
                    state.lease_until = None;
                    state.meta.insert("time_failure".into(), meta_time(now));
                    state.traceback = Some(format!(
                        "The sync job was not started within {} s of being queued (no worker took it); \
                         start a new sync to try again.",
                        self.config.queue_timeout.as_secs()
                    ));
                    tracing::warn!(
                        storage = storage.id,
                        job = storage.sync.last_sync_job.as_deref(),
                        "failing a sync that was never started"
                    );
                }
                _ => continue,
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
}

enum Finished {
    Import(ImportOutcome),
    Export(ExportOutcome),
}

/// Shared between a running engine and its heartbeat.
struct Tracker {
    latest: Mutex<Option<Progress>>,
    lost: AtomicBool,
    shutdown: watch::Receiver<bool>,
    /// The progress already added to the metrics.
    counted: Mutex<Option<Progress>>,
    metrics: Arc<SyncMetrics>,
    storage_type: String,
}

impl Tracker {
    /// Adds to the metrics what this run did since the last call, so the
    /// counters move while a long sync runs and end exact.
    fn account(&self, progress: &Progress) {
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        match (progress, counted.as_ref()) {
            (Progress::Import(now), before) => {
                let before = match before {
                    Some(Progress::Import(p)) => p.clone(),
                    _ => ImportProgress::default(),
                };
                self.metrics
                    .import_progress(&self.storage_type, &import_delta(now, &before));
            }
            (Progress::Export(now), before) => {
                let before = match before {
                    Some(Progress::Export(p)) => p.clone(),
                    _ => Default::default(),
                };
                self.metrics
                    .export_progress(&self.storage_type, &export_delta(now, &before));
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
            return Err(Error::PermissionDenied {
                reason: "the sync job lost its lease to another worker".into(),
            });
        }
        if *self.shutdown.borrow() {
            return Err(Error::NotSupported {
                what: "sync interrupted by shutdown".into(),
            });
        }
        Ok(())
    }
}

/// The state a storage enters when a sync is queued: Label Studio resets
/// the previous outcome and counts attempts; unlike Label Studio the old
/// traceback is cleared too.
fn queued_state(previous: &SyncState, now: DateTime<Utc>, queue_timeout: Duration) -> SyncState {
    let attempts = previous
        .meta
        .get("attempts")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    let mut meta = serde_json::Map::new();
    meta.insert("attempts".into(), json!(attempts));
    meta.insert("time_queued".into(), meta_time(now));
    SyncState {
        status: SyncStatus::Queued,
        last_sync: None,
        last_sync_count: None,
        last_sync_job: Some(uuid::Uuid::new_v4().to_string()),
        traceback: None,
        meta,
        lease_until: Some(now + queue_timeout),
    }
}

/// A job resumed after an interruption keeps its job id and the count of
/// tasks its earlier attempts created (queuing a new job resets it): the
/// totals cover the whole job, and tasks created by the earlier attempts do
/// not count as already existing.
fn resumed_totals(progress: Progress, queued: &SyncState) -> Progress {
    match progress {
        Progress::Import(p) => Progress::Import(resumed_import(p, queued)),
        export => export,
    }
}

fn resumed_import(mut progress: ImportProgress, queued: &SyncState) -> ImportProgress {
    let earlier = queued.last_sync_count.unwrap_or(0).max(0) as u64;
    progress.created += earlier;
    progress.existed = progress.existed.saturating_sub(earlier);
    progress
}

fn apply_progress(state: &mut SyncState, progress: Option<&Progress>) {
    match progress {
        Some(Progress::Import(p)) => {
            state.last_sync_count = Some(p.created as i64);
            state.meta.insert("tasks_existed".into(), json!(p.existed));
            state.meta.insert("objects_listed".into(), json!(p.objects));
            state
                .meta
                .insert("files_failed".into(), json!(p.failed_files));
        }
        Some(Progress::Export(p)) => {
            state.last_sync_count = Some(p.written as i64);
            state
                .meta
                .insert("total_annotations".into(), json!(p.total));
            state
                .meta
                .insert("annotations_failed".into(), json!(p.failed));
        }
        None => {}
    }
}

fn finish_import(state: &mut SyncState, outcome: &ImportOutcome, now: DateTime<Utc>) {
    apply_progress(state, Some(&Progress::Import(outcome.progress.clone())));
    state.last_sync = Some(now);
    state.meta.insert("time_completed".into(), meta_time(now));
    if outcome.file_errors.is_empty() {
        state.status = SyncStatus::Completed;
    } else {
        state.status = SyncStatus::CompletedWithErrors;
        state.meta.insert(
            "tasks_failed_validation".into(),
            json!(outcome.file_errors.len()),
        );
        state.traceback = Some(outcome.file_errors.join("\n"));
    }
}

fn finish_export(state: &mut SyncState, outcome: &ExportOutcome, now: DateTime<Utc>) {
    apply_progress(state, Some(&Progress::Export(outcome.progress.clone())));
    let p = &outcome.progress;
    if p.failed == 0 {
        state.status = SyncStatus::Completed;
    } else {
        state.status = if p.written > 0 {
            SyncStatus::CompletedWithErrors
        } else {
            SyncStatus::Failed
        };
        let mut report = format!(
            "{} of {} annotations could not be written:\n",
            p.failed,
            p.failed + p.written
        );
        report.push_str(&outcome.errors.join("\n"));
        state.traceback = Some(report);
    }
    if state.status == SyncStatus::Failed {
        state.meta.insert("time_failure".into(), meta_time(now));
    } else {
        state.last_sync = Some(now);
        state.meta.insert("time_completed".into(), meta_time(now));
    }
}

/// The error and its chain of causes, one per line.
pub fn error_report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut report = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !report.contains(&text) {
            report.push_str("\ncaused by: ");
            report.push_str(&text);
        }
        source = cause.source();
    }
    report
}

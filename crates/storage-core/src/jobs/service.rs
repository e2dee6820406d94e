//! [`SyncService`]: what a host calls to request a sync, stop the runner,
//! recover jobs at start-up, and export single annotations when they are
//! saved or deleted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Notify};

use super::events::EventsApplied;
use super::runner::Runner;
use super::state;
use crate::export::ExportConfig;
use crate::import::ImportConfig;
use crate::metrics::SyncMetrics;
use crate::persist::{AnnotationSource, ExportOutbox, StorageRepository, TaskSink};
use crate::retry::RetryPolicy;
use crate::{
    Backends, Error, ExportStorage, ImportStorage, Result, Storage, StorageKind, SyncStatus,
};

/// An export storage of a project: its id and its target, or why the
/// target could not be built.
type ExportTarget = (i64, Result<Arc<dyn ExportStorage>>);

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
    /// A job running longer than this fails (whatever its endpoint keeps
    /// answering).
    pub max_duration: Duration,
    /// Jobs of one tenant (an organisation, see
    /// [`crate::persist::StorageRepository::storage_tenants`]) that run at
    /// once, as the repository counts them (over every process sharing
    /// it); `0` means `workers - 1` (at least 1), so one tenant never holds
    /// every worker.
    pub per_tenant_workers: usize,
    /// How long a connection check (validate, create, update) may take
    /// before it fails as timed out (see [`crate::check_storage_within`]).
    pub check_timeout: Duration,
    /// The shortest `sync_interval` a storage may have: scheduled syncs
    /// more often would hold workers and hammer endpoints.
    pub min_sync_interval: Duration,
    /// How long after an annotation changed its failing on-save export is
    /// retried before it is given up (an export sync then writes it).
    pub on_save_retry_for: Duration,
    /// The waits between attempts at an on-save export (exponential with
    /// jitter; the attempt count and deadline are not used).
    pub on_save_backoff: RetryPolicy,
    /// Import tuning.
    pub import: ImportConfig,
    /// Export tuning.
    pub export: ExportConfig,
}

impl RunnerConfig {
    /// Jobs of one tenant that run at once:
    /// [`RunnerConfig::per_tenant_workers`], or `workers - 1` (at least 1).
    pub fn tenant_cap(&self) -> usize {
        match self.per_tenant_workers {
            0 => self.workers.saturating_sub(1).max(1),
            cap => cap,
        }
    }
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
            max_duration: Duration::from_secs(24 * 3600),
            per_tenant_workers: 0,
            check_timeout: Duration::from_secs(30),
            min_sync_interval: Duration::from_secs(60),
            on_save_retry_for: Duration::from_secs(24 * 3600),
            on_save_backoff: RetryPolicy::default()
                .with_initial_backoff(Duration::from_secs(1))
                .with_multiplier(2)
                .with_max_backoff(Duration::from_secs(600)),
            import: ImportConfig::default(),
            export: ExportConfig::default(),
        }
    }
}

/// Starts, runs and recovers storage syncs; also exports single
/// annotations when they are saved or deleted.
#[derive(Debug, Clone)]
pub struct SyncService {
    inner: Arc<Runner>,
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
            inner: Arc::new(Runner {
                storages,
                tasks,
                annotations,
                backends,
                config,
                wake: Notify::new(),
                shutdown: watch::channel(false).0,
                running: Mutex::new(HashSet::new()),
                claiming: tokio::sync::Mutex::new(()),
                workers: Mutex::new(Vec::new()),
                metrics,
                exports: std::sync::OnceLock::new(),
                shards: std::sync::OnceLock::new(),
                storage_locks: Mutex::new(std::collections::HashMap::new()),
                recent_messages: Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// A runner over one database that keeps storages, tasks and
    /// annotations alike (`storage_db::SqliteDatabase`, [`crate::memory::InMemory`]);
    /// as [`SyncService::new`] with `db` in every role.
    pub fn with_database<D>(db: Arc<D>, backends: Backends, config: RunnerConfig) -> Self
    where
        D: StorageRepository + TaskSink + AnnotationSource + 'static,
    {
        Self::new(db.clone(), db.clone(), db, backends, config)
    }

    /// Exports saved and deleted annotations through `outbox` (durable,
    /// retried) instead of writing them once from the request: the
    /// database must queue them in the annotation's transaction, as
    /// `storage-db` does. Call before [`SyncService::start`].
    pub fn with_export_outbox(self, outbox: Arc<dyn ExportOutbox>) -> Self {
        if self.inner.exports.set(outbox).is_err() {
            tracing::warn!("the on-save export outbox was already set; the second is ignored");
        }
        self
    }

    /// Lets the syncs of storages with `shard_listing` be split by folder
    /// into shards kept in `queue`, which idle workers of every process
    /// sharing it claim (see [`crate::shards`]); without a queue those
    /// storages are listed by one worker. Call before
    /// [`SyncService::start`].
    pub fn with_shard_queue(self, queue: Arc<dyn crate::shards::ShardQueue>) -> Self {
        if self.inner.shards.set(queue).is_err() {
            tracing::warn!("the shard queue was already set; the second is ignored");
        }
        self
    }

    /// The backends this service builds storages with.
    pub fn backends(&self) -> &Backends {
        &self.inner.backends
    }

    /// The storage repository.
    pub fn storages(&self) -> &Arc<dyn StorageRepository> {
        &self.inner.storages
    }

    /// The shortest `sync_interval` storages may have.
    pub fn min_sync_interval(&self) -> Duration {
        self.inner.config.min_sync_interval
    }

    /// How long a connection check may take (see
    /// [`crate::check_storage_within`]).
    pub fn check_timeout(&self) -> Duration {
        self.inner.config.check_timeout
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
        self.inner.start();
    }

    /// Stops taking jobs, lets running jobs reach the end of their current
    /// batch, puts them back in `queued` (they resume at the next start) and
    /// waits for the workers to exit.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    /// Queues a sync of storage `id` and returns the storage as it is now.
    ///
    /// When a sync of that storage is already queued or running, nothing is
    /// queued and the storage is returned unchanged: concurrent requests
    /// start one job.
    pub async fn request_sync(&self, id: i64) -> Result<Storage> {
        self.request_sync_confirming(id, false).await
    }

    /// [`SyncService::request_sync`]; with `confirm_deletions`, the job
    /// applies the removals the deletion guard would hold back (see
    /// [`crate::follow`]). A job already queued or running is left as it
    /// is.
    pub async fn request_sync_confirming(
        &self,
        id: i64,
        confirm_deletions: bool,
    ) -> Result<Storage> {
        loop {
            let mut storage = self
                .inner
                .storages
                .storage(id)
                .await?
                .ok_or_else(|| Error::not_found(format!("storage {id}")))?;
            if storage.sync.status.is_active() {
                return Ok(storage);
            }
            let flag = confirm_deletions.then_some(state::CONFIRM_DELETIONS);
            if let Some(queued) = self.inner.queue(&storage, Utc::now(), flag).await? {
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

    /// Applies object events (a provider's push, see [`crate::events`]) to
    /// import storage `id`: each key is looked up and imported or removed
    /// as a sync would, in one go, and counted in the storage's
    /// `meta.events`. Returns [`EventsApplied::Busy`] without applying
    /// anything while the storage's sync is queued or running.
    pub async fn apply_events(
        &self,
        id: i64,
        batch: &crate::events::EventBatch,
    ) -> Result<EventsApplied> {
        self.inner.apply_events(id, batch).await
    }

    /// Fails or resumes jobs whose worker died, and fails jobs that waited
    /// too long in the queue. With `orphans_now`, every `in_progress` job
    /// not run by this process counts as dead (single-instance start-up).
    pub async fn recover(&self, orphans_now: bool) -> Result<()> {
        self.inner.recover(orphans_now).await
    }

    /// Writes annotation `id` to every export storage of `project`. Returns
    /// how many writes failed (each is logged with its storage).
    ///
    /// With an outbox ([`SyncService::with_export_outbox`]) the writes the
    /// database queued for it are attempted now, and failures are retried
    /// in the background and shown on their storages.
    pub async fn annotation_saved(&self, project: i64, id: i64) -> Result<usize> {
        if self.inner.export_outbox().is_some() {
            return self
                .inner
                .deliver_exports(Some(id))
                .await
                .map(|(_, failed)| failed);
        }
        let Some(annotation) = self.inner.annotations.annotation_for_export(id).await? else {
            return Err(Error::not_found(format!("annotation {id}")));
        };
        let mut failures = 0;
        for (storage, target) in self.export_targets(project).await? {
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
        if self.inner.export_outbox().is_some() {
            return self
                .inner
                .deliver_exports(Some(id))
                .await
                .map(|(_, failed)| failed);
        }
        let mut failures = 0;
        for (storage, target) in self.export_targets(project).await? {
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

    /// Every export storage of `project`, with its target or why it could
    /// not be built.
    async fn export_targets(&self, project: i64) -> Result<Vec<ExportTarget>> {
        let storages = self
            .inner
            .storages
            .storages(crate::persist::StorageFilter {
                project: Some(project),
                kind: Some(StorageKind::Export),
                storage_type: None,
            })
            .await?;
        let mut targets = Vec::with_capacity(storages.len());
        for storage in storages {
            let target = match self.inner.backends.require(&storage.storage_type) {
                Ok(backend) => backend.export_storage(&storage.settings).await,
                Err(err) => Err(err),
            };
            targets.push((storage.id, target));
        }
        Ok(targets)
    }
}

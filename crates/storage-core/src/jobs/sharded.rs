//! Syncs split by folder into shards (see [`crate::shards`]). The worker
//! that runs a storage's job plans its shards, runs them and waits for the
//! ones other workers took; idle workers of every process take shards of
//! running jobs. Each shard is run with its own lease, renewed with its
//! progress; a shard whose worker died is claimed again once that lease
//! runs out.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::runner::{lease_lost, queued_at, Runner, Tracker};
use super::state::error_report;
use crate::fields::ObjectDeleted;
use crate::follow::FollowPolicy;
use crate::import::{ImportJob, ImportOutcome, Progress, ProgressSink};
use crate::shards::{
    plan, summed, Shard, ShardQueue, ShardReport, ShardSource, ShardStatus, TOP_PART,
};
use crate::{Error, ImportOptions, ImportStorage, Result, Storage};

/// How long a job whose remaining shards run elsewhere waits before it
/// looks at them again.
const WAIT_STEP: Duration = Duration::from_millis(100);

/// Aborts a spawned task when dropped (a shard's heartbeat must not outlive
/// its run, however the run ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Runner {
    fn shard_queue(&self) -> Option<Arc<dyn ShardQueue>> {
        self.shards.get().cloned()
    }

    /// Claims and runs one shard of any running job; false when none was
    /// waiting.
    pub(super) async fn run_any_shard(&self) -> bool {
        let Some(queue) = self.shard_queue() else {
            return false;
        };
        let now = Utc::now();
        match queue.claim_shard(None, now, now + self.config.lease).await {
            Ok(Some(shard)) => {
                self.run_shard(&queue, shard).await;
                true
            }
            Ok(None) => false,
            Err(err) => {
                tracing::error!(error = %err, "could not claim a shard of a sync");
                false
            }
        }
    }

    /// Imports `storage` shard by shard when its settings ask for it and
    /// its listing can be split; `None` to sync it in one listing. A job
    /// resumed after its worker died keeps the shards already done.
    pub(super) async fn import_sharded(
        &self,
        storage: &Storage,
        source: &dyn ImportStorage,
        options: &ImportOptions,
        tracker: &Tracker,
    ) -> Result<Option<ImportOutcome>> {
        let (Some(queue), Some(job)) = (self.shard_queue(), storage.sync.last_sync_job.as_deref())
        else {
            return Ok(None);
        };
        let splittable = options.shard_listing
            && source.listing().recursive
            && FollowPolicy::of(options, false).gone_tasks().is_none();
        if !splittable {
            return Ok(None);
        }
        if queue.job_shards(storage.id, job).await?.is_empty() {
            let Some(folders) = plan(source).await? else {
                return Ok(None);
            };
            queue.insert_shards(storage.id, job, &folders).await?;
            tracing::info!(shards = folders.len(), "sync split by folder");
            self.wake.notify_waiters();
        }

        // The job's progress is the sum of its shards', wherever they run.
        let report_progress = async {
            loop {
                tokio::time::sleep(self.config.progress_interval).await;
                if let Ok(shards) = queue.job_shards(storage.id, job).await {
                    // Stopping is the work's to notice, between shards.
                    let _ = tracker.report(&Progress::Import(summed(&shards).progress));
                }
            }
        };
        let work = async {
            loop {
                let now = Utc::now();
                let claimed = queue
                    .claim_shard(Some((storage.id, job)), now, now + self.config.lease)
                    .await?;
                match claimed {
                    Some(shard) => self.run_shard(&queue, shard).await,
                    None => tokio::time::sleep(WAIT_STEP).await,
                }
                let shards = queue.job_shards(storage.id, job).await?;
                tracker.report(&Progress::Import(summed(&shards).progress))?;
                // One failed shard fails the job: the others stop once
                // their rows are gone.
                let failed = shards.iter().any(|s| s.status == ShardStatus::Failed);
                if failed || shards.iter().all(|shard| shard.status.is_ended()) {
                    return Ok::<_, Error>(shards);
                }
            }
        };
        let shards = tokio::select! {
            shards = work => shards?,
            () = report_progress => unreachable!("the progress loop never ends"),
        };
        queue.remove_shards(storage.id, job).await?;

        let failed: Vec<String> = shards
            .iter()
            .filter(|shard| shard.status == ShardStatus::Failed)
            .map(|shard| {
                format!(
                    "{}: {}",
                    part_name(&shard.folder),
                    shard.report.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        if !failed.is_empty() {
            return Err(Error::backend(
                format!(
                    "syncing {} of {} parts of the listing",
                    failed.len(),
                    shards.len()
                ),
                failed.join("\n"),
            ));
        }
        let mut outcome = summed(&shards);
        self.count_exactly(storage, &mut outcome).await;
        Ok(Some(outcome))
    }

    /// Sets the tasks `outcome` created to those linked since the job was
    /// queued, less those its earlier attempts created (added back when the
    /// job ends): a shard run again after its worker died counts what that
    /// worker had written as existing.
    async fn count_exactly(&self, storage: &Storage, outcome: &mut ImportOutcome) {
        let Some(queued) = queued_at(&storage.sync) else {
            return;
        };
        match self.tasks.linked_since(storage.id, queued).await {
            Ok(Some(total)) => {
                let earlier = storage.sync.last_sync_count.unwrap_or(0).max(0) as u64;
                let progress = &mut outcome.progress;
                let seen = progress.created + progress.existed;
                progress.created = total.saturating_sub(earlier);
                progress.existed = seen.saturating_sub(total) + earlier;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(
                error = %err,
                "could not count the tasks of the sync's shards; its counts may be off"
            ),
        }
    }

    /// Runs a claimed shard to its end and records how it ended; a shard
    /// interrupted by shutdown is given back, one whose claim was lost is
    /// left to its new worker.
    async fn run_shard(&self, queue: &Arc<dyn ShardQueue>, shard: Shard) {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "shard",
            storage = shard.storage_id,
            job = shard.job.as_str(),
            part = part_name(&shard.folder)
        );
        async {
            let tracker = Arc::new(Tracker::new(self.shutdown.subscribe(), None));
            let _heartbeat = AbortOnDrop(tokio::spawn(
                renew_shard(
                    queue.clone(),
                    shard.clone(),
                    tracker.clone(),
                    self.config.progress_interval,
                    self.config.lease,
                )
                .in_current_span(),
            ));
            let result = tokio::select! {
                result = self.import_shard(&shard, tracker.as_ref()) => result,
                () = tracker.stop.notified() => Err(lease_lost()),
            };
            if tracker.is_lost() {
                tracing::warn!("shard lost its lease, or its job ended; its result is dropped");
                return;
            }
            let progress = tracker.latest_import();
            let (status, report) = match result {
                Ok(outcome) => (ShardStatus::Done, ShardReport::of(outcome)),
                Err(_) if self.stopping() => (
                    ShardStatus::Pending,
                    ShardReport {
                        progress,
                        ..ShardReport::default()
                    },
                ),
                Err(err) => {
                    let error = self
                        .redacted_for(shard.storage_id, &error_report(&err))
                        .await;
                    tracing::warn!(error = %error, "shard failed");
                    let report = ShardReport {
                        progress,
                        error: Some(error),
                        ..ShardReport::default()
                    };
                    (ShardStatus::Failed, report)
                }
            };
            match queue.report_shard(&shard, status, &report, None).await {
                Ok(true) => tracing::info!(status = status.as_str(), "shard ended"),
                Ok(false) => {
                    tracing::warn!("shard's job ended while it ran; its result is dropped")
                }
                Err(err) => tracing::error!(error = %err, "could not record how the shard ended"),
            }
        }
        .instrument(span)
        .await
    }

    /// Lists and imports one shard of its storage as the storage is now
    /// configured.
    async fn import_shard(
        &self,
        shard: &Shard,
        progress: &dyn ProgressSink,
    ) -> Result<ImportOutcome> {
        let storage = self
            .storages
            .storage(shard.storage_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("storage {}", shard.storage_id),
            })?;
        let backend = self.backends.require(&storage.storage_type)?;
        let inner = backend.import_storage(&storage.settings).await?;
        let source = ShardSource::new(inner, &shard.folder)?;
        let options = ImportOptions::from_settings(&storage.settings);
        let mut follow = FollowPolicy::of(&options, false);
        // A shard sees part of the listing: it never takes what it did not
        // list for deleted.
        follow.deleted = ObjectDeleted::Keep;
        ImportJob {
            storage_id: storage.id,
            project: storage.project,
            source: &source,
            use_blob_urls: options.use_blob_urls,
            sink: self.tasks.as_ref(),
            config: &self.config.import,
            follow,
        }
        .run(progress)
        .await
    }

    /// `text` without the secrets of storage `id`.
    async fn redacted_for(&self, id: i64, text: &str) -> String {
        match self.storages.storage(id).await {
            Ok(Some(storage)) => self.redacted(&storage, text),
            _ => text.to_string(),
        }
    }
}

/// Renews the lease of a running shard with its progress until aborted;
/// stops the run when the claim was lost.
async fn renew_shard(
    queue: Arc<dyn ShardQueue>,
    shard: Shard,
    tracker: Arc<Tracker>,
    interval: Duration,
    lease: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let report = ShardReport {
            progress: tracker.latest_import(),
            ..ShardReport::default()
        };
        let renewed = queue
            .report_shard(
                &shard,
                ShardStatus::Running,
                &report,
                Some(Utc::now() + lease),
            )
            .await;
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                tracker.lose();
                return;
            }
            Err(err) => tracing::warn!(error = %err, "could not renew the shard's lease"),
        }
    }
}

/// How a part is named in logs and reports.
fn part_name(folder: &str) -> String {
    if folder == TOP_PART {
        "the objects directly under the prefix".to_string()
    } else {
        format!("folder {folder:?}")
    }
}

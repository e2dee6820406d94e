//! Sharded listing: one storage's import split into parts that workers of
//! any server instance claim, run and resume on their own.
//!
//! A storage with `shard_listing` (and `recursive_scan`) is listed once with
//! a delimiter at its prefix. Each folder found there becomes a shard (the
//! whole tree below it), and the objects directly under the prefix one more.
//! Shards are rows in a [`ShardQueue`], claimed with a lease like jobs: the
//! worker that runs the storage's job works its shards and waits for the
//! others, which idle workers of every instance take. A worker that dies
//! loses its lease and its shard is claimed again; links dedupe what it had
//! written, so each object gets exactly one task whatever the crashes. The
//! storage's status and counts are the sum of its shards.
//!
//! A sync that removes tasks of deleted objects (`on_object_deleted`) needs
//! one complete listing to compare with its links, so such storages are not
//! sharded (the settings check says so).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::filter::Listing;
use crate::import::ImportOutcome;
use crate::progress::ImportProgress;
use crate::retry::RetryPolicy;
use crate::{Error, ImportStorage, Result, Unlisted};

/// The import field that turns sharded listing on (an extension; off by
/// default).
pub const SHARD_LISTING_FIELD: &str = "shard_listing";

/// The part of the listing of the objects directly under the prefix (the
/// other parts are named by their folder).
pub const TOP_PART: &str = "";

/// Where a shard is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStatus {
    /// Waiting for a worker.
    Pending,
    /// Claimed by a worker whose lease runs.
    Running,
    /// Listed and imported to its end.
    Done,
    /// Stopped by an error (in its report); the job fails.
    Failed,
}

impl ShardStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// The status of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Done, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// Whether the shard will not run again.
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

/// What a shard did: its counters and problems so far, and the error that
/// stopped it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardReport {
    /// Its counters.
    pub progress: ImportProgress,
    /// Its report lines (bad tasks, unreadable files).
    pub file_errors: Vec<String>,
    /// Tasks it skipped as invalid.
    pub bad_tasks: u64,
    /// Why it failed.
    pub error: Option<String>,
}

impl ShardReport {
    /// The report of a shard that ran to its end.
    pub fn of(outcome: ImportOutcome) -> Self {
        Self {
            progress: outcome.progress,
            file_errors: outcome.file_errors,
            bad_tasks: outcome.bad_tasks,
            error: None,
        }
    }
}

/// A shard as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Its row id.
    pub id: i64,
    /// The storage whose listing it is part of.
    pub storage_id: i64,
    /// The job it belongs to (the storage's `last_sync_job`).
    pub job: String,
    /// Its folder (a store path), or [`TOP_PART`].
    pub folder: String,
    /// Where it is.
    pub status: ShardStatus,
    /// How often it was claimed: the last claim's number, which its reports
    /// must match.
    pub attempts: i64,
    /// Until when its worker holds it.
    pub lease_until: Option<DateTime<Utc>>,
    /// What it did so far.
    pub report: ShardReport,
}

/// Where shards are kept: a table that workers of several processes claim
/// from, as they claim jobs.
#[async_trait]
pub trait ShardQueue: Send + Sync + Debug {
    /// Saves one `pending` shard per folder for job `job` of `storage`,
    /// and forgets the shards of the storage's other jobs (ended ones).
    async fn insert_shards(&self, storage: i64, job: &str, folders: &[String]) -> Result<()>;

    /// The shards of job `job` of `storage`, by id.
    async fn job_shards(&self, storage: i64, job: &str) -> Result<Vec<Shard>>;

    /// Claims one shard until `lease_until`: a pending one, or a running
    /// one whose lease ran out before `now` (its worker died); only of
    /// `job` (storage, job id) when given, and only of a job whose storage
    /// is still `in_progress` with that job. Each shard goes to exactly one
    /// caller however many claim at once.
    async fn claim_shard(
        &self,
        job: Option<(i64, &str)>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Shard>>;

    /// Writes the report of `shard` as claimed, and its new status:
    /// `Running` renews its lease until `lease_until`, `Pending` gives it
    /// back, `Done` and `Failed` end it. False (nothing written) when the
    /// claim was lost: the shard was claimed again, or its job ended.
    async fn report_shard(
        &self,
        shard: &Shard,
        status: ShardStatus,
        report: &ShardReport,
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<bool>;

    /// Forgets the shards of job `job` of `storage` (it ended).
    async fn remove_shards(&self, storage: i64, job: &str) -> Result<()>;
}

/// The parts of `source`'s listing: [`TOP_PART`], then the folders directly
/// under its prefix in name order; `None` when its listing cannot be split
/// or has no folder to split by.
pub async fn plan(source: &dyn ImportStorage) -> Result<Option<Vec<String>>> {
    let Some(mut folders) = source.folders().await? else {
        return Ok(None);
    };
    if folders.is_empty() {
        return Ok(None);
    }
    folders.sort();
    Ok(Some(
        std::iter::once(TOP_PART.to_string())
            .chain(folders)
            .collect(),
    ))
}

/// The folders directly under `prefix` in `store`: one delimited listing,
/// retried like any listing (see [`ImportStorage::folders`]).
pub async fn delimited_folders(
    store: Arc<dyn ObjectStore>,
    prefix: Option<&Path>,
) -> Result<Vec<String>> {
    let context = "listing the folders to split the sync by (shard_listing)";
    let mut retry = RetryPolicy::default().backoff();
    loop {
        match store.list_with_delimiter(prefix).await {
            Ok(listed) => {
                return Ok(listed
                    .common_prefixes
                    .iter()
                    .map(|folder| folder.as_ref().to_string())
                    .collect())
            }
            Err(err) => {
                let err = Error::from_object_store(context, err);
                if !retry.again(&err).await {
                    return Err(err);
                }
            }
        }
    }
}

/// The counters and problems of a job's shards together, with their
/// number.
pub fn summed(shards: &[Shard]) -> ImportOutcome {
    let mut outcome = ImportOutcome::default();
    for shard in shards {
        outcome.absorb(ImportOutcome {
            progress: shard.report.progress.clone(),
            file_errors: shard.report.file_errors.clone(),
            bad_tasks: shard.report.bad_tasks,
        });
    }
    outcome.progress.shards = shards.len() as u64;
    outcome
}

/// One shard of a source: the same store, keys, reads and URLs, listing only
/// its part.
#[derive(Debug)]
pub struct ShardSource {
    inner: Arc<dyn ImportStorage>,
    listing: Listing,
}

impl ShardSource {
    /// The part `folder` ([`TOP_PART`] or a folder [`plan`] found) of
    /// `inner`.
    pub fn new(inner: Arc<dyn ImportStorage>, folder: &str) -> Result<Self> {
        let mut listing = inner.listing().clone();
        if folder == TOP_PART {
            listing.recursive = false;
        } else {
            let folder = Path::parse(folder).map_err(|err| {
                Error::backend(format!("reading the shard folder {folder:?}"), err)
            })?;
            listing.prefix = Some(folder);
            listing.recursive = true;
        }
        Ok(Self { inner, listing })
    }
}

#[async_trait]
impl ImportStorage for ShardSource {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store()
    }

    fn listing(&self) -> &Listing {
        &self.listing
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_within(&self.listing)
    }

    fn read_small(
        &self,
        objects: Vec<ObjectMeta>,
        concurrency: usize,
    ) -> BoxStream<'static, object_store::Result<bytes::Bytes>> {
        self.inner.read_small(objects, concurrency)
    }

    fn object_key(&self, location: &Path) -> String {
        self.inner.object_key(location)
    }

    fn location_of(&self, key: &str) -> Option<Path> {
        self.inner.location_of(key)
    }

    fn task_url(&self, location: &Path) -> String {
        self.inner.task_url(location)
    }

    async fn check_connection(&self) -> Result<()> {
        self.inner.check_connection().await
    }

    async fn signed_url(&self, location: &Path, ttl: std::time::Duration) -> Result<String> {
        self.inner.signed_url(location, ttl).await
    }

    fn take_unlisted(&self) -> Unlisted {
        self.inner.take_unlisted()
    }
}

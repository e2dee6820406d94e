//! What the storage system needs from the application that embeds it.
//!
//! Tasks, annotations and projects belong to the host. `storage-db`
//! implements these traits on its own tables; a host with its own database
//! implements them instead.

use std::collections::HashMap;
use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::task_data::TaskData;
use crate::{meta_time, NewStorage, Result, Storage, StorageKind, SyncState, SyncStatus};

/// Which storages to list.
#[derive(Debug, Clone, Default)]
pub struct StorageFilter<'a> {
    /// Only storages of this project.
    pub project: Option<i64>,
    /// Only import or only export storages.
    pub kind: Option<StorageKind>,
    /// Only storages of this type.
    pub storage_type: Option<&'a str>,
}

/// What a sync-state update expects to find, so that two writers never
/// overwrite each other (compare-and-set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGuard {
    /// The status the row must have.
    pub status: SyncStatus,
    /// The job id the row must have.
    pub job: Option<String>,
}

impl SyncGuard {
    /// The guard matching a state as it was read.
    pub fn of(state: &SyncState) -> Self {
        Self {
            status: state.status,
            job: state.last_sync_job.clone(),
        }
    }
}

/// Storage rows and their sync state.
#[async_trait]
pub trait StorageRepository: Send + Sync + Debug {
    /// Proves the store answers (a health check). Stores that cannot fail
    /// (in memory) keep the default.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Saves a new storage in `initialized` state.
    async fn insert_storage(&self, new: NewStorage) -> Result<Storage>;

    /// The storage with this id.
    async fn storage(&self, id: i64) -> Result<Option<Storage>>;

    /// Storages matching `filter`, by ascending id.
    async fn storages(&self, filter: StorageFilter<'_>) -> Result<Vec<Storage>>;

    /// Saves the configuration (project, title, description,
    /// synchronizable, settings) of a storage; never its sync state.
    async fn update_storage(&self, storage: &Storage) -> Result<()>;

    /// Deletes a storage and its links (tasks and bucket objects stay).
    /// Returns false when it did not exist.
    async fn delete_storage(&self, id: i64) -> Result<bool>;

    /// Storages whose status is one of `statuses` (for the job runner).
    async fn storages_with_status(&self, statuses: &[SyncStatus]) -> Result<Vec<Storage>>;

    /// Writes `state` if the stored state still matches `expected`.
    /// Returns false (and writes nothing) otherwise.
    async fn update_sync(&self, id: i64, expected: &SyncGuard, state: &SyncState) -> Result<bool>;

    /// Claims one `queued` storage for a worker: moves it to `in_progress`
    /// with [`claimed_state`] and returns it as written, or `None` when no
    /// storage can be claimed. Storages in `skip` (still running in this
    /// process) are left alone. However many workers and processes claim at
    /// once, each queued job goes to exactly one of them.
    ///
    /// With `per_tenant`, a storage whose tenant (see
    /// [`StorageRepository::storage_tenants`]) already has that many
    /// storages `in_progress` is not claimed, and among the others the
    /// storages of the tenant with the fewest running come first (then by
    /// ascending id): one tenant cannot hold every worker, and queued jobs
    /// of other tenants go first.
    ///
    /// The default lists the queued storages and claims the first one a
    /// compare-and-set wins ([`claim_by_compare_and_set`]); a database with
    /// row locks claims with one locking query instead.
    async fn claim_queued(
        &self,
        skip: &[i64],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        per_tenant: Option<usize>,
    ) -> Result<Option<Storage>> {
        claim_by_compare_and_set(self, skip, now, lease_until, per_tenant).await
    }

    /// The id clients see for storage `id`, in routes and answers. A store
    /// whose ids are not unique across types and kinds (Label Studio keeps
    /// one table, and one id sequence, per type and kind) keeps a unique
    /// `id` of its own and shows the table's; the default shows `id`.
    fn route_id(&self, id: i64) -> i64 {
        id
    }

    /// The storage that `/api/storages/[export/]<storage_type>/<route_id>`
    /// names, or `None` when no storage can have that id: the inverse of
    /// [`StorageRepository::route_id`].
    fn storage_id(&self, kind: StorageKind, storage_type: &str, route_id: i64) -> Option<i64> {
        let _ = (kind, storage_type);
        Some(route_id)
    }

    /// The tenant of each of the storages `ids` that has one (in
    /// `storage-db`: the organisation of the storage's project). A storage
    /// without a tenant is never held back by a per-tenant cap; a host
    /// without tenants keeps the default (none).
    async fn storage_tenants(&self, ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let _ = ids;
        Ok(HashMap::new())
    }
}

/// The state of a storage claimed at `now` by a worker whose lease runs
/// until `lease_until`.
pub fn claimed_state(
    queued: &SyncState,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> SyncState {
    let mut state = queued.clone();
    state.status = SyncStatus::InProgress;
    state.meta.insert("time_in_progress".into(), meta_time(now));
    state.meta.insert("time_last_ping".into(), meta_time(now));
    state.lease_until = Some(lease_until);
    state
}

/// [`StorageRepository::claim_queued`] by compare-and-set: tries the queued
/// storages (fewest running of their tenant first, then by ascending id,
/// tenants at `per_tenant` left out) until one update wins.
///
/// Two claims running at once may both see a tenant below its cap; callers
/// that need the cap exact serialise their claims (the job runner does
/// within one process).
pub async fn claim_by_compare_and_set<R: StorageRepository + ?Sized>(
    repository: &R,
    skip: &[i64],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    per_tenant: Option<usize>,
) -> Result<Option<Storage>> {
    let active = repository
        .storages_with_status(&[SyncStatus::Queued, SyncStatus::InProgress])
        .await?;
    let tenants = match per_tenant {
        Some(_) => {
            let ids: Vec<i64> = active.iter().map(|s| s.id).collect();
            repository.storage_tenants(&ids).await?
        }
        None => HashMap::new(),
    };
    let mut running: HashMap<i64, usize> = HashMap::new();
    for storage in &active {
        if storage.sync.status == SyncStatus::InProgress {
            if let Some(tenant) = tenants.get(&storage.id) {
                *running.entry(*tenant).or_default() += 1;
            }
        }
    }
    let load = |id: i64| {
        tenants
            .get(&id)
            .map_or(0, |tenant| running.get(tenant).copied().unwrap_or(0))
    };
    let mut queued: Vec<Storage> = active
        .into_iter()
        .filter(|s| s.sync.status == SyncStatus::Queued && !skip.contains(&s.id))
        .filter(|s| per_tenant.is_none_or(|cap| load(s.id) < cap))
        .collect();
    queued.sort_by_key(|s| (load(s.id), s.id));
    for mut storage in queued {
        let state = claimed_state(&storage.sync, now, lease_until);
        if repository
            .update_sync(storage.id, &SyncGuard::of(&storage.sync), &state)
            .await?
        {
            storage.sync = state;
            return Ok(Some(storage));
        }
    }
    Ok(None)
}

/// Where an object came from, recorded with every task it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectLink {
    /// The key (see [`crate::ImportStorage::object_key`]).
    pub key: String,
    /// Position of the task in the file (arrays, JSONL, the row of a
    /// Parquet file); `None` otherwise.
    pub row_index: Option<i64>,
    /// The Parquet row group that holds the row; `None` for other files.
    pub row_group: Option<i64>,
    /// The object's ETag from the listing.
    pub etag: Option<String>,
    /// The object's size from the listing.
    pub size: Option<u64>,
    /// The object's last-modified time from the listing.
    pub last_modified: Option<DateTime<Utc>>,
}

/// A task to create with its link.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Task data.
    pub data: TaskData,
    /// Annotations to create with it.
    pub annotations: Vec<Value>,
    /// Predictions to create with it.
    pub predictions: Vec<Value>,
    /// Whether annotators may skip it.
    pub allow_skip: bool,
    /// Its storage link.
    pub link: ObjectLink,
}

/// A linked object as a sync that follows the bucket compares it with its
/// listing entry: what its links recorded when it was last read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkedObject {
    /// Tasks linked to it.
    pub tasks: u64,
    /// Its ETag then.
    pub etag: Option<String>,
    /// Its size then.
    pub size: Option<u64>,
    /// Its last-modified time then.
    pub last_modified: Option<DateTime<Utc>>,
}

impl LinkedObject {
    /// Whether the listing entry (`etag`, `size`, `last_modified`) says the
    /// object changed since: any of the three recorded differs. Times are
    /// compared to the microsecond, the precision links keep.
    pub fn changed(&self, etag: Option<&str>, size: u64, last_modified: DateTime<Utc>) -> bool {
        let micros = |at: DateTime<Utc>| at.timestamp_micros();
        let etag_differs = matches!((self.etag.as_deref(), etag), (Some(a), Some(b)) if a != b);
        let size_differs = self.size.is_some_and(|recorded| recorded != size);
        let time_differs = self
            .last_modified
            .is_some_and(|recorded| micros(recorded) != micros(last_modified));
        etag_differs || size_differs || time_differs
    }
}

/// What happens to the tasks of objects (or rows of a task file) that are
/// gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneTasks {
    /// Their links get `object_exists = false`.
    Mark,
    /// Tasks without annotations are deleted; the others are marked.
    Delete,
}

/// What removing the tasks of gone objects did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removed {
    /// Tasks deleted.
    pub deleted: u64,
    /// Links newly marked `object_exists = false`.
    pub marked: u64,
}

impl Removed {
    /// Both counts added up.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            deleted: self.deleted + other.deleted,
            marked: self.marked + other.marked,
        }
    }
}

/// What writing one batch of a changed task file's tasks did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refreshed {
    /// Tasks created for rows that had none.
    pub created: u64,
    /// Tasks without annotations whose data changed.
    pub updated: u64,
    /// Tasks with annotations whose row changed: their data is kept and
    /// their link marked `object_exists = false`.
    pub marked: u64,
}

/// A changed object once re-read: the listing entry its links record from
/// now on and, of a task file, its last row.
#[derive(Debug, Clone, PartialEq)]
pub struct SettledObject {
    /// The object's key.
    pub key: String,
    /// The last row index the file holds now (`-1` for none, or for a
    /// file holding one task); links of rows after it are gone. `None` in
    /// Files mode, where the object is one task.
    pub last_row: Option<i64>,
    /// Its ETag now.
    pub etag: Option<String>,
    /// Its size now.
    pub size: Option<u64>,
    /// Its last-modified time now.
    pub last_modified: Option<DateTime<Utc>>,
}

fn follow_unsupported() -> crate::Error {
    crate::Error::NotSupported {
        what: "following the bucket (on_object_changed / on_object_deleted) with this task \
               store"
            .into(),
    }
}

/// Task creation for import syncs.
#[async_trait]
pub trait TaskSink: Send + Sync + Debug {
    /// Of `keys`, those already linked to `storage_id`, with the number of
    /// tasks linked to each. Keys of objects begun but not finished (see
    /// [`TaskSink::begin_object`]) are left out, so they are read again.
    async fn linked_keys(&self, storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>>;

    /// Whether any task is linked to `storage_id`. A sync of a storage with
    /// none skips [`TaskSink::linked_keys`] (or
    /// [`TaskSink::linked_objects`]) before each batch: it could find
    /// nothing there, and [`TaskSink::create_tasks`] dedupes in its own
    /// transaction anyway. The default, `true`, keeps the lookups.
    async fn has_links(&self, storage_id: i64) -> Result<bool> {
        let _ = storage_id;
        Ok(true)
    }

    /// Marks the object `key` unfinished before its tasks are written in
    /// several transactions (a large task file read as a stream).
    async fn begin_object(&self, storage_id: i64, key: &str) -> Result<()>;

    /// Marks the object `key` finished: all its tasks are written.
    async fn finish_object(&self, storage_id: i64, key: &str) -> Result<()>;

    /// How many tasks of the object `key` are linked to `storage_id` with a
    /// row index in `rows`. A resumed sync does not read a Parquet row
    /// group whose rows are all linked. The default, 0, has every row group
    /// read again ([`TaskSink::create_tasks`] still skips what is linked).
    async fn count_linked_rows(
        &self,
        storage_id: i64,
        key: &str,
        rows: std::ops::RangeInclusive<i64>,
    ) -> Result<u64> {
        let _ = (storage_id, key, rows);
        Ok(0)
    }

    /// How many tasks were linked to `storage_id` at or after `since`: for
    /// an import job queued at `since`, what its interrupted attempts
    /// created (one job runs per storage at a time). A resumed job counts
    /// from this, not from the last progress it saved, which may lag the
    /// batches committed after it. `None` where links keep no time.
    async fn linked_since(&self, storage_id: i64, since: DateTime<Utc>) -> Result<Option<u64>> {
        let _ = (storage_id, since);
        Ok(None)
    }

    /// Creates `tasks` and their links in one transaction: all or nothing.
    /// Tasks whose `(key, row_index)` is already linked to the storage are
    /// skipped. Returns how many were created. The tasks are given, not
    /// lent, so that their data can move into the write instead of being
    /// copied (a large task costs its size once more, not twice).
    async fn create_tasks(&self, project: i64, storage_id: i64, tasks: Vec<NewTask>)
        -> Result<u64>;

    // What syncs that follow the bucket (`on_object_changed`,
    // `on_object_deleted`) need. A store that does not implement them
    // refuses those settings' syncs with `NotSupported`; the defaults
    // (`keep`) never call them.

    /// Of `keys`, those linked to `storage_id`, with their task count and
    /// the listing entry their links record. Like
    /// [`TaskSink::linked_keys`], unfinished objects are left out.
    async fn linked_objects(
        &self,
        storage_id: i64,
        keys: &[String],
    ) -> Result<HashMap<String, LinkedObject>> {
        let _ = (storage_id, keys);
        Err(follow_unsupported())
    }

    /// Up to `limit` distinct keys linked to `storage_id` that still have a
    /// link not marked `object_exists = false`, above `after` and up to
    /// `upto` (`None`: unbounded), in ascending byte order: the side of
    /// the comparison with a listing that finds objects gone.
    async fn linked_keys_between(
        &self,
        storage_id: i64,
        after: Option<&str>,
        upto: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let _ = (storage_id, after, upto, limit);
        Err(follow_unsupported())
    }

    /// How many distinct objects are linked to `storage_id` and not marked
    /// gone: what the deletion guard of event removals compares with. The
    /// default counts [`TaskSink::linked_keys_between`] a page at a time.
    async fn count_linked_objects(&self, storage_id: i64) -> Result<u64> {
        const PAGE: usize = 10_000;
        let mut count = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .linked_keys_between(storage_id, after.as_deref(), None, PAGE)
                .await?;
            count += page.len() as u64;
            if page.len() < PAGE {
                return Ok(count);
            }
            after = page.last().cloned();
        }
    }

    /// Removes the tasks of the objects `keys` of `storage_id`, which are
    /// gone, as `gone` says, in one transaction. Only tasks linked to
    /// those objects through this storage are touched.
    async fn remove_objects(
        &self,
        storage_id: i64,
        keys: &[String],
        gone: GoneTasks,
    ) -> Result<Removed> {
        let _ = (storage_id, keys, gone);
        Err(follow_unsupported())
    }

    /// Writes one batch of the tasks of changed task files in one
    /// transaction: a row not linked yet gets a task; a linked task
    /// without annotations gets the row's data when it differs; a linked
    /// task with annotations whose data differs keeps it and its link is
    /// marked. The links keep the listing entry they had (see
    /// [`TaskSink::settle_objects`]), so a run stopped in the middle finds
    /// the file changed again and converges.
    async fn refresh_tasks(
        &self,
        project: i64,
        storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> Result<Refreshed> {
        let _ = (project, storage_id, tasks);
        Err(follow_unsupported())
    }

    /// Records the new listing entry of changed objects that were read
    /// again, in one transaction; of task files, the links of rows after
    /// their [`SettledObject::last_row`] are removed as `gone` says (kept
    /// when `None`).
    async fn settle_objects(
        &self,
        storage_id: i64,
        objects: &[SettledObject],
        gone: Option<GoneTasks>,
    ) -> Result<Removed> {
        let _ = (storage_id, objects, gone);
        Err(follow_unsupported())
    }
}

/// An annotation as export storages write it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedAnnotation {
    /// Annotation id (the object key).
    pub id: i64,
    /// Its project.
    pub project: i64,
    /// Label Studio's export JSON: the annotation with `completed_by`
    /// expanded and `task` nested.
    pub payload: Value,
}

/// Annotations for export syncs.
#[async_trait]
pub trait AnnotationSource: Send + Sync + Debug {
    /// Up to `limit` annotations of `project` with an id above `after_id`,
    /// by ascending id.
    async fn annotations_for_export(
        &self,
        project: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<ExportedAnnotation>>;

    /// The number of annotations of `project`.
    async fn count_annotations(&self, project: i64) -> Result<u64>;

    /// One annotation, if it exists.
    async fn annotation_for_export(&self, id: i64) -> Result<Option<ExportedAnnotation>>;

    /// Records that export storage `storage_id` now holds the objects of
    /// `annotations` (written by an export sync). A host that keeps export
    /// links (Label Studio's export link rows) writes them; the default
    /// keeps nothing.
    async fn record_exported(&self, storage_id: i64, annotations: &[i64]) -> Result<()> {
        let _ = (storage_id, annotations);
        Ok(())
    }
}

/// An on-save export waiting in the outbox: annotation `annotation` to be
/// written to (or, when `deleted`, removed from) export storage `storage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDelivery {
    /// Id.
    pub id: i64,
    /// The export storage.
    pub storage: i64,
    /// The annotation.
    pub annotation: i64,
    /// Whether the annotation was deleted (its object is removed).
    pub deleted: bool,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// When the annotation changed.
    pub created_at: DateTime<Utc>,
    /// Until when the claim holds.
    pub lease_until: DateTime<Utc>,
}

/// What follows an attempt at an [`ExportDelivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOutcome {
    /// The storage has it: the delivery is done.
    Done,
    /// Failed (the message says why); tried again at this time.
    RetryAt(DateTime<Utc>, String),
    /// Failed and out of time: kept as given up until an export sync of
    /// the storage writes every annotation again
    /// ([`ExportOutbox::forget_written`]).
    GivenUp(String),
}

/// What the outbox holds for one export storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportBacklog {
    /// Deliveries not done yet (failing or not).
    pub pending: u64,
    /// The annotations whose last attempt failed or was given up, by id.
    pub failed: Vec<i64>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// The outbox of on-save exports. The database writes a delivery per
/// export storage of the project in the transaction that saves or deletes
/// an annotation; the runner claims them, writes them and records each
/// outcome here.
#[async_trait]
pub trait ExportOutbox: Send + Sync + Debug {
    /// Claims up to `limit` due deliveries until `lease_until` (only those
    /// of `annotation` when given): per storage and annotation the oldest
    /// one only (one annotation's exports go in order), and none another
    /// claim holds. Without `annotation`, a delivery never tried is
    /// taken only after a short grace: the request that queued it tries it
    /// first.
    async fn claim_exports(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
        annotation: Option<i64>,
    ) -> Result<Vec<ExportDelivery>>;

    /// Records the outcome of an attempt; false (nothing written) when the
    /// claim was lost.
    async fn record_export(
        &self,
        delivery: &ExportDelivery,
        outcome: &ExportOutcome,
    ) -> Result<bool>;

    /// What the outbox holds for export storage `storage`.
    async fn export_backlog(&self, storage: i64) -> Result<ExportBacklog>;

    /// Releases every claim (see
    /// [`crate::webhooks::WebhookRepository::release_claims`]).
    async fn release_export_claims(&self) -> Result<()>;

    /// Forgets the deliveries of saved annotations to `storage` queued
    /// before `before` (waiting, failing or given up; not those a claim
    /// holds now): an export sync that started then has written those
    /// annotations. Deletions stay: a sync writes, it does not delete.
    async fn forget_written(&self, storage: i64, before: DateTime<Utc>) -> Result<()>;
}

/// An authenticated API caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: i64,
    /// The user's organisation; projects are visible within it only.
    pub organization_id: i64,
}

/// Who may see which project.
#[async_trait]
pub trait ProjectAccess: Send + Sync + Debug {
    /// Whether `project` exists and `caller` may see it. Callers get
    /// "not found" for projects they may not see.
    async fn project_visible(&self, caller: &Caller, project: i64) -> Result<bool>;

    /// Which of `projects` `caller` may see. The default asks
    /// [`ProjectAccess::project_visible`] once per project; stores that can
    /// answer in one query should.
    async fn visible_projects(
        &self,
        caller: &Caller,
        projects: &[i64],
    ) -> Result<std::collections::HashSet<i64>> {
        let mut visible = std::collections::HashSet::new();
        for &project in projects {
            if self.project_visible(caller, project).await? {
                visible.insert(project);
            }
        }
        Ok(visible)
    }
}

/// A proof of the caller other than `Authorization: Token <key>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <token>` (Label Studio's access tokens of
    /// personal access tokens).
    Bearer(&'a str),
    /// A browser's session: the request's whole `Cookie` header.
    Session(&'a str),
}

// Written by hand: both hold secrets.
impl Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(***)"),
            Self::Session(_) => f.write_str("Session(***)"),
        }
    }
}

/// Maps API tokens to callers.
#[async_trait]
pub trait Authenticator: Send + Sync + Debug {
    /// The caller whose token this is.
    ///
    /// The time this takes must not reveal stored tokens: compare in
    /// constant time (`subtle::ConstantTimeEq`), or look up a SHA-256 hash
    /// of the presented token, as `storage-db` does. A caller chooses the
    /// token, not its hash, so how far an index lookup gets tells nothing
    /// about the tokens stored.
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>>;

    /// The caller a [`Credential`] proves. The default accepts none: only
    /// `Token` keys authenticate, as this crate's own stores issue nothing
    /// else; an authenticator that delegates to Label Studio accepts what
    /// Label Studio accepts.
    async fn authenticate_credential(&self, credential: Credential<'_>) -> Result<Option<Caller>> {
        let _ = credential;
        Ok(None)
    }
}

//! Every persistence trait of [`crate::persist`] in memory, for tests and
//! small embeddings (as `object_store::memory::InMemory` is for stores).
//!
//! [`InMemory`] keeps the rules the engines and the job runner rely on, as
//! `storage-db` keeps them on its tables:
//!
//! - storage ids are unique across kinds and types, listed by ascending id;
//!   a storage belongs to an existing project;
//! - [`StorageRepository::update_sync`] is a compare-and-set on status and
//!   job id, so [`StorageRepository::claim_queued`] (its default, by
//!   compare-and-set) hands each queued storage to exactly one caller;
//! - [`TaskSink::create_tasks`] writes a batch whole or not at all and skips
//!   `(key, row_index)` pairs already linked to the storage (and repeats
//!   within the batch); [`TaskSink::linked_keys`] leaves out objects begun
//!   and not finished;
//! - deleting a storage deletes its links and unfinished marks, not its
//!   tasks;
//! - tokens are compared in constant time.
//!
//! What it does not do: annotations and predictions that arrive inside task
//! files stay with their task (see [`MemoryTask`]) and are not exported;
//! exported annotations carry a subset of Label Studio's export JSON (`id`,
//! `result`, `completed_by`, `was_cancelled`, `ground_truth`, `project`,
//! `created_at`, `updated_at` and the nested `task` with `id`, `data`,
//! `project`).
//!
//! ```
//! # tokio_test::block_on(async {
//! use storage_core::memory::InMemory;
//! use storage_core::persist::TaskSink;
//! use storage_core::StorageKind;
//!
//! let db = InMemory::new();
//! let project = db.add_project(1);
//! let storage = db.add_storage(project, StorageKind::Import, "s3");
//! let linked = db.linked_keys(storage, &["a.json".to_string()]).await.unwrap();
//! assert!(linked.is_empty());
//! # });
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::persist::{
    AnnotationSource, Authenticator, Caller, ExportedAnnotation, NewTask, ObjectLink,
    ProjectAccess, StorageFilter, StorageRepository, SyncGuard, TaskSink,
};
use crate::{Error, NewStorage, Result, Settings, Storage, StorageKind, SyncState, SyncStatus};

/// A task to create from `key` (row `row_index` of it) with this `data`
/// object, no annotations or predictions, skippable: the shape most tests
/// need.
///
/// ```
/// let task = storage_core::memory::new_task("a.json", Some(0), serde_json::json!({"text": "x"}));
/// assert_eq!(task.data["text"], "x");
/// ```
pub fn new_task(key: &str, row_index: Option<i64>, data: Value) -> NewTask {
    NewTask {
        data: match data {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_string(), other)]),
        },
        annotations: Vec::new(),
        predictions: Vec::new(),
        allow_skip: true,
        link: ObjectLink {
            key: key.to_string(),
            row_index,
            etag: None,
            size: None,
            last_modified: None,
        },
    }
}

/// A task as [`InMemory`] keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryTask {
    /// Its id, from 1, unique across projects.
    pub id: i64,
    /// Its project.
    pub project: i64,
    /// Task data.
    pub data: Map<String, Value>,
    /// Annotations that came with it in the task file.
    pub annotations: Vec<Value>,
    /// Predictions that came with it in the task file.
    pub predictions: Vec<Value>,
    /// Whether annotators may skip it.
    pub allow_skip: bool,
}

/// A storage link: which object (and row of it) a task came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryLink {
    /// The storage that imported the task.
    pub storage_id: i64,
    /// The task.
    pub task_id: i64,
    /// The object, as the import recorded it.
    pub link: ObjectLink,
}

#[derive(Debug, Clone)]
struct User {
    id: i64,
    organization_id: i64,
    token: String,
}

#[derive(Debug, Clone)]
struct Annotation {
    id: i64,
    task: i64,
    project: i64,
    completed_by: Option<i64>,
    result: Value,
    created_at: DateTime<Utc>,
}

/// Dedupe identity of a link: storage, key, row index.
type LinkKey = (i64, String, Option<i64>);

#[derive(Debug, Default)]
struct State {
    last_id: i64,
    /// project id -> organisation id
    projects: BTreeMap<i64, i64>,
    users: Vec<User>,
    storages: BTreeMap<i64, Storage>,
    tasks: BTreeMap<i64, MemoryTask>,
    links: Vec<MemoryLink>,
    linked: HashSet<LinkKey>,
    /// (storage, key) -> tasks linked to that object
    linked_per_key: HashMap<(i64, String), u64>,
    unfinished: HashSet<(i64, String)>,
    annotations: BTreeMap<i64, Annotation>,
    create_calls: usize,
    fail_create_call: Option<usize>,
}

impl State {
    /// Ids come from one counter, so they never repeat across tables: a
    /// mix-up of a task id and a storage id shows in tests.
    fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }

    fn require_project(&self, project: i64) -> Result<()> {
        if self.projects.contains_key(&project) {
            Ok(())
        } else {
            Err(missing_project(project))
        }
    }
}

/// Django REST framework's message for a related object that does not
/// exist, as `storage-db` answers it.
fn missing_project(project: i64) -> Error {
    Error::invalid(
        "project",
        format!("Invalid pk \"{project}\" - object does not exist."),
    )
}

/// Projects, users, storages, tasks with their links, and annotations, in
/// memory. See the [module documentation](self) for the rules it keeps.
#[derive(Debug, Default)]
pub struct InMemory {
    state: Mutex<State>,
}

impl InMemory {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock left whole writes only
        // (every write is done under one lock), so the data is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a project of `organization_id`; returns its id.
    pub fn add_project(&self, organization_id: i64) -> i64 {
        let mut state = self.state();
        let id = state.next_id();
        state.projects.insert(id, organization_id);
        id
    }

    /// Adds a user of `organization_id` who authenticates with `token`.
    pub fn add_user(&self, organization_id: i64, token: &str) -> Caller {
        let mut state = self.state();
        let id = state.next_id();
        state.users.push(User {
            id,
            organization_id,
            token: token.to_string(),
        });
        Caller {
            user_id: id,
            organization_id,
        }
    }

    /// Adds a storage of `project` with default settings, in `initialized`
    /// state; returns its id.
    ///
    /// # Panics
    /// If the project does not exist (a mistake in the test).
    pub fn add_storage(&self, project: i64, kind: StorageKind, storage_type: &str) -> i64 {
        let mut state = self.state();
        if let Err(err) = state.require_project(project) {
            panic!("add_storage: {err}");
        }
        let id = state.next_id();
        state.storages.insert(
            id,
            Storage {
                id,
                kind,
                storage_type: storage_type.to_string(),
                project,
                title: None,
                description: None,
                created_at: Utc::now(),
                synchronizable: true,
                settings: Settings::default(),
                sync: SyncState::default(),
            },
        );
        id
    }

    /// Adds an annotation of `task` with this `result`, by `completed_by`;
    /// returns its id. Export syncs then write it.
    pub fn add_annotation(
        &self,
        task: i64,
        result: Value,
        completed_by: Option<i64>,
    ) -> Result<i64> {
        let mut state = self.state();
        let project = state
            .tasks
            .get(&task)
            .map(|t| t.project)
            .ok_or_else(|| Error::not_found(format!("task {task}")))?;
        let id = state.next_id();
        state.annotations.insert(
            id,
            Annotation {
                id,
                task,
                project,
                completed_by,
                result,
                created_at: Utc::now(),
            },
        );
        Ok(id)
    }

    /// Deletes an annotation; returns false when it did not exist.
    pub fn delete_annotation(&self, id: i64) -> bool {
        self.state().annotations.remove(&id).is_some()
    }

    /// The tasks of `project`, by ascending id.
    pub fn tasks(&self, project: i64) -> Vec<MemoryTask> {
        self.state()
            .tasks
            .values()
            .filter(|t| t.project == project)
            .cloned()
            .collect()
    }

    /// Every task of every project.
    pub fn task_count(&self) -> usize {
        self.state().tasks.len()
    }

    /// The links of `storage_id`, in the order they were written.
    pub fn links(&self, storage_id: i64) -> Vec<MemoryLink> {
        self.state()
            .links
            .iter()
            .filter(|l| l.storage_id == storage_id)
            .cloned()
            .collect()
    }

    /// The `(key, row_index)` pairs linked to `storage_id`, sorted.
    pub fn linked_rows(&self, storage_id: i64) -> Vec<(String, Option<i64>)> {
        let mut rows: Vec<_> = self
            .links(storage_id)
            .into_iter()
            .map(|l| (l.link.key, l.link.row_index))
            .collect();
        rows.sort();
        rows
    }

    /// The keys of `storage_id` begun and not finished, sorted.
    pub fn unfinished(&self, storage_id: i64) -> Vec<String> {
        let mut keys: Vec<String> = self
            .state()
            .unfinished
            .iter()
            .filter(|(storage, _)| *storage == storage_id)
            .map(|(_, key)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// How many times [`TaskSink::create_tasks`] was called.
    pub fn create_tasks_calls(&self) -> usize {
        self.state().create_calls
    }

    /// Makes the `n`-th [`TaskSink::create_tasks`] call from now (1-based)
    /// fail, writing nothing, as a database lost between two batches would;
    /// `None` heals it.
    pub fn fail_create_tasks_call(&self, n: Option<usize>) {
        let mut state = self.state();
        state.fail_create_call = n.map(|n| state.create_calls + n);
    }

    fn exported(state: &State, annotation: &Annotation) -> ExportedAnnotation {
        let task = state.tasks.get(&annotation.task);
        let at = Value::String(annotation.created_at.to_rfc3339());
        ExportedAnnotation {
            id: annotation.id,
            project: annotation.project,
            payload: json!({
                "id": annotation.id,
                "result": annotation.result,
                "completed_by": annotation.completed_by,
                "was_cancelled": false,
                "ground_truth": false,
                "created_at": at,
                "updated_at": at,
                "task": {
                    "id": annotation.task,
                    "data": task.map(|t| Value::Object(t.data.clone())).unwrap_or(Value::Null),
                    "project": annotation.project,
                },
                "project": annotation.project,
            }),
        }
    }
}

#[async_trait]
impl StorageRepository for InMemory {
    async fn insert_storage(&self, new: NewStorage) -> Result<Storage> {
        let mut state = self.state();
        state.require_project(new.project)?;
        let id = state.next_id();
        let storage = Storage {
            id,
            kind: new.kind,
            storage_type: new.storage_type,
            project: new.project,
            title: new.title,
            description: new.description,
            created_at: Utc::now(),
            synchronizable: new.synchronizable,
            settings: new.settings,
            sync: SyncState::default(),
        };
        state.storages.insert(id, storage.clone());
        Ok(storage)
    }

    async fn storage(&self, id: i64) -> Result<Option<Storage>> {
        Ok(self.state().storages.get(&id).cloned())
    }

    async fn storages(&self, filter: StorageFilter<'_>) -> Result<Vec<Storage>> {
        Ok(self
            .state()
            .storages
            .values()
            .filter(|s| filter.project.is_none_or(|p| s.project == p))
            .filter(|s| filter.kind.is_none_or(|k| s.kind == k))
            .filter(|s| filter.storage_type.is_none_or(|t| s.storage_type == t))
            .cloned()
            .collect())
    }

    async fn update_storage(&self, storage: &Storage) -> Result<()> {
        let mut state = self.state();
        state.require_project(storage.project)?;
        let stored = state
            .storages
            .get_mut(&storage.id)
            .ok_or_else(|| Error::not_found(format!("storage {}", storage.id)))?;
        // The configuration only: kind, type, creation time and sync state
        // are not the caller's to change here.
        stored.project = storage.project;
        stored.title = storage.title.clone();
        stored.description = storage.description.clone();
        stored.synchronizable = storage.synchronizable;
        stored.settings = storage.settings.clone();
        Ok(())
    }

    async fn delete_storage(&self, id: i64) -> Result<bool> {
        let mut state = self.state();
        if state.storages.remove(&id).is_none() {
            return Ok(false);
        }
        state.links.retain(|l| l.storage_id != id);
        state.linked.retain(|(storage, _, _)| *storage != id);
        state
            .linked_per_key
            .retain(|(storage, _), _| *storage != id);
        state.unfinished.retain(|(storage, _)| *storage != id);
        Ok(true)
    }

    async fn storages_with_status(&self, statuses: &[SyncStatus]) -> Result<Vec<Storage>> {
        Ok(self
            .state()
            .storages
            .values()
            .filter(|s| statuses.contains(&s.sync.status))
            .cloned()
            .collect())
    }

    async fn update_sync(&self, id: i64, expected: &SyncGuard, state: &SyncState) -> Result<bool> {
        let mut db = self.state();
        match db.storages.get_mut(&id) {
            Some(stored) if SyncGuard::of(&stored.sync) == *expected => {
                stored.sync = state.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl TaskSink for InMemory {
    async fn linked_keys(&self, storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let state = self.state();
        let mut linked = HashMap::new();
        for key in keys {
            let id = (storage_id, key.clone());
            if state.unfinished.contains(&id) {
                continue;
            }
            if let Some(&count) = state.linked_per_key.get(&id) {
                linked.insert(key.clone(), count);
            }
        }
        Ok(linked)
    }

    async fn begin_object(&self, storage_id: i64, key: &str) -> Result<()> {
        self.state()
            .unfinished
            .insert((storage_id, key.to_string()));
        Ok(())
    }

    async fn finish_object(&self, storage_id: i64, key: &str) -> Result<()> {
        self.state()
            .unfinished
            .remove(&(storage_id, key.to_string()));
        Ok(())
    }

    async fn create_tasks(&self, project: i64, storage_id: i64, tasks: &[NewTask]) -> Result<u64> {
        if tasks.is_empty() {
            return Ok(0);
        }
        // One lock for the whole batch: nothing is seen half-written.
        let mut state = self.state();
        state.create_calls += 1;
        if state.fail_create_call == Some(state.create_calls) {
            return Err(Error::backend(
                format!("creating tasks for storage {storage_id}"),
                "simulated crash (InMemory::fail_create_tasks_call)",
            ));
        }
        if !state.storages.contains_key(&storage_id) {
            return Err(Error::not_found(format!("storage {storage_id}")));
        }
        if !state.projects.contains_key(&project) {
            return Err(Error::not_found(format!("project {project}")));
        }
        let mut created = 0;
        for task in tasks {
            let link_key = (storage_id, task.link.key.clone(), task.link.row_index);
            if !state.linked.insert(link_key) {
                continue;
            }
            let id = state.next_id();
            state.tasks.insert(
                id,
                MemoryTask {
                    id,
                    project,
                    data: task.data.clone(),
                    annotations: task.annotations.clone(),
                    predictions: task.predictions.clone(),
                    allow_skip: task.allow_skip,
                },
            );
            *state
                .linked_per_key
                .entry((storage_id, task.link.key.clone()))
                .or_default() += 1;
            state.links.push(MemoryLink {
                storage_id,
                task_id: id,
                link: task.link.clone(),
            });
            created += 1;
        }
        Ok(created)
    }
}

#[async_trait]
impl AnnotationSource for InMemory {
    async fn annotations_for_export(
        &self,
        project: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<ExportedAnnotation>> {
        let state = self.state();
        Ok(state
            .annotations
            .range(after_id.saturating_add(1)..)
            .map(|(_, a)| a)
            .filter(|a| a.project == project)
            .take(limit)
            .map(|a| Self::exported(&state, a))
            .collect())
    }

    async fn count_annotations(&self, project: i64) -> Result<u64> {
        Ok(self
            .state()
            .annotations
            .values()
            .filter(|a| a.project == project)
            .count() as u64)
    }

    async fn annotation_for_export(&self, id: i64) -> Result<Option<ExportedAnnotation>> {
        let state = self.state();
        Ok(state
            .annotations
            .get(&id)
            .map(|a| Self::exported(&state, a)))
    }
}

#[async_trait]
impl ProjectAccess for InMemory {
    async fn project_visible(&self, caller: &Caller, project: i64) -> Result<bool> {
        Ok(self.state().projects.get(&project) == Some(&caller.organization_id))
    }
}

#[async_trait]
impl Authenticator for InMemory {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        if token.is_empty() {
            return Ok(None);
        }
        let state = self.state();
        // Every stored token is compared whole, the match remembered without
        // a branch on secret bytes, so timing tells nothing about them.
        let mut found = None;
        for user in &state.users {
            if constant_time_eq(user.token.as_bytes(), token.as_bytes()) {
                found = Some(Caller {
                    user_id: user.id,
                    organization_id: user.organization_id,
                });
            }
        }
        Ok(found)
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes
/// differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::meta_time;

    fn queued_state() -> SyncState {
        let mut state = SyncState {
            status: SyncStatus::Queued,
            last_sync_job: Some("job-1".into()),
            ..SyncState::default()
        };
        state
            .meta
            .insert("time_queued".into(), meta_time(Utc::now()));
        state
    }

    fn new_task(key: &str, row: Option<i64>, text: &str) -> NewTask {
        super::new_task(key, row, json!({ "text": text }))
    }

    fn new_storage(project: i64, kind: StorageKind, storage_type: &str) -> NewStorage {
        NewStorage {
            kind,
            storage_type: storage_type.into(),
            project,
            title: Some("t".into()),
            description: None,
            synchronizable: true,
            settings: Settings::default(),
        }
    }

    #[tokio::test]
    async fn storages_need_a_project_and_list_by_id_with_filters() {
        let db = InMemory::new();
        let err = db
            .insert_storage(new_storage(99, StorageKind::Import, "s3"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Invalid pk \"99\""), "{err}");

        let p1 = db.add_project(1);
        let p2 = db.add_project(1);
        let a = db
            .insert_storage(new_storage(p1, StorageKind::Import, "s3"))
            .await
            .unwrap();
        let b = db
            .insert_storage(new_storage(p2, StorageKind::Export, "s3"))
            .await
            .unwrap();
        let c = db
            .insert_storage(new_storage(p1, StorageKind::Export, "gcs"))
            .await
            .unwrap();
        assert_eq!(a.sync, SyncState::default());
        let ids = |list: Vec<Storage>| list.iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(db.storages(StorageFilter::default()).await.unwrap()),
            vec![a.id, b.id, c.id]
        );
        let only = StorageFilter {
            project: Some(p1),
            kind: Some(StorageKind::Export),
            storage_type: None,
        };
        assert_eq!(ids(db.storages(only).await.unwrap()), vec![c.id]);
        let by_type = StorageFilter {
            storage_type: Some("s3"),
            ..StorageFilter::default()
        };
        assert_eq!(ids(db.storages(by_type).await.unwrap()), vec![a.id, b.id]);
    }

    #[tokio::test]
    async fn update_storage_keeps_the_sync_state_and_needs_the_storage() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let id = db.add_storage(project, StorageKind::Import, "s3");
        let stored = db.storage(id).await.unwrap().unwrap();
        let queued = queued_state();
        assert!(db
            .update_sync(id, &SyncGuard::of(&stored.sync), &queued)
            .await
            .unwrap());

        let mut changed = stored.clone();
        changed.title = Some("renamed".into());
        changed.sync = SyncState::default();
        db.update_storage(&changed).await.unwrap();
        let now = db.storage(id).await.unwrap().unwrap();
        assert_eq!(now.title.as_deref(), Some("renamed"));
        assert_eq!(now.sync, queued, "the configuration only");

        changed.id = 12345;
        let err = db.update_storage(&changed).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn update_sync_is_a_compare_and_set() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let id = db.add_storage(project, StorageKind::Import, "s3");
        let initial = SyncGuard::of(&SyncState::default());
        let queued = queued_state();
        assert!(db.update_sync(id, &initial, &queued).await.unwrap());
        assert!(
            !db.update_sync(id, &initial, &SyncState::default())
                .await
                .unwrap(),
            "the row moved on: the stale writer loses"
        );
        let wrong_job = SyncGuard {
            status: SyncStatus::Queued,
            job: Some("another".into()),
        };
        assert!(!db.update_sync(id, &wrong_job, &queued).await.unwrap());
        assert!(!db.update_sync(999, &initial, &queued).await.unwrap());
        assert_eq!(db.storage(id).await.unwrap().unwrap().sync, queued);
    }

    #[tokio::test]
    async fn each_queued_storage_is_claimed_once_however_many_claim() {
        let db = Arc::new(InMemory::new());
        let project = db.add_project(1);
        let mut queued = Vec::new();
        for _ in 0..20 {
            let id = db.add_storage(project, StorageKind::Import, "s3");
            db.update_sync(id, &SyncGuard::of(&SyncState::default()), &queued_state())
                .await
                .unwrap();
            queued.push(id);
        }
        let idle = db.add_storage(project, StorageKind::Import, "s3");
        let now = Utc::now();
        let lease = now + chrono::Duration::seconds(30);
        let claims = (0..8).map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(storage) = db.claim_queued(&[], now, lease).await.unwrap() {
                    assert_eq!(storage.sync.status, SyncStatus::InProgress);
                    assert_eq!(storage.sync.lease_until, Some(lease));
                    mine.push(storage.id);
                    tokio::task::yield_now().await;
                }
                mine
            })
        });
        let mut claimed: Vec<i64> = futures::future::join_all(claims)
            .await
            .into_iter()
            .flat_map(|r| r.unwrap())
            .collect();
        claimed.sort_unstable();
        assert_eq!(
            claimed, queued,
            "every queued storage once, the idle one never"
        );
        let stored = db.storage(queued[0]).await.unwrap().unwrap();
        assert_eq!(stored.sync.meta["time_in_progress"], meta_time(now));
        assert_eq!(
            db.storage(idle).await.unwrap().unwrap().sync.status,
            SyncStatus::Initialized
        );
    }

    #[tokio::test]
    async fn claims_skip_the_storages_they_are_told_to() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let first = db.add_storage(project, StorageKind::Import, "s3");
        let second = db.add_storage(project, StorageKind::Export, "s3");
        for id in [first, second] {
            db.update_sync(id, &SyncGuard::of(&SyncState::default()), &queued_state())
                .await
                .unwrap();
        }
        let now = Utc::now();
        let claimed = db.claim_queued(&[first], now, now).await.unwrap().unwrap();
        assert_eq!(claimed.id, second);
        assert!(db.claim_queued(&[first], now, now).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn create_tasks_dedupes_on_key_and_row_within_a_storage() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let storage = db.add_storage(project, StorageKind::Import, "s3");
        let other = db.add_storage(project, StorageKind::Import, "s3");
        let batch = [
            new_task("a.json", Some(0), "a0"),
            new_task("a.json", Some(1), "a1"),
            new_task("a.json", Some(1), "repeat within the batch"),
            new_task("b.jpg", None, "b"),
        ];
        assert_eq!(db.create_tasks(project, storage, &batch).await.unwrap(), 3);
        assert_eq!(
            db.create_tasks(project, storage, &batch).await.unwrap(),
            0,
            "nothing twice"
        );
        assert_eq!(
            db.create_tasks(project, other, &batch[..1]).await.unwrap(),
            1,
            "another storage links its own objects"
        );
        assert_eq!(
            db.linked_rows(storage),
            vec![
                ("a.json".into(), Some(0)),
                ("a.json".into(), Some(1)),
                ("b.jpg".into(), None)
            ]
        );
        let texts: Vec<Value> = db
            .tasks(project)
            .iter()
            .map(|t| t.data["text"].clone())
            .collect();
        assert_eq!(
            texts,
            vec![json!("a0"), json!("a1"), json!("b"), json!("a0")]
        );
        let keys = vec!["a.json".to_string(), "b.jpg".into(), "c.jpg".into()];
        let linked = db.linked_keys(storage, &keys).await.unwrap();
        assert_eq!(
            linked,
            HashMap::from([("a.json".to_string(), 2), ("b.jpg".to_string(), 1)])
        );
    }

    #[tokio::test]
    async fn create_tasks_needs_the_storage_and_the_project() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let storage = db.add_storage(project, StorageKind::Import, "s3");
        let task = [new_task("a", None, "a")];
        let err = db.create_tasks(project, 999, &task).await.unwrap_err();
        assert!(err.to_string().contains("storage 999"), "{err}");
        let err = db.create_tasks(998, storage, &task).await.unwrap_err();
        assert!(err.to_string().contains("project 998"), "{err}");
        assert_eq!(db.task_count(), 0);
    }

    #[tokio::test]
    async fn unfinished_objects_are_not_reported_as_linked() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let storage = db.add_storage(project, StorageKind::Import, "s3");
        db.begin_object(storage, "big.jsonl").await.unwrap();
        db.create_tasks(project, storage, &[new_task("big.jsonl", Some(0), "x")])
            .await
            .unwrap();
        let keys = ["big.jsonl".to_string()];
        assert!(db.linked_keys(storage, &keys).await.unwrap().is_empty());
        assert_eq!(db.unfinished(storage), vec!["big.jsonl".to_string()]);
        db.finish_object(storage, "big.jsonl").await.unwrap();
        assert_eq!(
            db.linked_keys(storage, &keys).await.unwrap()["big.jsonl"],
            1
        );
        assert!(db.unfinished(storage).is_empty());
    }

    #[tokio::test]
    async fn a_failing_batch_writes_nothing_and_later_batches_work() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let storage = db.add_storage(project, StorageKind::Import, "s3");
        db.fail_create_tasks_call(Some(2));
        db.create_tasks(project, storage, &[new_task("a", None, "a")])
            .await
            .unwrap();
        let err = db
            .create_tasks(project, storage, &[new_task("b", None, "b")])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        assert_eq!(db.linked_rows(storage), vec![("a".into(), None)]);
        db.create_tasks(project, storage, &[new_task("b", None, "b")])
            .await
            .unwrap();
        assert_eq!(db.create_tasks_calls(), 3);
        assert_eq!(db.task_count(), 2);
    }

    #[tokio::test]
    async fn deleting_a_storage_deletes_its_links_not_its_tasks() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let storage = db.add_storage(project, StorageKind::Import, "s3");
        db.create_tasks(project, storage, &[new_task("a", None, "a")])
            .await
            .unwrap();
        db.begin_object(storage, "big").await.unwrap();
        assert!(db.delete_storage(storage).await.unwrap());
        assert!(!db.delete_storage(storage).await.unwrap());
        assert!(db.links(storage).is_empty());
        assert!(db.unfinished(storage).is_empty());
        assert_eq!(db.task_count(), 1);
        assert!(db
            .linked_keys(storage, &["a".to_string()])
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn annotations_are_exported_by_project_in_pages() {
        let db = InMemory::new();
        let project = db.add_project(1);
        let other = db.add_project(1);
        let storage = db.add_storage(project, StorageKind::Import, "s3");
        let elsewhere = db.add_storage(other, StorageKind::Import, "s3");
        db.create_tasks(project, storage, &[new_task("a", None, "a")])
            .await
            .unwrap();
        db.create_tasks(other, elsewhere, &[new_task("b", None, "b")])
            .await
            .unwrap();
        let task = db.tasks(project)[0].id;
        let foreign = db.tasks(other)[0].id;
        let ids: Vec<i64> = (0..5)
            .map(|i| db.add_annotation(task, json!([i]), Some(7)).unwrap())
            .collect();
        db.add_annotation(foreign, json!([]), None).unwrap();
        assert!(db.add_annotation(12345, json!([]), None).is_err());

        assert_eq!(db.count_annotations(project).await.unwrap(), 5);
        let page = db.annotations_for_export(project, 0, 2).await.unwrap();
        assert_eq!(page.iter().map(|a| a.id).collect::<Vec<_>>(), ids[..2]);
        let rest = db
            .annotations_for_export(project, ids[1], 10)
            .await
            .unwrap();
        assert_eq!(rest.iter().map(|a| a.id).collect::<Vec<_>>(), ids[2..]);
        let one = db.annotation_for_export(ids[3]).await.unwrap().unwrap();
        assert_eq!(one.payload["result"], json!([3]));
        assert_eq!(one.payload["task"]["id"], task);
        assert_eq!(one.payload["task"]["data"]["text"], "a");
        assert_eq!(one.payload["completed_by"], 7);
        assert!(db.delete_annotation(ids[3]));
        assert!(db.annotation_for_export(ids[3]).await.unwrap().is_none());
        assert_eq!(db.count_annotations(project).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn tokens_and_projects_decide_who_sees_what() {
        let db = InMemory::new();
        let mine = db.add_project(10);
        let theirs = db.add_project(20);
        let caller = db.add_user(10, "secret-token");
        db.add_user(20, "other-token");
        assert_eq!(
            db.authenticate("secret-token").await.unwrap(),
            Some(caller.clone())
        );
        for wrong in ["", "secret-tokeN", "secret-token2", "secret"] {
            assert_eq!(db.authenticate(wrong).await.unwrap(), None, "{wrong:?}");
        }
        assert!(db.project_visible(&caller, mine).await.unwrap());
        assert!(!db.project_visible(&caller, theirs).await.unwrap());
        assert!(!db.project_visible(&caller, 999).await.unwrap());
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}

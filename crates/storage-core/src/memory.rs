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
//! - a storage's tenant ([`StorageRepository::storage_tenants`]) is the
//!   organisation of its project;
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
    AnnotationSource, Authenticator, Caller, ExportedAnnotation, GoneTasks, LinkedObject, NewTask,
    ObjectLink, ProjectAccess, Refreshed, Removed, SettledObject, StorageFilter, StorageRepository,
    SyncGuard, TaskSink,
};
use crate::{Error, NewStorage, Result, Settings, Storage, StorageKind, SyncState, SyncStatus};

mod faulty;
mod fixture;
pub use faulty::FaultyStore;
pub use fixture::ImportFixture;

/// A task to create from `key` (row `row_index` of it) with this `data`
/// object, no annotations or predictions, skippable: the shape most tests
/// need.
///
/// ```
/// let task = storage_core::memory::new_task("a.json", Some(0), serde_json::json!({"text": "x"}));
/// assert_eq!(task.data.to_object()["text"], "x");
/// ```
pub fn new_task(key: &str, row_index: Option<i64>, data: Value) -> NewTask {
    NewTask {
        data: match data {
            Value::Object(map) => map.into(),
            other => Map::from_iter([("value".to_string(), other)]).into(),
        },
        annotations: Vec::new(),
        predictions: Vec::new(),
        allow_skip: true,
        link: ObjectLink {
            key: key.to_string(),
            row_index,
            row_group: None,
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
    /// False once the object (or its row) is gone, or changed under a task
    /// with annotations (Label Studio's `object_exists`).
    pub object_exists: bool,
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
    lookup_calls: usize,
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
            Storage::new(
                id,
                NewStorage {
                    kind,
                    storage_type: storage_type.to_string(),
                    project,
                    title: None,
                    description: None,
                    synchronizable: true,
                    settings: Settings::default(),
                },
                Utc::now(),
            ),
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

    /// How many times [`TaskSink::linked_keys`] or
    /// [`TaskSink::linked_objects`] was called.
    pub fn lookup_calls(&self) -> usize {
        self.state().lookup_calls
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
        let storage = Storage::new(id, new, Utc::now());
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

    async fn storage_tenants(&self, ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let state = self.state();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let project = state.storages.get(id)?.project;
                Some((*id, *state.projects.get(&project)?))
            })
            .collect())
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
        let mut state = self.state();
        state.lookup_calls += 1;
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

    async fn has_links(&self, storage_id: i64) -> Result<bool> {
        let state = self.state();
        Ok(state.links.iter().any(|l| l.storage_id == storage_id))
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

    async fn count_linked_rows(
        &self,
        storage_id: i64,
        key: &str,
        rows: std::ops::RangeInclusive<i64>,
    ) -> Result<u64> {
        let state = self.state();
        let linked = state.links.iter().filter(|l| {
            l.storage_id == storage_id
                && l.link.key == key
                && l.link.row_index.is_some_and(|row| rows.contains(&row))
        });
        Ok(linked.count() as u64)
    }

    async fn create_tasks(
        &self,
        project: i64,
        storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> Result<u64> {
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
                    data: task.data.to_object(),
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
                object_exists: true,
            });
            created += 1;
        }
        Ok(created)
    }

    async fn linked_objects(
        &self,
        storage_id: i64,
        keys: &[String],
    ) -> Result<HashMap<String, LinkedObject>> {
        let mut state = self.state();
        state.lookup_calls += 1;
        let wanted: HashSet<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|key| !state.unfinished.contains(&(storage_id, key.to_string())))
            .collect();
        let mut linked: HashMap<String, LinkedObject> = HashMap::new();
        for l in state.links.iter().filter(|l| l.storage_id == storage_id) {
            if wanted.contains(l.link.key.as_str()) {
                let object = linked.entry(l.link.key.clone()).or_default();
                object.tasks += 1;
                object.etag.clone_from(&l.link.etag);
                object.size = l.link.size;
                object.last_modified = l.link.last_modified;
            }
        }
        Ok(linked)
    }

    async fn linked_keys_between(
        &self,
        storage_id: i64,
        after: Option<&str>,
        upto: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let state = self.state();
        let keys: std::collections::BTreeSet<&str> = state
            .links
            .iter()
            .filter(|l| l.storage_id == storage_id && l.object_exists)
            .map(|l| l.link.key.as_str())
            .filter(|key| after.is_none_or(|after| *key > after))
            .filter(|key| upto.is_none_or(|upto| *key <= upto))
            .collect();
        Ok(keys.into_iter().take(limit).map(str::to_string).collect())
    }

    async fn remove_objects(
        &self,
        storage_id: i64,
        keys: &[String],
        gone: GoneTasks,
    ) -> Result<Removed> {
        let keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
        let mut state = self.state();
        Ok(state.remove_links(storage_id, gone, |link| keys.contains(link.key.as_str())))
    }

    async fn refresh_tasks(
        &self,
        project: i64,
        storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> Result<Refreshed> {
        let mut refreshed = Refreshed::default();
        let mut fresh = Vec::new();
        {
            let mut state = self.state();
            for task in tasks {
                let found = state.links.iter().position(|l| {
                    l.storage_id == storage_id
                        && l.link.key == task.link.key
                        && l.link.row_index == task.link.row_index
                });
                let Some(at) = found else {
                    fresh.push(task);
                    continue;
                };
                let id = state.links[at].task_id;
                let data = task.data.to_object();
                if state.tasks.get(&id).is_none_or(|t| t.data == data) {
                    continue;
                }
                if state.annotated(id) {
                    if state.links[at].object_exists {
                        state.links[at].object_exists = false;
                        refreshed.marked += 1;
                    }
                } else if let Some(stored) = state.tasks.get_mut(&id) {
                    stored.data = data;
                    refreshed.updated += 1;
                }
            }
        }
        refreshed.created = self.create_tasks(project, storage_id, fresh).await?;
        Ok(refreshed)
    }

    async fn settle_objects(
        &self,
        storage_id: i64,
        objects: &[SettledObject],
        gone: Option<GoneTasks>,
    ) -> Result<Removed> {
        let mut state = self.state();
        let mut removed = Removed::default();
        for object in objects {
            if let (Some(last_row), Some(gone)) = (object.last_row, gone) {
                removed = removed.plus(state.remove_links(storage_id, gone, |link| {
                    link.key == object.key && link.row_index.unwrap_or(-1) > last_row
                }));
            }
            for l in state.links.iter_mut() {
                if l.storage_id == storage_id && l.link.key == object.key {
                    l.link.etag.clone_from(&object.etag);
                    l.link.size = object.size;
                    l.link.last_modified = object.last_modified;
                }
            }
        }
        Ok(removed)
    }
}

impl State {
    /// Whether task `id` has annotations (from its file or made since).
    fn annotated(&self, id: i64) -> bool {
        self.tasks
            .get(&id)
            .is_some_and(|t| !t.annotations.is_empty())
            || self.annotations.values().any(|a| a.task == id)
    }

    /// Removes, as `gone` says, the tasks whose links of `storage_id` pass
    /// `matches`.
    fn remove_links(
        &mut self,
        storage_id: i64,
        gone: GoneTasks,
        matches: impl Fn(&ObjectLink) -> bool,
    ) -> Removed {
        let mut removed = Removed::default();
        let hit: Vec<usize> = (0..self.links.len())
            .filter(|&i| self.links[i].storage_id == storage_id && matches(&self.links[i].link))
            .collect();
        let mut deleted_tasks = HashSet::new();
        for i in hit {
            let id = self.links[i].task_id;
            if gone == GoneTasks::Delete && !self.annotated(id) {
                deleted_tasks.insert(id);
            } else if self.links[i].object_exists {
                self.links[i].object_exists = false;
                removed.marked += 1;
            }
        }
        for id in &deleted_tasks {
            self.tasks.remove(id);
        }
        let links = std::mem::take(&mut self.links);
        for l in links {
            if deleted_tasks.contains(&l.task_id) {
                self.linked
                    .remove(&(l.storage_id, l.link.key.clone(), l.link.row_index));
                if let Some(count) = self
                    .linked_per_key
                    .get_mut(&(l.storage_id, l.link.key.clone()))
                {
                    *count -= 1;
                    if *count == 0 {
                        self.linked_per_key
                            .remove(&(l.storage_id, l.link.key.clone()));
                    }
                }
            } else {
                self.links.push(l);
            }
        }
        removed.deleted = deleted_tasks.len() as u64;
        removed
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
#[path = "memory_tests.rs"]
mod tests;

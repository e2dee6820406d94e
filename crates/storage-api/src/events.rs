//! Webhook bodies in the API's shapes: what the outbox recorded (ids and a
//! sync's state) turned into Label Studio's payloads when the event is
//! delivered — tasks as its webhook task serializer writes them, the
//! project as the project API shows it (without the secrets Label Studio
//! leaks there), annotations as the annotation API shows them, and for the
//! sync actions the storage as the storage API shows it, with the sync
//! state the move wrote.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use storage_core::host::{Queue, TaskRecord};
use storage_core::label_config::LabelConfig;
use storage_core::webhooks::{recorded, Action, Event, EventRenderer};
use storage_core::{Result, StorageKind, SyncState};

use crate::render::{iso, storage_json};
use crate::ApiState;

/// Renders webhook bodies with the API's host and storages; give it to the
/// courier (`storage_core::webhooks::Courier`).
#[derive(Debug, Clone)]
pub struct ApiEventRenderer {
    state: ApiState,
}

impl ApiEventRenderer {
    /// A renderer over the state the router serves.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }

    /// The project as the project API shows it, or its id alone when the
    /// host has none.
    async fn project(&self, id: i64) -> Result<(Value, Option<String>)> {
        let Some(host) = self.state.host() else {
            return Ok((json!({ "id": id }), None));
        };
        Ok(match host.project(id).await? {
            Some(project) => {
                let data_key = LabelConfig::lenient(&project.label_config)
                    .first_data_key()
                    .map(str::to_string);
                (
                    crate::host::project_json(&project, Queue::default()),
                    data_key,
                )
            }
            None => (json!({ "id": id }), None),
        })
    }

    async fn tasks(&self, ids: &[i64], data_key: Option<&str>) -> Result<Vec<Value>> {
        let Some(host) = self.state.host() else {
            return Ok(ids.iter().map(|id| json!({ "id": id })).collect());
        };
        Ok(host
            .bare_tasks(ids)
            .await?
            .into_iter()
            .map(|task| webhook_task(task, data_key))
            .collect())
    }

    /// The storage as the storage API shows it, with the sync state the
    /// event recorded; the recorded storage as it is when it is gone.
    async fn storage(&self, recorded: &Value) -> Result<Value> {
        let id = recorded["id"].as_i64().unwrap_or_default();
        let Some(mut storage) = self.state.storages().storage(id).await? else {
            return Ok(recorded.clone());
        };
        let Some(backend) = self.state.backends().get(&storage.storage_type) else {
            return Ok(recorded.clone());
        };
        if let Ok(sync) = sync_state(recorded) {
            storage.sync = sync;
        }
        let fields = backend.fields(storage.kind);
        let route_id = self.state.storages().route_id(storage.id);
        let mut shown = storage_json(&storage, route_id, &fields);
        if let Value::Object(map) = &mut shown {
            // Which of the two lists it is in: the storage API's path says
            // it, a body must.
            let kind = match storage.kind {
                StorageKind::Import => "import",
                StorageKind::Export => "export",
            };
            map.insert("kind".into(), json!(kind));
        }
        Ok(shown)
    }
}

/// The sync state of a storage recorded by [`recorded::sync`].
fn sync_state(recorded: &Value) -> std::result::Result<SyncState, serde_json::Error> {
    let mut state = SyncState {
        status: serde_json::from_value(recorded["status"].clone())?,
        ..SyncState::default()
    };
    state.last_sync = recorded["last_sync"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f%:z").ok())
        .map(|at| at.to_utc());
    state.last_sync_count = recorded["last_sync_count"].as_i64();
    state.last_sync_job = recorded["last_sync_job"].as_str().map(str::to_string);
    state.traceback = recorded["traceback"].as_str().map(str::to_string);
    state.meta = recorded["meta"].as_object().cloned().unwrap_or_default();
    Ok(state)
}

/// A task as Label Studio's webhook task serializer writes it: its data
/// with the Files-mode placeholder under the config's first variable, URIs
/// unresolved.
fn webhook_task(task: TaskRecord, data_key: Option<&str>) -> Value {
    let data: Value = serde_json::from_str(task.data.shown(data_key).as_str())
        .unwrap_or_else(|_| Value::Object(Map::new()));
    json!({
        "id": task.id,
        "data": data,
        "meta": task.meta,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "is_labeled": task.is_labeled,
        "allow_skip": task.allow_skip,
        "overlap": task.overlap,
        "inner_id": task.inner_id,
        "total_annotations": task.total_annotations,
        "cancelled_annotations": task.cancelled_annotations,
        "total_predictions": task.total_predictions,
        "precomputed_agreement": null,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": null,
        "project": task.project,
        "updated_by": null,
        "file_upload": null,
        "comment_authors": [],
    })
}

#[async_trait]
impl EventRenderer for ApiEventRenderer {
    async fn render(&self, event: &Event) -> Result<Map<String, Value>> {
        self.render_all(&[event])
            .await
            .pop()
            .unwrap_or_else(|| Ok(Map::new()))
    }

    /// Each project and all the new tasks of `events` are read once.
    async fn render_all(&self, events: &[&Event]) -> Vec<Result<Map<String, Value>>> {
        let mut projects: HashMap<i64, (Value, Option<String>)> = HashMap::new();
        let mut failed = None;
        for event in events {
            if let Entry::Vacant(entry) = projects.entry(event.project) {
                match self.project(event.project).await {
                    Ok(project) => {
                        entry.insert(project);
                    }
                    Err(err) => failed = Some(err.to_string()),
                }
            }
        }
        let created: Vec<i64> = events
            .iter()
            .filter(|e| e.action == Action::TasksCreated)
            .flat_map(|e| recorded::task_ids(&e.payload))
            .collect();
        let mut tasks: HashMap<i64, TaskRecord> = HashMap::new();
        if let (Some(host), false) = (self.state.host(), created.is_empty()) {
            match host.bare_tasks(&created).await {
                Ok(records) => tasks.extend(records.into_iter().map(|t| (t.id, t))),
                Err(err) => failed = Some(err.to_string()),
            }
        }
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let body = match (&failed, projects.get(&event.project)) {
                (None, Some((project, data_key))) => {
                    self.body(event, project, data_key.as_deref(), &mut tasks)
                        .await
                }
                (Some(err), _) => Err(storage_core::Error::backend(
                    "rendering a webhook body",
                    err.clone(),
                )),
                (None, None) => Err(storage_core::Error::backend(
                    "rendering a webhook body",
                    format!("project {} could not be read", event.project),
                )),
            };
            out.push(body);
        }
        out
    }
}

impl ApiEventRenderer {
    /// The body of `event`; its new tasks are taken from `tasks`.
    async fn body(
        &self,
        event: &Event,
        project: &Value,
        data_key: Option<&str>,
        tasks: &mut HashMap<i64, TaskRecord>,
    ) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        match event.action {
            Action::TasksCreated => {
                let shown: Vec<Value> = recorded::task_ids(&event.payload)
                    .iter()
                    .map(|id| match tasks.remove(id) {
                        Some(task) => webhook_task(task, data_key),
                        // Deleted since, or no host: its id.
                        None => json!({ "id": id }),
                    })
                    .collect();
                out.insert("tasks".into(), Value::Array(shown));
            }
            Action::AnnotationCreated | Action::AnnotationUpdated => {
                let id = event.payload["annotation"]["id"]
                    .as_i64()
                    .unwrap_or_default();
                let task_id = event.payload["task"]["id"].as_i64().unwrap_or_default();
                let annotation = match self.state.host() {
                    Some(host) => host.annotation(id).await?,
                    None => None,
                };
                out.insert(
                    "annotation".into(),
                    annotation.unwrap_or_else(|| json!({ "id": id })),
                );
                let task = self.tasks(&[task_id], data_key).await?.pop();
                out.insert(
                    "task".into(),
                    task.unwrap_or_else(|| json!({ "id": task_id })),
                );
            }
            Action::StorageSyncStarted
            | Action::StorageSyncCompleted
            | Action::StorageSyncFailed => {
                let storage = self.storage(&event.payload["storage"]).await?;
                out.insert("storage".into(), storage);
            }
            // Ids only (Label Studio's `OnlyIDWebhookSerializer`), as
            // recorded.
            _ => {
                if let Value::Object(payload) = &event.payload {
                    out.extend(payload.clone());
                }
            }
        }
        out.insert("project".into(), project.clone());
        Ok(out)
    }
}

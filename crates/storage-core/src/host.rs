//! The minimal host surface (projects, tasks, annotations) that makes the
//! server (`storage-server`) useful on its own. Hosts that have their own project and
//! task APIs do not need it.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::import::UNDEFINED_DATA_KEY;
use crate::parse::ParsedTask;
use crate::persist::Caller;
use crate::Result;

/// A labelling project.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Id.
    pub id: i64,
    /// Owning organisation.
    pub organization: i64,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Label Studio XML labelling config.
    pub label_config: String,
    /// Creator's user id.
    pub created_by: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Number of tasks.
    pub task_number: u64,
    /// Number of annotations (not cancelled).
    pub total_annotations_number: u64,
    /// Number of predictions.
    pub total_predictions_number: u64,
}

/// Input of project creation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewProject {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Labelling config.
    pub label_config: String,
}

/// A task with what the task API shows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Id.
    pub id: i64,
    /// Project.
    pub project: i64,
    /// Position in the project (1-based).
    pub inner_id: i64,
    /// Task data as stored (unresolved URIs, `$undefined$` kept).
    pub data: Map<String, Value>,
    /// Task meta.
    pub meta: Map<String, Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Whether it has enough annotations.
    pub is_labeled: bool,
    /// Annotations wanted.
    pub overlap: i64,
    /// Whether it may be skipped.
    pub allow_skip: bool,
    /// Annotations that are not cancelled.
    pub total_annotations: i64,
    /// Cancelled annotations.
    pub cancelled_annotations: i64,
    /// Predictions.
    pub total_predictions: i64,
    /// The key of the object it was imported from, if any.
    pub storage_filename: Option<String>,
    /// Its annotations in Label Studio's JSON shape.
    pub annotations: Vec<Value>,
    /// Its predictions in Label Studio's JSON shape.
    pub predictions: Vec<Value>,
}

/// One page of a project's tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    /// The tasks of the page, by ascending id.
    pub tasks: Vec<TaskRecord>,
    /// Tasks in the project.
    pub total: u64,
    /// Annotations in the project.
    pub total_annotations: u64,
    /// Predictions in the project.
    pub total_predictions: u64,
}

/// Projects, tasks and annotations of the example host.
#[async_trait]
pub trait HostStore: Send + Sync + Debug {
    /// Creates a project in the caller's organisation.
    async fn create_project(&self, caller: &Caller, project: NewProject) -> Result<Project>;

    /// A project with its counters.
    async fn project(&self, id: i64) -> Result<Option<Project>>;

    /// Creates tasks (with their annotations and predictions) without a
    /// storage link. Returns the new task ids.
    async fn import_tasks(&self, project: i64, tasks: Vec<ParsedTask>) -> Result<Vec<i64>>;

    /// Tasks of a project; `page` is 1-based.
    async fn tasks(&self, project: i64, page: u64, page_size: u64) -> Result<TaskPage>;

    /// One task.
    async fn task(&self, id: i64) -> Result<Option<TaskRecord>>;

    /// Creates an annotation of `task` by `caller` from a Label Studio
    /// annotation body (`result`, `was_cancelled`, `ground_truth`,
    /// `lead_time`). Returns it in Label Studio's JSON shape.
    async fn create_annotation(
        &self,
        caller: &Caller,
        task: i64,
        body: &Map<String, Value>,
    ) -> Result<Value>;

    /// Updates the fields of `body` on annotation `id`.
    async fn update_annotation(
        &self,
        caller: &Caller,
        id: i64,
        body: &Map<String, Value>,
    ) -> Result<Option<Value>>;

    /// Deletes annotation `id`; returns its project when it existed.
    async fn delete_annotation(&self, id: i64) -> Result<Option<i64>>;

    /// The project of annotation `id`.
    async fn annotation_project(&self, id: i64) -> Result<Option<i64>>;
}

/// The first `$variable` of a labelling config: where Files-mode task data
/// is shown.
///
/// ```
/// let config = r#"<View><Image name="image" value="$image"/><Text name="t" value="$text"/></View>"#;
/// assert_eq!(storage_core::host::first_data_key(config).as_deref(), Some("image"));
/// ```
pub fn first_data_key(label_config: &str) -> Option<String> {
    static VARIABLE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = VARIABLE.get_or_init(|| {
        regex::Regex::new(r#"=\s*["']\$([A-Za-z_][A-Za-z0-9_]*)["']"#)
            .expect("static regex is valid")
    });
    re.captures(label_config).map(|c| c[1].to_string())
}

/// Task data as Label Studio shows and exports it: the Files-mode
/// placeholder `$undefined$` moved to the first data variable of the
/// labelling config (kept when the config has none).
pub fn shown_data(mut data: Map<String, Value>, label_config: &str) -> Map<String, Value> {
    if data.contains_key(UNDEFINED_DATA_KEY) {
        if let Some(key) = first_data_key(label_config) {
            if let Some(value) = data.remove(UNDEFINED_DATA_KEY) {
                data.insert(key, value);
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholder_moves_to_the_first_variable() {
        let data = json!({"$undefined$": "/data/local-files/?d=a.jpg"})
            .as_object()
            .unwrap()
            .clone();
        let shown = shown_data(
            data.clone(),
            "<View><Header value='$title'/><Image value=\"$image\"/></View>",
        );
        assert_eq!(
            Value::Object(shown),
            json!({"title": "/data/local-files/?d=a.jpg"})
        );
        assert_eq!(shown_data(data.clone(), "<View></View>"), data);
    }
}

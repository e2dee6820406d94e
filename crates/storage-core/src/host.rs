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
use crate::task_data::TaskData;
use crate::Result;

/// A labelling project with its counters.
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
    /// Its creator.
    pub created_by: UserRecord,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Counters kept with the project.
    pub counters: ProjectCounters,
}

/// What Label Studio counts of a project (its `with_counts()` fields),
/// kept up to date with every change so that reading them costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectCounters {
    /// Tasks (`task_number`).
    pub task_number: u64,
    /// Tasks with enough annotations (`finished_task_number`).
    pub finished_task_number: u64,
    /// Annotations not cancelled (`total_annotations_number`).
    pub total_annotations_number: u64,
    /// Predictions (`total_predictions_number`).
    pub total_predictions_number: u64,
    /// Tasks with at least one annotation neither cancelled nor ground
    /// truth (`num_tasks_with_annotations`).
    pub num_tasks_with_annotations: u64,
    /// Annotations neither cancelled nor ground truth
    /// (`useful_annotation_number`).
    pub useful_annotation_number: u64,
    /// Ground-truth annotations, cancelled or not (`ground_truth_number`).
    pub ground_truth_number: u64,
    /// Cancelled (skipped) annotations (`skipped_annotations_number`).
    pub skipped_annotations_number: u64,
}

/// A user as the host surface shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Id.
    pub id: i64,
    /// E-mail address (also the username).
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// The user's organisation.
    pub organization: i64,
    /// When the user was created.
    pub date_joined: DateTime<Utc>,
}

/// A caller's labelling queue in a project, as Label Studio counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queue {
    /// Tasks not finished and not annotated by the caller, plus the tasks
    /// the caller annotated (`queue_total`).
    pub total: u64,
    /// Tasks the caller annotated, cancelled or not (`queue_done`).
    pub done: u64,
}

/// One page of an organisation's projects.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectPage {
    /// The projects of the page, newest first.
    pub projects: Vec<Project>,
    /// Projects of the organisation.
    pub count: u64,
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
    pub data: TaskData,
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
    /// Whether that object still holds the task's data: false once a sync
    /// following the bucket found it gone, or changed under the task's
    /// annotations (the link's `object_exists`); `None` without a link.
    pub storage_object_exists: Option<bool>,
    /// Its annotations in Label Studio's JSON shape.
    pub annotations: Vec<Value>,
    /// Its predictions in Label Studio's JSON shape.
    pub predictions: Vec<Value>,
}

/// A task of a page, and the size of its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSize {
    /// Id.
    pub id: i64,
    /// Bytes of its data as stored.
    pub data_bytes: u64,
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

    /// The projects of an organisation, newest first; `page` is 1-based.
    async fn projects(&self, organization: i64, page: u64, page_size: u64) -> Result<ProjectPage>;

    /// The queue of `user` in `project`.
    async fn queue(&self, project: i64, user: i64) -> Result<Queue>;

    /// A user.
    async fn user(&self, id: i64) -> Result<Option<UserRecord>>;

    /// Annotation `id` in Label Studio's JSON shape.
    async fn annotation(&self, id: i64) -> Result<Option<Value>>;

    /// Creates tasks (with their annotations and predictions) without a
    /// storage link. Returns the new task ids.
    async fn import_tasks(&self, project: i64, tasks: Vec<ParsedTask>) -> Result<Vec<i64>>;

    /// The tasks of one page of a project (`page` is 1-based; by ascending
    /// id), each with the size of its data: what a task list needs to read
    /// a page in pieces of bounded size with [`HostStore::tasks_by_id`].
    async fn task_page(&self, project: i64, page: u64, page_size: u64) -> Result<Vec<TaskSize>>;

    /// The tasks `ids`, in that order; ids of tasks that are gone are left
    /// out.
    async fn tasks_by_id(&self, ids: &[i64]) -> Result<Vec<TaskRecord>>;

    /// The tasks `ids` (in that order, those gone left out) without their
    /// annotations, predictions and storage link (left empty): what a
    /// webhook's task payload shows, read faster. The default reads them
    /// whole.
    async fn bare_tasks(&self, ids: &[i64]) -> Result<Vec<TaskRecord>> {
        self.tasks_by_id(ids).await
    }

    /// One page of a project's tasks, read whole; `page` is 1-based.
    async fn tasks(&self, project: i64, page: u64, page_size: u64) -> Result<TaskPage> {
        let counters = self
            .project(project)
            .await?
            .map(|p| p.counters)
            .unwrap_or_default();
        let ids: Vec<i64> = self
            .task_page(project, page, page_size)
            .await?
            .iter()
            .map(|task| task.id)
            .collect();
        Ok(TaskPage {
            tasks: self.tasks_by_id(&ids).await?,
            total: counters.task_number,
            total_annotations: counters.total_annotations_number,
            total_predictions: counters.total_predictions_number,
        })
    }

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

/// Task data as Label Studio shows and exports it: the Files-mode
/// placeholder `$undefined$` moved to `data_key`, the first data variable of
/// the labelling config ([`LabelConfig::first_data_key`]; kept when the
/// config has none).
///
/// ```
/// use storage_core::label_config::LabelConfig;
/// let config = LabelConfig::lenient(r#"<View><Image name="image" value="$image"/></View>"#);
/// let data = serde_json::json!({"$undefined$": "s3://b/a.jpg"});
/// let shown = storage_core::host::shown_data(data.as_object().unwrap().clone(), config.first_data_key());
/// assert_eq!(serde_json::Value::Object(shown), serde_json::json!({"image": "s3://b/a.jpg"}));
/// ```
///
/// [`LabelConfig::first_data_key`]: crate::label_config::LabelConfig::first_data_key
pub fn shown_data(mut data: Map<String, Value>, data_key: Option<&str>) -> Map<String, Value> {
    if let Some(key) = data_key {
        if let Some(value) = data.remove(UNDEFINED_DATA_KEY) {
            data.insert(key.to_string(), value);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label_config::LabelConfig;
    use serde_json::json;

    #[test]
    fn placeholder_moves_to_the_first_variable() {
        let data = json!({"$undefined$": "/data/local-files/?d=a.jpg"})
            .as_object()
            .unwrap()
            .clone();
        let key = |config: &str| {
            LabelConfig::lenient(config)
                .first_data_key()
                .map(String::from)
        };
        let config =
            "<View><Header name='h' value='$title'/><Image name='i' value=\"$image\"/></View>";
        let shown = shown_data(data.clone(), key(config).as_deref());
        assert_eq!(
            Value::Object(shown),
            json!({"title": "/data/local-files/?d=a.jpg"})
        );
        assert_eq!(
            shown_data(data.clone(), key("<View></View>").as_deref()),
            data
        );
    }
}

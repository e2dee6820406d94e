//! The actions a webhook can be sent for: Label Studio's catalogue (its
//! `WebhookAction.ACTIONS`, as `GET /api/webhooks/info/` lists it) and the
//! sync actions this server adds.

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::SyncStatus;

/// One action of the catalogue.
///
/// ```
/// use storage_core::webhooks::Action;
/// let action: Action = "TASKS_CREATED".parse().unwrap();
/// assert_eq!(action.payload_key(), "tasks");
/// assert!(!action.organization_only());
/// assert!("TASK_CREATED".parse::<Action>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// A project was created (organisation webhooks only).
    ProjectCreated,
    /// A project was updated.
    ProjectUpdated,
    /// A project was deleted (organisation webhooks only).
    ProjectDeleted,
    /// Tasks were created (import, storage sync).
    TasksCreated,
    /// Tasks were deleted.
    TasksDeleted,
    /// An annotation was created.
    AnnotationCreated,
    /// Annotations were created in bulk.
    AnnotationsCreated,
    /// An annotation was updated.
    AnnotationUpdated,
    /// Annotations were deleted.
    AnnotationsDeleted,
    /// Label links were created.
    LabelLinkCreated,
    /// A label link was updated.
    LabelLinkUpdated,
    /// A label link was deleted.
    LabelLinkDeleted,
    /// Extension: a storage sync started (a worker took it).
    StorageSyncStarted,
    /// Extension: a storage sync ended `completed` or
    /// `completed_with_errors`.
    StorageSyncCompleted,
    /// Extension: a storage sync ended `failed`.
    StorageSyncFailed,
}

impl Action {
    /// Every action, in Label Studio's order, then the extensions.
    pub const ALL: [Action; 15] = [
        Action::ProjectCreated,
        Action::ProjectUpdated,
        Action::ProjectDeleted,
        Action::TasksCreated,
        Action::TasksDeleted,
        Action::AnnotationCreated,
        Action::AnnotationsCreated,
        Action::AnnotationUpdated,
        Action::AnnotationsDeleted,
        Action::LabelLinkCreated,
        Action::LabelLinkUpdated,
        Action::LabelLinkDeleted,
        Action::StorageSyncStarted,
        Action::StorageSyncCompleted,
        Action::StorageSyncFailed,
    ];

    /// The name on the wire (`TASKS_CREATED`).
    pub fn as_str(self) -> &'static str {
        self.describe().0
    }

    /// The human name `info` shows (`Task created`).
    pub fn name(self) -> &'static str {
        self.describe().1
    }

    /// The key of the body that carries the payload (`tasks`).
    pub fn payload_key(self) -> &'static str {
        self.describe().2
    }

    /// Whether only an organisation webhook (no project) may carry it.
    pub fn organization_only(self) -> bool {
        matches!(self, Action::ProjectCreated | Action::ProjectDeleted)
    }

    /// Wire name, human name, payload key.
    fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Action::ProjectCreated => ("PROJECT_CREATED", "Project created", "project"),
            Action::ProjectUpdated => ("PROJECT_UPDATED", "Project updated", "project"),
            Action::ProjectDeleted => ("PROJECT_DELETED", "Project deleted", "project"),
            Action::TasksCreated => ("TASKS_CREATED", "Task created", "tasks"),
            Action::TasksDeleted => ("TASKS_DELETED", "Task deleted", "tasks"),
            Action::AnnotationCreated => ("ANNOTATION_CREATED", "Annotation created", "annotation"),
            Action::AnnotationsCreated => {
                ("ANNOTATIONS_CREATED", "Annotations created", "annotation")
            }
            Action::AnnotationUpdated => ("ANNOTATION_UPDATED", "Annotation updated", "annotation"),
            Action::AnnotationsDeleted => {
                ("ANNOTATIONS_DELETED", "Annotation deleted", "annotations")
            }
            Action::LabelLinkCreated => ("LABEL_LINK_CREATED", "Label link created", "label_link"),
            Action::LabelLinkUpdated => ("LABEL_LINK_UPDATED", "Label link updated", "label_link"),
            Action::LabelLinkDeleted => ("LABEL_LINK_DELETED", "Label link deleted", "label_link"),
            Action::StorageSyncStarted => {
                ("STORAGE_SYNC_STARTED", "Storage sync started", "storage")
            }
            Action::StorageSyncCompleted => (
                "STORAGE_SYNC_COMPLETED",
                "Storage sync completed",
                "storage",
            ),
            Action::StorageSyncFailed => ("STORAGE_SYNC_FAILED", "Storage sync failed", "storage"),
        }
    }

    /// The catalogue as `GET /api/webhooks/info/` answers it:
    /// `{ACTION: {"name", "description", "key", "organization-only"}}`,
    /// only the actions whose `organization-only` equals `organization_only`
    /// when it is given.
    pub fn catalogue(organization_only: Option<bool>) -> Value {
        let mut out = Map::new();
        for action in Action::ALL {
            if organization_only.is_some_and(|only| only != action.organization_only()) {
                continue;
            }
            out.insert(
                action.as_str().into(),
                json!({
                    "name": action.name(),
                    "description": "",
                    "key": action.payload_key(),
                    "organization-only": action.organization_only(),
                }),
            );
        }
        Value::Object(out)
    }

    /// The sync action a move of a storage's status announces, if any:
    /// `queued → in_progress` starts a sync, `in_progress → completed |
    /// completed_with_errors` completes it, a move to `failed` (from
    /// `in_progress`, or from `queued` when the job never started) fails
    /// it. Progress writes (`in_progress → in_progress`), requests
    /// (`→ queued`) and resumptions announce nothing.
    ///
    /// ```
    /// use storage_core::webhooks::Action;
    /// use storage_core::SyncStatus::*;
    /// assert_eq!(Action::of_sync_move(Queued, InProgress), Some(Action::StorageSyncStarted));
    /// assert_eq!(Action::of_sync_move(InProgress, InProgress), None);
    /// ```
    pub fn of_sync_move(from: SyncStatus, to: SyncStatus) -> Option<Action> {
        match (from, to) {
            (SyncStatus::Queued, SyncStatus::InProgress) => Some(Action::StorageSyncStarted),
            (SyncStatus::InProgress, SyncStatus::Completed | SyncStatus::CompletedWithErrors) => {
                Some(Action::StorageSyncCompleted)
            }
            (SyncStatus::Queued | SyncStatus::InProgress, SyncStatus::Failed) => {
                Some(Action::StorageSyncFailed)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAction(pub String);

impl fmt::Display for UnknownAction {
    /// Django REST framework's message for a bad choice.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" is not a valid choice.", self.0)
    }
}

impl std::error::Error for UnknownAction {}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
    }

    #[test]
    fn catalogue_filters_on_organization_only() {
        let all = Action::catalogue(None);
        assert_eq!(all.as_object().unwrap().len(), 15);
        assert_eq!(
            all["TASKS_CREATED"],
            json!({"name": "Task created", "description": "", "key": "tasks", "organization-only": false})
        );
        let only = Action::catalogue(Some(true));
        let keys: Vec<&String> = only.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["PROJECT_CREATED", "PROJECT_DELETED"]);
        assert_eq!(
            Action::catalogue(Some(false)).as_object().unwrap().len(),
            13
        );
    }

    #[test]
    fn only_starts_and_ends_of_syncs_are_announced() {
        use SyncStatus::*;
        let announced = |from, to| Action::of_sync_move(from, to);
        assert_eq!(
            announced(InProgress, Completed),
            Some(Action::StorageSyncCompleted)
        );
        assert_eq!(
            announced(InProgress, CompletedWithErrors),
            Some(Action::StorageSyncCompleted)
        );
        assert_eq!(
            announced(InProgress, Failed),
            Some(Action::StorageSyncFailed)
        );
        assert_eq!(announced(Queued, Failed), Some(Action::StorageSyncFailed));
        for (from, to) in [
            (Completed, Queued),
            (Initialized, Queued),
            (InProgress, Queued),
            (InProgress, InProgress),
            (Failed, Queued),
        ] {
            assert_eq!(announced(from, to), None, "{from} -> {to}");
        }
    }
}

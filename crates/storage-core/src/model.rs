//! The storage record: common fields, type-specific settings and sync state.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::fields::Settings;
use crate::SyncStatus;

/// Import storages (sources) turn objects into tasks; export storages
/// (targets) receive annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// A source of tasks.
    Import,
    /// A target for annotations.
    Export,
}

impl StorageKind {
    /// `import` or `export`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::Export => "export",
        }
    }
}

impl std::str::FromStr for StorageKind {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "import" => Ok(Self::Import),
            "export" => Ok(Self::Export),
            other => Err(crate::Error::invalid(
                "kind",
                format!("unknown storage kind {other:?}"),
            )),
        }
    }
}

/// The progress and outcome of a storage's syncs (read-only to clients).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncState {
    /// Where the last sync stands.
    pub status: SyncStatus,
    /// When the last sync finished.
    pub last_sync: Option<DateTime<Utc>>,
    /// Tasks created (import) or annotations written (export) by the last
    /// sync; while it runs, the count so far.
    pub last_sync_count: Option<i64>,
    /// The id of the last sync job.
    pub last_sync_job: Option<String>,
    /// What went wrong in the last sync.
    pub traceback: Option<String>,
    /// Timings and counters (`attempts`, `time_queued`, `duration`, ...).
    pub meta: Map<String, Value>,
    /// Until when the running job's worker holds the storage; a job whose
    /// lease ran out is taken to have died (not on the wire).
    pub lease_until: Option<DateTime<Utc>>,
}

impl Default for SyncState {
    fn default() -> Self {
        Self {
            status: SyncStatus::Initialized,
            last_sync: None,
            last_sync_count: None,
            last_sync_job: None,
            traceback: None,
            meta: Map::new(),
            lease_until: None,
        }
    }
}

/// A stored storage connection.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Unique across every type and kind.
    pub id: i64,
    /// Import or export.
    pub kind: StorageKind,
    /// The backend's type name (`localfiles`, `s3`, ...).
    pub storage_type: String,
    /// The project the storage belongs to.
    pub project: i64,
    /// At most 256 characters.
    pub title: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Whether sync requests are accepted.
    pub synchronizable: bool,
    /// Type-specific fields and import/export options, secrets included.
    pub settings: Settings,
    /// Sync progress and outcome.
    pub sync: SyncState,
}

impl Storage {
    /// The record of `new` once stored under `id` at `created_at`: every
    /// repository creates storages this way, before any sync.
    pub fn new(id: i64, new: NewStorage, created_at: DateTime<Utc>) -> Self {
        Self {
            id,
            kind: new.kind,
            storage_type: new.storage_type,
            project: new.project,
            title: new.title,
            description: new.description,
            created_at,
            synchronizable: new.synchronizable,
            settings: new.settings,
            sync: SyncState::default(),
        }
    }
}

/// What is needed to create a storage.
#[derive(Debug, Clone)]
pub struct NewStorage {
    /// Import or export.
    pub kind: StorageKind,
    /// The backend's type name.
    pub storage_type: String,
    /// The project.
    pub project: i64,
    /// At most 256 characters.
    pub title: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Whether sync requests are accepted.
    pub synchronizable: bool,
    /// Validated settings.
    pub settings: Settings,
}

/// Formats a time as Label Studio writes times into `meta`
/// (Python's `str(datetime)`: `2024-01-01 12:00:00.123456+00:00`).
pub fn meta_time(at: DateTime<Utc>) -> Value {
    Value::String(at.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string())
}

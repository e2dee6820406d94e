//! Progress of a running sync, shared by the import and export engines and
//! read by the job runner (which persists it, throttled).

use crate::Result;

/// Counters of a running or finished import.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImportProgress {
    /// Objects that passed the filters.
    pub objects: u64,
    /// Tasks created by this run.
    pub created: u64,
    /// Tasks already linked to the objects seen (`meta.tasks_existed`).
    pub existed: u64,
    /// Task files that could not be turned into tasks.
    pub failed_files: u64,
    /// Linked objects whose listing entry changed (`meta.objects_changed`;
    /// with `on_object_changed: update`).
    pub changed: u64,
    /// Tasks whose data was replaced from their changed object
    /// (`meta.tasks_updated`).
    pub updated: u64,
    /// Tasks deleted because their object or row is gone
    /// (`meta.tasks_deleted`).
    pub deleted: u64,
    /// Links newly marked `object_exists = false` (`meta.tasks_marked`).
    pub marked: u64,
    /// Linked objects the listing no longer holds (`meta.objects_missing`;
    /// with `on_object_deleted` other than `keep`).
    pub missing: u64,
    /// Parts the listing was split into (`meta.shards`, see
    /// [`crate::shards`]); 0 for one listing.
    pub shards: u64,
}

/// Counters of a running or finished export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportProgress {
    /// Annotations of the project when the export started.
    pub total: u64,
    /// Objects written.
    pub written: u64,
    /// Objects that could not be written.
    pub failed: u64,
}

/// Progress of either engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Of an import.
    Import(ImportProgress),
    /// Of an export.
    Export(ExportProgress),
}

/// Receives progress while an import or export runs; an error stops the
/// run (the job lost its lease or is being shut down).
pub trait ProgressSink: Send + Sync {
    /// Called after every batch.
    fn report(&self, progress: &Progress) -> Result<()>;
}

/// A sink that ignores progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _: &Progress) -> Result<()> {
        Ok(())
    }
}

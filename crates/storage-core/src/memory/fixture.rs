//! The setup of most import tests: one project, one import storage.

use super::{InMemory, MemoryTask};
use crate::follow::FollowPolicy;
use crate::import::{ImportConfig, ImportJob, ImportOutcome, ProgressSink};
use crate::persist::ObjectLink;
use crate::{ImportStorage, Result, StorageKind};

/// An in-memory database with one project and one import storage in it,
/// and the import engine run against them.
///
/// ```
/// # tokio_test::block_on(async {
/// use storage_core::memory::ImportFixture;
///
/// let fixture = ImportFixture::new("s3");
/// assert!(fixture.db.tasks(fixture.project).is_empty());
/// assert!(fixture.task_of("a.json").is_none());
/// # });
/// ```
#[derive(Debug)]
pub struct ImportFixture {
    /// The database.
    pub db: InMemory,
    /// The project that receives the tasks.
    pub project: i64,
    /// The import storage whose links dedupe the objects.
    pub storage: i64,
}

impl ImportFixture {
    /// Project 1 and an import storage of `storage_type` in it.
    pub fn new(storage_type: &str) -> Self {
        let db = InMemory::new();
        let project = db.add_project(1);
        let storage = db.add_storage(project, StorageKind::Import, storage_type);
        Self {
            db,
            project,
            storage,
        }
    }

    /// Imports `source` into the project through the storage (Files mode
    /// when `use_blob_urls`).
    pub async fn import(
        &self,
        source: &dyn ImportStorage,
        use_blob_urls: bool,
        config: &ImportConfig,
        progress: &dyn ProgressSink,
    ) -> Result<ImportOutcome> {
        self.import_following(
            source,
            use_blob_urls,
            FollowPolicy::default(),
            config,
            progress,
        )
        .await
    }

    /// [`ImportFixture::import`] following the bucket as `follow` says.
    pub async fn import_following(
        &self,
        source: &dyn ImportStorage,
        use_blob_urls: bool,
        follow: FollowPolicy,
        config: &ImportConfig,
        progress: &dyn ProgressSink,
    ) -> Result<ImportOutcome> {
        ImportJob {
            storage_id: self.storage,
            project: self.project,
            source,
            use_blob_urls,
            sink: &self.db,
            config,
            follow,
        }
        .run(progress)
        .await
    }

    /// The task linked to `key` and its link, if the key was imported.
    pub fn task_of(&self, key: &str) -> Option<(MemoryTask, ObjectLink)> {
        let link = self
            .db
            .links(self.storage)
            .into_iter()
            .find(|l| l.link.key == key)?;
        let task = self
            .db
            .tasks(self.project)
            .into_iter()
            .find(|t| t.id == link.task_id)?;
        Some((task, link.link))
    }
}

//! The local-files backend: configuration, checks and the two storages.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use storage_core::fields::{export_fields, import_fields, FieldSpec};
use storage_core::filter::{Listing, RegexTarget};
use storage_core::{
    Backend, Error, ExportStorage, FileServer, ImportOptions, ImportStorage, Result, Settings,
    StorageKind,
};

use crate::confined::ConfinedStore;
use crate::paths::{local_files_url, normalize_path};
use crate::serving::LocalFileServer;
use crate::watch::FolderWatch;
use storage_core::events::EventFeed;

/// Server-wide local-files configuration.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let local = storage_localfiles::LocalFiles::new(dir.path())
///     .unwrap()
///     .with_serving_enabled(true)
///     .with_url_base("http://localhost:8080");
/// assert!(local.serving_enabled());
/// ```
#[derive(Debug, Clone)]
pub struct LocalFiles {
    document_root: PathBuf,
    shown_root: String,
    serving_enabled: bool,
    url_base: String,
}

impl LocalFiles {
    /// Uses `document_root` (which must exist) as `LOCAL_FILES_DOCUMENT_ROOT`.
    /// Serving is off until [`LocalFiles::with_serving_enabled`].
    pub fn new(document_root: impl AsRef<FsPath>) -> Result<Self> {
        let shown = document_root.as_ref().to_string_lossy().to_string();
        let canonical = document_root.as_ref().canonicalize().map_err(|e| {
            Error::invalid(
                "LOCAL_FILES_DOCUMENT_ROOT",
                format!("document root \"{shown}\" cannot be used: {e}"),
            )
        })?;
        Ok(Self {
            shown_root: normalize_path(&canonical.to_string_lossy()),
            document_root: canonical,
            serving_enabled: false,
            url_base: String::new(),
        })
    }

    /// `LOCAL_FILES_SERVING_ENABLED`: storages and `/data/local-files/`
    /// are refused unless it is on.
    pub fn with_serving_enabled(mut self, enabled: bool) -> Self {
        self.serving_enabled = enabled;
        self
    }

    /// The absolute base of task URLs (Label Studio's `HOST`); empty gives
    /// relative URLs.
    pub fn with_url_base(mut self, base: impl Into<String>) -> Self {
        self.url_base = base.into().trim_end_matches('/').to_string();
        self
    }

    /// The canonical document root.
    pub fn document_root(&self) -> &FsPath {
        &self.document_root
    }

    /// Whether serving is enabled.
    pub fn serving_enabled(&self) -> bool {
        self.serving_enabled
    }

    /// Checks a normalised storage path with Label Studio's rules and
    /// messages. Returns its canonical form.
    fn check_path(&self, path: &str) -> Result<PathBuf> {
        let root = &self.shown_root;
        if path.is_empty() || path == "." {
            return Err(Error::invalid_general(
                "Path must be set for Local Files storage",
            ));
        }
        if !path.starts_with('/') {
            return Err(Error::invalid_general(format!(
                "Absolute local path \"{path}\" must be absolute (start with \"/\"). For example: \"{root}/dataset1\"."
            )));
        }
        let outside = || {
            Error::invalid_general(format!(
                "Absolute local path \"{path}\" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. For example: \"{root}/dataset1\"."
            ))
        };
        // A missing path outside the root gets the same answer as an
        // existing one, so this check cannot probe the server's files
        // (Label Studio says "does not exist" first).
        let canonical = FsPath::new(path).canonicalize().map_err(|_| {
            if FsPath::new(path).starts_with(&self.document_root) {
                Error::invalid_general(format!("Absolute local path \"{path}\" does not exist"))
            } else {
                outside()
            }
        })?;
        if canonical == self.document_root {
            return Err(Error::invalid_general(format!(
                "Absolute local path \"{path}\" cannot be the same as LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. Please add a subdirectory. For example: \"{root}/dataset1\"."
            )));
        }
        if !canonical.starts_with(&self.document_root) {
            return Err(outside());
        }
        if !canonical.is_dir() {
            return Err(Error::invalid_general(format!(
                "Absolute local path \"{path}\" is not a directory"
            )));
        }
        if !self.serving_enabled {
            return Err(Error::invalid_general(
                "Serving local files can be dangerous, so it's disabled by default. \
                 You can enable it with LOCAL_FILES_SERVING_ENABLED environment variable, \
                 and set LOCAL_FILES_DOCUMENT_ROOT to the folder that holds your data.",
            ));
        }
        Ok(canonical)
    }

    /// The canonical directory of checked settings.
    fn directory(&self, settings: &Settings) -> Result<PathBuf> {
        self.check_path(&normalize_path(settings.str("path").unwrap_or_default()))
    }

    /// The path of `file` (canonical) relative to the document root.
    fn relative_to_root(&self, file: &FsPath) -> String {
        file.strip_prefix(&self.document_root)
            .unwrap_or(file)
            .to_string_lossy()
            .to_string()
    }
}

/// The `localfiles` storage type.
#[derive(Debug, Clone)]
pub struct LocalFilesBackend {
    local: LocalFiles,
    server: Arc<LocalFileServer>,
}

impl LocalFilesBackend {
    /// A backend serving under `local`'s document root.
    pub fn new(local: LocalFiles) -> Self {
        let server = Arc::new(LocalFileServer::new(local.document_root.clone()));
        Self { local, server }
    }

    /// The server-wide configuration.
    pub fn local_files(&self) -> &LocalFiles {
        &self.local
    }

    fn store(dir: &FsPath) -> Result<Arc<dyn ObjectStore>> {
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::from_object_store(format!("opening \"{}\"", dir.display()), e))?;
        Ok(Arc::new(store))
    }
}

fn path_field() -> FieldSpec {
    FieldSpec::string(
        "path",
        "Absolute local path below LOCAL_FILES_DOCUMENT_ROOT",
    )
}

/// `watch` (an extension): follow the folder's changes as they happen.
fn watch_field() -> FieldSpec {
    FieldSpec {
        name: WATCH_FIELD,
        ty: storage_core::FieldType::Bool,
        nullable: false,
        default: serde_json::Value::Bool(false),
        secret: false,
        help: "Watch the folder (inotify): files created, moved in, changed or deleted become \
               task changes within a fraction of a second, without a sync",
    }
}

pub use storage_core::events::WATCH_FIELD;

#[async_trait]
impl Backend for LocalFilesBackend {
    fn name(&self) -> &'static str {
        "localfiles"
    }

    fn title(&self) -> &'static str {
        "Local files"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        let mut fields = vec![path_field()];
        match kind {
            StorageKind::Import => {
                fields.extend(import_fields());
                fields.push(watch_field());
            }
            StorageKind::Export => fields.extend(export_fields()),
        }
        fields
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let path = normalize_path(settings.str("path").unwrap_or_default());
        self.local.check_path(&path)?;
        settings.set("path", path.into());
        storage_core::fields::check_import_rules(settings, kind).map_err(Error::InvalidConfig)
    }

    fn file_server(&self) -> Option<Arc<dyn FileServer>> {
        let server: Arc<dyn FileServer> = self.server.clone();
        self.local.serving_enabled.then_some(server)
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let directory = self.local.directory(settings)?;
        let options = ImportOptions::from_settings(settings);
        // Reads are confined to the document root at the moment of reading:
        // a folder swapped for a symlink after the listing leads nowhere.
        let store = ConfinedStore::new(directory.clone(), self.local.document_root.clone())
            .map_err(|e| {
                Error::from_object_store(format!("opening \"{}\"", directory.display()), e)
            })?;
        Ok(Arc::new(LocalImport {
            store: Arc::new(store),
            listing: Listing::new(
                None,
                options.recursive_scan,
                options.regex_filter.as_deref(),
                RegexTarget::FileName,
            )?,
            key_base: normalize_path(settings.str("path").unwrap_or_default()),
            directory: directory.clone(),
            root: self.local.document_root.clone(),
            url_base: self.local.url_base.clone(),
            relative_dir: self.local.relative_to_root(&directory),
            unlisted: Arc::default(),
        }))
    }

    async fn event_feed(&self, settings: &Settings) -> Result<Option<Box<dyn EventFeed>>> {
        if !settings.bool(WATCH_FIELD, false) {
            return Ok(None);
        }
        let directory = self.local.directory(settings)?;
        let watch = FolderWatch::new(
            directory,
            normalize_path(settings.str("path").unwrap_or_default()),
            ImportOptions::from_settings(settings).recursive_scan,
        )?;
        Ok(Some(Box::new(watch)))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let directory = self.local.directory(settings)?;
        Ok(Arc::new(LocalExport {
            store: Self::store(&directory)?,
            can_delete_objects: settings.bool("can_delete_objects", false),
        }))
    }
}

/// A local-files import storage.
#[derive(Debug)]
pub struct LocalImport {
    store: Arc<dyn ObjectStore>,
    directory: PathBuf,
    /// The canonical document root, which symlinks may not leave.
    root: PathBuf,
    listing: Listing,
    key_base: String,
    url_base: String,
    relative_dir: String,
    /// Files the listings left out for their names, until the import takes
    /// them.
    unlisted: Arc<std::sync::Mutex<storage_core::Unlisted>>,
}

#[async_trait]
impl ImportStorage for LocalImport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn listing(&self) -> &Listing {
        &self.listing
    }

    /// Files are streamed from the folder rather than collected: memory
    /// stays flat for folders of millions of files. Files reached through
    /// a symlink that leads out of the document root are left out (their
    /// contents would otherwise become tasks), and a file whose name cannot
    /// become a task is reported, not a reason to fail the listing.
    fn list_within(
        &self,
        listing: &Listing,
    ) -> futures::stream::BoxStream<'static, Result<object_store::ObjectMeta>> {
        crate::listing::stream_files(
            self.directory.clone(),
            listing
                .prefix
                .as_ref()
                .map(|folder| folder.as_ref().to_string()),
            self.root.clone(),
            self.key_base.clone(),
            listing.recursive,
            self.unlisted.clone(),
        )
    }

    /// The folder's subfolders (and links to folders), read directly: the
    /// store's delimited listing would also read the metadata of every
    /// file beside them. `None` when a name is not UTF-8 (no part could
    /// name it).
    async fn folders(&self) -> Result<Option<Vec<String>>> {
        let directory = self.directory.clone();
        let context = format!("listing the folders of \"{}\"", directory.display());
        tokio::task::spawn_blocking(move || crate::listing::folder_names(&directory))
            .await
            .map_err(|err| Error::backend(context.clone(), err))?
            .map_err(|err| Error::backend(context, err))
    }

    /// Small files are read a group per blocking call (up to 64 files or
    /// 1 MiB as listed): a `get` each costs two hand-offs to a blocking
    /// thread and back, which on a folder of one-task files costs more than
    /// the reads themselves.
    fn read_small(
        &self,
        objects: Vec<object_store::ObjectMeta>,
        concurrency: usize,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Bytes>> {
        let (directory, root) = (self.directory.clone(), self.root.clone());
        futures::stream::iter(read_groups(objects))
            .map(move |group| crate::confined::read_group(directory.clone(), root.clone(), group))
            .buffered(concurrency.max(1))
            .flat_map(futures::stream::iter)
            .boxed()
    }

    fn take_unlisted(&self) -> storage_core::Unlisted {
        std::mem::take(
            &mut *self
                .unlisted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn object_key(&self, location: &Path) -> String {
        format!("{}/{}", self.key_base, location.as_ref())
    }

    fn location_of(&self, key: &str) -> Option<Path> {
        let relative = key.strip_prefix(&self.key_base)?.strip_prefix('/')?;
        Path::parse(relative).ok()
    }

    fn task_url(&self, location: &Path) -> String {
        local_files_url(
            &self.url_base,
            &format!("{}/{}", self.relative_dir, location.as_ref()),
        )
    }

    async fn check_connection(&self) -> Result<()> {
        // The path checks already proved the directory exists; Label Studio
        // accepts an empty local directory.
        Ok(())
    }
}

/// Most files one blocking call of [`LocalImport::read_small`] reads.
const READ_GROUP_FILES: usize = 64;
/// Most bytes (as listed) one blocking call of [`LocalImport::read_small`]
/// reads, unless one file alone is larger.
const READ_GROUP_BYTES: u64 = 1 << 20;

/// `objects` cut into groups of at most [`READ_GROUP_FILES`] files and
/// [`READ_GROUP_BYTES`], in order.
fn read_groups(objects: Vec<object_store::ObjectMeta>) -> Vec<Vec<object_store::ObjectMeta>> {
    let mut groups: Vec<Vec<object_store::ObjectMeta>> = Vec::new();
    let mut bytes = 0;
    for object in objects {
        let full = groups.last().is_none_or(|group| {
            group.len() >= READ_GROUP_FILES || bytes + object.size > READ_GROUP_BYTES
        });
        if full {
            groups.push(Vec::new());
            bytes = 0;
        }
        bytes += object.size;
        groups.last_mut().expect("a group was pushed").push(object);
    }
    groups
}

/// A local-files export storage: one pretty-printed JSON file per
/// annotation in the storage directory.
#[derive(Debug)]
pub struct LocalExport {
    store: Arc<dyn ObjectStore>,
    can_delete_objects: bool,
}

#[async_trait]
impl ExportStorage for LocalExport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    fn location(&self, key: &str) -> Path {
        Path::from(key)
    }

    fn pretty_json(&self) -> bool {
        true
    }

    fn can_delete_objects(&self) -> bool {
        self.can_delete_objects
    }

    async fn check_connection(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(size: u64) -> object_store::ObjectMeta {
        object_store::ObjectMeta {
            location: Path::from("f.json"),
            last_modified: std::time::SystemTime::UNIX_EPOCH.into(),
            size,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn read_groups_hold_at_most_their_files_and_bytes_in_order() {
        let sizes: Vec<u64> = (0..150)
            .map(|_| 10)
            .chain([READ_GROUP_BYTES * 2, 5])
            .collect();
        let groups = read_groups(sizes.iter().map(|&size| object(size)).collect());
        let lens: Vec<usize> = groups.iter().map(Vec::len).collect();
        // 150 small files in 64 + 64 + 22; a file over the byte budget
        // alone; the next one starts a new group.
        assert_eq!(lens, [64, 64, 22, 1, 1]);
        let flat: Vec<u64> = groups.into_iter().flatten().map(|o| o.size).collect();
        assert_eq!(flat, sizes);
        assert!(read_groups(Vec::new()).is_empty());
    }
}

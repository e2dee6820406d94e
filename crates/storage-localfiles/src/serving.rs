//! `/data/local-files/?d=`: which file a request names and which storages
//! hold it, for the HTTP layer's file route. Both answers touch the file
//! system: callers run them off the async workers.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::path::Path;
use storage_core::{Error, FileServer, Result, ServedFile, Settings};

use crate::confined::ConfinedStore;
use crate::paths::{normalize_path, resolve_served_file};

/// Serves files below the document root, to callers who may see a project
/// with a local import storage whose folder holds the file.
#[derive(Debug)]
pub(crate) struct LocalFileServer {
    /// Canonical.
    document_root: PathBuf,
}

impl LocalFileServer {
    pub(crate) fn new(document_root: PathBuf) -> Self {
        Self { document_root }
    }

    /// `file` read from the document root, only while its real location
    /// stays below `limit`.
    fn confined(&self, file: &FsPath, limit: PathBuf) -> Result<ServedFile> {
        let not_found = || Error::not_found(format!("file \"{}\"", file.display()));
        let relative = file
            .strip_prefix(&self.document_root)
            .map_err(|_| not_found())?;
        let location = Path::parse(relative.to_string_lossy()).map_err(|_| not_found())?;
        let store = ConfinedStore::new(self.document_root.clone(), limit).map_err(|e| {
            Error::from_object_store(format!("opening \"{}\"", self.document_root.display()), e)
        })?;
        Ok(ServedFile {
            store: Arc::new(store),
            location,
            key: file.to_string_lossy().into_owned(),
        })
    }
}

impl FileServer for LocalFileServer {
    fn resolve(&self, requested: &str) -> Result<ServedFile> {
        let file = resolve_served_file(&self.document_root, requested)?;
        self.confined(&file, self.document_root.clone())
    }

    /// Compared by whole path segments, after resolving the storage
    /// folder's symlinks (the file's are resolved already); the file is
    /// then read only while it is still in that folder.
    fn within(&self, settings: &Settings, file: &ServedFile) -> Option<ServedFile> {
        let dir = PathBuf::from(normalize_path(settings.str("path")?))
            .canonicalize()
            .ok()?;
        let path = FsPath::new(&file.key);
        if !path.starts_with(&dir) {
            return None;
        }
        self.confined(path, dir).ok()
    }
}

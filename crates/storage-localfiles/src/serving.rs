//! `/data/local-files/?d=`: which file a request names and which storages
//! hold it, for the HTTP layer's file route.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
use storage_core::{Error, FileServer, Result, ServedFile, Settings};

use crate::paths::{normalize_path, resolve_served_file};

/// Serves files below the document root, to callers who may see a project
/// with a local import storage whose folder holds the file.
#[derive(Debug)]
pub(crate) struct LocalFileServer {
    document_root: PathBuf,
    /// Reads absolute paths: the file is already resolved and checked.
    store: Arc<dyn ObjectStore>,
}

impl LocalFileServer {
    pub(crate) fn new(document_root: PathBuf) -> Self {
        Self {
            document_root,
            store: Arc::new(LocalFileSystem::new()),
        }
    }
}

impl FileServer for LocalFileServer {
    fn resolve(&self, requested: &str) -> Result<ServedFile> {
        let file = resolve_served_file(&self.document_root, requested)?;
        let location = Path::from_absolute_path(&file)
            .map_err(|_| Error::not_found(format!("file \"{requested}\"")))?;
        Ok(ServedFile {
            store: self.store.clone(),
            location,
            key: file.to_string_lossy().into_owned(),
        })
    }

    /// Compared by whole path segments, after resolving the storage
    /// folder's symlinks (the file's are resolved already).
    fn holds(&self, settings: &Settings, file: &ServedFile) -> bool {
        let Some(path) = settings.str("path") else {
            return false;
        };
        let Ok(dir) = PathBuf::from(normalize_path(path)).canonicalize() else {
            return false;
        };
        FsPath::new(&file.key).starts_with(&dir)
    }
}

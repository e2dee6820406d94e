//! Streaming the direct children of a folder without holding their metadata
//! in memory (object_store's `list_with_delimiter` collects a whole listing
//! of `ObjectMeta`, hundreds of megabytes for a million files; only the
//! names are held here, to keep Label Studio's name order).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectMeta;
use storage_core::{Error, Result, Unlisted};

/// Objects listed ahead of the consumer.
const AHEAD: usize = 1024;

/// Streams the regular files in `dir` (with `recursive`, in its subfolders
/// too, depth first), with the same locations, times and ETags
/// `LocalFileSystem` gives them, each folder in name order. Symlinks are
/// followed only to files and folders below `root` (canonical), and never
/// back into a folder being listed: a link out of the document root is left
/// out, as a link that loops is.
///
/// A name that cannot become an object location (not UTF-8, or with control
/// characters, which object_store refuses) is recorded in `unlisted`, escaped,
/// under `key_base`, so that the import reports it; the other files are
/// listed as usual. A folder that cannot be read fails the listing.
///
/// With `below` (a folder name directly in `dir`, one part of a sharded
/// sync), only the files below that folder are listed, as the whole walk
/// would list them.
pub(crate) fn stream_files(
    dir: PathBuf,
    below: Option<String>,
    root: PathBuf,
    key_base: String,
    recursive: bool,
    unlisted: Arc<Mutex<Unlisted>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        let walk = Walk {
            root: &root,
            key_base: &key_base,
            recursive,
            unlisted: &unlisted,
            sender: &sender,
        };
        let mut ancestors = vec![dir.canonicalize().unwrap_or_else(|_| dir.clone())];
        let Some(folder) = below else {
            walk.folder(&dir, &[], &mut ancestors);
            return;
        };
        // The folder as the whole walk reaches it: a folder, or a link to
        // one below the root that does not lead back into `dir`.
        let path = dir.join(&folder);
        match path.canonicalize() {
            Ok(canonical)
                if canonical.starts_with(&root)
                    && canonical.is_dir()
                    && !ancestors.contains(&canonical) =>
            {
                ancestors.push(canonical);
                walk.folder(&path, folder.as_bytes(), &mut ancestors);
            }
            _ => {}
        }
    });
    tokio_stream_from(receiver)
}

/// One listing, walked on a blocking thread.
struct Walk<'a> {
    root: &'a std::path::Path,
    key_base: &'a str,
    recursive: bool,
    unlisted: &'a Mutex<Unlisted>,
    sender: &'a tokio::sync::mpsc::Sender<Result<ObjectMeta>>,
}

impl Walk<'_> {
    /// Lists `dir`, the folder at `relative` (raw bytes, `/`-separated)
    /// below the storage's folder; `ancestors` are the canonical folders
    /// being listed, `dir`'s included. False when the listing must stop (an
    /// error was sent, or nobody reads any more).
    fn folder(&self, dir: &std::path::Path, relative: &[u8], ancestors: &mut Vec<PathBuf>) -> bool {
        // Names only are collected, to list in name order as Label Studio
        // does; metadata is read while streaming.
        let names = match read_names(dir) {
            Ok(names) => names,
            Err(err) => {
                let context = format!("listing \"{}\"", dir.display());
                let _ = self.sender.blocking_send(Err(Error::backend(context, err)));
                return false;
            }
        };
        for raw in names.sorted() {
            let mut entry = relative.to_vec();
            if !entry.is_empty() {
                entry.push(b'/');
            }
            entry.extend_from_slice(raw);
            let Some(path) = child_path(dir, raw) else {
                self.report(&entry, "is not valid UTF-8");
                continue;
            };
            // lstat first: as cheap as stat, and only links pay for more.
            let (meta, canonical) = match std::fs::symlink_metadata(&path) {
                Ok(meta) if !meta.is_symlink() => (meta, None),
                Ok(_) => match (std::fs::metadata(&path), path.canonicalize()) {
                    (Ok(target), Ok(canonical)) if canonical.starts_with(self.root) => {
                        (target, Some(canonical))
                    }
                    // Dangling, or leading out of the root.
                    _ => continue,
                },
                // Vanished since it was read.
                Err(_) => continue,
            };
            if meta.is_dir() {
                if !self.recursive {
                    continue;
                }
                let canonical = canonical.unwrap_or_else(|| {
                    ancestors.last().map_or_else(
                        || path.clone(),
                        |parent| parent.join(path.file_name().unwrap_or_default()),
                    )
                });
                if ancestors.contains(&canonical) {
                    // A link back into a folder being listed: a loop.
                    continue;
                }
                ancestors.push(canonical);
                let go_on = self.folder(&path, &entry, ancestors);
                ancestors.pop();
                if !go_on {
                    return false;
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let location = std::str::from_utf8(&entry)
                .map_err(|_| "is not valid UTF-8")
                .and_then(|name| {
                    Path::parse(name).map_err(|_| {
                        "has control characters or other bytes a task URL cannot carry"
                    })
                });
            match location {
                Ok(location) => {
                    if self
                        .sender
                        .blocking_send(Ok(object_meta(location, &meta)))
                        .is_err()
                    {
                        return false;
                    }
                }
                Err(why) => self.report(&entry, why),
            }
        }
        true
    }

    /// Records a file whose name cannot become a task.
    fn report(&self, entry: &[u8], why: &str) {
        self.unlisted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(format!(
                "{}/{}: the file name {why}, so it cannot become a task; rename the file",
                self.key_base,
                entry.escape_ascii()
            ));
    }
}

/// The names of the folders (and links to folders) in `dir`; `None` when a
/// name is not UTF-8.
pub(crate) fn folder_names(dir: &std::path::Path) -> std::io::Result<Option<Vec<String>>> {
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let folder = file_type.is_dir()
            || (file_type.is_symlink() && entry.path().metadata().is_ok_and(|m| m.is_dir()));
        if folder {
            match entry.file_name().into_string() {
                Ok(name) => folders.push(name),
                Err(_) => return Ok(None),
            }
        }
    }
    Ok(Some(folders))
}

/// The names in `dir`.
fn read_names(dir: &std::path::Path) -> std::io::Result<NameList> {
    let mut names = NameList::default();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().as_encoded_bytes());
    }
    Ok(names)
}

/// The path of the entry `name` (raw bytes, as read from `dir`).
#[cfg(unix)]
fn child_path(dir: &std::path::Path, name: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Some(dir.join(std::ffi::OsStr::from_bytes(name)))
}

/// Elsewhere only UTF-8 names are turned back into paths (others cannot
/// become tasks anyway).
#[cfg(not(unix))]
fn child_path(dir: &std::path::Path, name: &[u8]) -> Option<PathBuf> {
    std::str::from_utf8(name).ok().map(|name| dir.join(name))
}

/// File names packed in one buffer: about 24 bytes a name instead of the
/// ~60 of a `Vec<OsString>`, which matters for folders of millions.
#[derive(Debug, Default)]
struct NameList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl NameList {
    fn push(&mut self, name: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }

    /// The names in byte order.
    fn sorted(&self) -> impl Iterator<Item = &[u8]> {
        let mut order: Vec<u32> = (0..self.ends.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.get(a as usize).cmp(self.get(b as usize)));
        order.into_iter().map(|index| self.get(index as usize))
    }
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<ObjectMeta>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
}

/// The file's inode, part of the ETag, as `LocalFileSystem` computes it.
#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

/// Elsewhere `LocalFileSystem` puts 0 in the ETag; so must we, or the ETags
/// of listed objects would not match the ones it gives on reads.
#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// The metadata `LocalFileSystem` gives a file (location, time, size, ETag).
pub(crate) fn object_meta(location: Path, meta: &std::fs::Metadata) -> ObjectMeta {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let micros = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    ObjectMeta {
        location,
        last_modified: modified.into(),
        size: meta.len(),
        e_tag: Some(format!("\"{:x}-{micros:x}-{:x}\"", inode(meta), meta.len())),
        version: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::local::LocalFileSystem;
    use object_store::ObjectStore;

    // Symlinks are made with the unix API.
    #[cfg(unix)]
    #[tokio::test]
    async fn matches_local_file_system_for_direct_children() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.jpg", "b c#1%.png", "sub/x.jpg"] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, name).unwrap();
        }
        std::os::unix::fs::symlink(dir.path().join("a.jpg"), dir.path().join("link.jpg")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.jpg"))
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        let streamed: Vec<ObjectMeta> = stream_files(
            root.clone(),
            None,
            root,
            String::new(),
            false,
            Arc::default(),
        )
        .try_collect()
        .await
        .unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let mut listed = store.list_with_delimiter(None).await.unwrap().objects;
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        assert_eq!(streamed, listed);
        assert_eq!(
            streamed
                .iter()
                .map(|m| m.location.as_ref())
                .collect::<Vec<_>>(),
            vec!["a.jpg", "b c#1%.png", "link.jpg"],
            "locations are the raw file names, as LocalFileSystem gives them"
        );
    }

    #[tokio::test]
    async fn a_missing_folder_is_an_error() {
        let result: Result<Vec<ObjectMeta>> = stream_files(
            PathBuf::from("/nonexistent/folder"),
            None,
            PathBuf::from("/"),
            String::new(),
            false,
            Arc::default(),
        )
        .try_collect()
        .await;
        assert!(result
            .unwrap_err()
            .to_string()
            .contains("listing \"/nonexistent/folder\""));
    }
}

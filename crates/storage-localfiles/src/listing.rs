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

/// Streams the regular files directly in `dir`, with the same locations,
/// times and ETags `LocalFileSystem` gives them, in name order. Symlinks are
/// followed only to files below `root` (canonical): a link out of the
/// document root is left out, as [`inside_root`] does for nested files.
///
/// A name that cannot become an object location (not UTF-8, or with control
/// characters, which object_store refuses) is recorded in `unlisted`, escaped,
/// under `key_base`, so that the import reports it.
pub(crate) fn stream_files(
    dir: PathBuf,
    root: PathBuf,
    key_base: String,
    unlisted: Arc<Mutex<Unlisted>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        let context = || format!("listing \"{}\"", dir.display());
        // Names only are collected, to list in name order as Label Studio
        // does; metadata is read while streaming.
        let mut names = NameList::default();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(entry) => names.push(entry.file_name().as_encoded_bytes()),
                        Err(err) => {
                            let _ = sender.blocking_send(Err(Error::backend(context(), err)));
                            return;
                        }
                    }
                }
            }
            Err(err) => {
                let _ = sender.blocking_send(Err(Error::backend(context(), err)));
                return;
            }
        }
        for raw in names.sorted() {
            let parsed = std::str::from_utf8(raw)
                .map_err(|_| "is not valid UTF-8")
                .and_then(|name| {
                    Path::parse(name)
                        .map(|location| (name, location))
                        .map_err(|_| {
                            "has control characters or other bytes a task URL cannot carry"
                        })
                });
            let (name, location) = match parsed {
                Ok(parsed) => parsed,
                Err(why) => {
                    if is_folder(&dir, raw) {
                        // Folders are not listed here (nor become tasks).
                        continue;
                    }
                    unlisted.lock().unwrap_or_else(PoisonError::into_inner).add(format!(
                        "{key_base}/{}: the file name {why}, so it cannot become a task; rename the file",
                        raw.escape_ascii()
                    ));
                    continue;
                }
            };
            let path = dir.join(name);
            // lstat first: as cheap as stat, and only links pay for more.
            let item = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => object_meta(location, &meta),
                Ok(meta) if meta.is_symlink() => match std::fs::metadata(&path) {
                    Ok(target)
                        if target.is_file()
                            && path.canonicalize().is_ok_and(|c| c.starts_with(&root)) =>
                    {
                        object_meta(location, &target)
                    }
                    _ => continue,
                },
                // Vanished since read_dir, a dangling link, a link out of
                // the root, or not a file.
                _ => continue,
            };
            if sender.blocking_send(Ok(item)).is_err() {
                return;
            }
        }
    });
    tokio_stream_from(receiver)
}

/// Whether the entry `name` (raw bytes, as read from `dir`) is a folder.
#[cfg(unix)]
fn is_folder(dir: &std::path::Path, name: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    std::fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(name))).is_ok_and(|m| m.is_dir())
}

/// Elsewhere names are Unicode and a bad one is reported whatever it is.
#[cfg(not(unix))]
fn is_folder(_dir: &std::path::Path, _name: &[u8]) -> bool {
    false
}

/// Whether the file `relative` (a listed location) below the canonical
/// `directory` is still below the canonical `root` once symlinks are
/// resolved. A direct child that is not a link needs one lstat; nested
/// files are resolved whole, as any folder on the way may be a link.
pub(crate) fn inside_root(
    directory: &std::path::Path,
    root: &std::path::Path,
    relative: &str,
) -> bool {
    let path = directory.join(relative);
    if !relative.contains('/') && std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_symlink()) {
        return true;
    }
    path.canonicalize().is_ok_and(|c| c.starts_with(root))
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
        let streamed: Vec<ObjectMeta> =
            stream_files(root.clone(), root, String::new(), Arc::default())
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
            PathBuf::from("/"),
            String::new(),
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

//! Reading local files race-free: open first, then check where the opened
//! file really is.
//!
//! Checking a path (resolving its symlinks) and then opening it again by
//! name leaves a window in which a folder on the way can be swapped for a
//! symlink to somewhere else. Here the file is opened once; the check is
//! made on the open descriptor (its path as the kernel knows it), and the
//! bytes are read from that same descriptor.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path as FsPath, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

const STORE: &str = "ConfinedLocalFiles";

/// Opens `path` for reading and returns it only if it is a regular file
/// whose real location is below `limit` (canonical); otherwise the error
/// kind is `NotFound`.
///
/// `O_NONBLOCK` keeps a FIFO put in the file's place from blocking the
/// thread forever; `O_NOCTTY` keeps a terminal from becoming ours.
pub(crate) fn open_below(path: &FsPath, limit: &FsPath) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let (file, meta) = regular(file)?;
    // Reported as missing: from this folder, the file is not there.
    if !real_path(&file, path)?.starts_with(limit) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the file now leads outside the folder it is read from",
        ));
    }
    Ok((file, meta))
}

/// `file` with its metadata if it is a regular file; otherwise the error
/// kind is `NotFound`.
fn regular(file: File) -> io::Result<(File, Metadata)> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// The folder reads must stay below, held open for a group of reads: on
/// Linux a file is then opened below it in one kernel call that refuses
/// every step outside it (`openat2` with `RESOLVE_BENEATH`), without
/// [`open_below`]'s `readlink` of the descriptor, which took half the time
/// of opening a small task file.
#[derive(Debug)]
struct Limit<'a> {
    path: &'a FsPath,
    #[cfg(target_os = "linux")]
    folder: Option<rustix::fd::OwnedFd>,
}

impl<'a> Limit<'a> {
    fn new(path: &'a FsPath) -> Self {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{open, Mode, OFlags};
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            Self {
                path,
                folder: open(path, flags, Mode::empty()).ok(),
            }
        }
        #[cfg(not(target_os = "linux"))]
        Self { path }
    }

    /// Opens `path` as [`open_below`] does, with the same answer.
    fn open(&self, path: &FsPath) -> io::Result<(File, Metadata)> {
        match self.open_beneath(path) {
            Some(file) => regular(file),
            None => open_below(path, self.path),
        }
    }

    /// `path` opened by the kernel's own confinement; `None` where that
    /// cannot decide (no `openat2`, an absolute symlink on the way, which
    /// it refuses even when it stays inside, or any other error), and
    /// [`open_below`] then does.
    #[cfg(target_os = "linux")]
    fn open_beneath(&self, path: &FsPath) -> Option<File> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let folder = self.folder.as_ref()?;
        let relative = path.strip_prefix(self.path).ok()?;
        if relative.as_os_str().is_empty() {
            return None;
        }
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        openat2(
            folder,
            relative,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH,
        )
        .ok()
        .map(File::from)
    }

    #[cfg(not(target_os = "linux"))]
    fn open_beneath(&self, _path: &FsPath) -> Option<File> {
        None
    }
}

/// Where the open `file` really is.
#[cfg(target_os = "linux")]
fn real_path(file: &File, _opened: &FsPath) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Where the open `file` really is: the resolved name, if it still names
/// the very file that was opened (same device and inode).
#[cfg(not(target_os = "linux"))]
fn real_path(file: &File, opened: &FsPath) -> io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let resolved = opened.canonicalize()?;
    let (now, then) = (std::fs::metadata(&resolved)?, file.metadata()?);
    if (now.dev(), now.ino()) != (then.dev(), then.ino()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the file changed while it was opened",
        ));
    }
    Ok(resolved)
}

/// Reads the files `objects` (locations below `directory`) whole, each
/// opened with [`open_below`], in order, in one blocking call: a group of
/// small files costs one hand-off to a blocking thread, not two a file.
pub(crate) async fn read_group(
    directory: PathBuf,
    limit: PathBuf,
    objects: Vec<ObjectMeta>,
) -> Vec<object_store::Result<Bytes>> {
    let files = objects.len();
    tokio::task::spawn_blocking(move || read_whole(&directory, &limit, &objects))
        .await
        .unwrap_or_else(|err| {
            let message = err.to_string();
            (0..files)
                .map(|_| Err(blocking_failed(message.clone())))
                .collect()
        })
}

/// A blocking read that did not return (its thread panicked or the
/// runtime is shutting down).
fn blocking_failed(
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: err.into(),
    }
}

fn read_whole(
    directory: &FsPath,
    limit: &FsPath,
    objects: &[ObjectMeta],
) -> Vec<object_store::Result<Bytes>> {
    let limit = Limit::new(limit);
    objects
        .iter()
        .map(|object| {
            let path = directory.join(object.location.as_ref());
            let read = |(file, meta): (File, Metadata)| {
                let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
                // Through `take`: `File::read_to_end` would ask the file
                // its size and position again (a statx and an lseek).
                file.take(u64::MAX)
                    .read_to_end(&mut bytes)
                    .map(|_| Bytes::from(bytes))
            };
            limit
                .open(&path)
                .and_then(read)
                .map_err(|e| open_error(e, &object.location))
        })
        .collect()
}

/// Bytes read per blocking call when a file is streamed. object_store's
/// own file streams read 8 KiB per call, each a hand-off to a blocking
/// thread and back: 131,072 of them for a 1 GiB task file.
const STREAM_CHUNK_BYTES: u64 = 1 << 20;

/// The bytes `range` of the open `file` (positioned at its start), read
/// [`STREAM_CHUNK_BYTES`] per blocking call.
fn chunked(
    file: File,
    range: Range<u64>,
    location: Path,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let state = (file, range.start, range.end, location);
    futures::stream::try_unfold(state, |(mut file, at, end, location)| async move {
        if at >= end {
            return Ok(None);
        }
        let (read, file) = tokio::task::spawn_blocking(move || {
            let want = (end - at).min(STREAM_CHUNK_BYTES);
            let mut chunk = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
            let read = (&mut file)
                .take(want)
                .read_to_end(&mut chunk)
                .map(|_| chunk);
            (read, file)
        })
        .await
        .map_err(blocking_failed)?;
        let chunk = read.map_err(|e| open_error(e, &location))?;
        if chunk.is_empty() {
            return Err(object_store::Error::Generic {
                store: STORE,
                source: format!("\"{location}\" ended before its listed size: it is being written or was truncated").into(),
            });
        }
        let next = at + chunk.len() as u64;
        Ok(Some((Bytes::from(chunk), (file, next, end, location))))
    })
    .boxed()
}

/// A local folder whose reads stay below `limit`: every `get` and `head`
/// opens the file with [`open_below`] and reads that descriptor. Listing
/// and writing are the plain `LocalFileSystem`'s.
#[derive(Debug)]
pub(crate) struct ConfinedStore {
    inner: LocalFileSystem,
    directory: PathBuf,
    limit: PathBuf,
}

impl ConfinedStore {
    /// The folder `directory` (canonical), read only below `limit`
    /// (canonical; the document root for imports, the storage's folder for
    /// serving).
    pub(crate) fn new(directory: PathBuf, limit: PathBuf) -> object_store::Result<Self> {
        Ok(Self {
            inner: LocalFileSystem::new_with_prefix(&directory)?,
            directory,
            limit,
        })
    }
}

impl std::fmt::Display for ConfinedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{STORE}({})", self.directory.display())
    }
}

fn open_error(err: io::Error, location: &Path) -> object_store::Error {
    match err.kind() {
        io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: location.to_string(),
            source: err.into(),
        },
        io::ErrorKind::PermissionDenied => object_store::Error::PermissionDenied {
            path: location.to_string(),
            source: err.into(),
        },
        _ => object_store::Error::Generic {
            store: STORE,
            source: err.into(),
        },
    }
}

#[async_trait]
impl ObjectStore for ConfinedStore {
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let path = self.directory.join(location.as_ref());
        let limit = self.limit.clone();
        let location = location.clone();
        tokio::task::spawn_blocking(move || {
            let (mut file, meta) =
                open_below(&path, &limit).map_err(|e| open_error(e, &location))?;
            let meta = crate::listing::object_meta(location.clone(), &meta);
            options.check_preconditions(&meta)?;
            let range = match options.range {
                Some(range) => {
                    range
                        .as_range(meta.size)
                        .map_err(|e| object_store::Error::Generic {
                            store: STORE,
                            source: e.into(),
                        })?
                }
                None => 0..meta.size,
            };
            if range.start > 0 {
                file.seek(SeekFrom::Start(range.start))
                    .map_err(|e| open_error(e, &location))?;
            }
            Ok(GetResult {
                payload: GetResultPayload::Stream(chunked(file, range.clone(), location)),
                attributes: Attributes::default(),
                range,
                meta,
                extensions: Default::default(),
            })
        })
        .await
        .map_err(blocking_failed)?
    }

    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn reads_stay_below_the_limit_whatever_the_links() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a/in.txt"), "inside").unwrap();
        std::fs::write(outside.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("also-a")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("up-out")).unwrap();
        std::os::unix::fs::symlink("a", root.join("near-a")).unwrap();

        let store = ConfinedStore::new(root.clone(), root.clone()).unwrap();
        let read = |key: &'static str| {
            let store = &store;
            async move { store.get(&Path::from(key)).await?.bytes().await }
        };
        assert_eq!(read("a/in.txt").await.unwrap(), "inside");
        assert_eq!(read("also-a/in.txt").await.unwrap(), "inside");
        assert!(matches!(
            read("out/secret.txt").await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert!(matches!(
            store.head(&Path::from("out/secret.txt")).await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert!(matches!(
            read("a/missing.txt").await,
            Err(object_store::Error::NotFound { .. })
        ));

        // A FIFO in a file's place is refused without blocking.
        let fifo = root.join("a/fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(
            read("a/fifo").await,
            Err(object_store::Error::NotFound { .. })
        ));

        // A group read keeps the same rules, file by file, in order.
        let objects: Vec<ObjectMeta> = [
            "a/in.txt",
            "also-a/in.txt",
            "near-a/in.txt",
            "out/secret.txt",
            "up-out/secret.txt",
            "a/missing.txt",
            "a/fifo",
        ]
        .into_iter()
        .map(|key| ObjectMeta {
            location: Path::from(key),
            last_modified: std::time::SystemTime::UNIX_EPOCH.into(),
            size: 6,
            e_tag: None,
            version: None,
        })
        .collect();
        let group = read_whole(&root, &root, &objects);
        assert_eq!(group.len(), 7);
        for inside in &group[..3] {
            assert_eq!(inside.as_ref().unwrap(), "inside");
        }
        for refused in &group[3..] {
            assert!(
                matches!(refused, Err(object_store::Error::NotFound { .. })),
                "{refused:?}"
            );
        }

        // On Linux the kernel confines the group's opens itself; what it
        // cannot decide (an absolute link, a way out) goes the slow way,
        // whose answers are asserted above.
        #[cfg(target_os = "linux")]
        {
            let limit = Limit::new(&root);
            let beneath = |key: &str| limit.open_beneath(&root.join(key)).is_some();
            assert!(
                beneath("a/in.txt"),
                "openat2 (Linux 5.6 or later) opens below"
            );
            assert!(beneath("near-a/in.txt"));
            assert!(!beneath("up-out/secret.txt"));
            assert!(!beneath("also-a/in.txt"));
        }

        // Confined to one folder: a link to a sibling folder is refused.
        let narrow = ConfinedStore::new(root.clone(), root.join("a")).unwrap();
        assert!(narrow.get(&Path::from("a/in.txt")).await.is_ok());
        std::fs::write(root.join("top.txt"), "top").unwrap();
        assert!(matches!(
            narrow.get(&Path::from("top.txt")).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn large_files_stream_in_big_chunks_and_a_truncated_one_fails() {
        use futures::TryStreamExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let body: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("big.jsonl"), &body).unwrap();
        let store = ConfinedStore::new(root.clone(), root.clone()).unwrap();
        let location = Path::from("big.jsonl");

        let options = GetOptions {
            range: Some((100..2_400_000).into()),
            ..GetOptions::default()
        };
        let got = store.get_opts(&location, options).await.unwrap();
        let chunks: Vec<Bytes> = got.into_stream().try_collect().await.unwrap();
        let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [1 << 20, 1 << 20, 2_400_000 - 100 - (2 << 20)]);
        assert_eq!(chunks.concat(), &body[100..2_400_000]);

        let got = store.get(&location).await.unwrap();
        std::fs::write(root.join("big.jsonl"), b"short").unwrap();
        let err = got
            .into_stream()
            .try_collect::<Vec<Bytes>>()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("ended before its listed size"),
            "{err}"
        );
    }
}

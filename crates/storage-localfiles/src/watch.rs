//! The filesystem watch of a local-files storage with `watch` on: inotify
//! (through `notify`) turned into debounced batches of object events.
//!
//! A path is handed over once it has been quiet for the debounce, so a
//! file being copied in becomes one event when the copy is done. A folder
//! created or moved in is walked (its files raise no events of their own).
//! When the kernel's queue overflowed, or the watched folder was deleted
//! or recreated, the batch asks for a reconciling sync; so does the first
//! batch, for the files written while nothing watched.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use storage_core::events::{EventBatch, EventFeed, ObjectChange, ObjectEvent};
use storage_core::{Error, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// How long a path must be quiet before its event is handed over.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often an idle watch checks that its folder is still the one it
/// watches.
const CHECK_FOLDER: Duration = Duration::from_secs(1);

type Raw = notify::Result<notify::Event>;

/// A watched folder, as an [`EventFeed`].
pub struct FolderWatch {
    directory: PathBuf,
    key_base: String,
    recursive: bool,
    debounce: Duration,
    watcher: Option<RecommendedWatcher>,
    receiver: UnboundedReceiver<Raw>,
    /// The folder watched (device, inode), to notice it was recreated.
    identity: Option<(u64, u64)>,
    /// Paths seen and not handed over: what happened last, and when.
    pending: HashMap<PathBuf, (ObjectChange, Instant)>,
    resync: bool,
}

impl std::fmt::Debug for FolderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatch")
            .field("directory", &self.directory)
            .field("recursive", &self.recursive)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl FolderWatch {
    /// Watches `directory` (canonical), whose files have the link keys
    /// `{key_base}/{path below directory}`.
    pub fn new(directory: PathBuf, key_base: String, recursive: bool) -> Result<Self> {
        let (_, receiver) = unbounded_channel();
        let mut watch = Self {
            directory,
            key_base,
            recursive,
            debounce: DEBOUNCE,
            watcher: None,
            receiver,
            identity: None,
            pending: HashMap::new(),
            resync: true,
        };
        watch.start()?;
        Ok(watch)
    }

    /// (Re)starts the watch on the folder as it is now.
    fn start(&mut self) -> Result<()> {
        let (sender, receiver) = unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: Raw| {
            let _ = sender.send(event);
        })
        .map_err(|err| self.failed(err))?;
        let mode = if self.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher
            .watch(&self.directory, mode)
            .map_err(|err| self.failed(err))?;
        self.identity = identity(&self.directory);
        self.watcher = Some(watcher);
        self.receiver = receiver;
        Ok(())
    }

    fn failed(&self, err: notify::Error) -> Error {
        Error::backend(
            format!("watching \"{}\" failed: {err}", self.directory.display()),
            "check that the folder exists and that the server may watch it (on Linux, \
             fs.inotify.max_user_watches bounds the folders watched)",
        )
    }

    /// Takes in one raw event.
    fn observe(&mut self, raw: Raw) {
        let event = match raw {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(directory = %self.directory.display(), error = %err, "filesystem watch error; a sync will reconcile");
                self.resync = true;
                return;
            }
        };
        if event.need_rescan() {
            self.resync = true;
        }
        let change = match event.kind {
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                ObjectChange::Removed
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Any
            | EventKind::Other => ObjectChange::Written,
            EventKind::Access(_) => return,
        };
        let now = Instant::now();
        for path in event.paths {
            if path == self.directory {
                // The folder itself was deleted or moved: its watch is
                // gone, and a new folder may get the same inode, so the
                // identity check restarts the watch once a folder is back.
                self.resync = true;
                if change == ObjectChange::Removed {
                    self.identity = None;
                }
                continue;
            }
            if change == ObjectChange::Written && path.is_dir() {
                self.walk(&path, now);
            }
            self.pending.insert(path, (change, now));
        }
    }

    /// A folder created or moved in: its files, whose own events were
    /// raised before the watch reached them, or never.
    fn walk(&mut self, folder: &FsPath, now: Instant) {
        let mut folders = vec![folder.to_path_buf()];
        while let Some(folder) = folders.pop() {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => {
                        if self.recursive {
                            folders.push(path);
                        }
                    }
                    Ok(_) => {
                        self.pending.insert(path, (ObjectChange::Written, now));
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Hands over the quiet paths, at most `max`.
    fn settled(&mut self, max: usize) -> EventBatch {
        let now = Instant::now();
        let mut batch = EventBatch {
            resync: std::mem::take(&mut self.resync),
            ..EventBatch::default()
        };
        let quiet: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= self.debounce)
            .map(|(path, _)| path.clone())
            .take(max)
            .collect();
        for path in quiet {
            let Some((change, _)) = self.pending.remove(&path) else {
                continue;
            };
            match self.key(&path) {
                Some(key) => batch.events.push(ObjectEvent {
                    key,
                    change,
                    message: None,
                }),
                None => batch.ignored.push(format!(
                    "\"{}\" is not a path below the watched folder with a UTF-8 name",
                    path.display()
                )),
            }
        }
        batch
    }

    fn key(&self, path: &FsPath) -> Option<String> {
        let relative = path.strip_prefix(&self.directory).ok()?.to_str()?;
        Some(format!("{}/{relative}", self.key_base))
    }

    /// When the next pending path is quiet, if any is pending.
    fn next_quiet(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|(_, at)| *at + self.debounce)
            .min()
    }

    /// Restarts the watch when the folder was recreated (or is back).
    fn check_folder(&mut self) {
        let now = identity(&self.directory);
        if now == self.identity {
            return;
        }
        self.resync = true;
        self.watcher = None;
        self.identity = None;
        if now.is_some() {
            match self.start() {
                Ok(()) => {
                    tracing::info!(directory = %self.directory.display(), "watched folder recreated; watching it again")
                }
                Err(err) => tracing::warn!(error = %err, "could not watch the recreated folder"),
            }
        }
    }
}

fn identity(directory: &FsPath) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(directory).ok()?;
    meta.is_dir().then(|| (meta.dev(), meta.ino()))
}

#[async_trait]
impl EventFeed for FolderWatch {
    async fn next_batch(&mut self, max: usize) -> Result<EventBatch> {
        loop {
            while let Ok(raw) = self.receiver.try_recv() {
                self.observe(raw);
            }
            let batch = self.settled(max.max(1));
            if !batch.events.is_empty() || !batch.ignored.is_empty() || batch.resync {
                return Ok(batch);
            }
            let wake = self
                .next_quiet()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + CHECK_FOLDER);
            tokio::select! {
                raw = self.receiver.recv() => match raw {
                    Some(raw) => self.observe(raw),
                    // The watcher is gone (the folder was removed).
                    None => {
                        tokio::time::sleep(CHECK_FOLDER).await;
                        self.check_folder();
                    }
                },
                () = tokio::time::sleep_until(wake) => {
                    if self.pending.is_empty() {
                        self.check_folder();
                    }
                }
            }
        }
    }
}

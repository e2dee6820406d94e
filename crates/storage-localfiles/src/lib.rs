#![doc = include_str!("../README.md")]

mod backend;
mod confined;
mod listing;
mod paths;
mod serving;
mod watch;

pub use backend::{LocalExport, LocalFiles, LocalFilesBackend, LocalImport, WATCH_FIELD};
pub use paths::{local_files_url, normalize_path, resolve_served_file};
pub use watch::{FolderWatch, DEBOUNCE};

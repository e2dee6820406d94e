#![doc = include_str!("../README.md")]

mod backend;
pub mod bucket;
pub mod credentials;
pub mod endpoint;
mod error;
pub mod events;
pub mod export;
pub mod failure;
pub mod fields;
pub mod filter;
pub mod follow;
pub mod host;
pub mod import;
pub mod jobs;
pub mod jsonl;
pub mod label_config;
pub mod memory;
pub mod metrics;
mod model;
pub mod parquet_file;
pub mod parse;
pub mod persist;
pub mod progress;
pub mod redact;
pub mod retry;
pub mod shards;
mod status;
pub mod task_data;
pub mod uri;
pub mod validation;
pub mod webhooks;

pub use backend::{
    check_listable, check_storage, check_storage_within, Backend, Backends, Capabilities,
    ExportStorage, FileServer, ImportStorage, ServedFile, Unlisted,
};
pub use endpoint::EndpointPolicy;
pub use error::{Error, Result, Retry, ValidationErrors, NON_FIELD_ERRORS};
pub use fields::{FieldSpec, FieldType, ImportOptions, Settings, StorageFields};
pub use jobs::{RunnerConfig, SyncService};
pub use model::{meta_time, NewStorage, Storage, StorageKind, SyncState};
pub use status::SyncStatus;

/// Re-exported so backends and hosts use the exact `object_store` version
/// core is built against.
pub use object_store;

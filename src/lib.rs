//! Label Studio compatible cloud-storage connections as Rust crates.
//!
//! This facade re-exports the workspace crates behind features:
//!
//! | module | crate | feature |
//! |---|---|---|
//! | [`core`] | `storage-core`: model, engines, job runner, traits | always |
//! | [`localfiles`] | `storage-localfiles`: local-files storages | `localfiles` |
//! | [`s3`] | `storage-s3`: S3 storages (with STS AssumeRole) | `s3` |
//! | [`gcs`] | `storage-gcs`: GCS storages | `gcs` |
//! | [`gcs_sa`] | `storage-gcs-sa`: GCS through service-account impersonation | `gcs-sa` |
//! | [`azure`] | `storage-azure`: Azure Blob storages (account key) | `azure` |
//! | [`databricks`] | `storage-databricks`: Databricks Files (UC Volumes) storages | `databricks` |
//! | [`db`] | `storage-db`: SQLite persistence | `db` |
//! | [`api`] | `storage-api`: the axum REST surface | `api` |
//!
//! See `README.md` for the server (`crates/storage-server`) and `docs/` for the design.

pub use storage_core as core;

#[cfg(feature = "localfiles")]
pub use storage_localfiles as localfiles;

#[cfg(feature = "s3")]
pub use storage_s3 as s3;

#[cfg(feature = "gcs")]
pub use storage_gcs as gcs;

#[cfg(feature = "gcs-sa")]
pub use storage_gcs_sa as gcs_sa;

#[cfg(feature = "azure")]
pub use storage_azure as azure;

#[cfg(feature = "databricks")]
pub use storage_databricks as databricks;

#[cfg(feature = "db")]
pub use storage_db as db;

#[cfg(feature = "api")]
pub use storage_api as api;

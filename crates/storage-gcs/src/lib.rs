//! Label Studio GCS storages.

pub mod iam;
pub mod signer;

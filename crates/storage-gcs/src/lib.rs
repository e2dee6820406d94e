#![doc = include_str!("../README.md")]

mod backend;
mod config;
pub mod iam;
pub mod oidc;
pub mod pubsub;
pub mod signer;
pub mod sts;

pub use backend::{check_common, explain, GcsBackend};
pub use config::{
    bucket_fields, check_bucket, GcsConfig, GcsOptions, ServiceAccountKey, CREDENTIALS_FIELD,
};

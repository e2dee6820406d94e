//! Label Studio S3 storages.

mod assume_role;

pub use assume_role::{AssumeRole, AssumeRoleConfig};

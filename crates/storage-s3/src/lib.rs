#![doc = include_str!("../README.md")]

mod assume_role;
mod backend;
mod config;
pub mod sqs;

pub use assume_role::{AssumeRole, AssumeRoleConfig};
pub use backend::S3Backend;
pub use config::{S3Config, S3Options};

#![doc = include_str!("../README.md")]

mod backend;
mod config;
pub mod signer;

pub use backend::{explain, AzureBackend, URI_SCHEME};
pub use config::{
    AzureConfig, AzureOptions, ACCOUNT_KEY_FIELD, ACCOUNT_NAME_FIELD, CREDENTIAL_FIELDS,
    DEFAULT_ENDPOINT,
};

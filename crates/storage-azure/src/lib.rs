#![doc = include_str!("../README.md")]

mod backend;
mod config;
pub mod event_grid;
pub mod signer;
mod spi;

pub use backend::{explain, AzureBackend, URI_SCHEME};
pub use config::{
    AzureConfig, AzureOptions, ACCOUNT_KEY_FIELD, ACCOUNT_NAME_FIELD, CREDENTIAL_FIELDS,
    DEFAULT_AUTHORITY_HOST, DEFAULT_ENDPOINT,
};
pub use spi::{
    explain_spi, AuthMode, AzureSpiBackend, AzureSpiConfig, AUTH_MODE_FIELD, CLIENT_ID_FIELD,
    CLIENT_SECRET_FIELD, SPI_CREDENTIAL_FIELDS, STORAGE_SCOPE, TENANT_ID_FIELD,
    USER_DELEGATION_KEY_FIELD,
};

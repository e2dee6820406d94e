#![doc = include_str!("../README.md")]

mod backend;
mod config;
mod store;
mod token;

pub use backend::{explain, DatabricksBackend, URI_SCHEME};
pub use config::{
    AuthType, DatabricksConfig, DatabricksOptions, AUTH_TYPE_FIELD, AZURE_DATABRICKS_SCOPE,
    CLIENT_ID_FIELD, CLIENT_SECRET_FIELD, DEFAULT_AUTHORITY_HOST, DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_STREAM_CHUNK_BYTES, HOST_FIELD, TENANT_ID_FIELD, TOKEN_FIELD,
};
pub use store::FilesApiStore;

//! The bucket backends' flags now live in the server crate
//! (`storage_server::cloud`); this path stays for `cli_sync` until the
//! `storages` CLI replaces it.

pub(crate) use storage_server::cloud::CloudArgs;

//! The in-process test server of storage-server's socket tests, shared so
//! that there is one copy: openapi.rs and fuzz_regressions.rs still start
//! it. Once they call the router without a socket, this file goes.

#![allow(unreachable_pub)]

#[path = "../../../storage-server/tests/support/server.rs"]
mod server;

pub use server::*;

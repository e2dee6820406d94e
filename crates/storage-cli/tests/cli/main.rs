//! The `storages` binary run as a user runs it: real processes, real files
//! and folders, and moto for S3. A missing emulator fails the test with
//! instructions (storage-testing's message), never skips it.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod common;
mod ls;
mod sync;
mod validate;

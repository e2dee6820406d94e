//! The `storages` binary run as a user runs it: real processes, real files
//! and folders, and moto for S3. A missing emulator fails the test with
//! instructions (storage-testing's message), never skips it.

mod common;
mod ls;
mod sync;
mod validate;

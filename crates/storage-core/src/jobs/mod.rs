//! The job runner: `queued` storages are claimed by background workers,
//! run with a renewed lease, and recovered when their worker died.
//!
//! - `service`: [`SyncService`], the public face (request a sync, start,
//!   stop, recover, export one annotation).
//! - `runner`: the workers, claims, heartbeats and the watchdog.
//! - `events`: object events applied in turn with syncs, and the feeds
//!   followed.
//! - `sharded`: syncs split by folder into shards that workers of every
//!   process claim (see [`crate::shards`]).
//! - `state`: the sync state each step moves a storage to, as pure
//!   functions.
//! - [`schedule`]: when a storage with a `sync_interval` is due (the
//!   watchdog queues it).
//!
//! Every state change is a compare-and-set on the storage row (status and
//! job id), so two requests, two workers or two server instances never run
//! one storage's sync twice.

mod events;
mod exports;
mod runner;
pub mod schedule;
mod service;
mod sharded;
mod state;

pub use events::EventsApplied;
pub use service::{RunnerConfig, SyncService};
pub use state::error_report;

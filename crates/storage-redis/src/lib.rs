#![doc = include_str!("../README.md")]

mod backend;
mod store;

pub use backend::{RedisBackend, RedisConfig, RedisOptions, PASSWORD_FIELD};
pub use store::{glob_escape, key_location, RedisStore, SCAN_COUNT};

#![doc = include_str!("../README.md")]

// How the SQL is shared. Most queries are the same text on SQLite and
// PostgreSQL, but sqlx types every query by its engine, and code generic
// over sqlx's `Database` trait needs a bound per bound value, decoded column
// and executor. So each concern is one file in src/shared/ (rows, accounts,
// storages, tasks, annotations, host), written once and compiled twice: the
// engine modules sqlite.rs and postgres.rs each declare it as a child module
// with `#[path = "shared/<file>.rs"]`. In it, `super` is the engine, and its
// `use super::{...}` lines name what it takes from the engine (its sqlx
// types, how it binds a time or a list, its limits, and the few queries
// written per engine). What depends on no engine is in sql.rs and shape.rs.
mod database;
#[allow(
    clippy::duplicate_mod,
    reason = "each file of src/shared/ is compiled once per engine on purpose"
)]
mod postgres;
mod shape;
mod sql;
#[allow(
    clippy::duplicate_mod,
    reason = "each file of src/shared/ is compiled once per engine on purpose"
)]
mod sqlite;

pub use database::Database;
pub use postgres::PostgresDatabase;
pub use sqlite::SqliteDatabase;

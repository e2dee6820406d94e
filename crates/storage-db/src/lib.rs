#![doc = include_str!("../README.md")]

mod database;
mod postgres;
mod shape;
mod sqlite;

pub use database::Database;
pub use postgres::PostgresDatabase;
pub use sqlite::SqliteDatabase;

#![doc = include_str!("../README.md")]

mod shape;
mod sqlite;

pub use sqlite::SqliteDatabase;

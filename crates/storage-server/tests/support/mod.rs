//! The one way these tests start a server: in this process
//! ([`Server`], built from the libraries as the binary builds it) or as the
//! `storage-server` binary ([`process`]), and talk to it ([`Api`]).

#![allow(dead_code, unreachable_pub)]

pub mod buckets;
pub mod label_studio;
pub mod process;
pub mod receiver;
mod server;
pub mod sqs;

#[allow(unused_imports)] // tests that only start the binary use none of it
pub use server::*;

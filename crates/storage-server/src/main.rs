//! Run with: `cargo run --release -p storage-server`
//!
//! A complete storage server on an embedded SQLite database (or on
//! PostgreSQL, which several instances may share): Label Studio's storage
//! API, local-files serving, and a minimal project/task/annotation API.
//! Every flag is also an environment variable (`--help` lists them).

#![allow(clippy::print_stdout)] // the token and address are for the person who started it

use clap::Parser;
use storage_server::{Cli, Command};

#[tokio::main]
async fn main() -> Result<(), storage_server::Error> {
    let Cli { config, command } = Cli::parse();
    storage_server::init_logging(config.log_json);
    if let Some(Command::CreateUser {
        email,
        organization,
    }) = &command
    {
        // The token alone on stdout, so scripts can capture it.
        println!(
            "{}",
            storage_server::create_user(&config, email, organization).await?
        );
        return Ok(());
    }
    let app = storage_server::app(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    if app.token.generated {
        println!(
            "API token (kept in {}): {}",
            config.token_file().display(),
            app.token.value
        );
    }
    println!("Listening on http://{}", listener.local_addr()?);
    storage_server::serve(app, listener).await
}

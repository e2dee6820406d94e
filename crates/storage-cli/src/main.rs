#![doc = include_str!("../README.md")]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ls;
mod storage;
mod sync;
mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "storages",
    version,
    about = "Label Studio storage connections from the command line: sync, validate, ls",
    after_help = "A storage is described with the REST API's fields (POST /api/storages/<type>): \
--config FILE (a JSON object), then --set NAME=VALUE, then --files/--tasks. E.g. localfiles: \
path, regex_filter, use_blob_urls, recursive_scan; s3: bucket, prefix, aws_access_key_id, \
aws_secret_access_key, aws_session_token, region_name, s3_endpoint, role_arn, external_id; \
gcs: bucket, prefix, google_application_credentials, google_project_id; gcs_sa: bucket, prefix, \
target_service_account_email; s3s: the s3 fields with role_arn required, legacy_auth."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Sync(sync::SyncArgs),
    Validate(validate::ValidateArgs),
    Ls(ls::LsArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let mut report = std::io::stderr();
    let code = match cli.command {
        Command::Sync(args) => {
            let terminal = report.is_terminal();
            sync::run(args, &mut report, terminal).await
        }
        Command::Validate(args) => {
            let mut out = std::io::stdout().lock();
            validate::run(args, &mut out, &mut report).await
        }
        Command::Ls(args) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let code = ls::run(args, &mut out, &mut report).await;
            let _ = out.flush();
            code
        }
    };
    ExitCode::from(code)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // Warnings only (retries): the spinner and the summary are the report.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

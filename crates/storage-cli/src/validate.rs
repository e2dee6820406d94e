//! `storages validate`: the connection check the API runs on create and
//! `POST .../validate`, from the command line.

use std::io::Write;

use storage_core::{check_storage_within, RunnerConfig, StorageKind};

use crate::storage::{failed, StorageArgs};

/// Check a storage's settings and that it can be reached, as the REST API
/// does before it saves a storage.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Checks the fields (names, types, the backend's rules), builds the \
storage and proves it can be reached: an import storage lists at least one object under its \
prefix; an export storage can be written. Nothing is created.\n\n\
Exit codes: 0 valid and reachable, 1 the storage cannot be reached (the message says why), \
2 invalid arguments or settings (each message names its field)."
)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Check it as an export storage (a target for annotations) instead of
    /// an import storage.
    #[arg(long)]
    export: bool,
}

/// Runs the check; messages go to `report`. Returns the exit code.
pub(crate) async fn run(args: ValidateArgs, report: &mut dyn Write) -> u8 {
    let kind = if args.export {
        StorageKind::Export
    } else {
        StorageKind::Import
    };
    let configured = match args.storage.configure(kind, report) {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let backend = configured.backend;
    let settings = &configured.fields.settings;
    // The server's deadline: a tarpit endpoint must not hang the command.
    let deadline = RunnerConfig::default().check_timeout;
    if let Err(err) = check_storage_within(backend.as_ref(), kind, settings, deadline).await {
        return failed(report, &err);
    }
    let _ = writeln!(
        report,
        "ok: the {} {} storage is valid and can be reached",
        backend.name(),
        kind.as_str()
    );
    0
}

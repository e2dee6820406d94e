//! `storages validate`: the connection check the API runs on create and
//! `POST .../validate`, from the command line.

use std::io::Write;

use storage_core::validation::{self, CheckStatus, Report, ReportOptions};
use storage_core::{check_storage_within, RunnerConfig, StorageKind};

use crate::storage::{failed, StorageArgs, EXIT_FAILED};

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
    /// Print the validation report instead: each check (configuration,
    /// credentials, list, read, presign; export: write, delete) with its
    /// outcome, duration and what to fix, as text or as the JSON of
    /// `POST .../validate?report=true`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "text")]
    report: Option<ReportFormat>,
}

/// How `--report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    /// One line per check.
    Text,
    /// The API's JSON.
    Json,
}

/// Runs the check; messages go to `report`, a `--report` to `out`.
/// Returns the exit code.
pub(crate) async fn run(args: ValidateArgs, out: &mut dyn Write, report: &mut dyn Write) -> u8 {
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
    if let Some(format) = args.report {
        let options = ReportOptions {
            timeout: deadline,
            policy: args.storage.endpoint_policy(),
        };
        let checked = validation::report(backend.as_ref(), kind, settings, options).await;
        print_report(&checked, format, out);
        return if checked.valid { 0 } else { EXIT_FAILED };
    }
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

/// Writes `checked` as `format` says.
fn print_report(checked: &Report, format: ReportFormat, out: &mut dyn Write) {
    match format {
        ReportFormat::Json => {
            let _ = writeln!(out, "{}", checked.to_json());
        }
        ReportFormat::Text => {
            for check in &checked.checks {
                let status = match check.status {
                    CheckStatus::Passed => "passed ",
                    CheckStatus::Failed => "FAILED ",
                    CheckStatus::Skipped => "skipped",
                };
                let _ = writeln!(
                    out,
                    "{status} {:<13} {:>6} ms  {}",
                    check.name, check.duration_ms, check.message
                );
            }
            let verdict = if checked.valid { "valid" } else { "not valid" };
            let _ = writeln!(out, "the storage is {verdict}");
        }
    }
}

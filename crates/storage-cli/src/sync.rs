//! `storages sync`: one import storage into a JSON Lines file of tasks, by
//! the import engine the server runs, with no server and no database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressStyle};
use storage_core::follow::FollowPolicy;
use storage_core::import::{ImportConfig, ImportJob, ImportOutcome, Progress, ProgressSink};
use storage_core::jsonl::JsonlSink;
use storage_core::{Result, StorageKind};

use crate::storage::{failed, StorageArgs, EXIT_FAILED, EXIT_INVALID};

/// Exit code: the sync ran to its end but some task files were rejected.
const EXIT_FILES_FAILED: u8 = 3;
/// Exit code: stopped by Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

/// Sync a bucket or folder into a JSON Lines file of Label Studio tasks.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each output line is one task, as Label Studio imports it: \
{\"data\": {...}, \"annotations\": [...], \"predictions\": [...], \"allow_skip\": false, \
\"meta\": {\"storage_key\": \"...\", \"row_index\": 3}}. Files-mode tasks hold the object's URL \
(s3://bucket/key, gs://..., /data/local-files/?d=...) under $undefined$ or --data-key.\n\n\
The output file is written beside its destination and renamed into place at the end, so a \
failed or interrupted run leaves the previous file as it was.\n\n\
Exit codes: 0 done, 1 failed, 2 invalid arguments or settings, 3 done but some task files \
could not be read (listed in the summary), 130 interrupted."
)]
pub(crate) struct SyncArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// The JSON Lines file to write (replaced when the run ends); `-` for
    /// standard output.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Files mode: the data key of the object URL instead of `$undefined$`
    /// (e.g. `image`, the variable of the label config).
    #[arg(long, value_name = "KEY")]
    data_key: Option<String>,
}

/// Runs the sync; every message goes to `report`, a spinner too when
/// `terminal`. Returns the exit code.
pub(crate) async fn run(args: SyncArgs, report: &mut dyn Write, terminal: bool) -> u8 {
    let started = Instant::now();
    let configured = match args.storage.configure(StorageKind::Import, report) {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let backend = configured.backend;
    let settings = configured.fields.settings;
    let source = match backend.import_storage(&settings).await {
        Ok(source) => source,
        Err(err) => return failed(report, &err),
    };
    // As the API's create and validate: say now that the bucket is missing
    // or the keys are wrong, in the backend's words.
    if let Err(err) = source.check_connection().await {
        return failed(report, &err);
    }

    let sink = if args.out.as_os_str() == "-" {
        JsonlSink::new(Box::new(std::io::stdout()))
    } else {
        match JsonlSink::create(&args.out) {
            Ok(sink) => sink,
            Err(err) => {
                let _ = writeln!(report, "error: --out: {}: {err}", args.out.display());
                return EXIT_INVALID;
            }
        }
    };
    let bar = progress_bar(terminal);
    let counter = bar.clone();
    let sink = sink
        .with_data_key(args.data_key.clone())
        .with_on_written(Box::new(move |n| counter.inc(n)));
    let progress = BarProgress { bar: bar.clone() };
    let config = ImportConfig::default();
    let job = ImportJob {
        storage_id: 1,
        project: 1,
        source: source.as_ref(),
        use_blob_urls: settings.bool("use_blob_urls", false),
        sink: &sink,
        config: &config,
        // A one-off sync into a file: nothing was linked before.
        follow: FollowPolicy::default(),
    };
    let result = tokio::select! {
        result = job.run(&progress) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    bar.finish_and_clear();
    let summary = Summary {
        storage_type: backend.name(),
        out: &args.out,
        written: sink.written(),
        elapsed: started.elapsed(),
    };
    let outcome = match result {
        None => {
            // The partial file is dropped with the sink; the destination is
            // untouched.
            let _ = writeln!(report, "interrupted {}", summary.line(None));
            return EXIT_INTERRUPTED;
        }
        Some(Err(err)) => {
            let code = failed(report, &err);
            let _ = writeln!(report, "stopped {}", summary.line(None));
            return code;
        }
        Some(Ok(outcome)) => outcome,
    };
    if let Err(err) = sink.finish() {
        let _ = writeln!(report, "error: writing {}: {err}", args.out.display());
        return EXIT_FAILED;
    }
    let _ = writeln!(report, "{}", summary.line(Some(&outcome)));
    for line in &outcome.file_errors {
        let _ = writeln!(report, "failed: {line}");
    }
    if outcome.progress.failed_files > 0 {
        EXIT_FILES_FAILED
    } else {
        0
    }
}

/// Shows the engine's counters next to the spinner.
struct BarProgress {
    bar: ProgressBar,
}

impl ProgressSink for BarProgress {
    fn report(&self, progress: &Progress) -> Result<()> {
        if let Progress::Import(p) = progress {
            let mut message = format!("{} objects listed", HumanCount(p.objects));
            if p.existed > 0 {
                message.push_str(&format!(", {} duplicates skipped", HumanCount(p.existed)));
            }
            if p.failed_files > 0 {
                message.push_str(&format!(
                    ", {} task files failed",
                    HumanCount(p.failed_files)
                ));
            }
            self.bar.set_message(message);
        }
        Ok(())
    }
}

/// A spinner on standard error when it is a terminal; hidden otherwise.
fn progress_bar(terminal: bool) -> ProgressBar {
    if !terminal {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {human_pos} tasks written ({rate}) · {msg}",
    ) {
        // indicatif's own `{per_sec}` shows four decimals.
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", HumanCount(state.per_sec() as u64));
            },
        ));
    }
    bar.set_message("listing");
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The one-line summary of a run.
struct Summary<'a> {
    storage_type: &'a str,
    out: &'a Path,
    written: u64,
    elapsed: Duration,
}

impl Summary<'_> {
    fn line(&self, outcome: Option<&ImportOutcome>) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let out = if self.out.as_os_str() == "-" {
            "standard output".to_string()
        } else {
            self.out.display().to_string()
        };
        let Some(outcome) = outcome else {
            let kept = if self.out.as_os_str() == "-" {
                "they are on standard output"
            } else {
                "the output file was not changed"
            };
            return format!(
                "after {secs:.2} s and {} tasks; {kept}",
                HumanCount(self.written)
            );
        };
        let p = &outcome.progress;
        let mut line = format!(
            "synced {} storage: {} objects, {} tasks written to {out}",
            self.storage_type, p.objects, self.written
        );
        if p.existed > 0 {
            line.push_str(&format!(", {} duplicates skipped", p.existed));
        }
        if p.failed_files > 0 {
            line.push_str(&format!(", {} task files failed", p.failed_files));
        }
        line.push_str(&format!(
            " in {secs:.2} s ({:.0} objects/s, {:.0} tasks/s)",
            rate(p.objects),
            rate(self.written)
        ));
        line
    }
}

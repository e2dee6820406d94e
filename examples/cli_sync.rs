//! Run with: `cargo run --release --example cli_sync -- --type localfiles --set path=/data/x --files --out tasks.jsonl`
//!
//! Syncs one import storage — a bucket or a local folder — into a JSON Lines
//! file of Label Studio tasks, with no server and no database. The storage
//! is described with the fields of the REST API (`POST /api/storages/<type>`):
//! a JSON object in `--config FILE`, single fields with `--set NAME=VALUE`
//! (applied after the file), `--files` / `--tasks` for `use_blob_urls`.
//! They are checked by the backend exactly as the API checks them, then the
//! storage is listed and read by the same import engine the server runs.
//!
//! ```text
//! cargo run --example cli_sync -- --type s3 --config s3.json --set prefix=images --files --out tasks.jsonl
//! cargo run --example cli_sync -- --type localfiles --set path=/srv/data/tasks --set regex_filter='.*\.jsonl' --tasks --out -
//! ```
//!
//! Each output line is one task, as Label Studio imports it:
//! `{"data": {...}, "annotations": [...], "predictions": [...], "allow_skip": false, "meta": {"storage_key": "...", "row_index": 3}}`.
//! `annotations` and `predictions` appear when the task file had some,
//! `allow_skip` only when it is false, `row_index` for tasks of arrays and
//! JSON Lines files (0-based position or line). Files-mode tasks hold the
//! object's URL as the storage gives it (`s3://bucket/key`, `gs://...`,
//! `/data/local-files/?d=...`) under `$undefined$` (Label Studio's key for
//! "the first variable of the label config"), or under `--data-key`.
//!
//! An object is read once per run, and a task once per object and row. The
//! output file is written next to its destination and renamed into place at
//! the end, so an interrupted or failed run leaves the previous file as it
//! was.
//!
//! While it runs, a spinner on standard error shows the objects listed, the
//! tasks written, the rate and the elapsed time; when standard error is not
//! a terminal there is no spinner, only the summary at the end. Exit codes:
//! 0 done; 2 invalid arguments or storage settings (each message names its
//! field, as the API's `validation_errors` do); 3 done, but some task files
//! could not be read (listed in the summary); 1 any other failure; 130
//! interrupted (Ctrl-C).

#![allow(clippy::print_stdout)] // the JSONL may go to standard output (`--out -`)

#[path = "common/cloud.rs"]
mod cloud;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Parser;
use indicatif::{HumanCount, ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use storage_connections::core::fields::{common_fields, READ_ONLY_FIELDS};
use storage_connections::core::import::{
    ImportConfig, ImportJob, ImportOutcome, Progress, ProgressSink, UNDEFINED_DATA_KEY,
};
use storage_connections::core::persist::{NewTask, TaskSink};
use storage_connections::core::{
    Backend, Backends, EndpointPolicy, Error, Result, Settings, StorageKind, ValidationErrors,
};
use storage_connections::localfiles::{LocalFiles, LocalFilesBackend};

/// Exit code: invalid arguments or settings (clap uses 2 for usage errors too).
const EXIT_INVALID: u8 = 2;
/// Exit code: the sync ran to its end but some task files were rejected.
const EXIT_FILES_FAILED: u8 = 3;
/// Exit code: any other failure (listing, reading, writing).
const EXIT_FAILED: u8 = 1;
/// Exit code: stopped by Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "cli_sync",
    about = "Sync a bucket or folder into a JSON Lines file of Label Studio tasks",
    after_help = "Fields are the REST API's (POST /api/storages/<type>): e.g. localfiles: path, \
regex_filter, use_blob_urls, recursive_scan; s3: bucket, prefix, aws_access_key_id, \
aws_secret_access_key, aws_session_token, region_name, s3_endpoint, role_arn, external_id; \
gcs: bucket, prefix, google_application_credentials, google_project_id; gcs_sa: bucket, prefix, \
target_service_account_email.\n\nExit codes: 0 done, 1 failed, 2 invalid arguments or settings, \
3 done but some task files could not be read, 130 interrupted."
)]
struct Args {
    /// Storage type: localfiles, s3, gcs or gcs_sa.
    #[arg(long = "type", value_name = "TYPE")]
    storage_type: String,
    /// A JSON object with the storage's fields, as the REST API takes them.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One field (repeatable), applied after `--config`. The value is a
    /// string; booleans and numbers are read from it as the API reads form
    /// values (`true`, `0`, `15`).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_field)]
    set: Vec<(String, String)>,
    /// Files mode: one task per object (`use_blob_urls=true`).
    #[arg(long, conflicts_with = "tasks")]
    files: bool,
    /// Tasks mode: read tasks from JSON and JSON Lines files
    /// (`use_blob_urls=false`).
    #[arg(long)]
    tasks: bool,
    /// The JSON Lines file to write (replaced when the run ends); `-` for
    /// standard output.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Files mode: the data key of the object URL instead of `$undefined$`
    /// (e.g. `image`, the variable of the label config).
    #[arg(long, value_name = "KEY")]
    data_key: Option<String>,
    /// Root that local-files paths must be below; Label Studio's
    /// `LOCAL_FILES_DOCUMENT_ROOT` (its default `/` too). Task URLs are
    /// relative to it.
    #[arg(long, env = "LOCAL_FILES_DOCUMENT_ROOT", default_value = "/")]
    local_files_document_root: PathBuf,
    /// Absolute base URL of local-files task URLs (Label Studio's `HOST`);
    /// empty gives relative URLs.
    #[arg(long, env = "STORAGE_HOST", default_value = "")]
    host: String,
    /// Accept storage endpoints (`s3_endpoint`, ...) on loopback, private
    /// and link-local addresses (S3-compatible servers on a private
    /// network, emulators). Refused by default, as in the server.
    #[arg(long, env = "STORAGE_ALLOW_PRIVATE_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allow_private_endpoints: bool,
    #[command(flatten)]
    cloud: cloud::CloudArgs,
}

fn parse_field(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, got \"{text}\"")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let terminal = std::io::stderr().is_terminal();
    let code = run(args, &mut std::io::stderr(), terminal).await;
    ExitCode::from(code)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // Warnings only (retries): the spinner is the progress report.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the command; every message goes to `report`. Returns the exit code.
async fn run(args: Args, report: &mut dyn Write, terminal: bool) -> u8 {
    let started = Instant::now();
    let backends = match backends(&args) {
        Ok(backends) => backends,
        Err(err) => return failed(report, &err),
    };
    let Some(backend) = backends.get(&args.storage_type) else {
        let known: Vec<&str> = backends.iter().map(|b| b.name()).collect();
        let _ = writeln!(
            report,
            "error: --type: unknown storage type \"{}\" (one of: {})",
            args.storage_type,
            known.join(", ")
        );
        return EXIT_INVALID;
    };
    let body = match request_body(&args) {
        Ok(body) => body,
        Err(message) => {
            let _ = writeln!(report, "error: {message}");
            return EXIT_INVALID;
        }
    };
    let settings = match settings(backend.as_ref(), &body) {
        Ok(settings) => settings,
        Err(err) => return failed(report, &err),
    };
    let source = match backend.import_storage(&settings).await {
        Ok(source) => source,
        Err(err) => return failed(report, &err),
    };
    // As the API's create and validate: say now that the bucket is missing
    // or the keys are wrong, in the backend's words.
    if let Err(err) = source.check_connection().await {
        return failed(report, &err);
    }

    let (writer, output) = match Output::create(&args.out) {
        Ok(created) => created,
        Err(err) => {
            let _ = writeln!(report, "error: --out: {}: {err}", args.out.display());
            return EXIT_INVALID;
        }
    };
    let bar = progress_bar(terminal);
    let sink = JsonlSink::new(writer, args.data_key.clone(), bar.clone());
    let progress = BarProgress { bar: bar.clone() };
    let config = ImportConfig::default();
    let job = ImportJob {
        storage_id: 1,
        project: 1,
        source: source.as_ref(),
        use_blob_urls: settings.bool("use_blob_urls", false),
        sink: &sink,
        config: &config,
    };
    let result = tokio::select! {
        result = job.run(&progress) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    bar.finish_and_clear();
    let written = sink.written();
    let flushed = sink.finish();
    let summary = Summary {
        storage_type: backend.name(),
        out: &args.out,
        written,
        elapsed: started.elapsed(),
    };
    let outcome = match result {
        None => {
            // The partial file is dropped; the destination is untouched.
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
    if let Err(err) = flushed.and_then(|()| output.commit()) {
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

/// Prints an error: invalid settings one line per field, like the API's
/// `validation_errors`; anything else with its causes.
fn failed(report: &mut dyn Write, err: &Error) -> u8 {
    match err {
        Error::InvalidConfig(errors) => {
            let _ = writeln!(report, "error: invalid storage settings");
            for field in errors.fields() {
                for message in errors.messages(field) {
                    let _ = writeln!(report, "  {field}: {message}");
                }
            }
            EXIT_INVALID
        }
        other => {
            let _ = writeln!(
                report,
                "error: {}",
                storage_connections::core::jobs::error_report(other).replace('\n', "\n  ")
            );
            EXIT_FAILED
        }
    }
}

/// The backends of the example server, configured from the same flags.
fn backends(args: &Args) -> Result<Backends> {
    let policy = if args.allow_private_endpoints {
        EndpointPolicy::allow_private()
    } else {
        EndpointPolicy::strict()
    };
    // A command run by the person who owns the files: serving is on, the
    // document root only decides the task URLs and what may be read.
    let local = LocalFiles::new(&args.local_files_document_root)?
        .with_serving_enabled(true)
        .with_url_base(args.host.clone());
    Ok(args
        .cloud
        .bucket_backends(policy)
        .with(Arc::new(LocalFilesBackend::new(local))))
}

/// The REST body the flags describe: `--config`, then `--set`, then
/// `--files`/`--tasks`.
fn request_body(args: &Args) -> std::result::Result<Map<String, Value>, String> {
    let mut body = match &args.config {
        None => Map::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--config: cannot read {}: {e}", path.display()))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(format!(
                        "--config: {} must hold a JSON object",
                        path.display()
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "--config: {} is not valid JSON: {e}",
                        path.display()
                    ))
                }
            }
        }
    };
    for (name, value) in &args.set {
        body.insert(name.clone(), Value::String(value.clone()));
    }
    if args.files || args.tasks {
        body.insert("use_blob_urls".into(), Value::Bool(args.files));
    }
    Ok(body)
}

/// Checks `body` as the API checks a new import storage: the schema (with
/// Label Studio's messages), then the backend's own rules. Unlike the API,
/// a field no storage has is an error: here it can only be a typo.
fn settings(backend: &dyn Backend, body: &Map<String, Value>) -> Result<Settings> {
    let specs = backend.fields(StorageKind::Import);
    let common = common_fields();
    let mut errors = ValidationErrors::default();
    for name in body.keys() {
        let known = specs.iter().chain(&common).any(|spec| spec.name == name)
            || READ_ONLY_FIELDS.contains(&name.as_str())
            || name == "project";
        if !known {
            let names: Vec<&str> = specs.iter().map(|spec| spec.name).collect();
            errors.add(
                name.as_str(),
                format!(
                    "Unknown field; {} import storages take: {}.",
                    backend.name(),
                    names.join(", ")
                ),
            );
        }
    }
    if let Err(e) = Settings::defaults(&common).apply(&common, body) {
        errors.merge(e);
    }
    let mut settings = Settings::defaults(&specs);
    if let Err(e) = settings.apply(&specs, body) {
        errors.merge(e);
    }
    errors.into_result()?;
    backend.check_settings(StorageKind::Import, &mut settings)?;
    Ok(settings)
}

/// Where the JSONL goes: a temporary file beside the destination, renamed
/// over it by [`Output::commit`] (and deleted when dropped before), or
/// standard output.
struct Output {
    file: Option<(tempfile::TempPath, PathBuf)>,
}

impl Output {
    fn create(out: &Path) -> std::io::Result<(Box<dyn Write + Send>, Self)> {
        if out.as_os_str() == "-" {
            return Ok((Box::new(std::io::stdout()), Self { file: None }));
        }
        let dir = match out.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // The mode of a file made by `File::create` (0666 less the umask),
        // not tempfile's private 0600: the result is an ordinary file.
        let (file, path) = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .prefix(".cli_sync-")
            .suffix(".jsonl.partial")
            .tempfile_in(dir)?
            .into_parts();
        Ok((
            Box::new(file),
            Self {
                file: Some((path, out.to_path_buf())),
            },
        ))
    }

    fn commit(self) -> std::io::Result<()> {
        match self.file {
            Some((temp, out)) => temp.persist(&out).map_err(|e| e.error),
            None => Ok(()),
        }
    }
}

/// A [`TaskSink`] writing one JSON line per task.
///
/// Every run starts a fresh output, so "already linked" means "written
/// earlier in this run": a key listed twice is read once, and a task file
/// read again after a failed read (the engine retries) writes only the rows
/// it had not written.
struct JsonlSink {
    state: Mutex<SinkState>,
    data_key: Option<String>,
    bar: ProgressBar,
}

struct SinkState {
    writer: Option<BufWriter<Box<dyn Write + Send>>>,
    /// Per object key: what was written.
    keys: HashMap<String, Written>,
    /// Objects begun and not finished (large task files being streamed).
    unfinished: HashSet<String>,
    tasks: u64,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Written {
    tasks: u64,
    /// The task without a row (a file of one object, or a Files-mode task).
    whole: bool,
    /// The highest row written. The parser yields the rows of a file in
    /// increasing order, and a re-read starts from its first row, so rows
    /// up to this one are exactly those written: one number per object
    /// instead of a set of every row.
    last_row: Option<i64>,
}

impl fmt::Debug for JsonlSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlSink")
            .field("data_key", &self.data_key)
            .finish_non_exhaustive()
    }
}

impl JsonlSink {
    fn new(writer: Box<dyn Write + Send>, data_key: Option<String>, bar: ProgressBar) -> Self {
        Self {
            state: Mutex::new(SinkState {
                // 1 MiB: a few syscalls per batch of tasks.
                writer: Some(BufWriter::with_capacity(1 << 20, writer)),
                keys: HashMap::new(),
                unfinished: HashSet::new(),
                tasks: 0,
                error: None,
            }),
            data_key,
            bar,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks written so far.
    fn written(&self) -> u64 {
        self.lock().tasks
    }

    /// Flushes the output; an earlier write error is reported here too.
    fn finish(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        if let Some(error) = state.error.take() {
            return Err(std::io::Error::other(error));
        }
        match state.writer.take() {
            Some(writer) => writer.into_inner().map_err(|e| e.into_error())?.flush(),
            None => Ok(()),
        }
    }

    /// The JSON line of a task.
    fn line(&self, task: &NewTask) -> Value {
        let mut data = task.data.clone();
        if let Some(key) = &self.data_key {
            if let Some(url) = data.remove(UNDEFINED_DATA_KEY) {
                data.insert(key.clone(), url);
            }
        }
        let mut line = Map::new();
        line.insert("data".into(), Value::Object(data));
        if !task.annotations.is_empty() {
            line.insert("annotations".into(), Value::Array(task.annotations.clone()));
        }
        if !task.predictions.is_empty() {
            line.insert("predictions".into(), Value::Array(task.predictions.clone()));
        }
        if !task.allow_skip {
            line.insert("allow_skip".into(), Value::Bool(false));
        }
        let mut meta = Map::new();
        meta.insert("storage_key".into(), Value::String(task.link.key.clone()));
        if let Some(row) = task.link.row_index {
            meta.insert("row_index".into(), row.into());
        }
        line.insert("meta".into(), Value::Object(meta));
        Value::Object(line)
    }
}

#[async_trait]
impl TaskSink for JsonlSink {
    async fn linked_keys(&self, _storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let state = self.lock();
        Ok(keys
            .iter()
            .filter(|key| !state.unfinished.contains(*key))
            .filter_map(|key| {
                let written = state.keys.get(key)?;
                (written.tasks > 0).then(|| (key.clone(), written.tasks))
            })
            .collect())
    }

    /// The mark only keeps a streamed file out of [`TaskSink::linked_keys`]
    /// until it ends; nothing outlives the run.
    async fn begin_object(&self, _storage_id: i64, key: &str) -> Result<()> {
        self.lock().unfinished.insert(key.to_string());
        Ok(())
    }

    async fn finish_object(&self, _storage_id: i64, key: &str) -> Result<()> {
        self.lock().unfinished.remove(key);
        Ok(())
    }

    async fn create_tasks(
        &self,
        _project: i64,
        _storage_id: i64,
        tasks: &[NewTask],
    ) -> Result<u64> {
        let mut buffer = Vec::new();
        let mut fresh = Vec::new();
        let mut state = self.lock();
        // Decided on a copy of the marks and applied after the write, so a
        // failed write leaves them as they were (all or nothing).
        let mut marks: HashMap<&str, Written> = HashMap::new();
        for task in tasks {
            let key = task.link.key.as_str();
            let mark = marks.entry(key).or_insert_with(|| {
                let current = state.keys.get(key);
                Written {
                    tasks: current.map_or(0, |w| w.tasks),
                    whole: current.is_some_and(|w| w.whole),
                    last_row: current.and_then(|w| w.last_row),
                }
            });
            let duplicate = match task.link.row_index {
                None => std::mem::replace(&mut mark.whole, true),
                Some(row) if mark.last_row.is_some_and(|last| row <= last) => true,
                Some(row) => {
                    mark.last_row = Some(row);
                    false
                }
            };
            if !duplicate {
                mark.tasks += 1;
                fresh.push(task);
            }
        }
        for task in &fresh {
            serde_json::to_writer(&mut buffer, &self.line(task))
                .map_err(|e| Error::backend("writing a task as JSON", e))?;
            buffer.push(b'\n');
        }
        let writer = state
            .writer
            .as_mut()
            .ok_or_else(|| Error::backend("writing tasks", "the output is closed"))?;
        if let Err(err) = writer.write_all(&buffer) {
            let message = err.to_string();
            state.error = Some(message.clone());
            return Err(Error::backend("writing tasks", message));
        }
        for (key, mark) in marks {
            state.keys.insert(key.to_string(), mark);
        }
        let created = fresh.len() as u64;
        state.tasks += created;
        drop(state);
        self.bar.inc(created);
        Ok(created)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use storage_connections::core::object_store::path::Path as ObjectPath;
    use storage_connections::core::object_store::ObjectStoreExt;
    use storage_connections::core::persist::ObjectLink;
    use storage_connections::s3::{S3Backend, S3Options};

    /// Runs the command as `cli_sync ARGS...` would, without a terminal.
    async fn cli(args: &[&str]) -> (u8, String) {
        let args = Args::try_parse_from(std::iter::once("cli_sync").chain(args.iter().copied()))
            .expect("arguments parse");
        let mut report = Vec::new();
        let code = run(args, &mut report, false).await;
        (code, String::from_utf8(report).expect("UTF-8 report"))
    }

    /// The JSON lines of `path`, sorted by storage key and row.
    fn read_lines(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).expect("output written");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "the last line is complete"
        );
        let mut lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect();
        lines.sort_by_key(|line| {
            (
                line["meta"]["storage_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                line["meta"]["row_index"].as_i64(),
            )
        });
        lines
    }

    /// A document root with `data/` holding images and a text file.
    fn local_root() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().display().to_string();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        for name in ["a.jpg", "b c.jpg", "notes.txt", "sub/d.jpg"] {
            std::fs::write(data.join(name), name).unwrap();
        }
        (dir, root)
    }

    fn file_task(key: &str, url: &str) -> Value {
        json!({"data": {"$undefined$": url}, "meta": {"storage_key": key}})
    }

    #[tokio::test]
    async fn local_files_mode_writes_one_task_per_matching_file() {
        let (dir, root) = local_root();
        let out = dir.path().join("tasks.jsonl");
        let out_arg = out.display().to_string();
        let path = format!("--set=path={root}/data");
        let base = [
            "--type",
            "localfiles",
            "--local-files-document-root",
            &root,
            &path,
            "--set",
            r"regex_filter=.*\.jpg",
            "--files",
            "--out",
            &out_arg,
        ];

        let (code, report) = cli(&base).await;
        assert_eq!(code, 0, "{report}");
        assert_eq!(
            read_lines(&out),
            vec![
                file_task(
                    &format!("{root}/data/a.jpg"),
                    "/data/local-files/?d=data/a.jpg"
                ),
                file_task(
                    &format!("{root}/data/b c.jpg"),
                    "/data/local-files/?d=data/b%20c.jpg"
                ),
            ]
        );
        let summary =
            format!("synced localfiles storage: 2 objects, 2 tasks written to {out_arg} in ");
        assert!(report.starts_with(&summary), "{report}");
        assert_eq!(
            report.lines().count(),
            1,
            "one summary line without a terminal: {report}"
        );

        // Recursive, and the URL under the label config's variable; the
        // file is replaced, not appended to.
        let mut args = base.to_vec();
        args.extend(["--set", "recursive_scan=true", "--data-key", "image"]);
        let (code, report) = cli(&args).await;
        assert_eq!(code, 0, "{report}");
        let keys: Vec<(&str, &str)> = vec![
            ("a.jpg", "a.jpg"),
            ("b c.jpg", "b%20c.jpg"),
            ("sub/d.jpg", "sub/d.jpg"),
        ];
        let expected: Vec<Value> = keys
            .iter()
            .map(|(name, quoted)| {
                json!({
                    "data": {"image": format!("/data/local-files/?d=data/{quoted}")},
                    "meta": {"storage_key": format!("{root}/data/{name}")},
                })
            })
            .collect();
        assert_eq!(read_lines(&out), expected);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|name| name.contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        // An ordinary file's mode, not the temporary file's 0600.
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), mode(&plain));
    }

    #[tokio::test]
    async fn local_tasks_mode_reads_every_format_and_reports_bad_files() {
        let (dir, root) = local_root();
        let tasks = dir.path().join("tasks");
        std::fs::create_dir_all(&tasks).unwrap();
        std::fs::write(tasks.join("one.json"), r#"{"text": "a"}"#).unwrap();
        std::fs::write(
            tasks.join("many.json"),
            r#"[{"data": {"text": "b"}, "annotations": [{"result": []}], "predictions": [{"result": [], "score": 0.5}]}, {"text": "c"}]"#,
        )
        .unwrap();
        std::fs::write(
            tasks.join("lines.jsonl"),
            "{\"text\": \"d\"}\n\n{\"data\": {\"text\": \"e\"}, \"allow_skip\": false}\n",
        )
        .unwrap();
        std::fs::write(tasks.join("bad.json"), "{\"text\": ").unwrap();
        let out = dir.path().join("out.jsonl");
        let out_arg = out.display().to_string();
        // A storage as `GET /api/storages/localfiles/{id}` shows it: the
        // fields that are not settings are accepted and ignored.
        let config = dir.path().join("storage.json");
        let storage = json!({
            "id": 4, "type": "localfiles", "project": 1, "title": "ignored", "status": "completed",
            "path": format!("{root}/tasks"), "use_blob_urls": false, "regex_filter": null,
        });
        std::fs::write(&config, storage.to_string()).unwrap();

        let (code, report) = cli(&[
            "--type",
            "localfiles",
            "--local-files-document-root",
            &root,
            "--config",
            &config.display().to_string(),
            "--out",
            &out_arg,
        ])
        .await;

        assert_eq!(code, EXIT_FILES_FAILED, "{report}");
        let key = |name: &str| format!("{root}/tasks/{name}");
        assert_eq!(
            read_lines(&out),
            vec![
                json!({"data": {"text": "d"}, "meta": {"storage_key": key("lines.jsonl"), "row_index": 0}}),
                json!({"data": {"text": "e"}, "allow_skip": false, "meta": {"storage_key": key("lines.jsonl"), "row_index": 2}}),
                json!({
                    "data": {"text": "b"},
                    "annotations": [{"result": []}],
                    "predictions": [{"result": [], "score": 0.5}],
                    "meta": {"storage_key": key("many.json"), "row_index": 0},
                }),
                json!({"data": {"text": "c"}, "meta": {"storage_key": key("many.json"), "row_index": 1}}),
                json!({"data": {"text": "a"}, "meta": {"storage_key": key("one.json")}}),
            ]
        );
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 2, "{report}");
        assert!(
            lines[0].starts_with(&format!(
                "synced localfiles storage: 4 objects, 5 tasks written to {out_arg}, 1 task files failed in "
            )),
            "{report}"
        );
        assert!(
            lines[1].starts_with(&format!("failed: {}", key("bad.json"))),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_large_task_file_is_streamed_once() {
        let (dir, root) = local_root();
        let tasks = dir.path().join("big");
        std::fs::create_dir_all(&tasks).unwrap();
        // Above the 4 MiB threshold, so the engine streams it in batches
        // between begin_object and finish_object.
        let rows = 50_000;
        let mut text = String::new();
        for i in 0..rows {
            text.push_str(&format!("{{\"text\": \"{i:0>80}\"}}\n"));
        }
        assert!(text.len() as u64 > ImportConfig::default().stream_threshold_bytes);
        std::fs::write(tasks.join("big.jsonl"), text).unwrap();
        let out = dir.path().join("big.jsonl.out");

        let (code, report) = cli(&[
            "--type",
            "localfiles",
            "--local-files-document-root",
            &root,
            &format!("--set=path={root}/big"),
            "--tasks",
            "--out",
            &out.display().to_string(),
        ])
        .await;

        assert_eq!(code, 0, "{report}");
        let lines = read_lines(&out);
        assert_eq!(lines.len(), rows);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["meta"]["row_index"], json!(i));
            assert_eq!(line["data"]["text"], json!(format!("{i:0>80}")));
        }
    }

    #[tokio::test]
    async fn invalid_settings_name_the_field_and_exit_2() {
        let (dir, root) = local_root();
        let out = dir.path().join("never.jsonl");
        let out_arg = out.display().to_string();
        let local = [
            "--type",
            "localfiles",
            "--local-files-document-root",
            &root,
            "--out",
            &out_arg,
        ];
        let with = |extra: &[&'static str]| -> Vec<String> {
            local
                .iter()
                .map(|s| s.to_string())
                .chain(extra.iter().map(|s| s.to_string()))
                .collect()
        };
        let run_with = |args: Vec<String>| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args).await
        };

        let (code, report) = run_with(with(&["--set", "path=data", "--files"])).await;
        assert_eq!(code, EXIT_INVALID);
        assert_eq!(
            report,
            format!(
                "error: invalid storage settings\n  non_field_errors: Absolute local path \"data\" must be \
                 absolute (start with \"/\"). For example: \"{root}/dataset1\".\n"
            )
        );

        let path = format!("path={root}/data");
        let mut args = with(&[
            "--set",
            "use_blob_urls=maybe",
            "--set",
            "regx_filter=x",
            "--set",
        ]);
        args.push(path.clone());
        let (code, report) = run_with(args).await;
        assert_eq!(code, EXIT_INVALID);
        assert_eq!(
            report,
            "error: invalid storage settings\n  regx_filter: Unknown field; localfiles import storages take: \
             path, regex_filter, use_blob_urls, recursive_scan.\n  use_blob_urls: Must be a valid boolean.\n"
        );

        let mut args = with(&["--set", "regex_filter=(", "--set"]);
        args.push(path.clone());
        let (code, report) = run_with(args).await;
        assert_eq!(code, EXIT_INVALID);
        assert!(
            report.starts_with(
                "error: invalid storage settings\n  regex_filter: Invalid regular expression: "
            ),
            "{report}"
        );

        // Tasks mode over images: Label Studio's "use Files mode" message.
        let mut args = with(&["--tasks", "--set"]);
        args.push(path);
        let (code, report) = run_with(args).await;
        assert_eq!(code, EXIT_INVALID);
        assert!(
            report.starts_with(&format!(
                "error: invalid storage settings\n  non_field_errors: File \"{root}/data/a.jpg\" is not a JSON/JSONL/Parquet file."
            )),
            "{report}"
        );

        let ftp = ["--type", "ftp", "--set", "path=/x", "--out", &out_arg];
        let (code, report) = cli(&ftp).await;
        assert_eq!(code, EXIT_INVALID);
        assert_eq!(
            report,
            "error: --type: unknown storage type \"ftp\" (one of: s3, gcs, gcs_sa, localfiles)\n"
        );

        assert!(!out.exists(), "no output after an invalid run");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing but data/ was created"
        );
    }

    /// An S3 storage configured as the API takes it, on moto.
    struct Bucket {
        moto: storage_testing::S3Server,
        prefix: String,
    }

    impl Bucket {
        fn fields(&self, prefix: &str) -> Value {
            json!({
                "bucket": self.moto.bucket,
                "prefix": format!("{}/{prefix}", self.prefix),
                "aws_access_key_id": self.moto.access_key_id,
                "aws_secret_access_key": self.moto.secret_access_key,
                "s3_endpoint": self.moto.endpoint,
            })
        }

        async fn put(&self, objects: &[(&str, &str)]) {
            let settings = Settings::from_map(self.fields("").as_object().unwrap().clone());
            let backend = S3Backend::new(
                S3Options::new().with_endpoint_policy(EndpointPolicy::allow_private()),
            );
            let store = backend.export_storage(&settings).await.unwrap().store();
            for (key, body) in objects {
                let location = ObjectPath::from(format!("{}/{key}", self.prefix));
                store.put(&location, body.to_string().into()).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn s3_files_and_tasks_modes_on_moto() {
        let bucket = Bucket {
            moto: storage_testing::moto(),
            prefix: storage_testing::unique_prefix("cli_sync"),
        };
        bucket
            .put(&[
                ("img/a.jpg", "a"),
                ("img/b c.jpg", "b"),
                ("img/notes.txt", "n"),
                ("img/sub/d.jpg", "d"),
                (
                    "tasks/t.json",
                    r#"[{"text": "x"}, {"data": {"text": "y"}}]"#,
                ),
                ("tasks/t.jsonl", "{\"text\": \"z\"}\n{\"text\": \"w\"}\n"),
            ])
            .await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("s3.jsonl");
        let out_arg = out.display().to_string();
        let config = dir.path().join("s3.json");
        let config_arg = config.display().to_string();
        let mut fields = bucket.fields("img");
        fields["regex_filter"] = json!(r".*\.jpg");
        std::fs::write(&config, fields.to_string()).unwrap();
        let files = [
            "--type",
            "s3",
            "--config",
            &config_arg,
            "--allow-private-endpoints",
            "--files",
            "--out",
            &out_arg,
        ];
        let key = |name: &str| format!("{}/{name}", bucket.prefix);
        let url = |name: &str| format!("s3://{}/{}/{name}", bucket.moto.bucket, bucket.prefix);

        let (code, report) = cli(&files).await;
        assert_eq!(code, 0, "{report}");
        assert_eq!(
            read_lines(&out),
            vec![
                file_task(&key("img/a.jpg"), &url("img/a.jpg")),
                file_task(&key("img/b c.jpg"), &url("img/b c.jpg")),
            ]
        );
        assert!(
            report.starts_with(&format!(
                "synced s3 storage: 2 objects, 2 tasks written to {out_arg} in "
            )),
            "{report}"
        );

        let mut recursive = files.to_vec();
        recursive.extend(["--set", "recursive_scan=1"]);
        let (code, report) = cli(&recursive).await;
        assert_eq!(code, 0, "{report}");
        let keys: Vec<Value> = read_lines(&out)
            .iter()
            .map(|l| l["meta"]["storage_key"].clone())
            .collect();
        assert_eq!(
            keys,
            vec![
                json!(key("img/a.jpg")),
                json!(key("img/b c.jpg")),
                json!(key("img/sub/d.jpg"))
            ]
        );

        std::fs::write(&config, bucket.fields("tasks").to_string()).unwrap();
        let (code, report) = cli(&[
            "--type",
            "s3",
            "--config",
            &config_arg,
            "--allow-private-endpoints",
            "--tasks",
            "--out",
            &out_arg,
        ])
        .await;
        assert_eq!(code, 0, "{report}");
        assert_eq!(
            read_lines(&out),
            vec![
                json!({"data": {"text": "x"}, "meta": {"storage_key": key("tasks/t.json"), "row_index": 0}}),
                json!({"data": {"text": "y"}, "meta": {"storage_key": key("tasks/t.json"), "row_index": 1}}),
                json!({"data": {"text": "z"}, "meta": {"storage_key": key("tasks/t.jsonl"), "row_index": 0}}),
                json!({"data": {"text": "w"}, "meta": {"storage_key": key("tasks/t.jsonl"), "row_index": 1}}),
            ]
        );

        // The server's endpoint policy applies: a loopback endpoint needs
        // the switch (said explicitly, whatever the environment says).
        let strict = [
            "--type",
            "s3",
            "--config",
            &config_arg,
            "--allow-private-endpoints=false",
            "--out",
            &out_arg,
        ];
        let (code, report) = cli(&strict).await;
        assert_eq!(code, EXIT_INVALID, "{report}");
        assert!(
            report.starts_with("error: invalid storage settings\n  s3_endpoint: "),
            "{report}"
        );
        assert_eq!(report.lines().count(), 2, "{report}");
    }

    fn new_task(key: &str, row: Option<i64>) -> NewTask {
        let mut data = Map::new();
        data.insert("row".into(), json!(row));
        NewTask {
            data,
            annotations: Vec::new(),
            predictions: Vec::new(),
            allow_skip: true,
            link: ObjectLink {
                key: key.into(),
                row_index: row,
                etag: None,
                size: None,
                last_modified: None,
            },
        }
    }

    #[tokio::test]
    async fn the_sink_writes_each_task_once_and_hides_unfinished_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sink.jsonl");
        let file = std::fs::File::create(&path).unwrap();
        let sink = JsonlSink::new(Box::new(file), None, ProgressBar::hidden());
        let keys = vec!["k".to_string(), "whole".to_string(), "big".to_string()];

        let first = [
            new_task("k", Some(0)),
            new_task("k", Some(1)),
            new_task("whole", None),
        ];
        assert_eq!(sink.create_tasks(1, 1, &first).await.unwrap(), 3);
        // A re-read of the same objects: only the new row is written.
        let again = [
            new_task("k", Some(0)),
            new_task("k", Some(1)),
            new_task("k", Some(2)),
            new_task("whole", None),
        ];
        assert_eq!(sink.create_tasks(1, 1, &again).await.unwrap(), 1);
        sink.begin_object(1, "big").await.unwrap();
        assert_eq!(
            sink.create_tasks(1, 1, &[new_task("big", Some(0))])
                .await
                .unwrap(),
            1
        );
        let linked = sink.linked_keys(1, &keys).await.unwrap();
        assert_eq!(
            linked,
            HashMap::from([("k".to_string(), 3), ("whole".to_string(), 1)])
        );
        sink.finish_object(1, "big").await.unwrap();
        let linked = sink.linked_keys(1, &keys).await.unwrap();
        assert_eq!(linked.get("big"), Some(&1));
        assert_eq!(sink.written(), 5);
        sink.finish().unwrap();

        let rows: Vec<(String, Value)> = read_lines(&path)
            .into_iter()
            .map(|l| {
                (
                    l["meta"]["storage_key"].as_str().unwrap().to_string(),
                    l["data"]["row"].clone(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("big".into(), json!(0)),
                ("k".into(), json!(0)),
                ("k".into(), json!(1)),
                ("k".into(), json!(2)),
                ("whole".into(), Value::Null),
            ]
        );
    }
}

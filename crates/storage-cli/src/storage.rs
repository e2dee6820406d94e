//! The storage every subcommand works on: its type and fields as the REST
//! API takes them, the backends built from the same flags as the server,
//! and how failures are reported.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use storage_core::fields::unknown_fields;
use storage_core::jobs::error_report;
use storage_core::{
    Backend, Backends, EndpointPolicy, Error, Result, StorageFields, StorageKind, ValidationErrors,
};
use storage_localfiles::{LocalFiles, LocalFilesBackend};

use storage_server::cloud;

/// Exit code: any other failure (listing, reading, writing, connecting).
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit code: invalid arguments or settings (clap uses 2 for usage errors too).
pub(crate) const EXIT_INVALID: u8 = 2;

/// The storage's type and fields, and the server-side options of its backend.
#[derive(Debug, clap::Args)]
pub(crate) struct StorageArgs {
    /// Storage type: localfiles, s3, gcs, gcs_sa or s3s.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) storage_type: String,
    /// A JSON object with the storage's fields, as the REST API takes them
    /// (a storage as `GET /api/storages/<type>/<id>` shows it works too).
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

/// A storage's backend and its checked settings.
pub(crate) struct Configured {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) fields: StorageFields,
}

impl StorageArgs {
    /// The backend of `--type` and the fields the flags describe, checked
    /// as the API checks a new storage of `kind`. On failure the messages
    /// are written to `report` and the exit code returned.
    pub(crate) fn configure(
        &self,
        kind: StorageKind,
        report: &mut dyn Write,
    ) -> std::result::Result<Configured, u8> {
        let backends = self.backends().map_err(|err| failed(report, &err))?;
        let Some(backend) = backends.get(&self.storage_type).cloned() else {
            let known: Vec<&str> = backends.iter().map(|b| b.name()).collect();
            let _ = writeln!(
                report,
                "error: --type: unknown storage type \"{}\" (one of: {})",
                self.storage_type,
                known.join(", ")
            );
            return Err(EXIT_INVALID);
        };
        let body = self.request_body().map_err(|message| {
            let _ = writeln!(report, "error: {message}");
            EXIT_INVALID
        })?;
        let fields = settings(backend.as_ref(), kind, &body).map_err(|err| failed(report, &err))?;
        Ok(Configured { backend, fields })
    }

    /// The endpoints the storage may reach (`--allow-private-endpoints`).
    pub(crate) fn endpoint_policy(&self) -> EndpointPolicy {
        if self.allow_private_endpoints {
            EndpointPolicy::allow_private()
        } else {
            EndpointPolicy::strict()
        }
    }

    /// The backends of the server, configured from the same flags.
    fn backends(&self) -> Result<Backends> {
        let policy = self.endpoint_policy();
        // A command run by the person who owns the files: serving is on,
        // the document root only decides the task URLs and what may be read.
        let local = LocalFiles::new(&self.local_files_document_root)?
            .with_serving_enabled(true)
            .with_url_base(self.host.clone());
        Ok(self
            .cloud
            .bucket_backends(policy)
            .with(Arc::new(LocalFilesBackend::new(local))))
    }

    /// The REST body the flags describe: `--config`, then `--set`, then
    /// `--files`/`--tasks`.
    fn request_body(&self) -> std::result::Result<Map<String, Value>, String> {
        let mut body = match &self.config {
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
        for (name, value) in &self.set {
            body.insert(name.clone(), Value::String(value.clone()));
        }
        if self.files || self.tasks {
            body.insert("use_blob_urls".into(), Value::Bool(self.files));
        }
        Ok(body)
    }
}

/// Checks `body` as the API checks a new storage (the same core function,
/// so the same fields and messages), then the backend's own rules. Unlike
/// the API, a field no storage has is an error: here it can only be a typo.
fn settings(
    backend: &dyn Backend,
    kind: StorageKind,
    body: &Map<String, Value>,
) -> Result<StorageFields> {
    // Following the bucket, the schedule and events are what a stored
    // storage does from one sync to the next; a one-off command has none.
    let server_only: Vec<&str> = storage_core::fields::follow_fields()
        .iter()
        .map(|spec| spec.name)
        .chain(storage_core::events::FIELDS)
        .collect();
    let specs: Vec<_> = backend
        .fields(kind)
        .into_iter()
        .filter(|spec| !server_only.contains(&spec.name))
        .collect();
    let mut errors = ValidationErrors::default();
    for name in unknown_fields(&specs, body) {
        let names: Vec<&str> = specs.iter().map(|spec| spec.name).collect();
        errors.add(
            name,
            format!(
                "Unknown field; {} {} storages take: {}.",
                backend.name(),
                kind.as_str(),
                names.join(", ")
            ),
        );
    }
    let mut fields = StorageFields::defaults(&specs);
    if let Err(e) = fields.apply(&specs, body) {
        errors.merge(e);
    }
    errors.into_result()?;
    backend.check_settings(kind, &mut fields.settings)?;
    Ok(fields)
}

/// Prints an error: invalid settings one line per field, like the API's
/// `validation_errors`; anything else with its causes. Returns the exit
/// code. Errors never hold a secret (core's rule), so they are printed
/// whole.
pub(crate) fn failed(report: &mut dyn Write, err: &Error) -> u8 {
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
                error_report(other).replace('\n', "\n  ")
            );
            EXIT_FAILED
        }
    }
}

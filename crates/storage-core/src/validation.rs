//! The validation report (`POST …/validate?report=true`, `storages
//! validate`): which of configuration, credentials, listing, reading,
//! signing and writing work for one storage, each check with its outcome,
//! its duration and a message that says what to fix.
//!
//! Import storages are checked for `configuration`, `credentials`, `list`
//! (with how many objects match the filter, up to [`MAX_COUNTED`]), `read`
//! (Tasks mode reads its objects) and `presign` (a signed URL is made and
//! fetched); export storages for `configuration`, `credentials`, `list`,
//! `write` (a probe object) and `delete` (the probe, when
//! `can_delete_objects`). A check whose prerequisite failed is `skipped`.
//! Messages never carry a secret of the storage.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;
use serde_json::Value;

use crate::{
    Backend, EndpointPolicy, Error, ExportStorage, ImportOptions, ImportStorage, Result, Settings,
    StorageKind,
};

/// Objects counted by the `list` check, at most.
pub const MAX_COUNTED: usize = 1_000;

/// Bytes the `read` check reads, at most.
const READ_BYTES: u64 = 64 * 1024;

/// How long the signed URL of the `presign` check is valid.
const PRESIGN_TTL: Duration = Duration::from_secs(60);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// It works.
    Passed,
    /// It does not; the message says why and what to fix.
    Failed,
    /// Not run: it does not apply, or a check it needs failed.
    Skipped,
}

/// One check of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `configuration`, `credentials`, `list`, `read`, `presign`, `write`
    /// or `delete`.
    pub name: &'static str,
    /// Its outcome.
    pub status: CheckStatus,
    /// How long it took.
    pub duration_ms: u64,
    /// What it found, or what to fix.
    pub message: String,
}

/// Every check of one storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No check failed.
    pub valid: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// The report of settings that are not valid: `configuration` failed
    /// with `message`, every other check of `kind` skipped.
    pub fn invalid_configuration(kind: StorageKind, message: impl Into<String>) -> Self {
        let mut checks = vec![Check {
            name: "configuration",
            status: CheckStatus::Failed,
            duration_ms: 0,
            message: message.into(),
        }];
        checks.extend(
            names(kind)[1..]
                .iter()
                .map(|name| skipped(name, "the configuration is not valid")),
        );
        Self {
            valid: false,
            checks,
        }
    }

    /// As JSON: `{"valid", "checks": [{"name", "status", "duration_ms",
    /// "message"}]}`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The checks of `kind`, in order.
fn names(kind: StorageKind) -> &'static [&'static str] {
    match kind {
        StorageKind::Import => &["configuration", "credentials", "list", "read", "presign"],
        StorageKind::Export => &["configuration", "credentials", "list", "write", "delete"],
    }
}

fn skipped(name: &'static str, why: &str) -> Check {
    Check {
        name,
        status: CheckStatus::Skipped,
        duration_ms: 0,
        message: why.to_string(),
    }
}

/// How a report is made.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    /// How long one check may take.
    pub timeout: Duration,
    /// The addresses the `presign` check may fetch a signed URL from.
    pub policy: EndpointPolicy,
}

/// Runs the checks of a storage of `kind` with `settings` (already checked
/// against the backend's field schema) on `backend`.
pub async fn report(
    backend: &dyn Backend,
    kind: StorageKind,
    settings: &Settings,
    options: ReportOptions,
) -> Report {
    let secrets = settings.secret_values(&backend.fields(kind));
    let mut run = Run {
        checks: Vec::new(),
        options,
        secrets,
    };
    let mut checked = settings.clone();
    let configured = run
        .check("configuration", async {
            backend.check_settings(kind, &mut checked)?;
            Ok("the fields are valid".to_string())
        })
        .await;
    if configured.is_none() {
        return run.rest(kind, "the configuration is not valid");
    }
    match kind {
        StorageKind::Import => run.import(backend, &checked).await,
        StorageKind::Export => run.export(backend, &checked).await,
    }
    run.finish()
}

/// The checks so far.
struct Run {
    checks: Vec<Check>,
    options: ReportOptions,
    secrets: Vec<String>,
}

impl Run {
    /// Runs one check within the timeout; its value when it passed.
    async fn check<T>(
        &mut self,
        name: &'static str,
        work: impl Future<Output = Result<T>>,
    ) -> Option<T>
    where
        T: Described,
    {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.options.timeout, work).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, message, value) = match outcome {
            Ok(Ok(value)) => (CheckStatus::Passed, value.describe(), Some(value)),
            Ok(Err(err)) => (CheckStatus::Failed, self.shown(err), None),
            Err(_) => (
                CheckStatus::Failed,
                format!(
                    "timed out after {} s; the endpoint may be slow or unreachable",
                    self.options.timeout.as_secs_f64()
                ),
                None,
            ),
        };
        self.checks.push(Check {
            name,
            status,
            duration_ms,
            message,
        });
        value
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.checks.push(skipped(name, why));
    }

    /// Skips every check of `kind` not run yet.
    fn rest(mut self, kind: StorageKind, why: &str) -> Report {
        for name in names(kind) {
            if !self.checks.iter().any(|c| c.name == *name) {
                self.skip(name, why);
            }
        }
        self.finish()
    }

    fn finish(self) -> Report {
        Report {
            valid: self.checks.iter().all(|c| c.status != CheckStatus::Failed),
            checks: self.checks,
        }
    }

    /// An error as a message: no secret, no provider body.
    fn shown(&self, err: Error) -> String {
        let text = match err.redacted(&self.secrets) {
            Error::InvalidConfig(errors) => errors.to_string(),
            other => other.to_string(),
        };
        crate::redact::without_provider_bodies(&text).into_owned()
    }

    async fn import(&mut self, backend: &dyn Backend, settings: &Settings) {
        let Some(source) = self
            .check("credentials", async {
                backend.import_storage(settings).await.map(Built)
            })
            .await
            .map(|built| built.0)
        else {
            for name in ["list", "read", "presign"] {
                self.skip(name, "the storage client could not be built");
            }
            return;
        };
        let listed = self.check("list", list(source.clone())).await;
        let first = match listed {
            Some(Listed {
                first: Some(first), ..
            }) => first,
            Some(_) => {
                self.skip("read", "no object matches the prefix and filter");
                self.skip("presign", "no object matches the prefix and filter");
                return;
            }
            None => {
                self.skip("read", "listing failed");
                self.skip("presign", "listing failed");
                return;
            }
        };
        let options = ImportOptions::from_settings(settings);
        if options.use_blob_urls {
            self.skip(
                "read",
                "Files mode: objects are not read, their URLs go into tasks",
            );
        } else {
            let store = source.store();
            let location = first.clone();
            self.check("read", async move {
                let meta = store
                    .head(&location)
                    .await
                    .map_err(|e| Error::from_object_store(format!("reading \"{location}\""), e))?;
                let end = meta.size.min(READ_BYTES);
                let bytes = store
                    .get_range(&location, 0..end)
                    .await
                    .map_err(|e| Error::from_object_store(format!("reading \"{location}\""), e))?;
                Ok(Message(format!(
                    "read {} of {} bytes of \"{location}\"",
                    bytes.len(),
                    meta.size
                )))
            })
            .await;
        }
        let presign = settings.bool("presign", false);
        if !backend.capabilities().presign {
            self.skip("presign", "this storage type does not sign URLs");
        } else if !presign {
            self.skip(
                "presign",
                "presign is off: objects are served through this server",
            );
        } else {
            let policy = self.options.policy;
            let timeout = self.options.timeout;
            self.check("presign", presign_and_fetch(source, first, policy, timeout))
                .await;
        }
    }

    async fn export(&mut self, backend: &dyn Backend, settings: &Settings) {
        let Some(target) = self
            .check("credentials", async {
                backend.export_storage(settings).await.map(BuiltExport)
            })
            .await
            .map(|built| built.0)
        else {
            for name in ["list", "write", "delete"] {
                self.skip(name, "the storage client could not be built");
            }
            return;
        };
        let reachable = self
            .check("list", async {
                target.check_connection().await?;
                Ok(Message("the target can be listed".into()))
            })
            .await;
        if reachable.is_none() {
            self.skip("write", "listing failed");
            self.skip("delete", "listing failed");
            return;
        }
        let probe = target.location(&format!(".storage-validate-{}", uuid::Uuid::new_v4()));
        let store = target.store();
        let written = self
            .check("write", {
                let (store, probe) = (store.clone(), probe.clone());
                async move {
                    store
                        .put(
                            &probe,
                            b"storage-connections validation probe".to_vec().into(),
                        )
                        .await
                        .map_err(|e| Error::from_object_store(format!("writing \"{probe}\""), e))?;
                    Ok(Message(format!("wrote the probe object \"{probe}\"")))
                }
            })
            .await;
        if written.is_none() {
            self.skip("delete", "the probe object could not be written");
        } else if !target.can_delete_objects() {
            self.skip(
                "delete",
                &format!(
                    "can_delete_objects is off, so the probe object \"{probe}\" was left in \
                     place; delete it by hand"
                ),
            );
        } else {
            self.check("delete", async move {
                store
                    .delete(&probe)
                    .await
                    .map_err(|e| Error::from_object_store(format!("deleting \"{probe}\""), e))?;
                Ok(Message(format!("deleted the probe object \"{probe}\"")))
            })
            .await;
        }
    }
}

/// What a passed check says.
trait Described {
    fn describe(&self) -> String;
}

struct Message(String);

impl Described for Message {
    fn describe(&self) -> String {
        self.0.clone()
    }
}

impl Described for String {
    fn describe(&self) -> String {
        self.clone()
    }
}

struct Built(Arc<dyn ImportStorage>);

impl Described for Built {
    fn describe(&self) -> String {
        "the storage client was built".into()
    }
}

struct BuiltExport(Arc<dyn ExportStorage>);

impl Described for BuiltExport {
    fn describe(&self) -> String {
        "the storage client was built".into()
    }
}

/// What the `list` check found.
struct Listed {
    matching: usize,
    first: Option<Path>,
    prefix: String,
}

impl Described for Listed {
    fn describe(&self) -> String {
        let under = if self.prefix.is_empty() {
            "the storage root".to_string()
        } else {
            format!("prefix \"{}\"", self.prefix)
        };
        match self.matching {
            0 => format!(
                "listing works, but no object under {under} matches the filter: a sync would \
                 import nothing"
            ),
            1 => format!("1 object matches under {under}"),
            n if n >= MAX_COUNTED => format!("{MAX_COUNTED} or more objects match under {under}"),
            n => format!("{n} objects match under {under}"),
        }
    }
}

/// Proves the source can be listed (with the backend's explanations of a
/// failure), then counts the matching objects.
async fn list(source: Arc<dyn ImportStorage>) -> Result<Listed> {
    let prefix = source
        .listing()
        .prefix
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    match source.check_connection().await {
        Ok(()) => {}
        // An empty source: listing works, nothing matches (said below).
        Err(Error::InvalidConfig(errors)) if errors.to_string().contains("No objects found") => {
            return Ok(Listed {
                matching: 0,
                first: None,
                prefix,
            })
        }
        Err(err) => return Err(err),
    }
    let mut objects = source.list().take(MAX_COUNTED);
    let mut matching = 0;
    let mut first = None;
    while let Some(object) = objects.next().await {
        let object = object?;
        if source
            .listing()
            .accepts(&source.object_key(&object.location))
        {
            matching += 1;
            first.get_or_insert(object.location);
        }
    }
    Ok(Listed {
        matching,
        first,
        prefix,
    })
}

/// Signs a URL of `location` and fetches its first byte, as a browser
/// would load the object.
async fn presign_and_fetch(
    source: Arc<dyn ImportStorage>,
    location: Path,
    policy: EndpointPolicy,
    timeout: Duration,
) -> Result<Message> {
    let url = source.signed_url(&location, PRESIGN_TTL).await?;
    fetch_first_byte(&url, policy, timeout).await?;
    let host = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Message(format!(
        "signed a URL of \"{location}\" on {host} and fetched it"
    )))
}

#[cfg(feature = "cloud")]
async fn fetch_first_byte(url: &str, policy: EndpointPolicy, timeout: Duration) -> Result<()> {
    use object_store::client::HttpConnector;
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let client = crate::endpoint::PolicyConnector::new(policy)
        .with_timeout(timeout)
        .connect(&object_store::ClientOptions::new().with_allow_http(true))
        .map_err(|e| Error::backend("building the HTTP client", e))?;
    let request = http::Request::builder()
        .method(http::Method::GET)
        .uri(url)
        .header(http::header::RANGE, "bytes=0-0")
        .body(object_store::client::HttpRequestBody::empty())
        .map_err(|e| Error::invalid_general(format!("the signed URL is not usable: {e}")))?;
    let response = client.execute(request).await.map_err(|e| {
        Error::invalid_general(format!(
            "the signed URL's host {host} could not be reached ({}); browsers will not load \
             the objects: check the storage's endpoint as the browser sees it",
            kind_text(&e)
        ))
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Error::invalid_general(format!(
            "{host} answered the signed URL with {status}; browsers will not load the objects: \
             check the credentials' read permission and the storage's endpoint"
        )))
    }
}

#[cfg(not(feature = "cloud"))]
async fn fetch_first_byte(_url: &str, _policy: EndpointPolicy, _timeout: Duration) -> Result<()> {
    Ok(())
}

/// The kind of an HTTP client error in words (its text may quote the URL,
/// signature included).
#[cfg(feature = "cloud")]
fn kind_text(err: &object_store::client::HttpError) -> &'static str {
    use object_store::client::HttpErrorKind;
    match err.kind() {
        HttpErrorKind::Connect => "connection failed",
        HttpErrorKind::Timeout => "timed out",
        HttpErrorKind::Interrupted => "the connection was interrupted",
        HttpErrorKind::Decode => "the answer could not be read",
        _ => "the request failed",
    }
}

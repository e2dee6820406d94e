//! [`FilesApiStore`]: an `ObjectStore` over the Databricks Files API, rooted
//! at one Unity Catalog volume.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use futures::FutureExt;
use http::{header, Method, StatusCode};
use object_store::client::{HttpClient, HttpRequestBody, HttpResponse};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload,
    ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use storage_core::failure::ServiceError;
use storage_core::retry::RetryPolicy;
use tokio::sync::Semaphore;

use crate::token::Credential;

/// The name object_store errors carry.
const STORE: &str = "Databricks";
/// Entries per directory page asked for (the API's maximum).
const PAGE_SIZE: u32 = 1000;
/// The longest `Retry-After` honoured; a longer one fails the request.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Path segments are sent percent-encoded, except RFC 3986's unreserved
/// characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How a [`FilesApiStore`] reaches its volume.
pub(crate) struct StoreConfig {
    pub(crate) host: String,
    pub(crate) volume_path: String,
    pub(crate) client: HttpClient,
    pub(crate) credential: Credential,
    pub(crate) retry: RetryPolicy,
    pub(crate) chunk_bytes: usize,
    pub(crate) list_concurrency: usize,
}

/// An `ObjectStore` on one Unity Catalog volume through the Databricks
/// Files API. Locations are paths relative to the volume root.
///
/// Copy, rename and multipart uploads are not supported (the Files API has
/// no copy, and exports write single small objects).
#[derive(Clone)]
pub struct FilesApiStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    pages: Semaphore,
}

impl fmt::Debug for FilesApiStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credential stays out.
        f.debug_struct("FilesApiStore")
            .field("host", &self.inner.config.host)
            .field("volume", &self.inner.config.volume_path)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FilesApiStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Databricks({}{})",
            self.inner.config.host, self.inner.config.volume_path
        )
    }
}

/// A refusal of the Files API: its status, `error_code` and `message`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: Option<String>,
    message: String,
}

/// One entry of a directory page.
#[derive(Debug)]
struct Entry {
    path: String,
    is_directory: bool,
    size: u64,
    last_modified: Option<i64>,
}

/// One page of a directory listing.
#[derive(Debug, Default)]
struct Page {
    entries: Vec<Entry>,
    next: Option<String>,
}

impl FilesApiStore {
    pub(crate) fn new(config: StoreConfig) -> Self {
        let pages = Semaphore::new(config.list_concurrency.max(1));
        Self {
            inner: Arc::new(Inner { config, pages }),
        }
    }

    /// The Bearer token the store sends now (fetched or from the cache):
    /// a connection check asks for it first, so a refused credential is
    /// reported as such.
    pub(crate) async fn bearer(&self) -> storage_core::Result<()> {
        self.inner.config.credential.bearer().await.map(|_| ())
    }
}

impl Inner {
    /// `/Volumes/c/s/v[/location]`, each segment percent-encoded.
    fn api_path(&self, location: Option<&Path>) -> String {
        let mut path = String::new();
        for part in self.config.volume_path.split('/').filter(|p| !p.is_empty()) {
            path.push('/');
            path.extend(utf8_percent_encode(part, SEGMENT));
        }
        if let Some(location) = location {
            for part in location.parts() {
                path.push('/');
                path.extend(utf8_percent_encode(part.as_ref(), SEGMENT));
            }
        }
        path
    }

    fn url(&self, api: &str, location: Option<&Path>, query: &str) -> String {
        format!(
            "{}/api/2.0/fs/{api}{}{query}",
            self.config.host,
            self.api_path(location)
        )
    }

    /// The location of an absolute path the API returned, relative to the
    /// volume root.
    fn location(&self, absolute: &str) -> object_store::Result<Path> {
        let root = &self.config.volume_path;
        let relative = absolute
            .strip_prefix(root.as_str())
            .map(|rest| rest.trim_start_matches('/'))
            .ok_or_else(|| generic(format!("Databricks listed {absolute} outside {root}")))?;
        Ok(Path::parse(relative.trim_end_matches('/'))?)
    }

    /// Sends a request with the storage's token, retrying `429` and `503`
    /// (after what `Retry-After` says, else the retry policy's backoff),
    /// unreachable hosts, and once a `401` with a fresh OAuth token.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<&PutPayload>,
    ) -> object_store::Result<Result<HttpResponse, Refusal>> {
        let policy = self.config.retry;
        let started = std::time::Instant::now();
        let mut attempt = 1u32;
        let mut renewed = false;
        loop {
            let token = self
                .config
                .credential
                .bearer()
                .await
                .map_err(credential_error)?;
            let mut request = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .header(header::AUTHORIZATION, format!("Bearer {token}"));
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request
                .body(match body {
                    Some(payload) => HttpRequestBody::from(payload.clone()),
                    None => HttpRequestBody::empty(),
                })
                .map_err(|e| generic(e.to_string()))?;
            let wait = match self.config.client.execute(request).await {
                Err(err) => {
                    let retryable = matches!(
                        err.kind(),
                        object_store::client::HttpErrorKind::Connect
                            | object_store::client::HttpErrorKind::Timeout
                            | object_store::client::HttpErrorKind::Interrupted
                    );
                    if !retryable || attempt >= policy.max_attempts {
                        return Err(object_store::Error::Generic {
                            store: STORE,
                            source: Box::new(err),
                        });
                    }
                    backoff(&policy, attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return Ok(Ok(response));
                    }
                    if status == StatusCode::UNAUTHORIZED && !renewed {
                        if let Credential::OAuth(_) = self.config.credential {
                            renewed = true;
                            self.config.credential.refused(&token).await;
                            continue;
                        }
                    }
                    let throttled = matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    );
                    let after = retry_after(response.headers());
                    if !throttled
                        || attempt >= policy.max_attempts
                        || after.is_some_and(|a| a > MAX_RETRY_AFTER)
                    {
                        return Ok(Err(refusal(response).await));
                    }
                    after.unwrap_or_else(|| backoff(&policy, attempt))
                }
            };
            if started.elapsed() + wait > policy.deadline.max(MAX_RETRY_AFTER) {
                return Err(generic(format!(
                    "Databricks kept refusing {method} requests (throttled) past the retry deadline"
                )));
            }
            tracing::debug!(
                attempt,
                ?wait,
                "Databricks request throttled or failed, retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One page of a directory listing; `Ok(None)` when the directory does
    /// not exist.
    async fn page(&self, dir: &Path, token: Option<&str>) -> object_store::Result<Option<Page>> {
        let mut query = format!("?page_size={PAGE_SIZE}");
        if let Some(token) = token {
            query.push_str("&page_token=");
            query.extend(utf8_percent_encode(token, SEGMENT));
        }
        let dir = (!dir.as_ref().is_empty()).then_some(dir);
        let url = self.url("directories", dir, &query);
        let response = {
            let _permit = self
                .pages
                .acquire()
                .await
                .map_err(|e| generic(e.to_string()))?;
            self.send(Method::GET, &url, &[], None).await?
        };
        let response = match response {
            Ok(response) => response,
            Err(refused) if refused.status == StatusCode::NOT_FOUND => return Ok(None),
            Err(refused) => return Err(store_error(&self.api_path(dir), refused)),
        };
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| generic(e.to_string()))?;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            generic(format!(
                "Databricks listed {url} with a body that is not JSON: {e}"
            ))
        })?;
        let entries = json["contents"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| {
                        Some(Entry {
                            path: item["path"].as_str()?.to_string(),
                            is_directory: item["is_directory"].as_bool().unwrap_or(false),
                            size: item["file_size"].as_u64().unwrap_or(0),
                            last_modified: item["last_modified"].as_i64(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Page {
            entries,
            next: json["next_page_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        }))
    }

    /// A missing directory: empty, as object_store lists a missing prefix,
    /// unless the volume itself is missing.
    async fn missing_dir(&self, dir: &Path) -> object_store::Result<()> {
        let root = Path::default();
        if dir.as_ref().is_empty() || self.page(&root, None).await?.is_none() {
            return Err(object_store::Error::NotFound {
                path: self.config.volume_path.clone(),
                source: Box::new(ServiceError {
                    status: Some(404),
                    code: Some("RESOURCE_DOES_NOT_EXIST".into()),
                    unreachable: false,
                    message: format!("The volume {} does not exist", self.config.volume_path),
                }),
            });
        }
        Ok(())
    }

    fn meta(&self, entry: &Entry) -> object_store::Result<ObjectMeta> {
        Ok(ObjectMeta {
            location: self.location(&entry.path)?,
            last_modified: entry
                .last_modified
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .unwrap_or_default(),
            size: entry.size,
            e_tag: None,
            version: None,
        })
    }
}

/// Every entry of `dir` in the API's order, page after page: directories
/// as they come, so a caller may descend into them.
fn entries(inner: Arc<Inner>, dir: Path) -> BoxStream<'static, object_store::Result<Entry>> {
    stream::try_unfold(
        (inner, dir, None::<String>, false),
        |(inner, dir, token, done)| async move {
            if done {
                return Ok(None);
            }
            let page = match inner.page(&dir, token.as_deref()).await? {
                Some(page) => page,
                None if token.is_none() => {
                    inner.missing_dir(&dir).await?;
                    Page::default()
                }
                None => {
                    return Err(generic(format!(
                        "the directory {dir} disappeared while it was listed"
                    )))
                }
            };
            let done = page.next.is_none();
            Ok(Some((
                stream::iter(page.entries.into_iter().map(Ok)),
                (inner, dir, page.next, done),
            )))
        },
    )
    .try_flatten()
    .boxed()
}

/// The files under `dir`, descending into sub-directories when
/// `recursive`. A sub-directory's first page is fetched ahead while the
/// entries before it are consumed (at most `list_concurrency` pages in
/// flight in all), and the order stays the API's.
fn walk(
    inner: Arc<Inner>,
    dir: Path,
    recursive: bool,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let ahead = inner.config.list_concurrency.max(1);
    entries(inner.clone(), dir)
        .map(move |entry| {
            let inner = inner.clone();
            let opened: BoxFuture<'static, BoxStream<'static, object_store::Result<ObjectMeta>>> =
                match entry {
                    Err(err) => {
                        futures::future::ready(stream::once(async { Err(err) }).boxed()).boxed()
                    }
                    Ok(entry) if entry.is_directory => {
                        if !recursive {
                            return futures::future::ready(stream::empty().boxed()).boxed();
                        }
                        match inner.location(&entry.path) {
                            Err(err) => {
                                futures::future::ready(stream::once(async { Err(err) }).boxed())
                                    .boxed()
                            }
                            Ok(sub) => prefetched(walk(inner, sub, true)),
                        }
                    }
                    Ok(entry) => {
                        let meta = inner.meta(&entry);
                        futures::future::ready(stream::once(async { meta }).boxed()).boxed()
                    }
                };
            opened
        })
        .buffered(ahead)
        .flatten()
        .boxed()
}

/// Resolves once the stream's first item is ready, so that `buffered`
/// fetches a sub-directory's first page ahead.
fn prefetched<T: Send + 'static>(
    mut items: BoxStream<'static, T>,
) -> BoxFuture<'static, BoxStream<'static, T>> {
    async move {
        match items.next().await {
            Some(first) => stream::once(async { first }).chain(items).boxed(),
            None => stream::empty().boxed(),
        }
    }
    .boxed()
}

#[async_trait]
impl ObjectStore for FilesApiStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let overwrite = match opts.mode {
            PutMode::Overwrite => "true",
            PutMode::Create => "false",
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "conditional put (PutMode::Update)".into(),
                    implementer: STORE.into(),
                })
            }
        };
        let inner = &self.inner;
        let url = inner.url("files", Some(location), &format!("?overwrite={overwrite}"));
        let headers = [(header::CONTENT_TYPE, "application/octet-stream".to_string())];
        match inner
            .send(Method::PUT, &url, &headers, Some(&payload))
            .await?
        {
            Ok(_) => Ok(PutResult {
                e_tag: None,
                version: None,
                extensions: Default::default(),
            }),
            Err(refused) => Err(store_error(location.as_ref(), refused)),
        }
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotImplemented {
            operation: "multipart upload".into(),
            implementer: STORE.into(),
        })
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return Err(object_store::Error::NotImplemented {
                operation: "conditional or versioned get".into(),
                implementer: STORE.into(),
            });
        }
        let inner = &self.inner;
        let url = inner.url("files", Some(location), "");
        let mut headers = Vec::new();
        if let Some(range) = &options.range {
            // The Files API's ranges are inclusive (RFC 9110).
            let value = match range {
                GetRange::Bounded(r) if r.end > r.start => {
                    format!("bytes={}-{}", r.start, r.end - 1)
                }
                GetRange::Bounded(r) => {
                    return Err(generic(format!("empty range {}..{}", r.start, r.end)))
                }
                GetRange::Offset(start) => format!("bytes={start}-"),
                GetRange::Suffix(n) => format!("bytes=-{n}"),
            };
            headers.push((header::RANGE, value));
        }
        let method = if options.head {
            Method::HEAD
        } else {
            Method::GET
        };
        let response = match inner.send(method, &url, &headers, None).await? {
            Ok(response) => response,
            Err(refused) => return Err(store_error(location.as_ref(), refused)),
        };
        let heads = response.headers();
        let text = |name: header::HeaderName| {
            heads
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let length: Option<u64> = text(header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let (range, size) = match text(header::CONTENT_RANGE).and_then(|v| content_range(&v)) {
            Some((range, total)) => (range, total),
            None => {
                let size = length.unwrap_or(0);
                (0..size, size)
            }
        };
        let last_modified = text(header::LAST_MODIFIED)
            .and_then(|v| DateTime::parse_from_rfc2822(&v).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let mut attributes = Attributes::new();
        if let Some(kind) = text(header::CONTENT_TYPE) {
            attributes.insert(Attribute::ContentType, kind.into());
        }
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified,
            size,
            e_tag: None,
            version: None,
        };
        let chunk = inner.config.chunk_bytes.max(1);
        let path = location.to_string();
        let payload = response
            .into_body()
            .bytes_stream()
            .map_err(move |e| object_store::Error::Generic {
                store: STORE,
                source: format!("reading {path}: {e}").into(),
            })
            .map_ok(move |bytes| stream::iter(pieces(bytes, chunk).into_iter().map(Ok)))
            .try_flatten()
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range,
            attributes,
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        locations
            .map(move |location| {
                let inner = inner.clone();
                async move {
                    let location = location?;
                    let url = inner.url("files", Some(&location), "");
                    match inner.send(Method::DELETE, &url, &[], None).await? {
                        Ok(_) => Ok(location),
                        // Already gone: what a delete wants.
                        Err(refused) if refused.status == StatusCode::NOT_FOUND => Ok(location),
                        Err(refused) => Err(store_error(location.as_ref(), refused)),
                    }
                }
            })
            .buffered(4)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        walk(
            self.inner.clone(),
            prefix.cloned().unwrap_or_default(),
            true,
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let inner = self.inner.clone();
        let mut all = entries(inner.clone(), prefix.cloned().unwrap_or_default());
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        while let Some(entry) = all.try_next().await? {
            if entry.is_directory {
                result.common_prefixes.push(inner.location(&entry.path)?);
            } else {
                result.objects.push(inner.meta(&entry)?);
            }
        }
        Ok(result)
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented {
            operation: "copy".into(),
            implementer: STORE.into(),
        })
    }
}

/// `bytes` in pieces of at most `chunk` bytes (no copy).
fn pieces(mut bytes: Bytes, chunk: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(bytes.len() / chunk + 1);
    while bytes.len() > chunk {
        out.push(bytes.split_to(chunk));
    }
    if !bytes.is_empty() {
        out.push(bytes);
    }
    out
}

/// `bytes <start>-<end>/<total>` as the half-open range and the total.
fn content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end, total): (u64, u64, u64) =
        (start.parse().ok()?, end.parse().ok()?, total.parse().ok()?);
    (end >= start).then_some((start..end + 1, total))
}

/// `Retry-After` in seconds (the HTTP-date form is taken as one second).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    Some(
        value
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1)),
    )
}

/// The policy's wait after failed attempt `attempt`, without jitter.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = policy
        .multiplier
        .max(1)
        .saturating_pow(attempt.saturating_sub(1));
    policy
        .initial_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff)
}

async fn refusal(response: HttpResponse) -> Refusal {
    let status = response.status();
    let body = response.into_body().bytes().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Refusal {
        status,
        code: json["error_code"].as_str().map(str::to_string),
        message: json["message"]
            .as_str()
            .map(|m| m.chars().take(300).collect())
            .unwrap_or_default(),
    }
}

/// A Files API refusal as object_store's error kind, Databricks' code and
/// message kept in a [`ServiceError`] for the explanations.
fn store_error(path: &str, refused: Refusal) -> object_store::Error {
    let status = refused.status.as_u16();
    let said = match (&refused.code, refused.message.is_empty()) {
        (Some(code), false) => format!("{code}: {}", refused.message),
        (Some(code), true) => code.clone(),
        (None, false) => refused.message.clone(),
        (None, true) => refused.status.to_string(),
    };
    let source = Box::new(ServiceError {
        status: Some(status),
        code: refused.code,
        unreachable: false,
        message: format!("Databricks answered {status} ({said})"),
    });
    let path = path.to_string();
    match status {
        404 => object_store::Error::NotFound { path, source },
        401 => object_store::Error::Unauthenticated { path, source },
        403 => object_store::Error::PermissionDenied { path, source },
        409 => object_store::Error::AlreadyExists { path, source },
        412 => object_store::Error::Precondition { path, source },
        _ => object_store::Error::Generic {
            store: STORE,
            source,
        },
    }
}

/// A token that could not be had: rejected credentials stay recognisable
/// (status 401 and the core error in the chain).
fn credential_error(err: storage_core::Error) -> object_store::Error {
    match err {
        storage_core::Error::CredentialsRejected { .. } => object_store::Error::Unauthenticated {
            path: String::new(),
            source: Box::new(err),
        },
        other => object_store::Error::Generic {
            store: STORE,
            source: Box::new(other),
        },
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_pieces() {
        assert_eq!(content_range("bytes 2-5/10"), Some((2..6, 10)));
        assert_eq!(content_range("bytes */10"), None);
        let parts = pieces(Bytes::from_static(b"abcdefg"), 3);
        assert_eq!(parts, vec![&b"abc"[..], &b"def"[..], &b"g"[..]]);
    }
}

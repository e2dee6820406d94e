//! A loopback double of the Databricks Files API and its OAuth M2M token
//! endpoint, speaking the real protocol on `127.0.0.1:<random port>`:
//!
//! * `GET /api/2.0/fs/directories/Volumes/<c>/<s>/<v>[/<dir>]?page_size=&page_token=`
//!   → `{"contents":[{"path","is_directory","file_size","last_modified","name"}…],"next_page_token"}`,
//!   entries in name order, directory paths ending in `/`, at most the
//!   double's page size per page (small by default, so paging is exercised);
//!   `404 RESOURCE_DOES_NOT_EXIST` for a missing directory or volume;
//! * `GET` / `HEAD /api/2.0/fs/files/Volumes/…` with inclusive `Range`
//!   (`206` and `Content-Range`, `416` when unsatisfiable), `PUT …?overwrite=`
//!   (`409 ALREADY_EXISTS` without overwrite), `DELETE` (`404` when absent);
//! * `POST /oidc/v1/token`: HTTP Basic client id and secret, form
//!   `grant_type=client_credentials&scope=all-apis`;
//! * every Files API request needs `Authorization: Bearer` with a known
//!   personal access token, a token the double issued, or (when enabled) a
//!   Microsoft Entra token for the Azure Databricks resource; else `401`;
//! * a token named with [`DatabricksDoubleBuilder::denied_pat`] gets `403
//!   PERMISSION_DENIED` on every Files API request;
//! * errors carry Databricks' JSON body `{"error_code","message"}`;
//! * every Nth Files API request is answered `429 REQUEST_LIMIT_EXCEEDED`
//!   with `Retry-After` (deterministic), to prove retries.
//!
//! Files live in an object_store `InMemory` under `Volumes/<c>/<s>/<v>/…`;
//! [`DatabricksDouble::volume_store`] writes and reads them directly, as
//! another client would. Requests are recorded for assertions.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::prelude::{Engine as _, BASE64_STANDARD, BASE64_URL_SAFE_NO_PAD};
use http::{header, HeaderMap, Method, StatusCode};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::json;
use tokio::task::JoinHandle;

/// The audience of Entra tokens for Azure Databricks.
pub const AZURE_DATABRICKS_RESOURCE: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d";

/// Configuration of a [`DatabricksDouble`]; start with
/// [`DatabricksDouble::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .start().await to run the double"]
pub struct DatabricksDoubleBuilder {
    volumes: Vec<String>,
    pats: Vec<String>,
    denied: Vec<String>,
    clients: HashMap<String, String>,
    page_size: usize,
    throttle_every: Option<usize>,
    retry_after_s: u64,
    accept_entra: bool,
}

impl Default for DatabricksDoubleBuilder {
    fn default() -> Self {
        Self {
            volumes: Vec::new(),
            pats: Vec::new(),
            denied: Vec::new(),
            clients: HashMap::new(),
            page_size: 5,
            throttle_every: None,
            retry_after_s: 0,
            accept_entra: false,
        }
    }
}

impl DatabricksDoubleBuilder {
    /// A volume that exists.
    pub fn volume(mut self, catalog: &str, schema: &str, volume: &str) -> Self {
        self.volumes
            .push(format!("Volumes/{catalog}/{schema}/{volume}"));
        self
    }

    /// A personal access token the workspace accepts.
    pub fn pat(mut self, token: impl Into<String>) -> Self {
        self.pats.push(token.into());
        self
    }

    /// A personal access token of a principal without permissions on any
    /// volume: every Files API request is answered `403 PERMISSION_DENIED`.
    pub fn denied_pat(mut self, token: impl Into<String>) -> Self {
        self.denied.push(token.into());
        self
    }

    /// A service principal with an OAuth secret (OAuth M2M).
    pub fn client(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.clients.insert(client_id.into(), secret.into());
        self
    }

    /// The most entries a directory page holds (default 5).
    pub fn page_size(mut self, entries: usize) -> Self {
        self.page_size = entries.max(1);
        self
    }

    /// Answers every `n`th Files API request with `429` and
    /// `Retry-After: <seconds>`.
    pub fn throttle_every(mut self, n: usize, retry_after_s: u64) -> Self {
        self.throttle_every = Some(n.max(2));
        self.retry_after_s = retry_after_s;
        self
    }

    /// Accepts Microsoft Entra tokens whose audience is the Azure
    /// Databricks resource (as an Azure Databricks workspace does).
    pub fn accept_entra_tokens(mut self) -> Self {
        self.accept_entra = true;
        self
    }

    /// Binds a port and serves.
    ///
    /// # Panics
    /// When no port can be bound on 127.0.0.1.
    pub async fn start(self) -> DatabricksDouble {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("DatabricksDouble: cannot bind a port on 127.0.0.1");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("DatabricksDouble: the listener has no address");
        let state = Arc::new(Shared {
            config: self,
            files: Arc::new(InMemory::new()),
            issued: Mutex::new(HashSet::new()),
            requests: Mutex::new(Vec::new()),
            api_calls: AtomicUsize::new(0),
            token_calls: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            // Ends only when the task is aborted (on drop).
            let _ = axum::serve(listener, app).await;
        });
        DatabricksDouble {
            host: format!("http://{addr}"),
            state,
            server,
        }
    }
}

/// One request the double received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The decoded path.
    pub path: String,
    /// The raw query.
    pub query: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
}

/// A running double; see the [module docs](self).
#[derive(Debug)]
pub struct DatabricksDouble {
    host: String,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

impl DatabricksDouble {
    /// A double with no volume and no credential yet.
    pub fn builder() -> DatabricksDoubleBuilder {
        DatabricksDoubleBuilder::default()
    }

    /// The workspace URL, `http://127.0.0.1:<port>` (no trailing `/`).
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The files of one volume, keys relative to its root, written and
    /// read directly (not through the API).
    pub fn volume_store(&self, catalog: &str, schema: &str, volume: &str) -> Arc<dyn ObjectStore> {
        Arc::new(PrefixStore::new(
            Arc::clone(&self.state.files),
            format!("Volumes/{catalog}/{schema}/{volume}"),
        ))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Files API requests so far (throttled ones included).
    pub fn api_calls(&self) -> usize {
        self.state.api_calls.load(Ordering::SeqCst)
    }

    /// Requests to `/oidc/v1/token` so far.
    pub fn token_calls(&self) -> usize {
        self.state.token_calls.load(Ordering::SeqCst)
    }

    /// Requests answered `429` so far.
    pub fn throttled(&self) -> usize {
        self.state.throttled.load(Ordering::SeqCst)
    }
}

impl Drop for DatabricksDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug)]
struct Shared {
    config: DatabricksDoubleBuilder,
    files: Arc<InMemory>,
    issued: Mutex<HashSet<String>>,
    requests: Mutex<Vec<Recorded>>,
    api_calls: AtomicUsize,
    token_calls: AtomicUsize,
    throttled: AtomicUsize,
}

/// Databricks' error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error_code": code, "message": message}).to_string(),
    )
        .into_response()
}

fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("The file or directory {path} does not exist."),
    )
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(State(state): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = percent_encoding::percent_decode_str(parts.uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let query = parts.uri.query().unwrap_or_default().to_string();
    state
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            authorization: header_text(&parts.headers, header::AUTHORIZATION),
            range: header_text(&parts.headers, header::RANGE),
        });
    if path == "/oidc/v1/token" && parts.method == Method::POST {
        return token(&state, &parts.headers, &body);
    }
    let (api, rest) = if let Some(rest) = path.strip_prefix("/api/2.0/fs/directories/") {
        ("directories", rest)
    } else if let Some(rest) = path.strip_prefix("/api/2.0/fs/files/") {
        ("files", rest)
    } else {
        return error(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            &format!("No API found for '{} {path}'", parts.method),
        );
    };
    let n = state.api_calls.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(every) = state.config.throttle_every {
        if n % every == 0 {
            state.throttled.fetch_add(1, Ordering::SeqCst);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests. Please wait a moment and try again.",
            );
            if let Ok(value) = state.config.retry_after_s.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    }
    let bearer = header_text(&parts.headers, header::AUTHORIZATION).unwrap_or_default();
    if state
        .config
        .denied
        .iter()
        .any(|t| bearer == format!("Bearer {t}"))
    {
        return error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "User does not have READ VOLUME on Volume.",
        );
    }
    if !authorized(&state, &parts.headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Invalid access token.",
        );
    }
    let rest = rest.trim_end_matches('/');
    let volume_known = state
        .config
        .volumes
        .iter()
        .any(|v| rest == v || rest.starts_with(&format!("{v}/")));
    if !volume_known {
        return not_found(&format!("/{rest}"));
    }
    match (api, &parts.method) {
        ("directories", &Method::GET) => list(&state, rest, &query).await,
        ("files", &Method::GET) => read(&state, rest, &parts.headers, false).await,
        ("files", &Method::HEAD) => read(&state, rest, &parts.headers, true).await,
        ("files", &Method::PUT) => write(&state, rest, &query, body).await,
        ("files", &Method::DELETE) => remove(&state, rest).await,
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_REQUEST",
            "Method not allowed.",
        ),
    }
}

/// `204`, or `404` when there is no such file.
async fn remove(state: &Shared, path: &str) -> Response {
    let location = Path::from(path);
    if state.files.head(&location).await.is_err() {
        return not_found(&format!("/{path}"));
    }
    match state.files.delete(&location).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            &e.to_string(),
        ),
    }
}

fn authorized(state: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = header_text(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
    else {
        return false;
    };
    if state.config.pats.contains(&token)
        || state
            .issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&token)
    {
        return true;
    }
    state.config.accept_entra && entra_audience_ok(&token)
}

/// An (unsigned, test) JWT for the Azure Databricks resource, not expired.
fn entra_audience_ok(token: &str) -> bool {
    let Some(claims) = token.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = BASE64_URL_SAFE_NO_PAD.decode(claims) else {
        return false;
    };
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    claims["aud"] == AZURE_DATABRICKS_RESOURCE
        && claims["exp"].as_i64().unwrap_or(0) > chrono::Utc::now().timestamp()
}

fn token(state: &Shared, headers: &HeaderMap, body: &Bytes) -> Response {
    let n = state.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": error, "error_description": description}).to_string(),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if form.get("scope").map(String::as_str) != Some("all-apis") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope must be all-apis",
        );
    }
    let basic = header_text(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Basic ").map(str::to_string))
        .and_then(|b| BASE64_STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let accepted = basic
        .as_deref()
        .and_then(|b| b.split_once(':'))
        .is_some_and(|(id, secret)| {
            state.config.clients.get(id).map(String::as_str) == Some(secret)
        });
    if !accepted {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    let access = format!("dbx-oauth-{n}-{}", uuid::Uuid::new_v4());
    state
        .issued
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(access.clone());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "scope": "all-apis"})
            .to_string(),
    )
        .into_response()
}

async fn list(state: &Shared, dir: &str, query: &str) -> Response {
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let size = params
        .get("page_size")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1000)
        .clamp(1, 1000)
        .min(state.config.page_size);
    let offset = match params.get("page_token") {
        None => 0,
        Some(token) => match token.strip_prefix("offset-").and_then(|o| o.parse().ok()) {
            Some(offset) => offset,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PARAMETER_VALUE",
                    "Invalid page token.",
                )
            }
        },
    };
    let prefix = Path::from(dir);
    let listed = match state.files.list_with_delimiter(Some(&prefix)).await {
        Ok(listed) => listed,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                &e.to_string(),
            )
        }
    };
    let is_volume_root = state.config.volumes.iter().any(|v| v == dir);
    if !is_volume_root && listed.objects.is_empty() && listed.common_prefixes.is_empty() {
        return not_found(&format!("/{dir}"));
    }
    let mut entries: Vec<(String, serde_json::Value)> = listed
        .common_prefixes
        .iter()
        .map(|p| {
            let name = p.filename().unwrap_or_default().to_string();
            (
                name.clone(),
                json!({"path": format!("/{p}/"), "is_directory": true, "name": name}),
            )
        })
        .chain(listed.objects.iter().map(|o| {
            let name = o.location.filename().unwrap_or_default().to_string();
            (
                name.clone(),
                json!({
                    "path": format!("/{}", o.location), "is_directory": false,
                    "file_size": o.size, "last_modified": o.last_modified.timestamp_millis(),
                    "name": name,
                }),
            )
        }))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let page: Vec<serde_json::Value> = entries
        .iter()
        .skip(offset)
        .take(size)
        .map(|(_, e)| e.clone())
        .collect();
    let mut answer = json!({ "contents": page });
    if offset + size < entries.len() {
        answer["next_page_token"] = json!(format!("offset-{}", offset + size));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` as an inclusive range within `size`.
fn range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?),
        ),
    };
    (start <= end && start < size).then_some((start, end))
}

async fn read(state: &Shared, path: &str, headers: &HeaderMap, head: bool) -> Response {
    let location = Path::from(path);
    let got = match state.files.get(&location).await {
        Ok(got) => got,
        Err(_) => return not_found(&format!("/{path}")),
    };
    let meta = got.meta.clone();
    let bytes = got.bytes().await.unwrap_or_default();
    let size = meta.size;
    let modified = meta
        .last_modified
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let mut status = StatusCode::OK;
    let mut body = bytes.clone();
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::LAST_MODIFIED, modified)
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(value) = header_text(headers, header::RANGE) {
        match range(&value, size) {
            Some((start, end)) => {
                status = StatusCode::PARTIAL_CONTENT;
                body = bytes.slice(start as usize..end as usize + 1);
                builder =
                    builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            }
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .body(Body::empty())
                    .unwrap_or_default();
            }
        }
    }
    builder = builder
        .status(status)
        .header(header::CONTENT_LENGTH, body.len());
    let body = if head {
        Body::empty()
    } else {
        Body::from(body)
    };
    builder.body(body).unwrap_or_default()
}

async fn write(state: &Shared, path: &str, query: &str, body: Bytes) -> Response {
    let overwrite =
        url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "overwrite" && v == "true");
    let location = Path::from(path);
    if !overwrite && state.files.head(&location).await.is_ok() {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            &format!("The file /{path} already exists."),
        );
    }
    match state.files.put(&location, PutPayload::from(body)).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            &e.to_string(),
        ),
    }
}

//! A loopback shim that lets object_store **write** to fake-gcs-server.
//!
//! object_store's GCS client writes through the GCS XML API (`PUT /{bucket}/{object}`,
//! `x-goog-copy-source`), which fake-gcs-server v1.54.0 rejects with
//! `400 invalid uploadType`. [`GcsShim`] sits between object_store and fake-gcs and
//! forwards every request unchanged (method, path, query, headers, streamed body),
//! except a `PUT /{bucket}/{object}` whose query has neither `uploadId` nor
//! `X-Goog-Algorithm`:
//!
//! * without `x-goog-copy-source` it becomes the JSON upload
//!   `POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}`
//!   (only `Content-Type` is kept: `x-goog-meta-*`, `Content-Disposition` and the
//!   other object attributes are dropped);
//! * with `x-goog-copy-source: {bucket}/{src}` it becomes
//!   `POST /storage/v1/b/{bucket}/o/{src}/copyTo/b/{bucket}/o/{object}`;
//! * a 2xx answer becomes `200` with an empty body, `ETag: "<etag>"` and
//!   `x-goog-generation: <generation>` taken from fake-gcs's JSON object; an error
//!   passes through with its status and body.
//!
//! A GET whose query has `response-content-type` (a signed URL's override) answers
//! with that `Content-Type`, as GCS does; fake-gcs ignores the parameter.
//!
//! Requests reach fake-gcs with the `Host` of `upstream` (the shim's own `Host` is
//! dropped): fake-gcs answers XML GET/list with 404 unless `Host` equals its
//! `-public-host` (`127.0.0.1:PORT`; `localhost:PORT` does not match).
//!
//! fake-gcs v1.54.0 differs from GCS in ways tests must know (it is not faked here):
//!
//! * **No preconditions.** `x-goog-if-generation-match` is passed on as
//!   `ifGenerationMatch`, but fake-gcs ignores it: `PutMode::Create` and
//!   `copy_if_not_exists` onto an existing object overwrite it and return `Ok` (GCS:
//!   412 → `AlreadyExists`), `PutMode::Update` with a stale version succeeds, and GET
//!   ignores `If-Match` / `If-None-Match` (GCS: 412 / 304).
//! * **ETag** is the base64 MD5 in quotes (`"XUFAKrxLKna5cZ2REBfFkg=="`), the same on
//!   put, get, head and list; GCS's XML API uses the hex MD5. Treat ETags as opaque.
//! * No signature checks on signed URLs (tampered or unsigned requests succeed), so
//!   only the URL's shape can be tested.
//! * Objects uploaded without a content type are stored as `application/octet-stream`.
//!
//! Not supported: XML multipart uploads (`POST ?uploads`, `PUT ?uploadId=`) pass
//! through and fail at fake-gcs (`400 invalid uploadType`), so `put_multipart` fails;
//! object_store's `BufWriter` only switches to multipart above its capacity (10 MiB by
//! default). User metadata (`x-goog-meta-*`) and attributes other than the content
//! type are dropped on put.
//!
//! ```no_run
//! # async fn demo() -> object_store::Result<()> {
//! use object_store::gcp::GoogleCloudStorageBuilder;
//! use object_store::ClientOptions;
//! use storage_testing::gcs_shim::{GcsShim, TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM};
//!
//! let gcs = storage_testing::fake_gcs();
//! let shim = GcsShim::start(&gcs.endpoint).await;
//! let store = GoogleCloudStorageBuilder::new()
//!     .with_service_account_key(shim.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM))
//!     .with_bucket_name(&gcs.bucket)
//!     .with_client_options(ClientOptions::new().with_allow_http(true))
//!     .build()?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::task::JoinHandle;

/// A throw-away 2048-bit RSA key (PKCS#8 PEM) made for tests; it protects nothing.
/// Accepted by `object_store::gcp::ServiceAccountKey::from_pem`.
pub const TEST_PRIVATE_KEY_PEM: &str = include_str!("../fixtures/test-service-account-key.pem");

/// A made-up service-account e-mail to go with [`TEST_PRIVATE_KEY_PEM`].
pub const TEST_CLIENT_EMAIL: &str = "storage-tests@test-project.iam.gserviceaccount.com";

/// Writes a service-account key file for `client_email` with
/// [`TEST_PRIVATE_KEY_PEM`] into `dir` and returns its path: a server's own
/// identity as Application Default Credentials would find it (the IAM
/// double checks the JWTs object_store signs with it).
///
/// # Panics
/// If the file cannot be written.
pub fn write_service_account_key(dir: &std::path::Path, client_email: &str) -> std::path::PathBuf {
    let path = dir.join("server-identity.json");
    let project = client_email
        .split('@')
        .nth(1)
        .and_then(|domain| domain.split('.').next())
        .unwrap_or("test-project");
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": "server-key",
        "private_key": TEST_PRIVATE_KEY_PEM,
        "client_email": client_email,
    });
    std::fs::write(&path, key.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Characters escaped in a JSON-API path segment: all but RFC 3986 unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::HOST,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The shim server: listens on `127.0.0.1:<random port>` and forwards to fake-gcs.
///
/// Dropping it aborts the server task and closes the listener (new connections are
/// refused); connections a client keeps alive end with the tokio runtime, which for
/// `#[tokio::test]` is the end of the test.
#[derive(Debug)]
pub struct GcsShim {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Upstream {
    base: String,
    client: reqwest::Client,
}

impl GcsShim {
    /// Starts the shim in front of the fake-gcs-server at `upstream`
    /// (e.g. `http://127.0.0.1:17160`). Requests reach fake-gcs with `Host` set to
    /// `upstream`'s host:port, which is what its `-public-host` must match.
    ///
    /// # Panics
    /// If no loopback port can be bound or the HTTP client cannot be built.
    pub async fn start(upstream: &str) -> GcsShim {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .build()
            .expect("build the shim's HTTP client");
        let state = Arc::new(Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            client,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the GCS shim to 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the GCS shim");
        let app = Router::new().fallback(handle).with_state(state);
        let task = tokio::spawn(async move {
            // Only ends with an I/O error on the listener or when aborted.
            let _ = axum::serve(listener, app).await;
        });
        GcsShim { addr, task }
    }

    /// The shim's base URL, `http://127.0.0.1:PORT` (use it as `gcs_base_url`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A service-account key JSON for `GoogleCloudStorageBuilder::with_service_account_key`
    /// that points object_store at this shim (`gcs_base_url`) and disables OAuth
    /// (empty bearer tokens, nothing leaves loopback). `disable_oauth` also disables
    /// signing: for signed URLs pass the key again with `with_signing_credentials`.
    pub fn credentials_json(&self, client_email: &str, private_key_pem: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "test-key",
            "private_key": private_key_pem,
            "client_email": client_email,
            "gcs_base_url": self.endpoint(),
            "disable_oauth": true,
        })
        .to_string()
    }

    /// A store on `bucket` of the fake-gcs-server behind this shim, signed
    /// in with the test key: for writing fixtures and reading back what a
    /// backend wrote.
    ///
    /// # Panics
    /// If object_store refuses the configuration.
    pub fn object_store(&self, bucket: &str) -> Arc<dyn object_store::ObjectStore> {
        Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_service_account_key(
                    self.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM),
                )
                .with_bucket_name(bucket)
                .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
                .build()
                .expect("a GCS store on the shim"),
        )
    }
}

impl Drop for GcsShim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(up): State<Arc<Upstream>>, req: Request) -> Response {
    let result = match xml_write_target(&req) {
        Some((bucket, object)) => rewrite_write(&up, req, &bucket, &object).await,
        None => forward(&up, req).await,
    };
    result.unwrap_or_else(|(status, msg)| (status, format!("gcs shim: {msg}")).into_response())
}

type ShimResult = Result<Response, (StatusCode, String)>;

/// `(bucket, object)`, percent-decoded, for the XML writes the shim rewrites.
fn xml_write_target(req: &Request) -> Option<(String, String)> {
    let query = req.uri().query().unwrap_or("");
    let passthrough = query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        key == "uploadId" || key == "X-Goog-Algorithm"
    });
    if req.method() != Method::PUT || passthrough {
        return None;
    }
    let (bucket, object) = req.uri().path().strip_prefix('/')?.split_once('/')?;
    let (bucket, object) = (decode(bucket)?, decode(object)?);
    (!bucket.is_empty() && !object.is_empty()).then_some((bucket, object))
}

fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn enc(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

async fn rewrite_write(up: &Upstream, req: Request, bucket: &str, object: &str) -> ShimResult {
    let headers = req.headers();
    let if_match = headers
        .get("x-goog-if-generation-match")
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("ifGenerationMatch={}", enc(v)));
    let copy_source = headers.get("x-goog-copy-source");
    let builder = if let Some(source) = copy_source {
        let source = source.to_str().unwrap_or("").trim_start_matches('/');
        let (src_bucket, src) = source
            .split_once('/')
            .and_then(|(b, o)| Some((decode(b)?, decode(o)?)))
            .ok_or((
                StatusCode::BAD_REQUEST,
                format!("bad x-goog-copy-source {source:?}"),
            ))?;
        let mut url = format!(
            "{}/storage/v1/b/{}/o/{}/copyTo/b/{}/o/{}",
            up.base,
            enc(&src_bucket),
            enc(&src),
            enc(bucket),
            enc(object)
        );
        if let Some(q) = if_match {
            url = format!("{url}?{q}");
        }
        up.client.post(url)
    } else {
        let mut url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            up.base,
            enc(bucket),
            enc(object)
        );
        if let Some(q) = if_match {
            url = format!("{url}&{q}");
        }
        let mut kept = HeaderMap::new();
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
            if let Some(value) = headers.get(&name) {
                kept.insert(name, value.clone());
            }
        }
        let body = reqwest::Body::wrap_stream(req.into_body().into_data_stream());
        up.client.post(url).headers(kept).body(body)
    };
    let resp = builder.send().await.map_err(bad_gateway)?;
    if !resp.status().is_success() {
        return Ok(pass_response(resp));
    }
    let json: serde_json::Value = resp.json().await.map_err(bad_gateway)?;
    let field = |name: &str| {
        json.get(name).and_then(serde_json::Value::as_str).ok_or((
            StatusCode::BAD_GATEWAY,
            format!("no {name:?} in fake-gcs reply {json}"),
        ))
    };
    let etag = HeaderValue::try_from(format!("\"{}\"", field("etag")?)).map_err(bad_gateway)?;
    let generation = HeaderValue::try_from(field("generation")?).map_err(bad_gateway)?;
    let mut out = Response::new(Body::empty());
    out.headers_mut().insert(header::ETAG, etag);
    out.headers_mut().insert("x-goog-generation", generation);
    Ok(out)
}

/// Sends `req` to fake-gcs as it is (only `Host` and hop-by-hop headers change).
async fn forward(up: &Upstream, req: Request) -> ShimResult {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", up.base);
    let mut headers = req.headers().clone();
    let has_body = headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING);
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let override_type = response_content_type(&url);
    let mut builder = up
        .client
        .request(req.method().clone(), url)
        .headers(headers);
    if has_body {
        builder = builder.body(reqwest::Body::wrap_stream(
            req.into_body().into_data_stream(),
        ));
    }
    let resp = builder.send().await.map_err(bad_gateway)?;
    if resp.status() == StatusCode::INTERNAL_SERVER_ERROR {
        return Ok(missing_bucket_as_gcs(resp).await);
    }
    let mut out = pass_response(resp);
    if let Some(value) = override_type {
        out.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(out)
}

/// The `response-content-type` override of a (signed) URL.
fn response_content_type(url: &str) -> Option<header::HeaderValue> {
    let url = reqwest::Url::parse(url).ok()?;
    let (_, value) = url
        .query_pairs()
        .find(|(key, _)| key == "response-content-type")?;
    header::HeaderValue::from_str(&value).ok()
}

/// fake-gcs answers an XML request on a missing bucket with 500 "no bucket
/// named …"; GCS answers 404 `NoSuchBucket`. Translate, so tests see what
/// production sees.
async fn missing_bucket_as_gcs(resp: reqwest::Response) -> Response {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if body.contains("no bucket named") {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/xml; charset=UTF-8")],
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message></Error>",
        )
            .into_response();
    }
    (status, body).into_response()
}

/// fake-gcs's response with status, headers and a streamed body.
fn pass_response(resp: reqwest::Response) -> Response {
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(name) {
            out = out.header(name, value);
        }
    }
    out.body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|e| bad_gateway(e).into_response())
}

fn bad_gateway(e: impl std::fmt::Display) -> (StatusCode, String) {
    (
        StatusCode::BAD_GATEWAY,
        format!("talking to fake-gcs failed: {e}"),
    )
}

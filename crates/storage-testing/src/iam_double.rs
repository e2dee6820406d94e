//! A loopback double of Google's IAM Service Account Credentials API.
//!
//! [`IamDouble`] listens on `127.0.0.1:<random port>` and speaks the real protocol of
//! the two methods Label Studio's GCS storages need:
//!
//! * `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken` with
//!   `{"scope": [...], "lifetime": "3600s"}` → `{"accessToken": "ya29.double-<n>",
//!   "expireTime": "<RFC 3339, now + lifetime>"}`;
//! * `POST /v1/projects/-/serviceAccounts/{email}:signBlob` with `{"payload": base64}` →
//!   `{"keyId": "...", "signedBlob": base64(SHA-256(payload))}` — a deterministic fake
//!   signature (fake-gcs-server does not verify signatures anyway).
//!
//! Callers are authenticated from `Authorization: Bearer <token>`: a token configured
//! with [`IamDoubleBuilder::base_token`], a self-signed JWT whose `iss` claim is an email
//! configured with [`IamDoubleBuilder::base_email`] (what object_store sends for a
//! service-account key JSON without `disable_oauth`; the payload is base64url-decoded,
//! the signature is **not** verified, an `exp` in the past is rejected), or a token this
//! double issued. Anything else gets Google's 401.
//!
//! The target email must be one the double knows ([`IamDoubleBuilder::target`]);
//! [`IamDoubleBuilder::denied`] answers 403 `PERMISSION_DENIED` and
//! [`IamDoubleBuilder::missing`] (and any unknown email) 404 `NOT_FOUND`, both in Google's
//! JSON error shape. `scope` must contain a `cloud-platform` or `devstorage` scope.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use storage_testing::iam_double::IamDouble;
//!
//! let iam = IamDouble::builder()
//!     .base_token("server-token")
//!     .target("reader@data-project.iam.gserviceaccount.com")
//!     .denied("locked@data-project.iam.gserviceaccount.com")
//!     .token_lifetime(Duration::from_secs(3))
//!     .start()
//!     .await;
//! let endpoint = iam.endpoint(); // http://127.0.0.1:<port>
//! // ... point the code under test at `endpoint` ...
//! assert_eq!(iam.calls().generate_access_token, 0);
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::prelude::{Engine as _, BASE64_STANDARD, BASE64_URL_SAFE_NO_PAD};
use chrono::{SecondsFormat, Utc};
use http::{header, HeaderMap, StatusCode};
use reqwest::Url;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// Google's message for a 401.
const UNAUTHENTICATED_MESSAGE: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
/// Longest lifetime accepted (Google's maximum with the organisation policy extension).
const MAX_LIFETIME: Duration = Duration::from_secs(43_200);
/// Lifetime when the request names none (Google's default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Configuration of an [`IamDouble`]; start with [`IamDouble::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "call .start().await to run the double"]
pub struct IamDoubleBuilder {
    pub(crate) base_emails: Vec<String>,
    base_tokens: Vec<String>,
    targets: Vec<String>,
    denied: Vec<String>,
    denied_sign_blob: Vec<String>,
    missing: Vec<String>,
    token_lifetime: Option<Duration>,
}

impl IamDoubleBuilder {
    /// Accepts self-signed JWTs whose `iss` claim is `email` as the caller's identity.
    pub fn base_email(mut self, email: impl Into<String>) -> Self {
        self.base_emails.push(email.into());
        self
    }

    /// Accepts `Authorization: Bearer <token>` as the caller's identity.
    pub fn base_token(mut self, token: impl Into<String>) -> Self {
        self.base_tokens.push(token.into());
        self
    }

    /// A service account that exists and may be impersonated and signed as.
    pub fn target(mut self, email: impl Into<String>) -> Self {
        self.targets.push(email.into());
        self
    }

    /// A service account that exists but on which the caller lacks permissions: both
    /// methods answer 403 `PERMISSION_DENIED` ("Permission
    /// 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
    /// `signBlob` for signBlob).
    pub fn denied(mut self, email: impl Into<String>) -> Self {
        self.denied.push(email.into());
        self
    }

    /// Like [`Self::target`], but `signBlob` answers 403 (`generateAccessToken` works).
    pub fn denied_sign_blob(mut self, email: impl Into<String>) -> Self {
        self.denied_sign_blob.push(email.into());
        self
    }

    /// A service account that does not exist: 404 `NOT_FOUND` (as for any email the
    /// double does not know; this only documents the intent).
    pub fn missing(mut self, email: impl Into<String>) -> Self {
        self.missing.push(email.into());
        self
    }

    /// Caps the lifetime of issued tokens (`expireTime` = now + min(requested, this)),
    /// e.g. a few seconds to test refreshing.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = Some(lifetime);
        self
    }

    /// Binds `127.0.0.1:0` and serves until the [`IamDouble`] is dropped.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, or if no loopback port can be bound.
    pub async fn start(self) -> IamDouble {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("IamDouble: cannot bind a port on 127.0.0.1");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("IamDouble: the listener has no address");
        let state = Arc::new(Shared {
            config: self,
            issued: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            generate_calls: AtomicUsize::new(0),
            sign_calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route(
                "/v1/projects/{project}/serviceAccounts/{name}",
                post(handle),
            )
            .fallback(|| async {
                google_error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "The requested URL was not found on this server (IamDouble only serves \
                     POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken and :signBlob).",
                )
            })
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            // Ends only when the task is aborted (on drop).
            let _ = axum::serve(listener, app).await;
        });
        let endpoint = Url::parse(&format!("http://{addr}")).expect("a socket address makes a URL");
        IamDouble {
            endpoint,
            state,
            server,
        }
    }
}

/// How often each method was called (every request that reached it, successful or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IamCalls {
    /// `generateAccessToken` calls.
    pub generate_access_token: usize,
    /// `signBlob` calls.
    pub sign_blob: usize,
}

/// One request the double answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamRequest {
    /// `generateAccessToken` or `signBlob` (or whatever followed the `:`).
    pub method: String,
    /// The service account in the path (percent-decoded).
    pub email: String,
    /// Who called: `token:<base token>`, `jwt:<iss>`, `issued:<target email>`, or `None`
    /// when the caller was not authenticated.
    pub caller: Option<String>,
    /// The `scope` list of a `generateAccessToken` body.
    pub scopes: Vec<String>,
    /// The `lifetime` of a `generateAccessToken` body, as sent (e.g. `3600s`).
    pub lifetime: Option<String>,
    /// The decoded `payload` of a `signBlob` body.
    pub payload: Option<Vec<u8>>,
    /// The HTTP status answered.
    pub status: u16,
}

/// The running double; the server stops when this is dropped.
#[derive(Debug)]
pub struct IamDouble {
    endpoint: Url,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

impl IamDouble {
    /// A builder with nothing configured (every call → 401 until a base identity is set).
    pub fn builder() -> IamDoubleBuilder {
        IamDoubleBuilder::default()
    }

    /// `http://127.0.0.1:<port>` (a `url::Url`): pass it as the IAM Credentials endpoint,
    /// with plain HTTP allowed in the client options.
    pub fn endpoint(&self) -> Url {
        self.endpoint.clone()
    }

    /// Calls per method so far.
    pub fn calls(&self) -> IamCalls {
        IamCalls {
            generate_access_token: self.state.generate_calls.load(Ordering::SeqCst),
            sign_blob: self.state.sign_calls.load(Ordering::SeqCst),
        }
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<IamRequest> {
        lock(&self.state.requests).clone()
    }

    /// The signature the double returns for `payload` (raw bytes: SHA-256 of it).
    pub fn fake_signature(payload: &[u8]) -> Vec<u8> {
        Sha256::digest(payload).to_vec()
    }
}

impl Drop for IamDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// State shared with the handlers.
#[derive(Debug)]
struct Shared {
    config: IamDoubleBuilder,
    /// Issued token → the service account it belongs to.
    issued: Mutex<HashMap<String, String>>,
    next_token: AtomicU64,
    generate_calls: AtomicUsize,
    sign_calls: AtomicUsize,
    requests: Mutex<Vec<IamRequest>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `{"error": {"code", "message", "status"}}` with that HTTP status.
fn google_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        json!({"error": {"code": status.as_u16(), "message": message, "status": code}}).to_string(),
    )
        .into_response()
}

fn ok_json(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        value.to_string(),
    )
        .into_response()
}

async fn handle(
    State(state): State<Arc<Shared>>,
    Path((_project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (email, method) = match name.rsplit_once(':') {
        Some((email, method)) => (email.to_owned(), method.to_owned()),
        None => (name.clone(), String::new()),
    };
    match method.as_str() {
        "generateAccessToken" => state.generate_calls.fetch_add(1, Ordering::SeqCst),
        "signBlob" => state.sign_calls.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
    let mut record = IamRequest {
        method: method.clone(),
        email: email.clone(),
        caller: None,
        scopes: Vec::new(),
        lifetime: None,
        payload: None,
        status: 0,
    };
    let response = answer(&state, &headers, &body, &email, &method, &mut record);
    record.status = response.status().as_u16();
    lock(&state.requests).push(record);
    response
}

fn answer(
    state: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    email: &str,
    method: &str,
    record: &mut IamRequest,
) -> Response {
    let config = &state.config;
    let Some(caller) = authenticate(state, headers) else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            UNAUTHENTICATED_MESSAGE,
        );
    };
    record.caller = Some(caller);

    let permission = match method {
        "generateAccessToken" => "iam.serviceAccounts.getAccessToken",
        "signBlob" => "iam.serviceAccounts.signBlob",
        _ => {
            return google_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!(
                "Method {method:?} not found (IamDouble serves generateAccessToken and signBlob)."
            ),
            )
        }
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let Some(json) = is_json
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten()
    else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received (IamDouble expects Content-Type: application/json and a JSON object).",
        );
    };

    let listed = |list: &[String]| list.iter().any(|e| e == email);
    if listed(&config.denied) || (method == "signBlob" && listed(&config.denied_sign_blob)) {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!("Permission '{permission}' denied on resource (or it may not exist)."),
        );
    }
    let known = listed(&config.targets) || listed(&config.denied_sign_blob);
    if listed(&config.missing) || !known {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Not found; Gaia id not found for email {email}"),
        );
    }

    if method == "generateAccessToken" {
        generate_access_token(state, &json, email, record)
    } else {
        sign_blob(&json, email, record)
    }
}

fn generate_access_token(
    state: &Shared,
    json: &Value,
    email: &str,
    record: &mut IamRequest,
) -> Response {
    let scopes: Vec<String> = json
        .get("scope")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    record.scopes.clone_from(&scopes);
    let lifetime_text = json
        .get("lifetime")
        .and_then(Value::as_str)
        .map(str::to_owned);
    record.lifetime.clone_from(&lifetime_text);

    if !scopes
        .iter()
        .any(|s| s.contains("cloud-platform") || s.contains("devstorage"))
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument. (IamDouble: scope must contain a cloud-platform or devstorage scope)",
        );
    }
    let requested = match &lifetime_text {
        None => DEFAULT_LIFETIME,
        Some(text) => match parse_lifetime(text) {
            Some(d) if !d.is_zero() && d <= MAX_LIFETIME => d,
            _ => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("Invalid value at 'lifetime' ({text:?}): expected \"<seconds>s\", 1s to 43200s."),
                )
            }
        },
    };
    let lifetime = state
        .config
        .token_lifetime
        .map_or(requested, |cap| cap.min(requested));
    let n = state.next_token.fetch_add(1, Ordering::SeqCst);
    let token = format!("ya29.double-{n}");
    lock(&state.issued).insert(token.clone(), email.to_owned());
    let expire = Utc::now()
        + chrono::Duration::from_std(lifetime).unwrap_or_else(|_| chrono::Duration::seconds(3600));
    ok_json(&json!({
        "accessToken": token,
        "expireTime": expire.to_rfc3339_opts(SecondsFormat::Secs, true),
    }))
}

fn sign_blob(json: &Value, email: &str, record: &mut IamRequest) -> Response {
    let Some(payload) = json
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|p| BASE64_STANDARD.decode(p).ok())
    else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid value at 'payload' (TYPE_BYTES): expected base64.",
        );
    };
    let signature = IamDouble::fake_signature(&payload);
    record.payload = Some(payload);
    let key_id = hex_prefix(&Sha256::digest(email.as_bytes()));
    ok_json(&json!({
        "keyId": key_id,
        "signedBlob": BASE64_STANDARD.encode(signature),
    }))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// `"3600s"` (also `"1.5s"`, rounded down) → a duration.
fn parse_lifetime(text: &str) -> Option<Duration> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs(seconds as u64))
}

/// The caller's identity from `Authorization: Bearer ...`, if accepted.
fn authenticate(state: &Shared, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    if token.is_empty() {
        return None;
    }
    if state.config.base_tokens.iter().any(|t| t == token) {
        return Some(format!("token:{token}"));
    }
    if let Some(email) = lock(&state.issued).get(token) {
        return Some(format!("issued:{email}"));
    }
    let iss = jwt_issuer(token)?;
    state
        .config
        .base_emails
        .contains(&iss)
        .then(|| format!("jwt:{iss}"))
}

/// The `iss` claim of an unexpired JWT (signature not checked).
fn jwt_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = BASE64_URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        if exp < Utc::now().timestamp() {
            return None;
        }
    }
    claims.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        let header = BASE64_URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = BASE64_URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.c2lnbmF0dXJl")
    }

    #[test]
    fn reads_the_issuer_of_unexpired_jwts() {
        let future = Utc::now().timestamp() + 600;
        assert_eq!(
            jwt_issuer(&jwt(
                &json!({"iss": "a@b.iam.gserviceaccount.com", "exp": future})
            )),
            Some("a@b.iam.gserviceaccount.com".to_owned())
        );
        assert_eq!(jwt_issuer(&jwt(&json!({"iss": "a@b", "exp": 1}))), None);
        assert_eq!(jwt_issuer("ya29.not-a-jwt"), None);
        assert_eq!(jwt_issuer("a.b.c.d"), None);
    }

    #[test]
    fn parses_lifetimes() {
        assert_eq!(parse_lifetime("3600s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_lifetime("1.5s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_lifetime("3600"), None);
        assert_eq!(parse_lifetime("-1s"), None);
    }
}

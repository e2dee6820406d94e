//! An AWS STS `AssumeRole` double on 127.0.0.1: checks the form and the
//! SigV4 `Authorization` scope it is sent, enforces a trust policy's
//! `sts:ExternalId` condition (moto's STS does not), issues temporary
//! credentials with a chosen lifetime and counts the calls.
//!
//! The credentials it issues are made up: pair it with moto's S3, which
//! accepts any signature.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use reqwest::Url;
use tokio::task::JoinHandle;

/// The principal named in the double's `AccessDenied` message: a test can
/// check it never reaches a user.
pub const SERVER_PRINCIPAL: &str = "arn:aws:iam::999999999999:user/sts-double-server-principal";

/// How the double answers.
#[derive(Debug, Clone)]
pub struct StsDoubleBuilder {
    require_external_id: Option<String>,
    accepted_key_ids: Vec<String>,
    expires_in: i64,
}

impl Default for StsDoubleBuilder {
    fn default() -> Self {
        Self {
            require_external_id: None,
            accepted_key_ids: Vec::new(),
            expires_in: 3600,
        }
    }
}

impl StsDoubleBuilder {
    /// The trust policy requires this `ExternalId`: any other (or none) is
    /// answered 403 `AccessDenied`.
    pub fn require_external_id(mut self, external_id: impl Into<String>) -> Self {
        self.require_external_id = Some(external_id.into());
        self
    }

    /// Only calls signed with this access key id (or another one given
    /// here) are accepted; others are answered 403 `InvalidClientTokenId`.
    /// Default: any key.
    pub fn accept_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.accepted_key_ids.push(key_id.into());
        self
    }

    /// Issued credentials expire this many seconds after the call.
    pub fn expires_in(mut self, seconds: i64) -> Self {
        self.expires_in = seconds;
        self
    }

    /// Binds `127.0.0.1:0` and serves until the [`StsDouble`] is dropped.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, or if no loopback port can be bound.
    pub async fn start(self) -> StsDouble {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("StsDouble: cannot bind a port on 127.0.0.1");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("StsDouble: the listener has no address");
        let state = Arc::new(Shared {
            config: self,
            calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/", post(handle))
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            // Ends only when the task is aborted (on drop).
            let _ = axum::serve(listener, app).await;
        });
        let endpoint =
            Url::parse(&format!("http://{addr}/")).expect("a socket address makes a URL");
        StsDouble {
            endpoint,
            state,
            server,
        }
    }
}

/// One `AssumeRole` call as the double saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRequest {
    /// `RoleArn`.
    pub role_arn: Option<String>,
    /// `ExternalId` (`None`: not sent).
    pub external_id: Option<String>,
    /// The access key id of the SigV4 credential scope.
    pub key_id: Option<String>,
    /// What was wrong with the request (empty: a well-formed call).
    pub problems: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

#[derive(Debug)]
struct Shared {
    config: StsDoubleBuilder,
    calls: AtomicUsize,
    requests: Mutex<Vec<StsRequest>>,
}

/// The running double; the server stops when this is dropped.
#[derive(Debug)]
pub struct StsDouble {
    endpoint: Url,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for StsDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StsDouble {
    /// A double that trusts any caller, with one-hour sessions.
    pub fn builder() -> StsDoubleBuilder {
        StsDoubleBuilder::default()
    }

    /// `http://127.0.0.1:<port>/`: the STS endpoint to configure (plain HTTP).
    pub fn endpoint(&self) -> Url {
        self.endpoint.clone()
    }

    /// `AssumeRole` calls so far (answered or refused).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Every call so far, oldest first.
    pub fn requests(&self) -> Vec<StsRequest> {
        lock(&self.state.requests).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml")], body).into_response()
}

fn error_xml(status: StatusCode, code: &str, message: &str) -> Response {
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        ),
    )
}

/// The key id of `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/sts/aws4_request`.
fn scope_key_id(headers: &HeaderMap, problems: &mut Vec<String>) -> Option<String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 Credential=") else {
        problems.push("no SigV4 Authorization header".into());
        return None;
    };
    let scope = rest.split(',').next().unwrap_or_default();
    match scope.split('/').collect::<Vec<_>>().as_slice() {
        [key, _date, _region, "sts", "aws4_request"] => Some((*key).to_string()),
        _ => {
            problems.push(format!("credential scope {scope:?} is not for sts"));
            None
        }
    }
}

async fn handle(State(state): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let form: std::collections::HashMap<String, String> = url_decode(&body).into_iter().collect();
    let field = |name: &str| form.get(name).cloned();
    let mut problems = Vec::new();
    let key_id = scope_key_id(&headers, &mut problems);
    if field("Action").as_deref() != Some("AssumeRole") {
        problems.push(format!("Action {:?}", field("Action")));
    }
    if field("Version").as_deref() != Some("2011-06-15") {
        problems.push(format!("Version {:?}", field("Version")));
    }
    if field("RoleSessionName").is_none_or(|n| !(2..=64).contains(&n.len())) {
        problems.push(format!("RoleSessionName {:?}", field("RoleSessionName")));
    }
    let role_arn = field("RoleArn");
    let external_id = field("ExternalId");
    let config = &state.config;
    let response = if !problems.is_empty() {
        error_xml(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            &problems.join("; "),
        )
    } else if !config.accepted_key_ids.is_empty()
        && !key_id
            .as_ref()
            .is_some_and(|key| config.accepted_key_ids.contains(key))
    {
        error_xml(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    } else if config
        .require_external_id
        .as_ref()
        .is_some_and(|required| external_id.as_ref() != Some(required))
    {
        error_xml(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!(
                "User: {SERVER_PRINCIPAL} is not authorized to perform: sts:AssumeRole on resource: {}",
                role_arn.clone().unwrap_or_default()
            ),
        )
    } else {
        let expiration = (chrono::Utc::now() + chrono::Duration::seconds(config.expires_in))
            .format("%Y-%m-%dT%H:%M:%SZ");
        xml(
            StatusCode::OK,
            format!(
                "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                 <AssumeRoleResult><Credentials>\
                 <AccessKeyId>ASIASTSDOUBLE{n:07}</AccessKeyId>\
                 <SecretAccessKey>stsDoubleSecret{n}</SecretAccessKey>\
                 <SessionToken>stsDoubleSessionToken{n}</SessionToken>\
                 <Expiration>{expiration}</Expiration>\
                 </Credentials></AssumeRoleResult></AssumeRoleResponse>"
            ),
        )
    };
    lock(&state.requests).push(StsRequest {
        role_arn,
        external_id,
        key_id,
        problems,
        status: response.status().as_u16(),
    });
    response
}

fn url_decode(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

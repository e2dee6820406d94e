//! A loopback double of Microsoft Entra's token endpoint (OAuth2 v2.0).
//!
//! [`EntraDouble`] listens on `127.0.0.1:<random port>` and answers
//! `POST /{tenant}/oauth2/v2.0/token` as Entra does for the two grants
//! `azure_spi` storages use, checking the form it is sent:
//!
//! * client credentials: `grant_type=client_credentials`, `client_id`,
//!   `client_secret`, `scope=https://storage.azure.com/.default`;
//! * federated credentials (workload identity): the same with
//!   `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   and `client_assertion` instead of the secret.
//!
//! A success is `{"token_type":"Bearer","expires_in":…,"access_token":…}`
//! where the token is an unsigned JWT with the claims Azure Storage reads
//! (`aud`, `iss`, `tid`, `oid`, `appid`, `exp`). Failures carry Entra's
//! JSON error body and status: an unknown tenant `400 invalid_request`
//! `AADSTS90002`, an unknown client `400 unauthorized_client`
//! `AADSTS700016`, a wrong secret `401 invalid_client` `AADSTS7000215`, a
//! wrong assertion `401 invalid_client` `AADSTS700213`, a wrong scope
//! `400 invalid_scope` `AADSTS70011`, another grant `400
//! unsupported_grant_type` `AADSTS70003`.
//!
//! ```no_run
//! # async fn demo() {
//! use storage_testing::entra_double::EntraDouble;
//! let entra = EntraDouble::builder()
//!     .tenant("11111111-2222-3333-4444-555555555555")
//!     .client("app-id", "app-secret")
//!     .start()
//!     .await;
//! let authority = entra.authority(); // http://127.0.0.1:<port>
//! // ... point the code under test at `authority` ...
//! assert_eq!(entra.token_calls(), 0);
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::prelude::{Engine as _, BASE64_URL_SAFE_NO_PAD};
use http::StatusCode;
use serde_json::json;
use tokio::task::JoinHandle;

/// The scope Azure Storage tokens are asked with.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The assertion type of federated credentials.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Configuration of an [`EntraDouble`]; start with [`EntraDouble::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "call .start().await to run the double"]
pub struct EntraDoubleBuilder {
    tenants: Vec<String>,
    secrets: HashMap<String, String>,
    assertions: HashMap<String, String>,
    lifetime: Option<Duration>,
    scope: Option<String>,
}

impl EntraDoubleBuilder {
    /// The scope tokens must be asked with (default [`STORAGE_SCOPE`]);
    /// issued tokens carry it, without `/.default`, as their audience.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// A tenant the double knows (every client belongs to every tenant).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenants.push(tenant.into());
        self
    }

    /// An app registration with a client secret.
    pub fn client(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.secrets.insert(client_id.into(), secret.into());
        self
    }

    /// An identity with a federated credential: the assertion (the
    /// federated token file's content) it must present.
    pub fn federated(mut self, client_id: impl Into<String>, assertion: impl Into<String>) -> Self {
        self.assertions.insert(client_id.into(), assertion.into());
        self
    }

    /// `expires_in` of every token (default 3599 s, as Entra).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Binds a port on 127.0.0.1 and serves until the double is dropped.
    pub async fn start(self) -> EntraDouble {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("EntraDouble: cannot bind a port on 127.0.0.1");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("EntraDouble: the listener has no address");
        let state = Arc::new(Shared {
            config: self,
            calls: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            // Ends only when the task is aborted (on drop).
            let _ = axum::serve(listener, app).await;
        });
        EntraDouble {
            authority: format!("http://{addr}"),
            state,
            server,
        }
    }
}

/// A running double; see the [module docs](self).
#[derive(Debug)]
pub struct EntraDouble {
    authority: String,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

impl EntraDouble {
    /// A double with no tenant and no client yet.
    pub fn builder() -> EntraDoubleBuilder {
        EntraDoubleBuilder::default()
    }

    /// The authority host, `http://127.0.0.1:<port>` (no trailing `/`).
    pub fn authority(&self) -> String {
        self.authority.clone()
    }

    /// Token requests so far, answered or refused.
    pub fn token_calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }
}

impl Drop for EntraDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug)]
struct Shared {
    config: EntraDoubleBuilder,
    calls: AtomicUsize,
    issued: AtomicUsize,
}

/// Entra's error body.
fn refuse(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ");
    let trace = uuid::Uuid::new_v4();
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {now}"
            ),
            "error_codes": [code],
            "timestamp": now.to_string(),
            "trace_id": trace.to_string(),
            "correlation_id": trace.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })
        .to_string(),
    )
        .into_response()
}

async fn token(
    State(state): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let config = &state.config;
    if !config.tenants.contains(&tenant) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let scope = config.scope.as_deref().unwrap_or(STORAGE_SCOPE);
    if field("scope") != scope {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid: expected {scope}."),
        );
    }
    let client = field("client_id");
    let federated = form.contains_key("client_assertion");
    let accepted = if federated {
        if field("client_assertion_type") != JWT_BEARER {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900023,
                "The client_assertion_type is not valid.",
            );
        }
        config
            .assertions
            .get(client)
            .map(|a| a == field("client_assertion"))
    } else {
        config
            .secrets
            .get(client)
            .map(|s| s == field("client_secret"))
    };
    match accepted {
        None => refuse(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."),
        ),
        Some(false) if federated => refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700213,
            "No matching federated identity record found for presented assertion subject.",
        ),
        Some(false) => refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client}'."),
        ),
        Some(true) => {
            let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let lifetime = config.lifetime.unwrap_or(Duration::from_secs(3599)).as_secs();
            let now = chrono::Utc::now().timestamp();
            let header = BASE64_URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#);
            let claims = BASE64_URL_SAFE_NO_PAD.encode(
                json!({
                    "aud": scope.trim_end_matches("/.default"),
                    "iss": format!("https://sts.windows.net/{tenant}/"),
                    "tid": tenant, "oid": format!("oid-{client}"), "appid": client,
                    "iat": now, "nbf": now, "exp": now + lifetime as i64,
                    "jti": format!("double-{n}"),
                })
                .to_string(),
            );
            (
                StatusCode::OK,
                [(http::header::CONTENT_TYPE, "application/json; charset=utf-8")],
                json!({
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                    "ext_expires_in": lifetime,
                    "access_token": format!("{header}.{claims}.c2ln"),
                })
                .to_string(),
            )
                .into_response()
        }
    }
}

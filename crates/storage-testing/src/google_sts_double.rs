//! A loopback double of Google's Security Token Service token exchange, the
//! first step of Workload Identity Federation (`gcswif`).
//!
//! [`GoogleStsDouble`] listens on `127.0.0.1:<random port>` and answers
//! `POST /v1/token` as Google does: a form with
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, `audience`,
//! `scope`, `requested_token_type`, `subject_token` and `subject_token_type`,
//! and no `Authorization` header. When each field is what it must be (the
//! audience and subject token the double was given, an OIDC subject token
//! type, the cloud-platform scope) it answers `{"access_token": <the
//! federated token it was given>, "issued_token_type", "token_type":
//! "Bearer", "expires_in": 3600}`; otherwise Google's OAuth error, e.g. 400
//! `{"error": "invalid_target", "error_description": "The target service
//! indicated by the \"audience\" parameters is invalid. ..."}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use reqwest::Url;
use serde_json::json;
use tokio::task::JoinHandle;

/// The subject token type the double accepts (an OIDC ID token).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// One exchange the double answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleStsRequest {
    /// The form fields as sent (the subject token included: it is a test's).
    pub form: HashMap<String, String>,
    /// Whether an `Authorization` header came with it (it must not).
    pub authorized: bool,
    /// The HTTP status answered.
    pub status: u16,
}

#[derive(Debug)]
struct Shared {
    audience: String,
    subject_token: String,
    federated_token: String,
    requests: Mutex<Vec<GoogleStsRequest>>,
}

/// The running double; the server stops when this is dropped.
#[derive(Debug)]
pub struct GoogleStsDouble {
    endpoint: Url,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

impl GoogleStsDouble {
    /// Starts a double that exchanges `subject_token` for `audience` into
    /// `federated_token`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, or if no loopback port can be bound.
    pub async fn start(audience: &str, subject_token: &str, federated_token: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("GoogleStsDouble: cannot bind a port on 127.0.0.1");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("GoogleStsDouble: the listener has no address");
        let state = Arc::new(Shared {
            audience: audience.to_owned(),
            subject_token: subject_token.to_owned(),
            federated_token: federated_token.to_owned(),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/token", post(exchange))
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let endpoint = Url::parse(&format!("http://{addr}")).expect("a socket address makes a URL");
        Self {
            endpoint,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: the STS endpoint to configure.
    pub fn endpoint(&self) -> Url {
        self.endpoint.clone()
    }

    /// Every exchange answered so far, oldest first.
    pub fn requests(&self) -> Vec<GoogleStsRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for GoogleStsDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn exchange(
    State(state): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let refusal = if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" {
        Some((
            "unsupported_grant_type",
            "Invalid value for \"grant_type\".".to_owned(),
        ))
    } else if field("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
        Some((
            "invalid_request",
            "Invalid value for \"requested_token_type\".".to_owned(),
        ))
    } else if field("subject_token_type") != JWT_TOKEN_TYPE {
        Some((
            "invalid_request",
            "Invalid value for \"subject_token_type\".".to_owned(),
        ))
    } else if !field("scope")
        .split(' ')
        .any(|scope| scope == "https://www.googleapis.com/auth/cloud-platform")
    {
        Some(("invalid_scope", "The scope is not valid.".to_owned()))
    } else if field("audience") != state.audience {
        Some((
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might \
             either be because the pool or provider is disabled or deleted or because it doesn't \
             exist."
                .to_owned(),
        ))
    } else if field("subject_token") != state.subject_token {
        Some((
            "invalid_grant",
            "The audience in ID Token does not match the expected audience.".to_owned(),
        ))
    } else {
        None
    };
    let (status, body) = match refusal {
        Some((error, description)) => (
            StatusCode::BAD_REQUEST,
            json!({"error": error, "error_description": description}),
        ),
        None => (
            StatusCode::OK,
            json!({
                "access_token": state.federated_token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }),
        ),
    };
    state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(GoogleStsRequest {
            form,
            authorized: headers.contains_key(axum::http::header::AUTHORIZATION),
            status: status.as_u16(),
        });
    (status, Json(body)).into_response()
}

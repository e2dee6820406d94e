//! A plain-HTTP front for an HTTPS emulator with a self-signed certificate.
//!
//! Azurite accepts Microsoft Entra bearer tokens only over HTTPS
//! (`--oauth basic`), with the certificate `scripts/emulators.sh` makes. The
//! code under test builds its HTTP clients itself (the endpoint policy's
//! connector), and the conformance suite fetches signed URLs with a plain
//! `reqwest::get`: neither trusts that certificate. [`TlsShim`] listens on
//! `http://127.0.0.1:<random port>` and forwards every request (method,
//! path, query, headers, body) to the HTTPS upstream unchanged, answering
//! with the upstream's status, headers and body. It accepts the upstream's
//! certificate without checking it: loopback test traffic only. Requests
//! keep their `Authorization` header and signed query strings, so Azurite
//! checks tokens and SAS signatures as it would directly (they sign the
//! path, not the host).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, StatusCode};
use tokio::task::JoinHandle;

/// A running shim; see the [module docs](self).
#[derive(Debug)]
pub struct TlsShim {
    endpoint: String,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Upstream {
    client: reqwest::Client,
    base: String,
}

impl TlsShim {
    /// Forwards to `upstream` (`https://127.0.0.1:17181`, no trailing `/`).
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("TlsShim: cannot bind a port on 127.0.0.1");
        let addr: SocketAddr = listener
            .local_addr()
            .expect("TlsShim: the listener has no address");
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("TlsShim: cannot build its HTTP client");
        let state = Arc::new(Upstream {
            client,
            base: upstream.trim_end_matches('/').to_string(),
        });
        let app = Router::new().fallback(forward).with_state(state);
        let server = tokio::spawn(async move {
            // Ends only when the task is aborted (on drop).
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, no trailing `/`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
}

impl Drop for TlsShim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "TlsShim: unreadable body").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = upstream
        .client
        .request(parts.method, format!("{}{path}", upstream.base));
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONNECTION {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("TlsShim: upstream: {e}")).into_response()
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

//! The HTTP/1 server loop: axum's router on hyper, with the limits a
//! server on the open internet needs and `axum::serve` does not offer.
//!
//! - A header read timeout: a client must send a whole request head within
//!   it, and an idle keep-alive connection is closed after it (hyper starts
//!   the timer as soon as the connection waits for a request), so idle or
//!   half-sent connections cannot pile up (slowloris).
//! - A cap on open connections: at the cap the server stops accepting (new
//!   connections wait in the kernel's backlog) instead of running out of
//!   file descriptors, and accepts again as soon as one closes.
//! - The body read timeout is a layer of the router (see [`crate::app`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How long open connections may finish their requests after shutdown
/// begins.
const DRAIN: Duration = Duration::from_secs(30);

/// The connection limits of [`serve_connections`].
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to send a whole request head, and the longest a keep-alive
    /// connection waits idle for the next request.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// open connections finish (30 s at most).
pub async fn serve_connections(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors or a connection reset before accept:
                // wait a little rather than spin.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|req: Request<Incoming>| req.map(axum::body::Body::new)),
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period were closed");
    }
}

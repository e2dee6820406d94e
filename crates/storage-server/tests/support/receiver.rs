//! A webhook receiver on a loopback port: it records every request it is
//! sent (headers, body, its answer) and answers 500 while told to fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::serve_on_loopback;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// `webhook-signature`, if any.
    pub signature: Option<String>,
    /// Every header, names lowercase.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    pub json: Value,
    /// Whether it was answered 200.
    pub accepted: bool,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, by the wall clock (the server's times are).
    pub wall: chrono::DateTime<chrono::Utc>,
}

impl Received {
    /// `action` of the body.
    pub fn action(&self) -> &str {
        self.json["action"].as_str().unwrap_or_default()
    }

    /// The number of the event id (`evt_<n>`).
    pub fn number(&self) -> i64 {
        self.id.trim_start_matches("evt_").parse().unwrap_or(-1)
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    failing_until: Mutex<Option<Instant>>,
    delay: Mutex<Duration>,
}

/// The receiver; it stops with the test's runtime.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        let (base, _server) = serve_on_loopback(app).await;
        Self {
            url: format!("{base}/hook"),
            shared,
        }
    }

    /// Answers 500 to everything for `period` from now.
    pub fn fail_for(&self, period: Duration) {
        *self.shared.failing_until.lock().unwrap() = Some(Instant::now() + period);
    }

    /// Takes `delay` to answer each request (a slow receiver).
    pub fn answer_after(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Answers 200 again.
    pub fn recover(&self) {
        *self.shared.failing_until.lock().unwrap() = None;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The requests answered 200, in arrival order.
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.accepted).collect()
    }

    /// Waits until `done` holds for the accepted requests; fails after
    /// `patience`, saying what arrived.
    pub async fn wait_accepted(
        &self,
        patience: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + patience;
        loop {
            let accepted = self.accepted();
            if done(&accepted) {
                return accepted;
            }
            if Instant::now() > deadline {
                let actions: Vec<&str> = accepted.iter().map(Received::action).collect();
                panic!(
                    "the receiver did not get {what} within {patience:?}; accepted {} ({actions:?}) of {} requests",
                    accepted.len(),
                    self.received().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let failing = shared
        .failing_until
        .lock()
        .unwrap()
        .is_some_and(|until| Instant::now() < until);
    let received = Received {
        id: header("webhook-id").unwrap_or_default(),
        timestamp: header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
        signature: header("webhook-signature"),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body,
        accepted: !failing,
        at: Instant::now(),
        wall: chrono::Utc::now(),
    };
    shared.received.lock().unwrap().push(received);
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

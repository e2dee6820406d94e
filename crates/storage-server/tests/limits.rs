//! The HTTP server's own limits against clients that hold connections or
//! bodies (slowloris), over raw sockets to the `storage-server` binary.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::time::{Duration, Instant};

use support::process::{self, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "limits-token-0123456789";

fn address(server: &Process) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// The status line of the first response on `stream`, or what happened.
async fn first_line(stream: &mut TcpStream, within: Duration) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return format!("no answer within {within:?}"),
            Ok(Ok(0)) => return format!("closed after {:?}", String::from_utf8_lossy(&seen)),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(err)) => return format!("error: {err}"),
        }
        if let Some(end) = seen.windows(2).position(|w| w == b"\r\n") {
            return String::from_utf8_lossy(&seen[..end]).into_owned();
        }
    }
}

async fn health_answers(base: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_and_the_server_keeps_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = process::command_with_descriptor_limit(dir.path(), 128);
    command.args([
        "--token",
        TOKEN,
        "--http-header-timeout-seconds",
        "2",
        "--http-max-connections",
        "48",
    ]);
    let server = Process::start(command, dir.path(), "server");
    assert!(health_answers(&server.base).await);

    // More half-sent requests than the server has descriptors for.
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(address(&server)).await.unwrap();
        // Not all are accepted at once: writes to the backlog still succeed.
        let _ = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await;
        held.push(stream);
    }

    // An accepted one is closed once its header time is up.
    let started = Instant::now();
    let answer = first_line(&mut held[0], Duration::from_secs(10)).await;
    assert!(answer.starts_with("closed"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8), "{answer}");

    // A real client gets through while the attacker still holds its sockets.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health_answers(&server.base).await {
        assert!(
            Instant::now() < deadline,
            "the server stopped answering:\n{}",
            server.log_text()
        );
    }
    drop(held);
    assert!(health_answers(&server.base).await);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_an_oversized_one_413_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = process::command(dir.path());
    command.args([
        "--token",
        TOKEN,
        "--http-body-timeout-seconds",
        "1",
        "--max-body-bytes",
        "1000",
    ]);
    let server = Process::start(command, dir.path(), "server");

    // Ten of the hundred announced bytes, then nothing.
    let mut stalled = TcpStream::connect(address(&server)).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Token {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"title\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = first_line(&mut stalled, Duration::from_secs(10)).await;
    assert_eq!(answer, "HTTP/1.1 408 Request Timeout");

    // A body announced too large: 413 at once, never "100 Continue".
    let mut large = TcpStream::connect(address(&server)).await.unwrap();
    large
        .write_all(
            format!(
                "POST /api/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Token {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 5000\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = first_line(&mut large, Duration::from_secs(10)).await;
    assert_eq!(answer, "HTTP/1.1 413 Payload Too Large");
}

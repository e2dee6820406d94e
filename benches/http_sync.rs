//! Macro benchmark: Files-mode local-files syncs driven through the HTTP API
//! of the example server (a separate process, release build), timing each
//! sync from the `POST .../sync` to the `completed` status and reading the
//! server's peak resident memory (VmHWM) from /proc.
//!
//! Run with:
//! `cargo build --release --example server && cargo bench --bench http_sync`
//! (`BENCH_FILES=10000,100000` chooses the sizes).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark reports on stdout and stops on any failure

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "bench-token-0123456789";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples/server");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --example server` first",
        path.display()
    );
    path
}

fn start(data: &Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(server_binary())
        .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("STORAGE_API_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server");
    Server { child, base: format!("http://127.0.0.1:{port}") }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Api {
    client: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("Token {TOKEN}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("request");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().unwrap_or(Value::Null)
    }

    fn sync_and_wait(&self, storage: i64) -> (Duration, Value) {
        let started = Instant::now();
        self.call(reqwest::Method::POST, &format!("/api/storages/localfiles/{storage}/sync"), None);
        loop {
            let state = self.call(reqwest::Method::GET, &format!("/api/storages/localfiles/{storage}"), None);
            match state["status"].as_str() {
                Some("completed") => return (started.elapsed(), state),
                Some("failed" | "completed_with_errors") => panic!("sync failed: {state}"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_FILES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_FILES is a list of numbers"))
        .collect();
    println!("| files | sync (s) | files/s | re-sync (s) | peak server RSS (MiB) |");
    println!("|---:|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("local-files/images");
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..n {
            std::fs::write(folder.join(format!("img_{i:07}.jpg")), b"x").unwrap();
        }
        let server = start(dir.path());
        let api = Api { client: reqwest::blocking::Client::new(), base: server.base.clone() };
        let ready = Instant::now();
        while api.client.get(format!("{}/api/storages/types", api.base)).send().is_err() {
            assert!(ready.elapsed() < Duration::from_secs(30), "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let project = api.call(
            reqwest::Method::POST,
            "/api/projects",
            Some(json!({"title": "bench", "label_config": "<View><Image name=\"i\" value=\"$image\"/></View>"})),
        )["id"]
            .as_i64()
            .unwrap();
        let storage = api.call(
            reqwest::Method::POST,
            "/api/storages/localfiles",
            Some(json!({"project": project, "path": folder.canonicalize().unwrap(), "use_blob_urls": true})),
        )["id"]
            .as_i64()
            .unwrap();
        let (first, state) = api.sync_and_wait(storage);
        assert_eq!(state["last_sync_count"], n as u64, "{state}");
        let (again, state) = api.sync_and_wait(storage);
        assert_eq!(state["last_sync_count"], 0, "{state}");
        println!(
            "| {n} | {:.2} | {:.0} | {:.2} | {:.0} |",
            first.as_secs_f64(),
            n as f64 / first.as_secs_f64(),
            again.as_secs_f64(),
            peak_rss_mib(server.child.id())
        );
    }
}

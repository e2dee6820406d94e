//! The `storage-server` binary as a separate process (also used by
//! benches/http_sync.rs).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary Cargo built for this test or bench.
pub fn server_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_storage-server"))
}

/// The variables the server reads its settings from: a test's environment
/// must not change what the server does.
const SERVER_VARIABLES: &[&str] = &[
    "STORAGE_ADDR",
    "STORAGE_DATA_DIR",
    "DATABASE_URL",
    "LABEL_STUDIO_DATABASE_URL",
    "LABEL_STUDIO_URL",
    "STORAGE_API_TOKEN",
    "LOCAL_FILES_SERVING_ENABLED",
    "LOCAL_FILES_DOCUMENT_ROOT",
    "STORAGE_HOST",
    "STORAGE_ALLOW_PRIVATE_ENDPOINTS",
    "CORS_ALLOWED_ORIGINS",
    "STORAGE_HTTP_HEADER_TIMEOUT_SECONDS",
    "STORAGE_HTTP_BODY_TIMEOUT_SECONDS",
    "STORAGE_HTTP_MAX_CONNECTIONS",
    "STORAGE_MAX_BODY_BYTES",
    "STORAGE_MAX_LABEL_CONFIG_BYTES",
    "STORAGE_STS_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_GCS_BASE_URL",
    "STORAGE_IAM_ENDPOINT",
    "STORAGE_PUBSUB_CERTS_URL",
    "STORAGE_AZURE_BLOB_ENDPOINT",
    "STORAGE_GCS_WIF_SUBJECT_TOKEN_FILE",
    "STORAGE_GCS_WIF_SUBJECT_TOKEN_TYPE",
    "STORAGE_GOOGLE_STS_ENDPOINT",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "STORAGE_KEYLESS_S3_SERVER_CREDENTIALS",
    "STORAGE_KEYLESS_GCS_SERVER_CREDENTIALS",
    "STORAGE_SERVER_CREDENTIALS_BUCKETS",
    "STORAGE_ALLOW_AMBIENT_CREDENTIALS",
    "STORAGE_USE_ENV_PROXY",
    "STORAGE_ALLOW_ENDPOINT_NETWORK",
    "STORAGE_SYNC_WORKERS",
    "STORAGE_SYNC_LEASE_SECONDS",
    "STORAGE_MIN_SYNC_INTERVAL",
    "STORAGE_WEBHOOK_TIMEOUT_SECONDS",
    "STORAGE_WEBHOOK_RETRY_SECONDS",
    "STORAGE_WEBHOOK_MAX_BACKOFF_SECONDS",
    "STORAGE_EXPORT_RETRY_SECONDS",
    "STORAGE_EXPORT_MAX_BACKOFF_SECONDS",
    "STORAGE_LOG_JSON",
    "STORAGE_METRICS_PUBLIC",
    "STORAGE_METRICS_TOKEN",
];

/// The server's command over `data_dir`, with none of the server's
/// variables from this environment and `RUST_LOG=warn`.
pub fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(server_binary());
    for var in SERVER_VARIABLES {
        command.env_remove(var);
    }
    command
        .env("RUST_LOG", "warn")
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// [`command`] run with at most `descriptors` open file descriptors
/// (through `sh -c 'ulimit -n …'`), as on a host with a low limit.
pub fn command_with_descriptor_limit(data_dir: &Path, descriptors: u32) -> Command {
    let inner = command(data_dir);
    let mut outer = Command::new("sh");
    outer
        .arg("-c")
        .arg(format!("ulimit -n {descriptors} && exec \"$0\" \"$@\""))
        .arg(inner.get_program())
        .args(inner.get_args());
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => outer.env(name, value),
            None => outer.env_remove(name),
        };
    }
    outer
}

/// A running server process, killed when dropped (a failing test must not
/// leave a server behind).
#[derive(Debug)]
pub struct Process {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its stdout (log lines and what it prints), line by line.
    pub log: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Starts `command` on a free loopback port (it must not name
    /// `--addr`) and waits until it listens. Its output is appended to
    /// `<dir>/<name>.log` and `<dir>/<name>.stderr`.
    pub fn start(mut command: Command, dir: &Path, name: &str) -> Self {
        let log = dir.join(format!("{name}.log"));
        let stderr = dir.join(format!("{name}.stderr"));
        let append = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file")
        };
        let mut child = command
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(append(&stderr))
            .spawn()
            .expect("start the storage-server binary");
        // Log lines and the address (printed once it listens) arrive on
        // stdout: the thread copies them to the log file, line by line.
        let stdout = child.stdout.take().unwrap();
        let mut file = std::io::LineWriter::new(append(&log));
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
                if let Some(address) = line.strip_prefix("Listening on ") {
                    let _ = sender.send(address.trim().to_string());
                }
                let _ = writeln!(file, "{line}");
            }
        });
        let mut process = Self {
            child,
            base: String::new(),
            log,
            stderr,
        };
        let started = Instant::now();
        loop {
            match receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(base) => {
                    process.base = base;
                    return process;
                }
                Err(_) => {
                    if let Some(status) = process.child.try_wait().unwrap() {
                        panic!(
                            "server {name} exited ({status}) before listening:\n{}",
                            process.log_text()
                        );
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "server {name} did not start listening:\n{}",
                        process.log_text()
                    );
                }
            }
        }
    }

    /// Its stdout and stderr so far.
    pub fn log_text(&self) -> String {
        let read = |file: &Path| std::fs::read_to_string(file).unwrap_or_default();
        format!("{}{}", read(&self.log), read(&self.stderr))
    }

    /// SIGKILL: no shutdown hook, no batch boundary, nothing flushed.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Running the binary and the fixtures the tests share.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};
use storage_core::object_store::path::Path as ObjectPath;
use storage_core::object_store::{ObjectStore, ObjectStoreExt};
use storage_core::{Backend, EndpointPolicy, Settings};
use storage_s3::{S3Backend, S3Options};

/// What a run printed and returned.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `storages ARGS...` without a terminal. Variables that would change
/// the flags' defaults are removed, so each test says what it means.
fn storages(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_storages"))
        .args(args)
        .env_remove("LOCAL_FILES_DOCUMENT_ROOT")
        .env_remove("STORAGE_HOST")
        .env_remove("STORAGE_ALLOW_PRIVATE_ENDPOINTS")
        .env_remove("RUST_LOG")
        .output()
        .expect("the storages binary runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 report"),
    }
}

/// The exit code of a run refused before it reads or writes anything.
pub(crate) const EXIT_INVALID: i32 = 2;

/// How a bad `regex_filter` is reported; the regex crate's own words follow.
pub(crate) const INVALID_REGEX: &str =
    "error: invalid storage settings\n  regex_filter: Invalid regular expression: ";

impl Run {
    /// Asserts the run exited 0; the run, for the checks of its output.
    #[track_caller]
    pub(crate) fn succeeded(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// Asserts the run exited with `code` and reported exactly `stderr`.
    #[track_caller]
    pub(crate) fn failed_with(&self, code: i32, stderr: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert_eq!(self.stderr, stderr, "{self:?}");
    }

    /// Asserts the run exited with `code` and its report starts with
    /// `prefix`: for messages whose tail comes from a library.
    #[track_caller]
    pub(crate) fn failed_starting(&self, code: i32, prefix: &str) {
        assert_eq!(self.code, code, "{self:?}");
        self.reported(prefix);
    }

    /// Asserts the run exited with `code` and its report names `text`.
    #[track_caller]
    pub(crate) fn failed_naming(&self, code: i32, text: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.contains(text), "{text:?} in {self:?}");
    }

    /// Asserts the report (standard error) starts with `prefix`.
    #[track_caller]
    pub(crate) fn reported(&self, prefix: &str) {
        assert!(self.stderr.starts_with(prefix), "{prefix:?} in {self:?}");
    }
}

/// A `storages` command line, built from the flags most tests share.
#[derive(Debug, Clone)]
pub(crate) struct Cli(Vec<String>);

impl Cli {
    /// `storages ARGS...`, spelled out.
    pub(crate) fn new(args: &[&str]) -> Self {
        Self(Vec::new()).args(args)
    }

    /// `storages COMMAND` on a local folder below the document root `root`.
    pub(crate) fn local(command: &str, root: &str) -> Self {
        Self::new(&[
            command,
            "--type",
            "localfiles",
            "--local-files-document-root",
            root,
        ])
    }

    /// `storages COMMAND` on the S3 storage of the JSON file `config`,
    /// allowed to reach moto on loopback.
    pub(crate) fn s3(command: &str, config: &Path) -> Self {
        Self::new(&[command, "--type", "s3", "--config"])
            .arg(config.display().to_string())
            .arg("--allow-private-endpoints")
    }

    /// One more argument.
    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Self {
        self.0.push(arg.into());
        self
    }

    /// More arguments.
    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.0.extend(args.iter().map(|arg| arg.to_string()));
        self
    }

    /// `--set NAME=VALUE`: one storage setting.
    pub(crate) fn set(self, setting: impl Into<String>) -> Self {
        self.arg("--set").arg(setting)
    }

    /// `--out PATH`; `-` is standard output.
    pub(crate) fn out(self, path: impl AsRef<Path>) -> Self {
        self.arg("--out").arg(path.as_ref().display().to_string())
    }

    /// Runs the command line.
    pub(crate) fn run(&self) -> Run {
        let args: Vec<&str> = self.0.iter().map(String::as_str).collect();
        storages(&args)
    }
}

/// Writes `storage` as a `--config` file named `name` in `dir`; its path.
pub(crate) fn write_config(dir: &Path, name: &str, storage: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, storage.to_string()).unwrap();
    path
}

/// The JSON lines of `path`, sorted by storage key and row.
pub(crate) fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("output written");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the last line is complete"
    );
    let mut lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    lines.sort_by_key(|line| {
        (
            line["meta"]["storage_key"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            line["meta"]["row_index"].as_i64(),
        )
    });
    lines
}

/// A document root with `data/` holding images and a text file; the root
/// as an absolute, canonical path.
pub(crate) fn local_root() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().display().to_string();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    for name in ["a.jpg", "b c.jpg", "notes.txt", "sub/d.jpg"] {
        std::fs::write(data.join(name), name).unwrap();
    }
    (dir, root)
}

/// Every path below `dir`, sorted: to prove a command created nothing.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, into: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            into.push(path.display().to_string());
            if path.is_dir() {
                walk(&path, into);
            }
        }
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    paths.sort();
    paths
}

pub(crate) fn file_task(key: &str, url: &str) -> Value {
    json!({"data": {"$undefined$": url}, "meta": {"storage_key": key}})
}

/// An S3 storage configured as the API takes it, under a fresh prefix of
/// moto's shared bucket.
pub(crate) struct Bucket {
    pub(crate) moto: storage_testing::S3Server,
    pub(crate) prefix: String,
}

impl Bucket {
    /// A fresh prefix holding `objects`, `(key below the prefix, body)`.
    pub(crate) async fn seeded(test: &str, objects: &[(&str, &str)]) -> Self {
        let bucket = Self {
            moto: storage_testing::moto(),
            prefix: storage_testing::unique_prefix(test),
        };
        bucket.put(objects).await;
        bucket
    }

    /// The REST fields of a storage of `prefix` below the test's prefix.
    pub(crate) fn fields(&self, prefix: &str) -> Value {
        json!({
            "bucket": self.moto.bucket,
            "prefix": format!("{}/{prefix}", self.prefix),
            "aws_access_key_id": self.moto.access_key_id,
            "aws_secret_access_key": self.moto.secret_access_key,
            "s3_endpoint": self.moto.endpoint,
        })
    }

    /// The bucket as the S3 backend opens it, to seed and inspect it
    /// without the binary.
    async fn store(&self) -> Arc<dyn ObjectStore> {
        let settings = Settings::from_map(self.fields("").as_object().unwrap().clone());
        let backend =
            S3Backend::new(S3Options::new().with_endpoint_policy(EndpointPolicy::allow_private()));
        backend.export_storage(&settings).await.unwrap().store()
    }

    async fn put(&self, objects: &[(&str, &str)]) {
        let store = self.store().await;
        for (key, body) in objects {
            let location = ObjectPath::from(format!("{}/{key}", self.prefix));
            store.put(&location, body.to_string().into()).await.unwrap();
        }
    }

    /// Every key under the test's prefix.
    pub(crate) async fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let store = self.store().await;
        let prefix = ObjectPath::from(self.prefix.as_str());
        let mut keys: Vec<String> = store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }
}

//! Running the binary and the fixtures the tests share.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use storage_core::object_store::path::Path as ObjectPath;
use storage_core::object_store::ObjectStoreExt;
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
pub(crate) fn storages(args: &[&str]) -> Run {
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

/// `storages` with owned arguments.
pub(crate) fn storages_owned(args: &[String]) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    storages(&args)
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
    pub(crate) fn new(test: &str) -> Self {
        Self {
            moto: storage_testing::moto(),
            prefix: storage_testing::unique_prefix(test),
        }
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

    pub(crate) async fn put(&self, objects: &[(&str, &str)]) {
        let settings = Settings::from_map(self.fields("").as_object().unwrap().clone());
        let backend =
            S3Backend::new(S3Options::new().with_endpoint_policy(EndpointPolicy::allow_private()));
        let store = backend.export_storage(&settings).await.unwrap().store();
        for (key, body) in objects {
            let location = ObjectPath::from(format!("{}/{key}", self.prefix));
            store.put(&location, body.to_string().into()).await.unwrap();
        }
    }

    /// Every key under the test's prefix.
    pub(crate) async fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let settings = Settings::from_map(self.fields("").as_object().unwrap().clone());
        let backend =
            S3Backend::new(S3Options::new().with_endpoint_policy(EndpointPolicy::allow_private()));
        let store = backend.export_storage(&settings).await.unwrap().store();
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

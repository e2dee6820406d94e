#![doc = include_str!("../README.md")]

pub mod conformance;
pub mod databricks_double;
pub mod entra_double;
pub mod gcs_sa_rig;
pub mod gcs_shim;
pub mod google_sts_double;
pub mod iam_double;
pub mod postgres;
pub mod redis;
pub mod sts_double;
pub mod tls_shim;

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use reqwest::Url;

/// Endpoint of moto (S3 + STS, path style), e.g. `http://127.0.0.1:17150`.
pub const ENV_MOTO_ENDPOINT: &str = "STORAGE_TEST_MOTO_ENDPOINT";
/// Endpoint of SeaweedFS's S3 gateway (path style), e.g. `http://127.0.0.1:17130`.
pub const ENV_SEAWEEDFS_ENDPOINT: &str = "STORAGE_TEST_SEAWEEDFS_ENDPOINT";
/// Access key id of SeaweedFS's admin identity.
pub const ENV_SEAWEEDFS_KEY: &str = "STORAGE_TEST_SEAWEEDFS_KEY";
/// Secret access key of SeaweedFS's admin identity.
pub const ENV_SEAWEEDFS_SECRET: &str = "STORAGE_TEST_SEAWEEDFS_SECRET";
/// A SeaweedFS identity that may list and read but not write (access key,
/// secret), as `scripts/emulators.sh` configures it.
pub const SEAWEEDFS_READ_ONLY: (&str, &str) = ("readonlykey", "readonlysecret");
/// A SeaweedFS identity that may only list (access key, secret), as
/// `scripts/emulators.sh` configures it.
pub const SEAWEEDFS_LIST_ONLY: (&str, &str) = ("listonlykey", "listonlysecret");
/// Base URL of fake-gcs-server (JSON and XML API), e.g. `http://127.0.0.1:17160`.
pub const ENV_GCS_ENDPOINT: &str = "STORAGE_TEST_GCS_ENDPOINT";
/// Blob endpoint of Azurite (path style, without the account), e.g.
/// `http://127.0.0.1:17180`.
pub const ENV_AZURITE_ENDPOINT: &str = "STORAGE_TEST_AZURITE_ENDPOINT";
/// The HTTPS Azurite that takes Microsoft Entra tokens (`--oauth basic`),
/// e.g. `https://127.0.0.1:17181`.
pub const ENV_AZURITE_OAUTH_ENDPOINT: &str = "STORAGE_TEST_AZURITE_OAUTH_ENDPOINT";
/// The bucket that exists on every server (`conformance`).
pub const ENV_BUCKET: &str = "STORAGE_TEST_BUCKET";

/// How to get the variables; part of every panic message.
const HOW_TO_START: &str = "The storage emulators are not running (or their variables are not \
exported). `./scripts/test` installs, starts and stops them around the whole suite. \
For a manual `cargo test`, run first: \
scripts/emulators.sh install && scripts/emulators.sh start && eval \"$(scripts/emulators.sh env)\" \
(and `scripts/emulators.sh stop` when done).";

/// How long [`moto`], [`seaweedfs`] and [`fake_gcs`] wait for a TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An S3-compatible emulator; use it path style (endpoint without the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Server {
    /// Short name for messages: `moto` or `seaweedfs`.
    pub name: &'static str,
    /// Base URL, e.g. `http://127.0.0.1:17150` (plain HTTP: allow it in the client).
    pub endpoint: String,
    /// Access key id to sign with.
    pub access_key_id: String,
    /// Secret access key to sign with.
    pub secret_access_key: String,
    /// Existing bucket shared by all tests; use [`unique_prefix`] inside it.
    pub bucket: String,
    /// Whether the server rejects bad, expired or missing signatures
    /// (SeaweedFS does; moto accepts anything).
    pub checks_signatures: bool,
}

impl S3Server {
    /// A store on [`S3Server::bucket`] signed with this server's
    /// credentials, for writing fixtures and reading back what a backend
    /// wrote; one quick retry, 10 s timeout.
    ///
    /// # Panics
    /// If object_store refuses the configuration.
    pub fn object_store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_bucket_name(&self.bucket)
                .with_region("us-east-1")
                .with_access_key_id(&self.access_key_id)
                .with_secret_access_key(&self.secret_access_key)
                .with_retry(quick_retry())
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_allow_http(true)
                        .with_timeout(Duration::from_secs(10)),
                )
                .build()
                .expect("an S3 store on the emulator"),
        )
    }
}

/// The fake-gcs-server emulator (no authentication at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsServer {
    /// Base URL, e.g. `http://127.0.0.1:17160`.
    pub endpoint: String,
    /// Existing bucket shared by all tests; use [`unique_prefix`] inside it.
    pub bucket: String,
}

/// moto: S3 and STS on one port; any credentials work, signatures are never checked.
///
/// # Panics
/// If a `STORAGE_TEST_*` variable is missing or the endpoint does not accept a
/// TCP connection within 2 s; the message says how to start the emulators.
#[track_caller]
pub fn moto() -> S3Server {
    let server = moto_from(env_var);
    require_reachable(server.name, ENV_MOTO_ENDPOINT, &server.endpoint);
    server
}

/// SeaweedFS: S3 with real SigV4 checking (wrong or expired signatures → 403).
///
/// # Panics
/// As [`moto`].
#[track_caller]
pub fn seaweedfs() -> S3Server {
    let server = seaweedfs_from(env_var);
    require_reachable(server.name, ENV_SEAWEEDFS_ENDPOINT, &server.endpoint);
    server
}

/// Azurite, Microsoft's Azure Blob Storage emulator: checks Shared Key and
/// SAS signatures like Azure, with its well-known development account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzuriteServer {
    /// Blob endpoint without the account, e.g. `http://127.0.0.1:17180`.
    pub endpoint: String,
    /// The development account, `devstoreaccount1`.
    pub account: String,
    /// Its key (public, documented by Microsoft).
    pub key: String,
    /// Existing container shared by all tests; use [`unique_prefix`] inside it.
    pub container: String,
}

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The key of [`AZURITE_ACCOUNT`] (public, in Microsoft's documentation).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl AzuriteServer {
    /// The account's blob service URL (path style): `<endpoint>/<account>`.
    pub fn account_url(&self) -> String {
        format!("{}/{}", self.endpoint.trim_end_matches('/'), self.account)
    }

    /// The endpoint template of the `azure` backend for this server:
    /// `<endpoint>/{account}`.
    pub fn endpoint_template(&self) -> String {
        format!("{}/{{account}}", self.endpoint.trim_end_matches('/'))
    }

    /// A store on [`AzuriteServer::container`] signed with the account key,
    /// for writing fixtures and reading back what a backend wrote; one
    /// quick retry, 10 s timeout.
    ///
    /// # Panics
    /// If object_store refuses the configuration.
    pub fn object_store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(&self.account)
                .with_access_key(&self.key)
                .with_container_name(&self.container)
                .with_endpoint(self.account_url())
                .with_retry(quick_retry())
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_allow_http(true)
                        .with_timeout(Duration::from_secs(10)),
                )
                .build()
                .expect("an Azure store on Azurite"),
        )
    }
}

/// Azurite (Azure Blob Storage), with its development account and the
/// shared container.
///
/// # Panics
/// As [`moto`]: the message says to start it with scripts/emulators.sh start.
#[track_caller]
pub fn azurite() -> AzuriteServer {
    let server = azurite_from(env_var);
    require_reachable("azurite", ENV_AZURITE_ENDPOINT, &server.endpoint);
    server
}

/// The endpoint of the HTTPS Azurite with OAuth (same account and
/// container as [`azurite`]); reach it through [`tls_shim::TlsShim`], as
/// its certificate is self-signed.
///
/// # Panics
/// As [`moto`].
#[track_caller]
pub fn azurite_oauth() -> String {
    let endpoint = require("azurite-oauth", &env_var, ENV_AZURITE_OAUTH_ENDPOINT);
    require_reachable("azurite-oauth", ENV_AZURITE_OAUTH_ENDPOINT, &endpoint);
    endpoint
}

pub use redis::{redis, RedisServer, ENV_REDIS_URL};

/// fake-gcs-server: the GCS JSON API and (read-only for object_store) XML API.
///
/// # Panics
/// As [`moto`].
#[track_caller]
pub fn fake_gcs() -> GcsServer {
    let server = fake_gcs_from(env_var);
    require_reachable("fake-gcs", ENV_GCS_ENDPOINT, &server.endpoint);
    server
}

/// The bytes of a Parquet task file of storage-core's fixtures
/// (`crates/storage-core/tests/fixtures/parquet/`, made by pyarrow with
/// `make_fixtures.py` there).
///
/// # Panics
/// If the file cannot be read, naming it.
pub fn parquet_fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../storage-core/tests/fixtures/parquet/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// One retry within 5 s: tests against local emulators fail fast instead
/// of waiting out object_store's default backoff.
pub fn quick_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
        ..object_store::RetryConfig::default()
    }
}

/// A fresh object-key prefix, `t-<test>-<uuid>`, so tests sharing a bucket never
/// see each other's objects. Characters of `test` other than ASCII letters,
/// digits, `-` and `_` become `-` (so `module_path!()` works too).
pub fn unique_prefix(test: &str) -> String {
    let test: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("t-{test}-{}", uuid::Uuid::new_v4().simple())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[track_caller]
fn moto_from(lookup: impl Fn(&str) -> Option<String>) -> S3Server {
    S3Server {
        name: "moto",
        endpoint: require("moto", &lookup, ENV_MOTO_ENDPOINT),
        access_key_id: "testing".to_owned(),
        secret_access_key: "testing".to_owned(),
        bucket: require("moto", &lookup, ENV_BUCKET),
        checks_signatures: false,
    }
}

#[track_caller]
fn seaweedfs_from(lookup: impl Fn(&str) -> Option<String>) -> S3Server {
    S3Server {
        name: "seaweedfs",
        endpoint: require("seaweedfs", &lookup, ENV_SEAWEEDFS_ENDPOINT),
        access_key_id: require("seaweedfs", &lookup, ENV_SEAWEEDFS_KEY),
        secret_access_key: require("seaweedfs", &lookup, ENV_SEAWEEDFS_SECRET),
        bucket: require("seaweedfs", &lookup, ENV_BUCKET),
        checks_signatures: true,
    }
}

#[track_caller]
fn azurite_from(lookup: impl Fn(&str) -> Option<String>) -> AzuriteServer {
    AzuriteServer {
        endpoint: require("azurite", &lookup, ENV_AZURITE_ENDPOINT),
        account: AZURITE_ACCOUNT.to_owned(),
        key: AZURITE_KEY.to_owned(),
        container: require("azurite", &lookup, ENV_BUCKET),
    }
}

#[track_caller]
fn fake_gcs_from(lookup: impl Fn(&str) -> Option<String>) -> GcsServer {
    GcsServer {
        endpoint: require("fake-gcs", &lookup, ENV_GCS_ENDPOINT),
        bucket: require("fake-gcs", &lookup, ENV_BUCKET),
    }
}

/// The value of `var` (trimmed), panicking when it is missing or blank.
#[track_caller]
fn require(server: &str, lookup: &impl Fn(&str) -> Option<String>, var: &str) -> String {
    match lookup(var) {
        Some(value) if !value.trim().is_empty() => value.trim().to_owned(),
        _ => panic!("{var} is not set, so the {server} tests cannot run. {HOW_TO_START}"),
    }
}

/// Panics unless `endpoint` accepts a TCP connection within [`CONNECT_TIMEOUT`].
#[track_caller]
fn require_reachable(server: &str, var: &str, endpoint: &str) {
    if let Err(why) = connect(endpoint) {
        panic!("{server} at {endpoint} ({var}) is not reachable: {why}. {HOW_TO_START}");
    }
}

fn connect(endpoint: &str) -> Result<(), String> {
    let addrs = socket_addrs(endpoint)?;
    let mut last_error = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = format!("TCP connect to {addr} failed: {e}"),
        }
    }
    Err(last_error)
}

fn socket_addrs(endpoint: &str) -> Result<Vec<SocketAddr>, String> {
    let url = Url::parse(endpoint).map_err(|e| format!("not a URL ({e})"))?;
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| format!("cannot resolve {host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::panic::catch_unwind;

    fn full_env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (ENV_MOTO_ENDPOINT, "http://127.0.0.1:17150"),
            (ENV_SEAWEEDFS_ENDPOINT, "http://127.0.0.1:17130"),
            (ENV_SEAWEEDFS_KEY, "testkey"),
            (ENV_SEAWEEDFS_SECRET, "testsecret"),
            (ENV_GCS_ENDPOINT, "http://127.0.0.1:17160"),
            (ENV_AZURITE_ENDPOINT, "http://127.0.0.1:17180"),
            (ENV_BUCKET, "conformance"),
        ])
    }

    fn lookup(env: HashMap<&'static str, &'static str>) -> impl Fn(&str) -> Option<String> {
        move |name| env.get(name).map(|v| (*v).to_owned())
    }

    fn without(var: &str) -> impl Fn(&str) -> Option<String> {
        let mut env = full_env();
        env.remove(var);
        lookup(env)
    }

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = catch_unwind(f).expect_err("expected a panic");
        match payload.downcast::<String>() {
            Ok(s) => *s,
            Err(payload) => (*payload.downcast::<&str>().unwrap()).to_owned(),
        }
    }

    fn assert_explains_how_to_start(msg: &str) {
        assert!(msg.contains("./scripts/test"), "{msg}");
        assert!(
            msg.contains(
                "scripts/emulators.sh install && scripts/emulators.sh start && \
                 eval \"$(scripts/emulators.sh env)\""
            ),
            "{msg}"
        );
    }

    #[test]
    fn reads_all_servers_from_the_environment() {
        let moto = moto_from(lookup(full_env()));
        assert_eq!(
            moto,
            S3Server {
                name: "moto",
                endpoint: "http://127.0.0.1:17150".into(),
                access_key_id: "testing".into(),
                secret_access_key: "testing".into(),
                bucket: "conformance".into(),
                checks_signatures: false,
            }
        );
        let weed = seaweedfs_from(lookup(full_env()));
        assert_eq!(
            weed,
            S3Server {
                name: "seaweedfs",
                endpoint: "http://127.0.0.1:17130".into(),
                access_key_id: "testkey".into(),
                secret_access_key: "testsecret".into(),
                bucket: "conformance".into(),
                checks_signatures: true,
            }
        );
        let azurite = azurite_from(lookup(full_env()));
        assert_eq!(
            azurite.account_url(),
            "http://127.0.0.1:17180/devstoreaccount1"
        );
        assert_eq!(azurite.container, "conformance");
        let gcs = fake_gcs_from(lookup(full_env()));
        assert_eq!(
            gcs,
            GcsServer {
                endpoint: "http://127.0.0.1:17160".into(),
                bucket: "conformance".into()
            }
        );
    }

    #[test]
    fn every_missing_variable_panics_with_its_name_and_how_to_start() {
        type Read = fn(&str) -> String;
        let cases: [(&str, Read); 9] = [
            (ENV_AZURITE_ENDPOINT, |v| {
                format!("{:?}", azurite_from(without(v)))
            }),
            (ENV_BUCKET, |v| format!("{:?}", azurite_from(without(v)))),
            (ENV_MOTO_ENDPOINT, |v| {
                format!("{:?}", moto_from(without(v)))
            }),
            (ENV_BUCKET, |v| format!("{:?}", moto_from(without(v)))),
            (ENV_SEAWEEDFS_ENDPOINT, |v| {
                format!("{:?}", seaweedfs_from(without(v)))
            }),
            (ENV_SEAWEEDFS_KEY, |v| {
                format!("{:?}", seaweedfs_from(without(v)))
            }),
            (ENV_SEAWEEDFS_SECRET, |v| {
                format!("{:?}", seaweedfs_from(without(v)))
            }),
            (ENV_GCS_ENDPOINT, |v| {
                format!("{:?}", fake_gcs_from(without(v)))
            }),
            (ENV_BUCKET, |v| format!("{:?}", fake_gcs_from(without(v)))),
        ];
        for (var, read) in cases {
            let msg = panic_message(move || {
                read(var);
            });
            assert!(msg.starts_with(&format!("{var} is not set")), "{msg}");
            assert_explains_how_to_start(&msg);
        }
    }

    #[test]
    fn blank_variable_counts_as_missing() {
        let mut env = full_env();
        env.insert(ENV_MOTO_ENDPOINT, "  ");
        let msg = panic_message(move || {
            moto_from(lookup(env));
        });
        assert!(
            msg.contains("STORAGE_TEST_MOTO_ENDPOINT is not set"),
            "{msg}"
        );
    }

    #[test]
    fn reachable_endpoint_passes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        require_reachable("moto", ENV_MOTO_ENDPOINT, &endpoint);
        // A trailing path and `localhost` are fine too.
        let port = listener.local_addr().unwrap().port();
        assert_eq!(connect(&format!("http://localhost:{port}/")), Ok(()));
    }

    #[test]
    fn closed_port_panics_with_how_to_start() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let msg = panic_message(move || {
            require_reachable("seaweedfs", ENV_SEAWEEDFS_ENDPOINT, &endpoint)
        });
        assert!(
            msg.starts_with(&format!(
                "seaweedfs at http://127.0.0.1:{port} (STORAGE_TEST_SEAWEEDFS_ENDPOINT) is not reachable"
            )),
            "{msg}"
        );
        assert_explains_how_to_start(&msg);
    }

    #[test]
    fn malformed_endpoint_panics() {
        let msg =
            panic_message(|| require_reachable("fake-gcs", ENV_GCS_ENDPOINT, "127.0.0.1:17160"));
        assert!(msg.contains("is not reachable"), "{msg}");
        assert_explains_how_to_start(&msg);
    }

    #[test]
    fn unique_prefixes_differ_and_are_key_safe() {
        let a = unique_prefix("list_with_delimiter");
        let b = unique_prefix("list_with_delimiter");
        assert_ne!(a, b);
        assert!(a.starts_with("t-list_with_delimiter-"), "{a}");
        assert_eq!(a.len(), "t-list_with_delimiter-".len() + 32, "{a}");
        let c = unique_prefix("storage_s3::tests/odd name");
        assert!(c.starts_with("t-storage_s3--tests-odd-name-"), "{c}");
    }
}

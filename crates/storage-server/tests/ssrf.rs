//! Hostile storage endpoints (issue 12, findings 1 to 3): an endpoint that
//! lists normally but redirects object and listing requests to internal
//! addresses, keyless storages and the machine's identity (instance
//! metadata, the server's own keys), and stored secrets sent to a new
//! endpoint.
//!
//! The strict-mode tests need an endpoint the policy takes for public and
//! an "internal" target it refuses. They run inside a network namespace of
//! their own (`unshare -rn`: loopback only, nothing leaves the machine): the
//! test binary re-executes itself there, where `203.0.113.5` (the attacker,
//! accepted with `--allow-endpoint-network 203.0.113.5/32`, no real public
//! address) and `169.254.169.254` (the metadata service) are bound on `lo`,
//! and the internal target listens on `127.0.0.1`.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_core::{Backend, EndpointPolicy};
use storage_gcs::{GcsBackend, GcsOptions};
use storage_s3::{S3Backend, S3Options};
use support::buckets::no_retry_s3;
use support::{envelope, fast_runner, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set in the re-executed test binary inside the namespace.
const INNER: &str = "STORAGE_SSRF_TEST_INNER";
/// The attacker's "public" address, bound on the namespace's `lo`.
const ATTACKER_IP: &str = "203.0.113.5";
/// What the internal target answers; never in any answer of the server.
const INTERNAL: &str = "INTERNAL-SECRET";

/// How a listener answers a request, from its method and path with query.
type Answer = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// A listener that records the head of every request it gets.
#[derive(Clone)]
struct Recorder {
    base: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(addr: &str, answer: Answer) -> Self {
        let socket = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base = format!("http://{}", socket.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                let (answer, recorded) = (answer.clone(), recorded.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    recorded.lock().unwrap().push(head.clone());
                    let mut line = head.lines().next().unwrap_or_default().split(' ');
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    let mut reply = answer(method, path);
                    if method == "HEAD" {
                        reply = reply.split("\r\n\r\n").next().unwrap().to_string() + "\r\n\r\n";
                    }
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { base, heads }
    }

    fn hits(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    fn heads(&self) -> String {
        self.heads.lock().unwrap().join("\n")
    }
}

fn ok(body: &str, content_type: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         last-modified: Mon, 01 Jan 2024 00:00:00 GMT\r\netag: \"e1\"\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn redirect(to: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

fn listing(bucket: &str, keys: &[&str]) -> String {
    let contents: String = keys
        .iter()
        .map(|key| {
            format!(
                "<Contents><Key>{key}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>\
                 <ETag>\"e1\"</ETag><Size>40</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        })
        .collect();
    ok(
        &format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{bucket}</Name><Prefix></Prefix>\
             <KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{contents}\
             </ListBucketResult>",
            keys.len()
        ),
        "application/xml",
    )
}

/// The internal target: a JSON task list, so that a followed redirect
/// would become a task.
async fn internal_target() -> Recorder {
    Recorder::start(
        "127.0.0.1:0",
        Arc::new(|_, _| {
            ok(
                &format!("[{{\"text\": \"{INTERNAL}\"}}]"),
                "application/json",
            )
        }),
    )
    .await
}

/// The attacker's S3: bucket `bkt` lists `task.json` and redirects every
/// object request (and listings under `redir`) to `target`; bucket `pub`
/// serves `obj.txt` as `PUBLIC`.
async fn attacker(target: &str) -> Recorder {
    let target = target.to_string();
    Recorder::start(
        &format!("{ATTACKER_IP}:0"),
        Arc::new(move |_, path| {
            let internal = format!("{target}/latest/meta-data/");
            if path.starts_with("/pub/") {
                ok("PUBLIC", "text/plain")
            } else if path.starts_with("/pub") {
                listing("pub", &["obj.txt"])
            } else if path.contains("list-type") && path.contains("prefix=redir") {
                redirect(&internal)
            } else if path.contains("list-type") {
                listing("bkt", &["task.json"])
            } else {
                redirect(&internal)
            }
        }),
    )
    .await
}

/// The metadata service on `169.254.169.254:80` (IMDSv2), handing out
/// credentials anyone would recognise.
async fn metadata_service() -> Recorder {
    Recorder::start(
        "169.254.169.254:80",
        Arc::new(|method, path| {
            if method == "PUT" {
                ok("IMDSTOKEN", "text/plain")
            } else if path.ends_with("/security-credentials/") {
                ok("role", "text/plain")
            } else {
                ok(
                    r#"{"Code":"Success","AccessKeyId":"ASIAMETADATAKEY","SecretAccessKey":"metadata-secret","Token":"METADATATOKEN","Expiration":"2099-01-01T00:00:00Z"}"#,
                    "application/json",
                )
            }
        }),
    )
    .await
}

/// Strict policy, with only the attacker's address let through.
fn strict() -> EndpointPolicy {
    EndpointPolicy::strict().with_allowed_network(ATTACKER_IP.parse().unwrap(), 32)
}

async fn server(options: S3Options) -> Server {
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(S3Backend::new(options))];
    Server::start_with(tempfile::tempdir().unwrap(), fast_runner(), backends).await
}

/// The resolve URL of `uri` through the first task of `project`, after
/// importing a task that points at it.
async fn resolve_path(server: &Server, project: i64, uri: &str) -> String {
    let (status, answer) = server
        .post(
            &format!("/api/projects/{project}/import"),
            json!([{"image": uri}]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (_, tasks) = server.get(&format!("/api/tasks?project={project}")).await;
    let task = tasks["tasks"][0]["id"].as_i64().unwrap();
    format!("/tasks/{task}/resolve/?fileuri={}", URL_SAFE.encode(uri))
}

/// Finding 1: Tasks-mode sync, `/resolve` with presign off and validate
/// never follow the attacker's redirects to the internal target.
async fn redirects_never_reach_internal_addresses() {
    let internal = internal_target().await;
    let attacker = attacker(&internal.base).await;
    let server = server(no_retry_s3(strict())).await;
    let project = server.project().await;
    let keys = json!({"aws_access_key_id": "AKIAUSERKEY", "aws_secret_access_key": "user-secret"});
    let storage = |extra: Value| {
        let mut body = json!({"project": project, "bucket": "bkt", "s3_endpoint": attacker.base,
                              "use_blob_urls": false, "presign": false});
        body.as_object_mut()
            .unwrap()
            .extend(keys.as_object().unwrap().clone());
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    let path = server
        .create_storage("/api/storages/s3", storage(json!({})))
        .await;
    let synced = server.sync_and_wait(&path).await;
    let (_, tasks) = server.get(&format!("/api/tasks?project={project}")).await;
    assert!(
        !tasks.to_string().contains(INTERNAL),
        "a redirect became a task: {tasks}"
    );
    assert!(!synced.to_string().contains(INTERNAL), "{synced}");

    let resolve = resolve_path(&server, project, "s3://bkt/task.json").await;
    let (status, _, text) = server.call_text(Method::GET, &resolve, None).await;
    assert_ne!(status, StatusCode::OK, "{text}");
    assert!(
        !text.contains(INTERNAL),
        "/resolve streamed the internal answer: {text}"
    );

    let (status, answer) = server
        .post(
            "/api/storages/s3/validate",
            storage(json!({"prefix": "redir"})),
        )
        .await;
    envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(!answer.to_string().contains(INTERNAL), "{answer}");

    assert!(
        attacker.hits() >= 3,
        "the attacker was asked: {}",
        attacker.heads()
    );
    assert_eq!(
        internal.hits(),
        0,
        "the server followed a redirect:\n{}",
        internal.heads()
    );
}

/// Findings 2 and 3: a keyless storage (presign on) never asks the
/// metadata service, never carries the server's keys to a user's endpoint
/// (even with --keyless-s3-server-credentials), and `/resolve` streams its
/// objects instead of redirecting with a credential.
async fn keyless_storages_borrow_no_identity() {
    let internal = internal_target().await;
    let metadata = metadata_service().await;
    let attacker = attacker(&internal.base).await;
    for opted_in in [false, true] {
        let options = no_retry_s3(strict())
            .with_server_credentials("AKIASERVERKEY", "server-secret", Some("SERVERTOKEN".into()))
            .with_keyless_server_credentials(opted_in);
        let server = server(options).await;
        let project = server.project().await;
        server
            .create_storage(
                "/api/storages/s3",
                json!({"project": project, "bucket": "pub", "s3_endpoint": attacker.base,
                       "use_blob_urls": true, "presign": true}),
            )
            .await;
        let resolve = resolve_path(&server, project, "s3://pub/obj.txt").await;
        let (status, headers, text) = server.call_text(Method::GET, &resolve, None).await;
        let location = format!("{:?}", headers.get("location"));
        for credential in [
            "ASIAMETADATAKEY",
            "METADATATOKEN",
            "AKIASERVERKEY",
            "SERVERTOKEN",
        ] {
            assert!(
                !location.contains(credential),
                "opted in {opted_in}: {location}"
            );
        }
        assert_eq!(
            status,
            StatusCode::OK,
            "opted in {opted_in}: streamed, not signed: {text}"
        );
        assert_eq!(text, "PUBLIC");
    }
    // A keyless `gcs` storage on the operator's GCS endpoint: no ADC, no
    // metadata server, no signed URL.
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(GcsBackend::new(
        GcsOptions::new()
            .with_endpoint_policy(strict())
            .with_base_url(url::Url::parse(&attacker.base).unwrap())
            .with_timeout(Duration::from_secs(5)),
    ))];
    let server = Server::start_with(tempfile::tempdir().unwrap(), fast_runner(), backends).await;
    let project = server.project().await;
    server
        .create_storage(
            "/api/storages/gcs",
            json!({"project": project, "bucket": "pub", "use_blob_urls": true, "presign": true}),
        )
        .await;
    let resolve = resolve_path(&server, project, "gs://pub/obj.txt").await;
    let (status, headers, text) = server.call_text(Method::GET, &resolve, None).await;
    assert!(headers.get("location").is_none(), "{headers:?}");
    assert_eq!((status, text.as_str()), (StatusCode::OK, "PUBLIC"));
    assert_eq!(
        metadata.hits(),
        0,
        "the metadata service was asked:\n{}",
        metadata.heads()
    );
    let heads = attacker.heads();
    assert!(!heads.is_empty());
    assert!(
        !heads.contains("AKIASERVERKEY"),
        "the server's keys went to the user's endpoint:\n{heads}"
    );
    assert!(!heads.contains("SERVERTOKEN"), "{heads}");
    assert_eq!(internal.hits(), 0);
}

/// Runs the namespace tests inside `unshare -rn`, or (inside) the tests.
#[test]
fn hostile_endpoints_in_a_network_namespace() {
    if std::env::var_os(INNER).is_some() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            redirects_never_reach_internal_addresses().await;
            keyless_storages_borrow_no_identity().await;
        });
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let setup = format!(
        "ip addr add {ATTACKER_IP}/32 dev lo && ip addr add 169.254.169.254/32 dev lo \
         && ip link set lo up && exec \"$0\" \"$@\""
    );
    let output = std::process::Command::new("unshare")
        .args(["-rn", "sh", "-c", &setup])
        .arg(&exe)
        .args([
            "--exact",
            "hostile_endpoints_in_a_network_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run unshare ({e}): these tests need util-linux's unshare and iproute2's ip"
            )
        });
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the tests in the network namespace failed (they need unprivileged user and network \
         namespaces: `unshare -rn true` must work):\n{log}"
    );
    assert!(log.contains("1 passed"), "{log}");
}

/// Finding 3: a changed endpoint (PATCH, validate with `id`) needs the
/// stored secrets again; the new endpoint is never contacted without them.
#[tokio::test]
async fn a_new_endpoint_needs_the_secrets_again() {
    let honest = Recorder::start(
        "127.0.0.1:0",
        Arc::new(|_, path| {
            if path.contains("list-type") {
                listing("bkt", &["a.txt"])
            } else {
                ok("a", "text/plain")
            }
        }),
    )
    .await;
    let new_endpoint = internal_target().await;
    let server = server(no_retry_s3(EndpointPolicy::allow_private())).await;
    let project = server.project().await;
    let path = server
        .create_storage(
            "/api/storages/s3",
            json!({"project": project, "bucket": "bkt", "s3_endpoint": honest.base,
                   "aws_access_key_id": "AKIASTOREDKEY", "aws_secret_access_key": "stored-secret"}),
        )
        .await;
    let id = support::storage_id(&path);
    let secrets = ["aws_access_key_id", "aws_secret_access_key"];
    for (status, answer) in [
        server
            .patch(&path, json!({"s3_endpoint": new_endpoint.base}))
            .await,
        server
            .post(
                "/api/storages/s3/validate",
                json!({"id": id, "project": project, "s3_endpoint": new_endpoint.base}),
            )
            .await,
    ] {
        let errors = envelope(status, &answer, StatusCode::BAD_REQUEST);
        for field in secrets {
            let message = errors[field][0]
                .as_str()
                .unwrap_or_else(|| panic!("{answer}"));
            assert!(message.contains("s3_endpoint"), "{message}");
        }
    }
    assert_eq!(
        new_endpoint.hits(),
        0,
        "stored secrets went to the new endpoint:\n{}",
        new_endpoint.heads()
    );
    let (_, detail) = server.get(&path).await;
    assert_eq!(detail["s3_endpoint"], honest.base.as_str(), "{detail}");

    // Sent again, they pass the check (the endpoint then answers for itself).
    let (status, answer) = server
        .patch(
            &path,
            json!({"s3_endpoint": new_endpoint.base, "aws_access_key_id": "AKIANEWKEY",
                   "aws_secret_access_key": "new-secret"}),
        )
        .await;
    assert!(
        answer
            .get("validation_errors")
            .is_none_or(|e| e.get("aws_access_key_id").is_none()),
        "{status} {answer}"
    );
    // Other fields still keep the stored secrets without repeating them.
    let (status, answer) = server.patch(&path, json!({"title": "renamed"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

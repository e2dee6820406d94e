//! `databricks` storages (Unity Catalog volumes through the Files API) over
//! the server's HTTP API, against the Files API double of
//! `storage_testing::databricks_double` (small pages, a `429` with
//! `Retry-After` every few requests, JSON errors, OAuth M2M).
//!
//! The shared HTTP conformance cases run except the presign redirect:
//! Databricks objects are always proxied (`presign=true` is proxied too,
//! see `proxied_even_with_presign`).

#![allow(clippy::unwrap_used)]

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use object_store::ObjectStoreExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::{Backend, EndpointPolicy};
use storage_databricks::{DatabricksBackend, DatabricksOptions};
use storage_testing::conformance::Seed;
use storage_testing::databricks_double::DatabricksDouble;
use storage_testing::unique_prefix;
use support::{envelope, Server, TOKEN};

const PAT: &str = "dapi-server-test-token";
const CLIENT: &str = "sp-0001";
const SECRET: &str = "dose-server-test-secret";

async fn double() -> DatabricksDouble {
    DatabricksDouble::builder()
        .volume("main", "default", "conformance")
        .pat(PAT)
        .client(CLIENT, SECRET)
        .denied_pat("dapi-no-grants")
        .page_size(4)
        .throttle_every(9, 0)
        .start()
        .await
}

fn options(policy: EndpointPolicy) -> DatabricksOptions {
    DatabricksOptions::new()
        .with_endpoint_policy(policy)
        .with_timeout(Duration::from_secs(10))
}

async fn dbx_bucket(case: &str) -> conformance::Bucket {
    let double = double().await;
    conformance::Bucket {
        backend: Arc::new(DatabricksBackend::new(options(
            EndpointPolicy::allow_private(),
        ))),
        storage_type: "databricks",
        scheme: "dbx",
        bucket: "conformance".into(),
        connection: json!({"host": double.host(), "catalog": "main", "schema": "default", "token": PAT}),
        seed: Seed::new(
            double.volume_store("main", "default", "conformance"),
            unique_prefix(&format!("databricks-{case}")),
        ),
        expiry_param: "",
        guards: vec![Box::new(double)],
    }
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let bucket = dbx_bucket(stringify!($case)).await;
                conformance::$case(&bucket).await;
            }
        )*
    };
}

cases!(
    files_mode_filters_prefix_regex_and_recursion,
    tasks_mode_reads_every_format_and_reports_bad_files,
    tasks_mode_reads_parquet_row_groups,
    resync_creates_nothing_new,
    export_writes_overwrites_and_deletes,
    proxy_streams_with_range_and_etag,
    resolver_refuses_what_it_cannot_resolve,
    validation_explains_missing_bucket_and_empty_prefix,
);

async fn server_with(policy: EndpointPolicy) -> Server {
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(DatabricksBackend::new(options(policy)))];
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        backends,
    )
    .await
}

fn body(project: i64, double: &DatabricksDouble, extra: Value) -> Value {
    let mut body = json!({
        "project": project, "host": double.host(), "catalog": "main", "schema": "default",
        "volume": "conformance", "token": PAT,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// Created, shown without its token, listed with the Enterprise title,
/// routed with and without the slash.
#[tokio::test]
async fn create_and_get_without_secrets() {
    let double = double().await;
    let files = double.volume_store("main", "default", "conformance");
    let prefix = unique_prefix("dbx-create");
    files
        .put(&format!("{prefix}/a.txt").into(), "a".into())
        .await
        .unwrap();
    let server = server_with(EndpointPolicy::allow_private()).await;
    let project = server.project().await;
    let path = server
        .create_storage(
            "/api/storages/databricks",
            body(
                project,
                &double,
                json!({"prefix": prefix, "use_blob_urls": true}),
            ),
        )
        .await;
    let (status, shown) = server.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["type"], "databricks");
    assert_eq!(shown["catalog"], "main");
    assert_eq!(shown["schema"], "default");
    assert_eq!(shown["auth_type"], "pat");
    assert!(shown.get("token").is_none(), "{shown}");
    assert!(!shown.to_string().contains(PAT), "{shown}");
    for path in ["/api/storages/types", "/api/storages/export/types"] {
        let (_, types) = server.get(path).await;
        assert!(
            types.as_array().unwrap().iter().any(
                |t| t["name"] == "databricks" && t["title"] == "Databricks Files (UC Volumes)"
            ),
            "{types}"
        );
    }
    for path in [
        "/api/storages/databricks",
        "/api/storages/databricks/",
        "/api/storages/export/databricks",
        "/api/storages/export/databricks/",
    ] {
        let (status, list) = server.get(&format!("{path}?project={project}")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {list}");
    }
}

/// What is wrong, in words, naming the field; never the token.
#[tokio::test]
async fn validation_errors_name_the_field() {
    let double = double().await;
    let server = server_with(EndpointPolicy::allow_private()).await;
    let project = server.project().await;
    let validate = |extra: Value| {
        let server = &server;
        let body = body(project, &double, extra);
        async move {
            let (status, answer) = server.post("/api/storages/databricks/validate", body).await;
            (envelope(status, &answer, StatusCode::BAD_REQUEST), answer)
        }
    };
    let (said, answer) = validate(json!({"token": null})).await;
    assert!(
        said["token"][0]
            .as_str()
            .unwrap()
            .contains("auth_type is pat"),
        "{answer}"
    );
    let (said, answer) = validate(json!({"auth_type": "dbx_sp", "token": null})).await;
    assert!(
        said["client_id"][0].is_string() && said["client_secret"][0].is_string(),
        "{answer}"
    );
    let (said, answer) = validate(json!({"host": null})).await;
    assert!(said["host"][0].is_string(), "{answer}");

    let (said, answer) = validate(json!({"token": "dapi-wrong-token"})).await;
    assert!(said["token"][0].is_string(), "{answer}");
    assert!(
        said["non_field_errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Databricks rejected the token"),
        "{answer}"
    );
    assert!(!answer.to_string().contains("dapi-wrong-token"), "{answer}");

    let (said, answer) = validate(json!({"volume": "nope"})).await;
    let message = said["non_field_errors"][0].as_str().unwrap();
    assert!(
        message.contains("Volume or prefix not found")
            && message.contains("catalog main, schema default, volume nope"),
        "{answer}"
    );

    let (said, answer) = validate(json!({"token": "dapi-no-grants"})).await;
    assert!(
        said["non_field_errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Access denied to volume main.default.conformance (403 Forbidden)"),
        "{answer}"
    );

    let (said, answer) = validate(json!({"auth_type": "dbx_sp", "token": null, "client_id": CLIENT, "client_secret": "not-it"})).await;
    assert!(said["client_secret"][0].is_string(), "{answer}");
    assert!(!answer.to_string().contains("not-it"), "{answer}");
}

/// The endpoint policy refuses a workspace on a private address before
/// any request is sent.
#[tokio::test]
async fn private_hosts_are_refused() {
    let double = double().await;
    let server = server_with(EndpointPolicy::strict()).await;
    let project = server.project().await;
    let (status, answer) = server
        .post(
            "/api/storages/databricks",
            body(project, &double, json!({})),
        )
        .await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(said["host"][0].is_string(), "{answer}");
    assert_eq!(double.api_calls(), 0);
}

/// A create and three syncs of an OAuth M2M storage take one token.
#[tokio::test]
async fn create_and_three_syncs_take_one_token() {
    let double = double().await;
    let files = double.volume_store("main", "default", "conformance");
    let prefix = unique_prefix("dbx-tokens");
    for i in 0..10 {
        files
            .put(&format!("{prefix}/{i}.txt").into(), "t".into())
            .await
            .unwrap();
    }
    let server = server_with(EndpointPolicy::allow_private()).await;
    let project = server.project().await;
    let path = server
        .create_storage(
            "/api/storages/databricks",
            body(
                project,
                &double,
                json!({"auth_type": "dbx_sp", "token": null, "client_id": CLIENT,
                       "client_secret": SECRET, "prefix": prefix, "use_blob_urls": true}),
            ),
        )
        .await;
    for _ in 0..3 {
        let done = server.sync_and_wait(&path).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let (_, shown) = server.get(&path).await;
    assert!(shown.get("client_secret").is_none(), "{shown}");
    assert!(!shown.to_string().contains(SECRET));
    assert_eq!(
        double.token_calls(),
        1,
        "token requests for create + 3 syncs"
    );
    assert!(double.throttled() > 0, "429s were retried");
}

/// `presign=true` is accepted and ignored: the resolver streams the object
/// (Range included) instead of redirecting.
#[tokio::test]
async fn proxied_even_with_presign() {
    let double = double().await;
    let files = double.volume_store("main", "default", "conformance");
    let prefix = unique_prefix("dbx-presign");
    files
        .put(
            &format!("{prefix}/clip.bin").into(),
            "0123456789abcdef".into(),
        )
        .await
        .unwrap();
    let server = server_with(EndpointPolicy::allow_private()).await;
    let project = server.project().await;
    let path = server
        .create_storage(
            "/api/storages/databricks",
            body(
                project,
                &double,
                json!({"prefix": prefix, "use_blob_urls": true, "presign": true, "presign_ttl": 15}),
            ),
        )
        .await;
    server.sync_and_wait(&path).await;
    let (_, tasks) = server
        .get(&format!("/api/tasks?project={project}&resolve_uri=true"))
        .await;
    let task = &tasks["tasks"][0];
    let uri = format!("dbx://Volumes/main/default/conformance/{prefix}/clip.bin");
    let url = format!(
        "/tasks/{}/resolve/?fileuri={}",
        task["id"],
        base64::engine::general_purpose::URL_SAFE.encode(&uri)
    );
    assert_eq!(task["data"]["image"], url);
    let part = server
        .client
        .get(server.url(&url))
        .header("Authorization", format!("Token {TOKEN}"))
        .header("Range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 10-15/16");
    assert_eq!(part.bytes().await.unwrap(), "abcdef");
    assert!(double
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.range.as_deref() == Some("bytes=10-15")));
}

#[tokio::test]
async fn validation_report_names_a_token_without_grants() {
    let double = double().await;
    let server = server_with(EndpointPolicy::allow_private()).await;
    let project = server.project().await;
    let (status, report) = server
        .post(
            "/api/storages/export/databricks/validate?report=true",
            body(project, &double, json!({"can_delete_objects": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        support::report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "write=passed",
            "delete=passed"
        ],
        "{report}"
    );
    let (_, report) = server
        .post(
            "/api/storages/databricks/validate?report=true",
            body(project, &double, json!({"token": "dapi-no-grants"})),
        )
        .await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(
        support::report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=failed",
            "read=skipped",
            "presign=skipped"
        ],
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("Access denied to volume main.default.conformance"),
        "{report}"
    );
    assert!(!report.to_string().contains("dapi-no-grants"), "{report}");
}

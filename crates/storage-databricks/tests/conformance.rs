//! The bucket conformance suite (`storage_testing::conformance`) for
//! `databricks`, against the Files API double of `storage-testing` (paging
//! with small pages, inclusive ranges, JSON errors, a `429` with
//! `Retry-After` every few requests), through [`FilesApiStore`].

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde_json::json;
use storage_core::{Backend, EndpointPolicy, Settings, StorageKind};
use storage_databricks::{DatabricksBackend, DatabricksOptions};
use storage_testing::conformance::{
    run_export_suite, run_import_suite, BucketSuite, RejectedCredentials, Seed,
};
use storage_testing::databricks_double::DatabricksDouble;
use storage_testing::entra_double::EntraDouble;
use storage_testing::unique_prefix;

const PAT: &str = "dapi-conformance-token";
const WRONG: &str = "dapi-not-the-token";
const CLIENT: &str = "sp-application-id";
const SECRET: &str = "dose-oauth-secret";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn options() -> DatabricksOptions {
    DatabricksOptions::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_timeout(Duration::from_secs(10))
}

async fn double() -> DatabricksDouble {
    DatabricksDouble::builder()
        .volume("main", "default", "conformance")
        .pat(PAT)
        .client(CLIENT, SECRET)
        .page_size(3)
        .throttle_every(7, 0)
        .accept_entra_tokens()
        .start()
        .await
}

async fn suite(case: &str) -> BucketSuite {
    let double = double().await;
    BucketSuite {
        name: "databricks on the Files API double".into(),
        backend: Arc::new(DatabricksBackend::new(options())),
        bucket: "conformance".into(),
        connection: json!({
            "host": double.host(), "catalog": "main", "schema": "default", "token": PAT,
        }),
        seed: Seed::new(
            double.volume_store("main", "default", "conformance"),
            unique_prefix(&format!("databricks-{case}")),
        ),
        rejected_credentials: Some(RejectedCredentials {
            fields: json!({ "token": WRONG }),
            says: "Databricks rejected the token",
            secret: Some(WRONG),
        }),
        guards: vec![Box::new(double)],
    }
}

#[tokio::test]
async fn files_api_double_imports() {
    run_import_suite(&suite("import").await).await;
}

#[tokio::test]
async fn files_api_double_exports() {
    run_export_suite(&suite("export").await).await;
}

fn settings(backend: &DatabricksBackend, body: serde_json::Value) -> Settings {
    let specs = backend.fields(StorageKind::Import);
    let mut settings = Settings::defaults(&specs);
    settings.apply(&specs, body.as_object().unwrap()).unwrap();
    backend
        .check_settings(StorageKind::Import, &mut settings)
        .unwrap();
    settings
}

/// OAuth M2M: one token request for many storages and listings, the
/// secret sent as HTTP Basic only, never on the Files API.
#[tokio::test]
async fn oauth_m2m_token_is_cached_and_reused() {
    let double = double().await;
    let files = double.volume_store("main", "default", "conformance");
    for i in 0..12 {
        files
            .put(&Path::from(format!("m2m/{i:02}.txt")), "x".into())
            .await
            .unwrap();
    }
    let backend = DatabricksBackend::new(options());
    let body = json!({
        "host": double.host(), "catalog": "main", "schema": "default", "volume": "conformance",
        "auth_type": "dbx_sp", "client_id": CLIENT, "client_secret": SECRET, "prefix": "m2m",
    });
    for _ in 0..3 {
        let source = backend
            .import_storage(&settings(&backend, body.clone()))
            .await
            .unwrap();
        source.check_connection().await.unwrap();
        let listed: Vec<_> = source.list().try_collect().await.unwrap();
        assert_eq!(listed.len(), 12);
    }
    assert_eq!(double.token_calls(), 1, "the token is cached per identity");
    let requests = double.requests();
    let api: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/api/2.0/fs/"))
        .collect();
    assert!(api.len() > 12, "pages of 3 entries: {}", api.len());
    let bearer: std::collections::HashSet<_> =
        api.iter().map(|r| r.authorization.clone()).collect();
    assert_eq!(bearer.len(), 1, "one token on every request: {bearer:?}");
    assert!(bearer
        .iter()
        .all(|b| b.as_deref().unwrap().starts_with("Bearer dbx-oauth-")));
    assert!(double.throttled() > 0, "429s were answered and retried");

    let mut wrong = body.clone();
    wrong["client_secret"] = json!("not-the-secret");
    let source = backend
        .import_storage(&settings(&backend, wrong))
        .await
        .unwrap();
    let err = source.check_connection().await.unwrap_err();
    assert!(
        matches!(&err, storage_core::Error::CredentialsRejected { fields, .. } if fields.contains(&"client_secret".to_string())),
        "{err:?}"
    );
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
}

/// Entra service principal for Azure Databricks: the token comes from the
/// authority host with the Azure Databricks scope.
#[tokio::test]
async fn azure_ad_service_principal_gets_an_entra_token() {
    let double = double().await;
    let entra = EntraDouble::builder()
        .tenant(TENANT)
        .client(CLIENT, SECRET)
        .scope(storage_databricks::AZURE_DATABRICKS_SCOPE)
        .start()
        .await;
    let files = double.volume_store("main", "default", "conformance");
    files
        .put(&Path::from("entra/a.json"), "{}".into())
        .await
        .unwrap();
    let backend = DatabricksBackend::new(options().with_authority_host(entra.authority()));
    let body = json!({
        "host": double.host(), "catalog": "main", "schema": "default", "volume": "conformance",
        "auth_type": "azure_ad_sp", "tenant_id": TENANT, "client_id": CLIENT,
        "client_secret": SECRET, "prefix": "entra",
    });
    for _ in 0..2 {
        let source = backend
            .import_storage(&settings(&backend, body.clone()))
            .await
            .unwrap();
        source.check_connection().await.unwrap();
    }
    assert_eq!(entra.tokens_issued(), 1);
    let mut wrong = body;
    wrong["client_secret"] = json!("bad-secret");
    let source = backend
        .import_storage(&settings(&backend, wrong))
        .await
        .unwrap();
    let err = source.check_connection().await.unwrap_err().to_string();
    assert!(
        err.contains("Microsoft Entra rejected the client secret"),
        "{err}"
    );
}

/// `Retry-After` is waited for: a throttled request succeeds after the
/// wait the double asked for.
#[tokio::test]
async fn retry_after_is_honoured() {
    let double = DatabricksDouble::builder()
        .volume("main", "default", "v")
        .pat(PAT)
        .throttle_every(2, 1)
        .start()
        .await;
    double
        .volume_store("main", "default", "v")
        .put(&Path::from("a.txt"), "hello".into())
        .await
        .unwrap();
    let backend = DatabricksBackend::new(options());
    let body = json!({
        "host": double.host(), "catalog": "main", "schema": "default", "volume": "v", "token": PAT,
    });
    let source = backend
        .import_storage(&settings(&backend, body))
        .await
        .unwrap();
    let store = source.store();
    let started = Instant::now();
    let first = store
        .get(&Path::from("a.txt"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let second = store
        .get(&Path::from("a.txt"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!((&first[..], &second[..]), (&b"hello"[..], &b"hello"[..]));
    assert_eq!(double.throttled(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let ranged = store.get_range(&Path::from("a.txt"), 1..4).await.unwrap();
    assert_eq!(&ranged[..], b"ell");
    assert!(double
        .requests()
        .iter()
        .any(|r| r.range.as_deref() == Some("bytes=1-3")));
}

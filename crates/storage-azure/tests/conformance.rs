//! The bucket conformance suite (`storage_testing::conformance`) against
//! Azurite, which checks Shared Key and SAS signatures as Azure does: the
//! suite's signed URLs are fetched back from Azurite and byte-compared.
//! Fails, saying how to start it, when the emulator is not running.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde_json::json;
use storage_azure::{AzureBackend, AzureOptions};
use storage_core::{Backend, EndpointPolicy, Settings, StorageKind};
use storage_testing::conformance::{
    run_export_suite, run_import_suite, BucketSuite, RejectedCredentials, Seed,
};
use storage_testing::{azurite, unique_prefix, AzuriteServer};

/// A key Azurite does not know (valid base64, 64 bytes).
const WRONG_KEY: &str =
    "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3I=";

fn backend(server: &AzuriteServer) -> AzureBackend {
    AzureBackend::new(
        AzureOptions::new()
            .with_endpoint(server.endpoint_template())
            .with_endpoint_policy(EndpointPolicy::allow_private())
            .with_retry(storage_testing::quick_retry())
            .with_timeout(Duration::from_secs(10)),
    )
}

fn suite(case: &str) -> BucketSuite {
    let server = azurite();
    BucketSuite {
        name: "azure on azurite".into(),
        backend: Arc::new(backend(&server)),
        bucket: server.container.clone(),
        connection: json!({"account_name": server.account, "account_key": server.key}),
        seed: Seed::new(
            server.object_store(),
            unique_prefix(&format!("azure-{case}")),
        ),
        rejected_credentials: Some(RejectedCredentials {
            fields: json!({ "account_key": WRONG_KEY }),
            says: "Azure rejected the account key",
            secret: Some(WRONG_KEY),
        }),
        guards: Vec::new(),
    }
}

#[tokio::test]
async fn azurite_imports() {
    run_import_suite(&suite("import")).await;
}

#[tokio::test]
async fn azurite_exports() {
    run_export_suite(&suite("export")).await;
}

fn settings(server: &AzuriteServer, kind: StorageKind, extra: serde_json::Value) -> Settings {
    let backend = backend(server);
    let specs = backend.fields(kind);
    let mut settings = Settings::defaults(&specs);
    let mut body = json!({
        "container": server.container,
        "account_name": server.account,
        "account_key": server.key,
    });
    body.as_object_mut()
        .expect("an object")
        .extend(extra.as_object().cloned().unwrap_or_default());
    settings
        .apply(&specs, body.as_object().expect("an object"))
        .expect("valid fields");
    backend
        .check_settings(kind, &mut settings)
        .expect("valid settings");
    settings
}

/// Zero-byte `dir/` blobs (what tools that emulate folders write) are not
/// tasks, in a recursive scan from the container root or under a prefix;
/// an ordinary empty file is.
#[tokio::test]
async fn folder_placeholders_never_become_tasks() {
    let server = azurite();
    let root = unique_prefix("azure-markers");
    for (name, body) in [
        (format!("{root}/"), ""),
        (format!("{root}/dir/"), ""),
        (format!("{root}/dir/a.txt"), "a"),
        (format!("{root}/empty-folder/"), ""),
        (format!("{root}/empty.txt"), ""),
    ] {
        raw_put(&server, &name, body).await;
    }
    let backend = backend(&server);
    for prefix in [json!(root), json!(format!("{root}/"))] {
        let source = backend
            .import_storage(&settings(
                &server,
                StorageKind::Import,
                json!({"prefix": prefix, "recursive_scan": true, "use_blob_urls": true}),
            ))
            .await
            .expect("an import storage");
        let keys: Vec<String> = storage_core::import::importable(source.as_ref())
            .map(|item| item.expect("listing").0)
            .collect::<Vec<_>>()
            .await;
        assert_eq!(
            keys,
            vec![format!("{root}/dir/a.txt"), format!("{root}/empty.txt")],
            "prefix {prefix}"
        );
    }
}

/// Writes a blob; a name object_store cannot express (a trailing `/`)
/// goes through Azurite's REST API with a write SAS made by hand.
async fn raw_put(server: &AzuriteServer, name: &str, body: &str) {
    if !name.ends_with('/') {
        server
            .object_store()
            .put(&Path::from(name), body.to_string().into())
            .await
            .expect("put");
        return;
    }
    let url = storage_azure::signer::BlobSas {
        account_url: &server.account_url(),
        account: &server.account,
        key: &base64_key(&server.key),
        container: &server.container,
        blob: name,
    }
    .write_url(chrono::Utc::now() + chrono::Duration::minutes(5))
    .expect("a write SAS");
    let response = reqwest::Client::new()
        .put(url)
        .header("x-ms-blob-type", "BlockBlob")
        .header("content-length", "0")
        .send()
        .await
        .expect("PUT a placeholder");
    assert!(response.status().is_success(), "{}", response.status());
}

fn base64_key(key: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64")
}

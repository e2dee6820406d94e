//! The bucket conformance suite (`storage_testing::conformance`) against
//! fake-gcs-server, through the test kit's write adapter (fake-gcs refuses
//! the XML API uploads object_store sends). Fails, saying how to start it,
//! when the emulator is not running.

use std::sync::Arc;
use std::time::Duration;

use storage_core::EndpointPolicy;
use storage_gcs::{GcsBackend, GcsOptions};
use storage_testing::conformance::{run_export_suite, run_import_suite, BucketSuite, Seed};
use storage_testing::gcs_shim::{GcsShim, TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM};
use storage_testing::unique_prefix;

async fn suite(case: &str) -> BucketSuite {
    let emulator = storage_testing::fake_gcs();
    let shim = GcsShim::start(&emulator.endpoint).await;
    let options = GcsOptions::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10));
    BucketSuite {
        name: "gcs on fake-gcs".into(),
        backend: Arc::new(GcsBackend::new(options)),
        bucket: emulator.bucket.clone(),
        connection: serde_json::json!({
            "google_application_credentials":
                shim.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM),
        }),
        seed: Seed::new(
            shim.object_store(&emulator.bucket),
            unique_prefix(&format!("gcs-{case}")),
        ),
        // fake-gcs accepts any credentials.
        rejected_credentials: None,
        guards: vec![Box::new(shim)],
    }
}

#[tokio::test]
async fn fake_gcs_imports() {
    run_import_suite(&suite("import").await).await;
}

#[tokio::test]
async fn fake_gcs_exports() {
    run_export_suite(&suite("export").await).await;
}

//! The bucket conformance suite (`storage_testing::conformance`) against
//! fake-gcs-server, the server impersonating a target service account
//! through the IAM Credentials double. Fails, saying how to start it, when
//! the emulator is not running.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use storage_core::EndpointPolicy;
use storage_gcs::GcsOptions;
use storage_gcs_sa::GcsSaBackend;
use storage_testing::conformance::{
    run_export_suite, run_import_suite, BucketSuite, RejectedCredentials, Seed,
};
use storage_testing::iam_double::IamDouble;
use storage_testing::unique_prefix;

/// The account storages impersonate.
const TARGET: &str = "reader@data-project.iam.gserviceaccount.com";
/// An account the server's identity may not impersonate.
const DENIED: &str = "locked@data-project.iam.gserviceaccount.com";
/// The server's own identity.
const BASE: &str = "label-studio@server-project.iam.gserviceaccount.com";

async fn suite(case: &str) -> BucketSuite {
    let rig = IamDouble::builder()
        .base_email(BASE)
        .target(TARGET)
        .denied(DENIED)
        .start_with_fake_gcs()
        .await;
    let options = GcsOptions::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
        .with_base_url(rig.base_url())
        .with_iam_endpoint(rig.iam.endpoint())
        .with_application_credentials(rig.identity_key.clone());
    BucketSuite {
        name: "gcs_sa on fake-gcs and the IAM double".into(),
        backend: Arc::new(GcsSaBackend::new(options)),
        bucket: rig.emulator.bucket.clone(),
        connection: json!({"target_service_account_email": TARGET}),
        seed: Seed::new(
            rig.shim.object_store(&rig.emulator.bucket),
            unique_prefix(&format!("gcs-sa-{case}")),
        ),
        rejected_credentials: Some(RejectedCredentials {
            fields: json!({"target_service_account_email": DENIED}),
            says: "iam.serviceAccounts.getAccessToken",
            secret: None,
        }),
        guards: vec![Box::new(rig)],
    }
}

#[tokio::test]
async fn fake_gcs_imports_as_the_target_account() {
    run_import_suite(&suite("import").await).await;
}

#[tokio::test]
async fn fake_gcs_exports_as_the_target_account() {
    run_export_suite(&suite("export").await).await;
}

//! The bucket conformance suite (`storage_testing::conformance`) against
//! moto (S3 without signature checks) and SeaweedFS (real SigV4 checks).
//! Fails, saying how to start them, when the emulators are not running.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use storage_core::EndpointPolicy;
use storage_s3::{S3Backend, S3Options};
use storage_testing::conformance::{
    run_export_suite, run_import_suite, BucketSuite, RejectedCredentials, Seed,
};
use storage_testing::{unique_prefix, S3Server};

const WRONG_SECRET: &str = "not-the-secret-access-key";

fn suite(server: S3Server, case: &str) -> BucketSuite {
    let options = S3Options::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10));
    BucketSuite {
        name: format!("s3 on {}", server.name),
        backend: Arc::new(S3Backend::new(options)),
        bucket: server.bucket.clone(),
        connection: json!({
            "s3_endpoint": server.endpoint,
            "aws_access_key_id": server.access_key_id,
            "aws_secret_access_key": server.secret_access_key,
            "region_name": "us-east-1",
        }),
        seed: Seed::new(
            server.object_store(),
            unique_prefix(&format!("s3-{}-{case}", server.name)),
        ),
        rejected_credentials: server.checks_signatures.then_some(RejectedCredentials {
            fields: json!({"aws_secret_access_key": WRONG_SECRET}),
            says: "credentials",
            secret: Some(WRONG_SECRET),
        }),
        guards: Vec::new(),
    }
}

#[tokio::test]
async fn moto_imports() {
    run_import_suite(&suite(storage_testing::moto(), "import")).await;
}

#[tokio::test]
async fn moto_exports() {
    run_export_suite(&suite(storage_testing::moto(), "export")).await;
}

#[tokio::test]
async fn seaweedfs_imports() {
    run_import_suite(&suite(storage_testing::seaweedfs(), "import")).await;
}

#[tokio::test]
async fn seaweedfs_exports() {
    run_export_suite(&suite(storage_testing::seaweedfs(), "export")).await;
}

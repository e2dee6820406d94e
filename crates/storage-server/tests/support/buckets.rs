//! Clients of the emulators' buckets, to seed and inspect what a test's
//! storages read and write.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::ClientOptions;
use storage_core::EndpointPolicy;
use storage_s3::S3Options;
use storage_testing::S3Server;

/// S3 storage options under `policy` that never retry and give up within
/// seconds: for endpoints a test writes to misbehave.
pub fn no_retry_s3(policy: EndpointPolicy) -> S3Options {
    S3Options::new()
        .with_endpoint_policy(policy)
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            retry_timeout: Duration::from_secs(2),
            ..object_store::RetryConfig::default()
        })
        .with_timeout(Duration::from_secs(5))
}

/// A client of the S3 emulator's bucket with its credentials, over plain
/// HTTP; add a retry policy and build it.
pub fn s3_builder(server: &S3Server) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_bucket_name(&server.bucket)
        .with_region("us-east-1")
        .with_access_key_id(&server.access_key_id)
        .with_secret_access_key(&server.secret_access_key)
        .with_client_options(ClientOptions::new().with_allow_http(true))
}

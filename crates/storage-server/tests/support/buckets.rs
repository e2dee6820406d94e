//! Clients of the emulators' buckets, to seed and inspect what a test's
//! storages read and write.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use object_store::aws::AmazonS3Builder;
use object_store::ClientOptions;
use storage_testing::S3Server;

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

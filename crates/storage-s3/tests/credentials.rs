//! A storage whose keys S3 rejects fails its connection check with
//! `Error::CredentialsRejected` naming the storage's key fields (the API
//! answers it as a 400 naming them), not as an unauthenticated API caller.
//! Against SeaweedFS, which checks SigV4 signatures (moto accepts any key).

use std::time::Duration;

use object_store::RetryConfig;
use serde_json::json;
use storage_core::{Backend, EndpointPolicy, Error, Settings};
use storage_s3::{S3Backend, S3Options};

fn backend() -> S3Backend {
    S3Backend::new(
        S3Options::new()
            .with_endpoint_policy(EndpointPolicy::allow_private())
            .with_retry(RetryConfig {
                max_retries: 1,
                retry_timeout: Duration::from_secs(5),
                ..RetryConfig::default()
            })
            .with_timeout(Duration::from_secs(10)),
    )
}

fn settings(server: &storage_testing::S3Server, key_id: &str, secret: &str) -> Settings {
    let mut settings = Settings::default();
    for (name, value) in [
        ("bucket", json!(server.bucket)),
        ("s3_endpoint", json!(server.endpoint)),
        ("aws_access_key_id", json!(key_id)),
        ("aws_secret_access_key", json!(secret)),
    ] {
        settings.set(name, value);
    }
    settings
}

#[tokio::test]
async fn rejected_keys_name_the_credential_fields() {
    let server = storage_testing::seaweedfs();
    assert!(server.checks_signatures, "SeaweedFS must verify SigV4");
    let backend = backend();
    for (key_id, secret) in [
        (server.access_key_id.as_str(), "wrong-secret"),
        ("no-such-key", server.secret_access_key.as_str()),
    ] {
        let source = backend
            .import_storage(&settings(&server, key_id, secret))
            .await
            .unwrap();
        let err = source.check_connection().await.unwrap_err();
        let Error::CredentialsRejected {
            fields,
            code,
            message,
        } = &err
        else {
            panic!("{key_id}: expected CredentialsRejected, got {err:?}");
        };
        assert_eq!(fields, &["aws_access_key_id", "aws_secret_access_key"]);
        assert!(
            matches!(
                code.as_deref(),
                Some("SignatureDoesNotMatch" | "InvalidAccessKeyId")
            ),
            "{code:?}"
        );
        assert!(
            message.contains("the access key id or the secret access key is wrong"),
            "{message}"
        );
        assert!(!message.contains("wrong-secret"), "{message}");
        assert!(!message.contains(&server.secret_access_key), "{message}");
    }
}

#[tokio::test]
async fn right_keys_pass_the_check() {
    let server = storage_testing::seaweedfs();
    let source = backend()
        .import_storage(&settings(
            &server,
            &server.access_key_id,
            &server.secret_access_key,
        ))
        .await
        .unwrap();
    source.check_connection().await.unwrap();
}

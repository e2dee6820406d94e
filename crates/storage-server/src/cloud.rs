//! The bucket backends' flags and their construction: the server's own
//! credentials and endpoints, read from the same flags and environment
//! variables by every program that builds the bucket backends (the server,
//! the `storages` CLI).

use std::path::PathBuf;
use std::sync::Arc;

use storage_core::{Backends, EndpointPolicy};
use storage_gcs::{GcsBackend, GcsOptions};
use storage_gcs_sa::GcsSaBackend;
use storage_s3::{S3Backend, S3Options};

/// Credentials and endpoints of the server's own identity, for storages
/// that name none. Flatten it into a `clap` parser (`#[command(flatten)]`).
#[derive(Clone, Default, clap::Args)]
pub struct CloudArgs {
    /// STS endpoint for `role_arn` storages (default AWS's regional STS).
    #[arg(long, env = "STORAGE_STS_ENDPOINT")]
    pub sts_endpoint: Option<url::Url>,
    /// The own AWS access key id: the base identity of `role_arn` storages
    /// and the credentials of S3 storages that have none.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    /// The own AWS secret access key (with `--aws-access-key-id`).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// The own AWS session token (with `--aws-access-key-id`).
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub aws_session_token: Option<String>,
    /// The own Google credentials file (service-account key or authorized
    /// user): the base identity of `gcs_sa` storages and the credentials of
    /// `gcs` storages without a key. Unset: Application Default Credentials
    /// as usual (well-known file, metadata server).
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub google_application_credentials: Option<PathBuf>,
    /// GCS endpoint for storages whose key names none (emulators, private
    /// deployments); default `https://storage.googleapis.com`.
    #[arg(long, env = "STORAGE_GCS_BASE_URL")]
    pub gcs_base_url: Option<url::Url>,
    /// IAM Credentials API endpoint (impersonation and signBlob); default
    /// `https://iamcredentials.googleapis.com`.
    #[arg(long, env = "STORAGE_IAM_ENDPOINT")]
    pub iam_endpoint: Option<url::Url>,
}

// Written by hand so that no secret reaches a log line or an error.
impl std::fmt::Debug for CloudArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudArgs")
            .field("sts_endpoint", &self.sts_endpoint)
            .field("aws_access_key_id", &self.aws_access_key_id)
            .field(
                "aws_secret_access_key",
                &redacted(&self.aws_secret_access_key),
            )
            .field("aws_session_token", &redacted(&self.aws_session_token))
            .field(
                "google_application_credentials",
                &self.google_application_credentials,
            )
            .field("gcs_base_url", &self.gcs_base_url)
            .field("iam_endpoint", &self.iam_endpoint)
            .finish()
    }
}

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

impl CloudArgs {
    /// The S3, GCS and GCS SA backends under `policy`, with these
    /// credentials and endpoints.
    pub fn bucket_backends(&self, policy: EndpointPolicy) -> Backends {
        let mut s3 = S3Options::new().with_endpoint_policy(policy);
        if let (Some(key), Some(secret)) = (&self.aws_access_key_id, &self.aws_secret_access_key) {
            s3 = s3.with_server_credentials(key, secret, self.aws_session_token.clone());
        }
        if let Some(sts) = &self.sts_endpoint {
            s3 = s3.with_sts_endpoint(sts.clone());
        }
        let mut gcs = GcsOptions::new().with_endpoint_policy(policy);
        if let Some(path) = &self.google_application_credentials {
            gcs = gcs.with_application_credentials(path);
        }
        if let Some(url) = &self.gcs_base_url {
            gcs = gcs.with_base_url(url.clone());
        }
        if let Some(url) = &self.iam_endpoint {
            gcs = gcs.with_iam_endpoint(url.clone());
        }
        Backends::new()
            .with(Arc::new(S3Backend::new(s3)))
            .with(Arc::new(GcsBackend::new(gcs.clone())))
            .with(Arc::new(GcsSaBackend::new(gcs)))
    }
}

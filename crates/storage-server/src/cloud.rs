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
    /// STS endpoint for `role_arn` and `s3s` storages (default AWS's regional STS).
    #[arg(long, env = "STORAGE_STS_ENDPOINT")]
    pub sts_endpoint: Option<url::Url>,
    /// The own AWS access key id: the base identity of `role_arn` storages
    /// (and of `s3s` storages without keys of their own),
    /// and the credentials of S3 storages that have none only with
    /// `--keyless-s3-server-credentials`.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    /// The own AWS secret access key (with `--aws-access-key-id`).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// The own AWS session token (with `--aws-access-key-id`).
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub aws_session_token: Option<String>,
    /// The own Google credentials file (service-account key or authorized
    /// user): the base identity of `gcs_sa` storages, and the credentials of
    /// `gcs` storages without a key only with
    /// `--keyless-gcs-server-credentials`. Unset: no Google identity, unless
    /// `--allow-ambient-credentials`.
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
    /// S3 storages without keys sign their requests with the server's own
    /// AWS keys (`--aws-access-key-id`), except those with an `s3_endpoint`
    /// (the server's keys never go to a user's endpoint). Default: keyless
    /// storages send unsigned requests (public buckets) and `/resolve`
    /// streams their objects instead of presigning (docs/security.md).
    #[arg(long, env = "STORAGE_KEYLESS_S3_SERVER_CREDENTIALS", default_value_t = false, action = clap::ArgAction::Set)]
    pub keyless_s3_server_credentials: bool,
    /// `gcs` storages without a key use the server's own Google identity
    /// (`--google-application-credentials`). Default: unsigned requests.
    #[arg(long, env = "STORAGE_KEYLESS_GCS_SERVER_CREDENTIALS", default_value_t = false, action = clap::ArgAction::Set)]
    pub keyless_gcs_server_credentials: bool,
    /// Only these buckets (comma-separated) may be reached with the server's
    /// own identity by keyless storages; default: every bucket, when a
    /// `--keyless-*-server-credentials` flag is on.
    #[arg(
        long,
        env = "STORAGE_SERVER_CREDENTIALS_BUCKETS",
        value_delimiter = ','
    )]
    pub server_credentials_buckets: Option<Vec<String>>,
    /// Let the server's own Google identity come from the environment when
    /// no credentials file is set: Application Default Credentials, down to
    /// the instance metadata server. Default: never (AWS instance metadata
    /// is never used at all).
    #[arg(long, env = "STORAGE_ALLOW_AMBIENT_CREDENTIALS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_ambient_credentials: bool,
    /// Storage HTTP clients use the environment's proxy (`HTTP_PROXY`,
    /// `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`). Default: they ignore it.
    /// Either way the endpoint policy decides: with a proxy, each request's
    /// host name is resolved and checked before it is handed to the proxy.
    #[arg(long, env = "STORAGE_USE_ENV_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub use_env_proxy: bool,
    /// One network (`address/prefix`, e.g. `10.1.2.0/24`) whose addresses
    /// storage endpoints may use although the policy refuses private
    /// addresses: an S3-compatible server on the private network, without
    /// `--allow-private-endpoints` opening every private address.
    #[arg(long, env = "STORAGE_ALLOW_ENDPOINT_NETWORK", value_parser = parse_network)]
    pub allow_endpoint_network: Option<(std::net::IpAddr, u8)>,
}

/// `address/prefix` (or a bare address: that address only).
fn parse_network(text: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (address, bits) = text.split_once('/').unwrap_or((text, ""));
    let address: std::net::IpAddr = address
        .trim()
        .parse()
        .map_err(|e| format!("{address:?} is not an IP address: {e}"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let bits = if bits.is_empty() {
        max
    } else {
        bits.trim()
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("{bits:?} is not a prefix length (0 to {max})"))?
    };
    Ok((address, bits))
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
            .field(
                "keyless_s3_server_credentials",
                &self.keyless_s3_server_credentials,
            )
            .field(
                "keyless_gcs_server_credentials",
                &self.keyless_gcs_server_credentials,
            )
            .field(
                "server_credentials_buckets",
                &self.server_credentials_buckets,
            )
            .field("allow_ambient_credentials", &self.allow_ambient_credentials)
            .field("use_env_proxy", &self.use_env_proxy)
            .field("allow_endpoint_network", &self.allow_endpoint_network)
            .finish()
    }
}

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

impl CloudArgs {
    /// The S3, GCS, GCS SA and S3 with IAM role (`s3s`) backends under `policy`, with these
    /// credentials and endpoints.
    pub fn bucket_backends(&self, policy: EndpointPolicy) -> Backends {
        let mut policy = policy.with_env_proxy(self.use_env_proxy);
        if let Some((address, bits)) = self.allow_endpoint_network {
            policy = policy.with_allowed_network(address, bits);
        }
        let mut s3 = S3Options::new()
            .with_endpoint_policy(policy)
            .with_keyless_server_credentials(self.keyless_s3_server_credentials);
        if let (Some(key), Some(secret)) = (&self.aws_access_key_id, &self.aws_secret_access_key) {
            s3 = s3.with_server_credentials(key, secret, self.aws_session_token.clone());
        }
        if let Some(sts) = &self.sts_endpoint {
            s3 = s3.with_sts_endpoint(sts.clone());
        }
        let mut gcs = GcsOptions::new()
            .with_endpoint_policy(policy)
            .with_keyless_server_credentials(self.keyless_gcs_server_credentials)
            .with_ambient_credentials(self.allow_ambient_credentials);
        if let Some(buckets) = &self.server_credentials_buckets {
            s3 = s3.with_server_credential_buckets(buckets.iter().cloned());
            gcs = gcs.with_server_credential_buckets(buckets.iter().cloned());
        }
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
            .with(Arc::new(S3Backend::new(s3.clone())))
            .with(Arc::new(GcsBackend::new(gcs.clone())))
            .with(Arc::new(GcsSaBackend::new(gcs)))
            .with(Arc::new(S3Backend::with_iam_role(s3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_with_or_without_a_prefix() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(parse_network("10.1.2.0/24"), Ok((ip("10.1.2.0"), 24)));
        assert_eq!(parse_network("10.1.2.3"), Ok((ip("10.1.2.3"), 32)));
        assert_eq!(parse_network("fd00::/8"), Ok((ip("fd00::"), 8)));
        assert!(parse_network("10.1.2.0/33").is_err());
        assert!(parse_network("example.com/8").is_err());
    }

    #[test]
    fn identity_flags_are_off_by_default_and_documented() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            cloud: CloudArgs,
        }
        let args = Cli::try_parse_from(["x"]).unwrap().cloud;
        assert!(!args.keyless_s3_server_credentials);
        assert!(!args.keyless_gcs_server_credentials);
        assert!(!args.allow_ambient_credentials);
        assert!(!args.use_env_proxy);
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--keyless-s3-server-credentials",
            "--keyless-gcs-server-credentials",
            "--server-credentials-buckets",
            "--allow-ambient-credentials",
            "--use-env-proxy",
            "--allow-endpoint-network",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }
}

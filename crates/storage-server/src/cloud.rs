//! The bucket backends' flags and their construction: the server's own
//! credentials and endpoints, read from the same flags and environment
//! variables by every program that builds the bucket backends (the server,
//! the `storages` CLI).

use std::path::PathBuf;
use std::sync::Arc;

use storage_azure::{AzureBackend, AzureOptions, AzureSpiBackend};
use storage_core::{Backends, EndpointPolicy};
use storage_databricks::{DatabricksBackend, DatabricksOptions};
use storage_gcs::sts::SubjectToken;
use storage_gcs::{GcsBackend, GcsOptions};
use storage_gcs_sa::{GcsSaBackend, GcsWifBackend, WifOptions};
use storage_redis::{RedisBackend, RedisOptions};
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
    /// Where the keys of Pub/Sub's push OIDC tokens are fetched; default
    /// `https://www.googleapis.com/oauth2/v3/certs`.
    #[arg(long, env = "STORAGE_PUBSUB_CERTS_URL")]
    pub pubsub_certs_url: Option<url::Url>,
    /// Azure Blob endpoint of `azure` storages, `{account}` standing for
    /// the storage's account name: a sovereign cloud
    /// (`https://{account}.blob.core.chinacloudapi.cn`) or Azurite
    /// (`http://127.0.0.1:10000/{account}`); default
    /// `https://{account}.blob.core.windows.net`. Requests obey the endpoint
    /// policy: a loopback or private address needs
    /// `--allow-endpoint-network` or `--allow-private-endpoints`.
    #[arg(long, env = "STORAGE_AZURE_BLOB_ENDPOINT", value_parser = parse_azure_endpoint)]
    pub azure_blob_endpoint: Option<String>,
    /// Microsoft Entra authority host of `azure_spi` and `databricks`
    /// (`azure_ad_sp`) storages (their
    /// tokens come from `<host>/<tenant>/oauth2/v2.0/token`): a sovereign
    /// cloud (`https://login.chinacloudapi.cn`); default
    /// `https://login.microsoftonline.com`. The operator's host: trusted
    /// (outside the endpoint policy), no redirect followed.
    #[arg(long, env = "AZURE_AUTHORITY_HOST", value_parser = parse_authority_host)]
    pub azure_authority_host: Option<url::Url>,
    /// The federated token file of the server's Azure workload identity
    /// (what AKS workload identity mounts): `azure_spi` storages with
    /// `auth_mode` `workload_identity` exchange it for their tokens. Unset:
    /// that mode is refused.
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub azure_federated_token_file: Option<PathBuf>,
    /// The tenant of the workload identity (a storage's `tenant_id`
    /// overrides it).
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub azure_tenant_id: Option<String>,
    /// The client id of the workload identity (a storage's `client_id`
    /// overrides it: a user-assigned identity).
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,
    /// The subject token of `gcswif` storages (Workload Identity
    /// Federation): a file holding the token this server's platform issues
    /// to it (a Kubernetes projected service-account token, a CI system's
    /// OIDC token), read at each exchange. Unset: `gcswif` storages fail
    /// their check with a message that says so.
    #[arg(long, env = "STORAGE_GCS_WIF_SUBJECT_TOKEN_FILE")]
    pub gcs_wif_subject_token_file: Option<PathBuf>,
    /// The type of that token, as Google's STS names it.
    #[arg(
        long,
        env = "STORAGE_GCS_WIF_SUBJECT_TOKEN_TYPE",
        default_value = storage_gcs::sts::JWT_TOKEN_TYPE
    )]
    pub gcs_wif_subject_token_type: String,
    /// Google's Security Token Service, where `gcswif` storages exchange the
    /// subject token; default `https://sts.googleapis.com`.
    #[arg(long, env = "STORAGE_GOOGLE_STS_ENDPOINT")]
    pub google_sts_endpoint: Option<url::Url>,
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

/// An endpoint template: with `{account}` replaced, an http(s) URL without
/// credentials, query or fragment.
fn parse_azure_endpoint(text: &str) -> Result<String, String> {
    let url = url::Url::parse(&text.replace("{account}", "account"))
        .map_err(|e| format!("{text:?} is not a URL template ({e}); expected e.g. https://{{account}}.blob.core.windows.net"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must use http or https"));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{text:?} must have no credentials, query or fragment"
        ));
    }
    Ok(text.trim().to_string())
}

/// An authority host: an http(s) URL with a host and nothing else.
fn parse_authority_host(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| {
        format!("{text:?} is not a URL ({e}); expected e.g. https://login.microsoftonline.com")
    })?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.path() != "/"
    {
        return Err(format!(
            "{text:?} must be an http(s) URL with a host and no path, credentials, query or fragment"
        ));
    }
    Ok(url)
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
            .field("pubsub_certs_url", &self.pubsub_certs_url)
            .field("azure_blob_endpoint", &self.azure_blob_endpoint)
            .field("azure_authority_host", &self.azure_authority_host)
            .field(
                "azure_federated_token_file",
                &self.azure_federated_token_file,
            )
            .field("azure_tenant_id", &self.azure_tenant_id)
            .field("azure_client_id", &self.azure_client_id)
            .field(
                "gcs_wif_subject_token_file",
                &self.gcs_wif_subject_token_file,
            )
            .field(
                "gcs_wif_subject_token_type",
                &self.gcs_wif_subject_token_type,
            )
            .field("google_sts_endpoint", &self.google_sts_endpoint)
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
    /// Every backend but local files (S3, GCS, Azure, Redis, GCS SA, Azure
    /// SPI, GCS WIF, S3 with IAM role and Databricks) under `policy`, with
    /// these credentials and endpoints.
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
        if let Some(url) = &self.pubsub_certs_url {
            gcs = gcs.with_pubsub_certs_url(url);
        }
        let mut databricks = DatabricksOptions::new().with_endpoint_policy(policy);
        if let Some(host) = &self.azure_authority_host {
            databricks = databricks.with_authority_host(host.as_str());
        }
        let mut azure = AzureOptions::new().with_endpoint_policy(policy);
        if let Some(endpoint) = &self.azure_blob_endpoint {
            azure = azure.with_endpoint(endpoint);
        }
        if let Some(host) = &self.azure_authority_host {
            azure = azure.with_authority_host(host.as_str());
        }
        if let Some(file) = &self.azure_federated_token_file {
            azure = azure.with_workload_identity(
                file,
                self.azure_tenant_id.clone(),
                self.azure_client_id.clone(),
            );
        }
        let mut wif = WifOptions::default();
        if let Some(file) = &self.gcs_wif_subject_token_file {
            wif.subject = Some(SubjectToken {
                file: file.clone(),
                token_type: self.gcs_wif_subject_token_type.clone(),
            });
        }
        if let Some(url) = &self.google_sts_endpoint {
            wif.sts_endpoint = url.clone();
        }
        // Label Studio's aggregate order: s3, gcs, azure, redis, then the rest.
        Backends::new()
            .with(Arc::new(S3Backend::new(s3.clone())))
            .with(Arc::new(GcsBackend::new(gcs.clone())))
            .with(Arc::new(AzureBackend::new(azure.clone())))
            .with(Arc::new(RedisBackend::new(
                RedisOptions::new().with_endpoint_policy(policy),
            )))
            .with(Arc::new(GcsSaBackend::new(gcs.clone())))
            .with(Arc::new(AzureSpiBackend::new(azure)))
            .with(Arc::new(GcsWifBackend::new(gcs, wif)))
            .with(Arc::new(S3Backend::with_iam_role(s3)))
            .with(Arc::new(DatabricksBackend::new(databricks)))
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
    fn authority_hosts_are_checked() {
        assert!(parse_authority_host("https://login.microsoftonline.com").is_ok());
        assert!(parse_authority_host("http://127.0.0.1:9000/").is_ok());
        assert!(parse_authority_host("https://login.example/tenant").is_err());
        assert!(parse_authority_host("ftp://login.example").is_err());
    }

    #[test]
    fn azure_endpoint_templates_are_checked() {
        assert!(parse_azure_endpoint("http://127.0.0.1:10000/{account}").is_ok());
        assert!(parse_azure_endpoint("https://{account}.blob.core.chinacloudapi.cn").is_ok());
        assert!(parse_azure_endpoint("ftp://{account}.example").is_err());
        assert!(parse_azure_endpoint("https://u:p@{account}.example").is_err());
        assert!(parse_azure_endpoint("not a url").is_err());
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
            "--azure-blob-endpoint",
            "--azure-authority-host",
            "--azure-federated-token-file",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }
}

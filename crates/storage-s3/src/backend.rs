//! The `s3` storage type: builds an `AmazonS3` store from a storage's
//! settings and maps S3's failures to messages a user can act on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::StaticCredentialProvider;
use storage_core::bucket::{response_type_options, short_cause, BucketTarget, UrlSigner};
use storage_core::failure::Failure;
use storage_core::uri::BucketUri;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, FieldSpec, ImportStorage, Result, Settings,
    StorageKind,
};

use crate::config::{fields, S3Config, S3Options};
use crate::{AssumeRole, AssumeRoleConfig};

/// The `s3` storage type.
///
/// ```
/// use storage_core::{Backend, EndpointPolicy};
/// let backend = storage_s3::S3Backend::new(
///     storage_s3::S3Options::new().with_endpoint_policy(EndpointPolicy::strict()),
/// );
/// assert_eq!(backend.name(), "s3");
/// ```
#[derive(Debug, Clone, Default)]
pub struct S3Backend {
    options: S3Options,
}

impl S3Backend {
    /// A backend with these server-wide options.
    pub fn new(options: S3Options) -> Self {
        Self { options }
    }

    /// Builds the object store of a configuration, after checking its
    /// endpoint against the policy (DNS included).
    pub async fn store(&self, config: &S3Config) -> Result<AmazonS3> {
        let shared = &self.options.bucket;
        let mut client = shared.client_options(None);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(config.region())
            .with_retry(shared.retry().clone());
        if let Some(endpoint) = &config.endpoint {
            let url = shared
                .endpoint_policy()
                .check("s3_endpoint", endpoint)
                .await?;
            client = client.with_allow_http(url.scheme() == "http");
            builder = builder.with_endpoint(url.as_str().trim_end_matches('/'));
        }
        builder = match (
            &config.role_arn,
            &config.access_key_id,
            &config.secret_access_key,
        ) {
            (Some(role_arn), _, _) => {
                let base = self.options.server_credentials.clone().ok_or_else(|| {
                    Error::invalid(
                        "role_arn",
                        "This server has no AWS credentials of its own to assume a role with \
                         (start it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set)",
                    )
                })?;
                let mut role = AssumeRoleConfig::new(role_arn.clone())
                    .with_region(config.region())
                    .with_retry(shared.call_retry());
                if let Some(external_id) = &config.external_id {
                    role = role.with_external_id(external_id.clone());
                }
                if let Some(sts) = &self.options.sts_endpoint {
                    role = role.with_sts_endpoint(sts.clone());
                }
                let sts_client = client
                    .clone()
                    .with_allow_http(role.sts_endpoint().scheme() == "http");
                builder.with_credentials(Arc::new(AssumeRole::new(role, base, sts_client)))
            }
            (None, Some(key_id), Some(secret)) => {
                let builder = builder
                    .with_access_key_id(key_id)
                    .with_secret_access_key(secret);
                match &config.session_token {
                    Some(token) => builder.with_token(token),
                    None => builder,
                }
            }
            _ => match self.options.server_identity_for(config) {
                Some(server) => {
                    let builder = builder
                        .with_access_key_id(&server.key_id)
                        .with_secret_access_key(&server.secret_key);
                    match &server.token {
                        Some(token) => builder.with_token(token),
                        None => builder,
                    }
                }
                // Keyless means unsigned: without a credential provider of
                // its own, object_store would ask the instance metadata
                // service (169.254.169.254) for one, on every signed URL.
                None => builder.with_skip_signature(true).with_credentials(Arc::new(
                    StaticCredentialProvider::new(AwsCredential {
                        key_id: String::new(),
                        secret_key: String::new(),
                        token: None,
                    }),
                )),
            },
        };
        if let Some(key) = &config.sse_kms_key_id {
            builder = builder.with_sse_kms_encryption(key);
        }
        builder
            .with_client_options(client)
            .with_http_connector(shared.http_connector())
            .build()
            .map_err(|e| {
                Error::invalid_general(format!("Cannot configure S3 bucket {}: {e}", config.bucket))
            })
    }

    /// Whether requests of `config` are signed: it has keys or a role, or
    /// the operator lets keyless storages use the server's identity.
    fn signs(&self, config: &S3Config) -> bool {
        config.role_arn.is_some()
            || (config.access_key_id.is_some() && config.secret_access_key.is_some())
            || self.options.server_identity_for(config).is_some()
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn title(&self) -> &'static str {
        "AWS S3"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        fields(kind)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::bucket("s3")
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let config = S3Config::from_settings(settings);
        let mut errors = config.check(settings).err().unwrap_or_default();
        if let Some(endpoint) = &config.endpoint {
            if let Err(Error::InvalidConfig(e)) = self
                .options
                .bucket
                .endpoint_policy()
                .check_literal("s3_endpoint", endpoint)
            {
                errors.merge(e);
            }
        }
        if let Err(e) = storage_core::fields::check_regex(settings, kind) {
            errors.merge(e);
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let config = S3Config::from_settings(settings);
        let store = Arc::new(self.store(&config).await?);
        // A keyless storage signs nothing: `/resolve` streams its objects
        // through the server instead of redirecting (docs/security.md).
        let signer: Option<Arc<dyn UrlSigner>> = if self.signs(&config) {
            Some(Arc::new(S3Signer(store.clone())))
        } else {
            None
        };
        Ok(Arc::new(target(&config, store).import(settings, signer)?))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let config = S3Config::from_settings(settings);
        let store = Arc::new(self.store(&config).await?);
        Ok(Arc::new(target(&config, store).export(settings)))
    }
}

fn target(config: &S3Config, store: Arc<AmazonS3>) -> BucketTarget {
    let (bucket, prefix, endpoint) = (
        config.bucket.clone(),
        config.prefix.clone(),
        config.endpoint.clone(),
    );
    // With role_arn, the rejected keys are the server's, not the storage's.
    let fields: &[&str] = if config.role_arn.is_none() && config.access_key_id.is_some() {
        CREDENTIAL_FIELDS
    } else {
        &[]
    };
    BucketTarget {
        store,
        uri: BucketUri::new("s3", &config.bucket),
        prefix: config.prefix.clone(),
        explain: Arc::new(move |err| {
            explain(err, &bucket, prefix.as_deref(), endpoint.as_deref())
                .with_credential_fields(fields)
        }),
    }
}

/// SigV4 presigned GET URLs from the storage's own client.
#[derive(Debug)]
struct S3Signer(Arc<AmazonS3>);

#[async_trait]
impl UrlSigner for S3Signer {
    async fn signed_url(
        &self,
        location: &Path,
        ttl: Duration,
        response_content_type: Option<&str>,
    ) -> Result<String> {
        self.0
            .signed_url_opts(
                http::Method::GET,
                location,
                ttl,
                &response_type_options(response_content_type),
            )
            .await
            .map(|url| url.to_string())
            .map_err(|e| Error::from_object_store(format!("signing {location}"), e))
    }
}

/// The settings holding the storage's own AWS credentials.
const CREDENTIAL_FIELDS: &[&str] = &["aws_access_key_id", "aws_secret_access_key"];

/// Turns a failed connection check into the message a user needs: which of
/// bucket, credentials, permissions or endpoint is wrong, decided from the
/// HTTP status and S3's error code.
fn explain(err: Error, bucket: &str, prefix: Option<&str>, endpoint: Option<&str>) -> Error {
    if let Error::InvalidConfig(_) = err {
        return match prefix {
            Some(prefix) => Error::invalid_general(format!("s3://{bucket}/{prefix} not found.")),
            None => err,
        };
    }
    let failure = Failure::of(&err);
    let message = if matches!(err, Error::NotFound { .. })
        || failure.status == Some(404)
        || failure.code_is("NoSuchBucket")
    {
        format!("Cannot find bucket {bucket} in S3")
    } else if failure.code_rejects_credentials() {
        return Error::CredentialsRejected {
            fields: Vec::new(),
            code: failure.code,
            message: format!(
                "Cannot connect to S3 {bucket} with specified AWS credentials: the access key id or the secret access key is wrong"
            ),
        };
    } else if failure.code_is("AccessDenied")
        || matches!(
            err,
            Error::PermissionDenied { .. } | Error::CredentialsRejected { .. }
        )
        || matches!(failure.status, Some(401 | 403))
    {
        format!("Cannot connect to S3 {bucket} with specified AWS credentials: access denied")
    } else if failure.unreachable {
        format!(
            "Cannot reach the S3 endpoint {}: {}",
            endpoint.unwrap_or("of AWS"),
            short_cause(&err)
        )
    } else {
        format!("Cannot connect to S3 {bucket}: {}", short_cause(&err))
    };
    Error::invalid_general(message)
}

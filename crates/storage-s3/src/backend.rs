//! The `s3` storage type: builds an `AmazonS3` store from a storage's
//! settings and maps S3's failures to messages a user can act on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential, AwsCredentialProvider};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, CredentialProvider, StaticCredentialProvider};
use storage_core::bucket::{
    response_type_options, short_cause, BucketExport, BucketImport, BucketTarget, UrlSigner,
};
use storage_core::failure::Failure;
use storage_core::uri::BucketUri;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, FieldSpec, ImportStorage, Result, Settings,
    StorageKind,
};

use crate::config::{fields, S3Config, S3Options};
use crate::sqs::{SqsFeed, SQS_QUEUE_URL_FIELD};
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
    /// `s3s`: Label Studio Enterprise's "S3 with IAM role" (`role_arn`
    /// required, `legacy_auth`).
    iam_role: bool,
    /// One AssumeRole provider (and so one cached session) per role, external
    /// id, STS endpoint and base identity, shared by every store built for
    /// them: a sync does not call STS again while the session lasts.
    roles: Arc<Roles>,
}

/// What makes two AssumeRole sessions interchangeable. Holds the base
/// secret to tell identities apart: in memory only, never printed.
#[derive(PartialEq, Eq, Hash)]
struct RoleKey {
    role_arn: String,
    external_id: Option<String>,
    region: String,
    sts_endpoint: String,
    base_key_id: String,
    base_secret: String,
    base_token: Option<String>,
}

/// The shared AssumeRole providers (see [`S3Backend::roles`]).
#[derive(Default)]
struct Roles(std::sync::Mutex<HashMap<RoleKey, Arc<AssumeRole>>>);

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roles").finish_non_exhaustive()
    }
}

/// Beyond this many cached roles, those no store uses any more are dropped.
const MAX_IDLE_ROLES: usize = 256;

impl Roles {
    fn provider(&self, key: RoleKey, make: impl FnOnce() -> AssumeRole) -> Arc<AssumeRole> {
        let mut roles = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if roles.len() >= MAX_IDLE_ROLES && !roles.contains_key(&key) {
            roles.retain(|_, role| Arc::strong_count(role) > 1);
        }
        roles.entry(key).or_insert_with(|| Arc::new(make())).clone()
    }
}

/// An S3 store and, for a `role_arn` storage, the provider of its session.
type Opened = (AmazonS3, Option<Arc<AssumeRole>>);

impl S3Backend {
    /// A backend with these server-wide options.
    pub fn new(options: S3Options) -> Self {
        Self {
            options,
            iam_role: false,
            roles: Arc::default(),
        }
    }

    /// The `s3s` storage type (Label Studio Enterprise's "Amazon S3 with IAM
    /// role") on the same options: `role_arn` is required, and the base
    /// identity of AssumeRole is the storage's own keys when it has them,
    /// else the server's.
    ///
    /// ```
    /// use storage_core::Backend;
    /// let backend = storage_s3::S3Backend::with_iam_role(storage_s3::S3Options::new());
    /// assert_eq!(backend.name(), "s3s");
    /// ```
    pub fn with_iam_role(options: S3Options) -> Self {
        Self {
            iam_role: true,
            ..Self::new(options)
        }
    }

    /// Builds the object store of a configuration, after checking its
    /// endpoint against the policy (DNS included).
    pub async fn store(&self, config: &S3Config) -> Result<AmazonS3> {
        self.open(config).await.map(|(store, _)| store)
    }

    /// The base identity AssumeRole signs with: for `s3s`, the storage's own
    /// keys when it has both; else the server's own keys.
    fn role_base(&self, config: &S3Config) -> Result<Arc<AwsCredential>> {
        if self.iam_role {
            if let (Some(key_id), Some(secret)) = (&config.access_key_id, &config.secret_access_key)
            {
                return Ok(Arc::new(AwsCredential {
                    key_id: key_id.clone(),
                    secret_key: secret.clone(),
                    token: config.session_token.clone(),
                }));
            }
        }
        self.options.server_credentials.clone().ok_or_else(|| {
            let keys = if self.iam_role {
                " or give the storage aws_access_key_id and aws_secret_access_key"
            } else {
                ""
            };
            Error::invalid(
                "role_arn",
                format!(
                    "This server has no AWS credentials of its own to assume a role with \
                     (start it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set{keys})"
                ),
            )
        })
    }

    async fn open(&self, config: &S3Config) -> Result<Opened> {
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
        let (credentials, assumed) = self.credentials(config, &client)?;
        builder = match credentials {
            Some(credentials) => builder.with_credentials(credentials),
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
        };
        if let Some(key) = &config.sse_kms_key_id {
            builder = builder.with_sse_kms_encryption(key);
        }
        let store = builder
            .with_client_options(client)
            .with_http_connector(shared.http_connector())
            .build()
            .map_err(|e| {
                Error::invalid_general(format!("Cannot configure S3 bucket {}: {e}", config.bucket))
            })?;
        Ok((store, assumed))
    }

    /// What the requests of `config` are signed with: the session of its
    /// role (shared per role, see [`S3Backend::roles`]), its own keys, the
    /// server's identity when the operator lets keyless storages use it,
    /// or nothing (`None`: unsigned). `client` is the storage's HTTP
    /// options, which the STS calls of a role use too.
    fn credentials(
        &self,
        config: &S3Config,
        client: &ClientOptions,
    ) -> Result<(Option<AwsCredentialProvider>, Option<Arc<AssumeRole>>)> {
        let fixed = |key_id: &str, secret: &str, token: Option<&String>| {
            let provider: AwsCredentialProvider =
                Arc::new(StaticCredentialProvider::new(AwsCredential {
                    key_id: key_id.to_string(),
                    secret_key: secret.to_string(),
                    token: token.cloned(),
                }));
            Some(provider)
        };
        Ok(
            match (
                &config.role_arn,
                &config.access_key_id,
                &config.secret_access_key,
            ) {
                (Some(role_arn), _, _) => {
                    let shared = &self.options.bucket;
                    let base = self.role_base(config)?;
                    let mut role = AssumeRoleConfig::new(role_arn.clone())
                        .with_region(config.region())
                        .with_retry(shared.call_retry());
                    if let Some(external_id) = &config.external_id {
                        role = role.with_external_id(external_id.clone());
                    }
                    if let Some(sts) = &self.options.sts_endpoint {
                        role = role.with_sts_endpoint(sts.clone());
                    }
                    let key = RoleKey {
                        role_arn: role_arn.clone(),
                        external_id: role.external_id.clone(),
                        region: role.region.clone(),
                        sts_endpoint: role.sts_endpoint().to_string(),
                        base_key_id: base.key_id.clone(),
                        base_secret: base.secret_key.clone(),
                        base_token: base.token.clone(),
                    };
                    let sts_client = client
                        .clone()
                        .with_allow_http(role.sts_endpoint().scheme() == "http");
                    let provider = self
                        .roles
                        .provider(key, || AssumeRole::new(role, base, sts_client));
                    let credentials: AwsCredentialProvider = provider.clone();
                    (Some(credentials), Some(provider))
                }
                (None, Some(key_id), Some(secret)) => {
                    (fixed(key_id, secret, config.session_token.as_ref()), None)
                }
                _ => match self.options.server_identity_for(config) {
                    Some(server) => (
                        fixed(&server.key_id, &server.secret_key, server.token.as_ref()),
                        None,
                    ),
                    None => (None, None),
                },
            },
        )
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
        if self.iam_role {
            "s3s"
        } else {
            "s3"
        }
    }

    fn title(&self) -> &'static str {
        if self.iam_role {
            "Amazon S3 with IAM Role"
        } else {
            "AWS S3"
        }
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        let mut fields = fields(kind);
        if self.iam_role {
            for spec in &mut fields {
                if spec.name == "role_arn" {
                    spec.help = "AWS RoleArn: the IAM role the server assumes (STS AssumeRole) to \
                                 reach the bucket; required on create and validate";
                }
            }
            fields.push(FieldSpec::boolean(
                "legacy_auth",
                false,
                "Label Studio Enterprise's pre-2025 trust principal; stored and returned, no \
                 effect here (this server has one base identity)",
            ));
        }
        fields
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::bucket("s3")
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let config = S3Config::from_settings(settings);
        let mut errors = config.check(settings).err().unwrap_or_default();
        if self.iam_role
            && config
                .role_arn
                .as_deref()
                .is_none_or(|arn| arn.trim().is_empty())
        {
            errors.add("role_arn", "This field is required.");
        }
        let endpoints = [
            ("s3_endpoint", config.endpoint.as_deref()),
            (SQS_QUEUE_URL_FIELD, settings.str(SQS_QUEUE_URL_FIELD)),
        ];
        for (field, url) in endpoints {
            if let Some(url) = url {
                if let Err(Error::InvalidConfig(e)) = self
                    .options
                    .bucket
                    .endpoint_policy()
                    .check_literal(field, url)
                {
                    errors.merge(e);
                }
            }
        }
        if let Err(e) = storage_core::fields::check_import_rules(settings, kind) {
            errors.merge(e);
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let config = S3Config::from_settings(settings);
        let (store, role) = self.open(&config).await?;
        let store = Arc::new(store);
        // A keyless storage signs nothing: `/resolve` streams its objects
        // through the server instead of redirecting (docs/security.md).
        let signer: Option<Arc<dyn UrlSigner>> = if self.signs(&config) {
            Some(Arc::new(S3Signer {
                store: store.clone(),
                role: role.clone(),
            }))
        } else {
            None
        };
        let inner = target(&config, store).import(settings, signer)?;
        Ok(match role {
            Some(role) => Arc::new(RoleImport { inner, role }),
            None => Arc::new(inner),
        })
    }

    async fn event_feed(
        &self,
        settings: &Settings,
    ) -> Result<Option<Box<dyn storage_core::events::EventFeed>>> {
        let Some(queue) = settings.str(SQS_QUEUE_URL_FIELD) else {
            return Ok(None);
        };
        let config = S3Config::from_settings(settings);
        let shared = &self.options.bucket;
        let url = shared
            .endpoint_policy()
            .check(SQS_QUEUE_URL_FIELD, queue)
            .await?;
        let client = shared.client_options(Some(&url));
        let (credentials, _) = self.credentials(&config, &client)?;
        let http = object_store::client::HttpConnector::connect(&shared.http_connector(), &client)
            .map_err(|e| {
                Error::from_object_store(format!("connecting to the SQS queue {queue}"), e)
            })?;
        // `sqs.<region>.amazonaws.com/<account>/<queue>` names its region.
        let region = url
            .host_str()
            .and_then(|host| host.strip_prefix("sqs."))
            .and_then(|host| host.strip_suffix(".amazonaws.com"))
            .map_or_else(|| config.region().to_string(), str::to_string);
        // A long poll must end well before the client's timeout.
        let wait = (shared.timeout() / 2).clamp(Duration::from_secs(1), Duration::from_secs(20));
        Ok(Some(Box::new(
            SqsFeed::new(url, region, config.bucket.clone(), http, credentials).with_wait(wait),
        )))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let config = S3Config::from_settings(settings);
        let (store, role) = self.open(&config).await?;
        let inner = target(&config, Arc::new(store)).export(settings);
        Ok(match role {
            Some(role) => Arc::new(RoleExport { inner, role }),
            None => Arc::new(inner),
        })
    }
}

/// An import storage whose connection check first assumes the role, so
/// that a refused AssumeRole is reported as such (not as a bucket error).
#[derive(Debug)]
struct RoleImport {
    inner: BucketImport,
    role: Arc<AssumeRole>,
}

#[async_trait]
impl ImportStorage for RoleImport {
    fn store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.inner.store()
    }
    fn listing(&self) -> &storage_core::filter::Listing {
        self.inner.listing()
    }
    fn object_key(&self, location: &Path) -> String {
        self.inner.object_key(location)
    }
    fn task_url(&self, location: &Path) -> String {
        self.inner.task_url(location)
    }
    async fn check_connection(&self) -> Result<()> {
        role_works(&self.role).await?;
        self.inner.check_connection().await
    }
    async fn signed_url(&self, location: &Path, ttl: Duration) -> Result<String> {
        self.inner.signed_url(location, ttl).await
    }
}

/// The export counterpart of [`RoleImport`].
#[derive(Debug)]
struct RoleExport {
    inner: BucketExport,
    role: Arc<AssumeRole>,
}

#[async_trait]
impl ExportStorage for RoleExport {
    fn store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.inner.store()
    }
    fn location(&self, key: &str) -> Path {
        self.inner.location(key)
    }
    fn can_delete_objects(&self) -> bool {
        self.inner.can_delete_objects()
    }
    async fn check_connection(&self) -> Result<()> {
        role_works(&self.role).await?;
        self.inner.check_connection().await
    }
}

/// Assumes the role now (validation proves the trust policy as it is
/// today, not a cached session) and says in words what to fix when STS
/// refuses: never STS's own text, which may name the server's principal.
async fn role_works(role: &AssumeRole) -> Result<()> {
    role.assume_now()
        .await
        .map_err(|err| assume_failure(role.config(), &err))
}

fn assume_failure(config: &AssumeRoleConfig, err: &object_store::Error) -> Error {
    let failure = Failure::of(err);
    let fix = match err {
        object_store::Error::PermissionDenied { .. } => {
            "AWS STS denied sts:AssumeRole (AccessDenied). The role's trust policy must allow \
             this server's AWS identity to assume it, and when it has an sts:ExternalId \
             condition, external_id must be exactly that value"
                .to_string()
        }
        object_store::Error::Unauthenticated { .. } => {
            "AWS STS did not accept the credentials the role is assumed with (the storage's \
             aws_access_key_id/aws_secret_access_key if set, else the server's own): check that \
             they are valid and active"
                .to_string()
        }
        _ if failure.unreachable => format!(
            "the STS endpoint {} cannot be reached; check the server's --sts-endpoint and its \
             network",
            config.sts_endpoint
        ),
        _ => match (&failure.code, failure.status) {
            (Some(code), _) => format!(
                "AWS STS refused it ({code}); check role_arn, the role's maximum session \
                 duration and region_name"
            ),
            (None, Some(status)) => format!(
                "the STS endpoint {} answered HTTP {status}, not an AssumeRole result",
                config.sts_endpoint
            ),
            (None, None) => format!(
                "the STS endpoint {} gave no usable answer",
                config.sts_endpoint
            ),
        },
    };
    Error::invalid_general(format!("Cannot assume role {}: {fix}", config.role_arn))
}

fn target(config: &S3Config, store: Arc<AmazonS3>) -> BucketTarget {
    let (bucket, prefix, endpoint, role) = (
        config.bucket.clone(),
        config.prefix.clone(),
        config.endpoint.clone(),
        config.role_arn.clone(),
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
            explain(
                err,
                &bucket,
                prefix.as_deref(),
                endpoint.as_deref(),
                role.as_deref(),
            )
            .with_credential_fields(fields)
        }),
    }
}

/// SigV4 presigned GET URLs from the storage's own client. Those of a
/// role's session end with the session: a URL that says it is valid longer
/// would fail with `ExpiredToken` part way.
#[derive(Debug)]
struct S3Signer {
    store: Arc<AmazonS3>,
    role: Option<Arc<AssumeRole>>,
}

/// A presigned URL shorter than this is of no use to a browser.
const MIN_PRESIGN: Duration = Duration::from_secs(1);

#[async_trait]
impl UrlSigner for S3Signer {
    async fn signed_url(
        &self,
        location: &Path,
        ttl: Duration,
        response_content_type: Option<&str>,
    ) -> Result<String> {
        let mut ttl = ttl;
        if let Some(role) = &self.role {
            // Refreshes first when the session is about to end; the URL is
            // then signed with this session or a later one.
            role.get_credential()
                .await
                .map_err(|e| assume_failure(role.config(), &e))?;
            let left = role.session_left().await.unwrap_or_default();
            if left < MIN_PRESIGN {
                return Err(Error::invalid_general(format!(
                    "Cannot sign {location}: the session of role {} has expired",
                    role.config().role_arn
                )));
            }
            ttl = ttl.min(left);
        }
        self.store
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
fn explain(
    err: Error,
    bucket: &str,
    prefix: Option<&str>,
    endpoint: Option<&str>,
    role: Option<&str>,
) -> Error {
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
        match role {
            // The role was assumed (validation checks that first): what it
            // lacks is a permission on the bucket.
            Some(role) => format!(
                "Cannot connect to S3 {bucket} as role {role}: access denied. The role's \
                 permissions policy must allow s3:ListBucket on the bucket and s3:GetObject on \
                 its objects (s3:PutObject and s3:DeleteObject to export)"
            ),
            None => format!(
                "Cannot connect to S3 {bucket} with specified AWS credentials: access denied"
            ),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Error {
        Error::from_object_store(
            "listing",
            object_store::Error::PermissionDenied {
                path: "b".into(),
                source: "AccessDenied".into(),
            },
        )
    }

    #[test]
    fn the_queue_url_obeys_the_endpoint_policy() {
        let backend = S3Backend::new(
            S3Options::new().with_endpoint_policy(storage_core::EndpointPolicy::strict()),
        );
        let specs = backend.fields(StorageKind::Import);
        for (url, says) in [
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
            ("not a url", "not a valid URL"),
        ] {
            let mut settings = Settings::defaults(&specs);
            settings.set("bucket", "b".into());
            settings.set(SQS_QUEUE_URL_FIELD, url.into());
            let Err(Error::InvalidConfig(errors)) =
                backend.check_settings(StorageKind::Import, &mut settings)
            else {
                panic!("{url} was accepted");
            };
            let text = errors.to_string();
            assert!(
                text.contains(SQS_QUEUE_URL_FIELD) && text.contains(says),
                "{text}"
            );
        }
    }

    #[test]
    fn access_denied_names_the_missing_role_permissions() {
        let message = explain(
            denied(),
            "b",
            None,
            None,
            Some("arn:aws:iam::123456789012:role/r"),
        )
        .to_string();
        assert!(
            message.contains("as role arn:aws:iam::123456789012:role/r: access denied")
                && message.contains("s3:ListBucket"),
            "{message}"
        );
        let message = explain(denied(), "b", None, None, None).to_string();
        assert!(
            message.contains("with specified AWS credentials: access denied"),
            "{message}"
        );
    }
}

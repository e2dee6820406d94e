//! The `databricks` storage type: builds a [`FilesApiStore`] from a
//! storage's settings and words Databricks' failures for users.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use sha2::{Digest, Sha256};
use storage_core::bucket::{short_cause, BucketExport, BucketImport, BucketTarget};
use storage_core::failure::Failure;
use storage_core::filter::Listing;
use storage_core::uri::BucketUri;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, FieldSpec, ImportStorage, Result, Settings,
    StorageKind, Unlisted,
};

use crate::config::{
    fields, AuthType, DatabricksConfig, DatabricksOptions, AUTH_TYPE_FIELD, CLIENT_ID_FIELD,
    CLIENT_SECRET_FIELD, HOST_FIELD, TENANT_ID_FIELD, TOKEN_FIELD,
};
use crate::store::{FilesApiStore, StoreConfig};
use crate::token::{Credential, Grant, OAuthToken};

/// The URI scheme of Databricks objects in task data
/// (`dbx://Volumes/<catalog>/<schema>/<volume>/<path>`).
pub const URI_SCHEME: &str = "dbx";

/// Which token cache serves an identity: the secret only as its hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    auth: AuthType,
    token_url: String,
    client_id: String,
    secret_sha256: [u8; 32],
    verify_tls: bool,
}

/// The `databricks` storage type.
///
/// ```
/// use storage_core::Backend;
/// let backend = storage_databricks::DatabricksBackend::new(Default::default());
/// assert_eq!(backend.name(), "databricks");
/// assert!(!backend.capabilities().presign);
/// ```
#[derive(Debug, Default)]
pub struct DatabricksBackend {
    options: DatabricksOptions,
    /// One OAuth token per identity, shared by every storage and sync.
    tokens: Mutex<HashMap<Identity, Arc<OAuthToken>>>,
}

impl std::fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthToken").finish_non_exhaustive()
    }
}

impl DatabricksBackend {
    /// A backend with these server-wide options.
    pub fn new(options: DatabricksOptions) -> Self {
        Self {
            options,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The store of a checked configuration: the workspace host passes the
    /// endpoint policy first, and every request is checked again.
    pub async fn store(&self, config: &DatabricksConfig) -> Result<FilesApiStore> {
        let shared = &self.options.bucket;
        let url = shared
            .endpoint_policy()
            .check(HOST_FIELD, &config.host)
            .await?;
        let options = object_store::ClientOptions::new()
            .with_allow_http(url.scheme() == "http")
            .with_allow_invalid_certificates(!config.verify_tls);
        let client = shared
            .endpoint_policy()
            .connector()
            .with_timeout(config.request_timeout)
            .connect_with(&options)?;
        let credential = self.credential(config, &client)?;
        Ok(FilesApiStore::new(StoreConfig {
            host: config.host.clone(),
            volume_path: config.volume_path(),
            client,
            credential,
            retry: shared.call_retry(),
            chunk_bytes: config.stream_chunk_bytes,
            list_concurrency: self.options.list_concurrency,
        }))
    }

    fn credential(
        &self,
        config: &DatabricksConfig,
        host_client: &object_store::client::HttpClient,
    ) -> Result<Credential> {
        let auth = config
            .auth_type
            .ok_or_else(|| Error::invalid(AUTH_TYPE_FIELD, "Use pat, dbx_sp or azure_ad_sp."))?;
        let required = |field: &str, value: &Option<String>| {
            value.clone().ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "This field is required when auth_type is {}.",
                        auth.as_str()
                    ),
                )
            })
        };
        let (token_url, client) = match auth {
            AuthType::Pat => {
                return Ok(Credential::Pat(Arc::from(required(
                    TOKEN_FIELD,
                    &config.token,
                )?)))
            }
            AuthType::DatabricksServicePrincipal => (
                format!("{}/oidc/v1/token", config.host),
                host_client.clone(),
            ),
            AuthType::AzureServicePrincipal => {
                let tenant = required(TENANT_ID_FIELD, &config.tenant_id)?;
                // The operator's authority host: trusted, outside the
                // endpoint policy, no redirect followed.
                let authority = &self.options.authority_host;
                let client = storage_core::EndpointPolicy::allow_private()
                    .with_env_proxy(self.options.bucket.endpoint_policy().uses_env_proxy())
                    .connector()
                    .with_timeout(config.request_timeout)
                    .connect_with(
                        &object_store::ClientOptions::new()
                            .with_allow_http(authority.starts_with("http://")),
                    )?;
                (format!("{authority}/{tenant}/oauth2/v2.0/token"), client)
            }
        };
        let client_id = required(CLIENT_ID_FIELD, &config.client_id)?;
        let secret = required(CLIENT_SECRET_FIELD, &config.client_secret)?;
        let identity = Identity {
            auth,
            token_url: token_url.clone(),
            client_id: client_id.clone(),
            secret_sha256: Sha256::digest(secret.as_bytes()).into(),
            verify_tls: config.verify_tls,
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let token = tokens
            .entry(identity)
            .or_insert_with(|| {
                Arc::new(OAuthToken::new(
                    Grant {
                        auth,
                        url: token_url,
                        client_id,
                        client_secret: secret,
                    },
                    client,
                    self.options.bucket.call_retry(),
                ))
            })
            .clone();
        Ok(Credential::OAuth(token))
    }

    async fn target(&self, settings: &Settings) -> Result<(BucketTarget, FilesApiStore)> {
        let config = DatabricksConfig::from_settings(settings);
        let store = self.store(&config).await?;
        let explained = config.clone();
        let target = BucketTarget {
            store: Arc::new(store.clone()),
            uri: bucket_uri(&config),
            prefix: config.prefix.clone(),
            explain: Arc::new(move |err| explain(err, &explained)),
        };
        Ok((target, store))
    }
}

/// `dbx://Volumes/<catalog>/<schema>/<volume>/…`: the "bucket" is the
/// volume's path, so URIs of another volume never match.
fn bucket_uri(config: &DatabricksConfig) -> BucketUri {
    BucketUri::new(
        URI_SCHEME,
        config.volume_path().trim_start_matches('/').to_string(),
    )
}

/// An error building a client, worded for users.
trait ConnectWith {
    fn connect_with(
        &self,
        options: &object_store::ClientOptions,
    ) -> Result<object_store::client::HttpClient>;
}

impl ConnectWith for storage_core::endpoint::PolicyConnector {
    fn connect_with(
        &self,
        options: &object_store::ClientOptions,
    ) -> Result<object_store::client::HttpClient> {
        use object_store::client::HttpConnector;
        self.connect(options)
            .map_err(|e| Error::from_object_store("building the Databricks HTTP client", e))
    }
}

#[async_trait]
impl Backend for DatabricksBackend {
    fn name(&self) -> &'static str {
        "databricks"
    }

    fn title(&self) -> &'static str {
        "Databricks Files (UC Volumes)"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        fields(kind)
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::bucket(URI_SCHEME);
        // Databricks has no signed URLs: media is always proxied.
        capabilities.presign = false;
        capabilities
    }

    fn bucket_field(&self) -> &'static str {
        "volume"
    }

    fn bucket_uri(&self, settings: &Settings) -> Option<BucketUri> {
        Some(bucket_uri(&DatabricksConfig::from_settings(settings)))
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let config = DatabricksConfig::from_settings(settings);
        let mut errors = config.check(settings);
        if let Err(e) = storage_core::fields::check_import_rules(settings, kind) {
            errors.merge(e);
        }
        if errors.is_empty() {
            // The policy's literal checks (scheme, IP literals, localhost)
            // before anything is saved; names are resolved when used.
            if let Err(Error::InvalidConfig(refused)) = self
                .options
                .bucket
                .endpoint_policy()
                .check_literal(HOST_FIELD, &config.host)
            {
                errors.merge(refused);
            }
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let (target, store) = self.target(settings).await?;
        let config = DatabricksConfig::from_settings(settings);
        Ok(Arc::new(DatabricksImport {
            inner: target.import(settings, None)?,
            store,
            config,
        }))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let (target, store) = self.target(settings).await?;
        let config = DatabricksConfig::from_settings(settings);
        Ok(Arc::new(DatabricksExport {
            inner: target.export(settings),
            store,
            config,
        }))
    }
}

/// A bucket import whose connection check gets the token first, so a
/// refused credential is reported as such.
#[derive(Debug)]
struct DatabricksImport {
    inner: BucketImport,
    store: FilesApiStore,
    config: DatabricksConfig,
}

#[async_trait]
impl ImportStorage for DatabricksImport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store()
    }

    fn listing(&self) -> &Listing {
        self.inner.listing()
    }

    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list()
    }

    fn object_key(&self, location: &Path) -> String {
        self.inner.object_key(location)
    }

    fn task_url(&self, location: &Path) -> String {
        self.inner.task_url(location)
    }

    async fn check_connection(&self) -> Result<()> {
        self.store
            .bearer()
            .await
            .map_err(|e| explain(e, &self.config))?;
        self.inner.check_connection().await
    }

    /// Never signed: the server proxies Databricks objects.
    async fn signed_url(&self, location: &Path, ttl: Duration) -> Result<String> {
        self.inner.signed_url(location, ttl).await
    }

    fn take_unlisted(&self) -> Unlisted {
        self.inner.take_unlisted()
    }
}

/// A bucket export whose connection check gets the token first.
#[derive(Debug)]
struct DatabricksExport {
    inner: BucketExport,
    store: FilesApiStore,
    config: DatabricksConfig,
}

#[async_trait]
impl ExportStorage for DatabricksExport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store()
    }

    fn location(&self, key: &str) -> Path {
        self.inner.location(key)
    }

    fn can_delete_objects(&self) -> bool {
        self.inner.can_delete_objects()
    }

    async fn check_connection(&self) -> Result<()> {
        self.store
            .bearer()
            .await
            .map_err(|e| explain(e, &self.config))?;
        self.inner.check_connection().await
    }
}

/// Turns a failed connection check into what to fix: missing volume or
/// prefix, rejected credentials (naming the fields of the storage's
/// `auth_type`), missing permission, unreachable workspace. Databricks'
/// own `message` is quoted; secrets never are.
pub fn explain(err: Error, config: &DatabricksConfig) -> Error {
    let volume = format!("{}.{}.{}", config.catalog, config.schema, config.volume);
    let auth = config.auth_type.unwrap_or(AuthType::Pat);
    // A token request that was refused already names its fields.
    if let Error::CredentialsRejected { fields, .. } = &err {
        if !fields.is_empty() {
            return err;
        }
    }
    let mut source = std::error::Error::source(&err);
    let mut refused = None;
    while let Some(e) = source {
        if let Some(core @ Error::CredentialsRejected { fields, .. }) = e.downcast_ref::<Error>() {
            if !fields.is_empty() {
                refused = Some(core);
                break;
            }
        }
        source = e.source();
    }
    if let Some(Error::CredentialsRejected {
        fields,
        code,
        message,
    }) = refused
    {
        return Error::CredentialsRejected {
            fields: fields.clone(),
            code: code.clone(),
            message: message.clone(),
        };
    }
    if let Error::InvalidConfig(_) = err {
        return match &config.prefix {
            Some(prefix) => Error::invalid_general(format!(
                "{URI_SCHEME}:/{}/{} not found: volume or prefix not found (catalog {}, schema {}, volume {}).",
                config.volume_path(),
                prefix.trim_matches('/'),
                config.catalog,
                config.schema,
                config.volume
            )),
            None => err,
        };
    }
    let failure = Failure::of(&err);
    let message = if failure.status == Some(404) || matches!(err, Error::NotFound { .. }) {
        format!(
            "Volume or prefix not found: Cannot find bucket {} (catalog {}, schema {}, volume {}: {} does not exist or is not visible to this principal)",
            config.volume,
            config.catalog,
            config.schema,
            config.volume,
            config.volume_path()
        )
    } else if failure.status == Some(401) || matches!(err, Error::CredentialsRejected { .. }) {
        let fields = auth.credential_fields();
        return Error::CredentialsRejected {
            fields: fields.iter().map(|f| (*f).to_string()).collect(),
            code: failure.code,
            message: match auth {
                AuthType::Pat => format!(
                    "Databricks rejected the token for volume {volume} (401 Unauthorized): check token (a personal access token of this workspace that has not expired)"
                ),
                _ => format!(
                    "Databricks rejected the service principal's token for volume {volume} (401 Unauthorized): check that client_id belongs to this workspace"
                ),
            },
        };
    } else if failure.status == Some(403) || matches!(err, Error::PermissionDenied { .. }) {
        format!(
            "Access denied to volume {volume} (403 Forbidden): the principal needs USE CATALOG, USE SCHEMA and READ VOLUME (WRITE VOLUME to export) on it"
        )
    } else if failure.unreachable {
        format!(
            "Cannot reach the Databricks workspace {}: {}",
            config.host,
            short_cause(&err)
        )
    } else {
        format!(
            "Cannot connect to Databricks volume {volume}: {}",
            short_cause(&err)
        )
    };
    Error::invalid_general(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_carry_the_volume_path() {
        let mut settings = Settings::default();
        for (k, v) in [
            ("host", "https://h"),
            ("catalog", "c"),
            ("schema", "s"),
            ("volume", "v"),
        ] {
            settings.set(k, v.into());
        }
        let backend = DatabricksBackend::default();
        let uri = backend.bucket_uri(&settings).unwrap();
        assert_eq!(uri.uri("a/b.jpg"), "dbx://Volumes/c/s/v/a/b.jpg");
        assert_eq!(
            uri.location("dbx://Volumes/c/s/v/a/b.jpg")
                .unwrap()
                .as_ref(),
            "a/b.jpg"
        );
        assert!(uri.location("dbx://Volumes/c/s/other/a.jpg").is_none());
    }
}

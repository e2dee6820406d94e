//! The `azure` storage type: builds a `MicrosoftAzure` store from a
//! storage's account name and key, and maps Azure's failures to messages a
//! user can act on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::azure::{AzureAccessKey, AzureCredential, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, StaticCredentialProvider};
use storage_core::bucket::{short_cause, BucketImport, BucketTarget, UrlSigner};
use storage_core::failure::Failure;
use storage_core::filter::Listing;
use storage_core::uri::BucketUri;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, FieldSpec, ImportStorage, Result, Settings,
    StorageKind, Unlisted,
};
use tokio::sync::Mutex;

use crate::config::{fields, AzureConfig, AzureOptions, ACCOUNT_NAME_FIELD, CREDENTIAL_FIELDS};
use crate::signer::BlobSas;

/// The URI scheme of Azure Blob objects in task data.
pub const URI_SCHEME: &str = "azure-blob";

/// The `azure` storage type (Azure Blob Storage with an account key).
///
/// ```
/// use storage_core::Backend;
/// let backend = storage_azure::AzureBackend::new(storage_azure::AzureOptions::new());
/// assert_eq!((backend.name(), backend.title()), ("azure", "Microsoft Azure"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct AzureBackend {
    options: AzureOptions,
}

/// A built store and what signing needs.
struct Built {
    store: Arc<MicrosoftAzure>,
    account_url: String,
}

impl AzureBackend {
    /// A backend with these server-wide options.
    pub fn new(options: AzureOptions) -> Self {
        Self { options }
    }

    /// Builds the store of a checked configuration. Only the storage's
    /// account key signs: object_store's other credential sources (the
    /// environment, Azure CLI, managed identity through the instance
    /// metadata service) are never consulted.
    pub async fn store(&self, config: &AzureConfig) -> Result<Arc<MicrosoftAzure>> {
        Ok(self.build(config).await?.store)
    }

    async fn build(&self, config: &AzureConfig) -> Result<Built> {
        let shared = &self.options.bucket;
        let (Some(account), Some(key)) = (&config.account_name, &config.account_key) else {
            return Err(Error::invalid(
                ACCOUNT_NAME_FIELD,
                "Azure account name and key must be set using the account_name and account_key fields.",
            ));
        };
        let account_url = self.options.account_url(account);
        let url = shared
            .endpoint_policy()
            .check(ACCOUNT_NAME_FIELD, &account_url)
            .await
            .map_err(|err| endpoint_refused(err, account))?;
        let key = AzureAccessKey::try_new(key.trim()).map_err(|_| {
            Error::invalid(
                crate::config::ACCOUNT_KEY_FIELD,
                "Not a valid Azure storage account key: it is the base64 text shown under \"Access keys\" of the storage account.",
            )
        })?;
        let store = MicrosoftAzureBuilder::new()
            .with_account(account)
            .with_container_name(&config.container)
            .with_endpoint(account_url.clone())
            .with_credentials(Arc::new(StaticCredentialProvider::new(
                AzureCredential::AccessKey(key),
            )))
            .with_retry(shared.retry().clone())
            .with_client_options(shared.client_options(Some(&url)))
            .with_http_connector(shared.http_connector())
            .build()
            .map_err(|e| {
                Error::invalid_general(format!(
                    "Cannot configure Azure container {}: {}",
                    config.container,
                    storage_core::redact::without_secrets(&e.to_string(), [account.as_str()])
                ))
            })?;
        Ok(Built {
            store: Arc::new(store),
            account_url,
        })
    }

    fn target(&self, config: &AzureConfig, store: Arc<MicrosoftAzure>) -> BucketTarget {
        let (container, prefix) = (config.container.clone(), config.prefix.clone());
        BucketTarget {
            store,
            uri: BucketUri::new(URI_SCHEME, &config.container),
            prefix: config.prefix.clone(),
            explain: Arc::new(move |err| {
                explain(err, &container, prefix.as_deref())
                    .with_credential_fields(CREDENTIAL_FIELDS)
            }),
        }
    }
}

/// The endpoint policy refused the account's endpoint: the operator's
/// configuration, worded without the (write-only) account name.
fn endpoint_refused(err: Error, account: &str) -> Error {
    let reason = match &err {
        Error::InvalidConfig(errors) => errors
            .messages(ACCOUNT_NAME_FIELD)
            .join("; ")
            .replace(account, "{account}"),
        other => other.to_string().replace(account, "{account}"),
    };
    Error::invalid_general(format!(
        "The server's Azure Blob endpoint is refused by its endpoint policy: {reason} \
         (the operator sets it with --azure-blob-endpoint)"
    ))
}

#[async_trait]
impl Backend for AzureBackend {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn push_format(&self) -> Option<storage_core::events::PushFormat> {
        Some(crate::event_grid::PUSH_FORMAT)
    }

    fn title(&self) -> &'static str {
        "Microsoft Azure"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        fields(kind)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::bucket(URI_SCHEME)
    }

    fn bucket_field(&self) -> &'static str {
        "container"
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let config = AzureConfig::from_settings(settings);
        let mut errors = config.check(settings);
        if let Err(e) = storage_core::fields::check_import_rules(settings, kind) {
            errors.merge(e);
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let config = AzureConfig::from_settings(settings);
        let built = self.build(&config).await?;
        let signer = Arc::new(AzureSigner {
            account_url: built.account_url,
            account: config.account_name.clone().unwrap_or_default(),
            key: config.key_bytes().unwrap_or_default(),
            container: config.container.clone(),
        });
        let inner = self
            .target(&config, built.store.clone())
            .import(settings, Some(signer))?;
        Ok(Arc::new(AzureImport {
            inner,
            store: built.store,
        }))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let config = AzureConfig::from_settings(settings);
        let built = self.build(&config).await?;
        Ok(Arc::new(self.target(&config, built.store).export(settings)))
    }
}

/// A bucket import whose recursive listing leaves out folder placeholder
/// blobs (`dir/`, zero bytes, as tools that emulate folders write them).
///
/// object_store names such a blob `dir` (it trims the trailing `/`), so it
/// looks like a zero-byte file. A zero-byte object is taken for a
/// placeholder when its parent's delimited listing shows it as a folder;
/// the listing of each such parent is made once per sync, and only for
/// zero-byte objects. Direct-children listings never show placeholders
/// (Azure reports them as folders).
#[derive(Debug)]
pub(crate) struct AzureImport {
    pub(crate) inner: BucketImport,
    pub(crate) store: Arc<MicrosoftAzure>,
}

#[async_trait]
impl ImportStorage for AzureImport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store()
    }

    fn listing(&self) -> &Listing {
        self.inner.listing()
    }

    fn list_within(&self, listing: &Listing) -> BoxStream<'static, Result<ObjectMeta>> {
        let listed = self.inner.list_within(listing);
        if !listing.recursive {
            return listed;
        }
        let store: Arc<dyn ObjectStore> = self.store.clone();
        let folders: Arc<Mutex<HashMap<Option<Path>, HashSet<Path>>>> = Arc::default();
        listed
            .filter_map(move |item| {
                let (store, folders) = (store.clone(), folders.clone());
                async move {
                    match item {
                        Ok(meta) if meta.size == 0 => {
                            match is_placeholder(&store, &folders, &meta.location).await {
                                Ok(true) => None,
                                Ok(false) => Some(Ok(meta)),
                                Err(err) => Some(Err(err)),
                            }
                        }
                        other => Some(other),
                    }
                }
            })
            .boxed()
    }

    fn object_key(&self, location: &Path) -> String {
        self.inner.object_key(location)
    }

    fn task_url(&self, location: &Path) -> String {
        self.inner.task_url(location)
    }

    async fn check_connection(&self) -> Result<()> {
        self.inner.check_connection().await
    }

    async fn signed_url(&self, location: &Path, ttl: Duration) -> Result<String> {
        self.inner.signed_url(location, ttl).await
    }

    fn take_unlisted(&self) -> Unlisted {
        self.inner.take_unlisted()
    }
}

/// Whether the zero-byte object at `location` is a folder placeholder: its
/// parent's delimited listing shows `location` as a folder.
async fn is_placeholder(
    store: &Arc<dyn ObjectStore>,
    folders: &Mutex<HashMap<Option<Path>, HashSet<Path>>>,
    location: &Path,
) -> Result<bool> {
    let parts: Vec<_> = location.parts().collect();
    let parent =
        (parts.len() > 1).then(|| Path::from_iter(parts[..parts.len() - 1].iter().cloned()));
    let mut folders = folders.lock().await;
    if !folders.contains_key(&parent) {
        let listing = store
            .list_with_delimiter(parent.as_ref())
            .await
            .map_err(|e| {
                Error::from_object_store(format!("listing the folders of {location}"), e)
            })?;
        folders.insert(
            parent.clone(),
            listing.common_prefixes.into_iter().collect(),
        );
    }
    Ok(folders
        .get(&parent)
        .is_some_and(|known| known.contains(location)))
}

/// Read-only service SAS URLs signed with the storage's account key.
struct AzureSigner {
    account_url: String,
    account: String,
    key: Vec<u8>,
    container: String,
}

impl std::fmt::Debug for AzureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSigner")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl UrlSigner for AzureSigner {
    async fn signed_url(
        &self,
        location: &Path,
        ttl: Duration,
        response_content_type: Option<&str>,
    ) -> Result<String> {
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::invalid("presign_ttl", "The signed URL lifetime is too long."))?;
        BlobSas {
            account_url: &self.account_url,
            account: &self.account,
            key: &self.key,
            container: &self.container,
            blob: location.as_ref(),
        }
        .url(chrono::Utc::now() + ttl, response_content_type)
        .map_err(|e| Error::backend(format!("signing {location}"), e))
    }
}

/// Turns a failed connection check into the message a user needs: which of
/// container, prefix, credentials, permissions or endpoint is wrong, decided
/// from the HTTP status and Azure's error code. The provider's body and the
/// account name are never quoted.
pub fn explain(err: Error, container: &str, prefix: Option<&str>) -> Error {
    if let Error::InvalidConfig(_) = err {
        return match prefix {
            Some(prefix) => {
                Error::invalid_general(format!("{URI_SCHEME}://{container}/{prefix} not found."))
            }
            None => err,
        };
    }
    let failure = Failure::of(&err);
    let message = if failure.code_is("ContainerNotFound")
        || (failure.status == Some(404) && failure.code.is_none())
        || matches!(err, Error::NotFound { .. })
    {
        format!(
            "Container not found: {container} (Cannot find bucket {container} in this Azure storage account)"
        )
    } else if failure.credentials_rejected()
        || matches!(err, Error::CredentialsRejected { .. })
        || signature_refused(&err, &failure)
    {
        return Error::CredentialsRejected {
            fields: Vec::new(),
            code: failure.code,
            message: format!(
                "Azure rejected the account key for container {container}: check account_name and account_key (the storage account's \"Access keys\")"
            ),
        };
    } else if failure.status == Some(403) || matches!(err, Error::PermissionDenied { .. }) {
        format!(
            "Access denied to Azure container {container}: the account key may not list or read it (a firewall or network rule of the storage account may refuse this server)"
        )
    } else if failure.unreachable {
        format!(
            "Cannot reach Azure Blob Storage for container {container}: {}",
            short_cause(&err)
        )
    } else {
        format!(
            "Cannot connect to Azure container {container}: {}",
            short_cause(&err)
        )
    };
    Error::invalid_general(message)
}

/// Azurite answers a wrong key with `AuthorizationFailure` (Azure's code
/// for a request its network rules refuse) and the message of Azure's
/// `AuthenticationFailed`; only that message tells the two apart.
pub(crate) fn signature_refused(err: &Error, failure: &Failure) -> bool {
    failure.code_is("AuthorizationFailure")
        && storage_core::failure::chain_text(err, ": ").contains("Server failed to authenticate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_said(status: &str, code: &str) -> Error {
        Error::backend(
            "listing",
            format!("Error performing GET http://h/acct/c in 3ms - Server returned non-2xx status code: {status}: <?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>secret body</Message></Error>"),
        )
    }

    #[test]
    fn explains_by_azure_code() {
        let missing = explain(server_said("404 Not Found", "ContainerNotFound"), "c", None);
        assert!(
            missing.to_string().contains("Container not found: c"),
            "{missing}"
        );
        let key = explain(
            server_said("403 Forbidden", "AuthenticationFailed"),
            "c",
            None,
        )
        .with_credential_fields(CREDENTIAL_FIELDS);
        assert!(
            matches!(&key, Error::CredentialsRejected { fields, .. } if fields.len() == 2),
            "{key:?}"
        );
        assert!(!key.to_string().contains("secret body"));
        let denied = explain(
            server_said("403 Forbidden", "AuthorizationFailure"),
            "c",
            None,
        );
        assert!(denied.to_string().contains("Access denied"), "{denied}");
        let prefix = explain(Error::invalid_general("No objects"), "c", Some("p/"));
        assert!(
            prefix.to_string().contains("azure-blob://c/p/ not found."),
            "{prefix}"
        );
    }
}

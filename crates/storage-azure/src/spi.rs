//! The `azure_spi` storage type (Label Studio Enterprise's "Azure Blob
//! Storage with Service Principal"): the `azure` storage with Microsoft
//! Entra credentials instead of an account key.
//!
//! `auth_mode` `service_principal` gets tokens with the OAuth2
//! client-credentials grant (`tenant_id`, `client_id`, write-only
//! `client_secret`); `workload_identity` with the federated token file the
//! operator configures (a storage may name the `client_id` of a
//! user-assigned identity, never a secret). Tokens come from
//! `<authority host>/<tenant>/oauth2/v2.0/token` with the scope
//! `https://storage.azure.com/.default`, through object_store's own token
//! providers (the credential type is always named, so object_store never
//! falls back to the instance metadata service or the Azure CLI). One token
//! cache per identity is shared by every storage and sync that uses it,
//! and kept until five minutes before the token expires.
//!
//! Presigned URLs are user delegation SAS ([`crate::signer`]): the key
//! comes from Get User Delegation Key with the storage's token (valid
//! seven days), cached per account, container and identity, and replaced
//! when it would expire less than five minutes after the URL it signs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use object_store::azure::{
    AzureCredential, AzureCredentialProvider, MicrosoftAzure, MicrosoftAzureBuilder,
};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody};
use object_store::path::Path;
use sha2::{Digest, Sha256};
use storage_core::bucket::{BucketTarget, UrlSigner};
use storage_core::failure::Failure;
use storage_core::fields::{export_fields, import_fields, presign_fields, FieldSpec};
use storage_core::uri::BucketUri;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, ImportStorage, Result, Settings, StorageKind,
    ValidationErrors,
};

use crate::backend::{explain, signature_refused, AzureImport, URI_SCHEME};
use crate::config::{
    check_container, valid_account, AzureOptions, ACCOUNT_NAME_FIELD, INVALID_ACCOUNT,
};
use crate::signer::{BlobSas, DelegationKey, SAS_VERSION};

/// The field choosing how the storage authenticates.
pub const AUTH_MODE_FIELD: &str = "auth_mode";
/// The Entra tenant (directory) of the service principal.
pub const TENANT_ID_FIELD: &str = "tenant_id";
/// The application (client) id.
pub const CLIENT_ID_FIELD: &str = "client_id";
/// The client secret (write-only).
pub const CLIENT_SECRET_FIELD: &str = "client_secret";
/// Label Studio Enterprise's server-managed cache of the user delegation
/// key: accepted, never used from input, never answered.
pub const USER_DELEGATION_KEY_FIELD: &str = "user_delegation_key";
/// The fields holding a service principal's credentials.
pub const SPI_CREDENTIAL_FIELDS: &[&str] = &[TENANT_ID_FIELD, CLIENT_ID_FIELD, CLIENT_SECRET_FIELD];

/// The scope of every token: Azure Storage's data plane.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How an `azure_spi` storage authenticates (`auth_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// OAuth2 client credentials of an app registration.
    ServicePrincipal,
    /// The server's federated token (Kubernetes workload identity).
    WorkloadIdentity,
}

impl AuthMode {
    /// Label Studio's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServicePrincipal => "service_principal",
            Self::WorkloadIdentity => "workload_identity",
        }
    }

    fn parse(text: Option<&str>) -> Option<Self> {
        match text {
            None | Some("service_principal") => Some(Self::ServicePrincipal),
            Some("workload_identity") => Some(Self::WorkloadIdentity),
            Some(_) => None,
        }
    }
}

/// The `azure_spi` fields of `kind` storages, in the SDK's order.
fn fields(kind: StorageKind) -> Vec<FieldSpec> {
    let mut fields = vec![
        FieldSpec::string("container", "Azure Blob container name"),
        FieldSpec::string("prefix", "Azure Blob prefix (folder)"),
    ];
    match kind {
        StorageKind::Import => {
            fields.extend(import_fields());
            fields.extend(presign_fields());
        }
        StorageKind::Export => fields.extend(export_fields()),
    }
    let mut auth_mode = FieldSpec::string(
        AUTH_MODE_FIELD,
        "Authentication: service_principal (tenant_id, client_id, client_secret) or workload_identity (the server's federated token, optional client_id)",
    );
    auth_mode.default = serde_json::Value::String(AuthMode::ServicePrincipal.as_str().into());
    fields.extend([
        FieldSpec::string(ACCOUNT_NAME_FIELD, "Azure storage account name"),
        auth_mode,
        FieldSpec::string(TENANT_ID_FIELD, "Microsoft Entra tenant (directory) id"),
        FieldSpec::string(
            CLIENT_ID_FIELD,
            "Application (client) id; with workload_identity, a user-assigned identity's client id",
        ),
        FieldSpec::string(
            CLIENT_SECRET_FIELD,
            "Client secret of the app registration (write-only; service_principal only)",
        )
        .secret(),
        FieldSpec::string(
            USER_DELEGATION_KEY_FIELD,
            "User delegation key (managed by the server: accepted for compatibility, never used or returned)",
        )
        .secret(),
    ]);
    fields
}

/// An `azure_spi` storage's connection settings.
///
/// `Debug` leaves out the client secret.
#[derive(Clone, PartialEq)]
pub struct AzureSpiConfig {
    /// Container name.
    pub container: String,
    /// Folder prefix, as typed.
    pub prefix: Option<String>,
    /// Storage account name.
    pub account_name: Option<String>,
    /// The authentication mode; `None` when `auth_mode` names none known.
    pub auth_mode: Option<AuthMode>,
    /// Entra tenant id.
    pub tenant_id: Option<String>,
    /// Application (client) id.
    pub client_id: Option<String>,
    /// Client secret.
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for AzureSpiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSpiConfig")
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("account_name", &self.account_name)
            .field("auth_mode", &self.auth_mode)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl AzureSpiConfig {
    /// Reads the configuration from checked settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let text = |name: &str| settings.str(name).map(|s| s.trim().to_string());
        Self {
            container: text("container").unwrap_or_default(),
            prefix: settings.str("prefix").map(str::to_string),
            account_name: text(ACCOUNT_NAME_FIELD),
            auth_mode: AuthMode::parse(settings.str(AUTH_MODE_FIELD).map(str::trim)),
            tenant_id: text(TENANT_ID_FIELD),
            client_id: text(CLIENT_ID_FIELD),
            client_secret: settings.str(CLIENT_SECRET_FIELD).map(str::to_string),
        }
    }

    /// Static field rules (no network). Never echoes the client secret.
    fn check(&self, settings: &Settings) -> ValidationErrors {
        let mut errors = ValidationErrors::default();
        check_container(&self.container, &mut errors);
        match &self.account_name {
            None => errors.add(ACCOUNT_NAME_FIELD, "This field is required."),
            Some(name) if !valid_account(name) => errors.add(ACCOUNT_NAME_FIELD, INVALID_ACCOUNT),
            Some(_) => {}
        }
        match self.auth_mode {
            None => errors.add(
                AUTH_MODE_FIELD,
                format!(
                    "\"{}\" is not a valid choice: use service_principal or workload_identity.",
                    settings.str(AUTH_MODE_FIELD).unwrap_or_default()
                ),
            ),
            Some(AuthMode::ServicePrincipal) => {
                for (field, value) in [
                    (TENANT_ID_FIELD, &self.tenant_id),
                    (CLIENT_ID_FIELD, &self.client_id),
                    (CLIENT_SECRET_FIELD, &self.client_secret),
                ] {
                    if value.is_none() {
                        errors.add(
                            field,
                            "This field is required when auth_mode is service_principal.",
                        );
                    }
                }
            }
            Some(AuthMode::WorkloadIdentity) => {
                if self.client_secret.is_some() {
                    errors.add(
                        CLIENT_SECRET_FIELD,
                        "client_secret must be omitted when auth_mode is workload_identity: the server's federated token authenticates.",
                    );
                }
            }
        }
        if let Some(tenant) = &self.tenant_id {
            // The tenant goes into the token URL's path.
            if !valid_tenant(tenant) {
                errors.add(
                    TENANT_ID_FIELD,
                    "Not a valid Microsoft Entra tenant: a directory (tenant) id such as 72f988bf-86f1-41af-91ab-2d7cd011db47, or a domain such as contoso.onmicrosoft.com.",
                );
            }
        }
        storage_core::bucket::check_presign_ttl(settings, &mut errors);
        storage_core::bucket::check_prefix(settings, &mut errors);
        errors
    }
}

/// A tenant id (GUID) or a verified domain name.
fn valid_tenant(tenant: &str) -> bool {
    (1..=253).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !tenant.starts_with('.')
        && !tenant.contains("..")
}

/// Which token cache serves an identity: the secret only as its hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Identity {
    Secret {
        tenant: String,
        client: String,
        secret_sha256: [u8; 32],
    },
    Workload {
        tenant: String,
        client: String,
    },
}

/// A store and what signing with a user delegation key needs.
struct Opened {
    store: Arc<MicrosoftAzure>,
    account_url: String,
    account: String,
    credentials: AzureCredentialProvider,
    client: HttpClient,
    key: KeySlot,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

/// The `azure_spi` storage type.
///
/// ```
/// use storage_core::Backend;
/// let backend = storage_azure::AzureSpiBackend::new(storage_azure::AzureOptions::new());
/// assert_eq!(backend.name(), "azure_spi");
/// ```
#[derive(Debug)]
pub struct AzureSpiBackend {
    options: AzureOptions,
    /// One token provider per identity, shared by every storage and sync.
    identities: Mutex<HashMap<Identity, AzureCredentialProvider>>,
    /// One store per account, container and identity, so its user
    /// delegation key cache outlives a single request.
    stores: Mutex<HashMap<(String, String, Identity), Arc<Opened>>>,
}

impl AzureSpiBackend {
    /// A backend with these server-wide options (endpoint, authority host,
    /// workload identity).
    pub fn new(options: AzureOptions) -> Self {
        Self {
            options,
            identities: Mutex::new(HashMap::new()),
            stores: Mutex::new(HashMap::new()),
        }
    }

    fn identity(&self, config: &AzureSpiConfig) -> Result<Identity> {
        match config.auth_mode {
            Some(AuthMode::ServicePrincipal) | None => {
                let (Some(tenant), Some(client), Some(secret)) =
                    (&config.tenant_id, &config.client_id, &config.client_secret)
                else {
                    return Err(Error::invalid(
                        CLIENT_SECRET_FIELD,
                        "tenant_id, client_id and client_secret are required when auth_mode is service_principal.",
                    ));
                };
                Ok(Identity::Secret {
                    tenant: tenant.clone(),
                    client: client.clone(),
                    secret_sha256: Sha256::digest(secret.as_bytes()).into(),
                })
            }
            Some(AuthMode::WorkloadIdentity) => {
                let workload = &self.options.workload_identity;
                if workload.token_file.is_none() {
                    return Err(Error::invalid(
                        AUTH_MODE_FIELD,
                        "This server has no workload identity: its operator sets the federated token file with --azure-federated-token-file (AZURE_FEDERATED_TOKEN_FILE).",
                    ));
                }
                let tenant = config
                    .tenant_id
                    .clone()
                    .or_else(|| workload.tenant_id.clone())
                    .ok_or_else(|| {
                        Error::invalid(
                            TENANT_ID_FIELD,
                            "No tenant for the workload identity: set tenant_id, or the operator sets AZURE_TENANT_ID.",
                        )
                    })?;
                let client = config
                    .client_id
                    .clone()
                    .or_else(|| workload.client_id.clone())
                    .ok_or_else(|| {
                        Error::invalid(
                            CLIENT_ID_FIELD,
                            "No client id for the workload identity: set client_id, or the operator sets AZURE_CLIENT_ID.",
                        )
                    })?;
                Ok(Identity::Workload { tenant, client })
            }
        }
    }

    /// The shared token provider of `identity`, built once. Its token
    /// endpoint is the operator's authority host: trusted, so outside the
    /// endpoint policy, but no redirect is followed.
    fn credentials(
        &self,
        identity: &Identity,
        secret: Option<&str>,
    ) -> Result<AzureCredentialProvider> {
        let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = identities.get(identity) {
            return Ok(found.clone());
        }
        let shared = &self.options.bucket;
        let authority = self.options.authority_host.clone();
        let connector = storage_core::EndpointPolicy::allow_private()
            .with_env_proxy(shared.endpoint_policy().uses_env_proxy())
            .connector()
            .with_timeout(shared.timeout());
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account("credentials")
            .with_container_name("credentials")
            .with_authority_host(authority.clone())
            .with_retry(shared.retry().clone())
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(shared.timeout())
                    .with_allow_http(authority.starts_with("http://")),
            )
            .with_http_connector(connector);
        builder = match identity {
            Identity::Secret { tenant, client, .. } => builder
                .with_credential_type("client_secret")
                .with_client_secret_authorization(
                    client.clone(),
                    secret.unwrap_or_default().to_string(),
                    tenant.clone(),
                ),
            Identity::Workload { tenant, client } => builder
                .with_credential_type("workload_identity")
                .with_tenant_id(tenant.clone())
                .with_client_id(client.clone())
                .with_federated_token_file(
                    self.options
                        .workload_identity
                        .token_file
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
        };
        let store = builder.build().map_err(|_| {
            Error::invalid_general(
                "Cannot set up Microsoft Entra credentials: the server's --azure-authority-host is not usable",
            )
        })?;
        let provider = store.credentials().clone();
        identities.insert(identity.clone(), provider.clone());
        Ok(provider)
    }

    /// The store of a checked configuration, signed with the identity's
    /// tokens only.
    async fn store(&self, config: &AzureSpiConfig) -> Result<Arc<Opened>> {
        let shared = &self.options.bucket;
        let Some(account) = &config.account_name else {
            return Err(Error::invalid(
                ACCOUNT_NAME_FIELD,
                "This field is required.",
            ));
        };
        let identity = self.identity(config)?;
        let account_url = self.options.account_url(account);
        let url = shared
            .endpoint_policy()
            .check(ACCOUNT_NAME_FIELD, &account_url)
            .await?;
        let key = (account_url.clone(), config.container.clone(), identity);
        if let Some(store) = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(store.clone());
        }
        let credentials = self.credentials(&key.2, config.client_secret.as_deref())?;
        let client = shared
            .http_connector()
            .connect(&shared.client_options(Some(&url)))
            .map_err(|e| Error::from_object_store("building the Azure Blob client", e))?;
        let store = MicrosoftAzureBuilder::new()
            .with_account(account)
            .with_container_name(&config.container)
            .with_endpoint(account_url.clone())
            .with_credentials(credentials.clone())
            .with_retry(shared.retry().clone())
            .with_client_options(shared.client_options(Some(&url)))
            .with_http_connector(shared.http_connector())
            .build()
            .map_err(|e| {
                Error::invalid_general(format!(
                    "Cannot configure Azure container {}: {}",
                    config.container,
                    storage_core::redact::without_provider_bodies(&e.to_string())
                ))
            })?;
        let opened = Arc::new(Opened {
            store: Arc::new(store),
            account_url,
            account: account.clone(),
            credentials,
            client,
            key: KeySlot::default(),
        });
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, opened.clone());
        Ok(opened)
    }

    fn target(&self, config: &AzureSpiConfig, store: Arc<MicrosoftAzure>) -> BucketTarget {
        let (container, prefix) = (config.container.clone(), config.prefix.clone());
        let (tenant, client, mode) = (
            config.tenant_id.clone().unwrap_or_default(),
            config.client_id.clone().unwrap_or_default(),
            config.auth_mode.unwrap_or(AuthMode::ServicePrincipal),
        );
        BucketTarget {
            store,
            uri: BucketUri::new(URI_SCHEME, &config.container),
            prefix: config.prefix.clone(),
            explain: Arc::new(move |err| {
                explain_spi(err, &container, prefix.as_deref(), mode, &tenant, &client)
            }),
        }
    }
}

#[async_trait]
impl Backend for AzureSpiBackend {
    fn name(&self) -> &'static str {
        "azure_spi"
    }

    fn push_format(&self) -> Option<storage_core::events::PushFormat> {
        Some(crate::event_grid::PUSH_FORMAT)
    }

    fn title(&self) -> &'static str {
        "Azure Blob Storage with Service Principal"
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
        let config = AzureSpiConfig::from_settings(settings);
        let mut errors = config.check(settings);
        if let Err(e) = storage_core::fields::check_import_rules(settings, kind) {
            errors.merge(e);
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let config = AzureSpiConfig::from_settings(settings);
        let opened = self.store(&config).await?;
        let signer = Arc::new(DelegationSigner {
            account_url: opened.account_url.clone(),
            account: opened.account.clone(),
            container: config.container.clone(),
            credentials: opened.credentials.clone(),
            client: opened.client.clone(),
            key: opened.key.clone(),
        });
        let store = opened.store.clone();
        let inner = self
            .target(&config, store.clone())
            .import(settings, Some(signer))?;
        Ok(Arc::new(AzureImport { inner, store }))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let config = AzureSpiConfig::from_settings(settings);
        let opened = self.store(&config).await?;
        Ok(Arc::new(
            self.target(&config, opened.store.clone()).export(settings),
        ))
    }
}

/// The user delegation key of one account and identity, shared by every
/// storage that signs with it.
type KeySlot = Arc<tokio::sync::Mutex<Option<(DelegationKey, DateTime<Utc>)>>>;

/// How long a fetched user delegation key is valid: Azure's maximum is
/// seven days.
const KEY_VALIDITY: chrono::Duration = chrono::Duration::minutes(7 * 24 * 60 - 1);
/// A cached key is used only while it stays valid this much longer than
/// the URL it signs.
const KEY_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// User delegation SAS URLs: signed with a key fetched by Get User
/// Delegation Key with the storage's token, cached until shortly before it
/// expires, asking Azure for the `Content-Type` the extension names (as
/// `azure`'s service SAS does).
struct DelegationSigner {
    account_url: String,
    account: String,
    container: String,
    credentials: AzureCredentialProvider,
    client: HttpClient,
    key: KeySlot,
}

impl std::fmt::Debug for DelegationSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationSigner")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl DelegationSigner {
    /// A key valid at least [`KEY_MARGIN`] past `until`, from the cache
    /// when it has one.
    async fn key(&self, until: DateTime<Utc>) -> Result<(DelegationKey, DateTime<Utc>)> {
        let mut slot = self.key.lock().await;
        if let Some((key, expiry)) = slot.as_ref() {
            if *expiry - KEY_MARGIN >= until {
                return Ok((key.clone(), *expiry));
            }
        }
        let fresh = self.fetch_key().await?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch_key(&self) -> Result<(DelegationKey, DateTime<Utc>)> {
        let failed =
            |reason: String| Error::backend("fetching a user delegation key for SAS URLs", reason);
        let token = match self
            .credentials
            .get_credential()
            .await
            .map_err(|e| Error::from_object_store("getting a Microsoft Entra token", e))?
            .as_ref()
        {
            AzureCredential::BearerToken(token) => token.clone(),
            _ => return Err(failed("the storage has no Microsoft Entra token".into())),
        };
        let now = Utc::now();
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
            stamp(now),
            stamp(now + KEY_VALIDITY)
        );
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!(
                "{}/?restype=service&comp=userdelegationkey",
                self.account_url
            ))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header("x-ms-version", SAS_VERSION)
            .header(
                "x-ms-date",
                now.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            )
            .header(http::header::CONTENT_TYPE, "application/xml")
            .body(HttpRequestBody::from(body))
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| failed(format!("Azure Blob Storage is unreachable: {e}")))?;
        let status = response.status();
        let code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            // The body is Azure's: only its status and code are passed on.
            let said = code.as_deref().unwrap_or("no error code");
            return Err(Error::backend(
                "fetching a user delegation key for SAS URLs",
                storage_core::failure::ServiceError {
                    status: Some(status.as_u16()),
                    code: code.clone(),
                    unreachable: false,
                    message: format!("Azure Blob Storage answered {status} ({said}): the identity needs a data-plane role such as \"Storage Blob Data Contributor\" (or \"Storage Blob Data Reader\") on the account"),
                },
            ));
        }
        let key = DelegationKey::from_xml(&String::from_utf8_lossy(&text)).map_err(failed)?;
        let expiry = DateTime::parse_from_rfc3339(&key.signed_expiry)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| failed("the user delegation key has no valid expiry".into()))?;
        Ok((key, expiry))
    }
}

#[async_trait]
impl UrlSigner for DelegationSigner {
    async fn signed_url(
        &self,
        location: &Path,
        ttl: Duration,
        response_content_type: Option<&str>,
    ) -> Result<String> {
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::invalid("presign_ttl", "The signed URL lifetime is too long."))?;
        let wanted = Utc::now() + ttl;
        let (key, key_expiry) = self.key(wanted).await?;
        BlobSas {
            account_url: &self.account_url,
            account: &self.account,
            key: &[],
            container: &self.container,
            blob: location.as_ref(),
        }
        .delegated_url(&key, wanted.min(key_expiry), response_content_type)
        .map_err(|e| Error::backend(format!("signing {location}"), e))
    }
}

/// The `AADSTS` code Microsoft Entra answered with, if any.
fn entra_code(text: &str) -> Option<&str> {
    let at = text.find("AADSTS")?;
    let digits = text[at + 6..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    (digits > 0).then(|| &text[at..at + 6 + digits])
}

/// Turns a failed connection check into what to fix: Entra's `AADSTS`
/// errors by their code (never the provider's text), a missing data-plane
/// role, then the `azure` explanations (container, prefix, network).
pub fn explain_spi(
    err: Error,
    container: &str,
    prefix: Option<&str>,
    mode: AuthMode,
    tenant: &str,
    client: &str,
) -> Error {
    let text = storage_core::failure::chain_text(&err, ": ");
    if let Some(code) = entra_code(&text) {
        let (fields, message): (&[&str], String) = match code {
            "AADSTS7000215" => (
                &[CLIENT_SECRET_FIELD],
                format!("Microsoft Entra rejected the client secret of application {client}: check client_secret (use the secret's Value, not its ID, from \"Certificates & secrets\" of the app registration)"),
            ),
            "AADSTS7000222" => (
                &[CLIENT_SECRET_FIELD],
                format!("The client secret of application {client} has expired: create a new one under \"Certificates & secrets\" of the app registration and set client_secret"),
            ),
            "AADSTS700016" => (
                &[CLIENT_ID_FIELD, TENANT_ID_FIELD],
                format!("Microsoft Entra has no application {client} in tenant {tenant}: check client_id (the app registration's \"Application (client) ID\") and tenant_id"),
            ),
            "AADSTS90002" | "AADSTS900023" => (
                &[TENANT_ID_FIELD],
                format!("Microsoft Entra has no tenant {tenant}: check tenant_id (the \"Directory (tenant) ID\")"),
            ),
            other => (
                if mode == AuthMode::WorkloadIdentity { &[] } else { SPI_CREDENTIAL_FIELDS },
                format!("Microsoft Entra refused a token for application {client} ({other}): check tenant_id, client_id and the credentials"),
            ),
        };
        return Error::CredentialsRejected {
            fields: fields.iter().map(|f| (*f).to_string()).collect(),
            code: Some(code.to_string()),
            message,
        };
    }
    let failure = Failure::of(&err);
    if signature_refused(&err, &failure)
        || failure.code_is("AuthenticationFailed")
        || failure.status == Some(401)
    {
        return Error::CredentialsRejected {
            fields: Vec::new(),
            code: failure.code,
            message: format!(
                "Azure Blob Storage did not accept the Microsoft Entra token of application {client} for container {container}: check that tenant_id is the storage account's tenant"
            ),
        };
    }
    if failure.code_is("AuthorizationPermissionMismatch")
        || failure.code_is("AuthorizationFailure")
        || failure.status == Some(403)
    {
        return Error::invalid_general(format!(
            "Access denied to Azure container {container}: application {client} needs a data-plane role on it, such as \"Storage Blob Data Contributor\" (or \"Storage Blob Data Reader\" to import only)"
        ));
    }
    explain(err, container, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(body: serde_json::Value) -> Settings {
        let specs = fields(StorageKind::Import);
        let mut settings = Settings::defaults(&specs);
        settings.apply(&specs, body.as_object().unwrap()).unwrap();
        settings
    }

    #[test]
    fn auth_mode_rules_name_the_field() {
        let sp = settings(serde_json::json!({"container": "box", "account_name": "acct"}));
        let errors = AzureSpiConfig::from_settings(&sp).check(&sp);
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            vec![CLIENT_ID_FIELD, CLIENT_SECRET_FIELD, TENANT_ID_FIELD]
        );
        let wi = settings(serde_json::json!({
            "container": "box", "account_name": "acct", "auth_mode": "workload_identity",
            "client_secret": "SECRET-VALUE"
        }));
        let errors = AzureSpiConfig::from_settings(&wi).check(&wi);
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            vec![CLIENT_SECRET_FIELD]
        );
        assert!(!format!("{errors:?}").contains("SECRET-VALUE"));
        let bad = settings(serde_json::json!({
            "container": "box", "account_name": "acct", "auth_mode": "magic",
            "tenant_id": "../../evil?x=1"
        }));
        let errors = AzureSpiConfig::from_settings(&bad).check(&bad);
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            vec![AUTH_MODE_FIELD, TENANT_ID_FIELD]
        );
        let config = AzureSpiConfig::from_settings(&wi);
        assert!(!format!("{config:?}").contains("SECRET-VALUE"));
    }

    #[test]
    fn entra_codes_become_what_to_fix() {
        let said = |body: &str| {
            Error::backend(
                "listing",
                format!("Error performing POST http://h/t/oauth2/v2.0/token in 3ms - Server returned non-2xx status code: 401 Unauthorized: {body}"),
            )
        };
        let secret = explain_spi(
            said(
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. provider-only-text"}"#,
            ),
            "box",
            None,
            AuthMode::ServicePrincipal,
            "t1",
            "app-1",
        );
        assert!(
            matches!(&secret, Error::CredentialsRejected { fields, code, .. }
                if fields == &[CLIENT_SECRET_FIELD] && code.as_deref() == Some("AADSTS7000215")),
            "{secret:?}"
        );
        assert!(
            !secret.to_string().contains("provider-only-text"),
            "{secret}"
        );
        let unknown = explain_spi(
            said(
                r#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier 'x' was not found"}"#,
            ),
            "box",
            None,
            AuthMode::ServicePrincipal,
            "t1",
            "app-1",
        );
        assert!(
            unknown
                .to_string()
                .contains("no application app-1 in tenant t1"),
            "{unknown}"
        );
        assert_eq!(entra_code("x AADSTS90002: y"), Some("AADSTS90002"));
        assert_eq!(entra_code("AADSTS"), None);
    }
}

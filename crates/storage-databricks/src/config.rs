//! The stored configuration of a Databricks storage, with the field names
//! of label-studio-sdk's `databricks_*` models, and the server-wide options
//! of the backend.

use std::time::Duration;

use storage_core::bucket::BucketOptions;
use storage_core::fields::{export_fields, import_fields, presign_fields, FieldSpec, FieldType};
use storage_core::{Settings, StorageKind, ValidationErrors};

/// The workspace URL field.
pub const HOST_FIELD: &str = "host";
/// The field choosing how the storage authenticates.
pub const AUTH_TYPE_FIELD: &str = "auth_type";
/// The personal access token (write-only).
pub const TOKEN_FIELD: &str = "token";
/// The service principal's application (client) id.
pub const CLIENT_ID_FIELD: &str = "client_id";
/// The service principal's secret (write-only).
pub const CLIENT_SECRET_FIELD: &str = "client_secret";
/// The Microsoft Entra tenant of an `azure_ad_sp` service principal.
pub const TENANT_ID_FIELD: &str = "tenant_id";

/// Microsoft Entra's authority host in Azure's public cloud.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The scope of Entra tokens for Azure Databricks (its resource id).
pub const AZURE_DATABRICKS_SCOPE: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default";
/// A request's timeout when the storage sets none.
pub const DEFAULT_REQUEST_TIMEOUT_S: i64 = 60;
/// The size of the pieces a proxied object is streamed in when the storage
/// sets none (Label Studio's `RESOLVER_PROXY_BUFFER_SIZE`).
pub const DEFAULT_STREAM_CHUNK_BYTES: i64 = 512 * 1024;

/// How a Databricks storage authenticates (`auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// A personal access token, sent as it is.
    Pat,
    /// Databricks OAuth machine-to-machine (a Databricks service principal).
    DatabricksServicePrincipal,
    /// A Microsoft Entra service principal (Azure Databricks).
    AzureServicePrincipal,
}

impl AuthType {
    /// The SDK's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pat => "pat",
            Self::DatabricksServicePrincipal => "dbx_sp",
            Self::AzureServicePrincipal => "azure_ad_sp",
        }
    }

    fn parse(text: Option<&str>) -> Option<Self> {
        match text {
            None | Some("pat") => Some(Self::Pat),
            Some("dbx_sp") => Some(Self::DatabricksServicePrincipal),
            Some("azure_ad_sp") => Some(Self::AzureServicePrincipal),
            Some(_) => None,
        }
    }

    /// The fields that hold this type's credentials.
    pub fn credential_fields(self) -> &'static [&'static str] {
        match self {
            Self::Pat => &[TOKEN_FIELD],
            Self::DatabricksServicePrincipal => &[CLIENT_ID_FIELD, CLIENT_SECRET_FIELD],
            Self::AzureServicePrincipal => &[TENANT_ID_FIELD, CLIENT_ID_FIELD, CLIENT_SECRET_FIELD],
        }
    }
}

fn int(name: &'static str, min: i64, max: i64, help: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty: FieldType::Int { min, max },
        nullable: true,
        default: serde_json::Value::Null,
        secret: false,
        help,
    }
}

/// The Databricks fields of `kind` storages, in the SDK's order.
pub(crate) fn fields(kind: StorageKind) -> Vec<FieldSpec> {
    let mut fields = vec![
        FieldSpec::string(
            HOST_FIELD,
            "Databricks workspace URL, e.g. https://adb-123.4.azuredatabricks.net",
        ),
        FieldSpec::string("catalog", "Unity Catalog catalog"),
        FieldSpec::string("schema", "Unity Catalog schema"),
        FieldSpec::string("volume", "Unity Catalog volume"),
        FieldSpec::string("prefix", "Path under the volume"),
    ];
    match kind {
        StorageKind::Import => {
            fields.extend(import_fields());
            // Accepted for the SDK's sake; objects are always proxied.
            fields.extend(presign_fields());
        }
        StorageKind::Export => fields.extend(export_fields()),
    }
    let mut auth_type = FieldSpec::string(
        AUTH_TYPE_FIELD,
        "Authentication: pat (token), dbx_sp (Databricks OAuth M2M: client_id, client_secret) or azure_ad_sp (Microsoft Entra: tenant_id, client_id, client_secret)",
    );
    auth_type.default = serde_json::Value::String(AuthType::Pat.as_str().into());
    fields.extend([
        auth_type,
        FieldSpec::string(TOKEN_FIELD, "Personal access token (write-only; pat)").secret(),
        FieldSpec::string(
            CLIENT_ID_FIELD,
            "Service principal application (client) id (dbx_sp, azure_ad_sp)",
        ),
        FieldSpec::string(
            CLIENT_SECRET_FIELD,
            "Service principal secret (write-only; dbx_sp, azure_ad_sp)",
        )
        .secret(),
        FieldSpec::string(
            TENANT_ID_FIELD,
            "Microsoft Entra tenant (directory) id (azure_ad_sp)",
        ),
        int(
            "request_timeout_s",
            1,
            3600,
            "Timeout of one request to Databricks, in seconds (default 60)",
        ),
        int(
            "stream_chunk_bytes",
            1024,
            64 * 1024 * 1024,
            "Size of the pieces proxied media is streamed in (default 524288)",
        ),
        FieldSpec::boolean(
            "verify_tls",
            true,
            "Verify the workspace's TLS certificate (false only for on-premises proxies with a private CA)",
        )
        .nullable(),
    ]);
    fields
}

/// A Databricks storage's connection settings.
///
/// `Debug` leaves out the token and the client secret.
#[derive(Clone, PartialEq)]
pub struct DatabricksConfig {
    /// Workspace URL, without a trailing `/`.
    pub host: String,
    /// Unity Catalog catalog.
    pub catalog: String,
    /// Unity Catalog schema.
    pub schema: String,
    /// Unity Catalog volume.
    pub volume: String,
    /// Path under the volume, as typed.
    pub prefix: Option<String>,
    /// How it authenticates; `None` when `auth_type` names none known.
    pub auth_type: Option<AuthType>,
    /// Personal access token.
    pub token: Option<String>,
    /// Service principal application id.
    pub client_id: Option<String>,
    /// Service principal secret.
    pub client_secret: Option<String>,
    /// Entra tenant.
    pub tenant_id: Option<String>,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Largest piece of a streamed body.
    pub stream_chunk_bytes: usize,
    /// Verify the workspace's TLS certificate.
    pub verify_tls: bool,
}

impl std::fmt::Debug for DatabricksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabricksConfig")
            .field("host", &self.host)
            .field("catalog", &self.catalog)
            .field("schema", &self.schema)
            .field("volume", &self.volume)
            .field("prefix", &self.prefix)
            .field("auth_type", &self.auth_type)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("verify_tls", &self.verify_tls)
            .finish_non_exhaustive()
    }
}

impl DatabricksConfig {
    /// Reads the configuration from checked settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let text = |name: &str| {
            settings
                .str(name)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let secret = |name: &str| {
            settings
                .str(name)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Self {
            host: text(HOST_FIELD)
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string(),
            catalog: text("catalog").unwrap_or_default(),
            schema: text("schema").unwrap_or_default(),
            volume: text("volume").unwrap_or_default(),
            prefix: settings.str("prefix").map(str::to_string),
            auth_type: AuthType::parse(settings.str(AUTH_TYPE_FIELD).map(str::trim)),
            token: secret(TOKEN_FIELD),
            client_id: text(CLIENT_ID_FIELD),
            client_secret: secret(CLIENT_SECRET_FIELD),
            tenant_id: text(TENANT_ID_FIELD),
            request_timeout: Duration::from_secs(
                settings
                    .int("request_timeout_s")
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT_S)
                    .max(1) as u64,
            ),
            stream_chunk_bytes: settings
                .int("stream_chunk_bytes")
                .unwrap_or(DEFAULT_STREAM_CHUNK_BYTES)
                .max(1) as usize,
            verify_tls: settings.bool("verify_tls", true),
        }
    }

    /// The volume's absolute path, `/Volumes/<catalog>/<schema>/<volume>`.
    pub fn volume_path(&self) -> String {
        format!("/Volumes/{}/{}/{}", self.catalog, self.schema, self.volume)
    }

    /// Static field rules (no network). Never echoes a secret.
    pub(crate) fn check(&self, settings: &Settings) -> ValidationErrors {
        let mut errors = ValidationErrors::default();
        if self.host.is_empty() {
            errors.add(HOST_FIELD, "This field is required.");
        } else {
            match url::Url::parse(&self.host) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.username().is_empty()
                        && url.password().is_none()
                        && url.query().is_none()
                        && url.fragment().is_none()
                        && url.path() == "/" => {}
                _ => errors.add(
                    HOST_FIELD,
                    "Not a Databricks workspace URL: use https://<workspace host> with no path, e.g. https://adb-1234567890123456.7.azuredatabricks.net",
                ),
            }
        }
        for (field, value) in [
            ("catalog", &self.catalog),
            ("schema", &self.schema),
            ("volume", &self.volume),
        ] {
            if value.is_empty() {
                errors.add(field, "This field is required.");
            } else if !valid_name(value) {
                errors.add(
                    field,
                    format!("Invalid Unity Catalog name \"{value}\": it may not contain /, control characters or be . or .."),
                );
            }
        }
        match self.auth_type {
            None => errors.add(
                AUTH_TYPE_FIELD,
                format!(
                    "\"{}\" is not a valid choice: use pat, dbx_sp or azure_ad_sp.",
                    settings.str(AUTH_TYPE_FIELD).unwrap_or_default()
                ),
            ),
            Some(auth) => {
                for field in auth.credential_fields() {
                    let missing = match *field {
                        TOKEN_FIELD => self.token.is_none(),
                        CLIENT_ID_FIELD => self.client_id.is_none(),
                        CLIENT_SECRET_FIELD => self.client_secret.is_none(),
                        _ => self.tenant_id.is_none(),
                    };
                    if missing {
                        errors.add(
                            *field,
                            format!(
                                "This field is required when auth_type is {}.",
                                auth.as_str()
                            ),
                        );
                    }
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
        storage_core::bucket::check_prefix(settings, &mut errors);
        errors
    }
}

/// A catalog, schema or volume name fits in one path segment.
fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && !name.contains('/')
        && !name.chars().any(char::is_control)
        && name != "."
        && name != ".."
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

/// Server-wide options of the Databricks backend: what every bucket
/// backend shares ([`BucketOptions`]: endpoint policy, retries) plus the
/// Microsoft Entra authority host of `azure_ad_sp` storages.
#[derive(Debug, Clone)]
pub struct DatabricksOptions {
    pub(crate) bucket: BucketOptions,
    pub(crate) authority_host: String,
    pub(crate) list_concurrency: usize,
}

impl Default for DatabricksOptions {
    fn default() -> Self {
        Self {
            bucket: BucketOptions::default(),
            authority_host: DEFAULT_AUTHORITY_HOST.to_string(),
            list_concurrency: 8,
        }
    }
}

impl DatabricksOptions {
    storage_core::bucket_options_methods!();

    /// Strict endpoint policy, Azure's public cloud for Entra tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Microsoft Entra authority host `azure_ad_sp` storages get their
    /// tokens from (`<host>/<tenant>/oauth2/v2.0/token`). The operator's
    /// choice, so trusted: not under the endpoint policy, but no redirect
    /// is followed.
    pub fn with_authority_host(mut self, host: impl Into<String>) -> Self {
        self.authority_host = host.into().trim_end_matches('/').to_string();
        self
    }

    /// How many directory pages a recursive listing may fetch at once
    /// (at least 1; default 8).
    pub fn with_list_concurrency(mut self, requests: usize) -> Self {
        self.list_concurrency = requests.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: StorageKind, body: serde_json::Value) -> Settings {
        let specs = fields(kind);
        let mut settings = Settings::defaults(&specs);
        settings.apply(&specs, body.as_object().unwrap()).unwrap();
        settings
    }

    #[test]
    fn missing_credentials_name_the_field_and_never_echo_secrets() {
        let base = serde_json::json!({
            "host": "https://dbc-1.cloud.databricks.com", "catalog": "c", "schema": "s", "volume": "v"
        });
        let pat = settings(StorageKind::Import, base.clone());
        let errors = DatabricksConfig::from_settings(&pat).check(&pat);
        assert_eq!(errors.fields().collect::<Vec<_>>(), vec![TOKEN_FIELD]);
        let mut sp = base.clone();
        sp["auth_type"] = "azure_ad_sp".into();
        sp["client_secret"] = "SECRET-VALUE".into();
        let sp = settings(StorageKind::Export, sp);
        let errors = DatabricksConfig::from_settings(&sp).check(&sp);
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            vec![CLIENT_ID_FIELD, TENANT_ID_FIELD]
        );
        let config = DatabricksConfig::from_settings(&sp);
        assert!(!format!("{errors:?} {config:?}").contains("SECRET-VALUE"));
        let bad = settings(
            StorageKind::Import,
            serde_json::json!({"host": "https://h/x?y", "catalog": "a/b", "auth_type": "magic"}),
        );
        let errors = DatabricksConfig::from_settings(&bad).check(&bad);
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            vec![AUTH_TYPE_FIELD, "catalog", HOST_FIELD, "schema", "volume"]
        );
    }

    #[test]
    fn defaults_and_volume_path() {
        let s = settings(
            StorageKind::Import,
            serde_json::json!({"host": "https://h/", "catalog": "c", "schema": "s", "volume": "v", "token": "t"}),
        );
        let config = DatabricksConfig::from_settings(&s);
        assert_eq!(config.host, "https://h");
        assert_eq!(config.volume_path(), "/Volumes/c/s/v");
        assert_eq!(config.request_timeout, Duration::from_secs(60));
        assert_eq!(config.stream_chunk_bytes, 512 * 1024);
        assert!(config.verify_tls);
        assert!(config.check(&s).is_empty());
    }
}

//! The stored configuration of an Azure Blob storage, with Label Studio's
//! field names, and the server-wide options of the backend.

use base64::Engine;
use storage_core::bucket::BucketOptions;
use storage_core::fields::{export_fields, import_fields, presign_fields, FieldSpec};
use storage_core::{Settings, StorageKind, ValidationErrors};

/// The field naming the storage account (write-only, as in Label Studio).
pub const ACCOUNT_NAME_FIELD: &str = "account_name";
/// The field holding the account key (write-only).
pub const ACCOUNT_KEY_FIELD: &str = "account_key";
/// The fields holding the storage's credentials.
pub const CREDENTIAL_FIELDS: &[&str] = &[ACCOUNT_NAME_FIELD, ACCOUNT_KEY_FIELD];

/// Where the blob service of an account is, when the operator sets nothing:
/// Azure's public cloud. `{account}` is replaced by the account name.
pub const DEFAULT_ENDPOINT: &str = "https://{account}.blob.core.windows.net";

/// Microsoft Entra's authority host in Azure's public cloud, where
/// `azure_spi` storages get their tokens when the operator sets none.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The Azure fields of `kind` storages, in Label Studio's order.
pub(crate) fn fields(kind: StorageKind) -> Vec<FieldSpec> {
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
    fields.extend([
        // Label Studio hides the account name as well as the key: clients
        // may rely on never seeing it.
        FieldSpec::string(
            ACCOUNT_NAME_FIELD,
            "Azure storage account name (write-only)",
        )
        .secret(),
        FieldSpec::string(ACCOUNT_KEY_FIELD, "Azure storage account key (write-only)").secret(),
    ]);
    fields
}

/// An Azure Blob storage's connection settings.
///
/// `Debug` shows the container and prefix only: the account name and key
/// are write-only.
#[derive(Clone, Default, PartialEq)]
pub struct AzureConfig {
    /// Container name.
    pub container: String,
    /// Folder prefix, as typed.
    pub prefix: Option<String>,
    /// Storage account name.
    pub account_name: Option<String>,
    /// Storage account key (base64).
    pub account_key: Option<String>,
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl AzureConfig {
    /// Reads the configuration from checked settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let text = |name: &str| settings.str(name).map(str::to_string);
        Self {
            container: text("container").unwrap_or_default(),
            prefix: text("prefix"),
            account_name: text(ACCOUNT_NAME_FIELD),
            account_key: text(ACCOUNT_KEY_FIELD),
        }
    }

    /// The decoded account key, when it is valid base64.
    pub(crate) fn key_bytes(&self) -> Option<Vec<u8>> {
        self.account_key
            .as_deref()
            .and_then(|key| {
                base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .ok()
            })
            .filter(|bytes| !bytes.is_empty())
    }

    /// Static field rules (no network): container and account names,
    /// account key, presign TTL, prefix. Never echoes the account name or
    /// the key.
    pub(crate) fn check(&self, settings: &Settings) -> ValidationErrors {
        let mut errors = ValidationErrors::default();
        check_container(&self.container, &mut errors);
        match &self.account_name {
            None => errors.add(
                ACCOUNT_NAME_FIELD,
                "Azure account name and key must be set using the account_name and account_key fields.",
            ),
            Some(name) if !valid_account(name) => errors.add(
                ACCOUNT_NAME_FIELD,
                INVALID_ACCOUNT,
            ),
            Some(_) => {}
        }
        match &self.account_key {
            None => errors.add(
                ACCOUNT_KEY_FIELD,
                "Azure account name and key must be set using the account_name and account_key fields.",
            ),
            Some(_) if self.key_bytes().is_none() => errors.add(
                ACCOUNT_KEY_FIELD,
                "Not a valid Azure storage account key: it is the base64 text shown under \"Access keys\" of the storage account.",
            ),
            Some(_) => {}
        }
        storage_core::bucket::check_presign_ttl(settings, &mut errors);
        storage_core::bucket::check_prefix(settings, &mut errors);
        errors
    }
}

/// Azure's container rule; `$root` and `$web` are the two special names.
pub(crate) fn valid_container(name: &str) -> bool {
    if matches!(name, "$root" | "$web") {
        return true;
    }
    let bytes = name.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| edge(b) || b == b'-')
        && !name.contains("--")
}

/// Azure's account rule. It is also what keeps the account name, which
/// goes into the endpoint's host name, from naming another host.
pub(crate) fn valid_account(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Server-wide options of the Azure backend: the options every bucket
/// backend shares ([`BucketOptions`]) plus the blob service endpoint.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    pub(crate) bucket: BucketOptions,
    pub(crate) endpoint: String,
    pub(crate) authority_host: String,
    pub(crate) workload_identity: WorkloadIdentity,
}

/// The server's workload identity (`azure_spi` storages with
/// `auth_mode` `workload_identity`): the federated token file Kubernetes
/// or a CI system writes, and the tenant and client it stands for.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkloadIdentity {
    pub(crate) token_file: Option<std::path::PathBuf>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) client_id: Option<String>,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self::from(BucketOptions::default())
    }
}

impl From<BucketOptions> for AzureOptions {
    fn from(bucket: BucketOptions) -> Self {
        Self {
            bucket,
            endpoint: DEFAULT_ENDPOINT.to_string(),
            authority_host: DEFAULT_AUTHORITY_HOST.to_string(),
            workload_identity: WorkloadIdentity::default(),
        }
    }
}

impl AzureOptions {
    storage_core::bucket_options_methods!();

    /// Strict endpoint policy, Azure's public cloud.
    pub fn new() -> Self {
        Self::default()
    }

    /// The blob service endpoint of every account, `{account}` standing
    /// for the storage's account name: a sovereign cloud
    /// (`https://{account}.blob.core.chinacloudapi.cn`) or an emulator
    /// (`http://127.0.0.1:10000/{account}`, path style). Operator
    /// configuration; requests still obey the endpoint policy.
    pub fn with_endpoint(mut self, template: impl Into<String>) -> Self {
        self.endpoint = template.into();
        self
    }

    /// The endpoint template.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The Microsoft Entra authority host `azure_spi` storages get their
    /// tokens from (`<host>/<tenant>/oauth2/v2.0/token`): a sovereign
    /// cloud (`https://login.chinacloudapi.cn`) or a test double. The
    /// operator's choice, so trusted: not under the endpoint policy, but no
    /// redirect is followed.
    pub fn with_authority_host(mut self, host: impl Into<String>) -> Self {
        self.authority_host = host.into().trim_end_matches('/').to_string();
        self
    }

    /// The authority host.
    pub fn authority_host(&self) -> &str {
        &self.authority_host
    }

    /// The server's workload identity for `azure_spi` storages with
    /// `auth_mode` `workload_identity`: the federated token file (read
    /// again at each token request, as Kubernetes rotates it), the tenant
    /// and the default client id (a storage's `client_id` overrides it).
    pub fn with_workload_identity(
        mut self,
        token_file: impl Into<std::path::PathBuf>,
        tenant_id: Option<String>,
        client_id: Option<String>,
    ) -> Self {
        self.workload_identity = WorkloadIdentity {
            token_file: Some(token_file.into()),
            tenant_id,
            client_id,
        };
        self
    }

    /// The blob service URL of `account`, without a trailing `/`.
    pub(crate) fn account_url(&self, account: &str) -> String {
        self.endpoint
            .replace("{account}", account)
            .trim_end_matches('/')
            .to_string()
    }
}

/// The answer to an account name that breaks Azure's rule.
pub(crate) const INVALID_ACCOUNT: &str =
    "Not a valid Azure storage account name: it has 3 to 24 lower-case letters and digits.";

/// `container` is required and follows Azure's naming rule.
pub(crate) fn check_container(container: &str, errors: &mut ValidationErrors) {
    if container.is_empty() {
        errors.add("container", "This field is required.");
    } else if !valid_container(container) {
        errors.add(
            "container",
            format!(
                "Invalid container name \"{container}\": Azure container names have 3 to 63 lower-case letters, digits and single hyphens, and start and end with a letter or digit"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_azure_rules() {
        assert!(valid_container("my-container-1"));
        assert!(valid_container("$web"));
        assert!(!valid_container("My"));
        assert!(!valid_container("a--b"));
        assert!(!valid_container("-ab"));
        assert!(!valid_container("ab"));
        assert!(valid_account("devstoreaccount1"));
        assert!(!valid_account("evil.example.com#"));
        assert!(!valid_account("Upper"));
    }

    #[test]
    fn checks_name_fields_and_never_echo_secrets() {
        let mut settings = Settings::default();
        settings.set("container", "c1c".into());
        settings.set(ACCOUNT_NAME_FIELD, "Secret.Account".into());
        settings.set(ACCOUNT_KEY_FIELD, "not base64 SECRETKEY!".into());
        let config = AzureConfig::from_settings(&settings);
        let errors = config.check(&settings);
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            vec![ACCOUNT_KEY_FIELD, ACCOUNT_NAME_FIELD]
        );
        let shown = format!("{errors:?} {config:?}");
        assert!(!shown.contains("Secret.Account") && !shown.contains("SECRETKEY"));
        let empty = AzureConfig::from_settings(&Settings::default()).check(&Settings::default());
        assert_eq!(
            empty.fields().collect::<Vec<_>>(),
            vec![ACCOUNT_KEY_FIELD, ACCOUNT_NAME_FIELD, "container"]
        );
    }

    #[test]
    fn endpoint_templates() {
        let options = AzureOptions::new();
        assert_eq!(
            options.account_url("acct"),
            "https://acct.blob.core.windows.net"
        );
        let azurite = AzureOptions::new().with_endpoint("http://127.0.0.1:17180/{account}/");
        assert_eq!(
            azurite.account_url("devstoreaccount1"),
            "http://127.0.0.1:17180/devstoreaccount1"
        );
    }
}

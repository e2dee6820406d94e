//! The `gcswif` storage type (Label Studio Enterprise): GCS through Workload
//! Identity Federation. The server's subject token (a file its platform
//! keeps fresh) is exchanged at Google's STS for a federated token of the
//! storage's pool provider, which impersonates the storage's service account
//! through the IAM Credentials API; from there on it is `gcs_sa`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use storage_core::fields::FieldSpec;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, ImportStorage, Result, Settings, StorageKind,
};
use storage_gcs::iam::{valid_service_account_email, IamCredentials, ImpersonatedCredentials};
use storage_gcs::sts::{provider_audience, StsTokenExchange, SubjectToken, DEFAULT_STS_ENDPOINT};
use storage_gcs::{bucket_fields, check_common, GcsBackend, GcsOptions, CREDENTIALS_FIELD};

use crate::{impersonation, STORAGE_SCOPE};

/// The project number, part of the pool provider's audience.
pub const PROJECT_NUMBER_FIELD: &str = "google_project_number";
/// The workload identity pool.
pub const POOL_FIELD: &str = "google_wif_pool_id";
/// The pool's provider.
pub const PROVIDER_FIELD: &str = "google_wif_provider_id";
/// The service account the federated identity impersonates.
pub const SERVICE_ACCOUNT_FIELD: &str = "google_service_account_email";

/// The server's side of Workload Identity Federation: where its subject
/// token is and which STS it is exchanged at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WifOptions {
    /// The subject token, or `None` when the server has none (every
    /// `gcswif` storage then fails its check with a message that says so).
    pub subject: Option<SubjectToken>,
    /// Google's STS (`https://sts.googleapis.com` by default).
    pub sts_endpoint: url::Url,
}

impl Default for WifOptions {
    fn default() -> Self {
        Self {
            subject: None,
            sts_endpoint: url::Url::parse(DEFAULT_STS_ENDPOINT).expect("static URL is valid"),
        }
    }
}

/// The `gcswif` storage type.
///
/// ```
/// use storage_core::Backend;
/// let backend = storage_gcs_sa::GcsWifBackend::new(
///     storage_gcs::GcsOptions::new(),
///     storage_gcs_sa::WifOptions::default(),
/// );
/// assert_eq!(backend.name(), "gcswif");
/// ```
#[derive(Debug)]
pub struct GcsWifBackend {
    options: GcsOptions,
    wif: WifOptions,
    /// One credential cache per (audience, service account), shared by every
    /// storage and sync that uses it: a token is exchanged and an
    /// impersonation asked for once per expiry, not per sync.
    identities: std::sync::Mutex<HashMap<(String, String), Arc<ImpersonatedCredentials>>>,
}

impl GcsWifBackend {
    /// A backend with these server-wide options.
    pub fn new(options: GcsOptions, wif: WifOptions) -> Self {
        Self {
            options,
            wif,
            identities: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn impersonated(&self, settings: &Settings) -> Result<Arc<ImpersonatedCredentials>> {
        let Some(subject) = self.wif.subject.clone() else {
            return Err(Error::invalid_general(
                "This server has no workload identity token to exchange: start it with \
                 --gcs-wif-subject-token-file (a file holding the token your platform issues)",
            ));
        };
        let audience = provider_audience(
            settings.str(PROJECT_NUMBER_FIELD).unwrap_or_default(),
            settings.str(POOL_FIELD).unwrap_or_default(),
            settings.str(PROVIDER_FIELD).unwrap_or_default(),
        );
        let email = settings
            .str(SERVICE_ACCOUNT_FIELD)
            .unwrap_or_default()
            .to_string();
        let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        let credentials = identities
            .entry((audience.clone(), email.clone()))
            .or_insert_with(|| {
                let client =
                    GcsBackend::client_options(&self.options, Some(&self.wif.sts_endpoint));
                let federated = StsTokenExchange::new(
                    self.wif.sts_endpoint.clone(),
                    audience,
                    subject,
                    &client,
                );
                let endpoint = self.options.iam_endpoint().clone();
                let iam = IamCredentials::new(
                    endpoint.clone(),
                    Arc::new(federated),
                    GcsBackend::client_options(&self.options, Some(&endpoint)),
                )
                .with_retry(self.options.bucket_options().call_retry());
                Arc::new(
                    ImpersonatedCredentials::new(Arc::new(iam), email).with_scopes([STORAGE_SCOPE]),
                )
            });
        Ok(credentials.clone())
    }
}

#[async_trait]
impl Backend for GcsWifBackend {
    fn name(&self) -> &'static str {
        "gcswif"
    }

    fn push_format(&self) -> Option<storage_core::events::PushFormat> {
        Some(storage_gcs::pubsub::PUSH_FORMAT)
    }

    async fn push_authenticated(&self, settings: &Settings, authorization: &str) -> Result<bool> {
        self.options
            .pubsub_push_authenticated(settings, authorization)
            .await
    }

    fn title(&self) -> &'static str {
        "Google Cloud Storage (Workload Identity Federation)"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        let mut fields = bucket_fields(kind);
        fields.extend([
            FieldSpec::string(PROJECT_NUMBER_FIELD, "Google project number (digits)"),
            FieldSpec::string(POOL_FIELD, "Workload identity pool id"),
            FieldSpec::string(PROVIDER_FIELD, "Workload identity pool provider id"),
            FieldSpec::string(SERVICE_ACCOUNT_FIELD, "Service account to impersonate"),
            // In Label Studio's schema; a key or external-account file from a
            // user is not how this type gets its identity (see docs).
            FieldSpec::string(
                CREDENTIALS_FIELD,
                "Not used by this storage type (write-only)",
            )
            .secret(),
        ]);
        fields
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::bucket("gs")
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let mut errors = check_common(kind, settings);
        for field in [
            PROJECT_NUMBER_FIELD,
            POOL_FIELD,
            PROVIDER_FIELD,
            SERVICE_ACCOUNT_FIELD,
        ] {
            let value = settings
                .str(field)
                .map(str::trim)
                .unwrap_or_default()
                .to_string();
            if value.is_empty() {
                errors.add(field, "This field is required.");
                continue;
            }
            let problem = match field {
                PROJECT_NUMBER_FIELD if !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 20 => {
                    Some(format!("\"{value}\" is not a project number (the digits shown on the project's dashboard, not its id)"))
                }
                POOL_FIELD | PROVIDER_FIELD if !valid_wif_id(&value) => Some(format!(
                    "\"{value}\" is not a workload identity id (4 to 32 lower-case letters, digits and hyphens)"
                )),
                SERVICE_ACCOUNT_FIELD if !valid_service_account_email(&value) => Some(format!(
                    "\"{value}\" is not a service account email (expected name@project.iam.gserviceaccount.com)"
                )),
                _ => None,
            };
            match problem {
                Some(problem) => errors.add(field, problem),
                None => settings.set(field, value.into()),
            }
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let credentials = self.impersonated(settings)?;
        let target = impersonation::open_bucket(&self.options, settings, &credentials)?;
        impersonation::import(&self.options, target, settings, credentials)
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let credentials = self.impersonated(settings)?;
        let target = impersonation::open_bucket(&self.options, settings, &credentials)?;
        Ok(impersonation::export(target, settings, credentials))
    }
}

/// A pool or provider id as Google defines them: 4 to 32 characters of
/// lower-case letters, digits and hyphens, not starting with a hyphen (they
/// are part of the audience's path).
fn valid_wif_id(id: &str) -> bool {
    (4..=32).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_they_become_part_of_the_audience() {
        assert!(valid_wif_id("label-studio-app-production"));
        for bad in ["abc", "-pool", "Pool", "po/ol", "pool?x", &"p".repeat(33)] {
            assert!(!valid_wif_id(bad), "{bad}");
        }
    }
}

#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};
use storage_core::bucket::BucketTarget;
use storage_core::fields::FieldSpec;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, ImportStorage, Result, Settings, StorageKind,
};
use storage_gcs::iam::{valid_service_account_email, IamCredentials, ImpersonatedCredentials};
use storage_gcs::{bucket_fields, check_common, GcsBackend, GcsOptions};
use tokio::sync::OnceCell;

mod impersonation;
mod wif;

pub use wif::{
    GcsWifBackend, WifOptions, POOL_FIELD, PROJECT_NUMBER_FIELD, PROVIDER_FIELD,
    SERVICE_ACCOUNT_FIELD,
};

/// The field naming the service account to impersonate.
pub const TARGET_FIELD: &str = "target_service_account_email";

const STORAGE_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// The `gcs_sa` storage type: GCS through a short-lived token of a target
/// service account, obtained with the server's own identity.
///
/// ```
/// use storage_core::Backend;
/// let backend = storage_gcs_sa::GcsSaBackend::new(storage_gcs::GcsOptions::new());
/// assert_eq!(backend.name(), "gcs_sa");
/// ```
#[derive(Debug)]
pub struct GcsSaBackend {
    options: GcsOptions,
    iam: OnceCell<Arc<IamCredentials>>,
    /// One credential cache per target account, shared by every storage and
    /// sync that impersonates it.
    targets: std::sync::Mutex<HashMap<String, Arc<ImpersonatedCredentials>>>,
}

impl GcsSaBackend {
    /// A backend with these server-wide options (its base identity is the
    /// configured credentials file, else Application Default Credentials).
    pub fn new(options: GcsOptions) -> Self {
        Self {
            options,
            iam: OnceCell::new(),
            targets: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The server's own identity: the configured credentials file, else
    /// (only when the operator allows ambient credentials) Application
    /// Default Credentials from the environment and the metadata server.
    fn base_identity(&self) -> Result<GcpCredentialProvider> {
        // The identity's token endpoint (the file's `token_uri`, the
        // metadata server) is the operator's choice: trusted, but no
        // redirect is followed.
        let connector = storage_core::EndpointPolicy::allow_private()
            .with_env_proxy(self.options.endpoint_policy().uses_env_proxy())
            .connector()
            .with_timeout(self.options.bucket_options().timeout());
        let mut builder = GoogleCloudStorageBuilder::new()
            .with_bucket_name("base-identity")
            .with_client_options(GcsBackend::client_options(&self.options, None))
            .with_http_connector(connector);
        match self.options.application_credentials() {
            Some(path) => {
                builder = builder.with_application_credentials(path.to_string_lossy());
            }
            None if self.options.ambient_credentials() => {}
            None => {
                return Err(Error::CredentialsRejected {
                    fields: Vec::new(),
                    code: None,
                    message: "the server has no Google identity to impersonate with: start it \
                              with GOOGLE_APPLICATION_CREDENTIALS (a key file) or allow ambient \
                              credentials (--allow-ambient-credentials)"
                        .into(),
                })
            }
        }
        let store = builder.build().map_err(|e| Error::CredentialsRejected {
            fields: Vec::new(),
            code: None,
            message: format!("the server has no usable Google identity to impersonate with: {e}"),
        })?;
        Ok(store.credentials().clone())
    }

    async fn iam(&self) -> Result<Arc<IamCredentials>> {
        self.iam
            .get_or_try_init(|| async {
                let endpoint = self.options.iam_endpoint().clone();
                let client = GcsBackend::client_options(&self.options, Some(&endpoint));
                Ok(Arc::new(
                    IamCredentials::new(endpoint, self.base_identity()?, client)
                        .with_retry(self.options.bucket_options().call_retry()),
                ))
            })
            .await
            .cloned()
    }

    async fn impersonated(&self, target: &str) -> Result<Arc<ImpersonatedCredentials>> {
        let iam = self.iam().await?;
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        Ok(targets
            .entry(target.to_string())
            .or_insert_with(|| {
                Arc::new(ImpersonatedCredentials::new(iam, target).with_scopes([STORAGE_SCOPE]))
            })
            .clone())
    }

    async fn open(
        &self,
        settings: &Settings,
    ) -> Result<(BucketTarget, Arc<ImpersonatedCredentials>)> {
        let target_email = settings.str(TARGET_FIELD).unwrap_or_default().to_string();
        let credentials = self.impersonated(&target_email).await?;
        let target = impersonation::open_bucket(&self.options, settings, &credentials)?;
        Ok((target, credentials))
    }
}

#[async_trait]
impl Backend for GcsSaBackend {
    fn name(&self) -> &'static str {
        "gcs_sa"
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
        "Google Cloud Storage (SA Impersonation)"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        let mut fields = bucket_fields(kind);
        fields.push(FieldSpec::string(
            TARGET_FIELD,
            "Service account to impersonate for GCS access",
        ));
        fields
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::bucket("gs")
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let mut errors = check_common(kind, settings);
        match settings.str(TARGET_FIELD).map(str::trim) {
            None | Some("") => errors.add(TARGET_FIELD, "This field is required."),
            Some(email) if !valid_service_account_email(email) => errors.add(
                TARGET_FIELD,
                format!("\"{email}\" is not a service account email (expected name@project.iam.gserviceaccount.com)"),
            ),
            Some(email) => {
                let email = email.to_string();
                settings.set(TARGET_FIELD, email.into());
            }
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let (target, credentials) = self.open(settings).await?;
        impersonation::import(&self.options, target, settings, credentials)
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let (target, credentials) = self.open(settings).await?;
        Ok(impersonation::export(target, settings, credentials))
    }
}

#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::path::Path;
use storage_core::bucket::{BucketTarget, UrlSigner};
use storage_core::fields::FieldSpec;
use storage_core::uri::BucketUri;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, ImportStorage, Result, Settings, StorageKind,
};
use storage_gcs::iam::{valid_service_account_email, IamCredentials, ImpersonatedCredentials};
use storage_gcs::signer::{signed_url, IamBlobSigner};
use storage_gcs::{bucket_fields, check_common, explain, GcsBackend, GcsOptions};
use tokio::sync::OnceCell;

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

    fn base_url(&self) -> url::Url {
        self.options.base_url().cloned().unwrap_or_else(|| {
            url::Url::parse("https://storage.googleapis.com").expect("static URL is valid")
        })
    }

    async fn open(
        &self,
        settings: &Settings,
    ) -> Result<(BucketTarget, Arc<ImpersonatedCredentials>)> {
        let bucket = settings.str("bucket").unwrap_or_default().to_string();
        let target_email = settings.str(TARGET_FIELD).unwrap_or_default().to_string();
        let credentials = self.impersonated(&target_email).await?;
        let base_url = self.base_url();
        let store: GoogleCloudStorage = GoogleCloudStorageBuilder::new()
            .with_bucket_name(&bucket)
            .with_base_url(base_url.as_str().trim_end_matches('/'))
            .with_credentials(credentials.clone())
            .with_retry(self.options.retry().clone())
            .with_client_options(GcsBackend::client_options(&self.options, Some(&base_url)))
            .with_http_connector(self.options.bucket_options().http_connector())
            .build()
            .map_err(|e| {
                Error::invalid_general(format!("Cannot configure GCS bucket {bucket}: {e}"))
            })?;
        let prefix = settings.str("prefix").map(str::to_string);
        let who = format!("the service account {target_email}");
        let (b, p) = (bucket.clone(), prefix.clone());
        let target = BucketTarget {
            store: Arc::new(store),
            uri: BucketUri::new("gs", &bucket),
            prefix,
            explain: Arc::new(move |err| explain(err, &b, p.as_deref(), &who)),
        };
        Ok((target, credentials))
    }
}

/// Signs V4 URLs as the target account through IAM `signBlob`.
#[derive(Debug)]
struct ImpersonatedSigner {
    base_url: url::Url,
    bucket: String,
    signer: IamBlobSigner,
}

#[async_trait]
impl UrlSigner for ImpersonatedSigner {
    async fn signed_url(
        &self,
        location: &Path,
        ttl: Duration,
        response_content_type: Option<&str>,
    ) -> Result<String> {
        signed_url(
            &self.base_url,
            &self.bucket,
            location,
            http::Method::GET,
            ttl,
            response_content_type,
            &self.signer,
            chrono::Utc::now(),
        )
        .await
        .map(|url| url.to_string())
        .map_err(Error::from)
    }
}

/// An import storage whose connection check first proves the impersonation
/// works, so its failures are reported as such (not as bucket errors).
#[derive(Debug)]
struct SaImport {
    inner: storage_core::bucket::BucketImport,
    credentials: Arc<ImpersonatedCredentials>,
}

#[async_trait]
impl ImportStorage for SaImport {
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
        impersonation_works(&self.credentials).await?;
        self.inner.check_connection().await
    }
    async fn signed_url(&self, location: &Path, ttl: Duration) -> Result<String> {
        self.inner.signed_url(location, ttl).await
    }
}

#[derive(Debug)]
struct SaExport {
    inner: storage_core::bucket::BucketExport,
    credentials: Arc<ImpersonatedCredentials>,
}

#[async_trait]
impl ExportStorage for SaExport {
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
        impersonation_works(&self.credentials).await?;
        self.inner.check_connection().await
    }
}

async fn impersonation_works(credentials: &ImpersonatedCredentials) -> Result<()> {
    credentials.token_now().await.map(|_| ()).map_err(|err| {
        Error::invalid_general(format!(
            "Cannot impersonate {}: {err}",
            credentials.target_email()
        ))
    })
}

#[async_trait]
impl Backend for GcsSaBackend {
    fn name(&self) -> &'static str {
        "gcs_sa"
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
        let signer = Arc::new(ImpersonatedSigner {
            base_url: self.base_url(),
            bucket: target.uri.bucket().to_string(),
            signer: IamBlobSigner::new(credentials.iam().clone(), credentials.target_email()),
        });
        Ok(Arc::new(SaImport {
            inner: target.import(settings, Some(signer))?,
            credentials,
        }))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let (target, credentials) = self.open(settings).await?;
        Ok(Arc::new(SaExport {
            inner: target.export(settings),
            credentials,
        }))
    }
}

//! What `gcs_sa` and `gcswif` share once they hold a service account's
//! impersonated credentials: the bucket opened with them, URLs signed as
//! that account through IAM `signBlob`, and connection checks that prove the
//! impersonation first (so its failures are reported as such, not as bucket
//! errors).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::path::Path;
use storage_core::bucket::{BucketTarget, UrlSigner};
use storage_core::uri::BucketUri;
use storage_core::{Error, ExportStorage, ImportStorage, Result, Settings};
use storage_gcs::iam::ImpersonatedCredentials;
use storage_gcs::signer::{signed_url, IamBlobSigner};
use storage_gcs::{explain, GcsBackend, GcsOptions};

/// The GCS JSON API base: the server's `--gcs-base-url`, else Google's.
fn base_url(options: &GcsOptions) -> url::Url {
    options.base_url().cloned().unwrap_or_else(|| {
        url::Url::parse("https://storage.googleapis.com").expect("static URL is valid")
    })
}

/// The storage's bucket, reached with `credentials`.
pub(crate) fn open_bucket(
    options: &GcsOptions,
    settings: &Settings,
    credentials: &Arc<ImpersonatedCredentials>,
) -> Result<BucketTarget> {
    let bucket = settings.str("bucket").unwrap_or_default().to_string();
    let base_url = base_url(options);
    let store: GoogleCloudStorage = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&bucket)
        .with_base_url(base_url.as_str().trim_end_matches('/'))
        .with_credentials(credentials.clone())
        .with_retry(options.retry().clone())
        .with_client_options(GcsBackend::client_options(options, Some(&base_url)))
        .with_http_connector(options.bucket_options().http_connector())
        .build()
        .map_err(|e| {
            Error::invalid_general(format!("Cannot configure GCS bucket {bucket}: {e}"))
        })?;
    let prefix = settings.str("prefix").map(str::to_string);
    let who = format!("the service account {}", credentials.target_email());
    let (b, p) = (bucket.clone(), prefix.clone());
    Ok(BucketTarget {
        store: Arc::new(store),
        uri: BucketUri::new("gs", &bucket),
        prefix,
        explain: Arc::new(move |err| explain(err, &b, p.as_deref(), &who)),
    })
}

/// The import storage of an opened bucket, signing as the impersonated
/// account.
pub(crate) fn import(
    options: &GcsOptions,
    target: BucketTarget,
    settings: &Settings,
    credentials: Arc<ImpersonatedCredentials>,
) -> Result<Arc<dyn ImportStorage>> {
    let signer = Arc::new(ImpersonatedSigner {
        base_url: base_url(options),
        bucket: target.uri.bucket().to_string(),
        signer: IamBlobSigner::new(credentials.iam().clone(), credentials.target_email()),
    });
    Ok(Arc::new(SaImport {
        inner: target.import(settings, Some(signer))?,
        credentials,
    }))
}

/// The export storage of an opened bucket.
pub(crate) fn export(
    target: BucketTarget,
    settings: &Settings,
    credentials: Arc<ImpersonatedCredentials>,
) -> Arc<dyn ExportStorage> {
    Arc::new(SaExport {
        inner: target.export(settings),
        credentials,
    })
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

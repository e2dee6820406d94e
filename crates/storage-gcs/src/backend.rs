//! The `gcs` storage type: builds a `GoogleCloudStorage` store from a
//! storage's key JSON (or the server's Application Default Credentials) and
//! maps GCS failures to messages a user can act on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::gcp::{
    GcpCredential, GcpSigningCredential, GoogleCloudStorage, GoogleCloudStorageBuilder,
    ServiceAccountKey as SigningKey,
};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, StaticCredentialProvider};
use storage_core::bucket::{response_type_options, short_cause, BucketTarget, UrlSigner};
use storage_core::failure::Failure;
use storage_core::uri::BucketUri;
use storage_core::{
    Backend, Capabilities, Error, ExportStorage, FieldSpec, ImportStorage, Result, Settings,
    StorageKind, ValidationErrors,
};

use crate::config::{
    check_bucket, fields, GcsConfig, GcsOptions, ServiceAccountKey, CREDENTIALS_FIELD,
};
use crate::iam::IamError;

/// The `gcs` storage type.
///
/// ```
/// use storage_core::Backend;
/// let backend = storage_gcs::GcsBackend::new(storage_gcs::GcsOptions::new());
/// assert_eq!(backend.title(), "Google Cloud Storage");
/// ```
#[derive(Debug, Clone, Default)]
pub struct GcsBackend {
    options: GcsOptions,
}

impl GcsBackend {
    /// A backend with these server-wide options.
    pub fn new(options: GcsOptions) -> Self {
        Self { options }
    }

    /// Client options with the server's timeout and endpoint policy, allowing
    /// plain HTTP when `url` uses it.
    pub fn client_options(options: &GcsOptions, url: Option<&url::Url>) -> ClientOptions {
        options.bucket.client_options(url)
    }

    /// Builds the store of a configuration, checking a `gcs_base_url` in
    /// its key against the endpoint policy (DNS included).
    pub async fn store(&self, config: &GcsConfig) -> Result<GoogleCloudStorage> {
        let mut builder = GoogleCloudStorageBuilder::new()
            .with_bucket_name(&config.bucket)
            .with_retry(self.options.retry().clone());
        let mut base_url = self.options.base_url.clone();
        let mut ambient = false;
        match &config.credentials {
            Some(key) => {
                if let Some(url) = &key.gcs_base_url {
                    base_url = Some(
                        self.options
                            .endpoint_policy()
                            .check(CREDENTIALS_FIELD, url)
                            .await?,
                    );
                }
                builder = builder.with_service_account_key(&key.json);
                if !key.private_key.is_empty() {
                    // Sign with the key even when the JSON also disables OAuth
                    // (object_store's emulator switch), as Label Studio signs
                    // with the key of the JSON.
                    let private_key = SigningKey::from_pem(key.private_key.as_bytes())
                        .map_err(|e| Error::invalid(CREDENTIALS_FIELD, format!("The private_key of Google Application Credentials cannot be read: {e}")))?;
                    builder = builder.with_signing_credentials(Arc::new(
                        StaticCredentialProvider::new(GcpSigningCredential {
                            email: key.client_email.clone(),
                            private_key: Some(private_key),
                        }),
                    ));
                }
            }
            None => match (
                self.options.server_identity_allowed(&config.bucket),
                &self.options.application_credentials,
            ) {
                (true, Some(path)) => {
                    builder = builder.with_application_credentials(path.to_string_lossy());
                }
                (true, None) if self.options.ambient_credentials => ambient = true,
                // Keyless means unsigned: without providers of its own,
                // object_store would look for Application Default
                // Credentials, down to the metadata server.
                _ => {
                    builder = builder
                        .with_skip_signature(true)
                        .with_credentials(Arc::new(StaticCredentialProvider::new(GcpCredential {
                            bearer: String::new(),
                        })))
                        .with_signing_credentials(Arc::new(StaticCredentialProvider::new(
                            GcpSigningCredential {
                                email: String::new(),
                                private_key: None,
                            },
                        )));
                }
            },
        }
        if let Some(url) = &base_url {
            builder = builder.with_base_url(url.as_str().trim_end_matches('/'));
        }
        // The metadata server is link-local: an operator who opted in to
        // ambient credentials lets this store's client reach it.
        let connector = if ambient {
            storage_core::EndpointPolicy::allow_private()
                .with_env_proxy(self.options.endpoint_policy().uses_env_proxy())
                .connector()
                .with_timeout(self.options.bucket.timeout())
        } else {
            self.options.bucket.http_connector()
        };
        builder
            .with_client_options(Self::client_options(&self.options, base_url.as_ref()))
            .with_http_connector(connector)
            .build()
            .map_err(|e| {
                Error::invalid(
                    CREDENTIALS_FIELD,
                    format!(
                        "Cannot use these Google credentials: {}",
                        storage_core::redact::without_quoted_values(&e.to_string())
                    ),
                )
            })
    }
}

/// The static checks of every GCS-like storage: bucket, presign TTL, regex.
pub fn check_common(kind: StorageKind, settings: &Settings) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    check_bucket(settings, &mut errors);
    storage_core::bucket::check_presign_ttl(settings, &mut errors);
    storage_core::bucket::check_prefix(settings, &mut errors);
    if let Err(e) = storage_core::fields::check_import_rules(settings, kind) {
        errors.merge(e);
    }
    let oidc = [
        crate::oidc::SERVICE_ACCOUNT_FIELD,
        crate::oidc::AUDIENCE_FIELD,
    ];
    let set = oidc.map(|field| settings.str(field).is_some());
    if set[0] != set[1] {
        let missing = if set[0] { oidc[1] } else { oidc[0] };
        errors.add(missing, format!("Set {} and {} together", oidc[0], oidc[1]));
    }
    errors
}

#[async_trait]
impl Backend for GcsBackend {
    fn name(&self) -> &'static str {
        "gcs"
    }

    fn push_format(&self) -> Option<storage_core::events::PushFormat> {
        Some(crate::pubsub::PUSH_FORMAT)
    }

    async fn push_authenticated(&self, settings: &Settings, authorization: &str) -> Result<bool> {
        self.options
            .pubsub_push_authenticated(settings, authorization)
            .await
    }

    fn title(&self) -> &'static str {
        "Google Cloud Storage"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        fields(kind)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::bucket("gs")
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let mut errors = check_common(kind, settings);
        if let Some(json) = settings.str(CREDENTIALS_FIELD) {
            match ServiceAccountKey::parse(json) {
                Ok(key) => {
                    if let Some(url) = &key.gcs_base_url {
                        if let Err(Error::InvalidConfig(e)) = self
                            .options
                            .endpoint_policy()
                            .check_literal(CREDENTIALS_FIELD, url)
                        {
                            errors.merge(e);
                        }
                    }
                }
                Err(message) => errors.add(CREDENTIALS_FIELD, message),
            }
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let config = GcsConfig::from_settings(settings);
        let store = Arc::new(self.store(&config).await?);
        // A keyless storage signs nothing: `/resolve` streams its objects
        // through the server instead of redirecting (docs/security.md).
        let server_identity = self.options.server_identity_allowed(&config.bucket)
            && (self.options.application_credentials.is_some() || self.options.ambient_credentials);
        let signer: Option<Arc<dyn UrlSigner>> = if config.credentials.is_some() || server_identity
        {
            Some(Arc::new(GcsSigner(store.clone())))
        } else {
            None
        };
        Ok(Arc::new(target(&config, store).import(settings, signer)?))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let config = GcsConfig::from_settings(settings);
        let store = Arc::new(self.store(&config).await?);
        Ok(Arc::new(target(&config, store).export(settings)))
    }
}

fn target(config: &GcsConfig, store: Arc<GoogleCloudStorage>) -> BucketTarget {
    let bucket = config.bucket.clone();
    let prefix = config.prefix.clone();
    // Without a key JSON the credentials are the server's own (ADC).
    let fields: &[&str] = if config.credentials.is_some() {
        &[CREDENTIALS_FIELD]
    } else {
        &[]
    };
    BucketTarget {
        store,
        uri: BucketUri::new("gs", &config.bucket),
        prefix: config.prefix.clone(),
        explain: Arc::new(move |err| {
            explain(err, &bucket, prefix.as_deref(), "the service account")
                .with_credential_fields(fields)
        }),
    }
}

/// V4 signed GET URLs from the storage's own client (local key, or
/// object_store's signBlob call for keys without one).
#[derive(Debug)]
struct GcsSigner(Arc<GoogleCloudStorage>);

#[async_trait]
impl UrlSigner for GcsSigner {
    async fn signed_url(
        &self,
        location: &Path,
        ttl: Duration,
        response_content_type: Option<&str>,
    ) -> Result<String> {
        self.0
            .signed_url_opts(
                http::Method::GET,
                location,
                ttl,
                &response_type_options(response_content_type),
            )
            .await
            .map(|url| url.to_string())
            .map_err(|e| {
                let err = Error::from_object_store(format!("signing {location}"), e);
                if short_cause(&err).contains("signBlob") {
                    Error::PermissionDenied {
                        reason: "signing needs iam.serviceAccounts.signBlob on the service account (roles/iam.serviceAccountTokenCreator)".into(),
                    }
                } else {
                    err
                }
            })
    }
}

/// Turns a failed GCS connection check into the message a user needs,
/// decided from the HTTP status and Google's error code. `who` names the
/// identity (for GCS SA, the target service account). A rejected credential
/// comes back as [`Error::CredentialsRejected`] naming no field: the caller
/// knows which of its settings hold the credentials.
pub fn explain(err: Error, bucket: &str, prefix: Option<&str>, who: &str) -> Error {
    if let Error::InvalidConfig(_) = err {
        return match prefix {
            Some(prefix) => Error::invalid_general(format!(
                "No blobs found in {bucket}/{prefix} or prefix doesn't exist"
            )),
            None => err,
        };
    }
    let failure = Failure::of(&err);
    let iam_unreachable = storage_core::failure::find_source::<IamError>(&err)
        .is_some_and(|iam| matches!(iam, IamError::Network { .. }));
    let message = if matches!(err, Error::NotFound { .. })
        || failure.status == Some(404)
        || failure.code_is("NoSuchBucket")
    {
        format!("Cannot find bucket {bucket} in GCS")
    } else if matches!(err, Error::CredentialsRejected { .. }) || failure.credentials_rejected() {
        return Error::CredentialsRejected {
            fields: Vec::new(),
            message: format!(
                "Google rejected the credentials used for bucket {bucket}: {}",
                short_cause(&err)
            ),
            code: failure.code,
        };
    } else if matches!(err, Error::PermissionDenied { .. })
        || failure.status == Some(403)
        || failure.code_is("AccessDenied")
    {
        format!(
            "Access denied to GCS bucket {bucket}: {who} needs storage.objects.list on it (roles/storage.objectViewer; roles/storage.objectCreator to export)"
        )
    } else if failure.unreachable || iam_unreachable {
        format!(
            "Cannot reach GCS for bucket {bucket}: {}",
            short_cause(&err)
        )
    } else {
        format!(
            "Cannot connect to GCS bucket {bucket}: {}",
            short_cause(&err)
        )
    };
    Error::invalid_general(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_said(status: &str) -> Error {
        Error::backend("listing", format!("Error performing GET http://h/b in 104.03ms - Server returned non-2xx status code: {status}: <Error/>"))
    }

    #[test]
    fn explains_by_status_code() {
        let denied = explain(
            server_said("403 Forbidden"),
            "b",
            None,
            "the service account x@p.iam.gserviceaccount.com",
        );
        assert!(
            denied
                .to_string()
                .contains("Access denied to GCS bucket b: the service account x@p"),
            "{denied}"
        );
        assert!(explain(server_said("404 Not Found"), "b", None, "")
            .to_string()
            .contains("Cannot find bucket b in GCS"));
        assert!(explain(server_said("401 Unauthorized"), "b", None, "")
            .to_string()
            .contains("rejected the credentials"));
        let other = explain(server_said("500 Internal Server Error"), "b", None, "");
        assert!(
            other.to_string().contains("Cannot connect to GCS bucket b"),
            "{other}"
        );
    }
}

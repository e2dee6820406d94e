//! The stored configuration of a GCS storage, with Label Studio's field
//! names, and the server-wide options shared by the GCS backends.

use std::path::PathBuf;

use serde_json::Value;
use storage_core::bucket::BucketOptions;
use storage_core::fields::{export_fields, import_fields, presign_fields, FieldSpec};
use storage_core::{Settings, StorageKind, ValidationErrors};

/// The field that holds the service-account key JSON.
pub const CREDENTIALS_FIELD: &str = "google_application_credentials";

/// The fields every GCS-like storage has: `bucket`, `prefix`, and the import
/// (with presign) or export options.
pub fn bucket_fields(kind: StorageKind) -> Vec<FieldSpec> {
    let mut fields = vec![
        FieldSpec::string("bucket", "GCS bucket name"),
        FieldSpec::string("prefix", "GCS bucket prefix (folder)"),
    ];
    match kind {
        StorageKind::Import => {
            fields.extend(import_fields());
            fields.extend(presign_fields());
            fields.extend([
                FieldSpec::string(
                    crate::oidc::SERVICE_ACCOUNT_FIELD,
                    "The service account a Pub/Sub push subscription signs its OIDC tokens as \
                     (extension): pushes with such a token need no ?token=",
                ),
                FieldSpec::string(
                    crate::oidc::AUDIENCE_FIELD,
                    "The audience of those tokens, as the push subscription sets it",
                ),
            ]);
        }
        StorageKind::Export => fields.extend(export_fields()),
    }
    fields.push(FieldSpec::string(
        "google_project_id",
        "Google project id (optional)",
    ));
    fields
}

pub(crate) fn fields(kind: StorageKind) -> Vec<FieldSpec> {
    let mut fields = bucket_fields(kind);
    fields.push(
        FieldSpec::string(CREDENTIALS_FIELD, "Service-account key JSON (write-only); empty: the server's Application Default Credentials")
            .secret(),
    );
    fields
}

/// Checks a bucket name against GCS's rules (3 to 222 characters of
/// lower-case letters, digits, `-`, `_` and `.`, starting and ending with a
/// letter or digit).
pub fn check_bucket(settings: &Settings, errors: &mut ValidationErrors) {
    match settings.str("bucket") {
        None => errors.add("bucket", "This field is required."),
        Some(bucket) => {
            let bytes = bucket.as_bytes();
            let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let valid = (3..=222).contains(&bytes.len())
                && edge(bytes[0])
                && edge(bytes[bytes.len() - 1])
                && bytes
                    .iter()
                    .all(|&b| edge(b) || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                errors.add(
                    "bucket",
                    format!("Invalid bucket name \"{bucket}\": GCS bucket names have 3 to 222 lower-case letters, digits, '-', '_' or '.', and start and end with a letter or digit"),
                );
            }
        }
    }
}

/// The parts of a service-account key JSON that matter here. `Debug` never
/// shows the key.
#[derive(Clone, Default, PartialEq)]
pub struct ServiceAccountKey {
    /// The whole JSON, as given.
    pub json: String,
    /// `client_email`.
    pub client_email: String,
    /// `private_key` (PEM), possibly empty.
    pub private_key: String,
    /// `gcs_base_url` (object_store's hook for emulators), if present.
    pub gcs_base_url: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("gcs_base_url", &self.gcs_base_url)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Parses a key JSON; the error names what is wrong, never the content.
    pub fn parse(json: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            format!(
                "Google Application Credentials must be valid JSON string. {}",
                storage_core::redact::without_quoted_values(&e.to_string())
            )
        })?;
        let Value::Object(map) = value else {
            return Err(
                "Google Application Credentials must be a JSON object (a service-account key file)"
                    .into(),
            );
        };
        let text = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_string);
        let missing: Vec<&str> = ["client_email", "private_key", "private_key_id"]
            .into_iter()
            .filter(|name| text(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "Google Application Credentials must be a service-account key JSON; it lacks {}",
                missing.join(", ")
            ));
        }
        let gcs_base_url = text("gcs_base_url");
        if gcs_base_url
            .as_deref()
            .is_some_and(|url| url.trim().is_empty())
        {
            // object_store takes an empty base URL as given and panics on
            // the first request it builds.
            return Err(
                "\"gcs_base_url\" in Google Application Credentials must not be empty: leave it out to use Google's endpoint"
                    .into(),
            );
        }
        Ok(Self {
            json: json.to_string(),
            client_email: text("client_email").unwrap_or_default(),
            private_key: text("private_key").unwrap_or_default(),
            gcs_base_url,
        })
    }
}

/// A GCS storage's connection settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcsConfig {
    /// Bucket name.
    pub bucket: String,
    /// Folder prefix, as typed.
    pub prefix: Option<String>,
    /// The service-account key; `None`: Application Default Credentials.
    pub credentials: Option<ServiceAccountKey>,
}

impl GcsConfig {
    /// Reads the configuration from checked settings.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            bucket: settings.str("bucket").unwrap_or_default().to_string(),
            prefix: settings.str("prefix").map(str::to_string),
            credentials: settings
                .str(CREDENTIALS_FIELD)
                .and_then(|json| ServiceAccountKey::parse(json).ok()),
        }
    }
}

/// Server-wide options of the GCS backends: the options every bucket
/// backend shares ([`BucketOptions`]) plus Google's endpoints and the
/// server's own credentials file.
#[derive(Debug, Clone)]
pub struct GcsOptions {
    pub(crate) bucket: BucketOptions,
    pub(crate) base_url: Option<url::Url>,
    pub(crate) iam_endpoint: url::Url,
    pub(crate) application_credentials: Option<PathBuf>,
    pub(crate) keyless_server_credentials: bool,
    pub(crate) ambient_credentials: bool,
    pub(crate) server_credential_buckets: Option<Vec<String>>,
    pub(crate) pubsub_oidc: std::sync::Arc<crate::oidc::OidcVerifier>,
}

impl Default for GcsOptions {
    fn default() -> Self {
        Self::from(BucketOptions::default())
    }
}

impl From<BucketOptions> for GcsOptions {
    fn from(bucket: BucketOptions) -> Self {
        Self {
            bucket,
            base_url: None,
            iam_endpoint: crate::iam::IamCredentials::default_endpoint(),
            application_credentials: None,
            keyless_server_credentials: false,
            ambient_credentials: false,
            server_credential_buckets: None,
            pubsub_oidc: std::sync::Arc::new(crate::oidc::OidcVerifier::new(
                crate::oidc::GOOGLE_CERTS_URL,
            )),
        }
    }
}

impl GcsOptions {
    storage_core::bucket_options_methods!();

    /// Strict endpoint policy, Google's endpoints, ADC from the environment
    /// (the policy also governs `gcs_base_url` in a key JSON).
    pub fn new() -> Self {
        Self::default()
    }

    /// The GCS endpoint for storages whose key does not name one (default
    /// `https://storage.googleapis.com`); operator configuration, for
    /// emulators and private deployments.
    pub fn with_base_url(mut self, url: url::Url) -> Self {
        self.base_url = Some(url);
        self
    }

    /// Where the keys of Pub/Sub's push OIDC tokens are fetched (default
    /// Google's, [`crate::oidc::GOOGLE_CERTS_URL`]).
    pub fn with_pubsub_certs_url(mut self, url: &url::Url) -> Self {
        self.pubsub_oidc = std::sync::Arc::new(crate::oidc::OidcVerifier::new(url.as_str()));
        self
    }

    /// Whether a push's `authorization` header carries Pub/Sub's OIDC
    /// token for a storage with these settings (see [`crate::oidc`]).
    ///
    /// # Errors
    /// [`storage_core::Error::Unauthenticated`] saying why a token was refused.
    pub async fn pubsub_push_authenticated(
        &self,
        settings: &Settings,
        authorization: &str,
    ) -> storage_core::Result<bool> {
        self.pubsub_oidc.authenticate(settings, authorization).await
    }

    /// The IAM Credentials API endpoint (default
    /// `https://iamcredentials.googleapis.com`).
    pub fn with_iam_endpoint(mut self, url: url::Url) -> Self {
        self.iam_endpoint = url;
        self
    }

    /// The server's own credentials file (service-account key or
    /// authorized user): the base identity of `gcs_sa` storages, and of
    /// keyless `gcs` storages with [`Self::with_keyless_server_credentials`].
    /// Without it, Application Default Credentials (environment, well-known
    /// file, metadata server) are used only with
    /// [`Self::with_ambient_credentials`].
    pub fn with_application_credentials(mut self, path: impl Into<PathBuf>) -> Self {
        self.application_credentials = Some(path.into());
        self
    }

    /// Lets `gcs` storages without a key use the server's own Google
    /// identity (default: their requests are unsigned, for public buckets).
    pub fn with_keyless_server_credentials(mut self, enabled: bool) -> Self {
        self.keyless_server_credentials = enabled;
        self
    }

    /// Lets the server's own Google identity be found in the environment
    /// (Application Default Credentials: well-known file, metadata server)
    /// when no credentials file is configured; default off.
    pub fn with_ambient_credentials(mut self, enabled: bool) -> Self {
        self.ambient_credentials = enabled;
        self
    }

    /// Restricts the server's own identity, for keyless `gcs` storages, to
    /// these buckets.
    pub fn with_server_credential_buckets(
        mut self,
        buckets: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.server_credential_buckets = Some(buckets.into_iter().map(Into::into).collect());
        self
    }

    /// Whether a keyless storage of `bucket` may use the server's identity.
    pub(crate) fn server_identity_allowed(&self, bucket: &str) -> bool {
        self.keyless_server_credentials
            && self
                .server_credential_buckets
                .as_ref()
                .is_none_or(|buckets| buckets.iter().any(|b| b == bucket))
    }

    /// Whether ambient credentials (ADC, metadata server) may be used.
    pub fn ambient_credentials(&self) -> bool {
        self.ambient_credentials
    }

    /// The IAM Credentials endpoint.
    pub fn iam_endpoint(&self) -> &url::Url {
        &self.iam_endpoint
    }

    /// The configured GCS endpoint, if any.
    pub fn base_url(&self) -> Option<&url::Url> {
        self.base_url.as_ref()
    }

    /// The server's own credentials file, if configured.
    pub fn application_credentials(&self) -> Option<&std::path::Path> {
        self.application_credentials.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing_names_the_problem_and_hides_the_key() {
        assert!(ServiceAccountKey::parse("{not json")
            .unwrap_err()
            .starts_with("Google Application Credentials must be valid JSON string."));
        assert!(ServiceAccountKey::parse("[1]")
            .unwrap_err()
            .contains("JSON object"));
        assert!(ServiceAccountKey::parse(r#"{"client_email": "a@b"}"#)
            .unwrap_err()
            .contains("private_key, private_key_id"));
        let key = ServiceAccountKey::parse(
            r#"{"client_email": "sa@p.iam.gserviceaccount.com", "private_key": "-----BEGIN PRIVATE KEY-----SECRET", "private_key_id": "k"}"#,
        )
        .unwrap();
        assert!(!format!("{key:?}").contains("SECRET"));
    }

    #[test]
    fn bucket_names() {
        let check = |name: &str| {
            let mut settings = Settings::default();
            settings.set("bucket", name.into());
            let mut errors = ValidationErrors::default();
            check_bucket(&settings, &mut errors);
            errors.is_empty()
        };
        assert!(check("my-bucket_1.data"));
        assert!(!check("My-Bucket"));
        assert!(!check("ab"));
        assert!(!check("-abc"));
    }
}

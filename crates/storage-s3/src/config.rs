//! The stored configuration of an S3 storage, with Label Studio's field
//! names, and the server-wide options of the backend.

use std::sync::Arc;

use object_store::aws::AwsCredential;
use storage_core::bucket::BucketOptions;
use storage_core::fields::{export_fields, import_fields, presign_fields, FieldSpec, FieldType};
use storage_core::{Settings, StorageKind, ValidationErrors};

/// The S3 fields of `kind` storages, in Label Studio's order.
pub(crate) fn fields(kind: StorageKind) -> Vec<FieldSpec> {
    let mut fields = vec![
        FieldSpec::string("bucket", "S3 bucket name"),
        FieldSpec::string("prefix", "S3 bucket prefix (folder)"),
    ];
    match kind {
        StorageKind::Import => {
            fields.extend(import_fields());
            fields.extend(presign_fields());
        }
        StorageKind::Export => fields.extend(export_fields()),
    }
    fields.extend([
        FieldSpec::string("aws_access_key_id", "AWS access key id (write-only)").secret(),
        FieldSpec::string(
            "aws_secret_access_key",
            "AWS secret access key (write-only)",
        )
        .secret(),
        FieldSpec::string("aws_session_token", "AWS session token (write-only)").secret(),
        FieldSpec::string(
            "aws_sse_kms_key_id",
            "KMS key id for server-side encryption of exported objects",
        ),
        FieldSpec::string("region_name", "AWS region (default us-east-1)"),
        FieldSpec::string("s3_endpoint", "S3-compatible endpoint URL (MinIO, R2, ...)"),
        FieldSpec::string(
            "role_arn",
            "IAM role the server assumes (STS AssumeRole) to reach the bucket",
        ),
        FieldSpec {
            ty: FieldType::Str {
                max_len: Some(1224),
            },
            ..FieldSpec::string("external_id", "External id sent with AssumeRole")
        },
    ]);
    if kind == StorageKind::Import {
        fields.push(FieldSpec::string(
            crate::sqs::SQS_QUEUE_URL_FIELD,
            "SQS queue that receives the bucket's event notifications (extension): new and \
             deleted objects become task changes without a sync",
        ));
    }
    fields
}

/// An S3 storage's connection settings.
///
/// `Debug` shows the bucket, prefix, region and endpoint only: never a key.
#[derive(Clone, Default, PartialEq)]
pub struct S3Config {
    /// Bucket name (or access point ARN).
    pub bucket: String,
    /// Folder prefix, as typed.
    pub prefix: Option<String>,
    /// Region; `us-east-1` when unset.
    pub region: Option<String>,
    /// Custom endpoint of an S3-compatible service.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// KMS key id for SSE-KMS on export.
    pub sse_kms_key_id: Option<String>,
    /// Role to assume with the server's own credentials.
    pub role_arn: Option<String>,
    /// External id for the AssumeRole call.
    pub external_id: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// A configuration for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            ..Self::default()
        }
    }

    /// Sets the prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets a custom endpoint.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets static credentials.
    pub fn with_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(key_id.into());
        self.secret_access_key = Some(secret.into());
        self
    }

    /// Reads the configuration from checked settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let text = |name: &str| settings.str(name).map(str::to_string);
        Self {
            bucket: text("bucket").unwrap_or_default(),
            prefix: text("prefix"),
            region: text("region_name"),
            endpoint: text("s3_endpoint"),
            access_key_id: text("aws_access_key_id"),
            secret_access_key: text("aws_secret_access_key"),
            session_token: text("aws_session_token"),
            sse_kms_key_id: text("aws_sse_kms_key_id"),
            role_arn: text("role_arn"),
            external_id: text("external_id"),
        }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or("us-east-1")
    }

    /// Static field rules (no network): bucket name, key pair, role ARN,
    /// presign TTL.
    pub(crate) fn check(&self, settings: &Settings) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.bucket.is_empty() {
            errors.add("bucket", "This field is required.");
        } else if !valid_bucket(&self.bucket) || self.bucket.bytes().all(|b| b == b'.') {
            // `.` and `..` would be path segments of a path-style URL:
            // `http://endpoint/../key` is another bucket's, or none.
            errors.add(
                "bucket",
                format!(
                    "Invalid bucket name \"{}\": it must match \"^[a-zA-Z0-9.\\-_]{{1,255}}$\" or be an access point ARN",
                    self.bucket
                ),
            );
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => errors.add(
                "aws_secret_access_key",
                "Access Key ID and Secret Access Key must be provided together.",
            ),
            (None, Some(_)) => errors.add(
                "aws_access_key_id",
                "Access Key ID and Secret Access Key must be provided together.",
            ),
            _ => {}
        }
        // These go into the request's host and headers, which the S3 client
        // builds with `unwrap` (a bad value panics the request's task).
        if let Some(region) = &self.region {
            if !valid_region(region) {
                errors.add(
                    "region_name",
                    format!("Invalid region {region:?}: use letters, digits, '-', '_' or '.' (e.g. us-east-1)"),
                );
            }
        }
        for (field, value) in [
            ("aws_access_key_id", &self.access_key_id),
            ("aws_session_token", &self.session_token),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.chars().any(char::is_control))
            {
                // Credentials are never echoed.
                errors.add(
                    field,
                    "Must not contain control characters (line breaks, tabs, ...).",
                );
            }
        }
        if let Some(arn) = &self.role_arn {
            if !valid_role_arn(arn) {
                errors.add(
                    "role_arn",
                    format!("\"{arn}\" is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"),
                );
            }
        }
        storage_core::bucket::check_presign_ttl(settings, &mut errors);
        storage_core::bucket::check_prefix(settings, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn valid_bucket(bucket: &str) -> bool {
    let plain = bucket.len() <= 255
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    let arn = bucket.starts_with("arn:aws")
        && (bucket.contains(":accesspoint/") || bucket.contains(":outpost/"))
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'.' | b'-' | b'_'));
    plain || arn
}

fn valid_region(region: &str) -> bool {
    region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:") else {
        return false;
    };
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    matches!(parts.as_slice(), [partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty()))
}

/// Server-wide options of the S3 backend: the options every bucket backend
/// shares ([`BucketOptions`]) plus the server's own AWS credentials and the
/// STS endpoint.
#[derive(Clone, Default)]
pub struct S3Options {
    pub(crate) bucket: BucketOptions,
    pub(crate) server_credentials: Option<Arc<AwsCredential>>,
    pub(crate) keyless_server_credentials: bool,
    pub(crate) server_credential_buckets: Option<Vec<String>>,
    pub(crate) sts_endpoint: Option<url::Url>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field(
                "server_credentials",
                &self.server_credentials.as_ref().map(|_| "******"),
            )
            .field(
                "keyless_server_credentials",
                &self.keyless_server_credentials,
            )
            .field("server_credential_buckets", &self.server_credential_buckets)
            .field(
                "sts_endpoint",
                &self.sts_endpoint.as_ref().map(url::Url::as_str),
            )
            .finish()
    }
}

impl From<BucketOptions> for S3Options {
    fn from(bucket: BucketOptions) -> Self {
        Self {
            bucket,
            ..Self::default()
        }
    }
}

impl S3Options {
    storage_core::bucket_options_methods!();

    /// Strict endpoint policy, no server credentials, AWS's STS.
    pub fn new() -> Self {
        Self::default()
    }

    /// The server's own AWS credentials: the base identity of `role_arn`
    /// storages (AssumeRole), and of keyless storages only with
    /// [`Self::with_keyless_server_credentials`].
    pub fn with_server_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<String>,
        token: Option<String>,
    ) -> Self {
        self.server_credentials = Some(Arc::new(AwsCredential {
            key_id: key_id.into(),
            secret_key: secret.into(),
            token,
        }));
        self
    }

    /// Lets S3 storages without keys sign with the server's own
    /// credentials (default: they send unsigned requests). Never for a
    /// storage with an `s3_endpoint`: the server's keys go to AWS only.
    pub fn with_keyless_server_credentials(mut self, enabled: bool) -> Self {
        self.keyless_server_credentials = enabled;
        self
    }

    /// Restricts the server's own credentials, for keyless storages, to
    /// these buckets; other keyless storages send unsigned requests.
    pub fn with_server_credential_buckets(
        mut self,
        buckets: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.server_credential_buckets = Some(buckets.into_iter().map(Into::into).collect());
        self
    }

    /// The server's own credentials when a keyless `config` may use them:
    /// the operator opted in, the storage names no endpoint of its own and
    /// its bucket is allowed.
    pub(crate) fn server_identity_for(&self, config: &S3Config) -> Option<&Arc<AwsCredential>> {
        let keyless = config.role_arn.is_none()
            && config.access_key_id.is_none()
            && config.secret_access_key.is_none();
        let bucket_allowed = self
            .server_credential_buckets
            .as_ref()
            .is_none_or(|buckets| buckets.contains(&config.bucket));
        (keyless && self.keyless_server_credentials && config.endpoint.is_none() && bucket_allowed)
            .then_some(self.server_credentials.as_ref())
            .flatten()
    }

    /// The STS endpoint for AssumeRole (default `https://sts.<region>.amazonaws.com`).
    pub fn with_sts_endpoint(mut self, endpoint: url::Url) -> Self {
        self.sts_endpoint = Some(endpoint);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_arn_rules() {
        assert!(valid_bucket("my-bucket.v2_x"));
        assert!(!valid_bucket("bad/name"));
        assert!(valid_bucket(
            "arn:aws:s3:us-east-1:123456789012:accesspoint/ap"
        ));
        assert!(!valid_bucket(
            "arn:aws:s3:us-east-1:123456789012:accesspoint/a p"
        ));
        assert!(valid_region("eu-west-3") && valid_region("auto"));
        assert!(
            !valid_region("a b")
                && !valid_region("\n")
                && !valid_region("ü")
                && !valid_region("x/y")
        );
        assert!(valid_role_arn(
            "arn:aws:iam::123456789012:role/label-studio"
        ));
        assert!(!valid_role_arn("arn:aws:iam::1234:role/x"));
        assert!(!valid_role_arn("arn:aws:s3:::bucket"));
    }

    #[test]
    fn the_server_identity_serves_keyless_storages_only_when_allowed() {
        let keyless = S3Config::new("allowed");
        let server = S3Options::new().with_server_credentials("AKIASERVER", "s", None);
        assert!(
            server.server_identity_for(&keyless).is_none(),
            "not without the opt-in"
        );
        let opted_in = server.clone().with_keyless_server_credentials(true);
        assert!(opted_in.server_identity_for(&keyless).is_some());
        assert!(
            opted_in
                .server_identity_for(&keyless.clone().with_endpoint("https://s3.example.com"))
                .is_none(),
            "never toward a user's endpoint"
        );
        assert!(opted_in
            .server_identity_for(&keyless.clone().with_credentials("k", "s"))
            .is_none());
        let listed = opted_in.with_server_credential_buckets(["allowed"]);
        assert!(listed.server_identity_for(&keyless).is_some());
        assert!(listed
            .server_identity_for(&S3Config::new("other"))
            .is_none());
        let no_keys = S3Options::new().with_keyless_server_credentials(true);
        assert!(no_keys.server_identity_for(&keyless).is_none());
    }

    #[test]
    fn debug_never_shows_keys() {
        let config = S3Config::new("b").with_credentials("AKIAEXAMPLEKEYID", "very-secret");
        let shown = format!("{config:?}");
        assert!(shown.contains("\"b\""));
        assert!(!shown.contains("AKIAEXAMPLEKEYID") && !shown.contains("very-secret"));
        let options = S3Options::new().with_server_credentials("AKIASERVER", "server-secret", None);
        let shown = format!("{options:?}");
        assert!(!shown.contains("AKIASERVER") && !shown.contains("server-secret"));
    }
}

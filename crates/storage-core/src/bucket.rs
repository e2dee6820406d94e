//! The import and export storages of every bucket backend (S3, GCS, GCS
//! SA): listing, keys, `scheme://bucket/key` URIs, export placement and
//! connection checks are the same for all; a backend supplies the store, a
//! URL signer and the wording of its connection errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::filter::{Listing, RegexTarget};
use crate::uri::BucketUri;
use crate::{check_listable, Error, ExportStorage, ImportOptions, ImportStorage, Result, Settings};

/// Produces URLs that let a browser fetch one object without credentials.
#[async_trait]
pub trait UrlSigner: Send + Sync + fmt::Debug {
    /// A `GET` URL for `location`, valid for `ttl`. With a
    /// `response_content_type`, the URL makes the bucket answer with that
    /// `Content-Type` (its signed `response-content-type` parameter),
    /// whatever type the object was stored with.
    async fn signed_url(
        &self,
        location: &Path,
        ttl: Duration,
        response_content_type: Option<&str>,
    ) -> Result<String>;
}

/// The `Content-Type` a browser should see for the object at `location`,
/// guessed from its extension (`None` when the extension says nothing).
///
/// Objects are often uploaded without a type (S3 then answers
/// `binary/octet-stream`), and a browser downloads a PDF or refuses to play
/// audio it is handed that way; so signed URLs ask for the type the key's
/// extension names, as Label Studio does for S3.
///
/// ```
/// use object_store::path::Path;
/// use storage_core::bucket::content_type_of;
/// assert_eq!(content_type_of(&Path::from("scans/page 1.PDF")), Some("application/pdf"));
/// assert_eq!(content_type_of(&Path::from("images/cat.jpg")), Some("image/jpeg"));
/// assert_eq!(content_type_of(&Path::from("README")), None);
/// ```
pub fn content_type_of(location: &Path) -> Option<&'static str> {
    mime_guess::from_path(location.as_ref()).first_raw()
}

/// object_store's signing options for a `GET` that answers with
/// `response_content_type` (S3 and GCS both name the parameter
/// `response-content-type`).
#[cfg(feature = "cloud")]
pub fn response_type_options(
    response_content_type: Option<&str>,
) -> object_store::signer::SignedUrlOptions {
    object_store::signer::SignedUrlOptions::new()
        .with_query(response_content_type.map(|value| ("response-content-type", value.to_string())))
}

/// Turns a failed connection check into the backend's own explanation
/// (missing bucket, rejected credentials, denied permission, unreachable
/// endpoint).
pub type Explain = Arc<dyn Fn(Error) -> Error + Send + Sync>;

/// Where a bucket storage points: what the stored settings say, the store
/// built from them, and how the backend explains connection failures.
#[derive(Clone)]
pub struct BucketTarget {
    /// The store on the bucket.
    pub store: Arc<dyn ObjectStore>,
    /// The URIs of the bucket's objects.
    pub uri: BucketUri,
    /// The prefix as the user typed it.
    pub prefix: Option<String>,
    /// Explains connection failures in the backend's terms.
    pub explain: Explain,
}

impl fmt::Debug for BucketTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's own Debug may show credentials: never print it.
        f.debug_struct("BucketTarget")
            .field("uri", &self.uri)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl BucketTarget {
    fn prefix_path(&self) -> Option<Path> {
        self.prefix
            .as_deref()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .map(Path::from)
    }

    /// An import storage with the import options of `settings`.
    pub fn import(
        self,
        settings: &Settings,
        signer: Option<Arc<dyn UrlSigner>>,
    ) -> Result<BucketImport> {
        let options = ImportOptions::from_settings(settings);
        Ok(BucketImport {
            listing: Listing::new(
                self.prefix.as_deref(),
                options.recursive_scan,
                options.regex_filter.as_deref(),
                RegexTarget::FullKey,
            )?,
            target: self,
            signer,
        })
    }

    /// An export storage with the export options of `settings`.
    pub fn export(self, settings: &Settings) -> BucketExport {
        BucketExport {
            prefix: self.prefix_path(),
            can_delete_objects: settings.bool("can_delete_objects", false),
            target: self,
        }
    }

    async fn check(&self, require_object: bool) -> Result<()> {
        let prefix = self.prefix_path();
        check_listable(
            self.store.clone(),
            prefix.as_ref(),
            require_object && prefix.is_some(),
        )
        .await
        .map_err(|err| (self.explain)(err))
    }
}

/// A bucket import storage: keys are raw object keys, Files-mode tasks
/// point at `scheme://bucket/key`.
#[derive(Debug)]
pub struct BucketImport {
    target: BucketTarget,
    listing: Listing,
    signer: Option<Arc<dyn UrlSigner>>,
}

#[async_trait]
impl ImportStorage for BucketImport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.target.store.clone()
    }

    fn listing(&self) -> &Listing {
        &self.listing
    }

    fn object_key(&self, location: &Path) -> String {
        location.as_ref().to_string()
    }

    fn task_url(&self, location: &Path) -> String {
        self.target.uri.uri(location.as_ref())
    }

    /// As Label Studio: with a prefix, at least one object must be under it;
    /// without one, the bucket must be readable.
    async fn check_connection(&self) -> Result<()> {
        self.target.check(true).await
    }

    async fn signed_url(&self, location: &Path, ttl: Duration) -> Result<String> {
        match &self.signer {
            Some(signer) => {
                signer
                    .signed_url(location, ttl, content_type_of(location))
                    .await
            }
            None => Err(Error::NotSupported {
                what: format!("signed URLs for {}", self.target.uri.uri("")),
            }),
        }
    }
}

/// A bucket export storage: one compact JSON object per annotation at
/// `<prefix>/<key>`.
#[derive(Debug)]
pub struct BucketExport {
    target: BucketTarget,
    prefix: Option<Path>,
    can_delete_objects: bool,
}

#[async_trait]
impl ExportStorage for BucketExport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.target.store.clone()
    }

    fn location(&self, key: &str) -> Path {
        match &self.prefix {
            Some(prefix) => Path::from(format!("{prefix}/{key}")),
            None => Path::from(key),
        }
    }

    fn can_delete_objects(&self) -> bool {
        self.can_delete_objects
    }

    /// Export targets may be empty.
    async fn check_connection(&self) -> Result<()> {
        self.target.check(false).await
    }
}

/// The HTTP status a store's server answered, when the error reports one
/// (see [`crate::failure::Failure`], which also gives the provider's code).
pub fn http_status(err: &Error) -> Option<u16> {
    crate::failure::Failure::of(err).status
}

/// The most specific line of an error report, kept short: for messages
/// that quote the underlying cause.
pub fn short_cause(err: &Error) -> String {
    let report = crate::jobs::error_report(err);
    let line = report
        .lines()
        .map(|l| l.trim_start_matches("caused by: "))
        .next_back()
        .unwrap_or(&report);
    line.chars().take(300).collect()
}

/// Checks `presign_ttl` against the 7-day limit of V4 signed URLs (S3 and GCS).
pub fn check_presign_ttl(settings: &Settings, errors: &mut crate::ValidationErrors) {
    const MAX_MINUTES: i64 = 7 * 24 * 60;
    if settings
        .int("presign_ttl")
        .is_some_and(|ttl| ttl > MAX_MINUTES)
    {
        errors.add(
            "presign_ttl",
            format!("Ensure this value is less than or equal to {MAX_MINUTES} (7 days, the longest a signed URL may live)."),
        );
    }
}

/// The longest object key S3 and GCS accept, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks that `prefix` fits in an object key (S3's and GCS's 1,024-byte
/// limit): a longer one names no object, and once percent-encoded into a
/// request it may pass the URI limit, where the HTTP client panics. The
/// prefix is not echoed.
///
/// ```
/// use storage_core::{bucket::check_prefix, Settings, ValidationErrors};
/// let mut settings = Settings::default();
/// settings.set("prefix", "a".repeat(1025).into());
/// let mut errors = ValidationErrors::default();
/// check_prefix(&settings, &mut errors);
/// assert!(!errors.is_empty());
/// ```
pub fn check_prefix(settings: &Settings, errors: &mut crate::ValidationErrors) {
    if let Some(prefix) = settings.str("prefix") {
        if prefix.len() > MAX_KEY_BYTES {
            errors.add(
                "prefix",
                format!(
                    "Ensure this field has no more than {MAX_KEY_BYTES} bytes (the longest object key S3 and GCS accept); it has {}.",
                    prefix.len()
                ),
            );
        }
    }
}

/// The server-wide options every bucket backend (S3, GCS, GCS SA, and those
/// to come) shares: which endpoints users may configure, the HTTP client's
/// retries and timeout, and the retry policy of the calls the backends make
/// themselves (STS, IAM). A backend's own options embed one and add what is
/// theirs (STS endpoint, IAM endpoint, the server's own credentials).
///
/// ```
/// use std::time::Duration;
/// use storage_core::bucket::BucketOptions;
/// use storage_core::EndpointPolicy;
/// let options = BucketOptions::new()
///     .with_endpoint_policy(EndpointPolicy::allow_private())
///     .with_timeout(Duration::from_secs(5));
/// assert!(options.endpoint_policy().allows_private());
/// assert_eq!(options.timeout(), Duration::from_secs(5));
/// ```
#[cfg(feature = "cloud")]
#[derive(Debug, Clone)]
pub struct BucketOptions {
    policy: crate::EndpointPolicy,
    retry: object_store::RetryConfig,
    timeout: Duration,
    call_retry: crate::retry::RetryPolicy,
}

#[cfg(feature = "cloud")]
impl Default for BucketOptions {
    /// Strict endpoint policy; 3 request retries within 30 s; 60 s a
    /// request; [`crate::retry::RetryPolicy::default`] for STS and IAM calls.
    fn default() -> Self {
        Self {
            policy: crate::EndpointPolicy::strict(),
            retry: object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..object_store::RetryConfig::default()
            },
            timeout: Duration::from_secs(60),
            call_retry: crate::retry::RetryPolicy::default(),
        }
    }
}

#[cfg(feature = "cloud")]
impl BucketOptions {
    /// The defaults (see [`BucketOptions::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Which endpoints users may configure.
    pub fn with_endpoint_policy(mut self, policy: crate::EndpointPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Retries of each HTTP request by the store's client.
    pub fn with_retry(mut self, retry: object_store::RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Timeout of one HTTP request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries of the calls a backend makes itself (STS, IAM).
    pub fn with_call_retry(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.call_retry = policy;
        self
    }

    /// The endpoint policy.
    pub fn endpoint_policy(&self) -> crate::EndpointPolicy {
        self.policy
    }

    /// Retries of each HTTP request.
    pub fn retry(&self) -> &object_store::RetryConfig {
        &self.retry
    }

    /// Timeout of one HTTP request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Retries of the calls a backend makes itself.
    pub fn call_retry(&self) -> crate::retry::RetryPolicy {
        self.call_retry
    }

    /// HTTP client options with the timeout and the endpoint policy's DNS
    /// resolver, allowing plain HTTP only when `url` uses it.
    pub fn client_options(&self, url: Option<&url::Url>) -> object_store::ClientOptions {
        object_store::ClientOptions::new()
            .with_timeout(self.timeout)
            .with_dns_resolver(self.policy.dns_resolver())
            .with_allow_http(url.is_some_and(|u| u.scheme() == "http"))
    }

    /// The HTTP connector of every client of a user's storage: no
    /// redirects, no ambient proxy unless the policy opts in, every request
    /// checked against the policy (see [`crate::endpoint::PolicyConnector`]).
    pub fn http_connector(&self) -> crate::endpoint::PolicyConnector {
        self.policy.connector().with_timeout(self.timeout)
    }
}

/// The methods of a backend's options type that set and read the
/// [`BucketOptions`] it embeds, written once so every bucket backend offers
/// the same ones as its own (`S3Options::new().with_timeout(…)`, no trait to
/// import). Invoke it inside the `impl` block of a struct whose
/// `bucket: BucketOptions` field holds them.
///
/// ```
/// use storage_core::bucket::BucketOptions;
///
/// /// Options of a new backend.
/// #[derive(Debug, Default)]
/// pub struct MyOptions {
///     bucket: BucketOptions,
/// }
///
/// impl MyOptions {
///     storage_core::bucket_options_methods!();
/// }
///
/// let options = MyOptions::default().with_timeout(std::time::Duration::from_secs(5));
/// assert_eq!(options.bucket_options().timeout(), std::time::Duration::from_secs(5));
/// ```
#[cfg(feature = "cloud")]
#[macro_export]
macro_rules! bucket_options_methods {
    () => {
        /// Replaces the options shared by every bucket backend.
        pub fn with_bucket_options(mut self, bucket: $crate::bucket::BucketOptions) -> Self {
            self.bucket = bucket;
            self
        }

        /// The options shared by every bucket backend.
        pub fn bucket_options(&self) -> &$crate::bucket::BucketOptions {
            &self.bucket
        }

        /// Which endpoints users may configure.
        pub fn with_endpoint_policy(mut self, policy: $crate::EndpointPolicy) -> Self {
            self.bucket = self.bucket.with_endpoint_policy(policy);
            self
        }

        /// Retries of each request to the bucket (default 3 retries within
        /// 30 s).
        pub fn with_retry(mut self, retry: $crate::object_store::RetryConfig) -> Self {
            self.bucket = self.bucket.with_retry(retry);
            self
        }

        /// Timeout of one request to the bucket (default 60 s).
        pub fn with_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.bucket = self.bucket.with_timeout(timeout);
            self
        }

        /// The endpoint policy.
        pub fn endpoint_policy(&self) -> $crate::EndpointPolicy {
            self.bucket.endpoint_policy()
        }

        /// Retries of each request to the bucket.
        pub fn retry(&self) -> &$crate::object_store::RetryConfig {
            self.bucket.retry()
        }
    };
}

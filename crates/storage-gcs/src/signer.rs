//! GCS V4 signed URLs (`GOOG4-RSA-SHA256`) signed by a [`BlobSigner`], typically IAM
//! `signBlob` through [`IamBlobSigner`], for service accounts without a private key.
//!
//! Follows Google's [V4 signing process]: a path-style URL `{base}/{bucket}/{object}`,
//! the canonical request
//!
//! ```text
//! {METHOD}\n{path}\n{canonical query}\nhost:{host[:port]}\n\nhost\nUNSIGNED-PAYLOAD
//! ```
//!
//! the string to sign `GOOG4-RSA-SHA256\n{date}\n{yyyymmdd}/auto/storage/goog4_request\n
//! {hex sha256(canonical request)}`, and the hex-encoded RSA-SHA256 signature appended as
//! `X-Goog-Signature`. The canonical requests match Google's conformance vectors
//! (`storage/v1/v4_signatures.json`) and object_store's own local-key signer.
//!
//! One difference from object_store (and Google's client libraries): the signed `host`
//! is the host of `base_url` (with its port, if not the default), not always
//! `storage.googleapis.com`. Both are the same for Google's endpoint; for any other
//! endpoint the signature then matches the `Host` the server receives.
//!
//! [V4 signing process]: https://cloud.google.com/storage/docs/access-control/signing-urls-manually

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::Method;
use object_store::path::Path;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use url::Url;

use crate::iam::{IamCredentials, IamError};

/// The longest a V4 signed URL may be valid (7 days).
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(604_800);
/// The signing algorithm named in the URL and the string to sign.
pub const ALGORITHM: &str = "GOOG4-RSA-SHA256";

/// RFC 3986 unreserved characters stay, everything else is escaped (query keys and
/// values, bucket names).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// As [`UNRESERVED`], keeping `/` (object names).
const OBJECT_NAME: &AsciiSet = &UNRESERVED.remove(b'/');

/// Something that signs a V4 string to sign with RSA-SHA256 (PKCS #1 v1.5) as a service
/// account: IAM `signBlob` ([`IamBlobSigner`]) or a local key.
#[async_trait]
pub trait BlobSigner: Send + Sync + fmt::Debug {
    /// The raw signature bytes of `string_to_sign`.
    ///
    /// # Errors
    ///
    /// When the signature cannot be made; a signer that is not IAM reports
    /// [`IamError::Signer`].
    async fn sign(&self, string_to_sign: &[u8]) -> Result<Vec<u8>, IamError>;

    /// The service account whose key signs (named in `X-Goog-Credential`).
    fn email(&self) -> &str;
}

/// A [`BlobSigner`] calling [`IamCredentials::sign_blob`] for one service account.
///
/// For `gcs_sa`, `iam` authenticates as the server's identity and `email` is the target
/// service account; for a `gcs` storage without a private key, `iam` authenticates as
/// the storage's identity and `email` is that identity's own address.
#[derive(Debug, Clone)]
pub struct IamBlobSigner {
    iam: Arc<IamCredentials>,
    email: String,
}

impl IamBlobSigner {
    /// Signs as `email` through `iam`.
    pub fn new(iam: Arc<IamCredentials>, email: impl Into<String>) -> Self {
        Self {
            iam,
            email: email.into(),
        }
    }
}

#[async_trait]
impl BlobSigner for IamBlobSigner {
    async fn sign(&self, string_to_sign: &[u8]) -> Result<Vec<u8>, IamError> {
        self.iam.sign_blob(&self.email, string_to_sign).await
    }

    fn email(&self) -> &str {
        &self.email
    }
}

/// A V4 signed URL for `method` on `object` in `bucket`, valid for `expires_in` from
/// `now` (pass `Utc::now()`), signed by `signer`.
///
/// The URL is path style, `{base_url}/{bucket}/{object}` (a path in `base_url` is kept
/// as a prefix; its query is dropped), with the object key (`object.as_ref()`, the same
/// key object_store reads and writes) percent-encoded as GCS requires: `/` kept, every
/// byte outside RFC 3986 unreserved characters escaped. An empty `object` gives the
/// bucket URL (`{base_url}/{bucket}`). The query carries `X-Goog-Algorithm`,
/// `X-Goog-Credential`, `X-Goog-Date`, `X-Goog-Expires`, `X-Goog-SignedHeaders=host`,
/// `response-content-type` when one is given (GCS then answers with that type) and
/// `X-Goog-Signature`; only `host` is signed and the payload is `UNSIGNED-PAYLOAD`.
///
/// # Errors
///
/// [`IamError::InvalidRequest`] when `expires_in` is 0 or over 7 days, `base_url` is
/// not an http(s) URL with a host, or the key has `.`/`..` segments (a URL cannot carry
/// them unchanged); otherwise whatever `signer` reports.
// One argument per input of the V4 algorithm, as Google's reference lists them.
#[allow(clippy::too_many_arguments)]
pub async fn signed_url(
    base_url: &Url,
    bucket: &str,
    object: &Path,
    method: Method,
    expires_in: Duration,
    response_content_type: Option<&str>,
    signer: &dyn BlobSigner,
    now: DateTime<Utc>,
) -> Result<Url, IamError> {
    let prepared = prepare(
        base_url,
        bucket,
        object.as_ref(),
        &method,
        expires_in,
        response_content_type,
        signer.email(),
        now,
    )?;
    let signature = signer.sign(prepared.string_to_sign().as_bytes()).await?;
    let mut url = prepared.url;
    url.set_query(Some(&format!(
        "{}&X-Goog-Signature={}",
        prepared.canonical_query,
        hex::encode(signature)
    )));
    Ok(url)
}

/// Everything computed before signing.
struct Prepared {
    /// The URL without query.
    url: Url,
    /// The sorted, encoded `X-Goog-*` parameters (also the URL's query before the
    /// signature).
    canonical_query: String,
    canonical_request: String,
    /// `YYYYMMDD'T'HHMMSS'Z'`.
    timestamp: String,
    /// `{yyyymmdd}/auto/storage/goog4_request`.
    scope: String,
}

impl Prepared {
    fn string_to_sign(&self) -> String {
        format!(
            "{ALGORITHM}\n{}\n{}\n{}",
            self.timestamp,
            self.scope,
            hex::encode(Sha256::digest(self.canonical_request.as_bytes()))
        )
    }
}

fn invalid(message: String) -> IamError {
    IamError::InvalidRequest { message }
}

#[allow(clippy::too_many_arguments)] // as `signed_url`
fn prepare(
    base_url: &Url,
    bucket: &str,
    key: &str,
    method: &Method,
    expires_in: Duration,
    response_content_type: Option<&str>,
    email: &str,
    now: DateTime<Utc>,
) -> Result<Prepared, IamError> {
    if expires_in.is_zero() || expires_in > MAX_EXPIRES_IN {
        return Err(invalid(format!(
            "a V4 signed URL must expire within 1 s to 604800 s (7 days), not {} s",
            expires_in.as_secs_f64()
        )));
    }
    if !matches!(base_url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the GCS base URL {base_url} is not an http(s) URL"
        )));
    }
    let Some(host) = base_url.host_str() else {
        return Err(invalid(format!("the GCS base URL {base_url} has no host")));
    };
    if bucket.is_empty() {
        return Err(invalid("cannot sign a URL without a bucket".to_owned()));
    }
    let host = match base_url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };

    let mut path = format!(
        "{}/{}",
        base_url.path().trim_end_matches('/'),
        utf8_percent_encode(bucket, UNRESERVED)
    );
    if !key.is_empty() {
        path.push('/');
        path.extend(utf8_percent_encode(key, OBJECT_NAME));
    }
    let mut url = base_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.set_path(&path);
    if url.path() != path {
        return Err(invalid(format!(
            "cannot sign a URL for object {key:?}: its '.' or '..' path segments would be changed by any HTTP client"
        )));
    }

    let timestamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{}/auto/storage/goog4_request", now.format("%Y%m%d"));
    let credential = format!("{email}/{scope}");
    let expires = expires_in.as_secs().to_string();
    let mut params: Vec<(String, String)> = [
        ("X-Goog-Algorithm", ALGORITHM),
        ("X-Goog-Credential", credential.as_str()),
        ("X-Goog-Date", timestamp.as_str()),
        ("X-Goog-Expires", expires.as_str()),
        ("X-Goog-SignedHeaders", "host"),
    ]
    .into_iter()
    .chain(response_content_type.map(|value| ("response-content-type", value)))
    .map(|(k, v)| {
        (
            utf8_percent_encode(k, UNRESERVED).to_string(),
            utf8_percent_encode(v, UNRESERVED).to_string(),
        )
    })
    .collect();
    params.sort();
    let canonical_query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "{method}\n{path}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        method = method.as_str()
    );
    Ok(Prepared {
        url,
        canonical_query,
        canonical_request,
        timestamp,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account of Google's conformance vectors.
    const EMAIL: &str = "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com";

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn google() -> Url {
        Url::parse("https://storage.googleapis.com").expect("valid URL")
    }

    fn prep(base: &Url, bucket: &str, key: &str, method: Method, secs: u64, now: &str) -> Prepared {
        prepare(
            base,
            bucket,
            key,
            &method,
            Duration::from_secs(secs),
            None,
            EMAIL,
            at(now),
        )
        .expect("prepared")
    }

    /// Google's conformance vectors (googleapis/conformance-tests,
    /// storage/v1/v4_signatures.json): canonical request and string to sign.
    #[test]
    fn matches_googles_conformance_vectors() {
        let simple_get = prep(
            &google(),
            "test-bucket",
            "test-object",
            Method::GET,
            10,
            "2019-02-01T09:00:00Z",
        );
        assert_eq!(
            simple_get.canonical_request,
            "GET\n/test-bucket/test-object\nX-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=test-iam-credentials%40dummy-project-id.iam.gserviceaccount.com%2F20190201%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20190201T090000Z&X-Goog-Expires=10&X-Goog-SignedHeaders=host\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        assert_eq!(
            simple_get.string_to_sign(),
            "GOOG4-RSA-SHA256\n20190201T090000Z\n20190201/auto/storage/goog4_request\n00e2fb794ea93d7adb703edaebdd509821fcc7d4f1a79ac5c8d2b394df109320"
        );

        let cases = [
            // (description, bucket, object, method, expiration, timestamp, hash)
            (
                "Simple PUT",
                "test-bucket",
                "test-object",
                Method::PUT,
                10,
                "2019-02-01T09:00:00Z",
                "78742860705da91404222d5d66ff89850292471199c3c2808d116ad12e6177b4",
            ),
            (
                "Vary expiration and timestamp",
                "test-bucket",
                "test-object",
                Method::GET,
                20,
                "2019-03-01T09:00:00Z",
                "779f19fdb6fd381390e2d5af04947cf21750277ee3c20e0c97b7e46a1dff8907",
            ),
            (
                "Vary bucket and object",
                "test-bucket2",
                "test-object2",
                Method::GET,
                10,
                "2019-02-01T09:00:00Z",
                "a139afbf35ac30e9864f63197f79609731ab1b0ca166e2a456dba156fcd3f9ce",
            ),
            (
                "List Objects",
                "test-bucket",
                "",
                Method::GET,
                10,
                "2019-02-01T09:00:00Z",
                "51a7426c2a6c6ab80f336855fc629461ff182fb1d2cb552ac68e5ce8e25db487",
            ),
        ];
        for (description, bucket, object, method, expiration, timestamp, hash) in cases {
            let prepared = prep(&google(), bucket, object, method, expiration, timestamp);
            let date = &timestamp[..10].replace('-', "");
            let time = timestamp[11..19].replace(':', "");
            assert_eq!(
                prepared.string_to_sign(),
                format!(
                    "GOOG4-RSA-SHA256\n{date}T{time}Z\n{date}/auto/storage/goog4_request\n{hash}"
                ),
                "{description}"
            );
        }
    }

    /// "Slashes in object name should not be URL encoded": the vector also signs a
    /// header, so only its path is compared.
    #[test]
    fn slashes_are_kept_and_everything_else_is_escaped() {
        let prepared = prep(
            &google(),
            "test-bucket",
            "path/with/slashes/under_score/amper&sand/file.ext",
            Method::GET,
            10,
            "2019-02-01T09:00:00Z",
        );
        assert_eq!(
            prepared.url.path(),
            "/test-bucket/path/with/slashes/under_score/amper%26sand/file.ext"
        );
        let odd = prep(
            &google(),
            "b",
            "a b/c+d=e,f@g(h)/ü~!*'$;:?#[]%",
            Method::GET,
            10,
            "2019-02-01T09:00:00Z",
        );
        assert_eq!(
            odd.url.path(),
            "/b/a%20b/c%2Bd%3De%2Cf%40g%28h%29/%C3%BC~%21%2A%27%24%3B%3A%3F%23%5B%5D%25"
        );
        assert!(odd
            .canonical_request
            .starts_with(&format!("GET\n{}\n", odd.url.path())));
    }

    #[test]
    fn host_keeps_a_non_default_port_and_a_base_path() {
        let base = Url::parse("http://127.0.0.1:4443/prefix/").expect("valid URL");
        let prepared = prep(
            &base,
            "bkt",
            "dir/a.txt",
            Method::GET,
            60,
            "2026-01-02T03:04:05Z",
        );
        assert_eq!(
            prepared.url.as_str(),
            "http://127.0.0.1:4443/prefix/bkt/dir/a.txt"
        );
        assert!(
            prepared
                .canonical_request
                .contains("\nhost:127.0.0.1:4443\n\nhost\n"),
            "{}",
            prepared.canonical_request
        );
        let default_port = Url::parse("https://storage.googleapis.com:443").expect("valid URL");
        let prepared = prep(
            &default_port,
            "b",
            "o",
            Method::GET,
            60,
            "2026-01-02T03:04:05Z",
        );
        assert!(prepared
            .canonical_request
            .contains("\nhost:storage.googleapis.com\n"));
    }

    #[test]
    fn rejects_bad_expiries_bases_and_dot_segments() {
        let now = at("2026-01-02T03:04:05Z");
        let try_prepare = |base: &Url, key: &str, secs: u64| {
            prepare(
                base,
                "b",
                key,
                &Method::GET,
                Duration::from_secs(secs),
                None,
                EMAIL,
                now,
            )
            .map(|_| ())
        };
        assert!(try_prepare(&google(), "o", 604_800).is_ok());
        let err = try_prepare(&google(), "o", 604_801).expect_err("too long");
        assert!(err.to_string().contains("604800"), "{err}");
        assert!(try_prepare(&google(), "o", 0).is_err());
        let ftp = Url::parse("ftp://example.com").expect("valid URL");
        assert!(try_prepare(&ftp, "o", 10).is_err());
        let err = try_prepare(&google(), "a/../b", 10).expect_err("dot segments");
        assert!(err.to_string().contains("'..'"), "{err}");
        assert!(try_prepare(&google(), "a/.../b", 10).is_ok());
    }

    #[derive(Debug)]
    struct Sha256Signer;

    #[async_trait]
    impl BlobSigner for Sha256Signer {
        async fn sign(&self, string_to_sign: &[u8]) -> Result<Vec<u8>, IamError> {
            Ok(Sha256::digest(string_to_sign).to_vec())
        }

        fn email(&self) -> &str {
            EMAIL
        }
    }

    #[tokio::test]
    async fn the_url_carries_the_canonical_query_and_the_hex_signature() {
        let url = signed_url(
            &google(),
            "test-bucket",
            &Path::from("test-object"),
            Method::GET,
            Duration::from_secs(10),
            None,
            &Sha256Signer,
            at("2019-02-01T09:00:00Z"),
        )
        .await
        .expect("signed");
        let string_to_sign = "GOOG4-RSA-SHA256\n20190201T090000Z\n20190201/auto/storage/goog4_request\n00e2fb794ea93d7adb703edaebdd509821fcc7d4f1a79ac5c8d2b394df109320";
        assert_eq!(
            url.as_str(),
            format!(
                "https://storage.googleapis.com/test-bucket/test-object?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=test-iam-credentials%40dummy-project-id.iam.gserviceaccount.com%2F20190201%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20190201T090000Z&X-Goog-Expires=10&X-Goog-SignedHeaders=host&X-Goog-Signature={}",
                hex::encode(Sha256::digest(string_to_sign))
            )
        );
    }
}

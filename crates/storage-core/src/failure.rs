//! What went wrong in a call to a storage or credential service, read once
//! from the error's structure: the HTTP status, the provider's error code,
//! and whether the service could be reached at all. Backends word their
//! messages from this [`Failure`], not from English error text.

use std::error::Error as StdError;
use std::fmt;

use crate::Error;

/// The provider error codes that mean "these credentials are not valid"
/// (unknown key, wrong secret, expired or malformed token), as opposed to
/// valid credentials that lack a permission.
pub const REJECTED_CREDENTIAL_CODES: &[&str] = &[
    // S3 and S3-compatible services.
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    // STS.
    "InvalidClientTokenId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    // Azure Blob Storage (a wrong account key answers 403 with this code).
    "AuthenticationFailed",
    "InvalidAuthenticationInfo",
];

/// An answer (or the lack of one) from a provider's API that a backend
/// called itself (STS, IAM), with what it said in structured form. Put it
/// in an error's source chain so that [`Failure::of`] finds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceError {
    /// The HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The provider's error code (`AccessDenied`, `InvalidClientTokenId`...).
    pub code: Option<String>,
    /// True when the service could not be reached (DNS, connect, timeout).
    pub unreachable: bool,
    /// The message shown to users; never a secret.
    pub message: String,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ServiceError {}

/// What an error says about the service call that failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status the service answered, if it answered.
    pub status: Option<u16>,
    /// The provider's error code, if it sent one.
    pub code: Option<String>,
    /// The service could not be reached: no status will come.
    pub unreachable: bool,
}

impl Failure {
    /// Reads the failure from `err` and its sources.
    ///
    /// ```
    /// use storage_core::failure::{Failure, ServiceError};
    /// let err = storage_core::Error::backend("STS", ServiceError {
    ///     status: Some(403),
    ///     code: Some("AccessDenied".into()),
    ///     ..ServiceError::default()
    /// });
    /// let failure = Failure::of(&err);
    /// assert_eq!((failure.status, failure.code.as_deref()), (Some(403), Some("AccessDenied")));
    /// ```
    pub fn of(err: &(dyn StdError + 'static)) -> Self {
        let mut failure = Self::default();
        let mut text = String::new();
        let mut current = Some(err);
        while let Some(e) = current {
            failure.read(e);
            text.push_str(&e.to_string());
            text.push('\n');
            current = e.source();
        }
        // object_store keeps the status and body accessors of its request
        // error on a private type; its Display is the only way to them:
        // "... status code: 403 Forbidden: <Error><Code>...</Code>...".
        if failure.status.is_none() {
            failure.status = status_in(&text);
        }
        if failure.code.is_none() {
            failure.code = xml_code_in(&text);
        }
        failure
    }

    fn read(&mut self, e: &(dyn StdError + 'static)) {
        if let Some(service) = e.downcast_ref::<ServiceError>() {
            self.status = self.status.or(service.status);
            if self.code.is_none() {
                self.code.clone_from(&service.code);
            }
            self.unreachable |= service.unreachable;
        } else if let Some(core) = e.downcast_ref::<Error>() {
            if let Error::CredentialsRejected { code, .. } = core {
                if self.code.is_none() {
                    self.code.clone_from(code);
                }
            }
        } else if let Some(store) = e.downcast_ref::<object_store::Error>() {
            use object_store::Error as E;
            let status = match store {
                E::NotFound { .. } => Some(404),
                E::PermissionDenied { .. } => Some(403),
                E::Unauthenticated { .. } => Some(401),
                E::AlreadyExists { .. } => Some(409),
                E::Precondition { .. } => Some(412),
                E::NotModified { .. } => Some(304),
                _ => None,
            };
            self.status = self.status.or(status);
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            self.unreachable |= matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::TimedOut
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
            );
        } else {
            self.read_http(e);
        }
    }

    #[cfg(feature = "cloud")]
    fn read_http(&mut self, e: &(dyn StdError + 'static)) {
        use object_store::client::{HttpError, HttpErrorKind as K};
        if let Some(http) = e.downcast_ref::<HttpError>() {
            // A request that got no usable answer: connect (DNS included),
            // send, timeout, dropped connection.
            self.unreachable |= matches!(
                http.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            );
        }
    }

    #[cfg(not(feature = "cloud"))]
    fn read_http(&mut self, _: &(dyn StdError + 'static)) {}

    /// Whether the provider said the credentials themselves are not valid
    /// (see [`REJECTED_CREDENTIAL_CODES`]), or answered 401.
    pub fn credentials_rejected(&self) -> bool {
        self.status == Some(401) || self.code_rejects_credentials()
    }

    /// Whether the provider's error code says the credentials are not valid
    /// (one of [`REJECTED_CREDENTIAL_CODES`]).
    pub fn code_rejects_credentials(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|code| REJECTED_CREDENTIAL_CODES.contains(&code))
    }

    /// Whether the provider's error code is `code`.
    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// The first error of type `T` in `err`'s source chain, `err` included: for
/// a backend to find its own error type under object_store's wrapping.
pub fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `err` and its causes joined by `separator`, each cause only when its text
/// is not already there (wrappers often repeat their source's text).
///
/// ```
/// let err = storage_core::Error::backend("listing", "connection refused");
/// assert_eq!(storage_core::failure::chain_text(&err, ": "), "listing: connection refused");
/// ```
///
/// A provider's response body quoted anywhere in the chain is given only as
/// its code and message ([`crate::redact::without_provider_bodies`]).
pub fn chain_text(err: &dyn StdError, separator: &str) -> String {
    let said =
        |e: &dyn StdError| crate::redact::without_provider_bodies(&e.to_string()).into_owned();
    let mut text = said(err);
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = said(cause);
        if !text.contains(&cause_text) {
            text.push_str(separator);
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The status of object_store's "status code: 404 Not Found".
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The `<Code>` of an S3/GCS XML error body.
fn xml_code_in(text: &str) -> Option<String> {
    let at = text.find("<Code>")? + "<Code>".len();
    let len = text[at..].find("</Code>")?;
    let code = text[at..at + len].trim();
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_said(status: &str, body: &str) -> Error {
        Error::backend(
            "listing",
            format!("Error performing GET http://h/b in 104.03ms - Server returned non-2xx status code: {status}: {body}"),
        )
    }

    #[test]
    fn status_and_code_of_an_object_store_answer() {
        let err = server_said(
            "403 Forbidden",
            "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>",
        );
        let failure = Failure::of(&err);
        assert_eq!(failure.status, Some(403));
        assert!(failure.code_is("SignatureDoesNotMatch"));
        assert!(failure.credentials_rejected());
        assert!(!failure.unreachable);

        let denied = Failure::of(&server_said(
            "403 Forbidden",
            "<Error><Code>AccessDenied</Code></Error>",
        ));
        assert!(denied.code_is("AccessDenied") && !denied.credentials_rejected());

        let plain = Failure::of(&server_said("500 Internal Server Error", ""));
        assert_eq!((plain.status, plain.code), (Some(500), None));
    }

    #[test]
    fn object_store_kinds_give_their_status() {
        let err = object_store::Error::Unauthenticated {
            path: "b".into(),
            source: "no".into(),
        };
        let failure = Failure::of(&err);
        assert_eq!(failure.status, Some(401));
        assert!(failure.credentials_rejected());
        let err = object_store::Error::NotFound {
            path: "b".into(),
            source: "no".into(),
        };
        assert_eq!(Failure::of(&err).status, Some(404));
    }

    #[test]
    fn service_errors_are_read_through_the_chain() {
        let inner = ServiceError {
            status: Some(403),
            code: Some("InvalidClientTokenId".into()),
            unreachable: false,
            message: "STS refused".into(),
        };
        let err = Error::from_object_store(
            "listing",
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(inner),
            },
        );
        let failure = Failure::of(&err);
        assert_eq!(failure.status, Some(403));
        assert!(failure.credentials_rejected());
    }

    #[test]
    fn connection_failures_are_unreachable_by_kind() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "nope");
        let err = Error::backend("listing", refused);
        let failure = Failure::of(&err);
        assert!(failure.unreachable);
        assert_eq!(failure.status, None);
        let unreachable = ServiceError {
            unreachable: true,
            message: "could not reach".into(),
            ..ServiceError::default()
        };
        assert!(Failure::of(&Error::backend("STS", unreachable)).unreachable);
        // Message text alone decides nothing.
        let text = Error::backend("listing", "Connection refused (os error 111)");
        assert!(!Failure::of(&text).unreachable);
    }

    #[test]
    fn codes_are_read_only_from_code_elements() {
        assert_eq!(
            xml_code_in("<Code>NoSuchBucket</Code>"),
            Some("NoSuchBucket".into())
        );
        assert_eq!(xml_code_in("<Code></Code>"), None);
        assert_eq!(xml_code_in("<Code>a b</Code>"), None);
        assert_eq!(xml_code_in("<Code>unterminated"), None);
        assert_eq!(status_in("status code: 4"), None);
    }
}

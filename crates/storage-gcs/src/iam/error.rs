//! What can go wrong in an IAM Credentials call, and how Google's error answers
//! map to it.

use std::fmt;

use http::StatusCode;
use serde::Deserialize;
use storage_core::retry::Classify;

use super::TOKEN_CREATOR_ROLE;

/// Most characters of a non-JSON error body quoted in an error message.
const MAX_BODY_QUOTE: usize = 200;
/// The store name used in [`object_store::Error::Generic`].
const STORE: &str = "GCS";

/// The two IAM Credentials methods this module calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IamOperation {
    /// `generateAccessToken` (needs `iam.serviceAccounts.getAccessToken`).
    GenerateAccessToken,
    /// `signBlob` (needs `iam.serviceAccounts.signBlob`).
    SignBlob,
}

impl IamOperation {
    /// The API method name, e.g. `generateAccessToken`.
    pub fn method(self) -> &'static str {
        match self {
            Self::GenerateAccessToken => "generateAccessToken",
            Self::SignBlob => "signBlob",
        }
    }

    /// The IAM permission the caller needs on the service account.
    pub fn permission(self) -> &'static str {
        match self {
            Self::GenerateAccessToken => "iam.serviceAccounts.getAccessToken",
            Self::SignBlob => "iam.serviceAccounts.signBlob",
        }
    }
}

impl fmt::Display for IamOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method())
    }
}

/// Why an IAM Credentials call (or a URL signature built on one) failed.
///
/// Every message names the problem and, where Google sent one, quotes Google's own
/// error `message`. No message contains a token.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IamError {
    /// HTTP 403: the caller lacks the permission on the service account (or, as Google
    /// says, the account may not exist).
    #[error(
        "the server's identity lacks {} on {email} (grant it {TOKEN_CREATOR_ROLE} on that service account){}",
        operation.permission(),
        google_said(message)
    )]
    PermissionDenied {
        /// The service account the call was about.
        email: String,
        /// The call that was refused.
        operation: IamOperation,
        /// Google's error message (may be empty).
        message: String,
    },

    /// HTTP 403 because the IAM Service Account Credentials API is disabled in the
    /// project of the caller's identity.
    #[error(
        "the IAM Service Account Credentials API (iamcredentials.googleapis.com) is not enabled in the project of the server's identity; enable it and retry{}",
        google_said(message)
    )]
    ApiDisabled {
        /// The service account the call was about.
        email: String,
        /// Google's error message.
        message: String,
    },

    /// HTTP 404: no such service account.
    #[error(
        "service account {email} not found (it should look like name@project.iam.gserviceaccount.com){}",
        google_said(message)
    )]
    NotFound {
        /// The service account the call was about.
        email: String,
        /// Google's error message (may be empty).
        message: String,
    },

    /// HTTP 401: the base identity's token was rejected.
    #[error(
        "the IAM Credentials API at {endpoint} rejected the server's own Google credentials (the base identity's token is invalid or expired){}",
        google_said(message)
    )]
    Unauthenticated {
        /// The API endpoint.
        endpoint: String,
        /// Google's error message (may be empty).
        message: String,
    },

    /// The base identity's own token could not be obtained.
    #[error(
        "cannot get the server's own Google credentials to call the IAM Credentials API: {message}"
    )]
    BaseCredentials {
        /// What object_store reported.
        message: String,
    },

    /// The endpoint could not be reached (DNS, connection, TLS, timeout).
    #[error(
        "cannot reach the IAM Credentials API at {endpoint} ({operation} for {email}): {message}"
    )]
    Network {
        /// The API endpoint.
        endpoint: String,
        /// The call that failed.
        operation: IamOperation,
        /// The service account the call was about.
        email: String,
        /// The transport error.
        message: String,
        /// Whether it may pass (connect failures, timeouts, dropped connections); not for
        /// e.g. a plain-HTTP endpoint without `allow_http`.
        transient: bool,
    },

    /// Any other non-2xx answer (400, 429, 5xx, ...).
    #[error(
        "the IAM Credentials API at {endpoint} answered HTTP {status} to {operation} for {email}{}",
        google_said(message)
    )]
    Rejected {
        /// The API endpoint.
        endpoint: String,
        /// The call that failed.
        operation: IamOperation,
        /// The service account the call was about.
        email: String,
        /// The HTTP status code.
        status: u16,
        /// Google's error message, or the start of the body.
        message: String,
    },

    /// A 2xx answer that is not what the API returns.
    #[error("unexpected answer from the IAM Credentials API at {endpoint} to {operation} for {email}: {message}")]
    InvalidResponse {
        /// The API endpoint.
        endpoint: String,
        /// The call that failed.
        operation: IamOperation,
        /// The service account the call was about.
        email: String,
        /// What is wrong with it.
        message: String,
    },

    /// The request cannot be made as asked (bad endpoint, expiry too long, ...).
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },

    /// A [`crate::signer::BlobSigner`] other than IAM failed.
    #[error("signing failed: {message}")]
    Signer {
        /// What the signer reported.
        message: String,
    },
}

/// `; Google said: <message>` or nothing.
fn google_said(message: &str) -> String {
    if message.trim().is_empty() {
        String::new()
    } else {
        format!("; Google said: {}", message.trim())
    }
}

impl IamError {
    /// Whether trying again later may succeed (network failures, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { transient, .. } => *transient,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The object_store error kind for this failure, used by [`ImpersonatedCredentials`](super::ImpersonatedCredentials)
    /// as a [`CredentialProvider`](object_store::CredentialProvider): `PermissionDenied` for 403s, `Unauthenticated` for a
    /// rejected base identity, `Generic` (store `GCS`) otherwise — including a missing
    /// service account, which must not look like a missing object.
    pub fn into_object_store(self, path: &str) -> object_store::Error {
        let path = path.to_owned();
        match self {
            Self::PermissionDenied { .. } | Self::ApiDisabled { .. } => {
                object_store::Error::PermissionDenied {
                    path,
                    source: Box::new(self),
                }
            }
            Self::Unauthenticated { .. } => object_store::Error::Unauthenticated {
                path,
                source: Box::new(self),
            },
            other => object_store::Error::Generic {
                store: STORE,
                source: Box::new(other),
            },
        }
    }
}

impl Classify for IamError {
    fn retry(&self) -> storage_core::Retry {
        if self.is_retryable() {
            storage_core::Retry::Temporary
        } else {
            storage_core::Retry::Permanent
        }
    }
}

impl From<IamError> for storage_core::Error {
    /// `PermissionDenied` for 403s, `CredentialsRejected` for a rejected base identity,
    /// `InvalidConfig` (general) for a missing service account and invalid requests,
    /// `Backend` otherwise (retryable for network failures, 429 and 5xx).
    fn from(err: IamError) -> Self {
        match err {
            IamError::PermissionDenied { .. } | IamError::ApiDisabled { .. } => {
                Self::PermissionDenied {
                    reason: err.to_string(),
                }
            }
            // The server's own identity was rejected or is missing: no
            // setting of the storage holds it.
            IamError::Unauthenticated { .. } | IamError::BaseCredentials { .. } => {
                Self::CredentialsRejected {
                    fields: Vec::new(),
                    code: None,
                    message: err.to_string(),
                }
            }
            IamError::NotFound { .. } | IamError::InvalidRequest { .. } => {
                Self::invalid_general(err.to_string())
            }
            other => Self::Backend {
                context: "IAM Credentials API".to_owned(),
                retry: other.retry(),
                source: Box::new(other),
            },
        }
    }
}

/// Maps a non-2xx answer to an [`IamError`].
pub(super) fn error_response(
    endpoint: &str,
    operation: IamOperation,
    email: &str,
    status: StatusCode,
    body: &[u8],
) -> IamError {
    #[derive(Deserialize)]
    struct Envelope {
        error: GoogleError,
    }
    #[derive(Deserialize)]
    struct GoogleError {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        details: Vec<serde_json::Value>,
    }

    let parsed = serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error);
    let message = match &parsed {
        Some(error) => error.message.clone().unwrap_or_default(),
        None => {
            let text = String::from_utf8_lossy(body);
            let mut quote: String = text.trim().chars().take(MAX_BODY_QUOTE).collect();
            if text.trim().chars().count() > MAX_BODY_QUOTE {
                quote.push('…');
            }
            quote
        }
    };
    let email = email.to_owned();
    match status {
        StatusCode::FORBIDDEN => {
            let service_disabled = parsed.as_ref().is_some_and(|e| {
                e.details
                    .iter()
                    .any(|d| d.get("reason").and_then(|r| r.as_str()) == Some("SERVICE_DISABLED"))
            }) || message.contains("has not been used in project")
                || message.contains("API has not been used")
                || message.contains("it is disabled");
            if service_disabled {
                IamError::ApiDisabled { email, message }
            } else {
                IamError::PermissionDenied {
                    email,
                    operation,
                    message,
                }
            }
        }
        StatusCode::NOT_FOUND => IamError::NotFound { email, message },
        StatusCode::UNAUTHORIZED => IamError::Unauthenticated {
            endpoint: endpoint.to_owned(),
            message,
        },
        _ => {
            let message = match parsed.as_ref().and_then(|e| e.status.as_deref()) {
                Some(code) if !message.is_empty() => format!("{code}: {message}"),
                Some(code) => code.to_owned(),
                None => message,
            };
            IamError::Rejected {
                endpoint: endpoint.to_owned(),
                operation,
                email,
                status: status.as_u16(),
                message,
            }
        }
    }
}

/// `error: cause: cause ...` (reqwest puts the useful part, e.g. "Connection refused",
/// in the sources).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    storage_core::failure::chain_text(error, ": ")
}

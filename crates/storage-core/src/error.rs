//! One error type for every layer, made of kinds a caller can act on.

use std::collections::BTreeMap;
use std::fmt;

use crate::failure::Failure;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The key Label Studio uses for errors that belong to no single field.
pub const NON_FIELD_ERRORS: &str = "non_field_errors";

/// Messages about invalid input, keyed by the field they concern.
///
/// Serialises as Label Studio's `validation_errors` object:
/// `{"path": ["..."], "non_field_errors": ["..."]}`.
///
/// ```
/// use storage_core::ValidationErrors;
/// let mut errors = ValidationErrors::default();
/// errors.add("title", "Ensure this field has no more than 256 characters.");
/// assert_eq!(errors.fields().collect::<Vec<_>>(), vec!["title"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(BTreeMap<String, Vec<String>>);

impl ValidationErrors {
    /// One message about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.add(field, message);
        errors
    }

    /// One message that concerns no single field (`non_field_errors`).
    pub fn general(message: impl Into<String>) -> Self {
        Self::field(NON_FIELD_ERRORS, message)
    }

    /// Adds a message about `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// Moves every message of `other` into `self`.
    pub fn merge(&mut self, other: ValidationErrors) {
        for (field, messages) in other.0 {
            self.0.entry(field).or_default().extend(messages);
        }
    }

    /// True when no message was added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields that have messages, in sorted order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The messages about `field`.
    pub fn messages(&self, field: &str) -> &[String] {
        self.0.get(field).map(Vec::as_slice).unwrap_or_default()
    }

    /// `Ok(())` when empty, else these errors as [`Error::InvalidConfig`].
    pub fn into_result(self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig(self))
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, messages) in &self.0 {
            for message in messages {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                if field == NON_FIELD_ERRORS {
                    f.write_str(message)?;
                } else {
                    write!(f, "{field}: {message}")?;
                }
            }
        }
        Ok(())
    }
}

/// Whether retrying the failed operation may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The same call will fail the same way.
    Permanent,
    /// A later attempt may succeed (timeouts, throttling, a server restarting).
    Temporary,
}

/// The error kinds of storage connections.
///
/// Texts never contain a secret: backends redact credentials before they
/// build an error, and sources are wrapped with the context of the storage,
/// object or field involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Configuration or request input is invalid; the messages name the fields.
    #[error("invalid configuration: {0}")]
    InvalidConfig(ValidationErrors),

    /// A storage, project, task, annotation or object does not exist (or the
    /// caller may not know that it does).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `storage 12`.
        what: String,
    },

    /// The caller is known but may not do this.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Why, in words a user can act on.
        reason: String,
    },

    /// The API caller did not prove who they are (no valid token). Not for
    /// a storage's credentials: see [`Error::CredentialsRejected`].
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why, never containing the credential itself.
        reason: String,
    },

    /// The provider rejected the credentials a storage connects with (an
    /// unknown key, a wrong secret, an expired token), or the server's own
    /// credentials used on the storage's behalf. Input to fix, not a failed
    /// login of the API caller: answered as a 400 naming `fields`.
    #[error("{message}")]
    CredentialsRejected {
        /// The storage's settings that hold the rejected credentials
        /// (e.g. `aws_access_key_id`, `aws_secret_access_key`); empty when
        /// they are the server's own or not known here.
        fields: Vec<String>,
        /// The provider's error code, e.g. `InvalidAccessKeyId`.
        code: Option<String>,
        /// What happened, naming the storage; never the credential.
        message: String,
    },

    /// The operation is not supported by this storage type or state.
    #[error("not supported: {what}")]
    NotSupported {
        /// What was asked for.
        what: String,
    },

    /// A move of the sync status that the state machine does not allow.
    #[error("illegal status change from {from} to {to}")]
    IllegalTransition {
        /// The current status.
        from: crate::SyncStatus,
        /// The requested status.
        to: crate::SyncStatus,
    },

    /// A task file could not be turned into tasks.
    #[error("{key}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    InvalidTaskFile {
        /// The object key of the file.
        key: String,
        /// The 1-based line, when the format has lines (JSONL) or the
        /// parser knows it.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },

    /// The object store, the database or another service failed. Its text
    /// gives a provider's response body only as its code and message.
    #[error("{context}: {}", crate::redact::without_provider_bodies(&source.to_string()))]
    Backend {
        /// What was being done, with the storage, key or table involved.
        context: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
        /// Whether a retry may help.
        retry: Retry,
    },
}

impl Error {
    /// An [`Error::InvalidConfig`] with one message about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidConfig(ValidationErrors::field(field, message))
    }

    /// An [`Error::InvalidConfig`] with one message about no single field.
    pub fn invalid_general(message: impl Into<String>) -> Self {
        Self::InvalidConfig(ValidationErrors::general(message))
    }

    /// An [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    /// An [`Error::Backend`] that a retry will not fix.
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Backend {
            context: context.into(),
            source: source.into(),
            retry: Retry::Permanent,
        }
    }

    /// Wraps an `object_store` error with what was being done, classifying
    /// it into the matching kind.
    pub fn from_object_store(context: impl Into<String>, err: object_store::Error) -> Self {
        use object_store::Error as E;
        let context = context.into();
        let said = || crate::redact::without_provider_bodies(&err.to_string()).into_owned();
        match err {
            E::NotFound { .. } => Self::NotFound { what: context },
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                // S3 answers 403 to a wrong key or secret: its error code,
                // not the status, tells a rejected credential from a
                // missing permission.
                let failure = Failure::of(&err);
                if failure.credentials_rejected() {
                    Self::CredentialsRejected {
                        fields: Vec::new(),
                        code: failure.code,
                        message: format!("{context}: {}", said()),
                    }
                } else {
                    Self::PermissionDenied {
                        reason: format!("{context}: {}", said()),
                    }
                }
            }
            E::NotSupported { .. } | E::NotImplemented { .. } => Self::NotSupported {
                what: format!("{context}: {}", said()),
            },
            other => {
                let retry = if is_transient(&other) {
                    Retry::Temporary
                } else {
                    Retry::Permanent
                };
                Self::Backend {
                    context,
                    source: Box::new(other),
                    retry,
                }
            }
        }
    }

    /// An [`Error::CredentialsRejected`] with the storage's credential
    /// `fields` named, keeping the provider's code; other errors unchanged.
    pub fn with_credential_fields(self, names: &[&str]) -> Self {
        match self {
            Self::CredentialsRejected { code, message, .. } => Self::CredentialsRejected {
                fields: names.iter().map(|name| (*name).to_owned()).collect(),
                code,
                message,
            },
            other => other,
        }
    }

    /// The same error with `secrets` (see
    /// [`crate::Settings::secret_values`]) replaced by `***` in its texts,
    /// for an answer or a log line. A [`Error::Backend`] keeps its context
    /// and retry class; its cause becomes the redacted text of its chain.
    pub fn redacted(self, secrets: &[String]) -> Self {
        if secrets.is_empty() {
            return self;
        }
        let clean =
            |text: &str| crate::redact::without_secrets(text, secrets.iter().map(String::as_str));
        match self {
            Self::InvalidConfig(errors) => Self::InvalidConfig(ValidationErrors(
                errors
                    .0
                    .into_iter()
                    .map(|(field, messages)| (field, messages.iter().map(|m| clean(m)).collect()))
                    .collect(),
            )),
            Self::NotFound { what } => Self::NotFound { what: clean(&what) },
            Self::PermissionDenied { reason } => Self::PermissionDenied {
                reason: clean(&reason),
            },
            Self::CredentialsRejected {
                fields,
                code,
                message,
            } => Self::CredentialsRejected {
                fields,
                code,
                message: clean(&message),
            },
            Self::NotSupported { what } => Self::NotSupported { what: clean(&what) },
            Self::Backend {
                context,
                source,
                retry,
            } => Self::Backend {
                context: clean(&context),
                source: clean(&crate::failure::chain_text(source.as_ref(), ": ")).into(),
                retry,
            },
            other => other,
        }
    }

    /// Whether trying again later may succeed.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Backend { retry, .. } => *retry,
            _ => Retry::Permanent,
        }
    }
}

/// `object_store` already retries requests itself; what still surfaces as
/// `Generic` from an HTTP or I/O source is worth a later attempt.
fn is_transient(err: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return matches!(
                io.kind(),
                K::TimedOut
                    | K::Interrupted
                    | K::ConnectionReset
                    | K::ConnectionRefused
                    | K::ConnectionAborted
                    | K::WouldBlock
            );
        }
        source = e.source();
    }
    matches!(err, object_store::Error::Generic { store, .. } if *store != "LocalFileSystem")
}

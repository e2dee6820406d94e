//! Label Studio's JSON error envelope, as one `IntoResponse` type.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use storage_core::{Error, ValidationErrors};

/// The version reported in error envelopes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error answered in Label Studio's envelope:
/// `{"id", "status_code", "version", "detail", "exc_info", "validation_errors"?}`.
#[derive(Debug)]
pub struct ApiError(Box<Parts>);

#[derive(Debug)]
struct Parts {
    status: StatusCode,
    detail: String,
    validation_errors: Option<ValidationErrors>,
    /// A body that is not the envelope (Label Studio's bare `{"message"}`).
    bare: Option<Value>,
}

impl ApiError {
    /// An error with a status and a detail text.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self(Box::new(Parts {
            status,
            detail: detail.into(),
            validation_errors: None,
            bare: None,
        }))
    }

    /// 400 "Validation error" with per-field messages.
    pub fn validation(errors: ValidationErrors) -> Self {
        let mut error = Self::new(StatusCode::BAD_REQUEST, "Validation error");
        error.0.validation_errors = Some(errors);
        error
    }

    /// 400 with one message about one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(ValidationErrors::field(field, message))
    }

    /// 404 "Not found."
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found.")
    }

    /// 401 with Label Studio's texts.
    pub fn unauthenticated(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 403 "You do not have permission to perform this action."
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "You do not have permission to perform this action.",
        )
    }

    /// An answer with a status and a body of its own (no envelope).
    pub fn bare(status: StatusCode, body: Value) -> Self {
        let mut error = Self::new(status, "");
        error.0.bare = Some(body);
        error
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// What it says, as one line: the messages per field, or the detail.
    pub(crate) fn message(&self) -> String {
        match &self.0.validation_errors {
            Some(errors) => errors.to_string(),
            None => self.0.detail.clone(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidConfig(errors) => Self::validation(errors),
            Error::NotFound { .. } => Self::not_found(),
            Error::PermissionDenied { .. } => Self::forbidden(),
            Error::Unauthenticated { .. } => Self::unauthenticated("Invalid token."),
            Error::CredentialsRejected {
                fields, message, ..
            } => Self::validation(credentials_rejected(&fields, message)),
            Error::NotSupported { what } => {
                Self::validation(ValidationErrors::general(format!("Not supported: {what}")))
            }
            Error::IllegalTransition { .. } => Self::new(StatusCode::CONFLICT, err.to_string()),
            Error::InvalidTaskFile { .. } => {
                Self::validation(ValidationErrors::general(err.to_string()))
            }
            other => {
                // The detail may name internals: log it, answer plainly.
                tracing::error!(error = %storage_core::jobs::error_report(&other), "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
        }
    }
}

/// The storage's credentials were rejected: a message on each credential
/// field, and the whole story in `non_field_errors`.
fn credentials_rejected(fields: &[String], message: String) -> ValidationErrors {
    let mut errors = ValidationErrors::general(message);
    for field in fields {
        errors.add(
            field.as_str(),
            "The storage provider rejected this credential.",
        );
    }
    errors
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = *self.0;
        if let Some(body) = error.bare {
            return (error.status, axum::Json(body)).into_response();
        }
        let mut body = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "status_code": error.status.as_u16(),
            "version": VERSION,
            "detail": error.detail,
            "exc_info": null,
        });
        if let Some(errors) = error.validation_errors {
            body["validation_errors"] = json!(errors);
        }
        let mut response = (error.status, axum::Json(body)).into_response();
        if error.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        response
    }
}

/// A handler result.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(error: ApiError) -> (StatusCode, Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn rejected_storage_credentials_are_a_400_naming_the_fields() {
        let err = Error::CredentialsRejected {
            fields: vec!["aws_access_key_id".into(), "aws_secret_access_key".into()],
            code: Some("SignatureDoesNotMatch".into()),
            message: "Cannot connect to S3 b with specified AWS credentials".into(),
        };
        let (status, body) = body(ApiError::from(err)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["status_code"], 400);
        assert_eq!(body["detail"], "Validation error");
        assert_eq!(
            body["validation_errors"],
            json!({
                "aws_access_key_id": ["The storage provider rejected this credential."],
                "aws_secret_access_key": ["The storage provider rejected this credential."],
                "non_field_errors": ["Cannot connect to S3 b with specified AWS credentials"],
            })
        );
    }

    #[tokio::test]
    async fn an_unauthenticated_caller_is_still_a_401() {
        let err = Error::Unauthenticated {
            reason: "no token".into(),
        };
        let (status, body) = body(ApiError::from(err)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid token.");
    }
}

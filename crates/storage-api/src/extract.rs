//! Extractors: the token-authenticated caller and request bodies that
//! answer malformed input with a 400 naming the problem.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde_json::{Map, Value};
use storage_core::persist::{Caller, Credential};

use crate::error::ApiError;
use crate::ApiState;

/// The caller proved by `Authorization: Token <token>`, or by a bearer
/// token or browser session where the authenticator accepts them
/// ([`Credential`]).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<ApiState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        const MISSING: &str = "Authentication credentials were not provided.";
        // What this server's own stores do not accept (a bearer token, a
        // session) is answered as if absent, as Label Studio answers a
        // scheme it does not know; an authenticator that delegates to
        // Label Studio accepts them.
        let credential = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => {
                let header = value
                    .to_str()
                    .map_err(|_| ApiError::unauthenticated(MISSING))?;
                let (scheme, token) = header.trim().split_once(' ').unwrap_or((header, ""));
                let token = token.trim();
                if token.is_empty() || token.contains(' ') {
                    return Err(ApiError::unauthenticated(
                        "Invalid token header. Token string should not contain spaces.",
                    ));
                }
                if scheme.eq_ignore_ascii_case("token") {
                    return match state.auth().authenticate(token).await? {
                        Some(caller) => Ok(Self(caller)),
                        None => Err(ApiError::unauthenticated("Invalid token.")),
                    };
                }
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(ApiError::unauthenticated(MISSING));
                }
                Credential::Bearer(token)
            }
            None => {
                let cookie = parts
                    .headers
                    .get(header::COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| ApiError::unauthenticated(MISSING))?;
                if cross_site(parts) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "A browser session may only call this API from its own site (the \
                         request's Origin differs from its Host).",
                    ));
                }
                Credential::Session(cookie)
            }
        };
        state
            .auth()
            .authenticate_credential(credential)
            .await?
            .map(Self)
            .ok_or_else(|| ApiError::unauthenticated(MISSING))
    }
}

/// Whether a browser sent the request from another site: its `Origin`
/// names a host other than the request's `Host`. A session cookie is the
/// browser's, not the page's, so another site's request must not use it.
fn cross_site(parts: &Parts) -> bool {
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return false;
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
        });
    origin_host.is_none() || origin_host.as_deref() != host
}

/// A request body as a JSON object: JSON (`{}` when empty) or
/// `application/x-www-form-urlencoded`, as Label Studio accepts both.
#[derive(Debug, Clone, Default)]
pub(crate) struct Body(pub(crate) Map<String, Value>);

impl FromRequest<ApiState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let value = any_json(req, state).await?;
        match value {
            Value::Object(map) => Ok(Self(map)),
            Value::Null => Ok(Self::default()),
            other => Err(ApiError::field(
                storage_core::NON_FIELD_ERRORS,
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    drf_type_name(&other)
                ),
            )),
        }
    }
}

/// A request body as any JSON value (`null` when empty).
#[derive(Debug, Clone)]
pub(crate) struct JsonValue(pub(crate) Value);

impl FromRequest<ApiState> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        any_json(req, state).await.map(Self)
    }
}

async fn any_json(req: Request, state: &ApiState) -> Result<Value, ApiError> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let limit = state.max_body_bytes();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    };
    // Refused before a byte of it is read: a client that sent
    // `Expect: 100-continue` is never told to go on.
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|err| {
            if is_length_limit(&err) {
                too_large()
            } else {
                // The client stopped sending (the server's body timeout)
                // or went away.
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("The request body was not received completely: {err}."),
                )
            }
        })?;
    if form {
        return Ok(Value::Object(
            url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        ));
    }
    parse_json(&bytes)
}

/// Whether reading a body failed on the size limit (anywhere in the
/// error's causes).
fn is_length_limit(err: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = current.source();
    }
    false
}

fn parse_json(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("JSON parse error - {e}")))
}

pub(crate) fn drf_type_name(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "list",
        Value::String(_) => "str",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::Bool(_) => "bool",
        Value::Null => "NoneType",
        Value::Object(_) => "dict",
    }
}

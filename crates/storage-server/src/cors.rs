//! Cross-origin requests (`--cors-allowed-origins`), as Label Studio's
//! django-cors-headers answers them: any origin by default, its methods
//! and request headers, preflights cached for a day, and never
//! credentials (the API authenticates with a token header, not cookies).

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The methods Label Studio allows (its `CORS_ALLOW_METHODS`).
const METHODS: [Method; 6] = [
    Method::DELETE,
    Method::GET,
    Method::OPTIONS,
    Method::PATCH,
    Method::POST,
    Method::PUT,
];

/// django-cors-headers' default request headers.
const HEADERS: [HeaderName; 6] = [
    header::ACCEPT,
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::USER_AGENT,
    HeaderName::from_static("x-csrftoken"),
    HeaderName::from_static("x-requested-with"),
];

/// How long a browser may reuse a preflight answer.
const MAX_AGE: Duration = Duration::from_secs(86_400);

/// The layer for `--cors-allowed-origins`: `*` allows every origin, a
/// comma-separated list (`https://app.example.com,http://localhost:3000`)
/// only those, an empty value none (no CORS headers at all: `None`).
///
/// # Errors
///
/// An origin that is not `scheme://host[:port]`, saying which.
pub fn layer(origins: &str) -> Result<Option<CorsLayer>, String> {
    let origins: Vec<&str> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    let allow = match origins.as_slice() {
        [] => return Ok(None),
        ["*"] => AllowOrigin::any(),
        list => AllowOrigin::list(
            list.iter()
                .map(|o| origin(o))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(METHODS)
            .allow_headers(HEADERS)
            .max_age(MAX_AGE),
    ))
}

/// Checks `--cors-allowed-origins` when the command line is parsed.
pub(crate) fn parse_origins(origins: &str) -> Result<String, String> {
    layer(origins).map(|_| origins.to_string())
}

/// One allowed origin, as browsers send it in `Origin`.
fn origin(raw: &str) -> Result<HeaderValue, String> {
    let invalid = |why: &str| {
        format!(
            "{raw:?} {why}: write origins as scheme://host[:port], comma-separated, or * for any"
        )
    };
    if raw == "*" {
        return Err(invalid("cannot be combined with other origins"));
    }
    let url = url::Url::parse(raw).map_err(|_| invalid("is not an origin"))?;
    let bare = url.path() == "/" && !raw.ends_with('/') && url.query().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || !bare {
        return Err(invalid("is not an origin"));
    }
    HeaderValue::from_str(raw).map_err(|_| invalid("is not an origin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(layer("").expect("valid").is_none());
        assert!(layer(" , ").expect("valid").is_none());
        assert!(layer("*").expect("valid").is_some());
        assert!(layer("https://app.example.com, http://localhost:3000")
            .expect("valid")
            .is_some());
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://app.example.com/",
            "ftp://files.example.com",
            "*,https://app.example.com",
        ] {
            let err = layer(bad).expect_err(bad);
            assert!(err.contains("scheme://host[:port]"), "{err}");
        }
    }
}

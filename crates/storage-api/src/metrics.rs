//! `GET /metrics`: the job runner's metrics in the OpenMetrics text format
//! that Prometheus scrapes, behind the access chosen with
//! [`ApiState::with_metrics`](crate::ApiState::with_metrics).

use std::fmt;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Who may read `GET /metrics`.
///
/// The metrics are counts and durations by storage type and status: no
/// storage id, no setting, no secret. They still describe the whole
/// deployment, every organisation's syncs included, so the default asks for
/// an administrator's token ([`ApiState::with_administrators`]) or the
/// scrape token; Prometheus sends one with its scrape config's
/// `authorization` (`type: Token` or the default `Bearer`).
///
/// [`ApiState::with_administrators`]: crate::ApiState::with_administrators
#[derive(Debug, Clone, Default)]
pub enum MetricsAccess {
    /// An administrator's API token (`Authorization: Token <token>` or
    /// `Bearer <token>`); other users get 403. Without administrators,
    /// nobody.
    #[default]
    Administrators,
    /// A scrape-only token, so that Prometheus does not hold a user's API
    /// token; administrators' API tokens are accepted too.
    Token(MetricsToken),
    /// Any API token, of any organisation: every user sees the counts of
    /// all organisations. Only where all users are trusted with that.
    ApiToken,
    /// No authentication: for scrapers on a trusted network.
    Public,
    /// Not routed, for hosts that serve `/metrics` themselves (they can
    /// encode [`storage_core::SyncService::metrics`] there).
    Disabled,
}

/// A scrape token, kept as its SHA-256 digest and compared in constant time.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    /// The token scrapers must present.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Both sides are hashed first, so the comparison takes the same time
    /// whatever the presented token's length or content.
    fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

/// `GET /metrics`.
pub(crate) async fn serve(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&state, &headers).await?;
    let sync = state.sync();
    sync.refresh_metrics().await?;
    let text = sync.metrics().encode();
    Ok((
        [(header::CONTENT_TYPE, storage_core::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

async fn authorize(state: &ApiState, headers: &HeaderMap) -> ApiResult<()> {
    const MISSING: &str = "Authentication credentials were not provided.";
    let access = state.metrics_access();
    if matches!(access, MetricsAccess::Public) {
        return Ok(());
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")
        })
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::unauthenticated(MISSING))?;
    if let MetricsAccess::Token(expected) = access {
        if expected.matches(token) {
            return Ok(());
        }
    }
    let caller = state
        .auth()
        .authenticate(token)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("Invalid token."))?;
    if matches!(access, MetricsAccess::ApiToken) || state.is_administrator(caller.user_id) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only_and_is_never_printed() {
        let token = MetricsToken::new("scrape-secret");
        assert!(token.matches("scrape-secret"));
        assert!(!token.matches("scrape-secre"));
        assert!(!token.matches("scrape-secret "));
        assert!(!token.matches(""));
        let printed = format!("{:?}", MetricsAccess::Token(token));
        assert!(!printed.contains("scrape-secret"), "{printed}");
    }
}

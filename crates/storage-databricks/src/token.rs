//! Bearer tokens of a Databricks storage: the personal access token as it
//! is, or an OAuth2 client-credentials token (Databricks OAuth M2M or
//! Microsoft Entra), cached until shortly before it expires.
//!
//! object_store's Entra provider (what `azure_spi` uses) asks for Azure
//! Storage's scope only, so the Azure Databricks scope needs this request
//! of its own; both grants are the same form POST.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use object_store::client::{HttpClient, HttpRequestBody};
use storage_core::failure::ServiceError;
use storage_core::retry::RetryPolicy;
use storage_core::{Error, Result};

use crate::config::{
    AuthType, AZURE_DATABRICKS_SCOPE, CLIENT_ID_FIELD, CLIENT_SECRET_FIELD, TENANT_ID_FIELD,
};

/// A cached token is replaced this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Where a storage's bearer token comes from.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A personal access token.
    Pat(Arc<str>),
    /// An OAuth token, shared by every storage of the identity.
    OAuth(Arc<OAuthToken>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pat(_) => f.write_str("Pat(***)"),
            Self::OAuth(token) => f
                .debug_tuple("OAuth")
                .field(&token.grant.client_id)
                .finish(),
        }
    }
}

impl Credential {
    /// The bearer token to send now.
    pub(crate) async fn bearer(&self) -> Result<Arc<str>> {
        match self {
            Self::Pat(token) => Ok(token.clone()),
            Self::OAuth(token) => token.get().await,
        }
    }

    /// Forgets a cached token the service refused (revoked or rotated).
    pub(crate) async fn refused(&self, token: &str) {
        if let Self::OAuth(oauth) = self {
            let mut slot = oauth.cached.lock().await;
            if slot.as_ref().is_some_and(|(t, _)| &**t == token) {
                *slot = None;
            }
        }
    }
}

/// One client-credentials grant.
pub(crate) struct Grant {
    pub(crate) auth: AuthType,
    pub(crate) url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
}

/// An OAuth token and the grant that renews it.
pub(crate) struct OAuthToken {
    grant: Grant,
    client: HttpClient,
    retry: RetryPolicy,
    cached: tokio::sync::Mutex<Option<(Arc<str>, Instant)>>,
}

impl OAuthToken {
    pub(crate) fn new(grant: Grant, client: HttpClient, retry: RetryPolicy) -> Self {
        Self {
            grant,
            client,
            retry,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<Arc<str>> {
        let mut slot = self.cached.lock().await;
        if let Some((token, until)) = slot.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.retry.run(|| self.fetch()).await?;
        // A short-lived token is kept for half its life instead.
        let keep = lifetime.checked_sub(EXPIRY_MARGIN).unwrap_or(lifetime / 2);
        *slot = Some((token.clone(), Instant::now() + keep));
        Ok(token)
    }

    async fn fetch(&self) -> Result<(Arc<str>, Duration)> {
        let grant = &self.grant;
        let azure = grant.auth == AuthType::AzureServicePrincipal;
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if azure {
                form.append_pair("client_id", &grant.client_id)
                    .append_pair("client_secret", &grant.client_secret)
                    .append_pair("scope", AZURE_DATABRICKS_SCOPE);
            } else {
                form.append_pair("scope", "all-apis");
            }
            form.finish()
        };
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(&grant.url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        if !azure {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", grant.client_id, grant.client_secret));
            request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let request = request
            .body(HttpRequestBody::from(form))
            .map_err(|e| Error::backend("building the token request", e.to_string()))?;
        let what = self.what();
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| Error::Backend {
                context: format!("getting a token from {what}"),
                source: Box::new(ServiceError {
                    status: None,
                    code: None,
                    unreachable: true,
                    message: format!("{what} is unreachable: {e}"),
                }),
                retry: storage_core::Retry::Temporary,
            })?;
        let status = response.status();
        let body = response.into_body().bytes().await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !status.is_success() {
            return Err(self.refusal(status.as_u16(), &json));
        }
        let token = json["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::backend(
                    format!("getting a token from {what}"),
                    "the answer has no access_token",
                )
            })?;
        let lifetime = json["expires_in"]
            .as_u64()
            .or_else(|| json["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(3600);
        Ok((Arc::from(token), Duration::from_secs(lifetime)))
    }

    fn what(&self) -> &'static str {
        match self.grant.auth {
            AuthType::AzureServicePrincipal => "Microsoft Entra",
            _ => "Databricks OAuth",
        }
    }

    /// What a refused token request means, naming the fields to fix and
    /// never quoting the provider's text (it may echo the client id only,
    /// but is not ours to show).
    fn refusal(&self, status: u16, body: &serde_json::Value) -> Error {
        let client = &self.grant.client_id;
        let error = body["error"].as_str().map(str::to_string);
        if status >= 500 || status == 429 {
            return Error::Backend {
                context: format!("getting a token from {}", self.what()),
                source: Box::new(ServiceError {
                    status: Some(status),
                    code: error,
                    unreachable: false,
                    message: format!("{} answered {status}", self.what()),
                }),
                retry: storage_core::Retry::Temporary,
            };
        }
        match self.grant.auth {
            AuthType::AzureServicePrincipal => {
                let text = body["error_description"].as_str().unwrap_or_default();
                let code = entra_code(text);
                let (fields, message): (&[&str], String) = match code.as_deref() {
                    Some("AADSTS7000215") => (&[CLIENT_SECRET_FIELD], format!("Microsoft Entra rejected the client secret of application {client}: check client_secret (the secret's Value, not its ID)")),
                    Some("AADSTS7000222") => (&[CLIENT_SECRET_FIELD], format!("The client secret of application {client} has expired: create a new one and set client_secret")),
                    Some("AADSTS700016") => (&[CLIENT_ID_FIELD, TENANT_ID_FIELD], format!("Microsoft Entra has no application {client} in this tenant: check client_id and tenant_id")),
                    Some("AADSTS90002") | Some("AADSTS900023") => (&[TENANT_ID_FIELD], "Microsoft Entra has no such tenant: check tenant_id (the \"Directory (tenant) ID\")".to_string()),
                    other => (&[TENANT_ID_FIELD, CLIENT_ID_FIELD, CLIENT_SECRET_FIELD], format!("Microsoft Entra refused a token for application {client} ({}): check tenant_id, client_id and client_secret", other.unwrap_or("no error code"))),
                };
                Error::CredentialsRejected {
                    fields: fields.iter().map(|f| (*f).to_string()).collect(),
                    code: code.or(error),
                    message,
                }
            }
            _ => Error::CredentialsRejected {
                fields: vec![CLIENT_ID_FIELD.into(), CLIENT_SECRET_FIELD.into()],
                code: error,
                message: format!(
                    "Databricks OAuth refused a token for service principal {client} ({status}): check client_id (the service principal's application id) and client_secret (an OAuth secret of it)"
                ),
            },
        }
    }
}

/// The `AADSTS` code in an Entra error description.
fn entra_code(text: &str) -> Option<String> {
    let at = text.find("AADSTS")?;
    let digits = text[at + 6..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    (digits > 0).then(|| text[at..at + 6 + digits].to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn entra_codes() {
        assert_eq!(
            super::entra_code("AADSTS7000215: Invalid").as_deref(),
            Some("AADSTS7000215")
        );
        assert_eq!(super::entra_code("AADSTS x"), None);
    }
}

//! The OIDC token of an authenticated Pub/Sub push (`Authorization:
//! Bearer <JWT>`), verified as Google documents it: an RS256 signature by
//! one of Google's keys (`https://www.googleapis.com/oauth2/v3/certs`,
//! cached an hour and fetched again for an unknown key id), issuer
//! `accounts.google.com`, the storage's `pubsub_audience`, its
//! `pubsub_service_account` as a verified `email`, and not expired. See
//! <https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions>.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use object_store::client::{HttpClient, HttpConnector, HttpRequest, HttpRequestBody};
use object_store::ClientOptions;
use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use serde::Deserialize;
use serde_json::Value;
use storage_core::{Error, Result, Settings};

/// Where Google publishes the keys its OIDC tokens are signed with.
pub const GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

pub use storage_core::events::{
    PUBSUB_AUDIENCE_FIELD as AUDIENCE_FIELD, PUBSUB_SERVICE_ACCOUNT_FIELD as SERVICE_ACCOUNT_FIELD,
};

/// How long fetched keys are used.
const KEEP_KEYS: Duration = Duration::from_secs(3600);

/// An unknown key id fetches the keys again, at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// Clock difference tolerated on `exp` and `iat`, seconds.
const LEEWAY: i64 = 60;

const ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];

/// One RSA key of the published set.
#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kid: String,
    n: String,
    e: String,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// Verifies push tokens against the keys at a certificates URL.
#[derive(Debug)]
pub struct OidcVerifier {
    certs_url: String,
    client: std::result::Result<HttpClient, String>,
    keys: tokio::sync::Mutex<Option<(Instant, HashMap<String, Jwk>)>>,
}

impl OidcVerifier {
    /// Keys from `certs_url` (Google's in production, a double in tests):
    /// the operator's address, fetched without redirects or proxy.
    pub fn new(certs_url: impl Into<String>) -> Self {
        let certs_url = certs_url.into();
        let options = ClientOptions::new()
            .with_allow_http(certs_url.starts_with("http://"))
            .with_timeout(Duration::from_secs(10));
        let client = storage_core::endpoint::PolicyConnector::new(
            storage_core::EndpointPolicy::allow_private(),
        )
        .connect(&options)
        .map_err(|e| e.to_string());
        Self {
            certs_url,
            client,
            keys: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether `authorization` (the push's `Authorization` header) carries
    /// a token Pub/Sub made for a storage with these settings. `Ok(false)`
    /// for a storage without `pubsub_service_account` or a header that is
    /// no bearer token; an `Err` says why a token was refused.
    pub async fn authenticate(&self, settings: &Settings, authorization: &str) -> Result<bool> {
        let (Some(email), Some(audience)) = (
            settings.str(SERVICE_ACCOUNT_FIELD),
            settings.str(AUDIENCE_FIELD),
        ) else {
            return Ok(false);
        };
        let Some(token) = authorization.strip_prefix("Bearer ") else {
            return Ok(false);
        };
        self.verify(token.trim(), audience, email)
            .await
            .map(|()| true)
            .map_err(|reason| Error::Unauthenticated {
                reason: format!("the push's OIDC token was refused: {reason}"),
            })
    }

    async fn verify(
        &self,
        token: &str,
        audience: &str,
        email: &str,
    ) -> std::result::Result<(), String> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let header: Value = decode_json(header)?;
        if header["alg"] != "RS256" {
            return Err(format!("algorithm {} is not RS256", header["alg"]));
        }
        let kid = header["kid"].as_str().ok_or("no key id (kid)")?;
        let key = self.key(kid).await?;
        let decode = |text: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|e| format!("not base64url: {e}"))
        };
        let (n, e, signature) = (decode(&key.n)?, decode(&key.e)?, decode(signature)?);
        let signed = &token[..header_and_payload_len(token)];
        RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
            .map_err(|_| "the signature does not verify".to_string())?;

        let claims: Value = decode_json(payload)?;
        let now = chrono::Utc::now().timestamp();
        if !claims["iss"]
            .as_str()
            .is_some_and(|iss| ISSUERS.contains(&iss))
        {
            return Err(format!("issuer {} is not Google's", claims["iss"]));
        }
        if claims["aud"].as_str() != Some(audience) {
            return Err(format!(
                "audience {} is not the storage's pubsub_audience",
                claims["aud"]
            ));
        }
        if claims["exp"].as_i64().is_none_or(|exp| exp + LEEWAY < now) {
            return Err("expired".into());
        }
        if claims["iat"].as_i64().is_some_and(|iat| iat - LEEWAY > now) {
            return Err("issued in the future".into());
        }
        if claims["email"].as_str() != Some(email) || claims["email_verified"] != Value::Bool(true)
        {
            return Err(format!(
                "signed for {}, not the storage's pubsub_service_account",
                claims["email"]
            ));
        }
        Ok(())
    }

    /// The key `kid`, from the cache or fetched.
    async fn key(&self, kid: &str) -> std::result::Result<Jwk, String> {
        let mut keys = self.keys.lock().await;
        if let Some((at, set)) = keys.as_ref() {
            match set.get(kid) {
                Some(key) if at.elapsed() < KEEP_KEYS => return Ok(key.clone()),
                None if at.elapsed() < REFETCH_AFTER => return Err(format!("no Google key {kid}")),
                _ => {}
            }
        }
        let set = self.fetch().await?;
        let key = set.get(kid).cloned();
        *keys = Some((Instant::now(), set));
        key.ok_or_else(|| format!("no Google key {kid}"))
    }

    async fn fetch(&self) -> std::result::Result<HashMap<String, Jwk>, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let request: HttpRequest = http::Request::builder()
            .method(http::Method::GET)
            .uri(self.certs_url.as_str())
            .body(HttpRequestBody::from(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = client
            .execute(request)
            .await
            .map_err(|e| format!("fetching Google's keys from {} failed: {e}", self.certs_url))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| format!("reading Google's keys failed: {e}"))?;
        if !status.is_success() {
            return Err(format!("{} answered {status}", self.certs_url));
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| format!("{} is not a JSON Web Key Set: {e}", self.certs_url))?;
        Ok(set.keys.into_iter().map(|k| (k.kid.clone(), k)).collect())
    }
}

/// The length of `header.payload`, the signed part of a JWT.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_json(part: &str) -> std::result::Result<Value, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| format!("not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

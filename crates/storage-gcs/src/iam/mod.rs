//! A client of Google's [IAM Service Account Credentials API] with a configurable
//! endpoint, and an object_store credential provider that impersonates a service account.
//!
//! object_store 0.14 calls `https://iamcredentials.googleapis.com/...:signBlob` itself
//! (hard-coded) to sign URLs without a private key, and cannot impersonate a service
//! account. This module does both through object_store's own HTTP client (so
//! [`ClientOptions`](object_store::ClientOptions) such as `allow_http`, timeouts, proxies and the DNS resolver apply):
//!
//! * [`IamCredentials::generate_access_token`]:
//!   `POST {endpoint}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`, a
//!   short-lived OAuth token of another service account;
//! * [`IamCredentials::sign_blob`]:
//!   `POST {endpoint}/v1/projects/-/serviceAccounts/{email}:signBlob`, an RSA-SHA256
//!   signature made with a Google-managed key of that service account (used for V4
//!   signed URLs, see [`crate::signer`]);
//! * [`ImpersonatedCredentials`]: a [`CredentialProvider`](object_store::CredentialProvider) for
//!   `GoogleCloudStorageBuilder::with_credentials` that caches the impersonated token and
//!   refreshes it shortly before it expires.
//!
//! Both calls authenticate with the *base* identity given to [`IamCredentials::new`]
//! (for `gcs_sa`, the server's own Application Default Credentials); that identity needs
//! `roles/iam.serviceAccountTokenCreator` on the target service account.
//!
//! Tokens never appear in `Debug` output, logs or error messages.
//!
//! [IAM Service Account Credentials API]: https://cloud.google.com/iam/docs/reference/credentials/rest

mod client;
mod email;
mod error;
mod impersonated;

pub use client::{AccessToken, IamCredentials};
pub use email::valid_service_account_email;
pub use error::{IamError, IamOperation};
pub use impersonated::ImpersonatedCredentials;

/// Google's public IAM Service Account Credentials endpoint.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// The OAuth scope giving access to every Google Cloud API the identity may use
/// (the default scope of [`ImpersonatedCredentials`]).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The role that grants `iam.serviceAccounts.getAccessToken` and `signBlob`.
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";

#[cfg(test)]
mod tests;

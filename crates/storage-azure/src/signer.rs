//! Read-only service SAS URLs for one blob, signed with the account key
//! (HMAC-SHA256), as Label Studio hands them out for `presign=true`.
//!
//! object_store's own Azure signer signs no response headers, so a URL
//! cannot ask the service to answer with the `Content-Type` the blob's
//! extension names (`rsct`), and it builds the URL from its client's
//! endpoint only. This one signs `rsct` when asked, percent-encodes each
//! segment of the blob name (Label Studio concatenates it raw, so names
//! with `#`, `?` or `%` break) and sets no start time (clock skew between
//! the server and Azure cannot make a fresh URL "not yet valid").

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The SAS version signed into every URL (`sv`): the string-to-sign below
/// is the layout of versions 2020-12-06 and later.
pub const SAS_VERSION: &str = "2023-11-03";

/// One blob to sign for.
#[derive(Clone, Copy)]
pub struct BlobSas<'a> {
    /// The blob service URL of the account (public cloud:
    /// `https://<account>.blob.core.windows.net`; path style emulators:
    /// `http://host:port/<account>`).
    pub account_url: &'a str,
    /// The account name (signed into the canonical resource).
    pub account: &'a str,
    /// The decoded account key.
    pub key: &'a [u8],
    /// The container.
    pub container: &'a str,
    /// The blob name, raw (not percent-encoded).
    pub blob: &'a str,
}

impl std::fmt::Debug for BlobSas<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobSas")
            .field("container", &self.container)
            .field("blob", &self.blob)
            .finish_non_exhaustive()
    }
}

/// A user delegation key, as Get User Delegation Key answers it: signs
/// user delegation SAS URLs with the rights of the identity that fetched
/// it, until [`DelegationKey::signed_expiry`].
#[derive(Clone, PartialEq, Eq)]
pub struct DelegationKey {
    /// Object id of the identity (`skoid`).
    pub signed_oid: String,
    /// Its tenant (`sktid`).
    pub signed_tid: String,
    /// Start of the key's validity (`skt`).
    pub signed_start: String,
    /// End of the key's validity (`ske`).
    pub signed_expiry: String,
    /// The service (`sks`, `b`).
    pub signed_service: String,
    /// The service version that issued it (`skv`).
    pub signed_version: String,
    /// The decoded key.
    pub value: Vec<u8>,
}

impl std::fmt::Debug for DelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationKey")
            .field("signed_expiry", &self.signed_expiry)
            .finish_non_exhaustive()
    }
}

impl DelegationKey {
    /// Reads the `<UserDelegationKey>` document of Get User Delegation Key.
    ///
    /// ```
    /// let key = storage_azure::signer::DelegationKey::from_xml(
    ///     "<UserDelegationKey><SignedOid>o</SignedOid><SignedTid>t</SignedTid>\
    ///      <SignedStart>2030-01-01T00:00:00Z</SignedStart><SignedExpiry>2030-01-02T00:00:00Z</SignedExpiry>\
    ///      <SignedService>b</SignedService><SignedVersion>2023-11-03</SignedVersion>\
    ///      <Value>a2V5</Value></UserDelegationKey>",
    /// )
    /// .unwrap();
    /// assert_eq!((key.signed_oid.as_str(), key.value.as_slice()), ("o", &b"key"[..]));
    /// ```
    pub fn from_xml(text: &str) -> Result<Self, String> {
        let element = |name: &str| -> Result<String, String> {
            let (open, close) = (format!("<{name}>"), format!("</{name}>"));
            let at = text
                .find(&open)
                .ok_or_else(|| format!("the user delegation key has no {name}"))?
                + open.len();
            let len = text[at..]
                .find(&close)
                .ok_or_else(|| format!("the user delegation key has no end of {name}"))?;
            Ok(text[at..at + len].trim().to_string())
        };
        let value = base64::engine::general_purpose::STANDARD
            .decode(element("Value")?)
            .map_err(|_| "the user delegation key's Value is not base64".to_string())?;
        Ok(Self {
            signed_oid: element("SignedOid")?,
            signed_tid: element("SignedTid")?,
            signed_start: element("SignedStart")?,
            signed_expiry: element("SignedExpiry")?,
            signed_service: element("SignedService")?,
            signed_version: element("SignedVersion")?,
            value,
        })
    }
}

impl BlobSas<'_> {
    /// A user delegation SAS URL that lets anyone `GET` the blob until
    /// `expiry` (no later than the key's own expiry), answered with
    /// `response_content_type` when one is given. `self.key` is not used:
    /// the delegation key signs.
    pub fn delegated_url(
        &self,
        delegation: &DelegationKey,
        expiry: DateTime<Utc>,
        response_content_type: Option<&str>,
    ) -> Result<String, String> {
        self.signed_with("r", expiry, response_content_type, Some(delegation))
    }

    /// A URL that lets anyone `GET` the blob until `expiry`, answered with
    /// `response_content_type` when one is given.
    ///
    /// ```
    /// use storage_azure::signer::BlobSas;
    /// let expiry = "2030-01-01T00:00:00Z".parse().unwrap();
    /// let url = BlobSas {
    ///     account_url: "https://acct.blob.core.windows.net",
    ///     account: "acct",
    ///     key: b"not a real key",
    ///     container: "media",
    ///     blob: "dir/x y#1.txt",
    /// }
    /// .url(expiry, Some("text/plain"))
    /// .unwrap();
    /// assert!(url.starts_with("https://acct.blob.core.windows.net/media/dir/x%20y%231.txt?"));
    /// assert!(url.contains("sp=r") && url.contains("sr=b") && url.contains("rsct=text%2Fplain"));
    /// assert!(url.contains("se=2030-01-01T00%3A00%3A00Z") && url.contains("&sig="));
    /// ```
    pub fn url(
        &self,
        expiry: DateTime<Utc>,
        response_content_type: Option<&str>,
    ) -> Result<String, String> {
        self.signed("r", expiry, response_content_type)
    }

    /// A URL that lets anyone create or overwrite the blob (`PUT`, Put
    /// Blob) until `expiry`: for tests and tools that write blobs
    /// object_store cannot name, such as folder placeholders (`dir/`).
    pub fn write_url(&self, expiry: DateTime<Utc>) -> Result<String, String> {
        self.signed("cw", expiry, None)
    }

    fn signed(
        &self,
        permissions: &str,
        expiry: DateTime<Utc>,
        response_content_type: Option<&str>,
    ) -> Result<String, String> {
        self.signed_with(permissions, expiry, response_content_type, None)
    }

    fn signed_with(
        &self,
        permissions: &str,
        expiry: DateTime<Utc>,
        response_content_type: Option<&str>,
        delegation: Option<&DelegationKey>,
    ) -> Result<String, String> {
        let mut url = url::Url::parse(self.account_url)
            .map_err(|e| format!("the Azure Blob endpoint is not a URL: {e}"))?;
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| "the Azure Blob endpoint cannot have a path".to_string())?;
            segments.pop_if_empty().push(self.container);
            segments.extend(self.blob.split('/'));
        }
        let expiry = expiry.to_rfc3339_opts(SecondsFormat::Secs, true);
        let content_type = response_content_type.unwrap_or_default();
        let resource = format!("/blob/{}/{}/{}", self.account, self.container, self.blob);
        let mut lines: Vec<&str> = vec![
            permissions,
            "",      // signed start: none
            &expiry, // signed expiry
            &resource,
        ];
        match delegation {
            // The user delegation layout (2020-12-06 and later): the key's
            // fields, then the (unused) authorized and unauthorized object
            // ids and correlation id, where a service SAS has its signed
            // identifier.
            Some(key) => lines.extend([
                key.signed_oid.as_str(),
                &key.signed_tid,
                &key.signed_start,
                &key.signed_expiry,
                &key.signed_service,
                &key.signed_version,
                "",
                "",
                "",
            ]),
            None => lines.push(""), // signed identifier
        }
        lines.extend([
            "",          // signed IP
            "",          // signed protocol
            SAS_VERSION, // signed version
            "b",         // signed resource: blob
            "",          // signed snapshot time
            "",          // signed encryption scope
            "",          // rscc
            "",          // rscd
            "",          // rsce
            "",          // rscl
            content_type,
        ]);
        let string_to_sign = lines.join("\n");
        let key = delegation.map_or(self.key, |d| d.value.as_slice());
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|e| format!("the account key cannot sign: {e}"))?;
        mac.update(string_to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("sv", SAS_VERSION)
                .append_pair("sr", "b")
                .append_pair("sp", permissions)
                .append_pair("se", &expiry);
            if let Some(key) = delegation {
                query
                    .append_pair("skoid", &key.signed_oid)
                    .append_pair("sktid", &key.signed_tid)
                    .append_pair("skt", &key.signed_start)
                    .append_pair("ske", &key.signed_expiry)
                    .append_pair("sks", &key.signed_service)
                    .append_pair("skv", &key.signed_version);
            }
            if let Some(content_type) = response_content_type {
                query.append_pair("rsct", content_type);
            }
            query.append_pair("sig", &signature);
        }
        Ok(url.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The string-to-sign laid out as Azure documents it for versions
    /// 2020-12-06 and later (sixteen lines, empty ones included): its
    /// layout is what Azure checks. Azurite checks it for real in
    /// tests/conformance.rs.
    #[test]
    fn signs_the_documented_string() {
        let expiry: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let url = BlobSas {
            account_url: "http://127.0.0.1:10000/devstoreaccount1",
            account: "devstoreaccount1",
            key: b"key",
            container: "c",
            blob: "a/b.txt",
        }
        .url(expiry, None)
        .unwrap();
        assert_eq!(
            url,
            "http://127.0.0.1:10000/devstoreaccount1/c/a/b.txt?sv=2023-11-03&sr=b&sp=r&se=2030-01-01T00%3A00%3A00Z&sig=".to_string()
                + &expected_sig()
        );
    }

    fn expected_sig() -> String {
        let text = "r\n\n2030-01-01T00:00:00Z\n/blob/devstoreaccount1/c/a/b.txt\n\n\n\n2023-11-03\nb\n\n\n\n\n\n\n";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(text.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        url::form_urlencoded::byte_serialize(sig.as_bytes()).collect()
    }
}

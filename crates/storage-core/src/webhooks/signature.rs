//! Webhook signatures, as the Standard Webhooks specification
//! (<https://www.standardwebhooks.com/>) defines them, so that its
//! libraries verify them:
//!
//! * `webhook-id`: the event's id, the same on every attempt (receivers
//!   deduplicate on it);
//! * `webhook-timestamp`: seconds since the Unix epoch of this attempt;
//! * `webhook-signature`: `v1,<base64 of HMAC-SHA256(secret,
//!   "<id>.<timestamp>.<body>")>`.
//!
//! A secret written `whsec_<base64>` (the specification's form) keys the
//! HMAC with its decoded bytes; any other secret with its UTF-8 bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the event id.
pub const ID_HEADER: &str = "webhook-id";
/// The header carrying the attempt's time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The specification's prefix of base64-encoded secrets.
const SECRET_PREFIX: &str = "whsec_";

/// The key bytes of `secret`.
fn key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn mac(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)).expect("HMAC accepts any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value of `body` sent as event `id` at
/// `timestamp`.
///
/// ```
/// use storage_core::webhooks::signature::{sign, verify};
/// let header = sign("s3cret", "evt_1", 1_700_000_000, b"{}");
/// assert!(header.starts_with("v1,"));
/// assert!(verify("s3cret", "evt_1", 1_700_000_000, b"{}", &header));
/// assert!(!verify("other", "evt_1", 1_700_000_000, b"{}", &header));
/// ```
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(digest))
}

/// Whether `header` (space-separated `v1,<base64>` signatures, as the
/// specification allows during a key rotation) holds a valid signature of
/// `body`; compared in constant time.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split_whitespace().any(|signature| {
        signature
            .strip_prefix("v1,")
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .is_some_and(|bytes| {
                mac(secret, id, timestamp, body)
                    .verify_slice(&bytes)
                    .is_ok()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's test vectors.
    #[test]
    fn matches_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1_614_265_330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, timestamp, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_changed_body_id_or_time_fails() {
        let header = sign("k", "e1", 10, b"body");
        assert!(verify("k", "e1", 10, b"body", &format!("v1,AAAA {header}")));
        assert!(!verify("k", "e1", 10, b"bodY", &header));
        assert!(!verify("k", "e2", 10, b"body", &header));
        assert!(!verify("k", "e1", 11, b"body", &header));
        assert!(!verify("k", "e1", 10, b"body", "v1,not base64"));
    }
}

//! What error text may leave the server (API answers, `traceback`, logs):
//! a provider's response body only as its error code and message, no
//! quoted input values, and no known secret.
//!
//! Provider bodies are not safe to pass on: S3's `SignatureDoesNotMatch`
//! body carries the access key id, the string to sign and the canonical
//! request (with `x-amz-security-token` on AWS), and a user's own endpoint
//! may answer anything at all.

use std::borrow::Cow;

/// How the HTTP client introduces a body it quotes in an error, and
/// whether a status (`403 Forbidden: `) comes before the body.
const BODY_MARKERS: &[(&str, bool)] = &[
    ("Server returned non-2xx status code: ", true),
    ("Server returned error response: ", false),
];

/// The longest provider message kept.
const MAX_MESSAGE: usize = 200;

/// What is written instead of a body that says nothing usable.
const LEFT_OUT: &str = "(the response body is left out)";

/// `text` with the response body it quotes (object_store's `Server
/// returned non-2xx status code: 403 Forbidden: <body>`) replaced by the
/// body's error code and message (`<Code>`/`<Message>` of S3 and GCS XML,
/// `error.message` of JSON), or by a note that it was left out. The
/// result quotes no body, so applying this again changes nothing.
///
/// ```
/// use storage_core::redact::without_provider_bodies;
/// let text = "listing: Server returned non-2xx status code: 403 Forbidden: \
///     <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
///     <Message>The signature does not match.</Message>\
///     <AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId></Error>";
/// let clean = without_provider_bodies(text);
/// assert_eq!(
///     clean,
///     "listing: the server answered 403 Forbidden: \
///      SignatureDoesNotMatch: The signature does not match."
/// );
/// assert_eq!(without_provider_bodies(&clean), clean);
/// ```
pub fn without_provider_bodies(text: &str) -> Cow<'_, str> {
    let Some((marker_at, marker, has_status)) = BODY_MARKERS
        .iter()
        .filter_map(|(m, status)| text.find(m).map(|at| (at, *m, *status)))
        .min_by_key(|(at, _, _)| *at)
    else {
        return Cow::Borrowed(text);
    };
    let after = &text[marker_at + marker.len()..];
    let (status, body) = match (has_status, after.find(": ")) {
        (true, Some(colon)) => (Some(&after[..colon]), &after[colon + 2..]),
        (true, None) => (Some(after.trim()), ""),
        (false, _) => (None, after),
    };
    let body = body.trim();
    let said = if body.is_empty() {
        String::new()
    } else {
        summary(body)
    };
    let answered = match (status, said.is_empty()) {
        (Some(status), true) => status.to_string(),
        (Some(status), false) => format!("{status}: {said}"),
        (None, _) => said,
    };
    Cow::Owned(format!(
        "{}the server answered {answered}",
        &text[..marker_at]
    ))
}

/// The error code and message of a provider body.
fn summary(body: &str) -> String {
    let (code, message) = if body.starts_with('<') {
        (xml_element(body, "Code"), xml_element(body, "Message"))
    } else if body.starts_with('{') {
        json_error(body)
    } else {
        (None, None)
    };
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => LEFT_OUT.to_string(),
    }
}

fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let at = body.find(&open)? + open.len();
    let len = body[at..].find(&format!("</{name}>"))?;
    clean(&body[at..at + len])
}

/// `{"error": {"code": 403, "message": "…"}}` (Google) or
/// `{"error": "…", "error_description": "…"}` (OAuth).
fn json_error(body: &str) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return (None, None);
    };
    let error = &value["error"];
    let text = |v: &serde_json::Value| v.as_str().and_then(clean);
    match error {
        serde_json::Value::Object(_) => (
            error["status"]
                .as_str()
                .and_then(clean)
                .or_else(|| error["code"].as_u64().map(|c| c.to_string())),
            text(&error["message"]),
        ),
        serde_json::Value::String(_) => (text(error), text(&value["error_description"])),
        _ => (None, text(&value["message"])),
    }
}

/// One line of at most 200 characters, without markup.
fn clean(raw: &str) -> Option<String> {
    let line: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !matches!(c, '<' | '>'))
        .collect();
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let mut kept: String = line.chars().take(MAX_MESSAGE).collect();
    if kept.len() < line.len() {
        kept.push('…');
    }
    Some(kept)
}

/// `text` with every double-quoted value replaced by `"…"`: for parser
/// messages (`invalid type: string "…", expected a boolean`) about input
/// that may hold secrets.
///
/// ```
/// use storage_core::redact::without_quoted_values;
/// assert_eq!(
///     without_quoted_values(r#"invalid type: string "-----BEGIN PRIVATE KEY-----", expected a boolean"#),
///     r#"invalid type: string "…", expected a boolean"#
/// );
/// ```
pub fn without_quoted_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    out.push_str("…\"");
                    quoted = false;
                }
                _ => escaped = false,
            }
        } else {
            out.push(c);
            quoted = c == '"';
        }
    }
    if quoted {
        out.push('…');
    }
    out
}

/// `text` with each of `secrets` (values of at least four characters)
/// replaced by `***`.
///
/// ```
/// use storage_core::redact::without_secrets;
/// assert_eq!(
///     without_secrets("key AKIAEXAMPLE rejected", ["AKIAEXAMPLE", ""]),
///     "key *** rejected"
/// );
/// ```
pub fn without_secrets<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        if secret.chars().count() >= 4 && text.contains(secret) {
            text = text.replace(secret, "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_summarised_or_left_out() {
        let gcs = r#"get: Server returned non-2xx status code: 403 Forbidden: {"error": {"code": 403, "message": "caller does not have storage.objects.list", "status": "PERMISSION_DENIED"}}"#;
        assert!(without_provider_bodies(gcs).ends_with(
            "403 Forbidden: PERMISSION_DENIED: caller does not have storage.objects.list"
        ));
        let oauth = r#"token: Server returned error response: {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}"#;
        assert!(without_provider_bodies(oauth)
            .ends_with("the server answered invalid_grant: Invalid JWT Signature."));
        let echo = "get: Server returned non-2xx status code: 400 Bad Request: Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101";
        let cleaned = without_provider_bodies(echo);
        assert!(!cleaned.contains("AKIAEXAMPLE"), "{cleaned}");
        assert!(cleaned.ends_with(LEFT_OUT), "{cleaned}");
        let long = format!(
            "x: Server returned non-2xx status code: 500 Internal Server Error: <Error><Code>InternalError</Code><Message>{}</Message></Error>",
            "y".repeat(1000)
        );
        assert!(without_provider_bodies(&long).len() < 400);
        // Text without a body is left as it is.
        assert!(matches!(
            without_provider_bodies("connection refused"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            without_provider_bodies("Server returned non-2xx status code: 404 Not Found: "),
            "the server answered 404 Not Found"
        );
    }

    #[test]
    fn quoted_values_go_even_escaped_or_unterminated() {
        assert_eq!(
            without_quoted_values(r#"bad "a\"b" and "c"#),
            r#"bad "…" and "…"#
        );
        assert_eq!(without_quoted_values("no quotes"), "no quotes");
    }
}

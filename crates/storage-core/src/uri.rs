//! Storage URIs in task data (`s3://bucket/key`, `gs://bucket/key`): which
//! storage a URI belongs to, and finding URIs inside strings, lists, objects
//! and HTML attributes, as Label Studio does when it shows tasks.

use object_store::path::Path;
use serde_json::Value;

/// The URIs of one bucket: `<scheme>://<bucket>/<key>`.
///
/// ```
/// use storage_core::uri::BucketUri;
/// let bucket = BucketUri::new("s3", "photos");
/// assert_eq!(bucket.uri("cats/a b.jpg"), "s3://photos/cats/a b.jpg");
/// assert_eq!(bucket.location("s3://photos/cats/a b.jpg").unwrap().as_ref(), "cats/a b.jpg");
/// assert!(bucket.location("s3://other/cats/a.jpg").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUri {
    scheme: &'static str,
    bucket: String,
}

impl BucketUri {
    /// URIs of `bucket` with `scheme` (`s3`, `gs`).
    pub fn new(scheme: &'static str, bucket: impl Into<String>) -> Self {
        Self {
            scheme,
            bucket: bucket.into(),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The URI of a raw object key (not URL-encoded, as Label Studio writes it).
    pub fn uri(&self, key: &str) -> String {
        format!("{}://{}/{}", self.scheme, self.bucket, key)
    }

    /// The object location a URI names, when it names an object of this
    /// bucket; `None` for other schemes, other buckets and malformed URIs.
    pub fn location(&self, uri: &str) -> Option<Path> {
        let rest = uri.strip_prefix(self.scheme)?.strip_prefix("://")?;
        // A "bucket" may have several segments (Databricks'
        // `Volumes/<catalog>/<schema>/<volume>`).
        let key = rest.strip_prefix(self.bucket.as_str())?.strip_prefix('/')?;
        if key.is_empty() {
            return None;
        }
        Path::parse(key).ok()
    }
}

/// The storage URIs with `scheme` inside a string: the whole string when it
/// starts with `<scheme>://`, otherwise every quoted occurrence (`'…'` or
/// `"…"`, as in `<img src='s3://b/k.jpg'>`) that contains no `=`.
pub fn find_uris<'a>(text: &'a str, scheme: &str) -> Vec<&'a str> {
    let marker = format!("{scheme}://");
    if text.starts_with(&marker) {
        return vec![text];
    }
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&marker) {
        let before = &rest[..at];
        let quote = before.chars().last().filter(|c| *c == '\'' || *c == '"');
        let candidate = &rest[at..];
        if let Some(quote) = quote {
            if let Some(end) = candidate.find(quote) {
                let uri = &candidate[..end];
                if !uri.contains('=') && !found.contains(&uri) {
                    found.push(uri);
                }
            }
        }
        rest = &candidate[marker.len()..];
    }
    found
}

/// `text` with every storage URI with `scheme` in it for which `replace`
/// returns a new text replaced; `None` when nothing was replaced.
pub fn rewrite_uris_in_text(
    text: &str,
    scheme: &str,
    replace: &mut dyn FnMut(&str) -> Option<String>,
) -> Option<String> {
    let mut rewritten: Option<String> = None;
    for uri in find_uris(text, scheme) {
        if let Some(new) = replace(uri) {
            let current = rewritten.unwrap_or_else(|| text.to_string());
            rewritten = Some(current.replace(uri, &new));
        }
    }
    rewritten
}

/// Replaces, in place, every storage URI with `scheme` found in `value`
/// (strings, and recursively strings inside lists and objects) for which
/// `replace` returns a new text. URIs it declines are left unchanged.
pub fn rewrite_uris(
    value: &mut Value,
    scheme: &str,
    replace: &mut dyn FnMut(&str) -> Option<String>,
) {
    match value {
        Value::String(text) => {
            if let Some(rewritten) = rewrite_uris_in_text(text, scheme, replace) {
                *text = rewritten;
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_uris(item, scheme, replace)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| rewrite_uris(item, scheme, replace)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_whole_and_quoted_uris() {
        assert_eq!(find_uris("s3://b/k.jpg", "s3"), vec!["s3://b/k.jpg"]);
        assert_eq!(
            find_uris(
                r#"<img src="s3://b/1.jpg"/><img src='s3://b/2.jpg'/> s3://b/bare"#,
                "s3"
            ),
            vec!["s3://b/1.jpg", "s3://b/2.jpg"]
        );
        assert!(
            find_uris("see s3://b/x", "s3").is_empty(),
            "unquoted inside text is not a URI"
        );
        assert!(
            find_uris(r#"<a href="s3://b/x?a=1">"#, "s3").is_empty(),
            "URIs with = are skipped"
        );
        assert!(find_uris("gs://b/x", "s3").is_empty());
    }

    #[test]
    fn rewrites_nested_values_and_leaves_foreign_buckets() {
        let bucket = BucketUri::new("s3", "mine");
        let mut data = json!({
            "image": "s3://mine/a.jpg",
            "list": ["s3://mine/b.jpg", "s3://other/c.jpg", 5],
            "html": "<embed src='s3://mine/d.pdf'/><embed src='s3://mine/d.pdf'/>",
            "nested": {"deep": ["s3://mine/e.jpg"]},
            "broken": "s3:/mine/a.jpg",
        });
        rewrite_uris(&mut data, "s3", &mut |uri| {
            bucket.location(uri).map(|path| format!("/resolved/{path}"))
        });
        assert_eq!(
            data,
            json!({
                "image": "/resolved/a.jpg",
                "list": ["/resolved/b.jpg", "s3://other/c.jpg", 5],
                "html": "<embed src='/resolved/d.pdf'/><embed src='/resolved/d.pdf'/>",
                "nested": {"deep": ["/resolved/e.jpg"]},
                "broken": "s3:/mine/a.jpg",
            })
        );
    }

    #[test]
    fn locations_are_raw_keys() {
        let bucket = BucketUri::new("gs", "b");
        assert_eq!(
            bucket.location("gs://b/dir/a%20b.png").unwrap().as_ref(),
            "dir/a%20b.png"
        );
        assert!(bucket.location("gs://b/").is_none());
        assert!(bucket.location("gs://b").is_none());
        assert!(
            bucket.location("gs://b/a//c").is_none(),
            "object_store cannot address empty segments"
        );
    }
}

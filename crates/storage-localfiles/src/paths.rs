//! Path rules: lexical normalisation as Label Studio does it, and the
//! containment checks that keep every path under the document root.

use std::path::{Component, Path, PathBuf};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use storage_core::{Error, Result};

/// Python's `urllib.parse.quote(path)`: everything but unreserved
/// characters and `/` is percent-encoded.
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// Normalises a path as Label Studio stores it: trimmed, `\` turned into
/// `/`, `.`/`..`/`//` collapsed, no trailing `/`.
///
/// ```
/// use storage_localfiles::normalize_path;
/// assert_eq!(normalize_path(" /data/a/../b//c/ "), "/data/b/c");
/// assert_eq!(normalize_path("/data/../../etc"), "/etc");
/// assert_eq!(normalize_path("rel\\dir"), "rel/dir");
/// ```
pub fn normalize_path(raw: &str) -> String {
    let raw = raw.trim().replace('\\', "/");
    let absolute = raw.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// The URL of a file for Files-mode tasks:
/// `<base>/data/local-files/?d=<path relative to the document root>`.
pub fn local_files_url(base: &str, relative: &str) -> String {
    format!(
        "{}/data/local-files/?d={}",
        base.trim_end_matches('/'),
        utf8_percent_encode(relative, QUOTE)
    )
}

/// Resolves the `d` parameter of `/data/local-files/` to a file below
/// `document_root` (canonical), refusing anything that would leave it: `..`
/// segments, absolute paths outside the root, and symlinks pointing out.
/// Returns the canonical path of an existing regular file.
pub fn resolve_served_file(document_root: &Path, d: &str) -> Result<PathBuf> {
    let relative = d.trim_start_matches('/');
    let candidate = Path::new(relative);
    if candidate.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    }) {
        return Err(Error::PermissionDenied {
            reason: "the path leaves the document root".into(),
        });
    }
    let joined = document_root.join(candidate);
    let canonical = joined
        .canonicalize()
        .map_err(|_| Error::not_found(format!("file \"{relative}\"")))?;
    if !canonical.starts_with(document_root) {
        return Err(Error::PermissionDenied {
            reason: "the path leaves the document root".into(),
        });
    }
    if !canonical.is_file() {
        return Err(Error::not_found(format!("file \"{relative}\"")));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_quote_like_python() {
        assert_eq!(
            local_files_url("", "samples/img/a b#1.jpg"),
            "/data/local-files/?d=samples/img/a%20b%231.jpg"
        );
        assert_eq!(
            local_files_url("http://h:8080/", "x/ü.png"),
            "http://h:8080/data/local-files/?d=x/%C3%BC.png"
        );
    }

    #[test]
    fn served_paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/f.txt"), "x").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("a/link.txt")).unwrap();

        assert_eq!(
            resolve_served_file(&root, "a/f.txt").unwrap(),
            root.join("a/f.txt")
        );
        assert_eq!(
            resolve_served_file(&root, "/a/f.txt").unwrap(),
            root.join("a/f.txt")
        );
        for bad in ["../secret.txt", "a/../../secret.txt", "a/link.txt"] {
            assert!(
                matches!(
                    resolve_served_file(&root, bad),
                    Err(Error::PermissionDenied { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            resolve_served_file(&root, "a/missing"),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            resolve_served_file(&root, "a"),
            Err(Error::NotFound { .. })
        ));
    }
}

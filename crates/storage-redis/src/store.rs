//! `object_store::ObjectStore` over one Redis database: keys are object
//! locations, string values are object bytes.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use redis::aio::MultiplexedConnection;

const STORE: &str = "Redis";

/// Keys asked for per `SCAN` call: Redis's hint of how much work one call
/// does, so the server never blocks long (as `KEYS` would).
pub const SCAN_COUNT: usize = 1000;

/// The sizes of a page of keys in one round trip: the length of string
/// values, -1 for keys of another type (a hash, a list) or gone since the
/// `SCAN`. `STRLEN` alone would fail the whole page on one hash.
const SIZES_SCRIPT: &str = "local r = {} \
for i, k in ipairs(KEYS) do \
  local t = redis.call('TYPE', k)['ok'] \
  if t == 'string' then r[i] = redis.call('STRLEN', k) else r[i] = -1 end \
end \
return r";

/// One Redis database as an object store.
///
/// Redis keeps no modification time: every object reports the Unix epoch,
/// so links and previews never change because of it.
#[derive(Clone)]
pub struct RedisStore {
    conn: MultiplexedConnection,
    /// `host:port/db`, for messages.
    name: Arc<str>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE}({})", self.name)
    }
}

/// A Redis glob that matches `text` literally: `*`, `?`, `[`, `]` and `\`
/// are escaped.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The location of a key, when the key is one object_store can name as it
/// is (UTF-8, no empty segment, no leading or trailing `/`, no `.` or `..`
/// segment); `None` otherwise.
pub fn key_location(key: &[u8]) -> Option<Path> {
    let text = std::str::from_utf8(key).ok()?;
    Path::parse(text).ok().filter(|p| p.as_ref() == text)
}

pub(crate) fn generic(err: redis::RedisError) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(err),
    }
}

fn meta(location: Path, size: u64) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: DateTime::<Utc>::UNIX_EPOCH,
        size,
        e_tag: None,
        version: None,
    }
}

/// One listed key: its raw bytes and its size (`None` for a key that does
/// not hold a string).
pub(crate) type Listed = (Vec<u8>, Option<u64>);

impl RedisStore {
    pub(crate) fn new(conn: MultiplexedConnection, name: String) -> Self {
        Self {
            conn,
            name: name.into(),
        }
    }

    /// `host:port/db`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// Every key matching the glob `pattern`, page by page (`SCAN`), with
    /// sizes. A key may come twice if the database is resized meanwhile
    /// (Redis's guarantee); the import's dedupe makes that harmless.
    pub(crate) fn scan(&self, pattern: String) -> BoxStream<'static, redis::RedisResult<Listed>> {
        let conn = self.conn.clone();
        stream::unfold(Some(0u64), move |cursor| {
            let (mut conn, pattern) = (conn.clone(), pattern.clone());
            async move {
                let cursor = cursor?;
                let page = async {
                    let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut conn)
                        .await?;
                    let sizes: Vec<i64> = if keys.is_empty() {
                        Vec::new()
                    } else {
                        redis::cmd("EVAL")
                            .arg(SIZES_SCRIPT)
                            .arg(keys.len())
                            .arg(&keys)
                            .query_async(&mut conn)
                            .await?
                    };
                    let listed: Vec<redis::RedisResult<Listed>> = keys
                        .into_iter()
                        .zip(sizes.into_iter().map(|s| u64::try_from(s).ok()))
                        .map(Ok)
                        .collect();
                    Ok::<_, redis::RedisError>((next, listed))
                }
                .await;
                Some(match page {
                    Ok((next, listed)) => (stream::iter(listed), (next != 0).then_some(next)),
                    Err(err) => (stream::iter(vec![Err(err)]), None),
                })
            }
        })
        .flatten()
        .boxed()
    }

    fn list_pattern(prefix: Option<&Path>) -> String {
        match prefix {
            Some(prefix) if !prefix.as_ref().is_empty() => {
                format!("{}/*", glob_escape(prefix.as_ref()))
            }
            _ => "*".to_string(),
        }
    }
}

#[async_trait]
impl ObjectStore for RedisStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let mut conn = self.conn.clone();
        let body: Bytes = payload.into();
        let mut cmd = redis::cmd("SET");
        cmd.arg(location.as_ref()).arg(body.as_ref());
        match opts.mode {
            PutMode::Overwrite => {}
            PutMode::Create => {
                cmd.arg("NX");
            }
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "put with PutMode::Update".into(),
                    implementer: STORE.into(),
                })
            }
        }
        let done: Option<String> = cmd.query_async(&mut conn).await.map_err(generic)?;
        if done.is_none() {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "the key exists".into(),
            });
        }
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Values are written whole with SET; annotations are small.
        Err(object_store::Error::NotImplemented {
            operation: "put_multipart".into(),
            implementer: STORE.into(),
        })
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut conn = self.conn.clone();
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(location.as_ref())
            .query_async(&mut conn)
            .await
            .map_err(|err| match err.code() {
                // The key became a hash or a list since the listing: for the
                // import that is a task file gone, reported by key and tried
                // again next sync, not a failed sync.
                Some("WRONGTYPE") => object_store::Error::NotFound {
                    path: location.to_string(),
                    source: "the key no longer holds a string value".into(),
                },
                _ => generic(err),
            })?;
        let Some(value) = value else {
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "no such key".into(),
            });
        };
        let meta = meta(location.clone(), value.len() as u64);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(range) => range
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: STORE,
                    source: e.into(),
                })?,
            None => 0..meta.size,
        };
        let bytes = if options.head {
            Bytes::new()
        } else {
            // Within the value: `as_range` bounded it by the size.
            Bytes::from(value).slice(range.start as usize..range.end as usize)
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
            attributes: Attributes::default(),
            range,
            meta,
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let conn = self.conn.clone();
        locations
            .then(move |location| {
                let mut conn = conn.clone();
                async move {
                    let location = location?;
                    // DEL of a missing key answers 0: deleting what is gone
                    // is not an error.
                    redis::cmd("DEL")
                        .arg(location.as_ref())
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(generic)?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.scan(Self::list_pattern(prefix))
            .filter_map(|item| async move {
                match item {
                    Ok((key, size)) => key_location(&key).map(|l| Ok(meta(l, size.unwrap_or(0)))),
                    Err(err) => Some(Err(generic(err))),
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let base: Vec<_> = prefix.map(|p| p.parts().collect()).unwrap_or_default();
        let mut objects = Vec::new();
        let mut folders = std::collections::BTreeSet::new();
        let mut listed = self.list(prefix);
        while let Some(item) = listed.next().await {
            let item = item?;
            let parts: Vec<_> = item.location.parts().collect();
            if parts.len() == base.len() + 1 {
                objects.push(item);
            } else if parts.len() > base.len() + 1 {
                folders.insert(Path::from_iter(parts[..=base.len()].iter().cloned()));
            }
        }
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(ListResult {
            common_prefixes: folders.into_iter().collect(),
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("COPY");
        cmd.arg(from.as_ref()).arg(to.as_ref());
        if matches!(options.mode, CopyMode::Overwrite) {
            cmd.arg("REPLACE");
        }
        let copied: i64 = cmd.query_async(&mut conn).await.map_err(generic)?;
        if copied == 1 {
            return Ok(());
        }
        match matches!(options.mode, CopyMode::Overwrite) {
            true => Err(object_store::Error::NotFound {
                path: from.to_string(),
                source: "no such key".into(),
            }),
            false => Err(object_store::Error::AlreadyExists {
                path: to.to_string(),
                source: "the key exists (or the source is missing)".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_locations() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("user:1/"), "user:1/");
        assert_eq!(
            key_location(b"a/b.json").map(|p| p.to_string()),
            Some("a/b.json".into())
        );
        assert_eq!(key_location(b"user:1"), Some(Path::from("user:1")));
        assert!(key_location(b"/a").is_none());
        assert!(key_location(b"a//b").is_none());
        assert!(key_location(b"a/").is_none());
        assert!(key_location(b"\xff").is_none());
    }
}

//! Which listed objects a sync takes: prefix, `recursive_scan` and
//! `regex_filter`, with Label Studio's semantics.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use regex::Regex;

use crate::retry::{Backoff, RetryPolicy};
use crate::{Error, Result};

/// Compiles `pattern` so that it matches at the start of a text but not
/// necessarily at its end, like Python's `re.match`.
///
/// ```
/// let re = storage_core::filter::compile_anchored(r".*\.jpg").unwrap();
/// assert!(re.is_match("a/b.jpg"));
/// let tail_only = storage_core::filter::compile_anchored(r"\.jpg").unwrap();
/// assert!(!tail_only.is_match("b.jpg"));
/// ```
pub fn compile_anchored(pattern: &str) -> std::result::Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})")).map_err(|err| {
        format!(
            "Invalid regular expression: {}",
            first_line(&err.to_string())
        )
    })
}

fn first_line(text: &str) -> String {
    // The regex crate's messages span several lines with a caret diagram;
    // the last line says what is wrong.
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// What part of the key the regex is tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegexTarget {
    /// The whole key, prefix included (S3, GCS).
    FullKey,
    /// The file name only (local files).
    FileName,
}

/// How a storage lists its objects.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The folder to list, already normalised (no trailing `/`).
    pub prefix: Option<Path>,
    /// List the whole tree below `prefix` instead of its direct children.
    pub recursive: bool,
    /// Keep only keys matching this (anchored at the start).
    pub regex: Option<Regex>,
    /// What the regex sees.
    pub regex_target: RegexTarget,
}

impl Listing {
    /// A listing of `prefix` (a key prefix as users write it; a trailing `/`
    /// is ignored) with an optional regex.
    pub fn new(
        prefix: Option<&str>,
        recursive: bool,
        regex_filter: Option<&str>,
        regex_target: RegexTarget,
    ) -> Result<Self> {
        let regex = regex_filter
            .filter(|p| !p.is_empty())
            .map(compile_anchored)
            .transpose()
            .map_err(|msg| Error::invalid("regex_filter", msg))?;
        let prefix = prefix
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .map(Path::from);
        Ok(Self {
            prefix,
            recursive,
            regex,
            regex_target,
        })
    }

    /// Whether an object with this raw key passes the regex.
    pub fn accepts(&self, key: &str) -> bool {
        let Some(regex) = &self.regex else {
            return true;
        };
        let subject = match self.regex_target {
            RegexTarget::FullKey => key,
            RegexTarget::FileName => key.rsplit('/').next().unwrap_or(key),
        };
        regex.is_match(subject)
    }

    /// Whether a sync of this listing considers the object at `location`,
    /// whose key is `key`: under the prefix, a direct child of it unless
    /// recursive, and accepted by the regex. Only such linked objects can
    /// be found gone, so changing the prefix, `recursive_scan` or the
    /// filter never deletes a task.
    pub fn covers(&self, location: &Path, key: &str) -> bool {
        let depth = self.prefix.as_ref().map_or(0, |p| p.parts().count());
        let under = self
            .prefix
            .as_ref()
            .is_none_or(|prefix| location.prefix_matches(prefix));
        under && (self.recursive || location.parts().count() == depth + 1) && self.accepts(key)
    }

    /// Streams the objects to consider, before the regex: direct children of
    /// the prefix (one listing page set, sorted) or, with `recursive`, the
    /// whole tree as the store streams it. Never collects a recursive
    /// listing in memory. A listing request that fails with a temporary
    /// error is retried with backoff (the store's client retried it
    /// already, within a second or so), a recursive one from after the last
    /// object received.
    pub fn list(&self, store: Arc<dyn ObjectStore>) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = self.prefix.clone();
        let context = format!("listing {}", describe(prefix.as_ref()));
        if self.recursive {
            return list_tree(store, prefix, context);
        }
        stream::once(async move {
            let mut retry = list_retry().backoff();
            let result = loop {
                match store.list_with_delimiter(prefix.as_ref()).await {
                    Ok(listing) => break Ok(listing),
                    Err(err) => {
                        let err = Error::from_object_store(context.clone(), err);
                        if !retry.again(&err).await {
                            break Err(err);
                        }
                    }
                }
            };
            let mut objects = match result {
                Ok(listing) => listing.objects,
                Err(err) => return stream::iter(vec![Err(err)]),
            };
            objects.sort_by(|a, b| a.location.cmp(&b.location));
            stream::iter(objects.into_iter().map(Ok).collect::<Vec<_>>())
        })
        .flatten()
        .boxed()
    }
}

/// The retry policy of one listing request that fails with a temporary
/// error.
fn list_retry() -> RetryPolicy {
    RetryPolicy::default()
}

struct TreeListing {
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    context: String,
    pages: Option<BoxStream<'static, object_store::Result<ObjectMeta>>>,
    last: Option<Path>,
    /// Whether the objects came in key order so far, as buckets list them;
    /// only then does resuming after the last one lose nothing.
    ordered: bool,
    retry: Backoff,
}

/// The whole tree below `prefix`, resumed after the last object received
/// when a page fails with a temporary error (if the store lists in key
/// order); ends after a final error.
fn list_tree(
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    context: String,
) -> BoxStream<'static, Result<ObjectMeta>> {
    let pages = Some(store.list(prefix.as_ref()));
    let state = TreeListing {
        store,
        prefix,
        context,
        pages,
        last: None,
        ordered: true,
        retry: list_retry().backoff(),
    };
    stream::unfold(state, |mut state| async move {
        loop {
            let item = state.pages.as_mut()?.next().await?;
            match item {
                Ok(meta) => {
                    state.ordered &= state.last.as_ref().is_none_or(|last| *last < meta.location);
                    state.last = Some(meta.location.clone());
                    state.retry.reset();
                    return Some((Ok(meta), state));
                }
                Err(err) => {
                    let err = Error::from_object_store(state.context.clone(), err);
                    if state.ordered && state.retry.again(&err).await {
                        let prefix = state.prefix.as_ref();
                        state.pages = Some(match &state.last {
                            Some(last) => state.store.list_with_offset(prefix, last),
                            None => state.store.list(prefix),
                        });
                        continue;
                    }
                    state.pages = None;
                    return Some((Err(err), state));
                }
            }
        }
    })
    .boxed()
}

fn describe(prefix: Option<&Path>) -> String {
    match prefix {
        Some(p) => format!("prefix {:?}", p.as_ref()),
        None => "storage root".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::FaultyStore;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[test]
    fn regex_is_anchored_at_start_only() {
        let listing = Listing::new(None, false, Some(r".*\.jpg"), RegexTarget::FullKey).unwrap();
        assert!(listing.accepts("img/a.jpg"));
        assert!(listing.accepts("img/a.jpg.bak"), "no implicit end anchor");
        assert!(!listing.accepts("img/a.png"));
        let end_only = Listing::new(None, false, Some(r"\.jpg$"), RegexTarget::FullKey).unwrap();
        assert!(
            !end_only.accepts("a.jpg"),
            "match starts at the first character"
        );
    }

    #[test]
    fn file_name_target_ignores_folders() {
        let listing = Listing::new(None, true, Some("img_"), RegexTarget::FileName).unwrap();
        assert!(listing.accepts("/data/x/img_1.jpg"));
        assert!(!listing.accepts("/data/img_dir/a.jpg"));
        let full = Listing::new(None, true, Some("img_"), RegexTarget::FullKey).unwrap();
        assert!(!full.accepts("/data/x/img_1.jpg"));
    }

    #[test]
    fn empty_regex_accepts_everything_and_bad_regex_names_the_field() {
        let listing = Listing::new(None, false, Some(""), RegexTarget::FullKey).unwrap();
        assert!(listing.accepts("anything"));
        let err = Listing::new(None, false, Some("[unclosed"), RegexTarget::FullKey).unwrap_err();
        match err {
            Error::InvalidConfig(errors) => {
                assert_eq!(errors.fields().collect::<Vec<_>>(), vec!["regex_filter"]);
                assert!(
                    errors.messages("regex_filter")[0].starts_with("Invalid regular expression")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn non_recursive_lists_direct_children_and_recursive_the_tree() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for key in [
            "p/a.json",
            "p/sub/b.json",
            "p/sub/deeper/c.json",
            "pq/d.json",
            "e.json",
        ] {
            store.put(&Path::from(key), "{}".into()).await.unwrap();
        }
        let keys = |listing: Listing| {
            let store = store.clone();
            async move {
                let mut keys: Vec<String> = listing
                    .list(store)
                    .map_ok(|m| m.location.to_string())
                    .try_collect()
                    .await
                    .unwrap();
                keys.sort();
                keys
            }
        };
        let flat = Listing::new(Some("p/"), false, None, RegexTarget::FullKey).unwrap();
        assert_eq!(keys(flat).await, vec!["p/a.json"]);
        let tree = Listing::new(Some("p"), true, None, RegexTarget::FullKey).unwrap();
        assert_eq!(
            keys(tree).await,
            vec!["p/a.json", "p/sub/b.json", "p/sub/deeper/c.json"],
            "prefix is a folder: pq/ is not under p/"
        );
        let root = Listing::new(None, false, None, RegexTarget::FullKey).unwrap();
        assert_eq!(keys(root).await, vec!["e.json"]);
    }

    /// Ten objects under `p/`; the next `breaks` listing requests break.
    async fn flaky(store: &'static str, breaks: usize) -> Arc<FaultyStore> {
        let flaky = FaultyStore::new().with_broken_listings(store, 4, breaks);
        for i in 0..10 {
            flaky
                .put(&Path::from(format!("p/{i}.json")), "{}".into())
                .await
                .unwrap();
        }
        Arc::new(flaky)
    }

    async fn listed(listing: &Listing, store: Arc<FaultyStore>) -> Result<Vec<String>> {
        listing
            .list(store)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
    }

    #[tokio::test]
    async fn a_listing_that_breaks_for_a_moment_is_resumed_without_loss_or_repeat() {
        let all: Vec<String> = (0..10).map(|i| format!("p/{i}.json")).collect();
        for recursive in [true, false] {
            let listing = Listing::new(Some("p"), recursive, None, RegexTarget::FullKey).unwrap();
            let store = flaky("S3", 2).await;
            assert_eq!(
                listed(&listing, store.clone()).await.unwrap(),
                all,
                "recursive: {recursive}"
            );
            assert_eq!(store.breaks_left(), 0, "broke twice, retried");
            let err = listed(&listing, flaky("S3", 100).await).await.unwrap_err();
            assert!(
                err.to_string().starts_with("listing prefix \"p\": "),
                "{err}"
            );
            assert!(
                err.to_string().contains("connection reset by peer"),
                "{err}"
            );
        }
        // Errors that stay (here: of the local file system) are not retried.
        let listing = Listing::new(Some("p"), true, None, RegexTarget::FullKey).unwrap();
        let store = flaky("LocalFileSystem", 2).await;
        assert!(listed(&listing, store.clone()).await.is_err());
        assert_eq!(store.breaks_left(), 1, "one attempt only");
    }
}

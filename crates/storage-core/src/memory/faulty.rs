//! An in-memory object store that fails on purpose.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::memory::InMemory as MemoryStore;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// object_store's in-memory store with the failures a real bucket has, for
/// tests of how the engines meet them: writes refused as by a read-only
/// bucket ([`Self::read_only`]), listings cut by a dropped connection
/// ([`Self::with_broken_listings`]). Without either it is a plain in-memory
/// store.
///
/// ```
/// # tokio_test::block_on(async {
/// use object_store::{ObjectStoreExt, path::Path};
/// use storage_core::memory::FaultyStore;
///
/// let store = FaultyStore::new().read_only();
/// let err = store.put(&Path::from("a.json"), "{}".into()).await.unwrap_err();
/// assert!(matches!(err, object_store::Error::PermissionDenied { .. }));
/// # });
/// ```
#[derive(Debug, Default)]
pub struct FaultyStore {
    inner: MemoryStore,
    read_only: bool,
    /// The store name broken listings report (object_store's errors say
    /// which store failed; core retries some stores' errors, not others).
    store: &'static str,
    /// Objects a recursive listing yields before it breaks.
    break_after: usize,
    /// How many listing requests from now on break.
    breaks: AtomicUsize,
}

impl FaultyStore {
    /// An empty store that does not fail.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses every write with `PermissionDenied`.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Breaks the next `times` listing requests with a `Generic` error of
    /// `store` ("connection reset by peer"): a recursive listing after
    /// `after` objects, one with a delimiter at once.
    pub fn with_broken_listings(mut self, store: &'static str, after: usize, times: usize) -> Self {
        self.store = store;
        self.break_after = after;
        self.breaks = times.into();
        self
    }

    /// How many of the broken listing requests are still to come.
    pub fn breaks_left(&self) -> usize {
        self.breaks.load(Ordering::SeqCst)
    }

    fn broken(&self) -> bool {
        self.breaks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn maybe_break(
        &self,
        listed: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if !self.broken() {
            return listed;
        }
        listed
            .take(self.break_after)
            .chain(stream::iter([Err(self.connection_reset())]))
            .boxed()
    }

    fn connection_reset(&self) -> object_store::Error {
        object_store::Error::Generic {
            store: self.store,
            source: "connection reset by peer".into(),
        }
    }

    fn check_writable(&self, location: &Path) -> object_store::Result<()> {
        if self.read_only {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "read-only bucket".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultyStore")
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check_writable(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check_writable(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.maybe_break(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.maybe_break(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        if self.broken() {
            return Err(self.connection_reset());
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check_writable(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

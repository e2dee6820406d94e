//! What a backend crate provides: a factory that turns stored settings into
//! an import source or an export target over `object_store`.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::fields::{FieldSpec, Settings};
use crate::filter::Listing;
use crate::{Error, Result, StorageKind};

/// A configured source of tasks.
///
/// Backends implement the three mappings below; listing, filtering, dedupe,
/// parsing and batching are done by core on top of [`ImportStorage::store`].
#[async_trait]
pub trait ImportStorage: Send + Sync + Debug {
    /// The store to list and read.
    fn store(&self) -> Arc<dyn ObjectStore>;

    /// What to list and which keys to keep.
    fn listing(&self) -> &Listing;

    /// Streams the objects to consider (before the regex). The default lists
    /// [`ImportStorage::store`] as [`ImportStorage::listing`] says; a backend
    /// overrides it only when it can stream something the generic listing
    /// would collect.
    fn list(&self) -> futures::stream::BoxStream<'static, Result<object_store::ObjectMeta>> {
        self.list_within(self.listing())
    }

    /// Streams the objects `listing` names (one part of this storage's
    /// listing, see [`crate::shards`]) as [`ImportStorage::list`] would. A
    /// backend that leaves objects out of its listings (folder
    /// placeholders) overrides this one.
    fn list_within(
        &self,
        listing: &Listing,
    ) -> futures::stream::BoxStream<'static, Result<object_store::ObjectMeta>> {
        listing.list(self.store())
    }

    /// Reads the small objects `objects` (task files) whole, yielding their
    /// contents in order, `concurrency` reads at once. The default is one
    /// `get` of [`ImportStorage::store`] each; a backend whose reads block
    /// (local files) overrides it to read a group of objects per blocking
    /// call rather than hand every file to a thread and back. A failed read
    /// is tried again by the import, one `get` at a time.
    fn read_small(
        &self,
        objects: Vec<object_store::ObjectMeta>,
        concurrency: usize,
    ) -> futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>> {
        use futures::StreamExt;
        let store = self.store();
        futures::stream::iter(objects)
            .map(move |object| {
                let store = store.clone();
                async move { store.get(&object.location).await?.bytes().await }
            })
            .buffered(concurrency.max(1))
            .boxed()
    }

    /// The folders directly under the listing's prefix, as store paths,
    /// that a sync may be split by ([`crate::shards`]); `None` when this
    /// storage's listing cannot be split. The default asks the store for
    /// one delimited listing.
    async fn folders(&self) -> Result<Option<Vec<String>>> {
        crate::shards::delimited_folders(self.store(), self.listing().prefix.as_ref())
            .await
            .map(Some)
    }

    /// The key Label Studio records for this object in the storage link
    /// (the raw object key for buckets, the absolute path for local files).
    fn object_key(&self, location: &Path) -> String;

    /// The location of the object whose key is `key`: the inverse of
    /// [`ImportStorage::object_key`], `None` for a key this storage could
    /// not have produced. The default is right for backends whose key is
    /// the location itself.
    fn location_of(&self, key: &str) -> Option<Path> {
        Path::parse(key).ok()
    }

    /// Whether a sync of this storage as configured now considers the
    /// linked object `key` (see [`Listing::covers`]).
    fn covers(&self, key: &str) -> bool {
        self.location_of(key)
            .is_some_and(|location| self.listing().covers(&location, key))
    }

    /// The task data value of a Files-mode task (`s3://bucket/key`,
    /// `/data/local-files/?d=...`).
    fn task_url(&self, location: &Path) -> String;

    /// Checks that the source can be read, with a message that says what is
    /// wrong. Import sources must hold at least one object under the prefix.
    async fn check_connection(&self) -> Result<()> {
        check_listable(self.store(), self.listing().prefix.as_ref(), true).await
    }

    /// A URL that lets a browser `GET` the object at `location` for `ttl`
    /// without credentials (presign). Backends that cannot sign say so.
    async fn signed_url(&self, location: &Path, ttl: std::time::Duration) -> Result<String> {
        let _ = (location, ttl);
        Err(Error::NotSupported {
            what: "signed URLs for this storage type".into(),
        })
    }

    /// What the listings so far met but could not offer (a file name that
    /// cannot become a key or a task URL), taken: the import reports it in
    /// `traceback` and counts it in `meta.files_failed` instead of leaving
    /// it out silently. The default: nothing.
    fn take_unlisted(&self) -> Unlisted {
        Unlisted::default()
    }
}

/// Objects a listing had to leave out, for the import's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unlisted {
    /// One line for each of the first [`Unlisted::MAX_LINES`], saying which
    /// (its name escaped) and why.
    pub lines: Vec<String>,
    /// How many in all.
    pub total: u64,
}

impl Unlisted {
    /// Lines kept; more are only counted.
    pub const MAX_LINES: usize = 100;

    /// Records one object left out.
    pub fn add(&mut self, line: String) {
        self.total += 1;
        if self.lines.len() < Self::MAX_LINES {
            self.lines.push(line);
        }
    }
}

/// A configured target for annotations.
#[async_trait]
pub trait ExportStorage: Send + Sync + Debug {
    /// The store to write to.
    fn store(&self) -> Arc<dyn ObjectStore>;

    /// Where the object named `key` goes (the prefix joined with the key).
    fn location(&self, key: &str) -> Path;

    /// Whether objects are written as indented JSON (local files) or compact.
    fn pretty_json(&self) -> bool {
        false
    }

    /// Whether deleting an annotation deletes its object.
    fn can_delete_objects(&self) -> bool;

    /// Checks that the target can be reached. Export targets may be empty.
    async fn check_connection(&self) -> Result<()>;
}

/// Lists at most one object under `prefix` to prove the store is readable.
pub async fn check_listable(
    store: Arc<dyn ObjectStore>,
    prefix: Option<&Path>,
    require_object: bool,
) -> Result<()> {
    use futures::StreamExt;
    let first = store.list(prefix).next().await;
    match first {
        Some(Ok(_)) => Ok(()),
        Some(Err(err)) => Err(Error::from_object_store(
            "checking the storage connection",
            err,
        )),
        None if require_object => Err(Error::invalid_general(format!(
            "No objects found under {}",
            prefix
                .map(|p| format!("prefix \"{p}\""))
                .unwrap_or_else(|| "the storage root".into())
        ))),
        None => Ok(()),
    }
}

/// What a backend can do beyond listing, reading and writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// It can produce signed URLs (`presign=true`).
    pub presign: bool,
    /// The scheme of its object URIs in task data (`s3`, `gs`); `None` for
    /// backends whose task URLs are final (local files).
    pub uri_scheme: Option<&'static str>,
}

impl Capabilities {
    /// A bucket backend: signs URLs and names objects `<scheme>://bucket/key`.
    pub fn bucket(scheme: &'static str) -> Self {
        Self {
            presign: true,
            uri_scheme: Some(scheme),
        }
    }
}

/// A storage type: its wire name, field schema and factory.
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    /// The type name used in routes and bodies (`localfiles`, `s3`, ...).
    fn name(&self) -> &'static str;

    /// The human title listed by `/api/storages/types`.
    fn title(&self) -> &'static str;

    /// The type-specific fields of `kind` storages (import/export options
    /// included), in the order responses list them.
    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec>;

    /// What it can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Normalises and checks settings without touching the network (paths,
    /// names, endpoint policy). Called before every save.
    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()>;

    /// Builds an import source from checked settings.
    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>>;

    /// Builds an export target from checked settings.
    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>>;

    /// The feed of object changes the server follows for an import storage
    /// with these settings (a filesystem watch, a queue), or `None` when it
    /// has none (the default: it is only synced). See [`crate::events`].
    async fn event_feed(
        &self,
        settings: &Settings,
    ) -> Result<Option<Box<dyn crate::events::EventFeed>>> {
        let _ = settings;
        Ok(None)
    }

    /// How a provider pushes this backend's object changes to an import
    /// storage's notification endpoint (Pub/Sub, Event Grid), or `None`
    /// (the default) when none does.
    fn push_format(&self) -> Option<crate::events::PushFormat> {
        None
    }

    /// Whether a push to an import storage with these settings is proven
    /// to come from the provider by its `Authorization` header (Pub/Sub's
    /// OIDC token), so that it needs no notification token. The default:
    /// never. An [`Error::Unauthenticated`] says why a credential was
    /// refused.
    async fn push_authenticated(&self, settings: &Settings, authorization: &str) -> Result<bool> {
        let _ = (settings, authorization);
        Ok(false)
    }

    /// How the server hands out this backend's files itself over HTTP
    /// (`/data/local-files/?d=`), when it does: `None` (the default) for
    /// backends whose objects are reached through their own URLs, and for
    /// local files while serving is disabled.
    fn file_server(&self) -> Option<Arc<dyn FileServer>> {
        None
    }

    /// The field that names the bucket of a storage of this type: `bucket`
    /// (S3, GCS), `container` (Azure Blob).
    fn bucket_field(&self) -> &'static str {
        "bucket"
    }

    /// The URIs of a storage with these settings (its scheme and
    /// [`Backend::bucket_field`]), for backends that have a URI scheme.
    fn bucket_uri(&self, settings: &Settings) -> Option<crate::uri::BucketUri> {
        let scheme = self.capabilities().uri_scheme?;
        Some(crate::uri::BucketUri::new(
            scheme,
            settings.str(self.bucket_field())?,
        ))
    }
}

/// The rule by which a backend serves its files over HTTP: which file a
/// requested path names, and which of the backend's storages hold it. The
/// HTTP layer adds who may see the project of such a storage.
///
/// Both methods may touch a file system: call them off the async workers
/// (`tokio::task::spawn_blocking`).
pub trait FileServer: Send + Sync + Debug {
    /// Resolves the requested path (`d` of `/data/local-files/`) to a file
    /// that may be served: [`Error::PermissionDenied`] when the path would
    /// leave what the backend serves, [`Error::NotFound`] when there is no
    /// such file.
    fn resolve(&self, requested: &str) -> Result<ServedFile>;

    /// `file` as an import storage of this backend with `settings` serves
    /// it, when that storage holds it (a caller who may see its project may
    /// read it): its store reads the file only while it is still held, so
    /// a change of the file system between this check and the read cannot
    /// hand out another file.
    fn within(&self, settings: &Settings, file: &ServedFile) -> Option<ServedFile>;
}

/// A file a [`FileServer`] resolved: where to stream it from.
#[derive(Debug, Clone)]
pub struct ServedFile {
    /// The store holding the file.
    pub store: Arc<dyn ObjectStore>,
    /// Its location in [`ServedFile::store`].
    pub location: Path,
    /// The backend's own name of the file (a canonical absolute path for
    /// local files), which [`FileServer::within`] compares.
    pub key: String,
}

/// The backends a server offers, in the order aggregate lists use.
#[derive(Debug, Clone, Default)]
pub struct Backends(Vec<Arc<dyn Backend>>);

impl Backends {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a backend; a later backend with the same name replaces it.
    pub fn with(mut self, backend: Arc<dyn Backend>) -> Self {
        self.0.retain(|b| b.name() != backend.name());
        self.0.push(backend);
        self
    }

    /// The backend called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.0.iter().find(|b| b.name() == name)
    }

    /// Every backend, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.0.iter()
    }

    /// The first backend that serves files over HTTP: its name (the type
    /// of the storages that may hold a file) and its file server.
    pub fn file_server(&self) -> Option<(&'static str, Arc<dyn FileServer>)> {
        self.0
            .iter()
            .find_map(|b| b.file_server().map(|server| (b.name(), server)))
    }

    /// The backend called `name`, or a not-supported error.
    pub fn require(&self, name: &str) -> Result<&Arc<dyn Backend>> {
        self.get(name).ok_or_else(|| Error::NotSupported {
            what: format!("storage type \"{name}\""),
        })
    }
}

/// Builds the storage of `kind` from checked `settings` and proves it can
/// be reached: what the API runs before it saves a storage and what
/// `storages validate` runs. Errors say what is wrong in the backend's
/// words.
pub async fn check_storage(
    backend: &dyn Backend,
    kind: StorageKind,
    settings: &Settings,
) -> Result<()> {
    match kind {
        StorageKind::Import => {
            backend
                .import_storage(settings)
                .await?
                .check_connection()
                .await
        }
        StorageKind::Export => {
            backend
                .export_storage(settings)
                .await?
                .check_connection()
                .await
        }
    }
}

/// [`check_storage`] with a deadline: a check still waiting after
/// `deadline` (an endpoint that answers slowly, or pages without objects
/// forever) fails with a message that says it timed out and what was being
/// checked.
pub async fn check_storage_within(
    backend: &dyn Backend,
    kind: StorageKind,
    settings: &Settings,
    deadline: std::time::Duration,
) -> Result<()> {
    match tokio::time::timeout(deadline, check_storage(backend, kind, settings)).await {
        Ok(result) => result,
        Err(_) => {
            let what = match backend.bucket_uri(settings) {
                Some(uri) => uri.uri(settings.str("prefix").unwrap_or_default()),
                None => format!("the {} storage", backend.title()),
            };
            Err(Error::invalid_general(format!(
                "Checking the connection timed out after {} s: listing {what} did not finish \
                 in time; the endpoint may be slow or misbehaving (the limit is the server's \
                 --storage-check-timeout-seconds)",
                deadline.as_secs_f64()
            )))
        }
    }
}

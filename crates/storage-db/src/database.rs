//! One handle over either engine, chosen by the URL.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use storage_core::host::HostStore;
use storage_core::persist::{
    AnnotationSource, Authenticator, ExportOutbox, ProjectAccess, StorageRepository, TaskSink,
};
use storage_core::shards::ShardQueue;
use storage_core::webhooks::WebhookRepository;
use storage_core::{Error, Result};

use crate::{PostgresDatabase, SqliteDatabase};

/// The account helpers both engines have as inherent methods, behind one
/// object so [`Database`] needs no match per call.
#[async_trait]
pub(crate) trait Accounts: Send + Sync + Debug {
    async fn ensure_organization(&self, title: &str) -> Result<i64>;
    async fn ensure_user(&self, email: &str, organization_id: i64) -> Result<i64>;
    async fn set_user_token(&self, user_id: i64, token: &str) -> Result<()>;
    async fn close(&self);
}

/// A database opened from a URL — `sqlite://…` ([`SqliteDatabase`]) or
/// `postgres://…` ([`PostgresDatabase`]) — handing out the persistence
/// traits a host wires into `SyncService` and the API.
///
/// Cheap to clone.
///
/// ```no_run
/// # async fn run() -> storage_core::Result<()> {
/// let db = storage_db::Database::connect("postgres://app@127.0.0.1/storage").await?;
/// let org = db.ensure_organization("default").await?;
/// let _storages = db.storages(); // Arc<dyn StorageRepository>
/// // Several processes may share PostgreSQL: recover(true) is for SQLite.
/// assert!(!db.exclusive());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Database {
    engine: &'static str,
    exclusive: bool,
    accounts: Arc<dyn Accounts>,
    storages: Arc<dyn StorageRepository>,
    tasks: Arc<dyn TaskSink>,
    annotations: Arc<dyn AnnotationSource>,
    access: Arc<dyn ProjectAccess>,
    authenticator: Arc<dyn Authenticator>,
    host: Arc<dyn HostStore>,
    webhooks: Arc<dyn WebhookRepository>,
    exports: Arc<dyn ExportOutbox>,
    shards: Arc<dyn ShardQueue>,
}

impl Database {
    /// Opens the database at `url` and applies its migrations:
    /// `sqlite://path`, `sqlite::memory:`, `postgres://…` or
    /// `postgresql://…`. Errors never quote the URL (it may hold a
    /// password).
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::new(
                "sqlite",
                true,
                SqliteDatabase::connect(url).await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::new(
                "postgres",
                false,
                PostgresDatabase::connect(url).await?,
            ))
        } else {
            Err(Error::invalid(
                "database_url",
                "expected a sqlite:// or postgres:// URL",
            ))
        }
    }

    fn new<E>(engine: &'static str, exclusive: bool, db: E) -> Self
    where
        E: Accounts
            + StorageRepository
            + TaskSink
            + AnnotationSource
            + ProjectAccess
            + Authenticator
            + HostStore
            + WebhookRepository
            + ExportOutbox
            + ShardQueue
            + 'static,
    {
        let db = Arc::new(db);
        Self {
            engine,
            exclusive,
            accounts: db.clone(),
            storages: db.clone(),
            tasks: db.clone(),
            annotations: db.clone(),
            access: db.clone(),
            authenticator: db.clone(),
            host: db.clone(),
            webhooks: db.clone(),
            exports: db.clone(),
            shards: db,
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// Whether this process is the only one using the database: true for
    /// SQLite (an embedded file), false for PostgreSQL. Pass it to
    /// `SyncService::recover` at start-up: only an exclusive process may
    /// take the jobs found `in_progress` for dead at once; with a shared
    /// database they may belong to a live process, and are taken over only
    /// once their lease expires.
    pub fn exclusive(&self) -> bool {
        self.exclusive
    }

    /// Storages and their sync state.
    pub fn storages(&self) -> Arc<dyn StorageRepository> {
        self.storages.clone()
    }

    /// Task creation for import syncs.
    pub fn tasks(&self) -> Arc<dyn TaskSink> {
        self.tasks.clone()
    }

    /// Annotations for export syncs.
    pub fn annotations(&self) -> Arc<dyn AnnotationSource> {
        self.annotations.clone()
    }

    /// Project visibility.
    pub fn access(&self) -> Arc<dyn ProjectAccess> {
        self.access.clone()
    }

    /// API tokens.
    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        self.authenticator.clone()
    }

    /// Projects, tasks and annotations of the example host.
    pub fn host(&self) -> Arc<dyn HostStore> {
        self.host.clone()
    }

    /// Webhooks and their outbox.
    pub fn webhooks(&self) -> Arc<dyn WebhookRepository> {
        self.webhooks.clone()
    }

    /// The shards of syncs split by folder.
    pub fn shards(&self) -> Arc<dyn ShardQueue> {
        self.shards.clone()
    }

    /// The outbox of on-save exports.
    pub fn exports(&self) -> Arc<dyn ExportOutbox> {
        self.exports.clone()
    }

    /// See [`SqliteDatabase::ensure_organization`].
    pub async fn ensure_organization(&self, title: &str) -> Result<i64> {
        self.accounts.ensure_organization(title).await
    }

    /// See [`SqliteDatabase::ensure_user`].
    pub async fn ensure_user(&self, email: &str, organization_id: i64) -> Result<i64> {
        self.accounts.ensure_user(email, organization_id).await
    }

    /// See [`SqliteDatabase::set_user_token`].
    pub async fn set_user_token(&self, user_id: i64, token: &str) -> Result<()> {
        self.accounts.set_user_token(user_id, token).await
    }

    /// Waits for the connections to close.
    pub async fn close(&self) {
        self.accounts.close().await
    }
}

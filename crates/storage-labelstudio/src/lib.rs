//! Label Studio's own database as the persistence of the storage sync
//! engine, so an unchanged Label Studio gets this engine's syncs.
//!
//! [`LabelStudioDatabase`] implements the core's persistence traits on
//! Label Studio's tables (PostgreSQL, how it runs in production, or the
//! SQLite file of a single-host Label Studio):
//!
//! - storages are its `io_storages_*` rows of every type both sides have
//!   (local files, S3, GCS, Azure, Redis), with the credentials it keeps
//!   there; their sync state is written to its columns, so its UI shows a
//!   sync moving;
//! - tasks are its `task` rows, written as its `add_task` writes them, and
//!   links its link rows, so its own sync finds them linked;
//! - the tasks a sync creates fire its `TASKS_CREATED` webhooks (its own
//!   `webhook` rows, its payload);
//! - this server's change and deletion policies (`on_object_changed`,
//!   `on_object_deleted`) update, mark or delete its tasks (deleting only
//!   tasks without annotations or drafts, as its ORM would, with its
//!   `TASKS_DELETED` webhooks);
//! - export syncs read its annotations (`task_completion`) and write them
//!   in its export shape.
//!
//! Storages are created, edited and deleted in Label Studio, not here.
//!
//! Every read outside a transaction fetches all its rows (`fetch_all`, not
//! `fetch_one` or `fetch_optional`): a SQLite statement stopped after its
//! first row keeps its read lock until the connection reuses it, and on
//! Label Studio's rollback-journal file that lock makes Label Studio's own
//! writers fail with "database is locked".
//! Nothing of Label Studio's is altered: no persistent pragma, no
//! migration, no column of ours in its tables; our own tables
//! ([`UNFINISHED_TABLE`], [`SETTINGS_TABLE`], [`VERSIONS_TABLE`]) sit
//! beside them. [`LabelStudioDatabase::connect`]
//! refuses a schema it was not tested with.
//!
//! ```no_run
//! # async fn run() -> storage_core::Result<()> {
//! let ls = storage_labelstudio::LabelStudioDatabase::connect(
//!     "postgres://label_studio@127.0.0.1/label_studio",
//! )
//! .await?;
//! let _storages = ls.storages(); // Label Studio's storage rows
//! # Ok(())
//! # }
//! ```

mod catalogue;
// As in storage-db: each file of src/shared/ is written once and compiled
// once per engine module, where `super` is the engine (its sqlx types, how
// it binds a time, its limits and locks).
#[allow(
    clippy::duplicate_mod,
    reason = "each file of src/shared/ is compiled once per engine on purpose"
)]
mod postgres;
#[allow(
    clippy::duplicate_mod,
    reason = "each file of src/shared/ is compiled once per engine on purpose"
)]
mod sqlite;
mod summary;
mod webhooks;
mod whoami;

use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use storage_core::persist::{AnnotationSource, ProjectAccess, StorageRepository, TaskSink};
use storage_core::{EndpointPolicy, Error, Result, Retry};

pub use whoami::WhoAmI;

/// Our table of task files begun but not finished (a large file is written
/// in several transactions; a resumed sync reads it again).
pub const UNFINISHED_TABLE: &str = "storage_connections_unfinished_objects";

/// Our table of this server's own settings of Label Studio's storages
/// (change/deletion policies, schedules, events): the fields of a storage
/// that Label Studio's tables have no column for, by storage id.
pub const SETTINGS_TABLE: &str = "storage_connections_settings";

/// Our table of the listing entry (ETag, size, last-modified time) each
/// object of a storage was last read at, which Label Studio's link rows
/// have no column for: what syncs that follow the bucket compare with.
pub const VERSIONS_TABLE: &str = "storage_connections_object_versions";

/// The key of a storage row's `meta` that holds the running job's lease:
/// Label Studio has no column for it.
pub const LEASE_META: &str = "lease_until";

/// The newest migration of each Django app this crate reads and writes, in
/// the Label Studio versions it was tested with.
const TESTED_SCHEMA: &[(&str, &str)] = &[
    ("io_storages", "0022_normalize_localfiles_paths"),
    ("tasks", "0060_add_allow_skip_to_task"),
];

/// The Label Studio versions whose schema this crate was tested with
/// (their newest `io_storages` and `tasks` migrations).
pub const TESTED_VERSIONS: &str = "1.23.x";

/// Label Studio's database, opened from its URL: `postgres://…` or
/// `sqlite://…` (the file Label Studio's `--data-dir` holds).
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct LabelStudioDatabase {
    engine: &'static str,
    storages: Arc<dyn StorageRepository>,
    tasks: Arc<dyn TaskSink>,
    annotations: Arc<dyn AnnotationSource>,
    access: Arc<dyn ProjectAccess>,
}

impl LabelStudioDatabase {
    /// Opens Label Studio's database at `url`, checks that its schema is
    /// one this crate was tested with ([`TESTED_VERSIONS`]) and creates
    /// our own table beside its tables. Errors never quote the URL. The
    /// tasks a sync creates fire Label Studio's `TASKS_CREATED` webhooks to
    /// public addresses only ([`EndpointPolicy::strict`]; see
    /// [`LabelStudioDatabase::connect_with_webhook_policy`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_webhook_policy(url, EndpointPolicy::strict()).await
    }

    /// As [`LabelStudioDatabase::connect`], posting webhooks to the
    /// addresses `policy` allows (checked at every connection).
    pub async fn connect_with_webhook_policy(url: &str, policy: EndpointPolicy) -> Result<Self> {
        let webhooks = Some(Arc::new(webhooks::WebhookSender::new(policy)?));
        if url.starts_with("sqlite:") {
            let engine = sqlite::Engine::connect(url, webhooks).await?;
            check_schema(|app| engine.migrations(app)).await?;
            engine.create_own_tables().await?;
            Ok(Self::new("sqlite", engine))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let engine = postgres::Engine::connect(url, webhooks).await?;
            check_schema(|app| engine.migrations(app)).await?;
            engine.create_own_tables().await?;
            Ok(Self::new("postgres", engine))
        } else {
            Err(Error::invalid(
                "label_studio_database_url",
                "expected a sqlite:// or postgres:// URL",
            ))
        }
    }

    fn new<E>(engine: &'static str, db: E) -> Self
    where
        E: StorageRepository + TaskSink + AnnotationSource + ProjectAccess + 'static,
    {
        let db = Arc::new(db);
        Self {
            engine,
            storages: db.clone(),
            tasks: db.clone(),
            annotations: db.clone(),
            access: db,
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// Label Studio's storage rows and their sync state.
    pub fn storages(&self) -> Arc<dyn StorageRepository> {
        self.storages.clone()
    }

    /// Task creation into Label Studio's `task` and link tables.
    pub fn tasks(&self) -> Arc<dyn TaskSink> {
        self.tasks.clone()
    }

    /// Annotations for export syncs, from Label Studio's `task_completion`
    /// rows in the shape its storage export writes.
    pub fn annotations(&self) -> Arc<dyn AnnotationSource> {
        self.annotations.clone()
    }

    /// Project visibility by Label Studio's organisation membership.
    pub fn access(&self) -> Arc<dyn ProjectAccess> {
        self.access.clone()
    }
}

/// Refuses a schema whose newest migrations are not [`TESTED_SCHEMA`]'s,
/// naming what it found.
async fn check_schema<F, Fut>(migrations: F) -> Result<()>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>>>,
{
    let mut found = Vec::new();
    let mut tested = true;
    for (app, expected) in TESTED_SCHEMA {
        // By number, not by name or order applied: squashed histories keep
        // old names (`0001_squashed_0041_…`) beside the newer ones.
        let newest = migrations(app)
            .await?
            .into_iter()
            .max_by_key(|name| migration_number(name));
        tested &= newest.as_deref() == Some(*expected);
        found.push(format!(
            "{app} {}",
            newest.as_deref().unwrap_or("(no migration)")
        ));
    }
    if tested {
        return Ok(());
    }
    Err(Error::invalid(
        "label_studio_database_url",
        format!(
            "this Label Studio database's schema is not one this server was tested with \
             (Label Studio {TESTED_VERSIONS}, newest migrations {}); found {}. Run a supported \
             Label Studio version, or a server release that supports yours",
            TESTED_SCHEMA
                .iter()
                .map(|(app, name)| format!("{app} {name}"))
                .collect::<Vec<_>>()
                .join(", "),
            found.join(", ")
        ),
    ))
}

/// The number a migration's name starts with (`0022_…` is 22).
fn migration_number(name: &str) -> u32 {
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// The current time at the precision Label Studio keeps (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Reads a time as Label Studio stores it: Django's SQLite text
/// (`2026-12-03 13:00:00.123456`, UTC), or `str(timezone.now())` in
/// `meta` (`… +00:00`).
pub(crate) fn parse_label_studio_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|at| at.and_utc())
}

/// A database error of `context`; temporary when `temporary_code` says the
/// engine's error code is worth a retry, or the pool or socket failed.
pub(crate) fn db_error(
    context: String,
    err: sqlx::Error,
    temporary_code: fn(&str) -> bool,
) -> Error {
    let retry = match &err {
        sqlx::Error::Database(e) if e.code().is_some_and(|code| temporary_code(&code)) => {
            Retry::Temporary
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => Retry::Temporary,
        _ => Retry::Permanent,
    };
    Error::Backend {
        context,
        source: Box::new(err),
        retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_studio_times_are_read_in_each_form_it_writes() {
        let expected = DateTime::parse_from_rfc3339("2026-12-03T13:00:00.123456Z")
            .expect("time")
            .with_timezone(&Utc);
        for text in [
            "2026-12-03 13:00:00.123456",
            "2026-12-03 13:00:00.123456+00:00",
            "2026-12-03T13:00:00.123456Z",
        ] {
            assert_eq!(parse_label_studio_time(text), Some(expected), "{text}");
        }
        assert!(parse_label_studio_time("2026-12-03 13:00:00").is_some());
        assert_eq!(parse_label_studio_time("yesterday"), None);
    }

    #[tokio::test]
    async fn a_schema_of_another_version_is_refused_naming_what_was_found() {
        let newer = |app: &'static str| async move {
            Ok(match app {
                "io_storages" => vec![
                    "0001_squashed_0002_auto_20210302_1827".to_string(),
                    "0023_something_new".to_string(),
                    "0022_normalize_localfiles_paths".to_string(),
                ],
                _ => TESTED_SCHEMA
                    .iter()
                    .filter(|(a, _)| *a == app)
                    .map(|(_, name)| name.to_string())
                    .collect(),
            })
        };
        let message = check_schema(newer).await.expect_err("refused").to_string();
        assert!(
            message.contains("found io_storages 0023_something_new"),
            "{message}"
        );
        assert!(message.contains("1.23.x"), "{message}");
        let tested = |app: &'static str| async move {
            Ok(TESTED_SCHEMA
                .iter()
                .filter(|(a, _)| *a == app)
                .map(|(_, name)| name.to_string())
                .collect())
        };
        check_schema(tested).await.expect("accepted");
    }
}

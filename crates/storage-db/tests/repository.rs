//! Each database engine against a real server: a SQLite file, and a fresh
//! database on the PostgreSQL test server (`scripts/postgres.sh start`;
//! without it the PostgreSQL tests fail and say so). Storages, sync state
//! and claims, task creation and dedupe, export, access and the example
//! host. Every test of `repository_tests!` runs once per engine.

#![allow(clippy::unwrap_used)]

use chrono::{TimeZone, Utc};
use serde_json::{json, Map, Value};
use storage_core::host::{HostStore, NewProject, ProjectCounters, TaskRecord};
use storage_core::parse::ParsedTask;
use storage_core::persist::{
    AnnotationSource, Authenticator, Caller, GoneTasks, NewTask, ProjectAccess, SettledObject,
    StorageFilter, StorageRepository, SyncGuard, TaskSink,
};
use storage_core::persist::{ExportOutbox, ExportOutcome};
use storage_core::shards::{ShardQueue, ShardReport, ShardStatus};
use storage_core::webhooks::{
    recorded, Action, Attempt, Outcome, WebhookFields, WebhookRepository, WebhookScope,
};
use storage_core::{Error, NewStorage, Settings, StorageKind, SyncState, SyncStatus};
use storage_db::{Database, PostgresDatabase, SqliteDatabase};
use tempfile::TempDir;

async fn open_sqlite() -> (Option<TempDir>, SqliteDatabase) {
    let dir = TempDir::new().unwrap();
    let db = SqliteDatabase::open(&dir.path().join("test.db"))
        .await
        .unwrap();
    (Some(dir), db)
}

async fn open_postgres() -> (Option<TempDir>, PostgresDatabase) {
    let url = storage_testing::postgres::fresh_database("repository").await;
    (None, PostgresDatabase::connect(&url).await.unwrap())
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// The keys of a JSON object, in order.
fn keys_of(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// A task file's task with `data` only: no annotations or predictions.
fn parsed(data: Value) -> ParsedTask {
    ParsedTask {
        data: object(data).into(),
        annotations: Vec::new(),
        predictions: Vec::new(),
        allow_skip: true,
        row_index: None,
    }
}

async fn storage(db: &(impl StorageRepository + ?Sized), project: i64, kind: StorageKind) -> i64 {
    let mut settings = Map::new();
    settings.insert("path".into(), json!("/srv/files"));
    settings.insert("aws_secret_access_key".into(), json!("secret"));
    db.insert_storage(NewStorage {
        kind,
        storage_type: "localfiles".into(),
        project,
        title: Some("t".into()),
        description: None,
        synchronizable: true,
        settings: Settings::from_map(settings),
    })
    .await
    .unwrap()
    .id
}

/// A Files-mode task of `key`, with the object's etag, size and time.
fn file_task(key: &str, row_index: Option<i64>) -> NewTask {
    let mut task = storage_core::memory::new_task(
        key,
        row_index,
        json!({ "$undefined$": format!("/data/local-files/?d={key}") }),
    );
    task.link.etag = Some("e1".into());
    task.link.size = Some(12);
    task.link.last_modified = Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
    task
}

/// A task's `(total_annotations, cancelled_annotations, total_predictions)`.
fn counters(task: &TaskRecord) -> (i64, i64, i64) {
    (
        task.total_annotations,
        task.cancelled_annotations,
        task.total_predictions,
    )
}

/// One task per key, each the only task of its object.
fn file_tasks(keys: impl IntoIterator<Item = String>) -> Vec<NewTask> {
    keys.into_iter().map(|key| file_task(&key, None)).collect()
}

async fn task_count(db: &impl HostStore, project: i64) -> u64 {
    db.tasks(project, 1, 1).await.unwrap().total
}

/// The tests every engine passes, in a module per engine: `$db` is its
/// type, `$open` opens an empty database (with what keeps it alive).
macro_rules! repository_tests {
    ($engine:ident, $db:ty, $open:expr) => {
        mod $engine {
            use super::*;

            struct Fixture {
                _dir: Option<TempDir>,
                db: $db,
                caller: Caller,
                project: i64,
            }

            async fn fixture() -> Fixture {
                let (dir, db) = $open.await;
                let org = db.ensure_organization("Org A").await.unwrap();
                let user = db.ensure_user("admin@example.com", org).await.unwrap();
                let caller = Caller {
                    user_id: user,
                    organization_id: org,
                };
                let project = db
                    .create_project(
                        &caller,
                        NewProject {
                            title: "p".into(),
                            description: String::new(),
                            label_config: "<View></View>".into(),
                        },
                    )
                    .await
                    .unwrap()
                    .id;
                Fixture {
                    _dir: dir,
                    db,
                    caller,
                    project,
                }
            }

            /// A number a test reads from the tables behind the traits' back.
            async fn number(db: &$db, sql: &str, binds: &[i64]) -> i64 {
                let mut query = sqlx::query_scalar(sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_one(db.pool()).await.unwrap()
            }

        #[tokio::test]
        async fn storages_round_trip_and_filter() {
            let f = fixture().await;
            let import = storage(&f.db, f.project, StorageKind::Import).await;
            let export = storage(&f.db, f.project, StorageKind::Export).await;
            let stored = f.db.storage(import).await.unwrap().unwrap();
            assert_eq!(stored.kind, StorageKind::Import);
            assert_eq!(stored.settings.str("aws_secret_access_key"), Some("secret"));
            assert_eq!(stored.sync, SyncState::default());

            let exports =
                f.db.storages(StorageFilter {
                    kind: Some(StorageKind::Export),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(
                exports.iter().map(|s| s.id).collect::<Vec<_>>(),
                vec![export]
            );
            let all =
                f.db.storages(StorageFilter {
                    project: Some(f.project),
                    storage_type: Some("localfiles"),
                    kind: None,
                })
                .await
                .unwrap();
            assert_eq!(
                all.iter().map(|s| s.id).collect::<Vec<_>>(),
                vec![import, export]
            );
            assert!(f
                .db
                .storages(StorageFilter {
                    project: Some(f.project + 100),
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty());

            // Configuration updates never touch the sync state.
            let mut changed = stored.clone();
            changed.title = Some("renamed".into());
            changed.sync.status = SyncStatus::Failed;
            f.db.update_storage(&changed).await.unwrap();
            let reread = f.db.storage(import).await.unwrap().unwrap();
            assert_eq!(reread.title.as_deref(), Some("renamed"));
            assert_eq!(reread.sync.status, SyncStatus::Initialized);

            let err =
                f.db.insert_storage(NewStorage {
                    kind: StorageKind::Import,
                    storage_type: "localfiles".into(),
                    project: 999,
                    title: None,
                    description: None,
                    synchronizable: true,
                    settings: Settings::default(),
                })
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        }

        #[tokio::test]
        async fn update_sync_is_compare_and_set() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let initial = f.db.storage(id).await.unwrap().unwrap().sync;

            let mut queued = SyncState {
                status: SyncStatus::Queued,
                last_sync_job: Some("job-1".into()),
                lease_until: Some(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()),
                ..SyncState::default()
            };
            queued.meta.insert("attempts".into(), json!(1));

            // Wrong status: nothing written.
            let wrong_status = SyncGuard {
                status: SyncStatus::Completed,
                job: None,
            };
            assert!(!f.db.update_sync(id, &wrong_status, &queued).await.unwrap());
            // Wrong job: nothing written.
            let wrong_job = SyncGuard {
                status: SyncStatus::Initialized,
                job: Some("other".into()),
            };
            assert!(!f.db.update_sync(id, &wrong_job, &queued).await.unwrap());
            assert_eq!(f.db.storage(id).await.unwrap().unwrap().sync, initial);

            assert!(f
                .db
                .update_sync(id, &SyncGuard::of(&initial), &queued)
                .await
                .unwrap());
            let stored = f.db.storage(id).await.unwrap().unwrap().sync;
            assert_eq!(stored, queued);

            // The old guard no longer matches; the new one does, job included.
            assert!(!f
                .db
                .update_sync(id, &SyncGuard::of(&initial), &initial)
                .await
                .unwrap());
            let mut running = queued.clone();
            running.status = SyncStatus::InProgress;
            running.last_sync_count = Some(7);
            running.traceback = Some("none".into());
            running.last_sync = Some(Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap());
            assert!(f
                .db
                .update_sync(id, &SyncGuard::of(&queued), &running)
                .await
                .unwrap());
            assert_eq!(f.db.storage(id).await.unwrap().unwrap().sync, running);

            let active =
                f.db.storages_with_status(&[SyncStatus::Queued, SyncStatus::InProgress])
                    .await
                    .unwrap();
            assert_eq!(active.iter().map(|s| s.id).collect::<Vec<_>>(), vec![id]);
            assert!(f
                .db
                .storages_with_status(&[SyncStatus::Failed])
                .await
                .unwrap()
                .is_empty());
            assert!(!f
                .db
                .update_sync(id + 1000, &SyncGuard::of(&running), &running)
                .await
                .unwrap());
        }

        #[tokio::test]
        async fn create_tasks_links_and_dedupes() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let batch = file_tasks((0..5).map(|i| format!("img/{i}.jpg")));

            assert_eq!(f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap(), 5);
            let page = f.db.tasks(f.project, 1, 100).await.unwrap();
            assert_eq!(page.total, 5);
            assert_eq!(
                page.tasks.iter().map(|t| t.inner_id).collect::<Vec<_>>(),
                vec![1, 2, 3, 4, 5]
            );
            assert_eq!(page.tasks[2].storage_filename.as_deref(), Some("img/2.jpg"));
            assert_eq!(
                page.tasks[2].data.to_object()["$undefined$"],
                json!("/data/local-files/?d=img/2.jpg")
            );
            assert!(page.tasks[0].allow_skip);

            // The same batch again creates nothing.
            assert_eq!(f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap(), 0);
            assert_eq!(task_count(&f.db, f.project).await, 5);

            // The unique index holds even for writes that skip the check.
            let task_id = page.tasks[0].id;
            let duplicate = sqlx::query(
                "INSERT INTO storage_links (storage_id, task_id, key, row_index, created_at)
                 VALUES ($1, $2, 'img/0.jpg', NULL, '2026-01-01T00:00:00.000000Z')",
            )
            .bind(id)
            .bind(task_id)
            .execute(f.db.pool())
            .await;
            assert!(duplicate.is_err(), "duplicate link accepted");

            // Inner ids continue after the existing ones.
            let more = vec![file_task("img/9.jpg", None)];
            assert_eq!(f.db.create_tasks(f.project, id, more.to_vec()).await.unwrap(), 1);
            let page = f.db.tasks(f.project, 1, 100).await.unwrap();
            assert_eq!(page.tasks.last().unwrap().inner_id, 6);

            // A batch repeating one key creates it once.
            let repeated = vec![file_task("img/r.jpg", None), file_task("img/r.jpg", None)];
            assert_eq!(
                f.db.create_tasks(f.project, id, repeated.to_vec()).await.unwrap(),
                1
            );

            // The same keys in another storage are other links.
            let other = storage(&f.db, f.project, StorageKind::Import).await;
            assert_eq!(
                f.db.create_tasks(f.project, other, batch.to_vec()).await.unwrap(),
                5
            );
            assert_eq!(task_count(&f.db, f.project).await, 12);

            // An unknown storage is an error, and nothing is written.
            let err =
                f.db.create_tasks(f.project, 9999, batch.to_vec())
                    .await
                    .unwrap_err();
            assert!(matches!(err, Error::NotFound { .. }), "{err}");
            assert_eq!(task_count(&f.db, f.project).await, 12);
        }

        #[tokio::test]
        async fn a_batch_with_one_linked_row_skips_only_that_one() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let first = vec![file_task("tasks.json", Some(1))];
            assert_eq!(f.db.create_tasks(f.project, id, first.to_vec()).await.unwrap(), 1);

            let batch = vec![
                file_task("tasks.json", Some(0)),
                file_task("tasks.json", Some(1)),
                file_task("tasks.json", Some(2)),
                file_task("single.json", None),
            ];
            assert_eq!(f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap(), 3);
            assert_eq!(task_count(&f.db, f.project).await, 4);
            assert_eq!(f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap(), 0);
        }

        #[tokio::test]
        async fn linked_keys_counts_tasks_per_key_and_has_links_sees_any() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let batch = vec![
                file_task("list.json", Some(0)),
                file_task("list.json", Some(1)),
                file_task("list.json", Some(2)),
                file_task("one.json", None),
            ];
            let other = storage(&f.db, f.project, StorageKind::Import).await;
            assert!(!f.db.has_links(id).await.unwrap());
            f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap();
            assert!(f.db.has_links(id).await.unwrap());
            assert!(!f.db.has_links(other).await.unwrap());
            let keys: Vec<String> = ["list.json", "one.json", "missing.json"]
                .into_iter()
                .map(String::from)
                .collect();
            let linked = f.db.linked_keys(id, &keys).await.unwrap();
            assert_eq!(linked.len(), 2);
            assert_eq!(linked["list.json"], 3);
            assert_eq!(linked["one.json"], 1);
            assert!(f.db.linked_keys(id + 1, &keys).await.unwrap().is_empty());
            assert!(f.db.linked_keys(id, &[]).await.unwrap().is_empty());
        }

        #[tokio::test]
        async fn following_the_bucket_reads_refreshes_removes_and_settles_links() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let mut rows: Vec<NewTask> = (0..3)
                .map(|row| {
                    let mut task = file_task("list.json", Some(row));
                    task.data = object(json!({"text": format!("r{row}")})).into();
                    task
                })
                .collect();
            rows.extend(file_tasks(["a.jpg", "b.jpg", "c.jpg", "Z.jpg"].map(String::from)));
            f.db.create_tasks(f.project, id, rows.clone()).await.unwrap();
            let task_of = |text: &str| {
                let db = f.db.clone();
                let (project, text) = (f.project, text.to_string());
                async move {
                    let page = db.tasks(project, 1, 100).await.unwrap();
                    page.tasks
                        .into_iter()
                        .find(|t| t.data.to_object().get("text") == Some(&json!(text))
                            || t.data.to_object().get("$undefined$").is_some_and(|v| v.as_str().unwrap().contains(&text)))
                        .map(|t| t.id)
                        .unwrap()
                }
            };
            let annotate = |task: i64| {
                let (db, caller) = (f.db.clone(), f.caller.clone());
                async move {
                    db.create_annotation(&caller, task, &object(json!({"result": []})))
                        .await
                        .unwrap();
                }
            };
            annotate(task_of("r1").await).await;
            annotate(task_of("b.jpg").await).await;

            // What the links recorded, unfinished objects left out.
            let keys: Vec<String> = ["list.json", "a.jpg", "new.jpg"].map(String::from).to_vec();
            let linked = f.db.linked_objects(id, &keys).await.unwrap();
            assert_eq!(linked.len(), 2);
            assert_eq!(linked["list.json"].tasks, 3);
            assert_eq!(linked["a.jpg"].etag.as_deref(), Some("e1"));
            assert_eq!(linked["a.jpg"].size, Some(12));
            assert_eq!(linked["a.jpg"].last_modified, file_task("x", None).link.last_modified);

            // Keys in byte order ("Z" before "a"), paged by range.
            let all = f.db.linked_keys_between(id, None, None, 10).await.unwrap();
            assert_eq!(all, ["Z.jpg", "a.jpg", "b.jpg", "c.jpg", "list.json"]);
            let page = f.db.linked_keys_between(id, Some("Z.jpg"), Some("c.jpg"), 2).await.unwrap();
            assert_eq!(page, ["a.jpg", "b.jpg"]);

            // Gone objects: the task without annotations deleted, the other marked.
            let before = f.db.project(f.project).await.unwrap().unwrap().counters;
            let removed = f
                .db
                .remove_objects(id, &["a.jpg".into(), "b.jpg".into()], GoneTasks::Delete)
                .await
                .unwrap();
            assert_eq!((removed.deleted, removed.marked), (1, 1));
            let after = f.db.project(f.project).await.unwrap().unwrap().counters;
            assert_eq!(after.task_number, before.task_number - 1);
            assert_eq!(after, recount(&f.db, f.project).await);
            let listed = f.db.linked_keys_between(id, None, None, 10).await.unwrap();
            assert_eq!(listed, ["Z.jpg", "c.jpg", "list.json"], "b.jpg is marked");
            let marked = f.db.remove_objects(id, &["b.jpg".into()], GoneTasks::Mark).await.unwrap();
            assert_eq!((marked.deleted, marked.marked), (0, 0), "marked once");

            // A changed file: row 0 new data, row 1 (annotated) changed, row 3 new.
            let refreshed: Vec<NewTask> = [(0, "R0"), (1, "R1"), (2, "r2"), (3, "r3")]
                .into_iter()
                .map(|(row, text)| {
                    let mut task = rows[0].clone();
                    task.link.row_index = Some(row);
                    task.data = object(json!({ "text": text })).into();
                    task
                })
                .collect();
            let r = f.db.refresh_tasks(f.project, id, refreshed.clone()).await.unwrap();
            assert_eq!((r.created, r.updated, r.marked), (1, 1, 1));
            task_of("R0").await;
            task_of("r1").await;
            let again = f.db.refresh_tasks(f.project, id, refreshed).await.unwrap();
            assert_eq!((again.created, again.updated, again.marked), (0, 0, 0));

            // Settled: rows after 1 gone (row 2 deleted; row 3 too), new entry recorded.
            let settled = SettledObject {
                key: "list.json".into(),
                last_row: Some(1),
                etag: Some("e2".into()),
                size: Some(99),
                last_modified: None,
            };
            let removed = f
                .db
                .settle_objects(id, &[settled], Some(GoneTasks::Delete))
                .await
                .unwrap();
            assert_eq!((removed.deleted, removed.marked), (2, 0));
            let linked = f.db.linked_objects(id, &keys).await.unwrap();
            assert_eq!(linked["list.json"].tasks, 2);
            assert_eq!(linked["list.json"].etag.as_deref(), Some("e2"));
            assert_eq!(linked["list.json"].size, Some(99));
            assert_eq!(
                f.db.project(f.project).await.unwrap().unwrap().counters,
                recount(&f.db, f.project).await
            );
        }

        #[tokio::test]
        async fn parquet_rows_keep_their_row_group_and_are_counted_by_row_range() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let batch: Vec<NewTask> = (0..5)
                .map(|row| {
                    let mut task = file_task("t.parquet", Some(row));
                    task.link.row_group = Some(row / 2);
                    task
                })
                .chain([file_task("other.parquet", Some(1))])
                .collect();
            f.db.create_tasks(f.project, id, batch).await.unwrap();
            let count = |rows| f.db.count_linked_rows(id, "t.parquet", rows);
            assert_eq!(count(0..=1).await.unwrap(), 2);
            assert_eq!(count(4..=5).await.unwrap(), 1);
            assert_eq!(count(5..=9).await.unwrap(), 0);
            assert_eq!(f.db.count_linked_rows(id + 1, "t.parquet", 0..=9).await.unwrap(), 0);
            let groups: Vec<Option<i64>> = sqlx::query_scalar(
                "SELECT row_group FROM storage_links WHERE key = 't.parquet' ORDER BY row_index",
            )
            .fetch_all(f.db.pool())
            .await
            .unwrap();
            assert_eq!(groups, [0, 0, 1, 1, 2].map(Some));
        }

        /// Issue 12, finding 11: export objects are named by annotation id,
        /// so an id handed out again would overwrite another organisation's
        /// object. Deleting the newest row never frees its id.
        #[tokio::test]
        async fn ids_are_never_reused_after_the_newest_row_is_deleted() {
            let f = fixture().await;
            let gone = storage(&f.db, f.project, StorageKind::Export).await;
            assert!(f.db.delete_storage(gone).await.unwrap());
            assert!(storage(&f.db, f.project, StorageKind::Export).await > gone);

            let new_task = |text: &str| vec![parsed(json!({ "text": text }))];
            let task = f.db.import_tasks(f.project, new_task("a")).await.unwrap()[0];
            let body = object(json!({"result": []}));
            let gone = f.db.create_annotation(&f.caller, task, &body).await.unwrap()["id"]
                .as_i64()
                .unwrap();
            f.db.delete_annotation(gone).await.unwrap().unwrap();
            let again = f.db.create_annotation(&f.caller, task, &body).await.unwrap()["id"]
                .as_i64()
                .unwrap();
            assert!(again > gone, "annotation {again} reuses {gone}");

            let gone = f.db.import_tasks(f.project, new_task("b")).await.unwrap()[0];
            let deleted = number(&f.db, "DELETE FROM tasks WHERE id = $1 RETURNING id", &[gone]).await;
            assert_eq!(deleted, gone);
            let again = f.db.import_tasks(f.project, new_task("c")).await.unwrap()[0];
            assert!(again > gone, "task {again} reuses {gone}");

            let new_project = || NewProject {
                title: "q".into(),
                description: String::new(),
                label_config: "<View></View>".into(),
            };
            let gone = f.db.create_project(&f.caller, new_project()).await.unwrap().id;
            let deleted =
                number(&f.db, "DELETE FROM projects WHERE id = $1 RETURNING id", &[gone]).await;
            assert_eq!(deleted, gone);
            let again = f.db.create_project(&f.caller, new_project()).await.unwrap().id;
            assert!(again > gone, "project {again} reuses {gone}");
        }

        #[tokio::test]
        async fn deleting_a_storage_removes_links_and_keeps_tasks() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let batch = file_tasks((0..3).map(|i| format!("{i}.txt")));
            f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap();

            assert!(f.db.delete_storage(id).await.unwrap());
            assert!(!f.db.delete_storage(id).await.unwrap());
            assert!(f.db.storage(id).await.unwrap().is_none());
            assert_eq!(task_count(&f.db, f.project).await, 3);
            let links = number(&f.db, "SELECT COUNT(*) FROM storage_links", &[]).await;
            assert_eq!(links, 0);
            let page = f.db.tasks(f.project, 1, 10).await.unwrap();
            assert!(page.tasks.iter().all(|t| t.storage_filename.is_none()));
        }

        #[tokio::test]
        async fn links_never_point_at_nothing_and_go_with_their_task_and_project() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let batch = file_tasks((0..3).map(|i| format!("{i}.txt")));
            f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap();
            let first = number(&f.db, "SELECT MIN(task_id) FROM storage_links", &[]).await;

            let task_of_no_project = "INSERT INTO tasks (project_id, inner_id, data, created_at,
                 updated_at) VALUES ($1, $2, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)";
            let link = "INSERT INTO storage_links (storage_id, task_id, key, created_at)
                 VALUES ($1, $2, 'x', CURRENT_TIMESTAMP)";
            for (sql, binds) in [
                (task_of_no_project, [f.project + 1000, 1]),
                (link, [id, first + 1000]),
                (link, [id + 1000, first]),
            ] {
                let err = sqlx::query(sql)
                    .bind(binds[0])
                    .bind(binds[1])
                    .execute(f.db.pool())
                    .await
                    .unwrap_err();
                let kind = err.as_database_error().map(|err| err.kind());
                assert_eq!(kind, Some(sqlx::error::ErrorKind::ForeignKeyViolation), "{err}");
            }
            let links = "SELECT COUNT(*) FROM storage_links";
            assert_eq!(number(&f.db, links, &[]).await, 3);
            assert_eq!(number(&f.db, "SELECT COUNT(*) FROM tasks", &[]).await, 3);

            number(&f.db, "DELETE FROM tasks WHERE id = $1 RETURNING id", &[first]).await;
            assert_eq!(number(&f.db, links, &[]).await, 2);
            number(&f.db, "DELETE FROM projects WHERE id = $1 RETURNING id", &[f.project]).await;
            assert_eq!(number(&f.db, links, &[]).await, 0);
            assert_eq!(number(&f.db, "SELECT COUNT(*) FROM tasks", &[]).await, 0);
        }

        #[tokio::test]
        async fn a_task_inserted_while_its_project_is_deleted_waits_and_is_refused() {
            let f = fixture().await;
            let mut deleting = f.db.pool().begin().await.unwrap();
            sqlx::query("DELETE FROM projects WHERE id = $1")
                .bind(f.project)
                .execute(&mut *deleting)
                .await
                .unwrap();
            let inserting = tokio::spawn({
                let pool = f.db.pool().clone();
                let project = f.project;
                async move {
                    sqlx::query(
                        "INSERT INTO tasks (project_id, inner_id, data, created_at, updated_at)
                         VALUES ($1, 1, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                    )
                    .bind(project)
                    .execute(&pool)
                    .await
                }
            });
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert!(!inserting.is_finished(), "the insert waits for the deletion");
            deleting.commit().await.unwrap();
            let err = inserting.await.unwrap().unwrap_err();
            let kind = err.as_database_error().map(|err| err.kind());
            assert_eq!(kind, Some(sqlx::error::ErrorKind::ForeignKeyViolation), "{err}");
            assert_eq!(number(&f.db, "SELECT COUNT(*) FROM tasks", &[]).await, 0);
        }

        #[tokio::test]
        async fn file_annotations_and_predictions_are_created_with_counters() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let mut task = file_task("a.json", None);
            task.allow_skip = false;
            task.annotations = vec![
                json!({"result": [{"type": "choices", "value": {"choices": ["cat"]}}], "completed_by": 777}),
                json!({"result": [], "was_cancelled": true}),
            ];
            task.predictions = vec![json!({"result": [], "score": 0.5, "model_version": "m1"})];
            let plain = file_task("b.json", None);
            assert_eq!(
                f.db.create_tasks(f.project, id, vec![task, plain])
                    .await
                    .unwrap(),
                2
            );

            let page = f.db.tasks(f.project, 1, 10).await.unwrap();
            assert_eq!((page.total_annotations, page.total_predictions), (1, 1));
            let t = &page.tasks[0];
            assert!(!t.allow_skip);
            assert_eq!(
                counters(t),
                (1, 1, 1)
            );
            assert!(t.is_labeled);
            assert_eq!(t.annotations.len(), 2);
            assert_eq!(
                t.annotations[0]["completed_by"],
                json!(f.caller.user_id),
                "project creator"
            );
            assert_eq!(t.annotations[1]["was_cancelled"], json!(true));
            assert_eq!(t.predictions[0]["model_version"], json!("m1"));
            assert_eq!(t.predictions[0]["score"], json!(0.5));
            assert_eq!(t.predictions[0]["task"], json!(t.id));
            assert!(!page.tasks[1].is_labeled);
            assert_eq!(f.db.count_annotations(f.project).await.unwrap(), 2);
        }

        #[tokio::test]
        async fn export_pages_by_id_with_label_studio_shape() {
            let f = fixture().await;
            let ids =
                f.db.import_tasks(
                    f.project,
                    (0..3)
                        .map(|i| parsed(json!({"image": format!("{i}.jpg")})))
                        .collect(),
                )
                .await
                .unwrap();
            let mut annotation_ids = Vec::new();
            for task in &ids {
                let created =
                    f.db.create_annotation(
                        &f.caller,
                        *task,
                        &object(json!({"result": [{"value": {"choices": ["cat"]}}]})),
                    )
                    .await
                    .unwrap();
                annotation_ids.push(created["id"].as_i64().unwrap());
            }
            assert_eq!(f.db.count_annotations(f.project).await.unwrap(), 3);

            let first = f.db.annotations_for_export(f.project, 0, 2).await.unwrap();
            assert_eq!(
                first.iter().map(|a| a.id).collect::<Vec<_>>(),
                annotation_ids[..2]
            );
            let rest =
                f.db.annotations_for_export(f.project, first[1].id, 2)
                    .await
                    .unwrap();
            assert_eq!(
                rest.iter().map(|a| a.id).collect::<Vec<_>>(),
                annotation_ids[2..]
            );
            assert!(f
                .db
                .annotations_for_export(f.project, annotation_ids[2], 2)
                .await
                .unwrap()
                .is_empty());
            assert!(f
                .db
                .annotations_for_export(f.project + 1, 0, 10)
                .await
                .unwrap()
                .is_empty());

            let payload = &first[0].payload;
            assert_eq!(first[0].project, f.project);
            let keys = keys_of(payload);
            assert_eq!(
                keys,
                [
                    "id",
                    "result",
                    "created_username",
                    "created_ago",
                    "completed_by",
                    "task",
                    "was_cancelled",
                    "ground_truth",
                    "created_at",
                    "updated_at",
                    "draft_created_at",
                    "lead_time",
                    "import_id",
                    "last_action",
                    "bulk_created",
                    "project",
                    "updated_by",
                    "parent_prediction",
                    "parent_annotation",
                    "last_created_by"
                ]
            );
            assert_eq!(
                payload["completed_by"],
                json!({"id": f.caller.user_id, "first_name": "", "last_name": "", "email": "admin@example.com"})
            );
            assert_eq!(
                payload["created_username"],
                json!(format!(" admin@example.com, {}", f.caller.user_id))
            );
            assert_eq!(payload["created_ago"], json!("0\u{a0}minutes"));
            let task = &payload["task"];
            assert_eq!(task["id"], json!(ids[0]));
            assert_eq!(task["data"], json!({"image": "0.jpg"}));
            assert_eq!(task["is_labeled"], json!(true));
            assert_eq!(task["total_annotations"], json!(1));
            assert_eq!(task["inner_id"], json!(1));
            assert_eq!(task["project"], json!(f.project));
            assert_eq!(task["updated_by"], json!(f.caller.user_id));
            assert!(task.get("annotations").is_none());
            let task_keys = keys_of(task);
            assert_eq!(
                task_keys,
                [
                    "id",
                    "data",
                    "meta",
                    "created_at",
                    "updated_at",
                    "is_labeled",
                    "allow_skip",
                    "overlap",
                    "inner_id",
                    "total_annotations",
                    "cancelled_annotations",
                    "total_predictions",
                    "precomputed_agreement",
                    "comment_count",
                    "unresolved_comment_count",
                    "last_comment_updated_at",
                    "project",
                    "updated_by",
                    "file_upload",
                    "comment_authors"
                ]
            );
            let created_at = payload["created_at"].as_str().unwrap();
            assert_eq!(
                created_at.len(),
                "2026-11-23T07:46:03.905260Z".len(),
                "{created_at}"
            );

            let one =
                f.db.annotation_for_export(annotation_ids[1])
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(one.payload["task"]["id"], json!(ids[1]));
            assert!(f.db.annotation_for_export(9999).await.unwrap().is_none());
        }

        #[tokio::test]
        async fn authenticate_by_token() {
            let f = fixture().await;
            f.db.set_user_token(f.caller.user_id, "right-token")
                .await
                .unwrap();
            assert_eq!(
                f.db.authenticate("right-token").await.unwrap(),
                Some(f.caller.clone())
            );
            assert_eq!(f.db.authenticate("wrong-token").await.unwrap(), None);
            assert_eq!(f.db.authenticate("").await.unwrap(), None);

            // Only the hash is stored.
            let stored: Option<String> = sqlx::query_scalar("SELECT token_hash FROM users WHERE id = $1")
                .bind(f.caller.user_id)
                .fetch_one(f.db.pool())
                .await
                .unwrap();
            let stored = stored.unwrap();
            assert_eq!(stored.len(), 64);
            assert!(!stored.contains("right-token"));

            // A new token replaces the old one.
            f.db.set_user_token(f.caller.user_id, "next-token")
                .await
                .unwrap();
            assert_eq!(f.db.authenticate("right-token").await.unwrap(), None);
            assert!(f.db.authenticate("next-token").await.unwrap().is_some());
            assert!(matches!(
                f.db.set_user_token(9999, "x").await.unwrap_err(),
                Error::NotFound { .. }
            ));
        }

        #[tokio::test]
        async fn projects_are_visible_within_their_organisation() {
            let f = fixture().await;
            let other_org = f.db.ensure_organization("Org B").await.unwrap();
            assert_ne!(other_org, f.caller.organization_id);
            assert_eq!(f.db.ensure_organization("Org B").await.unwrap(), other_org);
            let other_user = f.db.ensure_user("b@example.com", other_org).await.unwrap();
            assert_eq!(
                f.db.ensure_user("b@example.com", other_org).await.unwrap(),
                other_user
            );
            let outsider = Caller {
                user_id: other_user,
                organization_id: other_org,
            };

            assert!(f.db.project_visible(&f.caller, f.project).await.unwrap());
            assert!(!f.db.project_visible(&outsider, f.project).await.unwrap());
            assert!(!f.db.project_visible(&f.caller, 9999).await.unwrap());

            let theirs =
                f.db.create_project(
                    &outsider,
                    NewProject {
                        title: "theirs".into(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(theirs.organization, other_org);
            assert_eq!(theirs.created_by.id, other_user);
            assert!(f.db.project_visible(&outsider, theirs.id).await.unwrap());
            assert!(!f.db.project_visible(&f.caller, theirs.id).await.unwrap());
        }

        #[tokio::test]
        async fn annotations_update_task_counters() {
            let f = fixture().await;
            let ids =
                f.db.import_tasks(
                    f.project,
                    vec![ParsedTask {
                        predictions: vec![json!({"result": [], "score": 0.9})],
                        ..parsed(json!({"text": "hello"}))
                    }],
                )
                .await
                .unwrap();
            let task = ids[0];

            let err =
                f.db.create_annotation(&f.caller, task, &Map::new())
                    .await
                    .unwrap_err();
            assert_eq!(
                err.to_string(),
                "invalid configuration: result: This field is required."
            );
            let err =
                f.db.create_annotation(&f.caller, task, &object(json!({"result": "x"})))
                    .await
                    .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)));
            let err =
                f.db.create_annotation(&f.caller, 9999, &object(json!({"result": []})))
                    .await
                    .unwrap_err();
            assert!(matches!(err, Error::NotFound { .. }));

            let created =
                f.db.create_annotation(
                    &f.caller,
                    task,
                    &object(json!({"result": [{"a": 1}], "lead_time": 3.5})),
                )
                .await
                .unwrap();
            assert_eq!(created["task"], json!(task));
            assert_eq!(created["project"], json!(f.project));
            assert_eq!(created["completed_by"], json!(f.caller.user_id));
            assert_eq!(created["updated_by"], json!(f.caller.user_id));
            assert_eq!(created["result"], json!([{"a": 1}]));
            assert_eq!(created["lead_time"], json!(3.5));
            assert_eq!(created["was_cancelled"], json!(false));
            assert_eq!(
                created["created_username"],
                json!(format!(" admin@example.com, {}", f.caller.user_id))
            );
            let annotation = created["id"].as_i64().unwrap();

            let record = f.db.task(task).await.unwrap().unwrap();
            assert_eq!(
                counters(&record),
                (1, 0, 1)
            );
            assert!(record.is_labeled);
            assert_eq!(record.annotations.len(), 1);
            assert_eq!(record.annotations[0]["id"], json!(annotation));
            assert_eq!(record.predictions[0]["score"], json!(0.9));

            let skipped =
                f.db.create_annotation(
                    &f.caller,
                    task,
                    &object(json!({"result": [], "was_cancelled": true})),
                )
                .await
                .unwrap();
            let record = f.db.task(task).await.unwrap().unwrap();
            assert_eq!(
                (record.total_annotations, record.cancelled_annotations),
                (1, 1)
            );

            let updated =
                f.db.update_annotation(
                    &f.caller,
                    annotation,
                    &object(json!({"was_cancelled": true})),
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(updated["was_cancelled"], json!(true));
            assert_eq!(
                updated["result"],
                json!([{"a": 1}]),
                "fields not sent are kept"
            );
            let record = f.db.task(task).await.unwrap().unwrap();
            assert_eq!(
                (record.total_annotations, record.cancelled_annotations),
                (0, 2)
            );
            assert!(!record.is_labeled);
            assert!(f
                .db
                .update_annotation(&f.caller, 9999, &object(json!({"result": []})))
                .await
                .unwrap()
                .is_none());

            assert_eq!(
                f.db.annotation_project(annotation).await.unwrap(),
                Some(f.project)
            );
            assert_eq!(
                f.db.delete_annotation(annotation).await.unwrap(),
                Some(f.project)
            );
            assert_eq!(f.db.delete_annotation(annotation).await.unwrap(), None);
            assert_eq!(f.db.annotation_project(annotation).await.unwrap(), None);
            let record = f.db.task(task).await.unwrap().unwrap();
            assert_eq!(
                (record.total_annotations, record.cancelled_annotations),
                (0, 1)
            );
            assert_eq!(record.annotations[0]["id"], skipped["id"]);

            let project = f.db.project(f.project).await.unwrap().unwrap();
            assert_eq!(project.counters.task_number, 1);
            assert_eq!(project.counters.total_annotations_number, 0);
            assert_eq!(project.counters.total_predictions_number, 1);
            assert_eq!(project.created_by.id, f.caller.user_id);
            assert!(f.db.project(9999).await.unwrap().is_none());
            assert!(f.db.task(9999).await.unwrap().is_none());
        }

        #[tokio::test]
        async fn tasks_are_paged_by_id() {
            let f = fixture().await;
            let tasks: Vec<ParsedTask> = (0..25)
                .map(|i| parsed(json!({"n": i})))
                .collect();
            let ids = f.db.import_tasks(f.project, tasks).await.unwrap();
            assert_eq!(ids.len(), 25);
            assert!(ids.windows(2).all(|w| w[0] < w[1]));

            let page = f.db.tasks(f.project, 1, 10).await.unwrap();
            assert_eq!(page.total, 25);
            assert_eq!(
                page.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
                ids[..10]
            );
            assert_eq!(page.tasks[0].data.to_object()["n"], json!(0));
            assert!(page.tasks[0].storage_filename.is_none());
            let last = f.db.tasks(f.project, 3, 10).await.unwrap();
            assert_eq!(
                last.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
                ids[20..]
            );
            assert_eq!(last.tasks.last().unwrap().inner_id, 25);
            assert!(f.db.tasks(f.project, 4, 10).await.unwrap().tasks.is_empty());
            assert_eq!(f.db.tasks(f.project + 1, 1, 10).await.unwrap().total, 0);
        }

        #[tokio::test]
        async fn concurrent_writers_both_succeed() {
            let f = fixture().await;
            let a = storage(&f.db, f.project, StorageKind::Import).await;
            let b = storage(&f.db, f.project, StorageKind::Import).await;
            let mut handles = Vec::new();
            for (storage, prefix) in [(a, "a"), (b, "b"), (a, "c"), (b, "d")] {
                let db = f.db.clone();
                let project = f.project;
                handles.push(tokio::spawn(async move {
                    let mut created = 0;
                    for batch in 0..10 {
                        let tasks = file_tasks((0..100).map(|i| format!("{prefix}/{batch}/{i}")));
                        created += db.create_tasks(project, storage, tasks.to_vec()).await.unwrap();
                    }
                    created
                }));
            }
            let mut total = 0;
            for handle in handles {
                total += handle.await.unwrap();
            }
            assert_eq!(total, 4000);
            let inner: Vec<i64> = sqlx::query_scalar("SELECT inner_id FROM tasks ORDER BY inner_id")
                .fetch_all(f.db.pool())
                .await
                .unwrap();
            assert_eq!(inner, (1..=4000).collect::<Vec<i64>>());
        }

        #[tokio::test]
        async fn one_hundred_thousand_files_in_batches_of_one_thousand() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let mut created = 0;
            for batch in 0..100 {
                let keys: Vec<String> = (0..1000)
                    .map(|i| format!("bucket/{batch:03}/{i:04}.jpg"))
                    .collect();
                assert!(f.db.linked_keys(id, &keys).await.unwrap().is_empty());
                let tasks: Vec<NewTask> = keys.iter().map(|key| file_task(key, None)).collect();
                created += f.db.create_tasks(f.project, id, tasks.to_vec()).await.unwrap();
            }
            assert_eq!(created, 100_000);
            assert_eq!(task_count(&f.db, f.project).await, 100_000);
            let links =
                number(&f.db, "SELECT COUNT(*) FROM storage_links WHERE storage_id = $1", &[id]).await;
            assert_eq!(links, 100_000);
            let max_inner = number(&f.db, "SELECT MAX(inner_id) FROM tasks", &[]).await;
            assert_eq!(max_inner, 100_000);
        }


        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn claims_hand_each_queued_job_to_one_claimer() {
            let f = fixture().await;
            let mut queued = Vec::new();
            for n in 0..6 {
                let id = storage(&f.db, f.project, StorageKind::Import).await;
                let initial = f.db.storage(id).await.unwrap().unwrap().sync;
                let state = SyncState {
                    status: SyncStatus::Queued,
                    last_sync_job: Some(format!("job-{n}")),
                    ..SyncState::default()
                };
                assert!(f.db.update_sync(id, &SyncGuard::of(&initial), &state).await.unwrap());
                queued.push(id);
            }
            let never_queued = storage(&f.db, f.project, StorageKind::Import).await;
            let now = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
            let lease = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 37).unwrap();

            // Storages this process still runs are skipped.
            let first = f.db.claim_queued(&queued[..1], now, lease, None).await.unwrap().unwrap();
            assert_ne!(first.id, queued[0]);
            assert!(queued.contains(&first.id));
            assert_eq!(first.sync.status, SyncStatus::InProgress);
            assert_eq!(first.sync.lease_until, Some(lease));
            assert!(first.sync.last_sync_job.as_deref().unwrap().starts_with("job-"));
            assert_eq!(first.sync.meta["time_in_progress"], storage_core::meta_time(now));
            // What was returned is what was written.
            assert_eq!(f.db.storage(first.id).await.unwrap().unwrap().sync, first.sync);

            // Eight claimers at once share the other five jobs: each exactly once.
            let mut handles = Vec::new();
            for _ in 0..8 {
                let db = f.db.clone();
                handles.push(tokio::spawn(async move {
                    let mut claimed = Vec::new();
                    while let Some(storage) = db.claim_queued(&[], now, lease, None).await.unwrap() {
                        claimed.push(storage.id);
                    }
                    claimed
                }));
            }
            let mut claimed = vec![first.id];
            for handle in handles {
                claimed.extend(handle.await.unwrap());
            }
            claimed.sort_unstable();
            assert_eq!(claimed, queued);
            assert!(f.db.claim_queued(&[], now, lease, None).await.unwrap().is_none());
            let running = f.db.storages_with_status(&[SyncStatus::InProgress]).await.unwrap();
            assert_eq!(running.iter().map(|s| s.id).collect::<Vec<_>>(), queued);
            assert_eq!(
                f.db.storage(never_queued).await.unwrap().unwrap().sync.status,
                SyncStatus::Initialized
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn shards_go_to_one_claimer_each_and_a_lost_claim_writes_nothing() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let initial = f.db.storage(id).await.unwrap().unwrap().sync;
            let running = SyncState {
                status: SyncStatus::InProgress,
                last_sync_job: Some("job-1".into()),
                ..SyncState::default()
            };
            assert!(f.db.update_sync(id, &SyncGuard::of(&initial), &running).await.unwrap());
            let now = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
            let lease = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 37).unwrap();
            // Rows of the storage's older job are forgotten by the new one.
            f.db.insert_shards(id, "job-0", &["old/".into()]).await.unwrap();
            let folders: Vec<String> = std::iter::once(String::new())
                .chain((0..7).map(|n| format!("p{n}")))
                .collect();
            f.db.insert_shards(id, "job-1", &folders).await.unwrap();
            // Inserting again (a resumed job) adds nothing.
            f.db.insert_shards(id, "job-1", &folders).await.unwrap();
            assert!(f.db.job_shards(id, "job-0").await.unwrap().is_empty());
            assert_eq!(f.db.job_shards(id, "job-1").await.unwrap().len(), 8);

            // Six claimers at once: each shard exactly once, under the lease.
            let mut handles = Vec::new();
            for _ in 0..6 {
                let db = f.db.clone();
                handles.push(tokio::spawn(async move {
                    let mut claimed = Vec::new();
                    while let Some(shard) = db.claim_shard(None, now, lease).await.unwrap() {
                        claimed.push(shard);
                    }
                    claimed
                }));
            }
            let mut claimed = Vec::new();
            for handle in handles {
                claimed.extend(handle.await.unwrap());
            }
            let mut names: Vec<String> = claimed.iter().map(|s| s.folder.clone()).collect();
            names.sort();
            assert_eq!(names, folders);
            assert!(claimed.iter().all(|s| s.status == ShardStatus::Running
                && s.attempts == 1
                && s.lease_until == Some(lease)));

            // A report under the claim is written; the shard ends.
            let done = &claimed[0];
            let report = ShardReport {
                progress: storage_core::progress::ImportProgress { objects: 3, created: 3, ..Default::default() },
                ..ShardReport::default()
            };
            assert!(f.db.report_shard(done, ShardStatus::Done, &report, None).await.unwrap());
            // Before the lease runs out nothing is claimable; after, the
            // running ones are, with a new claim number.
            assert!(f.db.claim_shard(None, now, lease).await.unwrap().is_none());
            let later = lease + chrono::Duration::seconds(1);
            let again = f.db.claim_shard(Some((id, "job-1")), later, later + chrono::Duration::seconds(30)).await.unwrap().unwrap();
            assert_eq!(again.attempts, 2);
            assert_ne!(again.id, done.id);
            // The first claimer of that shard has lost it: its report is refused.
            let stale = claimed.iter().find(|s| s.id == again.id).unwrap();
            assert!(!f.db.report_shard(stale, ShardStatus::Done, &report, None).await.unwrap());
            assert!(f.db.report_shard(&again, ShardStatus::Running, &report, Some(later)).await.unwrap());

            let stored = f.db.job_shards(id, "job-1").await.unwrap();
            let ended = stored.iter().find(|s| s.id == done.id).unwrap();
            assert_eq!((ended.status, &ended.report), (ShardStatus::Done, &report));

            // Once the job no longer runs, its shards are neither claimed nor
            // renewed.
            let current = f.db.storage(id).await.unwrap().unwrap().sync;
            let failed = SyncState { status: SyncStatus::Failed, ..current.clone() };
            assert!(f.db.update_sync(id, &SyncGuard::of(&current), &failed).await.unwrap());
            let much_later = later + chrono::Duration::hours(1);
            assert!(f.db.claim_shard(None, much_later, much_later).await.unwrap().is_none());
            assert!(!f.db.report_shard(&again, ShardStatus::Running, &report, Some(much_later)).await.unwrap());
            f.db.remove_shards(id, "job-1").await.unwrap();
            assert!(f.db.job_shards(id, "job-1").await.unwrap().is_empty());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn claims_keep_each_organisation_below_its_cap() {
            let f = fixture().await;
            let org_b = f.db.ensure_organization("Org B").await.unwrap();
            let user_b = f.db.ensure_user("b@example.com", org_b).await.unwrap();
            let caller_b = Caller { user_id: user_b, organization_id: org_b };
            let project_b = f
                .db
                .create_project(
                    &caller_b,
                    NewProject {
                        title: "b".into(),
                        description: String::new(),
                        label_config: "<View></View>".into(),
                    },
                )
                .await
                .unwrap()
                .id;
            let queue = |project| {
                let db = f.db.clone();
                async move {
                    let id = storage(&db, project, StorageKind::Import).await;
                    let initial = db.storage(id).await.unwrap().unwrap().sync;
                    let state = SyncState {
                        status: SyncStatus::Queued,
                        last_sync_job: Some(format!("job-{id}")),
                        ..SyncState::default()
                    };
                    assert!(db.update_sync(id, &SyncGuard::of(&initial), &state).await.unwrap());
                    id
                }
            };
            // Organisation A queued four jobs before B queued two.
            let mut a = Vec::new();
            for _ in 0..4 {
                a.push(queue(f.project).await);
            }
            let mut b = Vec::new();
            for _ in 0..2 {
                b.push(queue(project_b).await);
            }
            let tenants = f.db.storage_tenants(&[a[0], b[0], 999_999]).await.unwrap();
            assert_eq!(tenants.len(), 2);
            assert_eq!(tenants[&a[0]], f.caller.organization_id);
            assert_eq!(tenants[&b[0]], org_b);

            let now = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
            let lease = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 37).unwrap();
            // Fewest running first, ties by id: A, B, A, B; then A is at its cap.
            let mut order = Vec::new();
            while let Some(storage) = f.db.claim_queued(&[], now, lease, Some(2)).await.unwrap() {
                order.push(storage.id);
            }
            assert_eq!(order, vec![a[0], b[0], a[1], b[1]]);

            // Eight claimers at once, cap 3: exactly one more of A's jobs.
            let mut handles = Vec::new();
            for _ in 0..8 {
                let db = f.db.clone();
                handles.push(tokio::spawn(async move {
                    let mut claimed = Vec::new();
                    while let Some(storage) = db.claim_queued(&[], now, lease, Some(3)).await.unwrap() {
                        claimed.push(storage.id);
                    }
                    claimed
                }));
            }
            let mut claimed = Vec::new();
            for handle in handles {
                claimed.extend(handle.await.unwrap());
            }
            assert_eq!(claimed, vec![a[2]]);
            let queued = f.db.storages_with_status(&[SyncStatus::Queued]).await.unwrap();
            assert_eq!(queued.iter().map(|s| s.id).collect::<Vec<_>>(), vec![a[3]]);
        }

        #[tokio::test]
        async fn unfinished_objects_are_not_counted_as_linked() {
            let f = fixture().await;
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let other = storage(&f.db, f.project, StorageKind::Import).await;
            f.db.begin_object(id, "big.jsonl").await.unwrap();
            f.db.begin_object(id, "big.jsonl").await.unwrap();
            f.db.begin_object(other, "small.json").await.unwrap();
            let batch = vec![
                file_task("big.jsonl", Some(0)),
                file_task("big.jsonl", Some(1)),
                file_task("small.json", None),
            ];
            assert_eq!(f.db.create_tasks(f.project, id, batch.to_vec()).await.unwrap(), 3);
            let keys = vec!["big.jsonl".to_string(), "small.json".to_string()];
            let linked = f.db.linked_keys(id, &keys).await.unwrap();
            assert_eq!(linked.len(), 1, "{linked:?}");
            assert_eq!(linked["small.json"], 1, "another storage's marker hides nothing here");

            f.db.finish_object(id, "big.jsonl").await.unwrap();
            f.db.finish_object(id, "big.jsonl").await.unwrap();
            let linked = f.db.linked_keys(id, &keys).await.unwrap();
            assert_eq!(linked["big.jsonl"], 2);
            assert_eq!(linked["small.json"], 1);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_setup_creates_one_organization_and_user() {
            let f = fixture().await;
            // Open connections first and start together, so the calls overlap.
            let mut warm = Vec::new();
            for _ in 0..8 {
                warm.push(f.db.pool().acquire().await.unwrap());
            }
            drop(warm);
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
            let mut handles = Vec::new();
            for _ in 0..8 {
                let (db, start) = (f.db.clone(), start.clone());
                handles.push(tokio::spawn(async move {
                    start.wait().await;
                    let org = db.ensure_organization("Shared").await.unwrap();
                    (org, db.ensure_user("shared@example.com", org).await.unwrap())
                }));
            }
            let mut created = Vec::new();
            for handle in handles {
                created.push(handle.await.unwrap());
            }
            created.dedup();
            assert_eq!(created.len(), 1, "{created:?}");
            let orgs =
                number(&f.db, "SELECT COUNT(*) FROM organizations WHERE title = 'Shared'", &[]).await;
            assert_eq!(orgs, 1);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_annotations_of_one_task_are_all_counted() {
            let f = fixture().await;
            let task =
                f.db.import_tasks(
                    f.project,
                    vec![parsed(json!({"text": "busy"}))],
                )
                .await
                .unwrap()[0];
            let mut handles = Vec::new();
            for n in 0..16 {
                let (db, caller) = (f.db.clone(), f.caller.clone());
                handles.push(tokio::spawn(async move {
                    let body = object(json!({"result": [], "was_cancelled": n % 2 == 1}));
                    db.create_annotation(&caller, task, &body).await.unwrap();
                }));
            }
            for handle in handles {
                handle.await.unwrap();
            }
            let record = f.db.task(task).await.unwrap().unwrap();
            assert_eq!(record.annotations.len(), 16);
            assert_eq!(
                (record.total_annotations, record.cancelled_annotations),
                (8, 8)
            );
            assert!(record.is_labeled);
            // The project row counted every one of them too.
            let counters = f.db.project(f.project).await.unwrap().unwrap().counters;
            assert_eq!(counters, recount(&f.db, f.project).await);
            assert_eq!(
                (counters.total_annotations_number, counters.skipped_annotations_number),
                (8, 8)
            );
        }

        /// Label Studio's definitions of the counters, counted from the
        /// tables (as migration 0003 backfills them).
        async fn recount(db: &$db, project: i64) -> ProjectCounters {
            let count = |sql: &'static str| async move {
                u64::try_from(number(db, sql, &[project]).await).unwrap()
            };
            ProjectCounters {
                task_number: count("SELECT COUNT(*) FROM tasks WHERE project_id = $1").await,
                finished_task_number: count(
                    "SELECT COUNT(*) FROM tasks WHERE project_id = $1 AND is_labeled",
                )
                .await,
                total_annotations_number: count(
                    "SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND NOT was_cancelled",
                )
                .await,
                total_predictions_number: count(
                    "SELECT COUNT(*) FROM predictions WHERE project_id = $1",
                )
                .await,
                num_tasks_with_annotations: count(
                    "SELECT COUNT(DISTINCT task_id) FROM annotations WHERE project_id = $1 \
                     AND NOT was_cancelled AND NOT ground_truth",
                )
                .await,
                useful_annotation_number: count(
                    "SELECT COUNT(*) FROM annotations WHERE project_id = $1 \
                     AND NOT was_cancelled AND NOT ground_truth",
                )
                .await,
                ground_truth_number: count(
                    "SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND ground_truth",
                )
                .await,
                skipped_annotations_number: count(
                    "SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND was_cancelled",
                )
                .await,
            }
        }

        #[tokio::test]
        async fn project_counters_follow_imports_syncs_and_annotations() {
            let f = fixture().await;
            let counters = |db: &$db| {
                let db = db.clone();
                let project = f.project;
                async move { db.project(project).await.unwrap().unwrap().counters }
            };
            assert_eq!(counters(&f.db).await, ProjectCounters::default());

            // Host import: a plain, a cancelled and a ground-truth annotation
            // on three tasks, two predictions, one bare task.
            let with = |annotation: Value, predictions: usize| ParsedTask {
                annotations: vec![annotation],
                predictions: (0..predictions)
                    .map(|_| json!({"result": [], "model_version": "m1"}))
                    .collect(),
                ..parsed(json!({"text": "x"}))
            };
            let imported = f
                .db
                .import_tasks(
                    f.project,
                    vec![
                        with(json!({"result": []}), 2),
                        with(json!({"result": [], "was_cancelled": true}), 0),
                        with(json!({"result": [], "ground_truth": true}), 0),
                        parsed(json!({"text": "bare"})),
                    ],
                )
                .await
                .unwrap();
            let expected = ProjectCounters {
                task_number: 4,
                finished_task_number: 2,
                total_annotations_number: 2,
                total_predictions_number: 2,
                num_tasks_with_annotations: 1,
                useful_annotation_number: 1,
                ground_truth_number: 1,
                skipped_annotations_number: 1,
            };
            assert_eq!(counters(&f.db).await, expected);

            // A storage sync adds two tasks, one with a file annotation.
            let storage = storage(&f.db, f.project, StorageKind::Import).await;
            let mut annotated = file_task("a.json", None);
            annotated.annotations = vec![json!({"result": []})];
            let created = f
                .db
                .create_tasks(f.project, storage, vec![annotated, file_task("b.json", None)])
                .await
                .unwrap();
            assert_eq!(created, 2);
            // Already linked: nothing created, nothing counted.
            f.db.create_tasks(f.project, storage, vec![file_task("b.json", None)])
                .await
                .unwrap();
            let expected = ProjectCounters {
                task_number: 6,
                finished_task_number: 3,
                total_annotations_number: 3,
                num_tasks_with_annotations: 2,
                useful_annotation_number: 2,
                ..expected
            };
            assert_eq!(counters(&f.db).await, expected);

            // Annotating the bare task finishes it.
            let bare = imported[3];
            let annotation = f
                .db
                .create_annotation(&f.caller, bare, &object(json!({"result": []})))
                .await
                .unwrap();
            let id = annotation["id"].as_i64().unwrap();
            let expected = ProjectCounters {
                finished_task_number: 4,
                total_annotations_number: 4,
                num_tasks_with_annotations: 3,
                useful_annotation_number: 3,
                ..expected
            };
            assert_eq!(counters(&f.db).await, expected);

            // Cancelling it: skipped, and the task is no longer finished.
            f.db.update_annotation(&f.caller, id, &object(json!({"was_cancelled": true})))
                .await
                .unwrap()
                .unwrap();
            let cancelled = ProjectCounters {
                finished_task_number: 3,
                total_annotations_number: 3,
                num_tasks_with_annotations: 2,
                useful_annotation_number: 2,
                skipped_annotations_number: 2,
                ..expected
            };
            assert_eq!(counters(&f.db).await, cancelled);

            // Back, and marked ground truth: finished again, not useful.
            f.db.update_annotation(
                &f.caller,
                id,
                &object(json!({"was_cancelled": false, "ground_truth": true})),
            )
            .await
            .unwrap()
            .unwrap();
            let truth = ProjectCounters {
                finished_task_number: 4,
                total_annotations_number: 4,
                ground_truth_number: 2,
                skipped_annotations_number: 1,
                ..cancelled
            };
            assert_eq!(counters(&f.db).await, truth);
            // An update that changes no flag changes no counter.
            f.db.update_annotation(&f.caller, id, &object(json!({"result": []})))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(counters(&f.db).await, truth);

            // Deleting it and the imported cancelled one.
            f.db.delete_annotation(id).await.unwrap().unwrap();
            let skipped = f.db.task(imported[1]).await.unwrap().unwrap().annotations[0]["id"]
                .as_i64()
                .unwrap();
            f.db.delete_annotation(skipped).await.unwrap().unwrap();
            let deleted = ProjectCounters {
                finished_task_number: 3,
                total_annotations_number: 3,
                ground_truth_number: 1,
                skipped_annotations_number: 0,
                ..truth
            };
            assert_eq!(counters(&f.db).await, deleted);
            assert_eq!(deleted, recount(&f.db, f.project).await);

            // The task list's totals are the row's.
            let page = f.db.tasks(f.project, 1, 1).await.unwrap();
            assert_eq!(
                (page.total, page.total_annotations, page.total_predictions),
                (6, 3, 2)
            );
        }

        #[tokio::test]
        async fn queue_counts_the_callers_tasks() {
            let f = fixture().await;
            let ids = f
                .db
                .import_tasks(f.project, (0..5).map(|i| parsed(json!({"n": i}))).collect())
                .await
                .unwrap();
            let other = f.db.ensure_user("other@example.com", f.caller.organization_id).await.unwrap();
            let other = Caller { user_id: other, ..f.caller.clone() };
            let body = |cancelled: bool| object(json!({"result": [], "was_cancelled": cancelled}));
            // Caller: one done, one skipped. Other: finishes a third task.
            f.db.create_annotation(&f.caller, ids[0], &body(false)).await.unwrap();
            f.db.create_annotation(&f.caller, ids[1], &body(true)).await.unwrap();
            f.db.create_annotation(&other, ids[2], &body(false)).await.unwrap();
            // Label Studio's queue: unfinished tasks the user did not
            // annotate (3 and 4 for the caller), plus the tasks the user
            // annotated, skipped or not (0 and 1).
            let queue = f.db.queue(f.project, f.caller.user_id).await.unwrap();
            assert_eq!((queue.total, queue.done), (4, 2));
            let queue = f.db.queue(f.project, other.user_id).await.unwrap();
            assert_eq!((queue.total, queue.done), (4, 1));
            let nobody = f.db.queue(f.project, 9999).await.unwrap();
            assert_eq!((nobody.total, nobody.done), (3, 0));
        }

        #[tokio::test]
        async fn projects_are_listed_newest_first_per_organisation() {
            let f = fixture().await;
            let mut ids = vec![f.project];
            for title in ["b", "c"] {
                let project = NewProject { title: title.into(), ..NewProject::default() };
                ids.push(f.db.create_project(&f.caller, project).await.unwrap().id);
            }
            let org_b = f.db.ensure_organization("Org B").await.unwrap();
            let outsider = f.db.ensure_user("b@example.com", org_b).await.unwrap();
            let outsider = Caller { user_id: outsider, organization_id: org_b };
            f.db.create_project(&outsider, NewProject::default()).await.unwrap();

            let first = f.db.projects(f.caller.organization_id, 1, 2).await.unwrap();
            assert_eq!(first.count, 3);
            assert_eq!(
                first.projects.iter().map(|p| p.id).collect::<Vec<_>>(),
                [ids[2], ids[1]]
            );
            let second = f.db.projects(f.caller.organization_id, 2, 2).await.unwrap();
            assert_eq!(second.projects.iter().map(|p| p.id).collect::<Vec<_>>(), [ids[0]]);
            assert_eq!(second.projects[0].created_by.email, "admin@example.com");
            assert_eq!(f.db.projects(org_b, 1, 10).await.unwrap().count, 1);

            let user = f.db.user(f.caller.user_id).await.unwrap().unwrap();
            assert_eq!(
                (user.email.as_str(), user.organization),
                ("admin@example.com", f.caller.organization_id)
            );
            assert!(f.db.user(9999).await.unwrap().is_none());
        }

        #[tokio::test]
        async fn webhook_events_are_recorded_with_their_change_and_delivered_in_order() {
            let f = fixture().await;
            let fields = |actions: Vec<Action>, all: bool| WebhookFields {
                project: Some(f.project),
                url: "https://hooks.example.com/in".into(),
                send_payload: true,
                send_for_all_actions: all,
                headers: object(json!({"X-Team": "a"})),
                is_active: true,
                actions,
                secret: Some("s".into()),
            };
            let all = f.db.insert_webhook(f.caller.organization_id, fields(vec![], true)).await.unwrap();
            let deletions = f
                .db
                .insert_webhook(f.caller.organization_id, fields(vec![Action::TasksDeleted], false))
                .await
                .unwrap();
            assert_eq!(deletions.actions, [Action::TasksDeleted]);
            assert_eq!(
                f.db.webhooks(f.caller.organization_id, WebhookScope::Project(f.project))
                    .await
                    .unwrap()
                    .len(),
                2
            );
            assert!(f
                .db
                .webhooks(f.caller.organization_id, WebhookScope::OrganizationOnly)
                .await
                .unwrap()
                .is_empty());

            // Two task imports: two TASKS_CREATED events, for `all` only.
            let first = f.db.import_tasks(f.project, vec![parsed(json!({"t": 1}))]).await.unwrap();
            let second = f.db.import_tasks(f.project, vec![parsed(json!({"t": 2}))]).await.unwrap();
            let now = Utc::now();
            let lease = now + chrono::Duration::seconds(30);
            let claimed = f.db.claim_deliveries(now, lease, 10, 1).await.unwrap();
            // One webhook's deliveries go in order: only the head is claimed.
            assert_eq!(claimed.len(), 1);
            let head = &claimed[0];
            assert_eq!((head.webhook.id, head.attempt), (all.id, 1));
            assert_eq!(head.event.action, Action::TasksCreated);
            assert_eq!(recorded::task_ids(&head.event.payload), first);
            // Held by its lease: a second claimer gets nothing.
            assert!(f.db.claim_deliveries(now, lease, 10, 1).await.unwrap().is_empty());

            // A failure: retried later, then again from the same head.
            let failed = Attempt { at: now, status: Some(500), error: Some("answered 500".into()) };
            let retry_at = now + chrono::Duration::seconds(5);
            assert!(f.db.record_attempts(&[(head.clone(), failed.clone(), Outcome::RetryAt(retry_at))], &[]).await.unwrap() == 1);
            assert_eq!(f.db.record_attempts(&[(head.clone(), failed.clone(), Outcome::Delivered)], &[]).await.unwrap(), 0, "the claim is gone");
            assert!(f.db.claim_deliveries(now, lease, 10, 1).await.unwrap().is_empty());
            let later = retry_at + chrono::Duration::milliseconds(1);
            let again = f.db.claim_deliveries(later, later + chrono::Duration::seconds(30), 10, 1).await.unwrap();
            assert_eq!((again.len(), again[0].id, again[0].attempt), (1, head.id, 2));
            let webhook = f.db.webhook(all.id).await.unwrap().unwrap();
            assert_eq!(webhook.delivery.last_status, Some(500));
            assert_eq!(webhook.delivery.pending, 2);
            assert_eq!(webhook.delivery.consecutive_failures, 1);

            let accepted = Attempt { at: later, status: Some(204), error: None };
            assert_eq!(f.db.record_attempts(&[(again[0].clone(), accepted.clone(), Outcome::Delivered)], &[]).await.unwrap(), 1);
            let next = f.db.claim_deliveries(later, later + chrono::Duration::seconds(30), 10, 1).await.unwrap();
            assert_eq!(recorded::task_ids(&next[0].event.payload), second);
            assert_eq!(f.db.record_attempts(&[(next[0].clone(), failed.clone(), Outcome::GivenUp)], &[]).await.unwrap(), 1);
            let webhook = f.db.webhook(all.id).await.unwrap().unwrap();
            assert_eq!(
                (webhook.delivery.delivered, webhook.delivery.failed, webhook.delivery.pending),
                (1, 1, 0)
            );
            assert_eq!(webhook.delivery.consecutive_failures, 1, "reset by the delivery between");
            assert_eq!(number(&f.db, "SELECT count(*) FROM webhook_events", &[]).await, 0);

            // A run: the head and the deliveries behind it, claimed together
            // in order; the part not tried is released as it was.
            for t in 4..7 {
                f.db.import_tasks(f.project, vec![parsed(json!({"t": t}))]).await.unwrap();
            }
            let now = Utc::now();
            let lease = now + chrono::Duration::seconds(30);
            let run = f.db.claim_deliveries(now, lease, 10, 50).await.unwrap();
            assert_eq!(run.len(), 3);
            assert!(run.windows(2).all(|w| w[0].id < w[1].id));
            assert!(f.db.claim_deliveries(now, lease, 10, 50).await.unwrap().is_empty(), "one claim per webhook");
            let recorded = f
                .db
                .record_attempts(&[(run[0].clone(), accepted.clone(), Outcome::Delivered)], &run[1..])
                .await
                .unwrap();
            assert_eq!(recorded, 1);
            let rest = f.db.claim_deliveries(now, lease, 10, 50).await.unwrap();
            assert_eq!(rest.iter().map(|d| (d.id, d.attempt)).collect::<Vec<_>>(),
                       vec![(run[1].id, 1), (run[2].id, 1)], "released untried, attempts unchanged");
            f.db.record_attempts(&[], &rest).await.unwrap();
            let webhook = f.db.webhook(all.id).await.unwrap().unwrap();

            // Switched off: nothing is recorded for it; deleted: gone.
            let mut off = WebhookFields::from(&webhook);
            off.is_active = false;
            f.db.update_webhook(all.id, off).await.unwrap().unwrap();
            f.db.import_tasks(f.project, vec![parsed(json!({"t": 3}))]).await.unwrap();
            assert_eq!(number(&f.db, "SELECT count(*) FROM webhook_deliveries", &[]).await, 0);
            assert!(f.db.delete_webhook(deletions.id).await.unwrap());
            assert!(!f.db.delete_webhook(deletions.id).await.unwrap());
        }

        #[tokio::test]
        async fn a_sync_status_move_records_its_event_in_the_same_write() {
            let f = fixture().await;
            let webhook = WebhookFields {
                project: Some(f.project),
                url: "https://hooks.example.com/in".into(),
                send_payload: true,
                send_for_all_actions: false,
                headers: Map::new(),
                is_active: true,
                actions: vec![Action::StorageSyncStarted, Action::StorageSyncCompleted],
                secret: None,
            };
            f.db.insert_webhook(f.caller.organization_id, webhook).await.unwrap();
            let id = storage(&f.db, f.project, StorageKind::Import).await;
            let mut state = SyncState { status: SyncStatus::Queued, last_sync_job: Some("j".into()), ..SyncState::default() };
            assert!(f.db.update_sync(id, &SyncGuard::of(&SyncState::default()), &state).await.unwrap());
            let now = Utc::now();
            let claimed = f.db.claim_queued(&[], now, now + chrono::Duration::seconds(30), None).await.unwrap().unwrap();
            state = claimed.sync.clone();
            let mut done = state.clone();
            done.status = SyncStatus::Completed;
            done.last_sync_count = Some(7);
            // A stale guard writes nothing and records nothing.
            assert!(!f.db.update_sync(id, &SyncGuard::of(&done), &done).await.unwrap());
            assert!(f.db.update_sync(id, &SyncGuard::of(&state), &done).await.unwrap());
            let events: Vec<String> = sqlx::query_scalar("SELECT action FROM webhook_events ORDER BY id")
                .fetch_all(f.db.pool())
                .await
                .unwrap();
            assert_eq!(events, ["STORAGE_SYNC_STARTED", "STORAGE_SYNC_COMPLETED"]);
            let payload: String = sqlx::query_scalar("SELECT payload FROM webhook_events ORDER BY id DESC LIMIT 1")
                .fetch_one(f.db.pool())
                .await
                .unwrap();
            let payload: Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(payload["storage"]["id"], json!(id));
            assert_eq!(payload["storage"]["status"], json!("completed"));
            assert_eq!(payload["storage"]["last_sync_count"], json!(7));

            // The claims of a process that died are released at its restart.
            let now = Utc::now();
            let lease = now + chrono::Duration::seconds(30);
            let claimed = f.db.claim_deliveries(now, lease, 10, 1).await.unwrap();
            assert!(f.db.claim_deliveries(now, lease, 10, 1).await.unwrap().is_empty());
            f.db.release_claims().await.unwrap();
            let again = f.db.claim_deliveries(now, lease, 10, 1).await.unwrap();
            assert_eq!((again[0].id, again[0].attempt), (claimed[0].id, 2));
        }

        #[tokio::test]
        async fn on_save_exports_are_queued_with_the_annotation_and_go_in_order() {
            let f = fixture().await;
            let export = storage(&f.db, f.project, StorageKind::Export).await;
            let task = f.db.import_tasks(f.project, vec![parsed(json!({"t": 1}))]).await.unwrap()[0];
            let body = object(json!({"result": []}));
            let annotation = f.db.create_annotation(&f.caller, task, &body).await.unwrap();
            let id = annotation["id"].as_i64().unwrap();
            // A webhook's tasks: the same rows, without their annotations.
            let whole = f.db.tasks_by_id(&[task]).await.unwrap();
            let bare = f.db.bare_tasks(&[task, task + 1_000]).await.unwrap();
            assert_eq!((whole.len(), whole[0].annotations.len(), bare.len()), (1, 1, 1));
            assert!(bare[0].annotations.is_empty() && bare[0].predictions.is_empty());
            assert_eq!((&bare[0].data, bare[0].total_annotations), (&whole[0].data, 1));
            f.db.update_annotation(&f.caller, id, &body).await.unwrap().unwrap();
            f.db.delete_annotation(id).await.unwrap().unwrap();
            let fresh = Utc::now();
            assert!(
                f.db.claim_exports(fresh, fresh + chrono::Duration::seconds(30), 10, None).await.unwrap().is_empty(),
                "deliveries never tried are left to their request first"
            );
            // Past the grace the request that queued them has to try them first.
            let now = Utc::now() + chrono::Duration::seconds(3);
            let lease = now + chrono::Duration::seconds(30);
            let claimed = f.db.claim_exports(now, lease, 10, None).await.unwrap();
            assert_eq!(claimed.len(), 1, "one annotation's exports go one at a time");
            assert_eq!((claimed[0].storage, claimed[0].annotation, claimed[0].deleted), (export, id, false));
            assert!(f.db.claim_exports(now, lease, 10, Some(id)).await.unwrap().is_empty());
            let retry = ExportOutcome::RetryAt(now, "folder missing".into());
            assert!(f.db.record_export(&claimed[0], &retry).await.unwrap());
            let backlog = f.db.export_backlog(export).await.unwrap();
            assert_eq!(backlog.pending, 3);
            assert_eq!(backlog.failed, [id]);
            assert_eq!(backlog.last_error.as_deref(), Some("folder missing"));

            let again = f.db.claim_exports(now, lease, 10, Some(id)).await.unwrap();
            assert_eq!((again[0].id, again[0].attempt), (claimed[0].id, 2));
            f.db.release_export_claims().await.unwrap();
            let again = f.db.claim_exports(now, lease, 10, Some(id)).await.unwrap();
            assert_eq!((again[0].id, again[0].attempt), (claimed[0].id, 3), "released");
            assert!(f.db.record_export(&again[0], &ExportOutcome::Done).await.unwrap());
            assert!(!f.db.record_export(&again[0], &ExportOutcome::Done).await.unwrap());
            let update = f.db.claim_exports(now, lease, 10, None).await.unwrap();
            assert!(f.db.record_export(&update[0], &ExportOutcome::GivenUp("gone".into())).await.unwrap());
            // Given up: no longer blocks the deletion behind it.
            let deletion = f.db.claim_exports(now, lease, 10, None).await.unwrap();
            assert!(deletion[0].deleted);
            assert!(f.db.record_export(&deletion[0], &ExportOutcome::Done).await.unwrap());
            let backlog = f.db.export_backlog(export).await.unwrap();
            assert_eq!((backlog.pending, backlog.failed.clone()), (0, vec![id]));
            // An export sync started now wrote the saved annotation; a
            // later save and a deletion are still to be done.
            let synced = Utc::now();
            f.db.create_annotation(&f.caller, task, &body).await.unwrap();
            let later = f.db.create_annotation(&f.caller, task, &body).await.unwrap();
            f.db.delete_annotation(later["id"].as_i64().unwrap()).await.unwrap().unwrap();
            f.db.forget_written(export, synced).await.unwrap();
            assert_eq!(f.db.export_backlog(export).await.unwrap().failed, Vec::<i64>::new());
            f.db.forget_written(export, Utc::now()).await.unwrap();
            let left = f.db.claim_exports(Utc::now() + chrono::Duration::seconds(3), lease + chrono::Duration::seconds(3), 10, None).await.unwrap();
            assert_eq!(left.len(), 1);
            assert!(left[0].deleted, "deletions stay: a sync does not delete");
        }
        }
    };
}

repository_tests!(sqlite, SqliteDatabase, open_sqlite());
repository_tests!(postgres, PostgresDatabase, open_postgres());

#[tokio::test]
async fn connect_accepts_urls() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("url.db").display());
    let db = SqliteDatabase::connect(&url).await.unwrap();
    let org = db.ensure_organization("o").await.unwrap();
    db.close().await;
    // Reopening applies no migration twice and keeps the data.
    let again = SqliteDatabase::connect(&url).await.unwrap();
    assert_eq!(again.ensure_organization("o").await.unwrap(), org);

    let memory = SqliteDatabase::connect("sqlite::memory:").await.unwrap();
    let org = memory.ensure_organization("m").await.unwrap();
    let user = memory.ensure_user("m@example.com", org).await.unwrap();
    memory.set_user_token(user, "t").await.unwrap();
    assert!(memory.authenticate("t").await.unwrap().is_some());

    let err = SqliteDatabase::connect("postgres://user:hunter2@localhost/x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Migration 0004 rebuilds SQLite's tables with AUTOINCREMENT: a database
/// made by 0001-0003 keeps its rows, ids, indexes and cascades, and an id
/// deleted before the upgrade is not handed out again after it.
#[tokio::test]
async fn sqlite_0004_keeps_the_data_and_stops_reusing_ids() {
    let dir = TempDir::new().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() < "0004" {
            std::fs::copy(&path, migrations.join(&name)).unwrap();
        }
    }
    let file = dir.path().join("old.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(migrations.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let now = "2026-01-01T00:00:00.000000Z";
    for sql in [
        "INSERT INTO organizations (id, title, created_at) VALUES (1, 'o', '{now}')",
        "INSERT INTO users (id, email, organization_id, created_at) VALUES (1, 'u', 1, '{now}')",
        "INSERT INTO projects (id, organization_id, created_by, created_at, task_number) \
         VALUES (1, 1, 1, '{now}', 2)",
        "INSERT INTO tasks (id, project_id, inner_id, data, created_at, updated_at) \
         VALUES (1, 1, 1, '{}', '{now}', '{now}'), (2, 1, 2, '{}', '{now}', '{now}')",
        "INSERT INTO annotations (id, task_id, project_id, completed_by, created_at, updated_at) \
         VALUES (7, 1, 1, 1, '{now}', '{now}'), (8, 2, 1, 1, '{now}', '{now}')",
        "INSERT INTO storages (id, kind, type, project_id, created_at) \
         VALUES (5, 'export', 's3', 1, '{now}')",
        "INSERT INTO storage_links (storage_id, task_id, key, created_at) \
         VALUES (5, 2, 'k', '{now}')",
        "INSERT INTO unfinished_objects (storage_id, key) VALUES (5, 'k')",
        // The newest annotation, deleted before the upgrade: its id is
        // unknown to the rebuilt table, which starts after the largest id
        // it holds.
        "DELETE FROM annotations WHERE id = 8",
    ] {
        sqlx::query(&sql.replace("{now}", now))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let db = SqliteDatabase::open(&file).await.unwrap();
    let pool = db.pool().clone();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT COUNT(*) FROM _sqlx_migrations").await, 7);
    assert_eq!(
        count("SELECT COUNT(*) FROM storage_links WHERE row_group IS NULL").await,
        1,
        "0005: links of other files have no row group"
    );
    assert_eq!(
        count("SELECT task_number FROM projects WHERE id = 1").await,
        2
    );
    assert_eq!(count("SELECT COUNT(*) FROM tasks").await, 2);
    assert_eq!(count("SELECT id FROM annotations").await, 7);
    assert_eq!(count("SELECT COUNT(*) FROM storage_links").await, 1);
    let indexes = count(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN \
         ('projects_organization', 'projects_organization_newest', 'tasks_project_inner', \
          'annotations_task', 'annotations_project', 'annotations_project_author', \
          'predictions_task', 'storages_project_kind', 'storages_status', \
          'storage_links_dedupe', 'storage_links_task')",
    )
    .await;
    assert_eq!(indexes, 11);
    let old_names =
        count("SELECT COUNT(*) FROM sqlite_master WHERE sql LIKE '%\\_old%' ESCAPE '\\'").await;
    assert_eq!(old_names, 0, "no table refers to a renamed copy");
    assert_eq!(
        count("SELECT COUNT(*) FROM pragma_foreign_key_check").await,
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM pragma_foreign_keys WHERE foreign_keys").await,
        1
    );

    // The cascades still hold: deleting the storage drops its links and its
    // unfinished objects; deleting task 1 drops its annotation.
    assert!(db.delete_storage(5).await.unwrap());
    assert_eq!(count("SELECT COUNT(*) FROM storage_links").await, 0);
    assert_eq!(count("SELECT COUNT(*) FROM unfinished_objects").await, 0);
    sqlx::query("DELETE FROM tasks WHERE id = 1")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(count("SELECT COUNT(*) FROM annotations").await, 0);

    // New rows get new ids.
    let caller = Caller {
        user_id: 1,
        organization_id: 1,
    };
    let id = db
        .create_annotation(&caller, 2, &object(json!({"result": []})))
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(id, 8, "follows the largest id the upgrade saw (7)");
    db.delete_annotation(id).await.unwrap().unwrap();
    let id = db
        .create_annotation(&caller, 2, &object(json!({"result": []})))
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(id, 9);
}

#[tokio::test]
async fn postgres_connect_checks_urls_and_migrates_once() {
    let err = PostgresDatabase::connect("sqlite://x.db")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let err = PostgresDatabase::connect("postgres://user:hunter2@[::1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let url = storage_testing::postgres::fresh_database("connect").await;
    let db = PostgresDatabase::connect(&url).await.unwrap();
    let org = db.ensure_organization("o").await.unwrap();
    db.close().await;
    // Connecting again applies no migration twice and keeps the data.
    let again = PostgresDatabase::connect(&url).await.unwrap();
    assert_eq!(again.ensure_organization("o").await.unwrap(), org);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(again.pool())
        .await
        .unwrap();
    assert_eq!(
        applied, 8,
        "0001_init, 0002_unfinished_objects, 0003_project_counters, 0004_link_row_group, \
         0005_link_key_order, 0006_webhooks, 0007_listing_shards and \
         0008_references_checked_per_statement"
    );
}

#[tokio::test]
async fn database_connect_chooses_the_engine_by_url() {
    let dir = TempDir::new().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("any.db").display());
    let postgres = storage_testing::postgres::fresh_database("any").await;
    for (url, engine, exclusive) in [(sqlite, "sqlite", true), (postgres, "postgres", false)] {
        let db = Database::connect(&url).await.unwrap();
        assert_eq!((db.engine(), db.exclusive()), (engine, exclusive));
        let org = db.ensure_organization("o").await.unwrap();
        let user = db.ensure_user("u@example.com", org).await.unwrap();
        db.set_user_token(user, "token-1").await.unwrap();
        let caller = db
            .authenticator()
            .authenticate("token-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(caller.user_id, user, "{engine}");
        let project = db
            .host()
            .create_project(&caller, NewProject::default())
            .await
            .unwrap()
            .id;
        assert!(db.access().project_visible(&caller, project).await.unwrap());
        let id = storage(db.storages().as_ref(), project, StorageKind::Import).await;
        assert_eq!(
            db.tasks()
                .create_tasks(project, id, vec![file_task("a.jpg", None)])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            db.annotations().count_annotations(project).await.unwrap(),
            0
        );
        db.close().await;
    }

    let err = Database::connect("mysql://user:hunter2@localhost/x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

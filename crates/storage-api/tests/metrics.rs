//! `GET /metrics` of a server that has run nothing yet: every family is
//! declared (`# HELP`, `# TYPE`) and every series whose labels are known
//! (each storage type and kind, each final status) is there at 0, so
//! dashboards and `rate()` see a sync's first increase.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use storage_api::{router, ApiState, MetricsAccess};
use storage_core::{Backends, RunnerConfig, SyncService};
use storage_db::SqliteDatabase;
use storage_localfiles::{LocalFiles, LocalFilesBackend};
use storage_s3::{S3Backend, S3Options};
use tower::ServiceExt;

/// Every family with its OpenMetrics type.
const FAMILIES: [(&str, &str); 16] = [
    ("storage_syncs_started", "counter"),
    ("storage_syncs_finished", "counter"),
    ("storage_sync_duration_seconds", "histogram"),
    ("storage_sync_resumes", "counter"),
    ("storage_sync_lease_losses", "counter"),
    ("storage_sync_interruptions", "counter"),
    ("storage_import_objects_listed", "counter"),
    ("storage_import_tasks_created", "counter"),
    ("storage_import_tasks_existed", "counter"),
    ("storage_import_files_failed", "counter"),
    ("storage_export_annotations_written", "counter"),
    ("storage_export_annotations_failed", "counter"),
    ("storage_events", "counter"),
    ("storage_syncs_running", "gauge"),
    ("storage_syncs_queued", "gauge"),
    ("storage_syncs_in_progress", "gauge"),
];

/// A state over a fresh SQLite file with the S3 and local-files backends,
/// `/metrics` public; nothing started.
async fn fresh_state(dir: &tempfile::TempDir) -> ApiState {
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let db = Arc::new(
        SqliteDatabase::open(&dir.path().join("storage.sqlite3"))
            .await
            .unwrap(),
    );
    let local = LocalFiles::new(&root).unwrap();
    let backends = Backends::new()
        .with(Arc::new(S3Backend::new(S3Options::new())))
        .with(Arc::new(LocalFilesBackend::new(local)));
    // Not started: nothing runs, as on a server before its first sync.
    let sync = SyncService::with_database(db.clone(), backends, RunnerConfig::default());
    ApiState::new(sync, db.clone(), db).with_metrics(MetricsAccess::Public)
}

async fn scrape(app: axum::Router) -> axum::response::Response {
    app.oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_fresh_server_shows_every_family_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let response = scrape(router(fresh_state(&dir).await)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let has = |line: &str| lines.contains(&line);

    for (family, kind) in FAMILIES {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("# HELP {family} "))),
            "no HELP of {family} in:\n{text}"
        );
        assert!(
            has(&format!("# TYPE {family} {kind}")),
            "no TYPE of {family} in:\n{text}"
        );
    }
    for storage_type in ["s3", "localfiles"] {
        for kind in ["import", "export"] {
            let labels = format!(r#"kind="{kind}",storage_type="{storage_type}""#);
            for gauge in [
                "storage_syncs_running",
                "storage_syncs_queued",
                "storage_syncs_in_progress",
            ] {
                let line = format!("{gauge}{{{labels}}} 0");
                assert!(has(&line), "missing {line:?} in:\n{text}");
            }
            for counter in [
                "storage_syncs_started",
                "storage_sync_resumes",
                "storage_sync_lease_losses",
                "storage_sync_interruptions",
            ] {
                let line = format!("{counter}_total{{{labels}}} 0");
                assert!(has(&line), "missing {line:?} in:\n{text}");
            }
            for status in ["completed", "completed_with_errors", "failed"] {
                let line =
                    format!(r#"storage_syncs_finished_total{{{labels},status="{status}"}} 0"#);
                assert!(has(&line), "missing {line:?} in:\n{text}");
            }
            let line = format!("storage_sync_duration_seconds_count{{{labels}}} 0");
            assert!(has(&line), "missing {line:?} in:\n{text}");
        }
        for counter in [
            "storage_import_objects_listed",
            "storage_import_tasks_created",
            "storage_import_tasks_existed",
            "storage_import_files_failed",
            "storage_export_annotations_written",
            "storage_export_annotations_failed",
        ] {
            let line = format!(r#"{counter}_total{{storage_type="{storage_type}"}} 0"#);
            assert!(has(&line), "missing {line:?} in:\n{text}");
        }
        for outcome in ["received", "applied", "ignored", "failed", "refused"] {
            let line = format!(
                r#"storage_events_total{{storage_type="{storage_type}",outcome="{outcome}"}} 0"#
            );
            assert!(has(&line), "missing {line:?} in:\n{text}");
        }
    }
    // Only the "initialized"/"queued"/"in_progress" statuses never finish a sync.
    assert!(!text.contains(r#"status="queued""#), "{text}");
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
}

/// Configuring a state that a router already holds copies it: no panic, and
/// the router keeps the configuration it was built with.
#[tokio::test]
async fn configuring_a_shared_state_copies_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = fresh_state(&dir).await;
    let public: axum::Router = router(state.clone());
    let disabled: axum::Router = router(
        state
            .clone()
            .with_metrics(MetricsAccess::Disabled)
            .with_url_base("http://example.test/")
            .with_max_body_bytes(1024),
    );
    assert_eq!(scrape(public).await.status(), StatusCode::OK);
    assert_eq!(scrape(disabled).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        scrape(router(state)).await.status(),
        StatusCode::OK,
        "the original state is unchanged"
    );
}

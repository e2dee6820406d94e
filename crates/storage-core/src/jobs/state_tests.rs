use chrono::TimeZone;
use serde_json::Map;

use super::*;
use crate::export::ExportProgress;
use crate::persist::claimed_state;

const QUEUE_TIMEOUT: Duration = Duration::from_secs(3600);
const LEASE: Duration = Duration::from_secs(30);

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, second).unwrap()
}

/// A state in `status` with `lease_until`, job `job-1` and `meta`.
fn state(status: SyncStatus, lease_until: Option<DateTime<Utc>>, meta: Value) -> SyncState {
    SyncState {
        status,
        last_sync_job: Some("job-1".into()),
        meta: meta.as_object().cloned().unwrap(),
        lease_until,
        ..SyncState::default()
    }
}

/// A job claimed at second 0 whose earlier attempts created `earlier`
/// tasks.
fn running(earlier: Option<i64>) -> SyncState {
    let mut queued = queued(&SyncState::default(), at(0), QUEUE_TIMEOUT);
    queued.last_sync_count = earlier;
    claimed_state(&queued, at(0), at(0) + LEASE)
}

fn import(objects: u64, created: u64, existed: u64, failed_files: u64) -> Progress {
    Progress::Import(ImportProgress {
        objects,
        created,
        existed,
        failed_files,
        ..Default::default()
    })
}

fn export(total: u64, written: u64, failed: u64) -> ExportProgress {
    ExportProgress {
        total,
        written,
        failed,
    }
}

/// How `claimed` ends at second 8, after 8 s, with `last` reported.
fn end(claimed: &SyncState, ending: Ending, last: Option<&Progress>) -> SyncState {
    ended(claimed, ending, last, at(8), Duration::from_secs(8))
}

/// An import that ran to its end with `progress` and rejected `files`.
fn imported(progress: Progress, files: &[&str]) -> Ending {
    let Progress::Import(progress) = progress else {
        panic!("an import's progress")
    };
    Ending::Imported(ImportOutcome {
        progress,
        file_errors: files.iter().map(|line| line.to_string()).collect(),
        bad_tasks: 7,
    })
}

/// Every transition a test sees is one the status machine allows.
fn assert_move(from: &SyncState, to: &SyncState) {
    from.status.check_move(to.status).unwrap();
}

#[test]
fn queuing_counts_attempts_and_clears_the_previous_outcome() {
    let first = queued(&SyncState::default(), at(0), QUEUE_TIMEOUT);
    assert_move(&SyncState::default(), &first);
    assert_eq!(first.status, SyncStatus::Queued);
    assert_eq!(first.meta["attempts"], json!(1));
    assert_eq!(first.meta["time_queued"], meta_time(at(0)));
    assert_eq!(first.lease_until, Some(at(0) + QUEUE_TIMEOUT));
    assert_eq!(first.last_sync_job.as_ref().unwrap().len(), 36, "a UUID");

    let failed = SyncState {
        status: SyncStatus::Failed,
        last_sync: Some(at(5)),
        last_sync_count: Some(7),
        traceback: Some("boom".into()),
        ..state(
            SyncStatus::Failed,
            None,
            json!({"attempts": 2, "time_failure": "x", "tasks_existed": 3}),
        )
    };
    let again = queued(&failed, at(9), QUEUE_TIMEOUT);
    assert_move(&failed, &again);
    assert_eq!(again.status, SyncStatus::Queued);
    assert_eq!(again.last_sync, None);
    assert_eq!(again.last_sync_count, None);
    assert_eq!(again.traceback, None, "the old traceback is cleared");
    assert_ne!(again.last_sync_job, failed.last_sync_job, "a new job");
    assert_ne!(again.last_sync_job, first.last_sync_job);
    let mut meta = Map::new();
    meta.insert("attempts".into(), json!(3));
    meta.insert("time_queued".into(), meta_time(at(9)));
    assert_eq!(again.meta, meta, "only attempts and time_queued are kept");
}

#[test]
fn claiming_starts_the_lease_and_keeps_the_job() {
    let queued = queued(&SyncState::default(), at(0), QUEUE_TIMEOUT);
    let claimed = claimed_state(&queued, at(2), at(2) + LEASE);
    assert_move(&queued, &claimed);
    assert_eq!(claimed.status, SyncStatus::InProgress);
    assert_eq!(claimed.last_sync_job, queued.last_sync_job);
    assert_eq!(claimed.lease_until, Some(at(2) + LEASE));
    assert_eq!(claimed.meta["time_in_progress"], meta_time(at(2)));
    assert_eq!(claimed.meta["time_last_ping"], meta_time(at(2)));
    assert_eq!(claimed.meta["attempts"], json!(1));
}

#[test]
fn a_ping_writes_progress_and_renews_the_lease() {
    let claimed = running(None);
    let progress = import(10, 4, 6, 1);
    let pinged_once = pinged(
        claimed.clone(),
        Some(&progress),
        at(5),
        Duration::from_secs(5),
        LEASE,
    );
    assert_eq!(pinged_once.status, SyncStatus::InProgress);
    assert_eq!(pinged_once.last_sync_job, claimed.last_sync_job);
    assert_eq!(pinged_once.last_sync_count, Some(4));
    assert_eq!(pinged_once.meta["objects_listed"], json!(10));
    assert_eq!(pinged_once.meta["tasks_existed"], json!(6));
    assert_eq!(pinged_once.meta["files_failed"], json!(1));
    assert_eq!(pinged_once.meta["time_last_ping"], meta_time(at(5)));
    assert_eq!(pinged_once.meta["duration"], json!(5.0));
    assert_eq!(pinged_once.lease_until, Some(at(5) + LEASE));

    // No progress yet: the counts stay, the lease still moves.
    let pinged_twice = pinged(pinged_once, None, at(9), Duration::from_secs(9), LEASE);
    assert_eq!(pinged_twice.last_sync_count, Some(4));
    assert_eq!(pinged_twice.meta["time_last_ping"], meta_time(at(9)));
    assert_eq!(pinged_twice.lease_until, Some(at(9) + LEASE));

    let export = pinged(
        running(None),
        Some(&Progress::Export(export(9, 3, 1))),
        at(5),
        Duration::from_secs(5),
        LEASE,
    );
    assert_eq!(export.last_sync_count, Some(3));
    assert_eq!(export.meta["total_annotations"], json!(9));
    assert_eq!(export.meta["annotations_failed"], json!(1));
}

#[test]
fn an_import_run_to_its_end_completes() {
    let claimed = running(None);
    let outcome = imported(import(3, 2, 1, 0), &[]);
    let done = end(&claimed, outcome, None);
    assert_move(&claimed, &done);
    assert_eq!(done.status, SyncStatus::Completed);
    assert_eq!(done.last_sync, Some(at(8)));
    assert_eq!(done.last_sync_count, Some(2));
    assert_eq!(done.traceback, None);
    assert_eq!(done.lease_until, None);
    assert_eq!(done.meta["time_completed"], meta_time(at(8)));
    assert_eq!(done.meta["duration"], json!(8.0));
    assert_eq!(done.meta["tasks_existed"], json!(1));
    assert_eq!(done.meta["objects_listed"], json!(3));
    assert!(done.meta.get("tasks_failed_validation").is_none());
}

#[test]
fn an_import_with_rejected_files_completes_with_errors() {
    let claimed = running(None);
    let outcome = imported(import(3, 1, 0, 2), &["a.json: bad", "b.json: worse"]);
    let done = end(&claimed, outcome, None);
    assert_move(&claimed, &done);
    assert_eq!(done.status, SyncStatus::CompletedWithErrors);
    assert_eq!(
        done.traceback.as_deref(),
        Some("a.json: bad\nb.json: worse")
    );
    assert_eq!(
        done.meta["tasks_failed_validation"],
        json!(7),
        "bad tasks, not lines"
    );
    assert_eq!(done.meta["files_failed"], json!(2));
    assert_eq!(done.last_sync, Some(at(8)));
}

#[test]
fn a_resumed_import_counts_the_tasks_of_its_earlier_attempts() {
    // The first attempt created 5 tasks; this one finds them existing.
    let claimed = running(Some(5));
    let outcome = imported(import(8, 3, 5, 0), &[]);
    let done = end(&claimed, outcome, None);
    assert_eq!(done.last_sync_count, Some(8));
    assert_eq!(done.meta["tasks_existed"], json!(0));

    // The same while it runs, and for a run that stops early.
    let resumed = resumed_totals(import(8, 1, 6, 0), &claimed);
    assert_eq!(resumed, import(8, 6, 1, 0));
    let stopped = end(
        &claimed,
        Ending::Interrupted {
            queue_timeout: QUEUE_TIMEOUT,
        },
        Some(&import(8, 1, 6, 0)),
    );
    assert_eq!(stopped.last_sync_count, Some(6));
    // Exports are not resumed totals.
    let export = Progress::Export(export(4, 2, 0));
    assert_eq!(resumed_totals(export.clone(), &claimed), export);
}

#[test]
fn an_export_ends_by_how_many_writes_failed() {
    let claimed = running(None);
    let finish = |progress: ExportProgress, errors: Vec<String>| {
        end(
            &claimed,
            Ending::Exported(ExportOutcome { progress, errors }),
            None,
        )
    };

    let all = finish(export(3, 3, 0), Vec::new());
    assert_move(&claimed, &all);
    assert_eq!(all.status, SyncStatus::Completed);
    assert_eq!(all.last_sync_count, Some(3));
    assert_eq!(all.last_sync, Some(at(8)));
    assert_eq!(all.meta["time_completed"], meta_time(at(8)));
    assert_eq!(all.traceback, None);

    let some = finish(export(3, 2, 1), vec!["7: denied".into()]);
    assert_move(&claimed, &some);
    assert_eq!(some.status, SyncStatus::CompletedWithErrors);
    assert_eq!(
        some.traceback.as_deref(),
        Some("1 of 3 annotations could not be written:\n7: denied")
    );
    assert_eq!(some.last_sync, Some(at(8)));
    assert_eq!(some.meta["annotations_failed"], json!(1));

    let none = finish(
        export(2, 0, 2),
        vec!["1: denied".into(), "2: denied".into()],
    );
    assert_move(&claimed, &none);
    assert_eq!(none.status, SyncStatus::Failed);
    assert_eq!(
        none.traceback.as_deref(),
        Some("2 of 2 annotations could not be written:\n1: denied\n2: denied")
    );
    assert_eq!(none.last_sync, None, "a failed sync has no last_sync");
    assert_eq!(none.meta["time_failure"], meta_time(at(8)));
    assert!(none.meta.get("time_completed").is_none());
    assert_eq!(none.lease_until, None);
}

#[test]
fn an_error_fails_the_job_with_its_traceback_and_progress() {
    let claimed = running(None);
    let failed = end(
        &claimed,
        Ending::Failed {
            traceback: "listing failed\ncaused by: refused".into(),
        },
        Some(&import(4, 2, 0, 0)),
    );
    assert_move(&claimed, &failed);
    assert_eq!(failed.status, SyncStatus::Failed);
    assert_eq!(
        failed.traceback.as_deref(),
        Some("listing failed\ncaused by: refused")
    );
    assert_eq!(failed.meta["time_failure"], meta_time(at(8)));
    assert_eq!(failed.meta["duration"], json!(8.0));
    assert_eq!(failed.last_sync_count, Some(2), "the progress so far");
    assert_eq!(failed.last_sync, None);
    assert_eq!(failed.lease_until, None);
    assert_eq!(failed.last_sync_job, claimed.last_sync_job);
}

#[test]
fn shutdown_queues_the_job_again_with_its_progress() {
    let claimed = running(None);
    let interrupted = end(
        &claimed,
        Ending::Interrupted {
            queue_timeout: QUEUE_TIMEOUT,
        },
        Some(&import(4, 2, 0, 0)),
    );
    assert_move(&claimed, &interrupted);
    assert_eq!(interrupted.status, SyncStatus::Queued);
    assert_eq!(interrupted.last_sync_job, claimed.last_sync_job, "same job");
    assert_eq!(interrupted.lease_until, Some(at(8) + QUEUE_TIMEOUT));
    assert_eq!(interrupted.last_sync_count, Some(2));
    assert_eq!(interrupted.traceback, None);
    assert!(interrupted.meta.get("time_failure").is_none());
}

#[test]
fn a_running_job_with_a_live_lease_is_left_alone() {
    let live = state(SyncStatus::InProgress, Some(at(30)), json!({}));
    assert_eq!(recovered(&live, at(10), false, 3, QUEUE_TIMEOUT), None);
    let queued = state(SyncStatus::Queued, Some(at(30)), json!({}));
    assert_eq!(recovered(&queued, at(10), false, 3, QUEUE_TIMEOUT), None);
    assert_eq!(
        recovered(&queued, at(10), true, 3, QUEUE_TIMEOUT),
        None,
        "orphans_now concerns running jobs only"
    );
    for status in [
        SyncStatus::Initialized,
        SyncStatus::Completed,
        SyncStatus::CompletedWithErrors,
        SyncStatus::Failed,
    ] {
        let done = state(status, Some(at(0)), json!({}));
        assert_eq!(recovered(&done, at(10), true, 3, QUEUE_TIMEOUT), None);
    }
}

#[test]
fn a_running_job_whose_lease_expired_is_resumed() {
    let dead = state(SyncStatus::InProgress, Some(at(5)), json!({"attempts": 1}));
    let resumed = recovered(&dead, at(10), false, 3, QUEUE_TIMEOUT).unwrap();
    assert_move(&dead, &resumed);
    assert_eq!(resumed.status, SyncStatus::Queued);
    assert_eq!(resumed.last_sync_job, dead.last_sync_job, "same job");
    assert_eq!(resumed.meta["resumes"], json!(1));
    assert_eq!(resumed.meta["attempts"], json!(1));
    assert_eq!(resumed.lease_until, Some(at(10) + QUEUE_TIMEOUT));
    assert_eq!(resumed.traceback, None);

    // No lease at all counts as expired; a second resume counts on.
    let no_lease = state(SyncStatus::InProgress, None, json!({"resumes": 1}));
    let again = recovered(&no_lease, at(10), false, 3, QUEUE_TIMEOUT).unwrap();
    assert_eq!(again.meta["resumes"], json!(2));

    // At start-up of a single instance, a live lease is no one's.
    let orphan = state(SyncStatus::InProgress, Some(at(30)), json!({}));
    let taken = recovered(&orphan, at(10), true, 3, QUEUE_TIMEOUT).unwrap();
    assert_eq!(taken.status, SyncStatus::Queued);
    assert_eq!(taken.meta["resumes"], json!(1));
}

#[test]
fn a_job_resumed_too_often_fails() {
    let dead = state(SyncStatus::InProgress, Some(at(5)), json!({"resumes": 3}));
    let failed = recovered(&dead, at(10), false, 3, QUEUE_TIMEOUT).unwrap();
    assert_move(&dead, &failed);
    assert_eq!(failed.status, SyncStatus::Failed);
    assert_eq!(failed.lease_until, None);
    assert_eq!(failed.meta["time_failure"], meta_time(at(10)));
    assert_eq!(failed.meta["resumes"], json!(3));
    assert_eq!(
        failed.traceback.as_deref(),
        Some(
            "The sync job stopped without finishing: its worker stopped renewing its lease \
                 (the server process was probably killed or restarted). It was resumed 3 times \
                 and stopped again each time; start a new sync to try again."
        )
    );
    // With no resumes allowed, the first death fails the job.
    let first = state(SyncStatus::InProgress, Some(at(5)), json!({}));
    let failed = recovered(&first, at(10), false, 0, QUEUE_TIMEOUT).unwrap();
    assert_eq!(failed.status, SyncStatus::Failed);
    assert!(failed.traceback.unwrap().contains("It was resumed 0 times"));
}

#[test]
fn a_job_queued_too_long_fails() {
    let stale = state(SyncStatus::Queued, Some(at(5)), json!({"attempts": 1}));
    let failed = recovered(&stale, at(10), false, 3, Duration::from_secs(60)).unwrap();
    assert_move(&stale, &failed);
    assert_eq!(failed.status, SyncStatus::Failed);
    assert_eq!(failed.lease_until, None);
    assert_eq!(failed.meta["time_failure"], meta_time(at(10)));
    assert_eq!(
        failed.traceback.as_deref(),
        Some(
            "The sync job was not started within 60 s of being queued (no worker took it); \
                 start a new sync to try again."
        )
    );
}

#[test]
fn error_reports_list_new_causes_once() {
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }
    let err = Layer(
        "listing failed: timed out",
        Some(Box::new(Layer(
            "timed out",
            Some(Box::new(Layer("connection refused", None))),
        ))),
    );
    assert_eq!(
        error_report(&err),
        "listing failed: timed out\ncaused by: connection refused"
    );
}

#[test]
fn failing_on_save_exports_show_and_clear_on_the_storage() {
    let completed = state(SyncStatus::Completed, None, json!({"total": 3}));
    let failing = ExportBacklog {
        pending: 2,
        failed: vec![4, 9],
        last_error: Some("writing annotation 9: permission denied".into()),
    };
    let shown = with_export_backlog(&completed, &failing);
    assert_eq!(shown.status, SyncStatus::CompletedWithErrors);
    assert_eq!(shown.meta["annotations_failed"], json!(2));
    assert_eq!(shown.meta["annotations_failed_ids"], json!([4, 9]));
    assert_eq!(shown.meta["annotations_pending"], json!(2));
    assert_eq!(shown.meta["total"], json!(3));
    let traceback = shown.traceback.clone().unwrap();
    assert!(traceback.contains("annotation(s) 4, 9"), "{traceback}");
    assert!(traceback.contains("permission denied"), "{traceback}");

    let landed = with_export_backlog(&shown, &ExportBacklog::default());
    assert_eq!(landed.status, SyncStatus::Completed);
    assert_eq!(landed.traceback, None);
    assert_eq!(landed.meta["annotations_failed"], json!(0));
    assert!(!landed.meta.contains_key("annotations_failed_ids"));
    assert!(!landed.meta.contains_key(ON_SAVE_FAILING));
}

#[test]
fn on_save_exports_leave_other_outcomes_alone() {
    // A sync's own completed_with_errors is not cleared by exports landing.
    let own = state(SyncStatus::CompletedWithErrors, None, json!({}));
    let landed = with_export_backlog(&own, &ExportBacklog::default());
    assert_eq!(landed.status, SyncStatus::CompletedWithErrors);
    // A failed sync stays failed; a running one is not touched.
    let failing = ExportBacklog {
        pending: 1,
        failed: vec![1],
        last_error: None,
    };
    let failed = state(SyncStatus::Failed, None, json!({"annotations_failed": 3}));
    let shown = with_export_backlog(&failed, &failing);
    assert_eq!(shown.status, SyncStatus::Failed);
    assert_eq!(
        shown.meta["annotations_failed"],
        json!(3),
        "the sync's own count"
    );
    assert_eq!(shown.meta["annotations_failed_ids"], json!([1]));
    let running = state(SyncStatus::InProgress, Some(at(30)), json!({}));
    assert_eq!(with_export_backlog(&running, &failing), running);
}

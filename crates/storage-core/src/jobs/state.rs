//! The sync state a storage moves to at each step of a job, as pure
//! functions of the state it is in: no I/O, no clock (the time is an
//! argument), so every transition is tested here. The runner decides when a
//! step happens and writes its result with a compare-and-set.
//!
//! The steps: [`queued`] (a sync is requested), claimed
//! ([`crate::persist::claimed_state`], shared with the repositories that
//! claim in one query), [`pinged`] (progress and lease renewal while it
//! runs), [`ended`] (completed, completed with errors, failed, or
//! interrupted by shutdown), and [`recovered`] (the watchdog: a job whose
//! lease expired is resumed or, past the resume limit, failed; a job
//! queued too long is failed).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::export::ExportOutcome;
use crate::import::{ImportOutcome, ImportProgress, Progress};
use crate::model::meta_time;
use crate::persist::ExportBacklog;
use crate::{SyncState, SyncStatus};

/// The state a storage enters when a sync is queued: Label Studio resets
/// the previous outcome and counts attempts; unlike Label Studio the old
/// traceback is cleared too. The job must be claimed before
/// `now + queue_timeout`.
/// The `meta` key of a queued job whose request confirmed the deletions
/// the deletion guard held back (`POST …/sync` with
/// `{"confirm_deletions": true}`); a new job starts without it.
pub(crate) const CONFIRM_DELETIONS: &str = "confirm_deletions";

/// The `meta` key of a job the schedule queued (`sync_interval`).
pub(crate) const SCHEDULED: &str = "scheduled";

/// Whether the job of `state` applies deletions above the guard.
pub(crate) fn confirmed_deletions(state: &SyncState) -> bool {
    state
        .meta
        .get(CONFIRM_DELETIONS)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub(crate) fn queued(
    previous: &SyncState,
    now: DateTime<Utc>,
    queue_timeout: Duration,
) -> SyncState {
    let attempts = previous
        .meta
        .get("attempts")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    let mut meta = serde_json::Map::new();
    meta.insert("attempts".into(), json!(attempts));
    meta.insert("time_queued".into(), meta_time(now));
    // The event counters run across syncs.
    if let Some(events) = previous.meta.get(crate::events::EVENTS_META) {
        meta.insert(crate::events::EVENTS_META.into(), events.clone());
    }
    SyncState {
        status: SyncStatus::Queued,
        last_sync: None,
        last_sync_count: None,
        last_sync_job: Some(uuid::Uuid::new_v4().to_string()),
        traceback: None,
        meta,
        lease_until: Some(now + queue_timeout),
    }
}

/// The state a running job writes at each heartbeat: its progress so far,
/// the time of the ping, how long it has run, and a lease renewed until
/// `now + lease`.
pub(crate) fn pinged(
    mut state: SyncState,
    progress: Option<&Progress>,
    now: DateTime<Utc>,
    duration: Duration,
    lease: Duration,
) -> SyncState {
    apply_progress(&mut state, progress);
    state.meta.insert("time_last_ping".into(), meta_time(now));
    state
        .meta
        .insert("duration".into(), json!(duration.as_secs_f64()));
    state.lease_until = Some(now + lease);
    state
}

/// How a job's run ended (a run whose lease was lost writes nothing).
#[derive(Debug)]
pub(crate) enum Ending {
    /// Stopped at a batch boundary by shutdown: queued again, so it
    /// resumes at the next start, and must be claimed within
    /// `queue_timeout`.
    Interrupted {
        /// How long it may wait in the queue.
        queue_timeout: Duration,
    },
    /// Stopped by an error.
    Failed {
        /// The error and its causes ([`error_report`]).
        traceback: String,
    },
    /// An import that ran to its end.
    Imported(ImportOutcome),
    /// An export that ran to its end.
    Exported(ExportOutcome),
}

/// The state a job leaves when its run ends: `claimed` is the state it was
/// claimed in, `last` the last progress it reported (used when it did not
/// run to its end), `duration` how long it ran.
pub(crate) fn ended(
    claimed: &SyncState,
    ending: Ending,
    last: Option<&Progress>,
    now: DateTime<Utc>,
    duration: Duration,
) -> SyncState {
    let mut state = claimed.clone();
    state.lease_until = None;
    state
        .meta
        .insert("duration".into(), json!(duration.as_secs_f64()));
    let last = last.cloned().map(|p| resumed_totals(p, claimed));
    match ending {
        Ending::Interrupted { queue_timeout } => {
            state.status = SyncStatus::Queued;
            state.lease_until = Some(now + queue_timeout);
            apply_progress(&mut state, last.as_ref());
        }
        Ending::Failed { traceback } => {
            state.status = SyncStatus::Failed;
            state.traceback = Some(traceback);
            state.meta.insert("time_failure".into(), meta_time(now));
            apply_progress(&mut state, last.as_ref());
        }
        Ending::Imported(mut outcome) => {
            outcome.progress = resumed_import(outcome.progress, claimed);
            finish_import(&mut state, &outcome, now);
        }
        Ending::Exported(outcome) => finish_export(&mut state, &outcome, now),
    }
    state
}

/// What the watchdog does with a queued or running job that no worker of
/// this process runs, or `None` to leave it alone. A running job whose
/// lease expired (or any running job, with `orphans_now`) is queued again
/// to resume, at most `max_resumes` times, then failed; a queued job whose
/// lease expired (nobody claimed it within the queue timeout) is failed.
pub(crate) fn recovered(
    current: &SyncState,
    now: DateTime<Utc>,
    orphans_now: bool,
    max_resumes: u64,
    queue_timeout: Duration,
) -> Option<SyncState> {
    let expired = current.lease_until.is_none_or(|until| until < now);
    let mut state = current.clone();
    match current.status {
        SyncStatus::InProgress if expired || orphans_now => {
            let resumes = state
                .meta
                .get("resumes")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if resumes < max_resumes {
                state.status = SyncStatus::Queued;
                state.meta.insert("resumes".into(), json!(resumes + 1));
                state.lease_until = Some(now + queue_timeout);
            } else {
                state.status = SyncStatus::Failed;
                state.lease_until = None;
                state.meta.insert("time_failure".into(), meta_time(now));
                state.traceback = Some(format!(
                    "The sync job stopped without finishing: its worker stopped renewing its lease \
                     (the server process was probably killed or restarted). It was resumed {resumes} \
                     times and stopped again each time; start a new sync to try again."
                ));
            }
        }
        SyncStatus::Queued if expired => {
            state.status = SyncStatus::Failed;
            state.lease_until = None;
            state.meta.insert("time_failure".into(), meta_time(now));
            state.traceback = Some(format!(
                "The sync job was not started within {} s of being queued (no worker took it); \
                 start a new sync to try again.",
                queue_timeout.as_secs()
            ));
        }
        _ => return None,
    }
    Some(state)
}

/// A job resumed after an interruption keeps its job id and the count of
/// tasks its earlier attempts created (queuing a new job resets it): the
/// totals cover the whole job, and tasks created by the earlier attempts do
/// not count as already existing.
pub(crate) fn resumed_totals(progress: Progress, queued: &SyncState) -> Progress {
    match progress {
        Progress::Import(p) => Progress::Import(resumed_import(p, queued)),
        export => export,
    }
}

fn resumed_import(mut progress: ImportProgress, queued: &SyncState) -> ImportProgress {
    let earlier = queued.last_sync_count.unwrap_or(0).max(0) as u64;
    progress.created += earlier;
    progress.existed = progress.existed.saturating_sub(earlier);
    progress
}

fn apply_progress(state: &mut SyncState, progress: Option<&Progress>) {
    match progress {
        Some(Progress::Import(p)) => {
            state.last_sync_count = Some(p.created as i64);
            state.meta.insert("tasks_existed".into(), json!(p.existed));
            state.meta.insert("objects_listed".into(), json!(p.objects));
            if p.shards > 0 {
                state.meta.insert("shards".into(), json!(p.shards));
            }
            state
                .meta
                .insert("files_failed".into(), json!(p.failed_files));
            for (name, value) in [
                ("objects_changed", p.changed),
                ("tasks_updated", p.updated),
                ("tasks_deleted", p.deleted),
                ("tasks_marked", p.marked),
                ("objects_missing", p.missing),
            ] {
                state.meta.insert(name.into(), json!(value));
            }
        }
        Some(Progress::Export(p)) => {
            state.last_sync_count = Some(p.written as i64);
            state
                .meta
                .insert("total_annotations".into(), json!(p.total));
            state
                .meta
                .insert("annotations_failed".into(), json!(p.failed));
        }
        None => {}
    }
}

fn finish_import(state: &mut SyncState, outcome: &ImportOutcome, now: DateTime<Utc>) {
    apply_progress(state, Some(&Progress::Import(outcome.progress.clone())));
    state.last_sync = Some(now);
    state.meta.insert("time_completed".into(), meta_time(now));
    if outcome.file_errors.is_empty() {
        state.status = SyncStatus::Completed;
    } else {
        state.status = SyncStatus::CompletedWithErrors;
        state
            .meta
            .insert("tasks_failed_validation".into(), json!(outcome.bad_tasks));
        state.traceback = Some(outcome.file_errors.join("\n"));
    }
}

fn finish_export(state: &mut SyncState, outcome: &ExportOutcome, now: DateTime<Utc>) {
    apply_progress(state, Some(&Progress::Export(outcome.progress.clone())));
    let p = &outcome.progress;
    if p.failed == 0 {
        state.status = SyncStatus::Completed;
    } else {
        state.status = if p.written > 0 {
            SyncStatus::CompletedWithErrors
        } else {
            SyncStatus::Failed
        };
        let mut report = format!(
            "{} of {} annotations could not be written:\n",
            p.failed,
            p.failed + p.written
        );
        report.push_str(&outcome.errors.join("\n"));
        state.traceback = Some(report);
    }
    if state.status == SyncStatus::Failed {
        state.meta.insert("time_failure".into(), meta_time(now));
    } else {
        state.last_sync = Some(now);
        state.meta.insert("time_completed".into(), meta_time(now));
    }
}

/// The `meta` key set while on-save exports of the storage fail: the
/// status `completed_with_errors` is then theirs, and goes back to
/// `completed` when they land.
pub(crate) const ON_SAVE_FAILING: &str = "on_save_export_failing";

/// The state of an export storage that shows what its on-save export
/// outbox holds: `meta.annotations_pending` (waiting, failing or not) and
/// `meta.annotations_failed_ids` (whose last attempt failed) always; while
/// annotations fail, `completed_with_errors` with their count in
/// `meta.annotations_failed` and their ids and the last error in
/// `traceback` (a storage whose last sync failed stays `failed`, its
/// counts its own); once none fails, `completed` again if the failures had
/// made it `completed_with_errors`. A storage whose sync is queued or
/// running is not changed (its job writes its own state).
pub(crate) fn with_export_backlog(state: &SyncState, backlog: &ExportBacklog) -> SyncState {
    let mut next = state.clone();
    if state.status.is_active() {
        return next;
    }
    next.meta
        .insert("annotations_pending".into(), json!(backlog.pending));
    if backlog.failed.is_empty() {
        next.meta.remove("annotations_failed_ids");
    } else {
        next.meta
            .insert("annotations_failed_ids".into(), json!(backlog.failed));
    }
    let failing_before = state.meta.get(ON_SAVE_FAILING) == Some(&Value::Bool(true));
    if !backlog.failed.is_empty() {
        if state.status != SyncStatus::Failed {
            let ids: Vec<String> = backlog.failed.iter().map(i64::to_string).collect();
            next.status = SyncStatus::CompletedWithErrors;
            next.traceback = Some(format!(
                "On-save export failed for annotation(s) {}: {}. Each is retried with \
                 backoff; an export sync writes every annotation again.",
                ids.join(", "),
                backlog.last_error.as_deref().unwrap_or("unknown error")
            ));
            next.meta
                .insert("annotations_failed".into(), json!(backlog.failed.len()));
            next.meta.insert(ON_SAVE_FAILING.into(), Value::Bool(true));
        }
    } else if failing_before {
        next.meta.remove(ON_SAVE_FAILING);
        if state.status == SyncStatus::CompletedWithErrors {
            next.status = SyncStatus::Completed;
            next.traceback = None;
            next.meta.insert("annotations_failed".into(), json!(0));
        }
    }
    next
}

/// The error and its chain of causes, one per line.
pub fn error_report(err: &(dyn std::error::Error + 'static)) -> String {
    crate::failure::chain_text(err, "\ncaused by: ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "state_tests.rs"]
mod tests;

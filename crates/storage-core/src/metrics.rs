//! Prometheus metrics of the job runner: syncs started and finished, what
//! they did, how long they took, and how many are waiting or running.
//!
//! [`SyncService`](crate::SyncService) owns one [`SyncMetrics`] and updates
//! it as jobs run; `storage-api` serves it at `GET /metrics`. Labels are the
//! sync's kind (`import`, `export`), the storage type and the final status:
//! never a storage id, so the number of series stays small however many
//! storages there are.
//!
//! Built on the Prometheus project's `prometheus-client`, so the exposition
//! (escaping, cumulative histogram buckets, `# EOF`) is the reference
//! implementation's rather than ours. A host that has its own registry can
//! encode [`SyncMetrics::registry`] next to it with
//! [`prometheus_client::encoding::text::encode_registry`].

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::export::ExportProgress;
use crate::import::ImportProgress;
use crate::{Storage, StorageKind, SyncStatus};

/// Re-exported so hosts use the exact version the metrics are built with.
pub use prometheus_client;

/// The content type of [`SyncMetrics::encode`]'s output (OpenMetrics text,
/// which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the sync duration buckets: from a small
/// folder to a bucket of millions of objects.
const DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    kind: &'static str,
    storage_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishLabels {
    kind: &'static str,
    storage_type: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    storage_type: String,
    outcome: &'static str,
}

/// The outcomes `storage_events` counts: of events, and of pushes refused
/// before any event was read (no or a wrong token, not a notification).
const EVENT_OUTCOMES: [&str; 5] = ["received", "applied", "ignored", "failed", "refused"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    storage_type: String,
}

type Counters<L> = Family<L, Counter>;
type Histograms = Family<SyncLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The job runner's metrics in a Prometheus registry (prefix `storage_`).
#[derive(Debug)]
pub struct SyncMetrics {
    registry: Registry,
    started: Counters<SyncLabels>,
    finished: Counters<FinishLabels>,
    duration: Histograms,
    resumes: Counters<SyncLabels>,
    lease_losses: Counters<SyncLabels>,
    interruptions: Counters<SyncLabels>,
    objects_listed: Counters<TypeLabels>,
    tasks_created: Counters<TypeLabels>,
    tasks_existed: Counters<TypeLabels>,
    files_failed: Counters<TypeLabels>,
    annotations_written: Counters<TypeLabels>,
    annotations_failed: Counters<TypeLabels>,
    events: Counters<EventLabels>,
    running: Family<SyncLabels, Gauge>,
    queued: Family<SyncLabels, Gauge>,
    in_progress: Family<SyncLabels, Gauge>,
    /// The storage types whose series exist at 0 from the start (so every
    /// family, with its `# HELP` and `# TYPE`, is in the first scrape and a
    /// rate over the first sync sees its start); also held while the
    /// repository gauges are rewritten and while encoding, so a scrape never
    /// sees them half cleared.
    storage_types: Mutex<Vec<String>>,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncMetrics {
    /// Empty metrics, every family registered.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("storage"),
            started: Counters::default(),
            finished: Counters::default(),
            duration: Histograms::new_with_constructor(duration_histogram),
            resumes: Counters::default(),
            lease_losses: Counters::default(),
            interruptions: Counters::default(),
            objects_listed: Counters::default(),
            tasks_created: Counters::default(),
            tasks_existed: Counters::default(),
            files_failed: Counters::default(),
            annotations_written: Counters::default(),
            annotations_failed: Counters::default(),
            events: Counters::default(),
            running: Family::default(),
            queued: Family::default(),
            in_progress: Family::default(),
            storage_types: Mutex::new(Vec::new()),
        };
        let r = &mut metrics.registry;
        r.register(
            "syncs_started",
            "Sync jobs started by this process",
            metrics.started.clone(),
        );
        r.register(
            "syncs_finished",
            "Sync jobs that reached a final status (completed, completed_with_errors, failed), \
             including jobs the watchdog failed",
            metrics.finished.clone(),
        );
        r.register_with_unit(
            "sync_duration",
            "Duration of sync jobs run by this process, from start to final status",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        r.register(
            "sync_resumes",
            "Sync jobs queued again after their worker stopped renewing its lease",
            metrics.resumes.clone(),
        );
        r.register(
            "sync_lease_losses",
            "Sync jobs whose lease another worker took over; their result was dropped",
            metrics.lease_losses.clone(),
        );
        r.register(
            "sync_interruptions",
            "Sync jobs stopped at a batch boundary by shutdown, to resume at the next start",
            metrics.interruptions.clone(),
        );
        r.register(
            "import_objects_listed",
            "Objects that passed the filters of import syncs",
            metrics.objects_listed.clone(),
        );
        r.register(
            "import_tasks_created",
            "Tasks created by import syncs",
            metrics.tasks_created.clone(),
        );
        r.register(
            "import_tasks_existed",
            "Tasks import syncs found already linked to the objects they listed",
            metrics.tasks_existed.clone(),
        );
        r.register(
            "import_files_failed",
            "Task files import syncs could not turn into tasks",
            metrics.files_failed.clone(),
        );
        r.register(
            "export_annotations_written",
            "Annotations written by export syncs",
            metrics.annotations_written.clone(),
        );
        r.register(
            "export_annotations_failed",
            "Annotations export syncs could not write",
            metrics.annotations_failed.clone(),
        );
        r.register(
            "events",
            "Object events (filesystem changes, queue messages, pushes) by outcome: received, \
             applied (looked up and imported or removed), ignored (not this storage's objects, \
             malformed, replayed), failed (the object could not be read); refused counts pushes \
             refused before any event was read (no or a wrong token, not a notification)",
            metrics.events.clone(),
        );
        r.register(
            "syncs_running",
            "Sync jobs this process is running now",
            metrics.running.clone(),
        );
        r.register(
            "syncs_queued",
            "Storages whose sync is queued (all instances, read from the repository at scrape time)",
            metrics.queued.clone(),
        );
        r.register(
            "syncs_in_progress",
            "Storages whose sync is in progress (all instances, read from the repository at scrape time)",
            metrics.in_progress.clone(),
        );
        metrics
    }

    /// Metrics whose series for these storage types (every kind and final
    /// status) exist at 0 before anything happened.
    pub fn for_storage_types<'a>(storage_types: impl IntoIterator<Item = &'a str>) -> Self {
        let metrics = Self::new();
        metrics.add_storage_types(storage_types);
        metrics
    }

    /// Creates the series of these storage types at 0 (the ones that exist
    /// already keep their values).
    pub fn add_storage_types<'a>(&self, storage_types: impl IntoIterator<Item = &'a str>) {
        let mut known = self.lock();
        for storage_type in storage_types {
            if known.iter().any(|t| t == storage_type) {
                continue;
            }
            known.push(storage_type.to_string());
            self.zero_series(storage_type);
        }
    }

    /// Every series of `storage_type`; `get_or_create` leaves an existing
    /// one as it is (its guard is dropped at once: only the series matters).
    fn zero_series(&self, storage_type: &str) {
        for kind in [StorageKind::Import, StorageKind::Export] {
            let l = labels(kind, storage_type);
            for family in [
                &self.started,
                &self.resumes,
                &self.lease_losses,
                &self.interruptions,
            ] {
                drop(family.get_or_create(&l));
            }
            for family in [&self.running, &self.queued, &self.in_progress] {
                drop(family.get_or_create(&l));
            }
            drop(self.duration.get_or_create(&l));
            for status in SyncStatus::ALL.into_iter().filter(|s| s.is_finished()) {
                drop(self.finished.get_or_create(&FinishLabels {
                    kind: kind.as_str(),
                    storage_type: storage_type.to_string(),
                    status: status.as_str(),
                }));
            }
        }
        let l = TypeLabels {
            storage_type: storage_type.to_string(),
        };
        for family in [
            &self.objects_listed,
            &self.tasks_created,
            &self.tasks_existed,
            &self.files_failed,
            &self.annotations_written,
            &self.annotations_failed,
        ] {
            drop(family.get_or_create(&l));
        }
        for outcome in EVENT_OUTCOMES {
            drop(self.events.get_or_create(&EventLabels {
                storage_type: storage_type.to_string(),
                outcome,
            }));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.storage_types.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry, to encode with a host's own metrics. The repository
    /// gauges are as of the last [`SyncService::refresh_metrics`](crate::SyncService::refresh_metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let _held = self.lock();
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Counts one batch of events of a storage of `storage_type`.
    pub(crate) fn events(&self, storage_type: &str, counts: &crate::events::EventCounts) {
        let values = [
            counts.received,
            counts.applied,
            counts.ignored,
            counts.failed,
        ];
        for (outcome, value) in EVENT_OUTCOMES.into_iter().zip(values) {
            // `zip` stops before "refused", which `push_refused` counts.
            self.events
                .get_or_create(&EventLabels {
                    storage_type: storage_type.to_string(),
                    outcome,
                })
                .inc_by(value);
        }
    }

    /// Counts one push to a notification endpoint of a storage of
    /// `storage_type` refused before any event was read.
    pub fn push_refused(&self, storage_type: &str) {
        self.events
            .get_or_create(&EventLabels {
                storage_type: storage_type.to_string(),
                outcome: "refused",
            })
            .inc();
    }

    pub(crate) fn sync_started(&self, kind: StorageKind, storage_type: &str) {
        self.started
            .get_or_create(&labels(kind, storage_type))
            .inc();
    }

    pub(crate) fn running(&self, kind: StorageKind, storage_type: &str, delta: i64) {
        self.running
            .get_or_create(&labels(kind, storage_type))
            .inc_by(delta);
    }

    /// A job reached a final status; `seconds` when this process ran it.
    pub(crate) fn sync_finished(
        &self,
        kind: StorageKind,
        storage_type: &str,
        status: SyncStatus,
        seconds: Option<f64>,
    ) {
        let finish = FinishLabels {
            kind: kind.as_str(),
            storage_type: storage_type.to_string(),
            status: status.as_str(),
        };
        self.finished.get_or_create(&finish).inc();
        if let Some(seconds) = seconds {
            self.duration
                .get_or_create(&labels(kind, storage_type))
                .observe(seconds);
        }
    }

    pub(crate) fn resumed(&self, kind: StorageKind, storage_type: &str) {
        self.resumes
            .get_or_create(&labels(kind, storage_type))
            .inc();
    }

    pub(crate) fn lease_lost(&self, kind: StorageKind, storage_type: &str) {
        self.lease_losses
            .get_or_create(&labels(kind, storage_type))
            .inc();
    }

    pub(crate) fn interrupted(&self, kind: StorageKind, storage_type: &str) {
        self.interruptions
            .get_or_create(&labels(kind, storage_type))
            .inc();
    }

    /// Adds what an import did since its last report.
    pub(crate) fn import_progress(&self, storage_type: &str, delta: &ImportProgress) {
        let l = TypeLabels {
            storage_type: storage_type.to_string(),
        };
        self.objects_listed.get_or_create(&l).inc_by(delta.objects);
        self.tasks_created.get_or_create(&l).inc_by(delta.created);
        self.tasks_existed.get_or_create(&l).inc_by(delta.existed);
        self.files_failed
            .get_or_create(&l)
            .inc_by(delta.failed_files);
    }

    /// Adds what an export did since its last report.
    pub(crate) fn export_progress(&self, storage_type: &str, delta: &ExportProgress) {
        let l = TypeLabels {
            storage_type: storage_type.to_string(),
        };
        self.annotations_written
            .get_or_create(&l)
            .inc_by(delta.written);
        self.annotations_failed
            .get_or_create(&l)
            .inc_by(delta.failed);
    }

    /// Rewrites the queued / in-progress gauges from the active storages.
    pub(crate) fn set_active(&self, active: &[Storage]) {
        let known = self.lock();
        self.queued.clear();
        self.in_progress.clear();
        for storage_type in known.iter() {
            for kind in [StorageKind::Import, StorageKind::Export] {
                let l = labels(kind, storage_type);
                drop(self.queued.get_or_create(&l));
                drop(self.in_progress.get_or_create(&l));
            }
        }
        for storage in active {
            let family = match storage.sync.status {
                SyncStatus::Queued => &self.queued,
                SyncStatus::InProgress => &self.in_progress,
                _ => continue,
            };
            family
                .get_or_create(&labels(storage.kind, &storage.storage_type))
                .inc();
        }
    }
}

fn labels(kind: StorageKind, storage_type: &str) -> SyncLabels {
    SyncLabels {
        kind: kind.as_str(),
        storage_type: storage_type.to_string(),
    }
}

/// What a run did between two progress reports (counters only grow within
/// one run).
pub(crate) fn import_delta(now: &ImportProgress, before: &ImportProgress) -> ImportProgress {
    ImportProgress {
        objects: now.objects.saturating_sub(before.objects),
        created: now.created.saturating_sub(before.created),
        existed: now.existed.saturating_sub(before.existed),
        failed_files: now.failed_files.saturating_sub(before.failed_files),
        changed: now.changed.saturating_sub(before.changed),
        updated: now.updated.saturating_sub(before.updated),
        deleted: now.deleted.saturating_sub(before.deleted),
        marked: now.marked.saturating_sub(before.marked),
        missing: now.missing.saturating_sub(before.missing),
        shards: now.shards,
    }
}

/// See [`import_delta`].
pub(crate) fn export_delta(now: &ExportProgress, before: &ExportProgress) -> ExportProgress {
    ExportProgress {
        total: now.total.saturating_sub(before.total),
        written: now.written.saturating_sub(before.written),
        failed: now.failed.saturating_sub(before.failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_gauges_are_encoded_with_their_labels() {
        let m = SyncMetrics::new();
        m.sync_started(StorageKind::Import, "s3");
        m.sync_finished(StorageKind::Import, "s3", SyncStatus::Completed, Some(0.3));
        m.import_progress(
            "s3",
            &ImportProgress {
                objects: 4,
                created: 3,
                existed: 1,
                failed_files: 0,
                ..Default::default()
            },
        );
        m.running(StorageKind::Export, "gcs", 1);
        let text = m.encode();
        for line in [
            "# TYPE storage_syncs_started counter",
            r#"storage_syncs_started_total{kind="import",storage_type="s3"} 1"#,
            r#"storage_syncs_finished_total{kind="import",storage_type="s3",status="completed"} 1"#,
            "# UNIT storage_sync_duration_seconds seconds",
            r#"storage_sync_duration_seconds_bucket{le="0.25",kind="import",storage_type="s3"} 0"#,
            r#"storage_sync_duration_seconds_bucket{le="0.5",kind="import",storage_type="s3"} 1"#,
            r#"storage_sync_duration_seconds_count{kind="import",storage_type="s3"} 1"#,
            r#"storage_import_objects_listed_total{storage_type="s3"} 4"#,
            r#"storage_import_tasks_created_total{storage_type="s3"} 3"#,
            r#"storage_syncs_running{kind="export",storage_type="gcs"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn known_storage_types_have_every_series_at_zero_and_keep_them() {
        let m = SyncMetrics::for_storage_types(["s3"]);
        let text = m.encode();
        for line in [
            "# TYPE storage_syncs_queued gauge",
            r#"storage_syncs_queued{kind="import",storage_type="s3"} 0"#,
            r#"storage_syncs_in_progress{kind="export",storage_type="s3"} 0"#,
            r#"storage_syncs_finished_total{kind="export",storage_type="s3",status="failed"} 0"#,
            r#"storage_export_annotations_failed_total{storage_type="s3"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // Rewriting the repository gauges keeps the zeros of known types,
        // and adding a type again keeps what it counted.
        m.sync_started(StorageKind::Import, "s3");
        m.set_active(&[]);
        m.add_storage_types(["s3"]);
        let text = m.encode();
        for line in [
            r#"storage_syncs_queued{kind="import",storage_type="s3"} 0"#,
            r#"storage_syncs_started_total{kind="import",storage_type="s3"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn deltas_count_only_what_happened_since_the_last_report() {
        let before = ImportProgress {
            objects: 10,
            created: 4,
            existed: 6,
            failed_files: 0,
            ..Default::default()
        };
        let now = ImportProgress {
            objects: 15,
            created: 8,
            existed: 6,
            failed_files: 1,
            ..Default::default()
        };
        assert_eq!(
            import_delta(&now, &before),
            ImportProgress {
                objects: 5,
                created: 4,
                existed: 0,
                failed_files: 1,
                ..Default::default()
            }
        );
    }
}

//! Syncs on a schedule: when a storage with a `sync_interval` is due.
//!
//! Nothing but the storage row is needed: a storage is due `sync_interval`
//! seconds after its last sync was queued or ended (its creation when it
//! never synced). The watchdog of every process queues due storages with a
//! compare-and-set on the row, so however many processes share the
//! database each due run is queued once, a storage never syncs twice at
//! once, and a process that was down for many intervals queues one run,
//! not one per missed tick.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::{Storage, StorageKind};

/// The setting: seconds between automatic syncs; `null` for manual syncs
/// only.
pub const SYNC_INTERVAL_FIELD: &str = "sync_interval";

/// When `storage`'s next automatic sync is due; `None` without a
/// `sync_interval` (and for export storages).
pub fn next_sync(storage: &Storage) -> Option<DateTime<Utc>> {
    if storage.kind != StorageKind::Import {
        return None;
    }
    let interval = storage
        .settings
        .int(SYNC_INTERVAL_FIELD)
        .filter(|seconds| *seconds > 0)?;
    let meta = &storage.sync.meta;
    let last = ["time_queued", "time_completed", "time_failure"]
        .into_iter()
        .filter_map(|name| meta.get(name).and_then(Value::as_str))
        .filter_map(|at| DateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f%:z").ok())
        .map(|at| at.to_utc())
        .chain(storage.sync.last_sync)
        .max()
        .unwrap_or(storage.created_at);
    Some(last + Duration::seconds(interval))
}

/// Whether `storage` should be queued by the schedule at `now`: due, idle
/// and accepting syncs.
pub(crate) fn due(storage: &Storage, now: DateTime<Utc>) -> bool {
    storage.synchronizable
        && !storage.sync.status.is_active()
        && next_sync(storage).is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::model::meta_time;
    use crate::{NewStorage, Settings, SyncStatus};

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
    }

    fn storage(interval: Option<i64>) -> Storage {
        let mut settings = Settings::default();
        settings.set(SYNC_INTERVAL_FIELD, json!(interval));
        let new = NewStorage {
            kind: StorageKind::Import,
            storage_type: "s3".into(),
            project: 1,
            title: None,
            description: None,
            synchronizable: true,
            settings,
        };
        Storage::new(1, new, at(0))
    }

    #[test]
    fn due_an_interval_after_creation_then_after_the_last_sync() {
        assert_eq!(next_sync(&storage(None)), None);
        let mut s = storage(Some(60));
        assert_eq!(next_sync(&s), Some(at(60)));
        assert!(!due(&s, at(59)) && due(&s, at(60)));

        // Queued at 100, ended at 130 (a long sync): due 60 s after the end.
        s.sync.meta.insert("time_queued".into(), meta_time(at(100)));
        s.sync.status = SyncStatus::InProgress;
        assert!(!due(&s, at(1_000)), "never while a sync is active");
        s.sync.status = SyncStatus::Completed;
        s.sync
            .meta
            .insert("time_completed".into(), meta_time(at(130)));
        assert_eq!(next_sync(&s), Some(at(190)));
        // Down for an hour: one run is due, not sixty.
        assert!(due(&s, at(3_790)));

        s.synchronizable = false;
        assert!(!due(&s, at(3_790)));
        s.kind = StorageKind::Export;
        assert_eq!(next_sync(&s), None);
    }
}

//! Wire shapes: storages and timestamps as Label Studio writes them.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use storage_core::{FieldSpec, Storage, StorageKind};

/// A time as Django REST framework writes it: `2026-11-23T07:46:02.333657Z`.
pub(crate) fn iso(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A storage in Label Studio's field order, secrets left out, under the
/// id clients address it by (`StorageRepository::route_id`).
pub(crate) fn storage_json(storage: &Storage, route_id: i64, fields: &[FieldSpec]) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(route_id));
    out.insert("type".into(), json!(storage.storage_type));
    out.insert("synchronizable".into(), json!(storage.synchronizable));
    out.extend(storage.settings.public(fields));
    let sync = &storage.sync;
    out.insert("last_sync".into(), json!(sync.last_sync.map(iso)));
    out.insert("last_sync_count".into(), json!(sync.last_sync_count));
    out.insert("last_sync_job".into(), json!(sync.last_sync_job));
    out.insert("status".into(), json!(sync.status));
    out.insert("traceback".into(), json!(sync.traceback));
    out.insert("meta".into(), Value::Object(sync.meta.clone()));
    out.insert("title".into(), json!(storage.title));
    out.insert("description".into(), json!(storage.description));
    out.insert("created_at".into(), json!(iso(storage.created_at)));
    out.insert("project".into(), json!(storage.project));
    if storage.kind == StorageKind::Import {
        // Extension: when the schedule (`sync_interval`) syncs it next.
        let next = storage_core::jobs::schedule::next_sync(storage);
        out.insert("next_sync".into(), json!(next.map(iso)));
    }
    Value::Object(out)
}

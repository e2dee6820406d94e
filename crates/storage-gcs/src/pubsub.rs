//! Cloud Storage notifications as Pub/Sub pushes them to a storage's
//! notification endpoint: `{"message": {"attributes": {...}, "data":
//! base64(object resource), "messageId": ...}, "subscription": ...}`.
//!
//! The attributes `eventType`, `bucketId` and `objectId` are what
//! Cloud Storage sets on every notification, whatever its payload format
//! (`JSON_API_V1` or `NONE`); the object resource in `data` is read only
//! when they are missing. See
//! <https://cloud.google.com/storage/docs/pubsub-notifications>.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use storage_core::events::{EventBatch, ObjectChange, ObjectEvent, PushFormat, PushedEvents};
use storage_core::{Error, Result};

/// Pub/Sub pushes to a storage of the bucket in its `bucket` field.
pub const PUSH_FORMAT: PushFormat = PushFormat {
    service: "Google Cloud Pub/Sub",
    parse: |settings, body| pushed_events(settings.str("bucket").unwrap_or_default(), body),
};

/// What a Pub/Sub push endpoint is sent.
#[derive(Debug, Deserialize)]
struct Push {
    message: Message,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default, rename = "messageId", alias = "message_id")]
    message_id: Option<String>,
}

/// The object changes of a push to a storage of `bucket`. A body that is
/// not a Pub/Sub push at all is an error (answered 400); a push that is not
/// a change of an object of `bucket` is ignored with the reason.
pub fn pushed_events(bucket: &str, body: &[u8]) -> Result<PushedEvents> {
    let push: Push = serde_json::from_slice(body).map_err(|err| {
        Error::invalid(
            "message",
            format!("not a Pub/Sub push ({{\"message\": {{\"attributes\", \"data\"}}}}): {err}"),
        )
    })?;
    let mut batch = EventBatch::default();
    let message = push.message;
    let id = message.message_id.clone();
    match object_change(bucket, &message) {
        Ok((key, change)) => batch.events.push(ObjectEvent {
            key,
            change,
            message: id,
        }),
        Err(reason) => batch.ignored.push(format!(
            "Pub/Sub message {}: {reason}",
            id.as_deref().unwrap_or("without an id")
        )),
    }
    Ok(PushedEvents::Batch(batch))
}

/// The key and change of a notification, or why it is no change of an
/// object of `bucket`.
fn object_change(
    bucket: &str,
    message: &Message,
) -> std::result::Result<(String, ObjectChange), String> {
    let attribute = |name: &str| message.attributes.get(name).and_then(Value::as_str);
    let resource = message
        .data
        .as_deref()
        .filter(|data| !data.is_empty())
        .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data).ok())
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok());
    let field = |name: &str| {
        resource
            .as_ref()
            .and_then(|r| r.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let Some(event_type) = attribute("eventType") else {
        return Err("no eventType attribute: not a Cloud Storage notification".into());
    };
    let change = match event_type {
        "OBJECT_FINALIZE" | "OBJECT_METADATA_UPDATE" => ObjectChange::Written,
        "OBJECT_DELETE" => ObjectChange::Removed,
        "OBJECT_ARCHIVE" => {
            return Err(
                "OBJECT_ARCHIVE: a version became noncurrent; the live object is as it \
                        was"
                .into(),
            )
        }
        other => return Err(format!("event type {other:?} is not an object change")),
    };
    let Some(from) = attribute("bucketId")
        .map(str::to_string)
        .or_else(|| field("bucket"))
    else {
        return Err("no bucketId attribute".into());
    };
    if from != bucket {
        return Err(format!(
            "an event of bucket {from:?}; this storage reads {bucket:?}"
        ));
    }
    let Some(key) = attribute("objectId")
        .map(str::to_string)
        .or_else(|| field("name"))
        .filter(|key| !key.is_empty())
    else {
        return Err("no objectId attribute".into());
    };
    Ok((key, change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(attributes: Value, data: Option<Value>) -> Vec<u8> {
        let data = data.map(|d| base64::engine::general_purpose::STANDARD.encode(d.to_string()));
        serde_json::to_vec(&json!({
            "message": {"attributes": attributes, "data": data, "messageId": "m1",
                        "publishTime": "2026-12-01T10:00:00Z"},
            "subscription": "projects/p/subscriptions/s"
        }))
        .unwrap()
    }

    fn batch(body: &[u8]) -> EventBatch {
        match pushed_events("photos", body).unwrap() {
            PushedEvents::Batch(batch) => batch,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finalize_and_delete_name_their_object() {
        let written = batch(&push(
            json!({"eventType": "OBJECT_FINALIZE", "bucketId": "photos",
                   "objectId": "a b/ü+1.jpg", "payloadFormat": "JSON_API_V1"}),
            Some(json!({"bucket": "photos", "name": "a b/ü+1.jpg", "size": "3"})),
        ));
        assert_eq!(written.events[0].key, "a b/ü+1.jpg");
        assert_eq!(written.events[0].change, ObjectChange::Written);
        assert_eq!(written.events[0].message.as_deref(), Some("m1"));
        let removed = batch(&push(
            json!({"eventType": "OBJECT_DELETE", "bucketId": "photos", "objectId": "x"}),
            None,
        ));
        assert_eq!(removed.events[0].change, ObjectChange::Removed);
        // Without attributes, the object resource names it.
        let from_data = batch(&push(
            json!({"eventType": "OBJECT_METADATA_UPDATE"}),
            Some(json!({"bucket": "photos", "name": "y"})),
        ));
        assert_eq!(from_data.events[0].key, "y");
    }

    #[test]
    fn other_buckets_and_types_are_ignored_with_a_reason() {
        let other = batch(&push(
            json!({"eventType": "OBJECT_FINALIZE", "bucketId": "other", "objectId": "x"}),
            None,
        ));
        assert!(other.events.is_empty());
        assert!(
            other.ignored[0].contains("\"other\""),
            "{:?}",
            other.ignored
        );
        let unknown = batch(&push(json!({"eventType": "SOMETHING"}), None));
        assert!(unknown.ignored[0].contains("SOMETHING"));
        let archived = batch(&push(
            json!({"eventType": "OBJECT_ARCHIVE", "bucketId": "photos", "objectId": "x"}),
            None,
        ));
        assert!(archived.events.is_empty() && archived.ignored.len() == 1);
        let garbage = batch(&serde_json::to_vec(&json!({"message": {"data": "!!"}})).unwrap());
        assert_eq!(garbage.ignored.len(), 1);
    }

    #[test]
    fn a_body_that_is_no_push_is_refused() {
        let err = pushed_events("photos", b"[1, 2]").unwrap_err();
        assert!(err.to_string().contains("Pub/Sub push"), "{err}");
    }
}

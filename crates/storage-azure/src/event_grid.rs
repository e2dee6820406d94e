//! Blob Storage events as Azure Event Grid delivers them to a storage's
//! notification endpoint: an array of events in the Event Grid schema
//! (`eventType`, `subject`, `data`) or CloudEvents 1.0 (`type`, `subject`),
//! one event or a batch, and the subscription-validation handshake
//! (`Microsoft.EventGrid.SubscriptionValidationEvent`, answered with its
//! `validationCode`). The subject names the blob:
//! `/blobServices/default/containers/<container>/blobs/<name>`. See
//! <https://learn.microsoft.com/azure/event-grid/event-schema-blob-storage>.

use serde_json::{json, Value};
use storage_core::events::{EventBatch, ObjectChange, ObjectEvent, PushFormat, PushedEvents};
use storage_core::{Error, Result};

/// The handshake event Event Grid sends when a webhook subscription is
/// created.
const VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// Event Grid deliveries to a storage of the `container` of the
/// `account_name` in its settings.
pub const PUSH_FORMAT: PushFormat = PushFormat {
    service: "Azure Event Grid",
    parse: |settings, body| {
        pushed_events(
            settings.str("account_name"),
            settings.str("container").unwrap_or_default(),
            body,
        )
    },
};

/// The object changes of a delivery to a storage of `container` (of
/// `account`, when the events name theirs). A body that is not Event Grid
/// events at all is an error (answered 400); an event that is not a change
/// of a blob of the container is ignored with the reason.
pub fn pushed_events(account: Option<&str>, container: &str, body: &[u8]) -> Result<PushedEvents> {
    let not_events = |why: String| {
        Error::invalid(
            "eventType",
            format!("not Event Grid events (an array of {{\"eventType\", \"subject\", \"data\"}}): {why}"),
        )
    };
    let events =
        match serde_json::from_slice::<Value>(body).map_err(|e| not_events(e.to_string()))? {
            Value::Array(events) => events,
            event @ Value::Object(_) => vec![event],
            _ => return Err(not_events("neither an array nor an object".into())),
        };
    if events.iter().any(|event| !event.is_object()) {
        return Err(not_events("an element is not an object".into()));
    }
    let mut batch = EventBatch::default();
    for event in &events {
        let event_type = event
            .get("eventType")
            .or_else(|| event.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if event_type == VALIDATION {
            let Some(code) = event
                .pointer("/data/validationCode")
                .and_then(Value::as_str)
            else {
                return Err(Error::invalid(
                    "data.validationCode",
                    "a subscription validation event without its validationCode",
                ));
            };
            return Ok(PushedEvents::Handshake(
                json!({ "validationResponse": code }),
            ));
        }
        let id = event.get("id").and_then(Value::as_str).map(str::to_string);
        match blob_change(account, container, event_type, event) {
            Ok(change) => batch.events.push(ObjectEvent {
                key: change.0,
                change: change.1,
                message: id,
            }),
            Err(reason) => batch.ignored.push(format!(
                "Event Grid event {}: {reason}",
                id.as_deref().unwrap_or("without an id")
            )),
        }
    }
    Ok(PushedEvents::Batch(batch))
}

fn blob_change(
    account: Option<&str>,
    container: &str,
    event_type: &str,
    event: &Value,
) -> std::result::Result<(String, ObjectChange), String> {
    let change = match event_type {
        "Microsoft.Storage.BlobCreated" => ObjectChange::Written,
        "Microsoft.Storage.BlobDeleted" => ObjectChange::Removed,
        "" => return Err("no eventType: not an Event Grid event".into()),
        other => {
            return Err(format!(
                "event type {other:?} is not a blob created or deleted"
            ))
        }
    };
    // `topic` (Event Grid) or `source` (CloudEvents) ends with the account.
    let origin = event
        .get("topic")
        .or_else(|| event.get("source"))
        .and_then(Value::as_str)
        .and_then(|topic| topic.rsplit_once("/storageAccounts/"))
        .map(|(_, name)| name.trim_end_matches('/'));
    if let (Some(account), Some(origin)) = (account, origin) {
        if !origin.eq_ignore_ascii_case(account) {
            return Err(format!(
                "an event of storage account {origin:?}; this storage reads {account:?}"
            ));
        }
    }
    let Some(subject) = event.get("subject").and_then(Value::as_str) else {
        return Err("no subject".into());
    };
    let Some((from, name)) = subject
        .strip_prefix("/blobServices/default/containers/")
        .and_then(|rest| rest.split_once("/blobs/"))
    else {
        return Err(format!("subject {subject:?} names no blob"));
    };
    if from != container {
        return Err(format!(
            "an event of container {from:?}; this storage reads {container:?}"
        ));
    }
    if name.is_empty() {
        return Err(format!("subject {subject:?} names no blob"));
    }
    Ok((name.to_string(), change))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(container: &str, name: &str) -> Value {
        json!({
            "topic": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
            "subject": format!("/blobServices/default/containers/{container}/blobs/{name}"),
            "eventType": "Microsoft.Storage.BlobCreated",
            "id": "e1",
            "data": {"api": "PutBlob", "contentLength": 3, "blobType": "BlockBlob",
                     "url": format!("https://devstoreaccount1.blob.core.windows.net/{container}/{name}")},
            "dataVersion": "", "metadataVersion": "1", "eventTime": "2026-12-01T10:00:00Z"
        })
    }

    fn batch(body: Value) -> EventBatch {
        match pushed_events(
            Some("devstoreaccount1"),
            "photos",
            body.to_string().as_bytes(),
        )
        .unwrap()
        {
            PushedEvents::Batch(batch) => batch,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn created_and_deleted_blobs_are_changes_and_others_are_ignored() {
        let mut deleted = created("photos", "b/2.jpg");
        deleted["eventType"] = json!("Microsoft.Storage.BlobDeleted");
        let mut other_account = created("photos", "c.jpg");
        other_account["topic"] =
            json!("/subscriptions/s/providers/Microsoft.Storage/storageAccounts/other");
        let b = batch(json!([
            created("photos", "a 1.jpg"),
            deleted,
            created("elsewhere", "x.jpg"),
            other_account,
            {"eventType": "Microsoft.Storage.BlobTierChanged", "subject": "/blobServices/default/containers/photos/blobs/a"}
        ]));
        let keys: Vec<_> = b
            .events
            .iter()
            .map(|e| (e.key.as_str(), e.change))
            .collect();
        assert_eq!(
            keys,
            [
                ("a 1.jpg", ObjectChange::Written),
                ("b/2.jpg", ObjectChange::Removed)
            ]
        );
        assert_eq!(b.events[0].message.as_deref(), Some("e1"));
        assert_eq!(b.ignored.len(), 3, "{:?}", b.ignored);
        assert!(b.ignored[0].contains("\"elsewhere\""));
        assert!(b.ignored[1].contains("\"other\""));
    }

    #[test]
    fn cloud_events_are_read_too() {
        let event = json!({
            "specversion": "1.0", "type": "Microsoft.Storage.BlobCreated", "id": "c1",
            "source": "/subscriptions/s/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
            "subject": "/blobServices/default/containers/photos/blobs/one.jpg", "data": {}
        });
        assert_eq!(batch(event).events[0].key, "one.jpg");
    }

    #[test]
    fn the_validation_handshake_is_answered_with_its_code() {
        let body = json!([{
            "id": "v", "topic": "t", "subject": "", "eventType": VALIDATION,
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                     "validationUrl": "https://example.invalid/validate"}
        }]);
        let PushedEvents::Handshake(answer) =
            pushed_events(None, "photos", body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a handshake");
        };
        assert_eq!(
            answer,
            json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
        );
    }

    #[test]
    fn a_body_that_is_no_events_is_refused() {
        assert!(pushed_events(None, "photos", b"42").is_err());
        assert!(pushed_events(None, "photos", b"[1, 2]").is_err());
        assert!(pushed_events(None, "photos", b"{").is_err());
    }
}

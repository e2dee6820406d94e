//! S3 event notifications read from the SQS queue of a storage's
//! `sqs_queue_url`: long-polled with the storage's credentials (or its
//! assumed role) over SQS's JSON protocol, signed by object_store's own
//! SigV4 [`AwsAuthorizer`] and sent through the storage's policy-checked
//! HTTP client.
//!
//! A message is an S3 notification sent to the queue directly, wrapped by
//! SNS (`{"Type": "Notification", "Message": "<the notification>"}`), or
//! an EventBridge event (`{"detail-type": "Object Created", "detail":
//! {...}}`). Messages are kept invisible while their batch is applied and
//! deleted only once it is committed: a crash in between delivers them
//! again, and applying them again changes nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method};
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpRequest, HttpRequestBody};
use object_store::CredentialProvider;
use serde_json::{json, Value};
use storage_core::events::{EventBatch, EventFeed, ObjectChange, ObjectEvent};
use storage_core::{Error, Result};

pub use storage_core::events::SQS_QUEUE_URL_FIELD;

/// SQS gives at most this many messages per receive.
const MAX_PER_RECEIVE: usize = 10;

/// Receives gathered into one batch once messages flow.
const RECEIVES_PER_BATCH: usize = 10;

/// How long received messages stay invisible to other receivers; renewed
/// while their batch waits or is applied.
const VISIBILITY: Duration = Duration::from_secs(30);

/// The credentials a queue is read with: the storage's own provider, or
/// none (a keyless storage's requests are not signed).
pub type SqsCredentials = Option<Arc<dyn CredentialProvider<Credential = AwsCredential>>>;

/// The SQS queue of one storage, as an [`EventFeed`].
pub struct SqsFeed {
    queue_url: url::Url,
    region: String,
    bucket: String,
    client: HttpClient,
    credentials: SqsCredentials,
    wait: Duration,
}

impl std::fmt::Debug for SqsFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsFeed")
            .field("queue_url", &self.queue_url.as_str())
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl SqsFeed {
    /// Reads `queue_url` (checked against the endpoint policy by the
    /// caller) for the notifications of `bucket`.
    pub fn new(
        queue_url: url::Url,
        region: String,
        bucket: String,
        client: HttpClient,
        credentials: SqsCredentials,
    ) -> Self {
        Self {
            queue_url,
            region,
            bucket,
            client,
            credentials,
            wait: Duration::from_secs(20),
        }
    }

    /// Long polls wait up to `wait` (at most 20 s, SQS's limit).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(Duration::from_secs(20));
        self
    }

    /// One SQS call (`AmazonSQS.<action>`), signed when the storage has
    /// credentials; its JSON answer.
    async fn call(&self, action: &str, body: Value) -> Result<Value> {
        let context = || format!("SQS {action} on {}", self.queue_url);
        let body = Bytes::from(body.to_string());
        // The JSON protocol posts to the service root of the queue's host.
        let mut endpoint = self.queue_url.clone();
        endpoint.set_path("/");
        endpoint.set_query(None);
        let mut request: HttpRequest = http::Request::builder()
            .method(Method::POST)
            .uri(endpoint.as_str())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.0"),
            )
            .header(
                "x-amz-target",
                HeaderValue::from_str(&format!("AmazonSQS.{action}"))
                    .map_err(|e| Error::backend(context(), e.to_string()))?,
            )
            .body(HttpRequestBody::from(body))
            .map_err(|e| Error::backend(context(), e.to_string()))?;
        if let Some(provider) = &self.credentials {
            let credential = provider
                .get_credential()
                .await
                .map_err(|e| Error::from_object_store(context(), e))?;
            AwsAuthorizer::new(&credential, "sqs", &self.region)
                .try_authorize(&mut request, None)
                .map_err(|e| Error::from_object_store(context(), e))?;
        }
        let response = self.client.execute(request).await.map_err(|e| {
            Error::backend(context(), format!("the queue could not be reached: {e}"))
        })?;
        let status = response.status();
        let answer =
            response.into_body().bytes().await.map_err(|e| {
                Error::backend(context(), format!("reading the answer failed: {e}"))
            })?;
        let parsed: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if !status.is_success() {
            let kind = parsed["__type"].as_str().unwrap_or_default();
            let message = parsed["message"]
                .as_str()
                .or_else(|| parsed["Message"].as_str())
                .unwrap_or_default();
            let what = format!("SQS answered {status} {kind} {message}");
            return Err(match status.as_u16() {
                401 | 403 => Error::PermissionDenied {
                    reason: format!(
                        "{}: {what}; the storage's identity needs sqs:ReceiveMessage, \
                         sqs:DeleteMessage and sqs:ChangeMessageVisibility on the queue",
                        context()
                    ),
                },
                _ => Error::backend(context(), what),
            });
        }
        Ok(parsed)
    }

    async fn receive(&self, wait: Duration) -> Result<Vec<Value>> {
        let answer = self
            .call(
                "ReceiveMessage",
                json!({
                    "QueueUrl": self.queue_url.as_str(),
                    "MaxNumberOfMessages": MAX_PER_RECEIVE,
                    "WaitTimeSeconds": wait.as_secs(),
                    "VisibilityTimeout": VISIBILITY.as_secs(),
                }),
            )
            .await?;
        Ok(answer["Messages"].as_array().cloned().unwrap_or_default())
    }

    /// Calls a batch action (at most ten entries each) over `receipts`.
    async fn each_ten(&self, action: &str, receipts: &[String], extra: Value) -> Result<()> {
        for chunk in receipts.chunks(MAX_PER_RECEIVE) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    let mut entry = json!({"Id": i.to_string(), "ReceiptHandle": receipt});
                    if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
                        entry.extend(extra.clone());
                    }
                    entry
                })
                .collect();
            let answer = self
                .call(
                    action,
                    json!({"QueueUrl": self.queue_url.as_str(), "Entries": entries}),
                )
                .await?;
            if let Some(failed) = answer["Failed"].as_array().filter(|f| !f.is_empty()) {
                tracing::warn!(queue = %self.queue_url, action, failed = failed.len(), "SQS refused some entries");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventFeed for SqsFeed {
    async fn next_batch(&mut self, max: usize) -> Result<EventBatch> {
        let mut batch = EventBatch::default();
        let mut wait = self.wait;
        for _ in 0..RECEIVES_PER_BATCH {
            let messages = self.receive(wait).await?;
            let got = messages.len();
            for message in messages {
                add_message(&self.bucket, &message, &mut batch);
            }
            // Once messages flow, take what is there without waiting.
            wait = Duration::ZERO;
            if got < MAX_PER_RECEIVE || batch.receipts.len() + MAX_PER_RECEIVE > max {
                break;
            }
        }
        Ok(batch)
    }

    async fn keep_alive(&mut self, batch: &EventBatch) -> Result<()> {
        self.each_ten(
            "ChangeMessageVisibilityBatch",
            &batch.receipts,
            json!({"VisibilityTimeout": VISIBILITY.as_secs()}),
        )
        .await
    }

    async fn acknowledge(&mut self, batch: EventBatch) -> Result<()> {
        self.each_ten("DeleteMessageBatch", &batch.receipts, json!({}))
            .await
    }

    fn keep_alive_every(&self) -> Duration {
        VISIBILITY / 3
    }
}

/// Adds one SQS message to `batch`: its object changes, or why it is
/// ignored; its receipt either way (it is deleted with the batch).
fn add_message(bucket: &str, message: &Value, batch: &mut EventBatch) {
    let id = message["MessageId"].as_str().map(str::to_string);
    if let Some(receipt) = message["ReceiptHandle"].as_str() {
        batch.receipts.push(receipt.to_string());
    }
    let shown = id.as_deref().unwrap_or("without an id");
    let body = message["Body"].as_str().unwrap_or_default();
    match changes(bucket, body) {
        Ok(changes) if changes.is_empty() => {
            batch.ignored.push(format!(
                "SQS message {shown}: no object change of bucket {bucket:?}"
            ));
        }
        Ok(changes) => {
            for change in changes {
                match change {
                    Ok((key, change)) => batch.events.push(ObjectEvent {
                        key,
                        change,
                        message: id.clone(),
                    }),
                    Err(reason) => batch.ignored.push(format!("SQS message {shown}: {reason}")),
                }
            }
        }
        Err(reason) => batch.ignored.push(format!("SQS message {shown}: {reason}")),
    }
}

type Change = std::result::Result<(String, ObjectChange), String>;

/// The object changes of a message body: an S3 notification (direct or in
/// SNS's envelope) or an EventBridge event; `Err` for a body that is none
/// of these (a poison message), `Ok([])` for a test event.
fn changes(bucket: &str, body: &str) -> std::result::Result<Vec<Change>, String> {
    let parsed: Value = serde_json::from_str(body)
        .map_err(|e| format!("the body is not JSON ({e}): not an S3 notification"))?;
    if parsed["Type"] == "Notification" {
        let inner = parsed["Message"]
            .as_str()
            .ok_or("an SNS notification without a Message")?;
        return changes(bucket, inner);
    }
    if parsed["Event"] == "s3:TestEvent" {
        return Ok(Vec::new());
    }
    if let Some(records) = parsed["Records"].as_array() {
        return Ok(records.iter().map(|r| record_change(bucket, r)).collect());
    }
    if parsed["source"] == "aws.s3" && parsed["detail"].is_object() {
        return Ok(vec![eventbridge_change(bucket, &parsed)]);
    }
    Err(
        "neither an S3 notification (Records), an SNS notification nor an EventBridge S3 event"
            .into(),
    )
}

/// One record of an S3 notification (keys are form-encoded: `+` is a
/// space).
fn record_change(bucket: &str, record: &Value) -> Change {
    let name = record["eventName"].as_str().unwrap_or_default();
    let change = if name.starts_with("ObjectCreated:") {
        ObjectChange::Written
    } else if name.starts_with("ObjectRemoved:") {
        ObjectChange::Removed
    } else {
        return Err(format!(
            "event {name:?} is not an object created or removed"
        ));
    };
    let from = record["s3"]["bucket"]["name"].as_str().unwrap_or_default();
    if from != bucket {
        return Err(format!(
            "an event of bucket {from:?}; this storage reads {bucket:?}"
        ));
    }
    let encoded = record["s3"]["object"]["key"]
        .as_str()
        .ok_or("a record without s3.object.key")?;
    let key: String = url::form_urlencoded::parse(format!("k={encoded}").as_bytes())
        .next()
        .map(|(_, key)| key.into_owned())
        .unwrap_or_default();
    if key.is_empty() {
        return Err("a record with an empty key".into());
    }
    Ok((key, change))
}

/// An EventBridge `Object Created` / `Object Deleted` event (its key is
/// not encoded).
fn eventbridge_change(bucket: &str, event: &Value) -> Change {
    let change = match event["detail-type"].as_str().unwrap_or_default() {
        "Object Created" => ObjectChange::Written,
        "Object Deleted" => ObjectChange::Removed,
        other => {
            return Err(format!(
                "EventBridge event {other:?} is not an object created or deleted"
            ))
        }
    };
    let from = event["detail"]["bucket"]["name"]
        .as_str()
        .unwrap_or_default();
    if from != bucket {
        return Err(format!(
            "an event of bucket {from:?}; this storage reads {bucket:?}"
        ));
    }
    match event["detail"]["object"]["key"].as_str() {
        Some(key) if !key.is_empty() => Ok((key.to_string(), change)),
        _ => Err("an event without detail.object.key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &str, bucket: &str, key: &str) -> Value {
        json!({"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": event,
               "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}}})
    }

    fn batch_of(bodies: &[String]) -> EventBatch {
        let mut batch = EventBatch::default();
        for (i, body) in bodies.iter().enumerate() {
            let message = json!({"MessageId": format!("m{i}"), "ReceiptHandle": format!("r{i}"), "Body": body});
            add_message("photos", &message, &mut batch);
        }
        batch
    }

    #[test]
    fn s3_sns_and_eventbridge_messages_name_their_objects() {
        let direct = json!({"Records": [
            record("ObjectCreated:Put", "photos", "a+b%2Bc%C3%BC.jpg"),
            record("ObjectRemoved:Delete", "photos", "old.jpg"),
        ]})
        .to_string();
        let sns = json!({"Type": "Notification", "MessageId": "n", "TopicArn": "arn:aws:sns:x",
                         "Message": json!({"Records": [record("ObjectCreated:Copy", "photos", "via%20sns.jpg")]}).to_string()})
        .to_string();
        let bridge = json!({"version": "0", "detail-type": "Object Created", "source": "aws.s3",
                            "detail": {"bucket": {"name": "photos"}, "object": {"key": "bridge b.jpg", "size": 1}}})
        .to_string();
        let batch = batch_of(&[direct, sns, bridge]);
        let keys: Vec<_> = batch
            .events
            .iter()
            .map(|e| (e.key.as_str(), e.change))
            .collect();
        assert_eq!(
            keys,
            [
                ("a b+cü.jpg", ObjectChange::Written),
                ("old.jpg", ObjectChange::Removed),
                ("via sns.jpg", ObjectChange::Written),
                ("bridge b.jpg", ObjectChange::Written),
            ]
        );
        assert_eq!(batch.events[0].message.as_deref(), Some("m0"));
        assert_eq!(batch.receipts, ["r0", "r1", "r2"]);
        assert!(batch.ignored.is_empty(), "{:?}", batch.ignored);
    }

    #[test]
    fn test_events_other_buckets_and_poison_are_ignored_and_still_deleted() {
        let test_event =
            json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"})
                .to_string();
        let other = json!({"Records": [record("ObjectCreated:Put", "other", "x.jpg")]}).to_string();
        let restore =
            json!({"Records": [record("ObjectRestore:Completed", "photos", "x.jpg")]}).to_string();
        let batch = batch_of(&[test_event, other, restore, "not json".into(), "[]".into()]);
        assert!(batch.events.is_empty());
        assert_eq!(batch.ignored.len(), 5, "{:?}", batch.ignored);
        assert!(batch.ignored[1].contains("\"other\""));
        assert!(batch.ignored[3].contains("not JSON"));
        assert_eq!(batch.receipts.len(), 5);
    }
}

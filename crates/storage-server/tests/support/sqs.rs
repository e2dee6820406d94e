//! A moto bucket whose event notifications go to an SQS queue, and a
//! proxy in front of moto that counts bucket listings: the parts of the
//! event-driven sync tests and benchmark on S3.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde_json::{json, Value};
use storage_testing::S3Server;

use super::buckets::s3_builder;
use super::serve_on_loopback;

/// A bucket of its own on moto whose events go to a queue of its own.
pub struct NotifiedBucket {
    pub moto: S3Server,
    pub bucket: String,
    pub queue_url: String,
    pub store: AmazonS3,
}

/// What moto needs to tell the service a request is for: a SigV4
/// credential scope (moto checks no signature).
fn scope(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

async fn sqs_call(moto: &S3Server, action: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/", moto.endpoint))
        .header("authorization", scope("sqs"))
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .header("content-type", "application/x-amz-json-1.0")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "SQS {action}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

impl NotifiedBucket {
    pub async fn create() -> Self {
        let moto = storage_testing::moto();
        let name = format!("sqs-{}", uuid::Uuid::new_v4().simple());
        let client = reqwest::Client::new();
        let put = client
            .put(format!("{}/{name}", moto.endpoint))
            .header("authorization", scope("s3"))
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.text().await.unwrap());
        let queue = sqs_call(&moto, "CreateQueue", json!({"QueueName": name})).await;
        let queue_url = queue["QueueUrl"].as_str().unwrap().to_string();
        let config = format!(
            "<NotificationConfiguration><QueueConfiguration>\
             <Queue>arn:aws:sqs:us-east-1:123456789012:{name}</Queue>\
             <Event>s3:ObjectCreated:*</Event><Event>s3:ObjectRemoved:*</Event>\
             </QueueConfiguration></NotificationConfiguration>"
        );
        let notified = client
            .put(format!("{}/{name}?notification", moto.endpoint))
            .header("authorization", scope("s3"))
            .header("content-type", "application/xml")
            .body(config)
            .send()
            .await
            .unwrap();
        assert!(
            notified.status().is_success(),
            "{}",
            notified.text().await.unwrap()
        );
        let store = s3_builder(&moto)
            .with_bucket_name(&name)
            .with_retry(storage_testing::quick_retry())
            .build()
            .unwrap();
        Self {
            moto,
            bucket: name,
            queue_url,
            store,
        }
    }

    /// Puts `keys` (16 at a time).
    pub async fn put(&self, keys: impl Iterator<Item = String>) {
        futures::stream::iter(keys)
            .for_each_concurrent(16, |key| async move {
                self.store
                    .put(&Path::from(key.as_str()), "x".into())
                    .await
                    .unwrap_or_else(|e| panic!("putting {key}: {e}"));
            })
            .await;
    }

    pub async fn delete(&self, key: &str) {
        self.store.delete(&Path::from(key)).await.unwrap();
    }

    /// A storage body over `prefix`, through `endpoint` (moto or a proxy).
    pub fn storage(&self, project: i64, endpoint: &str, extra: Value) -> Value {
        let mut body = json!({
            "project": project,
            "bucket": self.bucket,
            "prefix": "in",
            "use_blob_urls": true,
            "s3_endpoint": endpoint,
            "aws_access_key_id": self.moto.access_key_id,
            "aws_secret_access_key": self.moto.secret_access_key,
            "region_name": "us-east-1",
            "sqs_queue_url": self.queue_url,
            "on_object_deleted": "delete",
            "deletion_guard": 100,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    /// Sends a message of our own to the queue (a poison message, a
    /// notification of another bucket).
    pub async fn send(&self, body: &str) {
        sqs_call(
            &self.moto,
            "SendMessage",
            json!({"QueueUrl": self.queue_url, "MessageBody": body}),
        )
        .await;
    }
}

/// A proxy in front of moto that counts the bucket listings it forwards.
pub struct ListingCounter {
    pub endpoint: String,
    listings: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl ListingCounter {
    pub async fn start(upstream: String) -> Self {
        let listings = Arc::new(AtomicUsize::new(0));
        let counted = listings.clone();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (client, upstream, counted) = (client.clone(), upstream.clone(), counted.clone());
            async move {
                let (parts, body) = request.into_parts();
                let query = parts.uri.query().unwrap_or_default();
                if parts.method == http::Method::GET && query.contains("list-type=") {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let mut forwarded = client.request(
                    parts.method.clone(),
                    format!("{upstream}{}", parts.uri.path_and_query().unwrap()),
                );
                for (name, value) in &parts.headers {
                    if name != http::header::HOST {
                        forwarded = forwarded.header(name, value);
                    }
                }
                let answer = forwarded.body(body).send().await.unwrap();
                let mut response = axum::response::Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    response = response.header(name, value);
                }
                response
                    .body(axum::body::Body::from(answer.bytes().await.unwrap()))
                    .unwrap()
            }
        });
        let (endpoint, server) = serve_on_loopback(app).await;
        Self {
            endpoint,
            listings,
            _server: server,
        }
    }

    pub fn count(&self) -> usize {
        self.listings.load(Ordering::SeqCst)
    }
}

//! Posting Label Studio's webhooks: what is the same for both engines (the
//! project fields its webhook serializer writes, the client that posts
//! under the server's endpoint policy, retries). Which webhooks and what
//! body are read per engine (`shared/webhooks.rs`).

use std::time::Duration;

use object_store::client::{HttpClient, HttpConnector, HttpRequestBody};
use object_store::ClientOptions;
use serde_json::{Map, Value};
use storage_core::{EndpointPolicy, Error, Result};

/// How a project column is written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Column {
    Int,
    Text,
    Bool,
    Json,
    Time,
    /// A secret: written as `null`.
    Withheld,
}

/// The project's fields in `ProjectWebhookSerializer`'s order after its
/// counts: `(key, column, kind)`.
pub(crate) const PROJECT_FIELDS: &[(&str, &str, Column)] = &[
    ("title", "title", Column::Text),
    ("description", "description", Column::Text),
    ("label_config", "label_config", Column::Text),
    ("parsed_label_config", "parsed_label_config", Column::Json),
    ("label_config_hash", "label_config_hash", Column::Int),
    ("expert_instruction", "expert_instruction", Column::Text),
    ("show_instruction", "show_instruction", Column::Bool),
    ("show_skip_button", "show_skip_button", Column::Bool),
    (
        "enable_empty_annotation",
        "enable_empty_annotation",
        Column::Bool,
    ),
    (
        "reveal_preannotations_interactively",
        "reveal_preannotations_interactively",
        Column::Bool,
    ),
    (
        "show_annotation_history",
        "show_annotation_history",
        Column::Bool,
    ),
    (
        "show_collab_predictions",
        "show_collab_predictions",
        Column::Bool,
    ),
    (
        "evaluate_predictions_automatically",
        "evaluate_predictions_automatically",
        Column::Bool,
    ),
    ("token", "token", Column::Withheld),
    ("result_count", "result_count", Column::Int),
    ("color", "color", Column::Text),
    ("maximum_annotations", "maximum_annotations", Column::Int),
    (
        "min_annotations_to_start_training",
        "min_annotations_to_start_training",
        Column::Int,
    ),
    ("control_weights", "control_weights", Column::Json),
    ("model_version", "model_version", Column::Text),
    ("data_types", "data_types", Column::Json),
    ("is_draft", "is_draft", Column::Bool),
    ("is_published", "is_published", Column::Bool),
    ("created_at", "created_at", Column::Time),
    ("updated_at", "updated_at", Column::Time),
    ("sampling", "sampling", Column::Text),
    ("skip_queue", "skip_queue", Column::Text),
    (
        "show_ground_truth_first",
        "show_ground_truth_first",
        Column::Bool,
    ),
    (
        "annotator_evaluation_enabled",
        "annotator_evaluation_enabled",
        Column::Bool,
    ),
    ("show_overlap_first", "show_overlap_first", Column::Bool),
    (
        "overlap_cohort_percentage",
        "overlap_cohort_percentage",
        Column::Int,
    ),
    ("task_data_login", "task_data_login", Column::Withheld),
    ("task_data_password", "task_data_password", Column::Withheld),
    ("pinned_at", "pinned_at", Column::Time),
    ("custom_task_lock_ttl", "custom_task_lock_ttl", Column::Int),
    ("deleted_at", "deleted_at", Column::Time),
    ("purge_at", "purge_at", Column::Time),
    ("search_vector", "search_vector", Column::Text),
    ("organization", "organization_id", Column::Int),
    ("created_by", "created_by_id", Column::Int),
    ("deleted_by", "deleted_by_id", Column::Int),
];

/// One webhook's request.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) url: String,
    pub(crate) headers: Map<String, Value>,
    pub(crate) body: Value,
}

/// Attempts at one delivery (Label Studio makes one).
const ATTEMPTS: u32 = 3;

/// Posts webhooks under an endpoint policy (checked at every connection).
#[derive(Debug)]
pub(crate) struct WebhookSender {
    client: HttpClient,
}

impl WebhookSender {
    pub(crate) fn new(policy: EndpointPolicy) -> Result<Self> {
        let client = policy
            .connector()
            .with_timeout(Duration::from_secs(10))
            .connect(&ClientOptions::new().with_allow_http(true))
            .map_err(|err| Error::backend("building the webhook HTTP client", err))?;
        Ok(Self { client })
    }

    /// Posts every delivery, each tried up to [`ATTEMPTS`] times (waiting
    /// 1 s, then 2 s) until it gets a 2xx; failures are logged without the
    /// URL's query (it may carry a token).
    pub(crate) async fn send_all(&self, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let body = serde_json::to_vec(&delivery.body).unwrap_or_default();
            let shown = shown_url(&delivery.url);
            for attempt in 1..=ATTEMPTS {
                match self.post(&delivery, body.clone()).await {
                    Ok(()) => break,
                    Err(why) if attempt == ATTEMPTS => {
                        tracing::warn!(url = %shown, error = %why, "a TASKS_CREATED webhook failed; given up");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await,
                }
            }
        }
    }

    async fn post(&self, delivery: &Delivery, body: Vec<u8>) -> std::result::Result<(), String> {
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(&delivery.url)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &delivery.headers {
            if let Some(value) = value.as_str() {
                request = request.header(name.as_str(), value);
            }
        }
        let request = request
            .body(HttpRequestBody::from(bytes::Bytes::from(body)))
            .map_err(|err| err.to_string())?;
        let response = self.client.execute(request).await.map_err(|err| {
            err.to_string()
                .replace(&delivery.url, &shown_url(&delivery.url))
        })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

/// `url` without its query and fragment, for messages.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "the webhook URL".into(),
    }
}

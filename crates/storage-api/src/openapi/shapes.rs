//! The bodies whose shape does not depend on the configuration, derived
//! with utoipa: the error envelope, the type list, and the example host's
//! projects, tasks and annotations. The handlers build these bodies as JSON
//! (Label Studio's field order and extra fields), so the types describe
//! them and are never built.

#![allow(dead_code)]

use std::collections::HashMap;

use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{OpenApi, PartialSchema, ToSchema};

/// `exc_info`: always `null`.
fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

/// Label Studio's error envelope
#[derive(ToSchema)]
pub(crate) struct Error {
    /// A unique id of this error
    id: String,
    status_code: i64,
    version: String,
    detail: String,
    #[schema(schema_with = null)]
    exc_info: Value,
    /// Messages per field (`non_field_errors`: about no single field)
    #[schema(required = false)]
    validation_errors: HashMap<String, Vec<String>>,
}

#[derive(ToSchema)]
pub(crate) struct Message {
    message: String,
}

/// The objects a sync would import (`POST /api/storages/{type}/files`)
#[derive(ToSchema)]
pub(crate) struct StorageFiles {
    /// In listing order; a last entry with `key: null` means more objects
    /// follow, one with `key: "... storage scan timeout reached ..."` that
    /// listing took over 30 s
    files: Vec<StorageFile>,
}

/// One object of a preview
#[derive(ToSchema)]
pub(crate) struct StorageFile {
    /// The key a sync links the task to (the absolute path for local files)
    key: Option<String>,
    /// Last modified
    #[schema(format = DateTime)]
    last_modified: Option<String>,
    /// Size in bytes
    size: Option<u64>,
}

#[derive(ToSchema)]
pub(crate) struct StorageType {
    name: String,
    title: String,
}

#[derive(ToSchema)]
pub(crate) struct ProxyError {
    error: String,
    detail: String,
}

#[derive(ToSchema)]
pub(crate) struct ProjectCreate {
    #[schema(max_length = 50)]
    title: Option<String>,
    description: Option<String>,
    /// Labelling config (XML)
    label_config: Option<String>,
}

/// Label Studio's `UserSimple`.
#[derive(ToSchema)]
pub(crate) struct UserSimple {
    id: i64,
    first_name: String,
    last_name: String,
    email: String,
    avatar: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct Project {
    #[schema(read_only)]
    id: i64,
    title: String,
    description: String,
    label_config: String,
    #[schema(read_only, required = false)]
    created_by: UserSimple,
    #[schema(read_only, required = false, format = DateTime)]
    created_at: String,
    #[schema(read_only, required = false)]
    task_number: i64,
    /// Tasks with enough annotations
    #[schema(read_only, required = false)]
    finished_task_number: i64,
    /// Annotations not cancelled
    #[schema(read_only, required = false)]
    total_annotations_number: i64,
    #[schema(read_only, required = false)]
    total_predictions_number: i64,
    /// Tasks with an annotation neither cancelled nor ground truth
    #[schema(read_only, required = false)]
    num_tasks_with_annotations: i64,
    /// Annotations neither cancelled nor ground truth
    #[schema(read_only, required = false)]
    useful_annotation_number: i64,
    #[schema(read_only, required = false)]
    ground_truth_number: i64,
    /// Cancelled (skipped) annotations
    #[schema(read_only, required = false)]
    skipped_annotations_number: i64,
    /// The caller's queue: unfinished tasks the caller did not annotate, plus those the caller did
    #[schema(read_only, required = false)]
    queue_total: i64,
    /// Tasks the caller annotated
    #[schema(read_only, required = false)]
    queue_done: i64,
    /// The control tags of the label config
    #[schema(read_only, required = false, value_type = Object)]
    parsed_label_config: Value,
    /// Weights of each control tag and label
    #[schema(read_only, required = false, value_type = Object)]
    control_weights: Value,
}

/// A page of projects.
#[derive(ToSchema)]
pub(crate) struct ProjectList {
    count: i64,
    /// The next page's URL
    next: Option<String>,
    /// The previous page's URL
    previous: Option<String>,
    results: Vec<Project>,
}

/// The caller, as Label Studio's `WhoAmIUser`.
#[derive(ToSchema)]
pub(crate) struct WhoAmIUser {
    id: i64,
    first_name: String,
    last_name: String,
    username: String,
    email: String,
    #[schema(format = DateTime)]
    last_activity: String,
    avatar: Option<String>,
    initials: String,
    phone: String,
    active_organization: i64,
    #[schema(format = DateTime)]
    date_joined: String,
    permissions: Vec<String>,
}

/// A task: its `data`, or the data itself; optional `annotations`, `predictions`, `meta`
#[derive(ToSchema)]
pub(crate) struct TaskImport {
    #[schema(required = false, value_type = Object)]
    data: Value,
    #[schema(required = false, value_type = Vec<Object>)]
    annotations: Value,
    #[schema(required = false, value_type = Vec<Object>)]
    predictions: Value,
    #[schema(required = false, value_type = Object)]
    meta: Value,
}

/// One task or a list of them.
#[derive(ToSchema)]
#[serde(untagged)]
pub(crate) enum TaskImportBody {
    Many(Vec<TaskImport>),
    One(Box<TaskImport>),
}

#[derive(ToSchema)]
pub(crate) struct ImportResult {
    task_count: i64,
    annotation_count: i64,
    prediction_count: i64,
    #[schema(required = false)]
    duration: f64,
}

#[derive(ToSchema)]
pub(crate) struct Task {
    #[schema(read_only)]
    id: i64,
    #[schema(value_type = Object)]
    data: Value,
    #[schema(required = false, value_type = Object)]
    meta: Value,
    #[schema(required = false, value_type = Vec<Object>)]
    annotations: Value,
    #[schema(required = false, value_type = Vec<Object>)]
    predictions: Value,
    project: i64,
    storage_filename: Option<String>,
    /// Extension: false once a sync following the bucket
    /// (`on_object_deleted`, `on_object_changed`) found the object gone, or
    /// changed under the task's annotations; null without a storage link.
    #[schema(read_only, required = false)]
    storage_object_exists: Option<bool>,
    #[schema(read_only, required = false, format = DateTime)]
    created_at: String,
    #[schema(read_only, required = false, format = DateTime)]
    updated_at: String,
}

#[derive(ToSchema)]
pub(crate) struct TaskList {
    #[schema(required = false)]
    total_annotations: i64,
    #[schema(required = false)]
    total_predictions: i64,
    total: i64,
    tasks: Vec<Task>,
}

#[derive(ToSchema)]
pub(crate) struct AnnotationCreate {
    /// The labelling result
    #[schema(value_type = Vec<Object>)]
    result: Value,
    #[schema(required = false)]
    was_cancelled: bool,
    #[schema(required = false)]
    ground_truth: bool,
    lead_time: Option<f64>,
}

/// The fields of [`AnnotationCreate`], none required.
pub(crate) struct AnnotationUpdate;

impl PartialSchema for AnnotationUpdate {
    fn schema() -> RefOr<Schema> {
        let mut schema = AnnotationCreate::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.required.clear();
        }
        schema
    }
}

impl ToSchema for AnnotationUpdate {}

#[derive(ToSchema)]
pub(crate) struct Annotation {
    #[schema(read_only)]
    id: i64,
    #[schema(required = false, value_type = Vec<Value>)]
    result: Value,
    #[schema(required = false)]
    task: i64,
}

/// The schemas every configuration documents.
#[derive(OpenApi)]
#[openapi(components(schemas(
    Error,
    Message,
    StorageType,
    ProxyError,
    StorageFiles,
    StorageFile
)))]
pub(crate) struct Common;

/// The schemas of the example host's routes.
#[derive(OpenApi)]
#[openapi(components(schemas(
    ProjectCreate,
    UserSimple,
    Project,
    ProjectList,
    WhoAmIUser,
    TaskImport,
    ImportResult,
    Task,
    TaskList,
    AnnotationCreate,
    AnnotationUpdate,
    Annotation
)))]
pub(crate) struct Host;

/// One check of a validation report
#[derive(ToSchema)]
pub(crate) struct ValidationCheck {
    /// `configuration`, `credentials`, `list`, `read`, `presign` (import),
    /// `write`, `delete` (export)
    name: String,
    #[schema(value_type = String, example = "passed")]
    /// `passed`, `failed`, or `skipped` (does not apply, or a check it needs failed)
    status: String,
    duration_ms: u64,
    /// What it found, or what to fix; never a secret
    message: String,
}

/// Extension: the answer of `validate?report=true`
#[derive(ToSchema)]
pub(crate) struct ValidationReport {
    /// No check failed
    valid: bool,
    /// In the order they ran
    checks: Vec<ValidationCheck>,
}

/// How a webhook's deliveries fare (extension)
#[derive(ToSchema)]
pub(crate) struct WebhookDelivery {
    #[schema(format = DateTime)]
    last_attempt_at: Option<String>,
    /// HTTP status of the last attempt; null when no answer came
    last_status: Option<u16>,
    /// Why the last attempt failed; null when it succeeded
    last_error: Option<String>,
    /// Events delivered
    delivered: u64,
    /// Events given up after their retries ran out
    failed: u64,
    /// Events waiting (failing or not)
    pending: u64,
}

/// A webhook, in Label Studio's field order, then the extensions
#[derive(ToSchema)]
pub(crate) struct Webhook {
    #[schema(read_only)]
    id: i64,
    #[schema(read_only)]
    organization: i64,
    project: Option<i64>,
    #[schema(max_length = 2048)]
    url: String,
    send_payload: bool,
    send_for_all_actions: bool,
    /// Extra request headers (string values); values of headers named like
    /// credentials are shown as `********` (sent back so, they keep the
    /// stored value)
    #[schema(value_type = Object)]
    headers: Value,
    is_active: bool,
    /// Action names (`GET /api/webhooks/info`)
    actions: Vec<String>,
    #[schema(read_only, format = DateTime)]
    created_at: String,
    #[schema(read_only, format = DateTime)]
    updated_at: String,
    /// Failed attempts since the last accepted one
    #[schema(read_only)]
    consecutive_failures: u64,
    /// Extension: whether deliveries are signed (the secret is never shown)
    #[schema(read_only)]
    has_secret: bool,
    #[schema(read_only)]
    delivery: WebhookDelivery,
}

/// A webhook's fields as a client sends them
#[derive(ToSchema)]
pub(crate) struct WebhookWrite {
    /// Required at creation; cannot change
    #[schema(required = false)]
    project: i64,
    /// Required at creation; under the server's endpoint policy
    #[schema(required = false, max_length = 2048)]
    url: String,
    #[schema(required = false, default = true)]
    send_payload: bool,
    #[schema(required = false, default = true)]
    send_for_all_actions: bool,
    /// At most 10, names of letters, digits, `-` and `_`, string values
    #[schema(required = false, value_type = Object)]
    headers: Value,
    #[schema(required = false, default = true)]
    is_active: bool,
    /// Left as they are when not sent (Label Studio clears them)
    #[schema(required = false)]
    actions: Vec<String>,
    /// Extension: the HMAC-SHA256 key of the `webhook-signature` header
    /// (Standard Webhooks; `whsec_<base64>` or any text); write-only, `""` or
    /// null removes it
    #[schema(required = false, write_only, max_length = 1024)]
    secret: Option<String>,
}

/// One action of the catalogue
#[derive(ToSchema)]
pub(crate) struct WebhookAction {
    name: String,
    description: String,
    /// The body key carrying the payload
    key: String,
    #[schema(rename = "organization-only")]
    organization_only: bool,
}

/// The webhook schemas, components of the webhook routes.
#[derive(OpenApi)]
#[openapi(components(schemas(Webhook, WebhookWrite, WebhookDelivery, WebhookAction)))]
pub(crate) struct Webhooks;

/// The validation report's schemas.
#[derive(OpenApi)]
#[openapi(components(schemas(ValidationReport, ValidationCheck)))]
pub(crate) struct Validation;

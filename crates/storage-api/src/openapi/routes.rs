//! The operations whose shape does not depend on the configuration,
//! derived with `#[utoipa::path]`: this document, the file routes and the
//! example host's routes. The functions only carry the attributes; the
//! handlers are in `local_files`, `resolve` and `host`. Every operation that
//! needs a token also answers 401, added for all of them in `mod.rs`.

#![allow(dead_code)]

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, Response};
use utoipa::{OpenApi, PartialSchema, ToResponse};

use super::shapes::{
    Annotation, AnnotationCreate, ImportResult, Project, ProjectList, ProxyError, Task,
    TaskImportBody, TaskList, Webhook, WebhookAction, WebhookWrite, WhoAmIUser,
};
use super::{error_response, unauthorized};

/// Any body (files and storage objects, whatever their type).
pub(crate) struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// The error responses operations share, as `components/responses`.
macro_rules! shared_responses {
    ($($name:ident: $description:expr),* $(,)?) => {$(
        pub(crate) struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::T(error_response($description)))
            }
        }
    )*};
}

shared_responses! {
    BadRequest: "Invalid input; `validation_errors` names the fields",
    Forbidden: "Not permitted",
    NotFound: "No such object, or not visible to the caller",
    Conflict: "The storage's sync state does not allow this now",
    PayloadTooLarge: "The request body is larger than the server's limit",
}

pub(crate) struct Unauthorized;

impl<'r> ToResponse<'r> for Unauthorized {
    fn response() -> (&'r str, RefOr<Response>) {
        ("Unauthorized", RefOr::T(unauthorized()))
    }
}

#[utoipa::path(
    get, path = "/api/schema", operation_id = "api_schema_read", tag = "Schema",
    summary = "This OpenAPI document", description = "Needs no authentication.",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)),
)]
fn schema() {}

#[utoipa::path(
    get, path = "/health", operation_id = "health_read", tag = "Status",
    summary = "Whether the server and its database answer",
    description = "Needs no authentication. Label Studio answers `{\"status\": \"UP\"}` only.",
    security(()),
    responses(
        (status = 200, description = "Up", body = Object,
            example = json!({"status": "UP", "database": "UP"})),
        (status = 503, description = "The database does not answer within 5 s", body = Object,
            example = json!({"status": "DOWN", "database": "DOWN"})),
    ),
)]
fn health() {}

#[utoipa::path(
    get, path = "/api/version", operation_id = "api_version_retrieve", tag = "Status",
    summary = "Versions",
    description = "Needs no authentication. `release` is the Label Studio release whose API this server \
        speaks; `storage-connections.version` is this server's own.",
    security(()),
    responses((status = 200, description = "Label Studio's version object", body = Object)),
)]
fn version() {}

#[utoipa::path(
    get, path = "/data/local-files", operation_id = "data_local_files_read", tag = "Files",
    summary = "A file of a local-files import storage",
    description = "Serves a file below the document root that a local import storage of a visible project holds.",
    params(("d" = String, Query, description = "Path of the file, relative to the document root")),
    responses(
        (status = 200, description = "The file", body = inline(Binary), content_type = "*/*"),
        (status = 206, description = "The requested byte range (`Range`)", body = inline(Binary), content_type = "*/*"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 416, description = "The range cannot be satisfied"),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
fn local_files() {}

/// The resolver of one owner (task or project) under one alias.
macro_rules! resolver {
    ($name:ident, $path:tt, $id:tt, $summary:tt, $owner_id:tt) => {
        #[utoipa::path(
            get, path = $path, operation_id = $id, tag = "Files", summary = $summary,
            description = "Redirects to a signed URL when the storage has `presign`, otherwise streams the object.",
            params(
                ("id" = i64, Path, description = $owner_id),
                ("fileuri" = String, Query, description = "URL-safe base64 of the storage URI (`s3://bucket/key`)"),
            ),
            responses(
                (status = 200, description = "The object", body = inline(Binary), content_type = "*/*"),
                (status = 206, description = "The requested byte range (`Range`)", body = inline(Binary), content_type = "*/*"),
                (status = 303, description = "Redirect to a signed URL", headers(("Location" = String))),
                (status = 304, description = "Not modified (`If-None-Match`)"),
                (status = 416, description = "The range cannot be satisfied"),
                (status = 400, response = BadRequest),
                (status = 404, response = NotFound),
                (status = 424, description = "Reading from the storage failed", body = ProxyError),
            ),
        )]
        fn $name() {}
    };
}

resolver!(
    tasks_resolve,
    "/tasks/{id}/resolve",
    "tasks_resolve_read",
    "Open a storage URI of a task",
    "Task id"
);
resolver!(
    tasks_presign,
    "/tasks/{id}/presign",
    "tasks_presign_read",
    "Open a storage URI of a task",
    "Task id"
);
resolver!(
    projects_resolve,
    "/projects/{id}/resolve",
    "projects_resolve_read",
    "Open a storage URI of a project",
    "Project id"
);
resolver!(
    projects_presign,
    "/projects/{id}/presign",
    "projects_presign_read",
    "Open a storage URI of a project",
    "Project id"
);

#[utoipa::path(
    post, path = "/api/projects", operation_id = "api_projects_create", tag = "Projects",
    summary = "Create a project",
    // A reference, not the type: the body is optional, not nullable.
    request_body = ref("#/components/schemas/ProjectCreate"),
    responses(
        (status = 201, description = "The project", body = Project, links(
            ("read" = (operation_id = "api_projects_read", parameters(("id" = "$response.body#/id")))),
            ("import" = (operation_id = "api_projects_import_create", parameters(("id" = "$response.body#/id")))),
            ("tasks" = (operation_id = "api_tasks_list", parameters(("project" = "$response.body#/id")))),
            ("storages" = (operation_id = "api_storages_list", parameters(("project" = "$response.body#/id")))),
        )),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
    ),
)]
fn create_project() {}

#[utoipa::path(
    get, path = "/api/projects", operation_id = "api_projects_list", tag = "Projects",
    summary = "List the projects of the caller's organisation",
    description = "Newest first. A page past the last is a 404 \"Invalid page.\".",
    params(
        ("page" = Option<String>, Query, description = "Page number (default 1) or `last`"),
        ("page_size" = Option<i64>, Query, minimum = 1, description = "Projects per page (default 30, at most 100)"),
    ),
    responses(
        (status = 200, description = "A page of projects", body = ProjectList),
        (status = 404, response = NotFound),
    ),
)]
fn list_projects() {}

#[utoipa::path(
    get, path = "/api/projects/{id}", operation_id = "api_projects_read", tag = "Projects",
    summary = "Get a project",
    params(("id" = i64, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project", body = Project),
        (status = 404, response = NotFound),
    ),
)]
fn get_project() {}

#[utoipa::path(
    post, path = "/api/projects/{id}/import", operation_id = "api_projects_import_create",
    tag = "Projects", summary = "Import tasks into a project",
    params(("id" = i64, Path, description = "Project id")),
    request_body = inline(TaskImportBody),
    responses(
        (status = 201, description = "What was imported", body = ImportResult),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
    ),
)]
fn import_tasks() {}

#[utoipa::path(
    get, path = "/api/tasks", operation_id = "api_tasks_list", tag = "Tasks",
    summary = "List the tasks of a project",
    params(
        ("project" = i64, Query, description = "Project id"),
        ("page" = Option<String>, Query, description = "Page number (default 1) or `last`; past the last page a 404 \"Invalid page.\""),
        ("page_size" = Option<i64>, Query, minimum = 1, description = "Tasks per page (default 100, at most 10000)"),
        ("resolve_uri" = Option<bool>, Query, description = "Rewrite storage URIs in task data to this server's resolver (default true)"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = TaskList, links(
            ("task" = (operation_id = "api_tasks_read", parameters(("id" = "$response.body#/tasks/0/id")))),
            ("annotate" = (operation_id = "api_tasks_annotations_create", parameters(("id" = "$response.body#/tasks/0/id")))),
            ("resolve" = (operation_id = "tasks_resolve_read", parameters(("id" = "$response.body#/tasks/0/id")))),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
)]
fn list_tasks() {}

#[utoipa::path(
    get, path = "/api/tasks/{id}", operation_id = "api_tasks_read", tag = "Tasks",
    summary = "Get a task",
    params(
        ("id" = i64, Path, description = "Task id"),
        ("resolve_uri" = Option<bool>, Query, description = "Rewrite storage URIs in task data to this server's resolver (default true)"),
    ),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 404, response = NotFound),
    ),
)]
fn get_task() {}

#[utoipa::path(
    post, path = "/api/tasks/{id}/annotations", operation_id = "api_tasks_annotations_create",
    tag = "Annotations", summary = "Annotate a task",
    description = "Saves, then writes the annotation to every export storage of the project.",
    params(("id" = i64, Path, description = "Task id")),
    request_body = AnnotationCreate,
    responses(
        (status = 201, description = "The annotation", body = Annotation, links(
            ("update" = (operation_id = "api_annotations_partial_update", parameters(("id" = "$response.body#/id")))),
            ("delete" = (operation_id = "api_annotations_delete", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
    ),
)]
fn create_annotation() {}

#[utoipa::path(
    get, path = "/api/tasks/{id}/annotations", operation_id = "api_tasks_annotations_list",
    tag = "Annotations", summary = "List the annotations of a task",
    description = "The annotations that are not cancelled, by id.",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 200, description = "The annotations", body = Vec<Annotation>),
        (status = 404, response = NotFound),
    ),
)]
fn list_annotations() {}

#[utoipa::path(
    get, path = "/api/annotations/{id}", operation_id = "api_annotations_read",
    tag = "Annotations", summary = "Get an annotation",
    params(("id" = i64, Path, description = "Annotation id")),
    responses(
        (status = 200, description = "The annotation", body = Annotation),
        (status = 404, response = NotFound),
    ),
)]
fn get_annotation() {}

#[utoipa::path(
    get, path = "/api/current-user/whoami", operation_id = "api_current_user_whoami_read",
    tag = "Users", summary = "The caller",
    responses(
        (status = 200, description = "The caller's account", body = WhoAmIUser),
    ),
)]
fn whoami() {}

#[utoipa::path(
    patch, path = "/api/annotations/{id}", operation_id = "api_annotations_partial_update",
    tag = "Annotations", summary = "Update an annotation",
    description = "Updates, then writes the annotation to every export storage again.",
    params(("id" = i64, Path, description = "Annotation id")),
    request_body = ref("#/components/schemas/AnnotationUpdate"),
    responses(
        (status = 200, description = "The annotation", body = Annotation),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
    ),
)]
fn update_annotation() {}

#[utoipa::path(
    delete, path = "/api/annotations/{id}", operation_id = "api_annotations_delete",
    tag = "Annotations", summary = "Delete an annotation",
    description = "Also deletes its exported objects in storages with `can_delete_objects`.",
    params(("id" = i64, Path, description = "Annotation id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
    ),
)]
fn delete_annotation() {}

#[utoipa::path(
    get, path = "/api/webhooks", operation_id = "api_webhooks_list", tag = "Webhooks",
    summary = "List webhooks",
    description = "The webhooks of the caller's organisation, as a plain array.",
    params(("project" = Option<String>, Query, description = "A project id, or `isnull` for organisation webhooks")),
    responses(
        (status = 200, description = "The webhooks", body = Vec<Webhook>),
        (status = 400, response = BadRequest),
    ),
)]
fn list_webhooks() {}

#[utoipa::path(
    post, path = "/api/webhooks", operation_id = "api_webhooks_create", tag = "Webhooks",
    summary = "Create a webhook",
    description = "`project` and `url` are required; a project that is missing or not visible is a 404 `Project not found.`",
    request_body = WebhookWrite,
    responses(
        (status = 201, description = "The webhook", body = Webhook, links(
            ("get" = (operation_id = "api_webhooks_read", parameters(("id" = "$response.body#/id")))),
            ("update" = (operation_id = "api_webhooks_partial_update", parameters(("id" = "$response.body#/id")))),
            ("replace" = (operation_id = "api_webhooks_update", parameters(("id" = "$response.body#/id")))),
            ("delete" = (operation_id = "api_webhooks_delete", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
    ),
)]
fn create_webhook() {}

#[utoipa::path(
    get, path = "/api/webhooks/info", operation_id = "api_webhooks_info", tag = "Webhooks",
    summary = "The action catalogue",
    description = "Needs no authentication, as in Label Studio. Extensions: `STORAGE_SYNC_STARTED`, `STORAGE_SYNC_COMPLETED`, `STORAGE_SYNC_FAILED` (body key `storage`).",
    security(()),
    params(("organization-only" = Option<bool>, Query, description = "Only the organisation-only actions (true) or the others (false)")),
    responses((status = 200, description = "Action name to its description", body = std::collections::HashMap<String, WebhookAction>)),
)]
fn webhook_info() {}

#[utoipa::path(
    get, path = "/api/webhooks/{id}", operation_id = "api_webhooks_read", tag = "Webhooks",
    summary = "Get a webhook",
    params(("id" = i64, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = Webhook),
        (status = 404, response = NotFound),
    ),
)]
fn get_webhook() {}

#[utoipa::path(
    patch, path = "/api/webhooks/{id}", operation_id = "api_webhooks_partial_update", tag = "Webhooks",
    summary = "Update a webhook",
    description = "Fields not sent keep their value, `actions` too; `project` cannot change. Switched off (`is_active: false`), it drops the events it had not received.",
    params(("id" = i64, Path, description = "Webhook id")),
    request_body = WebhookWrite,
    responses(
        (status = 200, description = "The webhook", body = Webhook),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
    ),
)]
fn update_webhook() {}

#[utoipa::path(
    put, path = "/api/webhooks/{id}", operation_id = "api_webhooks_update", tag = "Webhooks",
    summary = "Update a webhook (PUT)",
    description = "As PATCH: fields not sent keep their value.",
    params(("id" = i64, Path, description = "Webhook id")),
    request_body = WebhookWrite,
    responses(
        (status = 200, description = "The webhook", body = Webhook),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
    ),
)]
fn put_webhook() {}

#[utoipa::path(
    delete, path = "/api/webhooks/{id}", operation_id = "api_webhooks_delete", tag = "Webhooks",
    summary = "Delete a webhook",
    description = "Its undelivered events go with it.",
    params(("id" = i64, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
    ),
)]
fn delete_webhook() {}

/// The webhook routes.
#[derive(OpenApi)]
#[openapi(paths(
    list_webhooks,
    create_webhook,
    webhook_info,
    get_webhook,
    update_webhook,
    put_webhook,
    delete_webhook
))]
pub(crate) struct Webhooks;

/// The routes every configuration serves, with the shared responses.
#[derive(OpenApi)]
#[openapi(
    paths(
        schema,
        local_files,
        tasks_resolve,
        tasks_presign,
        projects_resolve,
        projects_presign
    ),
    components(responses(
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge
    ))
)]
pub(crate) struct Common;

/// The example host's routes.
#[derive(OpenApi)]
#[openapi(paths(
    health,
    version,
    list_projects,
    create_project,
    get_project,
    import_tasks,
    list_tasks,
    get_task,
    list_annotations,
    create_annotation,
    get_annotation,
    update_annotation,
    delete_annotation,
    whoami
))]
pub(crate) struct Host;

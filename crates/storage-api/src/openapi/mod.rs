//! The OpenAPI 3.1 document of the routes, built from the running
//! configuration: every registered backend's field specs become its request
//! and response schemas, so a new backend or field is documented without a
//! line here. Served at `GET /api/schema` without authentication.

use axum::extract::State;
use axum::Json;
use storage_core::fields::{common_fields, FieldSpec, FieldType};
use storage_core::{Backend, StorageKind, SyncStatus};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder,
    Ref, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, Header, InfoBuilder, OpenApi, OpenApiBuilder, Paths, RefOr,
    Required, Response, Tag,
};
use utoipa::OpenApi as _;

use crate::error::VERSION;

mod routes;
mod shapes;
use crate::ApiState;

/// The name of the security scheme (`Authorization: Token <key>`).
const TOKEN: &str = "Token";
const JSON: &str = "application/json";

/// `GET /api/schema`.
pub(crate) async fn serve(State(state): State<ApiState>) -> Json<OpenApi> {
    Json(document(&state))
}

/// The OpenAPI 3.1 document of [`crate::router`] (and of
/// [`crate::host_router`] when the state has a host store) for the backends
/// registered in `state`.
///
/// Paths are listed without a trailing slash; every one is also served with
/// one.
pub fn document(state: &ApiState) -> OpenApi {
    let backends: Vec<&dyn Backend> = state.backends().iter().map(|b| b.as_ref()).collect();
    let mut doc = Doc::default();
    doc.derived(routes::Common::openapi());
    for kind in [StorageKind::Import, StorageKind::Export] {
        doc.storage_lists(kind, &backends);
        for backend in &backends {
            doc.storage_routes(kind, *backend);
        }
    }
    if state.host().is_some() {
        doc.derived(shapes::Host::openapi());
        doc.derived(routes::Host::openapi());
    }
    if state.webhooks().is_some() {
        doc.derived(shapes::Webhooks::openapi());
        doc.derived(routes::Webhooks::openapi());
    }
    doc.derived(shapes::Validation::openapi());
    doc.shared_components();
    finish(&mut doc.paths);
    let description = "Label Studio compatible cloud-storage connections: import tasks from buckets and \
        local folders, export annotations. Every path is also served with a trailing slash. Errors use \
        Label Studio's envelope (`Error`). Authenticate with `Authorization: Token <key>`.";
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Storage connections API")
                .version(VERSION)
                .description(Some(description)),
        )
        .paths(doc.paths)
        .components(Some(doc.components))
        .security(Some([SecurityRequirement::new(
            TOKEN,
            Vec::<String>::new(),
        )]))
        .tags(Some(
            [
                ("Storages", "Import and export storage connections"),
                ("Files", "Serving local files and storage objects"),
                ("Projects", "The example host's projects and task import"),
                ("Tasks", "The example host's tasks"),
                (
                    "Annotations",
                    "The example host's annotations (saving one exports it)",
                ),
                ("Schema", "This document"),
                ("Status", "Health and versions"),
            ]
            .into_iter()
            .map(|(name, description)| {
                let mut tag = Tag::new(name);
                tag.description = Some(description.to_string());
                tag
            }),
        ))
        .build()
}

#[derive(Default)]
struct Doc {
    paths: Paths,
    components: Components,
}

/// A JSON Schema of one JSON type, `null` allowed when `nullable`.
fn typed(ty: Type, nullable: bool) -> ObjectBuilder {
    let schema_type = if nullable {
        SchemaType::from_iter([ty, Type::Null])
    } else {
        SchemaType::new(ty)
    };
    ObjectBuilder::new().schema_type(schema_type)
}

fn object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

/// An object whose values may be anything (`meta`, task `data`).
fn free_object() -> ObjectBuilder {
    object().additional_properties(Some(AdditionalProperties::FreeForm(true)))
}

fn date_time(nullable: bool) -> ObjectBuilder {
    typed(Type::String, nullable).format(Some(SchemaFormat::Custom("date-time".into())))
}

fn schema_ref(name: &str) -> Ref {
    Ref::from_schema_name(name)
}

fn array_of(items: impl Into<RefOr<Schema>>) -> ArrayBuilder {
    ArrayBuilder::new().items(items.into())
}

fn json_response(description: &str, schema: impl Into<RefOr<Schema>>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
        .build()
}

/// `response` with links to operations that take a value of its body
/// (`(link name, operation id, parameter, runtime expression)`), which
/// clients and fuzzers follow from a created object to its other operations.
fn linked(mut response: Response, links: &[(&str, &str, &str, &str)]) -> Response {
    for (name, operation, parameter, expression) in links {
        // utoipa 5.5 writes `Link::operation_id` as `operation_id`, which no
        // OpenAPI reader knows: the field goes in under its real name.
        let link = LinkBuilder::new()
            .parameter(*parameter, *expression)
            .extensions(Some(Extensions::from_iter([("operationId", *operation)])))
            .build();
        response.links.insert(name.to_string(), RefOr::T(link));
    }
    response
}

fn shared(name: &str) -> RefOr<Response> {
    RefOr::Ref(Ref::from_response_name(name))
}

fn empty_response(description: &str) -> Response {
    ResponseBuilder::new().description(description).build()
}

fn json_body(
    schema: impl Into<RefOr<Schema>>,
    required: bool,
) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
        .required(Some(if required {
            Required::True
        } else {
            Required::False
        }))
        .build()
}

fn query(
    name: &str,
    required: bool,
    schema: ObjectBuilder,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn id_param(description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(
            typed(Type::Integer, false).format(Some(SchemaFormat::Custom("int64".into()))),
        ))
        .build()
}

/// An operation (the 401 every authenticated route may give is added by
/// [`finish`]).
fn operation(id: String, tag: &str, summary: &str) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag(tag)
        .summary(Some(summary))
}

/// `s3` -> `S3`, `gcs_sa` -> `GcsSa`: the prefix of a backend's schema names.
fn pascal(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(capital)
        .collect()
}

/// `s3` -> `s3`, `gcs-sa` -> `gcs_sa`: a backend name usable in operation ids.
fn snake(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn kind_word(kind: StorageKind) -> &'static str {
    match kind {
        StorageKind::Import => "Import",
        StorageKind::Export => "Export",
    }
}

fn storage_prefix(kind: StorageKind) -> &'static str {
    match kind {
        StorageKind::Import => "/api/storages",
        StorageKind::Export => "/api/storages/export",
    }
}

fn id_prefix(kind: StorageKind) -> &'static str {
    match kind {
        StorageKind::Import => "api_storages",
        StorageKind::Export => "api_storages_export",
    }
}

/// The schema of one field as a request may send it: secrets are marked
/// write-only.
fn field_schema(spec: &FieldSpec) -> ObjectBuilder {
    let schema = match spec.ty {
        FieldType::Str { max_len } => typed(Type::String, spec.nullable).max_length(max_len),
        FieldType::Bool => typed(Type::Boolean, spec.nullable),
        FieldType::Int { min, max } => typed(Type::Integer, spec.nullable)
            .minimum(Some(min))
            .maximum(Some(max)),
        FieldType::Choice { choices } => {
            typed(Type::String, spec.nullable).enum_values(Some(choices.iter().copied()))
        }
    };
    let schema = schema.description(Some(spec.help));
    let schema = if spec.default.is_null() && !spec.nullable {
        schema
    } else {
        schema.default(Some(spec.default.clone()))
    };
    if spec.secret {
        schema.write_only(Some(true))
    } else {
        schema
    }
}

/// `a` or `an` before `word`, as it is spelled (`an AWS S3 storage`).
fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn capital(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn read_only(schema: ObjectBuilder) -> ObjectBuilder {
    schema.read_only(Some(true))
}

impl Doc {
    fn add(&mut self, path: &str, method: HttpMethod, operation: impl Into<Operation>) {
        self.paths.add_path_operation(path, vec![method], operation);
    }

    fn schema(&mut self, name: &str, schema: impl Into<RefOr<Schema>>) {
        self.components
            .schemas
            .insert(name.to_string(), schema.into());
    }

    /// Adds the schemas of a derived document.
    fn derived(&mut self, api: OpenApi) {
        self.paths.merge(api.paths);
        if let Some(components) = api.components {
            self.components.schemas.extend(components.schemas);
            self.components.responses.extend(components.responses);
        }
    }

    /// The type lists and the every-type storage lists of `kind`, and the
    /// union schema of its storages.
    fn storage_lists(&mut self, kind: StorageKind, backends: &[&dyn Backend]) {
        let prefix = storage_prefix(kind);
        let ids = id_prefix(kind);
        let word = kind_word(kind);
        let types = operation(
            format!("{ids}_types_list"),
            "Storages",
            &format!("The {} storage types", word.to_lowercase()),
        )
        .response(
            "200",
            json_response(
                "Name and title of every type",
                array_of(schema_ref("StorageType")),
            ),
        );
        self.add(&format!("{prefix}/types"), HttpMethod::Get, types);

        let union_name = format!("{word}Storage");
        let union = backends.iter().fold(AnyOfBuilder::new(), |any, b| {
            any.item(schema_ref(&format!("{}{word}Storage", pascal(b.name()))))
        });
        self.schema(
            &union_name,
            union.description(Some(format!("{word} storage of any type"))),
        );
        let list = operation(format!("{ids}_list"), "Storages", &format!("Every {} storage of a project", word.to_lowercase()))
            .description(Some("Storages of every type, in type order; `[]` when the project is missing or not visible."))
            .parameter(query("project", false, typed(Type::Integer, false), "Project id"))
            .response("200", json_response("The storages", array_of(schema_ref(&union_name))));
        self.add(prefix, HttpMethod::Get, list);
    }

    /// Schemas and routes of one backend's `kind` storages.
    fn storage_routes(&mut self, kind: StorageKind, backend: &dyn Backend) {
        let fields = backend.fields(kind);
        let word = kind_word(kind);
        let title = backend.title();
        let base = format!("{}{word}Storage", pascal(backend.name()));
        self.storage_schemas(&base, kind, backend, &fields);

        let path = format!("{}/{}", storage_prefix(kind), backend.name());
        let ids = format!("{}_{}", id_prefix(kind), snake(backend.name()));
        let what = format!("{title} {} storage", word.to_lowercase());
        let storage = || schema_ref(&base);

        let list = operation(
            format!("{ids}_list"),
            "Storages",
            &format!("List {what}s of a project"),
        )
        .parameter(query(
            "project",
            true,
            typed(Type::Integer, false),
            "Project id",
        ))
        .response("200", json_response("The storages", array_of(storage())))
        .response("400", shared("BadRequest"))
        .response("404", shared("NotFound"));
        self.add(&path, HttpMethod::Get, list);

        let create = operation(
            format!("{ids}_create"),
            "Storages",
            &format!("Create {} {what}", article(&what)),
        )
        .description(Some(match kind {
            StorageKind::Import => "Checks the fields and the connection, then saves.",
            StorageKind::Export => {
                "Checks the fields and the connection, saves, and queues a first sync."
            }
        }))
        .request_body(Some(json_body(schema_ref(&format!("{base}Create")), true)))
        .response(
            "201",
            linked(
                json_response("The created storage", storage()),
                &[
                    ("read", &format!("{ids}_read"), "id", "$response.body#/id"),
                    (
                        "update",
                        &format!("{ids}_partial_update"),
                        "id",
                        "$response.body#/id",
                    ),
                    (
                        "sync",
                        &format!("{ids}_sync_create"),
                        "id",
                        "$response.body#/id",
                    ),
                    (
                        "delete",
                        &format!("{ids}_delete"),
                        "id",
                        "$response.body#/id",
                    ),
                ],
            ),
        )
        .response("400", shared("BadRequest"))
        .response("413", shared("PayloadTooLarge"));
        self.add(&path, HttpMethod::Post, create);

        let validate = operation(
            format!("{ids}_validate_create"),
            "Storages",
            &format!("Check {} {what} without saving", article(&what)),
        )
        .description(Some(
            "With `id`, the stored storage (secrets included) is the base the sent fields change. \
             With `report=true` (extension) the answer is always 200 with a `ValidationReport`: \
             every check with its outcome, duration and what to fix.",
        ))
        .parameter(
            ParameterBuilder::new()
                .name("report")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("Answer with the report of every check (extension)"))
                .schema(Some(typed(Type::Boolean, false))),
        )
        .request_body(Some(json_body(
            schema_ref(&format!("{base}Validate")),
            true,
        )))
        .response(
            "200",
            ResponseBuilder::new()
                .description(
                    "The fields and the connection are fine (no body); with `report=true`, the report",
                )
                .content(
                    JSON,
                    ContentBuilder::new()
                        .schema(Some(schema_ref("ValidationReport")))
                        .build(),
                )
                .build(),
        )
        .response("400", shared("BadRequest"))
        .response("404", shared("NotFound"))
        .response("413", shared("PayloadTooLarge"));
        self.add(&format!("{path}/validate"), HttpMethod::Post, validate);

        if kind == StorageKind::Import {
            let limit = object().property(
                "limit",
                typed(Type::Integer, false)
                    .minimum(Some(1))
                    .maximum(Some(10_000))
                    .default(Some(100.into()))
                    .description(Some("How many objects to list")),
            );
            let files = operation(
                format!("{ids}_files_create"),
                "Storages",
                &format!("Preview the objects {} {what} would import", article(&what)),
            )
            .description(Some(
                "Checked like validate (with `id`, over the stored storage); creates nothing.",
            ))
            .request_body(Some(json_body(
                AllOfBuilder::new()
                    .item(schema_ref(&format!("{base}Validate")))
                    .item(limit),
                true,
            )))
            .response(
                "200",
                json_response("The first objects", schema_ref("StorageFiles")),
            )
            .response("400", shared("BadRequest"))
            .response("404", shared("NotFound"))
            .response("413", shared("PayloadTooLarge"));
            self.add(&format!("{path}/files"), HttpMethod::Post, files);
        }

        let item = format!("{path}/{{id}}");
        let read = operation(
            format!("{ids}_read"),
            "Storages",
            &format!("Get {} {what}", article(&what)),
        )
        .parameter(id_param("Storage id"))
        .response("200", json_response("The storage", storage()))
        .response("404", shared("NotFound"));
        self.add(&item, HttpMethod::Get, read);

        let patch = operation(format!("{ids}_partial_update"), "Storages", &format!("Update {} {what}", article(&what)))
            .description(Some("Fields not sent keep their value (secrets included); a secret sent as `\"\"` is cleared."))
            .parameter(id_param("Storage id"))
            .request_body(Some(json_body(schema_ref(&format!("{base}Update")), false)))
            .response("200", json_response("The updated storage", storage()))
            .response("400", shared("BadRequest"))
            .response("404", shared("NotFound"))
            .response("413", shared("PayloadTooLarge"));
        self.add(&item, HttpMethod::Patch, patch);

        let delete = operation(
            format!("{ids}_delete"),
            "Storages",
            &format!("Delete {} {what}", article(&what)),
        )
        .description(Some("Its links go; tasks and objects stay."))
        .parameter(id_param("Storage id"))
        .response("204", empty_response("Deleted"))
        .response("404", shared("NotFound"));
        self.add(&item, HttpMethod::Delete, delete);

        let sync_bad = OneOfBuilder::new()
            .item(schema_ref("Error"))
            .item(schema_ref("Message"));
        let sync = operation(format!("{ids}_sync_create"), "Storages", &format!("Sync {} {what}", article(&what)))
            .description(Some("Queues a sync and answers at once; a sync already queued or running is not repeated."))
            .parameter(id_param("Storage id"))
            .response("200", json_response("The storage, `status` showing the queued or running sync", storage()))
            .response(
                "400",
                json_response("The storage is not synchronizable (`Message`), or its settings are no longer valid", sync_bad),
            )
            .response("404", shared("NotFound"))
            .response("409", shared("Conflict"));
        let sync = match kind {
            StorageKind::Import => sync.request_body(Some(json_body(
                ObjectBuilder::new().property(
                    "confirm_deletions",
                    typed(Type::Boolean, false)
                        .default(Some(false.into()))
                        .description(Some(
                            "Extension: apply the removals the deletion guard held back \
                         (`on_object_deleted`)",
                        )),
                ),
                false,
            ))),
            StorageKind::Export => sync,
        };
        self.add(&format!("{item}/sync"), HttpMethod::Post, sync);
        if let (StorageKind::Import, Some(format)) = (kind, backend.push_format()) {
            self.notification_routes(&item, &ids, format.service);
        }
    }

    /// The notification endpoint of an import storage whose provider
    /// pushes object changes, and the route that hands out its token.
    fn notification_routes(&mut self, item: &str, ids: &str, service: &str) {
        let issued = object()
            .property("token", typed(Type::String, false))
            .property(
                "endpoint",
                typed(Type::String, false)
                    .description(Some("The path to push to, `?token=` included")),
            )
            .property("service", typed(Type::String, false))
            .required("token")
            .required("endpoint")
            .required("service");
        let token = operation(
            format!("{ids}_notifications_token_create"),
            "Storages",
            "Make the notification endpoint's token (extension)",
        )
        .description(Some(
            "A new token for the storage's notification endpoint, shown this once; the \
             previous one stops working. Only its SHA-256 is kept.",
        ))
        .parameter(id_param("Storage id"))
        .response("201", json_response("The token and the endpoint", issued))
        .response("404", shared("NotFound"));
        self.add(
            &format!("{item}/notifications/token"),
            HttpMethod::Post,
            token,
        );

        let counts = object()
            .description(Some(
                "What the push did (see the storage's `meta.events`); Event Grid's validation \
                 handshake is answered `{\"validationResponse\": <code>}` instead",
            ))
            .property("received", typed(Type::Integer, false))
            .property("applied", typed(Type::Integer, false))
            .property("ignored", typed(Type::Integer, false))
            .property("failed", typed(Type::Integer, false))
            .property("tasks_created", typed(Type::Integer, false))
            .property("tasks_updated", typed(Type::Integer, false))
            .property("tasks_deleted", typed(Type::Integer, false))
            .property("tasks_marked", typed(Type::Integer, false));
        let token_param = || {
            query(
                "token",
                false,
                typed(Type::String, false),
                "The token POST …/notifications/token returned; not needed with Pub/Sub's OIDC \
                 token of a storage with `pubsub_service_account` (`Authorization: Bearer`)",
            )
        };
        let push = operation(
            format!("{ids}_notifications_create"),
            "Storages",
            &format!("Apply object changes pushed by {service} (extension)"),
        )
        .description(Some(
            "Needs no user credentials: the storage's notification token authorises it (or, \
             for Pub/Sub, the push's OIDC token, verified against Google's keys, for a storage \
             with `pubsub_service_account` and `pubsub_audience`). The \
             changes are applied (each object looked up, then imported or removed as a sync \
             would) before the answer, so 200 means committed; 503 asks the provider to \
             deliver again.",
        ))
        .security(SecurityRequirement::default())
        .parameter(id_param("Storage id"))
        .parameter(token_param())
        .request_body(Some(json_body(ObjectBuilder::new(), true)))
        .response("200", json_response("Applied", counts))
        .response("400", shared("BadRequest"))
        .response("401", error_response("No token"))
        .response(
            "403",
            error_response(
                "A token that is not this storage's, or an OIDC token refused (the reason)",
            ),
        )
        .response("404", shared("NotFound"))
        .response("413", shared("PayloadTooLarge"))
        .response(
            "503",
            error_response("The storage's sync runs, or a lookup failed for now: deliver again"),
        );
        self.add(&format!("{item}/notifications"), HttpMethod::Post, push);

        let handshake = operation(
            format!("{ids}_notifications_options"),
            "Storages",
            "The CloudEvents webhook handshake (extension)",
        )
        .description(Some(
            "Answers `WebHook-Allowed-Origin` with the `WebHook-Request-Origin` sent.",
        ))
        .security(SecurityRequirement::default())
        .parameter(id_param("Storage id"))
        .parameter(token_param())
        .response("200", empty_response("Allowed"))
        .response("401", error_response("No token"))
        .response("403", error_response("A token that is not this storage's"))
        .response("404", shared("NotFound"));
        self.add(
            &format!("{item}/notifications"),
            HttpMethod::Options,
            handshake,
        );
    }

    /// `<base>` (response), `<base>Create`, `<base>Validate` and
    /// `<base>Update` (requests).
    fn storage_schemas(
        &mut self,
        base: &str,
        kind: StorageKind,
        backend: &dyn Backend,
        fields: &[FieldSpec],
    ) {
        let title = backend.title();
        let word = kind_word(kind).to_lowercase();

        let mut response = object()
            .description(Some(format!(
                "{} {title} {word} storage. Secrets are write-only and never shown.",
                capital(article(title))
            )))
            .property("id", read_only(typed(Type::Integer, false)))
            .property(
                "type",
                read_only(typed(Type::String, false).enum_values(Some([backend.name()]))),
            )
            .property("synchronizable", typed(Type::Boolean, false));
        let mut shown = vec!["id", "type", "synchronizable"];
        for spec in fields.iter().filter(|spec| !spec.secret) {
            response = response.property(spec.name, field_schema(spec));
            shown.push(spec.name);
        }
        let statuses: Vec<&str> = SyncStatus::ALL.iter().map(|s| s.as_str()).collect();
        response = response
            .property(
                "last_sync",
                read_only(date_time(true)).description(Some("When the last sync finished")),
            )
            .property(
                "last_sync_count",
                read_only(typed(Type::Integer, true)).description(Some(
                    "Tasks created (import) or annotations written (export) by the last sync",
                )),
            )
            .property("last_sync_job", read_only(typed(Type::String, true)))
            .property(
                "status",
                read_only(typed(Type::String, false).enum_values(Some(statuses))),
            )
            .property(
                "traceback",
                read_only(typed(Type::String, true))
                    .description(Some("What went wrong in the last sync")),
            )
            .property(
                "meta",
                read_only(free_object()).description(Some("Timings and counters of the last sync")),
            );
        shown.extend([
            "last_sync",
            "last_sync_count",
            "last_sync_job",
            "status",
            "traceback",
            "meta",
        ]);
        let common = common_fields();
        for spec in &common {
            if !shown.contains(&spec.name) {
                response = response.property(spec.name, field_schema(spec));
                shown.push(spec.name);
            }
        }
        response = response
            .property("created_at", read_only(date_time(false)))
            .property("project", typed(Type::Integer, false));
        shown.extend(["created_at", "project"]);
        if kind == StorageKind::Import {
            // Not required: not in Label Studio's answers.
            response = response.property(
                "next_sync",
                read_only(date_time(true)).description(Some(
                    "Extension: when the schedule (`sync_interval`) syncs the storage next",
                )),
            );
        }
        for name in shown {
            response = response.required(name);
        }
        self.schema(base, response);

        // One request schema, three sets of required fields.
        let request = |description: String| {
            let mut schema = object().description(Some(description)).property(
                "project",
                typed(Type::Integer, false).description(Some("Project id")),
            );
            for spec in common.iter().chain(fields) {
                schema = schema.property(spec.name, field_schema(spec));
            }
            schema
        };
        self.schema(
            &format!("{base}Create"),
            request(format!(
                "A new {title} {word} storage; fields not sent get their default."
            ))
            .required("project"),
        );
        self.schema(
            &format!("{base}Validate"),
            request(format!(
                "{} {title} {word} storage to check; `project` is required unless `id` is sent.",
                capital(article(title))
            ))
            .property(
                "id",
                typed(Type::Integer, true)
                    .description(Some("A stored storage to check the fields against")),
            ),
        );
        self.schema(
            &format!("{base}Update"),
            request(format!(
                "Fields of {} {title} {word} storage to change; others keep their value.",
                article(title)
            )),
        );
    }

    /// The schemas and responses every configuration documents, and the
    /// authentication scheme.
    fn shared_components(&mut self) {
        self.derived(shapes::Common::openapi());
        self.components.add_security_scheme(
            TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <key>`: the word Token, a space, then the API key",
            ))),
        );
    }
}

/// An error answered in Label Studio's envelope.
fn error_response(description: &str) -> Response {
    json_response(description, schema_ref("Error"))
}

/// 401, with the scheme clients must use.
fn unauthorized() -> Response {
    let mut response = error_response("Missing or invalid `Authorization: Token <key>`");
    response.headers.insert(
        "WWW-Authenticate".into(),
        Header::new(typed(Type::String, false).enum_values(Some(["Token"]))),
    );
    response
}

/// What every operation has in common, applied once over the document:
/// an operation that needs a token may answer 401, and a link names its
/// operation as `operationId` (utoipa 5.5 writes `Link::operation_id` as
/// `operation_id`, which no OpenAPI reader knows).
fn finish(paths: &mut Paths) {
    for item in paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            // Public operations (this document, health, version) opt out
            // with `security: [{}]`.
            if operation.security.is_none() {
                operation
                    .responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| shared("Unauthorized"));
            }
            for response in operation.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                for link in response.links.values_mut() {
                    if let RefOr::T(link) = link {
                        if !link.operation_id.is_empty() {
                            let id = std::mem::take(&mut link.operation_id);
                            let named = Extensions::from_iter([("operationId", id)]);
                            match &mut link.extensions {
                                Some(extensions) => extensions.merge(named),
                                None => link.extensions = Some(named),
                            }
                        }
                    }
                }
            }
        }
    }
}

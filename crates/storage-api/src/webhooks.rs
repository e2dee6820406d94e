//! The webhook routes, Label Studio's (`/api/webhooks/`,
//! `/api/webhooks/{id}/`, `/api/webhooks/info/`) with this server's
//! extensions: a `secret` that signs deliveries, the delivery state of
//! each webhook, header values that look like credentials shown masked,
//! and a PATCH without `actions` that keeps them.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use storage_core::persist::Caller;
use storage_core::webhooks::{Action, Webhook, WebhookFields, WebhookRepository, WebhookScope};
use storage_core::{ValidationErrors, NON_FIELD_ERRORS};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Authenticated, Body};
use crate::render::iso;
use crate::storages::query_param;
use crate::ApiState;

/// Label Studio's URL field limit.
const MAX_URL_LENGTH: usize = 2048;
/// Label Studio's header schema: at most 10 headers.
const MAX_HEADERS: usize = 10;
/// What a header value that looks like a credential is shown as; sent back
/// unchanged in an update, it keeps the stored value.
pub(crate) const MASKED: &str = "********";

fn repository(state: &ApiState) -> ApiResult<&Arc<dyn WebhookRepository>> {
    state.webhooks().ok_or_else(ApiError::not_found)
}

/// Whether a header's value is a credential by its name (`Authorization`,
/// `X-Api-Key`, `X-Auth-Token`, `Cookie`, …).
fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "secret",
        "key",
        "password",
        "cookie",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// A webhook in Label Studio's field order, then the extensions.
fn webhook_json(webhook: &Webhook) -> Value {
    let headers: Map<String, Value> = webhook
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if is_credential_header(name) {
                Value::from(MASKED)
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect();
    let delivery = &webhook.delivery;
    json!({
        "id": webhook.id,
        "organization": webhook.organization,
        "project": webhook.project,
        "url": webhook.url,
        "send_payload": webhook.send_payload,
        "send_for_all_actions": webhook.send_for_all_actions,
        "headers": headers,
        "is_active": webhook.is_active,
        "actions": webhook.actions.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "created_at": iso(webhook.created_at),
        "updated_at": iso(webhook.updated_at),
        "consecutive_failures": delivery.consecutive_failures,
        "has_secret": webhook.secret.is_some(),
        "delivery": {
            "last_attempt_at": delivery.last_attempt_at.map(iso),
            "last_status": delivery.last_status,
            "last_error": delivery.last_error,
            "delivered": delivery.delivered,
            "failed": delivery.failed,
            "pending": delivery.pending,
        },
    })
}

/// The webhook `raw` if it belongs to the caller's organisation (and its
/// project, if any, is visible); 404 otherwise.
async fn load(state: &ApiState, caller: &Caller, raw: &str) -> ApiResult<Webhook> {
    let id: i64 = raw.parse().map_err(|_| ApiError::not_found())?;
    let webhook = repository(state)?
        .webhook(id)
        .await?
        .filter(|w| w.organization == caller.organization_id)
        .ok_or_else(ApiError::not_found)?;
    if let Some(project) = webhook.project {
        if !state.access().project_visible(caller, project).await? {
            return Err(ApiError::not_found());
        }
    }
    Ok(webhook)
}

/// `GET /api/webhooks/?project=<id>|isnull`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let scope = match query_param(query.as_deref(), "project").as_deref() {
        None | Some("") => WebhookScope::All,
        Some("isnull") => WebhookScope::OrganizationOnly,
        Some(raw) => WebhookScope::Project(
            raw.parse()
                .map_err(|_| ApiError::field("project", "A valid integer is required."))?,
        ),
    };
    let webhooks = repository(&state)?
        .webhooks(caller.organization_id, scope)
        .await?;
    let mut out = Vec::with_capacity(webhooks.len());
    for webhook in &webhooks {
        let visible = match webhook.project {
            Some(project) => state.access().project_visible(&caller, project).await?,
            None => true,
        };
        if visible {
            out.push(webhook_json(webhook));
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `POST /api/webhooks/`: 201; the project must be given and visible
/// (Label Studio: 404 "Project not found.").
pub(crate) async fn create(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Body(body): Body,
) -> ApiResult<Response> {
    let project = match body.get("project") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let project = match project {
        Some(project) if state.access().project_visible(&caller, project).await? => project,
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "Project not found.")),
    };
    let fields = fields_of(&state, &body, None, Some(project)).await?;
    let webhook = repository(&state)?
        .insert_webhook(caller.organization_id, fields)
        .await?;
    tracing::info!(webhook = webhook.id, project, "webhook created");
    Ok((StatusCode::CREATED, Json(webhook_json(&webhook))).into_response())
}

/// `GET /api/webhooks/{id}/`.
pub(crate) async fn detail(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(webhook_json(&load(&state, &caller, &id).await?)))
}

/// `PATCH` / `PUT /api/webhooks/{id}/`: fields not sent keep their value
/// (`actions` too, unlike Label Studio); `project` cannot change.
pub(crate) async fn update(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let webhook = load(&state, &caller, &id).await?;
    let fields = fields_of(&state, &body, Some(&webhook), webhook.project).await?;
    let updated = repository(&state)?
        .update_webhook(webhook.id, fields)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(webhook_json(&updated)))
}

/// `DELETE /api/webhooks/{id}/`: 204; undelivered events go with it.
pub(crate) async fn remove(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let webhook = load(&state, &caller, &id).await?;
    if !repository(&state)?.delete_webhook(webhook.id).await? {
        return Err(ApiError::not_found());
    }
    tracing::info!(webhook = webhook.id, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/webhooks/info/?organization-only=true|false`: the action
/// catalogue; no authentication, as in Label Studio.
pub(crate) async fn info(RawQuery(query): RawQuery) -> Json<Value> {
    let organization_only =
        query_param(query.as_deref(), "organization-only").map(|raw| raw == "true");
    Json(Action::catalogue(organization_only))
}

/// The fields of a create (`existing` is `None`) or update body, checked;
/// every problem is reported with its field.
async fn fields_of(
    state: &ApiState,
    body: &Map<String, Value>,
    existing: Option<&Webhook>,
    project: Option<i64>,
) -> ApiResult<WebhookFields> {
    let mut errors = ValidationErrors::default();
    let mut fields = match existing {
        Some(webhook) => WebhookFields::from(webhook),
        None => WebhookFields {
            project,
            url: String::new(),
            send_payload: true,
            send_for_all_actions: true,
            headers: Map::new(),
            is_active: true,
            actions: Vec::new(),
            secret: None,
        },
    };
    match body.get("url") {
        Some(Value::String(url)) => match checked_url(state, url).await {
            Ok(url) => fields.url = url,
            Err(refused) => errors.merge(refused),
        },
        Some(Value::Null) => errors.add("url", "This field may not be null."),
        Some(_) => errors.add("url", "Not a valid string."),
        None if existing.is_none() => errors.add("url", "This field is required."),
        None => {}
    }
    for (name, target) in [
        ("send_payload", &mut fields.send_payload),
        ("send_for_all_actions", &mut fields.send_for_all_actions),
        ("is_active", &mut fields.is_active),
    ] {
        if let Some(value) = body.get(name) {
            match storage_core::FieldSpec::boolean(name, false, "").coerce(value) {
                Ok(value) => *target = value.as_bool().unwrap_or(*target),
                Err(message) => errors.add(name, message),
            }
        }
    }
    if let Some(value) = body.get("headers") {
        match headers_of(value, existing) {
            Ok(headers) => fields.headers = headers,
            Err(message) => errors.add("headers", message),
        }
    }
    if let Some(value) = body.get("actions") {
        match actions_of(value) {
            Ok(actions) => fields.actions = actions,
            Err(message) => errors.add("actions", message),
        }
    }
    match body.get("secret") {
        None => {}
        Some(Value::Null) => fields.secret = None,
        Some(Value::String(secret)) if secret.is_empty() => fields.secret = None,
        Some(Value::String(secret)) if secret.len() > 1024 => errors.add(
            "secret",
            "Ensure this field has no more than 1024 characters.",
        ),
        Some(Value::String(secret)) => fields.secret = Some(secret.clone()),
        Some(_) => errors.add("secret", "Not a valid string."),
    }
    if fields.project.is_some() && fields.actions.iter().any(|a| a.organization_only()) {
        errors.add(
            NON_FIELD_ERRORS,
            "Project webhook can't contain organization-only action.",
        );
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err(ApiError::validation(errors))
    }
}

/// A webhook URL under the server's endpoint policy (private addresses
/// refused unless the server allows them), as storage endpoints are.
async fn checked_url(state: &ApiState, url: &str) -> Result<String, ValidationErrors> {
    if url.len() > MAX_URL_LENGTH {
        return Err(ValidationErrors::field(
            "url",
            format!("Ensure this field has no more than {MAX_URL_LENGTH} characters."),
        ));
    }
    match state.endpoint_policy().check("url", url).await {
        Ok(_) => Ok(url.trim().to_string()),
        Err(storage_core::Error::InvalidConfig(errors)) => Err(errors),
        Err(other) => Err(ValidationErrors::field("url", other.to_string())),
    }
}

/// Label Studio's header schema (at most 10, names of letters, digits,
/// `-` and `_`, string values); a masked value sent back keeps the stored
/// one.
fn headers_of(value: &Value, existing: Option<&Webhook>) -> Result<Map<String, Value>, String> {
    let Value::Object(headers) = value else {
        return Err("Expected an object of header names to string values.".into());
    };
    if headers.len() > MAX_HEADERS {
        return Err(format!("At most {MAX_HEADERS} headers are allowed."));
    }
    let mut out = Map::new();
    for (name, value) in headers {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(format!(
                "\"{name}\" is not a valid header name: use letters, digits, '-' and '_'."
            ));
        }
        let Value::String(text) = value else {
            return Err(format!("The value of header \"{name}\" must be a string."));
        };
        if axum::http::HeaderValue::from_str(text).is_err() {
            return Err(format!(
                "The value of header \"{name}\" has characters a header cannot carry."
            ));
        }
        let kept = existing
            .filter(|_| text == MASKED)
            .and_then(|webhook| webhook.headers.get(name));
        out.insert(name.clone(), kept.cloned().unwrap_or_else(|| value.clone()));
    }
    Ok(out)
}

/// A list of action names, Django REST framework's message for an unknown
/// one.
fn actions_of(value: &Value) -> Result<Vec<Action>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "Expected a list of items but got type \"{}\".",
            crate::extract::drf_type_name(value)
        ));
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(name) => name.parse::<Action>().map_err(|err| err.to_string()),
            other => Err(format!("\"{other}\" is not a valid choice.")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_recognised_by_name() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "x-auth-token",
            "Cookie",
            "X-Secret",
        ] {
            assert!(is_credential_header(name), "{name}");
        }
        for name in ["Content-Language", "X-Team", "Accept"] {
            assert!(!is_credential_header(name), "{name}");
        }
    }

    #[test]
    fn headers_follow_label_studios_schema() {
        assert!(headers_of(&json!({"X-Team": "a"}), None).is_ok());
        assert!(headers_of(&json!({"X Team": "a"}), None).is_err());
        assert!(headers_of(&json!({"X-Team": 1}), None).is_err());
        assert!(headers_of(&json!({"X-Team": "a\nb"}), None).is_err());
        assert!(headers_of(&json!([]), None).is_err());
        let eleven: Map<String, Value> = (0..11).map(|i| (format!("h{i}"), json!("v"))).collect();
        assert!(headers_of(&Value::Object(eleven), None).is_err());
    }

    #[test]
    fn actions_name_the_bad_choice() {
        assert_eq!(
            actions_of(&json!(["TASKS_CREATED", "STORAGE_SYNC_FAILED"])).unwrap(),
            vec![Action::TasksCreated, Action::StorageSyncFailed]
        );
        assert_eq!(
            actions_of(&json!(["NOPE"])).unwrap_err(),
            "\"NOPE\" is not a valid choice."
        );
    }
}

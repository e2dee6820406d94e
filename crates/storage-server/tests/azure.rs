//! Azure Blob storages (`azure`, account key) against Azurite (started by
//! `./scripts/test`), over the server's HTTP API: the shared bucket
//! conformance cases (Files and Tasks syncs, export with deletion, 303 to a
//! SAS URL fetched back from Azurite, the proxy with Range), then what is
//! Azure's own: the account name and key never in any answer, validation
//! in words, and the endpoint policy over the operator's Azure endpoint.

#![allow(clippy::unwrap_used)]

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_azure::{AzureBackend, AzureOptions};
use storage_core::{Backend, EndpointPolicy};
use storage_testing::conformance::Seed;
use storage_testing::{azurite, unique_prefix, AzuriteServer};
use support::{envelope, Server};

/// A key Azurite does not know (valid base64, 64 bytes).
const WRONG_KEY: &str =
    "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3I=";

fn options(server: &AzuriteServer, policy: EndpointPolicy) -> AzureOptions {
    AzureOptions::new()
        .with_endpoint(server.endpoint_template())
        .with_endpoint_policy(policy)
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
}

async fn azure_bucket(case: &str) -> conformance::Bucket {
    let server = azurite();
    conformance::Bucket {
        backend: Arc::new(AzureBackend::new(options(
            &server,
            EndpointPolicy::allow_private(),
        ))),
        storage_type: "azure",
        scheme: "azure-blob",
        bucket: server.container.clone(),
        connection: json!({"account_name": server.account, "account_key": server.key}),
        seed: Seed::new(
            server.object_store(),
            unique_prefix(&format!("azure-{case}")),
        ),
        expiry_param: "se",
        guards: Vec::new(),
    }
}

mod azure {
    use super::*;
    crate::conformance_cases!(azure_bucket);

    #[tokio::test]
    async fn event_grid_pushes_apply_exactly() {
        let bucket = azure_bucket("eventgrid").await;
        conformance::pushed_notifications_apply_exactly(&bucket, conformance::event_grid_push)
            .await;
    }
}

/// Event Grid's subscription handshake is answered with its code, once the
/// token is right; before, it is refused like any push.
#[tokio::test]
async fn the_event_grid_handshake_is_answered() {
    let b = azure_bucket("handshake").await;
    b.seed.put("h/x.jpg", "x").await;
    let server = server_with(AzureBackend::new(options(
        &azurite(),
        EndpointPolicy::allow_private(),
    )))
    .await;
    let project = server.project().await;
    let mut body = json!({"project": project, "container": b.bucket, "prefix": b.seed.key("h")});
    for (k, v) in b.connection.as_object().unwrap() {
        body[k] = v.clone();
    }
    let path = server.create_storage("/api/storages/azure", body).await;
    let handshake = json!([{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "topic": "/subscriptions/x", "subject": "",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2026-12-01T10:00:00Z",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                 "validationUrl": "https://rp-eastus2.eventgrid.azure.net/api/vs/validate?code=x"},
        "dataVersion": "2", "metadataVersion": "1"
    }]);
    let send = |token: String| {
        let server = &server;
        let path = &path;
        let handshake = handshake.clone();
        async move {
            let response = server
                .raw(
                    reqwest::Method::POST,
                    &format!("{path}/notifications?token={token}"),
                    Some(handshake),
                    None,
                )
                .await;
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(send("forged".into()).await.0, StatusCode::FORBIDDEN);
    let (_, issued) = server
        .post(&format!("{path}/notifications/token"), json!({}))
        .await;
    let (status, answer) = send(issued["token"].as_str().unwrap().into()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );
    // The CloudEvents handshake (OPTIONS) allows the origin that asks.
    let response = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            server.url(&format!(
                "{path}/notifications?token={}",
                issued["token"].as_str().unwrap()
            )),
        )
        .header("WebHook-Request-Origin", "eventemitter.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["webhook-allowed-origin"],
        "eventemitter.example.com"
    );
}

async fn server_with(backend: AzureBackend) -> Server {
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(backend)];
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        backends,
    )
    .await
}

/// Every answer of a storage's life (create, list, get, patch, validate,
/// sync, the failures too) leaves out the account name and key, as Label
/// Studio does for both.
#[tokio::test]
async fn account_name_and_key_are_never_answered() {
    let azurite = azurite();
    let seed = Seed::new(azurite.object_store(), unique_prefix("azure-secrets"));
    seed.put("a.txt", "a").await;
    let server = server_with(AzureBackend::new(options(
        &azurite,
        EndpointPolicy::allow_private(),
    )))
    .await;
    let project = server.project().await;
    let body = json!({
        "project": project, "container": azurite.container, "prefix": seed.prefix,
        "account_name": azurite.account, "account_key": azurite.key, "use_blob_urls": true,
    });
    let mut answers = Vec::new();
    let call = |method: Method, path: String, body: Option<Value>| {
        let server = &server;
        async move { server.call_text(method, &path, body).await }
    };
    for kind in ["", "export/"] {
        let (status, _, created) = call(
            Method::POST,
            format!("/api/storages/{kind}azure"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = serde_json::from_str::<Value>(&created).unwrap()["id"].clone();
        let path = format!("/api/storages/{kind}azure/{id}");
        let (_, shown) = server.get(&path).await;
        for field in ["account_name", "account_key"] {
            assert!(shown.get(field).is_none(), "{field} shown: {shown}");
        }
        answers.push(created);
        answers.push(call(Method::GET, path.clone(), None).await.2);
        answers.push(
            call(
                Method::GET,
                format!("/api/storages/{kind}azure?project={project}"),
                None,
            )
            .await
            .2,
        );
        answers.push(
            call(
                Method::PATCH,
                path.clone(),
                Some(json!({"title": "renamed"})),
            )
            .await
            .2,
        );
        answers.push(
            call(
                Method::POST,
                format!("/api/storages/{kind}azure/validate"),
                Some(body.clone()),
            )
            .await
            .2,
        );
        let wrong = {
            let mut wrong = body.clone();
            wrong["account_key"] = json!(WRONG_KEY);
            wrong
        };
        let (status, _, refused) = call(
            Method::POST,
            format!("/api/storages/{kind}azure/validate"),
            Some(wrong),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        answers.push(refused);
        answers.push(
            call(Method::POST, format!("{path}/sync"), Some(json!({})))
                .await
                .2,
        );
        answers.push(server.wait_synced(&path).await.to_string());
    }
    answers.push(
        call(
            Method::GET,
            format!("/api/storages/?project={project}"),
            None,
        )
        .await
        .2,
    );
    let all = answers.join("\n");
    assert!(all.contains("renamed"), "{all}");
    for secret in [azurite.account.as_str(), azurite.key.as_str(), WRONG_KEY] {
        assert!(!all.contains(secret), "{secret} answered:\n{all}");
    }
}

/// Validation says what to fix, naming the field, never Azure's body.
#[tokio::test]
async fn validation_names_what_to_fix() {
    let azurite = azurite();
    let server = server_with(AzureBackend::new(options(
        &azurite,
        EndpointPolicy::allow_private(),
    )))
    .await;
    let project = server.project().await;
    let body = |extra: Value| {
        let mut body = json!({"project": project, "container": azurite.container,
                              "account_name": azurite.account, "account_key": azurite.key});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let errors = |status, answer: &Value| envelope(status, answer, StatusCode::BAD_REQUEST);

    let (status, answer) = server
        .post("/api/storages/azure", body(json!({"container": null})))
        .await;
    assert_eq!(
        errors(status, &answer)["container"][0],
        "This field is required."
    );
    let (status, answer) = server
        .post(
            "/api/storages/azure",
            body(json!({"account_key": "not base64!"})),
        )
        .await;
    assert!(errors(status, &answer)["account_key"][0]
        .as_str()
        .unwrap()
        .contains("Not a valid Azure storage account key"));
    let (status, answer) = server
        .post(
            "/api/storages/azure/validate",
            body(json!({"account_key": WRONG_KEY})),
        )
        .await;
    let said = errors(status, &answer);
    assert!(said["account_key"][0].is_string(), "{answer}");
    assert!(
        said["non_field_errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Azure rejected the account key for container conformance"),
        "{answer}"
    );
    assert!(!answer.to_string().contains("<Error>"), "{answer}");
    let (status, answer) = server
        .post(
            "/api/storages/export/azure",
            body(json!({"container": "no-such-container"})),
        )
        .await;
    let said = errors(status, &answer);
    assert!(
        said["non_field_errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Container not found: no-such-container"),
        "{answer}"
    );
}

/// Azurite listens on loopback: the strict policy refuses the operator's
/// endpoint there (in words, without the account name), and lets it
/// through once its network is allowed (`--allow-endpoint-network`).
#[tokio::test]
async fn the_endpoint_obeys_the_endpoint_policy() {
    let azurite = azurite();
    let seed = Seed::new(azurite.object_store(), unique_prefix("azure-policy"));
    seed.put("a.txt", "a").await;
    let body = |project: i64| {
        json!({"project": project, "container": azurite.container, "prefix": seed.prefix,
               "account_name": azurite.account, "account_key": azurite.key, "use_blob_urls": true})
    };

    let strict = server_with(AzureBackend::new(options(
        &azurite,
        EndpointPolicy::strict(),
    )))
    .await;
    let project = strict.project().await;
    let (status, answer) = strict.post("/api/storages/azure", body(project)).await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    let message = said["non_field_errors"][0].as_str().unwrap();
    assert!(
        message.contains("endpoint policy") && message.contains("--azure-blob-endpoint"),
        "{answer}"
    );
    assert!(!answer.to_string().contains(&azurite.account), "{answer}");

    let allowed = server_with(AzureBackend::new(options(
        &azurite,
        EndpointPolicy::strict().with_allowed_network("127.0.0.1".parse().unwrap(), 32),
    )))
    .await;
    let project = allowed.project().await;
    let path = allowed
        .create_storage("/api/storages/azure", body(project))
        .await;
    let done = allowed.sync_and_wait(&path).await;
    assert_eq!(done["last_sync_count"], 1, "{done}");
}

/// The types list names Azure as Label Studio does, and its routes answer
/// with and without the trailing slash.
#[tokio::test]
async fn azure_is_listed_and_routed() {
    let azurite = azurite();
    let server = server_with(AzureBackend::new(options(
        &azurite,
        EndpointPolicy::allow_private(),
    )))
    .await;
    for path in ["/api/storages/types", "/api/storages/export/types"] {
        let (status, types) = server.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            types
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "azure" && t["title"] == "Microsoft Azure"),
            "{types}"
        );
    }
    let project = server.project().await;
    for path in [
        "/api/storages/azure",
        "/api/storages/azure/",
        "/api/storages/export/azure",
        "/api/storages/export/azure/",
    ] {
        let (status, list) = server.get(&format!("{path}?project={project}")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {list}");
    }
}

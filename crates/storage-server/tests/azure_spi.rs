//! `azure_spi` storages (Azure Blob with Microsoft Entra credentials) over
//! the server's HTTP API, with tokens from the Entra double
//! (`storage_testing::entra_double`).
//!
//! The shared bucket conformance cases and the token count run against
//! `azurite-oauth` (HTTPS, `--oauth basic`: it checks the token's claims
//! and serves Get User Delegation Key), reached through
//! `storage_testing::tls_shim`. The plain HTTP Azurite refuses every
//! bearer token: the other tests use it to see that refusal explained.

#![allow(clippy::unwrap_used)]

mod conformance;
mod support;

use std::sync::Arc;
use std::time::Duration;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::ClientOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_azure::{AzureOptions, AzureSpiBackend};
use storage_core::{Backend, EndpointPolicy};
use storage_testing::conformance::Seed;
use storage_testing::entra_double::EntraDouble;
use storage_testing::tls_shim::TlsShim;
use storage_testing::{
    azurite, azurite_oauth, unique_prefix, AzuriteServer, AZURITE_ACCOUNT, AZURITE_KEY,
};
use support::{envelope, Server};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0c2a8d4e-app-client";
const SECRET: &str = "the-client-secret-value";
const WORKLOAD_CLIENT: &str = "9f1e-workload-client";
const ASSERTION: &str = "eyJ.federated-token-from-the-file.sig";

async fn entra() -> EntraDouble {
    EntraDouble::builder()
        .tenant(TENANT)
        .client(CLIENT, SECRET)
        .federated(WORKLOAD_CLIENT, ASSERTION)
        .start()
        .await
}

fn options(server: &AzuriteServer, entra: &EntraDouble) -> AzureOptions {
    AzureOptions::new()
        .with_endpoint(server.endpoint_template())
        .with_authority_host(entra.authority())
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10))
}

/// A shim in front of azurite-oauth, the Entra double, and options
/// pointing at both.
async fn oauth_rig() -> (TlsShim, EntraDouble, AzureOptions) {
    let shim = TlsShim::start(&azurite_oauth()).await;
    let entra = entra().await;
    let options = AzureOptions::new()
        .with_endpoint(format!("{}/{{account}}", shim.endpoint()))
        .with_authority_host(entra.authority())
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10));
    (shim, entra, options)
}

fn oauth_seed(shim: &TlsShim, case: &str) -> Seed {
    let store = MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_container_name("conformance")
        .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", shim.endpoint()))
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap();
    Seed::new(Arc::new(store), unique_prefix(case))
}

fn spi_connection() -> Value {
    json!({"account_name": AZURITE_ACCOUNT, "auth_mode": "service_principal",
           "tenant_id": TENANT, "client_id": CLIENT, "client_secret": SECRET})
}

async fn spi_bucket(case: &str) -> conformance::Bucket {
    let (shim, entra, options) = oauth_rig().await;
    conformance::Bucket {
        backend: Arc::new(AzureSpiBackend::new(options)),
        storage_type: "azure_spi",
        scheme: "azure-blob",
        bucket: "conformance".into(),
        connection: spi_connection(),
        seed: oauth_seed(&shim, &format!("azure-spi-{case}")),
        expiry_param: "se",
        guards: vec![Box::new(shim), Box::new(entra)],
    }
}

mod azure_spi {
    use super::*;
    crate::conformance_cases!(spi_bucket);

    #[tokio::test]
    async fn pushed_notifications_apply_exactly() {
        let bucket = spi_bucket("push").await;
        conformance::pushed_notifications_apply_exactly(&bucket, conformance::event_grid_push)
            .await;
    }
}

/// The closing note's number: a create and three syncs of one storage
/// make one token request (cached per identity), against the Azurite
/// that checks the token.
#[tokio::test]
async fn create_and_three_syncs_take_one_token() {
    let (shim, entra, options) = oauth_rig().await;
    let seed = oauth_seed(&shim, "azure-spi-tokens");
    seed.put("a.txt", "a").await;
    let server = server_with(AzureSpiBackend::new(options)).await;
    let project = server.project().await;
    let mut body = spi_connection();
    body.as_object_mut().unwrap().extend(
        json!({"project": project, "container": "conformance", "prefix": seed.prefix,
               "use_blob_urls": true})
        .as_object()
        .unwrap()
        .clone(),
    );
    let path = server.create_storage("/api/storages/azure_spi", body).await;
    for _ in 0..3 {
        let done = server.sync_and_wait(&path).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let (_, shown) = server.get(&path).await;
    assert!(shown.get("client_secret").is_none(), "{shown}");
    assert_eq!(
        entra.token_calls(),
        1,
        "token requests for create + 3 syncs"
    );
}

async fn server_with(backend: AzureSpiBackend) -> Server {
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(backend)];
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        backends,
    )
    .await
}

fn body(project: i64, azurite: &AzuriteServer, extra: Value) -> Value {
    let mut body = json!({
        "project": project, "container": azurite.container, "account_name": azurite.account,
        "auth_mode": "service_principal", "tenant_id": TENANT, "client_id": CLIENT,
        "client_secret": SECRET,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// One token for a create and three validations of the same identity:
/// tokens are cached per identity across storages and requests. The
/// double checks the form (grant, client, secret, scope) and the tenant;
/// Azurite (plain HTTP) then refuses the bearer token, and the answer says
/// so in words, naming no secret.
#[tokio::test]
async fn tokens_are_fetched_once_and_cached() {
    let azurite = azurite();
    let entra = entra().await;
    let server = server_with(AzureSpiBackend::new(options(&azurite, &entra))).await;
    let project = server.project().await;
    let (status, answer) = server
        .post(
            "/api/storages/azure_spi",
            body(project, &azurite, json!({})),
        )
        .await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(
        said["non_field_errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Azure Blob Storage did not accept the Microsoft Entra token"),
        "{answer}"
    );
    for _ in 0..3 {
        let (status, answer) = server
            .post(
                "/api/storages/azure_spi/validate",
                body(project, &azurite, json!({})),
            )
            .await;
        envelope(status, &answer, StatusCode::BAD_REQUEST);
    }
    assert_eq!(entra.tokens_issued(), 1);
    assert_eq!(entra.token_calls(), 1);
    assert!(!answer.to_string().contains(SECRET), "{answer}");
}

/// Entra's `AADSTS` errors become what to fix, naming the field, never
/// Entra's own text.
#[tokio::test]
async fn entra_errors_say_what_to_fix() {
    let azurite = azurite();
    let entra = entra().await;
    let server = server_with(AzureSpiBackend::new(options(&azurite, &entra))).await;
    let project = server.project().await;
    let validate = |extra: Value| {
        let server = &server;
        let body = body(project, &azurite, extra);
        async move {
            let (status, answer) = server.post("/api/storages/azure_spi/validate", body).await;
            (envelope(status, &answer, StatusCode::BAD_REQUEST), answer)
        }
    };

    let mut answers = Vec::new();
    let (said, answer) = validate(json!({"client_secret": "wrong-secret"})).await;
    assert!(said["client_secret"][0].is_string(), "{answer}");
    answers.push(answer.to_string());
    assert!(
        said["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains("Microsoft Entra rejected the client secret"),
        "{answer}"
    );
    let (said, answer) = validate(json!({"client_id": "no-such-app"})).await;
    assert!(said["client_id"][0].is_string(), "{answer}");
    assert!(
        said["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains("has no application no-such-app"),
        "{answer}"
    );
    answers.push(answer.to_string());
    let (said, answer) = validate(json!({"tenant_id": "contoso.onmicrosoft.com"})).await;
    assert!(said["tenant_id"][0].is_string(), "{answer}");
    answers.push(answer.to_string());
    for text in answers {
        assert!(
            !text.contains("Trace ID") && !text.contains("wrong-secret"),
            "{text}"
        );
    }
    assert_eq!(entra.tokens_issued(), 0);
}

/// The `auth_mode` rules: a workload identity takes no secret, a service
/// principal needs all three fields, an unknown mode is named.
#[tokio::test]
async fn auth_mode_rules_are_field_errors() {
    let azurite = azurite();
    let entra = entra().await;
    let server = server_with(AzureSpiBackend::new(options(&azurite, &entra))).await;
    let project = server.project().await;
    let (status, answer) = server
        .post(
            "/api/storages/azure_spi",
            body(
                project,
                &azurite,
                json!({"auth_mode": "workload_identity", "client_id": null}),
            ),
        )
        .await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(
        said["client_secret"][0]
            .as_str()
            .unwrap()
            .contains("must be omitted when auth_mode is workload_identity"),
        "{answer}"
    );
    assert!(!answer.to_string().contains(SECRET), "{answer}");
    let (status, answer) = server
        .post(
            "/api/storages/export/azure_spi",
            body(project, &azurite, json!({"client_secret": null})),
        )
        .await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(said["client_secret"][0].is_string(), "{answer}");
    let (status, answer) = server
        .post(
            "/api/storages/azure_spi",
            body(project, &azurite, json!({"auth_mode": "password"})),
        )
        .await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(said["auth_mode"][0].is_string(), "{answer}");
    // Without a federated token file on the server, the mode is refused.
    let (status, answer) = server
        .post(
            "/api/storages/azure_spi/validate",
            body(
                project,
                &azurite,
                json!({"auth_mode": "workload_identity", "client_secret": null}),
            ),
        )
        .await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(
        said["auth_mode"][0]
            .as_str()
            .unwrap()
            .contains("--azure-federated-token-file"),
        "{answer}"
    );
    assert_eq!(entra.token_calls(), 0);
}

/// With the server's federated token file, a workload identity storage
/// exchanges the file's token (client assertion) for one Entra token,
/// cached as the secret's, and syncs from the Azurite that checks it.
#[tokio::test]
async fn workload_identity_presents_the_federated_token() {
    let (shim, entra, options) = oauth_rig().await;
    let seed = oauth_seed(&shim, "azure-spi-workload");
    seed.put("a.txt", "a").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, ASSERTION).unwrap();
    let server = server_with(AzureSpiBackend::new(options.with_workload_identity(
        &file,
        Some(TENANT.into()),
        None,
    )))
    .await;
    let project = server.project().await;
    let workload = |client: &str| {
        json!({"project": project, "account_name": AZURITE_ACCOUNT, "container": "conformance",
               "prefix": seed.prefix, "use_blob_urls": true,
               "auth_mode": "workload_identity", "client_id": client})
    };
    let (status, answer) = server
        .post(
            "/api/storages/azure_spi/validate",
            workload(WORKLOAD_CLIENT),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let path = server
        .create_storage("/api/storages/azure_spi", workload(WORKLOAD_CLIENT))
        .await;
    let done = server.sync_and_wait(&path).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["last_sync_count"], 1, "{done}");
    assert_eq!(entra.tokens_issued(), 1);
    // A client the federated credential is not for: Entra's 700016.
    let (status, answer) = server
        .post(
            "/api/storages/azure_spi/validate",
            workload("other-identity"),
        )
        .await;
    let said = envelope(status, &answer, StatusCode::BAD_REQUEST);
    assert!(said["client_id"][0].is_string(), "{answer}");
}

/// Listed with the Enterprise title, routed with and without the slash,
/// the client secret never answered.
#[tokio::test]
async fn azure_spi_is_listed_and_routed() {
    let azurite = azurite();
    let entra = entra().await;
    let server = server_with(AzureSpiBackend::new(options(&azurite, &entra))).await;
    for path in ["/api/storages/types", "/api/storages/export/types"] {
        let (status, types) = server.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            types
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "azure_spi"
                    && t["title"] == "Azure Blob Storage with Service Principal"),
            "{types}"
        );
    }
    let project = server.project().await;
    for path in [
        "/api/storages/azure_spi",
        "/api/storages/azure_spi/",
        "/api/storages/export/azure_spi",
        "/api/storages/export/azure_spi/",
    ] {
        let (status, list) = server.get(&format!("{path}?project={project}")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {list}");
        assert_eq!(list, json!([]), "{path}");
    }
}

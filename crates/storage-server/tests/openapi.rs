//! The OpenAPI document: `docs/openapi.json` is what the server's
//! default configuration serves at `/api/schema`, every documented operation
//! is routed, every route is documented, and secrets are write-only.
//!
//! The document is an `insta` snapshot (`tests/snapshots/`), so a drift
//! shows as a diff. After changing a route, a field or a backend, accept the
//! new document and rewrite `docs/openapi.json` with
//! `INSTA_UPDATE=always cargo test -p storage-server --test openapi` (or
//! `cargo insta review`, then the same test run once more).

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_azure::{AzureBackend, AzureOptions, AzureSpiBackend};
use storage_core::fields::{FieldSpec, FieldType, Settings};
use storage_core::{Backend, ExportStorage, ImportStorage, StorageKind};
use storage_databricks::{DatabricksBackend, DatabricksOptions};
use storage_gcs::{GcsBackend, GcsOptions};
use storage_gcs_sa::{GcsSaBackend, GcsWifBackend, WifOptions};
use storage_redis::{RedisBackend, RedisOptions};
use storage_s3::{S3Backend, S3Options};
use support::{Server, TOKEN};

const REGENERATE: &str = "INSTA_UPDATE=always cargo test -p storage-server --test openapi";

/// The backends of the server's default configuration, in its order
/// (the support server adds local files last, as the server does).
fn example_backends() -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(S3Backend::new(S3Options::new())),
        Arc::new(GcsBackend::new(GcsOptions::new())),
        Arc::new(AzureBackend::new(AzureOptions::new())),
        Arc::new(RedisBackend::new(RedisOptions::new())),
        Arc::new(GcsSaBackend::new(GcsOptions::new())),
        Arc::new(AzureSpiBackend::new(AzureOptions::new())),
        Arc::new(GcsWifBackend::new(GcsOptions::new(), WifOptions::default())),
        Arc::new(S3Backend::with_iam_role(S3Options::new())),
        Arc::new(DatabricksBackend::new(DatabricksOptions::new())),
    ]
}

async fn example_server() -> Server {
    Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        example_backends(),
    )
    .await
}

/// `GET /api/schema` without credentials.
async fn served_schema(server: &Server, path: &str) -> Value {
    let response = server.client.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path} needs no token");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{path}"
    );
    response.json().await.unwrap()
}

fn docs_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[tokio::test]
async fn docs_openapi_json_is_what_the_server_serves() {
    let server = example_server().await;
    let served = served_schema(&server, "/api/schema").await;
    assert_eq!(served_schema(&server, "/api/schema/").await, served);
    assert_eq!(served["openapi"], "3.1.0");
    let mut text = serde_json::to_string_pretty(&served).unwrap();
    text.push('\n');
    // A drift fails here with a readable diff of the two documents.
    insta::assert_snapshot!("openapi", text);
    // docs/openapi.json is the accepted snapshot's text, for readers and
    // clients without a server: written when snapshots are being updated,
    // checked otherwise.
    let file = docs_file();
    let updating = std::env::var("INSTA_UPDATE").is_ok_and(|v| v == "always")
        || std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1");
    if updating {
        std::fs::write(&file, &text).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with `{REGENERATE}`",
            file.display()
        )
    });
    assert!(
        kept == text,
        "docs/openapi.json is not the snapshot the server matches; rewrite it with `{REGENERATE}` and commit it"
    );
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every documented path answers its documented methods and only those
/// (axum answers 405 to another method of a routed path, while an unrouted
/// path gets the JSON 404 fallback), in both slash spellings.
#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method() {
    let server = example_server().await;
    let doc = served_schema(&server, "/api/schema").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 40, "{} paths", paths.len());
    for (template, item) in paths {
        // An id nothing has, so no request changes anything.
        let path = template.replace("{id}", "999999");
        for spelling in [path.clone(), format!("{path}/")] {
            for method in METHODS {
                let documented = item.get(method).is_some();
                let url = format!("{}?project=999999&d=x&fileuri=eA", server.url(&spelling));
                let response = server
                    .client
                    .request(
                        Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                        url,
                    )
                    .header("Authorization", format!("Token {TOKEN}"))
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                if documented {
                    assert_ne!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {spelling} is documented but not routed"
                    );
                    assert!(!status.is_server_error(), "{method} {spelling}: {status}");
                    let codes = item[method]["responses"].as_object().unwrap();
                    assert!(
                        codes.contains_key(status.as_str()),
                        "{method} {spelling} answered {status}, which the document does not list"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {spelling}: a routed path answers 405 to a method it does not serve; \
                         is {method} served but not documented, or the path not routed?"
                    );
                }
            }
        }
    }
}

/// The routes registered in `src/lib.rs`, `{storage_type}` expanded to each
/// backend, are all documented.
#[tokio::test]
async fn every_route_is_documented() {
    let source = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../storage-api/src/lib.rs"),
    )
    .unwrap();
    let literal = regex::Regex::new(r#"both\(\s*r,\s*"([^"]+)""#).unwrap();
    let mut routes: BTreeSet<String> = literal
        .captures_iter(&source)
        .map(|c| c[1].to_string())
        .collect();
    // The resolver aliases are registered in a loop over their names.
    let aliases = regex::Regex::new(r#"for alias in \[([^\]]+)\]"#).unwrap();
    let formatted = regex::Regex::new(r#"both\(\s*r,\s*&format!\("([^"]+)"\)"#).unwrap();
    let names: Vec<String> = aliases
        .captures(&source)
        .map(|c| {
            c[1].split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .collect()
        })
        .unwrap_or_default();
    for template in formatted.captures_iter(&source) {
        assert!(
            !names.is_empty(),
            "a formatted route without an alias loop: {}",
            &template[1]
        );
        for name in &names {
            routes.insert(
                template[1]
                    .replace("{{", "{")
                    .replace("}}", "}")
                    .replace("{alias}", name),
            );
        }
    }
    assert!(
        routes.len() >= 20,
        "the route parser found only {routes:?}: has src/lib.rs changed shape?"
    );

    let server = example_server().await;
    let doc = served_schema(&server, "/api/schema").await;
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let types = [
        "s3",
        "gcs",
        "azure",
        "redis",
        "gcs_sa",
        "azure_spi",
        "gcswif",
        "s3s",
        "databricks",
        "localfiles",
    ];
    for route in &routes {
        // Only the types whose provider pushes changes have a notification
        // endpoint (the route answers 404 for the others).
        let push_types = ["gcs", "gcs_sa", "gcswif", "azure", "azure_spi"];
        let types: &[&str] = if route.contains("/notifications") {
            &push_types
        } else {
            &types
        };
        let expanded: Vec<String> = if route.contains("{storage_type}") {
            types
                .iter()
                .map(|t| route.replace("{storage_type}", t))
                .collect()
        } else {
            vec![route.clone()]
        };
        for path in expanded {
            assert!(
                documented.contains(path.as_str()),
                "{route} is routed but {path} is not documented"
            );
        }
    }
}

#[tokio::test]
async fn secrets_are_write_only_and_never_in_responses() {
    let server = example_server().await;
    let doc = served_schema(&server, "/api/schema").await;
    let schemas = &doc["components"]["schemas"];
    let mut checked = 0;
    for backend in example_backends() {
        for (kind, word) in [
            (StorageKind::Import, "Import"),
            (StorageKind::Export, "Export"),
        ] {
            let base = match backend.name() {
                "s3" => "S3",
                "gcs" => "Gcs",
                "gcs_sa" => "GcsSa",
                "gcswif" => "Gcswif",
                "azure" => "Azure",
                "azure_spi" => "AzureSpi",
                "redis" => "Redis",
                "s3s" => "S3s",
                "databricks" => "Databricks",
                other => panic!("unexpected backend {other}"),
            };
            let response = &schemas[format!("{base}{word}Storage")];
            for spec in backend.fields(kind) {
                let create =
                    &schemas[format!("{base}{word}StorageCreate")]["properties"][spec.name];
                assert!(
                    create.is_object(),
                    "{base}{word}StorageCreate lacks {}",
                    spec.name
                );
                if spec.secret {
                    checked += 1;
                    assert_eq!(create["writeOnly"], true, "{}", spec.name);
                    assert!(
                        response["properties"].get(spec.name).is_none(),
                        "{} is in a response",
                        spec.name
                    );
                    assert!(!response["required"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(spec.name)));
                } else {
                    assert!(
                        response["properties"].get(spec.name).is_some(),
                        "{} is not in the response",
                        spec.name
                    );
                    assert!(create.get("writeOnly").is_none(), "{}", spec.name);
                }
            }
        }
    }
    assert!(checked >= 6, "only {checked} secrets found");
    let scheme = &doc["components"]["securitySchemes"]["Token"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "Authorization");
    assert_eq!(doc["security"], json!([{"Token": []}]));
    assert_eq!(doc["paths"]["/api/schema"]["get"]["security"], json!([{}]));
}

/// Links (created storage -> its sync, ...) name operations and parameters
/// that exist, in the spelling OpenAPI readers expect.
#[tokio::test]
async fn links_point_at_documented_operations() {
    let server = example_server().await;
    let doc = served_schema(&server, "/api/schema").await;
    let mut operations = std::collections::BTreeMap::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let params: BTreeSet<String> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            operations.insert(
                operation["operationId"].as_str().unwrap().to_string(),
                params,
            );
        }
    }
    let mut links = 0;
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for response in operation["responses"].as_object().unwrap().values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    links += 1;
                    let target = link["operationId"]
                        .as_str()
                        .unwrap_or_else(|| panic!("link {name} has no operationId: {link}"));
                    let params = operations
                        .get(target)
                        .unwrap_or_else(|| panic!("link {name} -> unknown {target}"));
                    for param in link["parameters"].as_object().unwrap().keys() {
                        assert!(params.contains(param), "{target} has no parameter {param}");
                    }
                }
            }
        }
    }
    assert!(links > 30, "{links} links");
}

/// A backend the server knows nothing else about, to show that routes and
/// schemas follow from the registered backends' field specs.
#[derive(Debug)]
struct Custom;

#[async_trait]
impl Backend for Custom {
    fn name(&self) -> &'static str {
        "my_store"
    }
    fn title(&self) -> &'static str {
        "My store"
    }
    fn fields(&self, _: StorageKind) -> Vec<FieldSpec> {
        vec![
            FieldSpec {
                ty: FieldType::Int { min: 2, max: 9 },
                default: json!(3),
                nullable: false,
                ..FieldSpec::string("shards", "How many shards")
            },
            FieldSpec::string("api_key", "Key").secret(),
        ]
    }
    fn check_settings(&self, _: StorageKind, _: &mut Settings) -> storage_core::Result<()> {
        Ok(())
    }
    async fn import_storage(&self, _: &Settings) -> storage_core::Result<Arc<dyn ImportStorage>> {
        Err(storage_core::Error::NotSupported {
            what: "test".into(),
        })
    }
    async fn export_storage(&self, _: &Settings) -> storage_core::Result<Arc<dyn ExportStorage>> {
        Err(storage_core::Error::NotSupported {
            what: "test".into(),
        })
    }
}

#[tokio::test]
async fn a_new_backend_is_documented_from_its_field_specs() {
    let server = Server::start_with(
        tempfile::tempdir().unwrap(),
        support::fast_runner(),
        vec![Arc::new(Custom)],
    )
    .await;
    let doc = served_schema(&server, "/api/schema").await;
    for path in [
        "/api/storages/my_store",
        "/api/storages/my_store/{id}",
        "/api/storages/my_store/{id}/sync",
        "/api/storages/export/my_store/validate",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(
        doc["paths"].get("/api/storages/s3").is_none(),
        "only registered backends are documented"
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["MyStoreImportStorageCreate"]["properties"]["shards"],
        json!({"type": "integer", "description": "How many shards", "default": 3, "minimum": 2, "maximum": 9})
    );
    assert_eq!(
        schemas["MyStoreExportStorageUpdate"]["properties"]["api_key"]["writeOnly"],
        true
    );
    assert!(schemas["MyStoreImportStorage"]["properties"]
        .get("api_key")
        .is_none());
    let any = schemas["ImportStorage"]["anyOf"].as_array().unwrap();
    assert!(
        any.contains(&json!({"$ref": "#/components/schemas/MyStoreImportStorage"})),
        "{any:?}"
    );
}

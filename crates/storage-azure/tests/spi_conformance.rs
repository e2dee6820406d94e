//! The bucket conformance suite (`storage_testing::conformance`) for
//! `azure_spi`: tokens from the Microsoft Entra double, blobs on the HTTPS
//! Azurite with `--oauth basic` (`azurite-oauth` of
//! `scripts/emulators.sh`), which checks the bearer token's claims and the
//! user delegation SAS signatures; signed URLs are fetched back and
//! byte-compared. The Azurite is reached through
//! `storage_testing::tls_shim` (its certificate is self-signed). Fails,
//! saying how to start it, when the emulator is not running.

use std::sync::Arc;
use std::time::Duration;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::ClientOptions;
use serde_json::json;
use storage_azure::{AzureOptions, AzureSpiBackend};
use storage_core::EndpointPolicy;
use storage_testing::conformance::{
    run_export_suite, run_import_suite, BucketSuite, RejectedCredentials, Seed,
};
use storage_testing::entra_double::EntraDouble;
use storage_testing::tls_shim::TlsShim;
use storage_testing::{azurite_oauth, unique_prefix, AZURITE_ACCOUNT, AZURITE_KEY};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "5d1a-conformance-app";
const SECRET: &str = "conformance-client-secret";
const WRONG_SECRET: &str = "not-the-client-secret";

async fn suite(case: &str) -> BucketSuite {
    let shim = TlsShim::start(&azurite_oauth()).await;
    let entra = EntraDouble::builder()
        .tenant(TENANT)
        .client(CLIENT, SECRET)
        .start()
        .await;
    let backend = AzureSpiBackend::new(
        AzureOptions::new()
            .with_endpoint(format!("{}/{{account}}", shim.endpoint()))
            .with_authority_host(entra.authority())
            .with_endpoint_policy(EndpointPolicy::allow_private())
            .with_retry(storage_testing::quick_retry())
            .with_timeout(Duration::from_secs(10)),
    );
    let seed_store = MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_container_name("conformance")
        .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", shim.endpoint()))
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .expect("a Shared Key store on azurite-oauth");
    BucketSuite {
        name: "azure_spi on azurite-oauth".into(),
        backend: Arc::new(backend),
        bucket: "conformance".into(),
        connection: json!({
            "account_name": AZURITE_ACCOUNT, "auth_mode": "service_principal",
            "tenant_id": TENANT, "client_id": CLIENT, "client_secret": SECRET,
        }),
        seed: Seed::new(
            Arc::new(seed_store),
            unique_prefix(&format!("azure-spi-{case}")),
        ),
        rejected_credentials: Some(RejectedCredentials {
            fields: json!({ "client_secret": WRONG_SECRET }),
            says: "Microsoft Entra rejected the client secret",
            secret: Some(WRONG_SECRET),
        }),
        guards: vec![Box::new(shim), Box::new(entra)],
    }
}

#[tokio::test]
async fn azurite_oauth_imports() {
    run_import_suite(&suite("import").await).await;
}

#[tokio::test]
async fn azurite_oauth_exports() {
    run_export_suite(&suite("export").await).await;
}

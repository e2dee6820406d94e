//! object_store → `GcsShim` → the real fake-gcs-server (needs the emulators:
//! `storage_testing::fake_gcs()` panics with instructions when they are absent).

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::gcp::{
    GcpSigningCredential, GoogleCloudStorage, GoogleCloudStorageBuilder, ServiceAccountKey,
};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, Error, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, StaticCredentialProvider, UpdateVersion,
};
use storage_testing::gcs_shim::{GcsShim, TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM};
use storage_testing::{fake_gcs, unique_prefix};

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

fn builder(shim: &GcsShim, bucket: &str) -> GoogleCloudStorageBuilder {
    GoogleCloudStorageBuilder::new()
        .with_service_account_key(shim.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM))
        .with_bucket_name(bucket)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .with_retry(retry())
}

/// A shim in front of fake-gcs and a store on the shared bucket through it.
async fn store() -> (GcsShim, GoogleCloudStorage) {
    let gcs = fake_gcs();
    let shim = GcsShim::start(&gcs.endpoint).await;
    let store = builder(&shim, &gcs.bucket)
        .build()
        .expect("build the GCS store");
    (shim, store)
}

fn big_payload() -> Vec<u8> {
    (0..300 * 1024).map(|i| (i % 251) as u8).collect()
}

#[test]
fn fixture_key_is_accepted_by_object_store() {
    assert!(TEST_PRIVATE_KEY_PEM.starts_with("-----BEGIN PRIVATE KEY-----"));
    ServiceAccountKey::from_pem(TEST_PRIVATE_KEY_PEM.as_bytes()).unwrap();
}

#[tokio::test]
async fn credentials_json_points_at_the_shim() {
    let shim = GcsShim::start("http://127.0.0.1:1").await;
    let endpoint = shim.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let json: serde_json::Value =
        serde_json::from_str(&shim.credentials_json("a@b.c", "PEM")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "test-key",
            "private_key": "PEM",
            "client_email": "a@b.c",
            "gcs_base_url": endpoint,
            "disable_oauth": true,
        })
    );
}

#[tokio::test]
async fn put_get_range_head_small_and_large() {
    let (_shim, store) = store().await;
    let prefix = unique_prefix("gcs_shim_put_get");
    let small = Path::from(format!("{prefix}/dir/a.txt"));
    let big = Path::from(format!("{prefix}/dir/big file (1).bin"));

    let put = store.put(&small, "hello shim".into()).await.unwrap();
    let etag = put.e_tag.clone().unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(put.version.is_some());

    let got = store.get(&small).await.unwrap();
    assert_eq!(got.meta.e_tag.as_deref(), Some(etag.as_str()));
    assert_eq!(got.meta.version, put.version);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"hello shim");
    assert_eq!(
        store.get_range(&small, 6..10).await.unwrap().as_ref(),
        b"shim"
    );

    let data = big_payload();
    store
        .put(&big, PutPayload::from(data.clone()))
        .await
        .unwrap();
    let head = store.head(&big).await.unwrap();
    assert_eq!(head.size, data.len() as u64);
    assert_eq!(head.location, big);
    let got = store.get(&big).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    let range = store.get_range(&big, 100_000..200_000).await.unwrap();
    assert_eq!(range.as_ref(), &data[100_000..200_000]);

    // Overwrite replaces the content and yields a new ETag.
    let again = store.put(&small, "changed".into()).await.unwrap();
    assert_ne!(again.e_tag, put.e_tag);
    let got = store.get(&small).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"changed");
}

#[tokio::test]
async fn list_with_prefix_and_delimiter() {
    let (_shim, store) = store().await;
    let prefix = unique_prefix("gcs_shim_list");
    for key in ["a.txt", "dir/b.txt", "dir/sub/c.txt", "dir2/d.txt"] {
        let path = Path::from(format!("{prefix}/{key}"));
        store
            .put(&path, key.as_bytes().to_vec().into())
            .await
            .unwrap();
    }

    let root = Path::from(prefix.as_str());
    let mut all: Vec<String> = store
        .list(Some(&root))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    all.sort();
    let expect: Vec<String> = ["a.txt", "dir/b.txt", "dir/sub/c.txt", "dir2/d.txt"]
        .iter()
        .map(|k| format!("{prefix}/{k}"))
        .collect();
    assert_eq!(all, expect);

    // Segment-based prefix: `dir` does not match `dir2/...`.
    let dir = Path::from(format!("{prefix}/dir"));
    let mut in_dir: Vec<String> = store
        .list(Some(&dir))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    in_dir.sort();
    assert_eq!(
        in_dir,
        [
            format!("{prefix}/dir/b.txt"),
            format!("{prefix}/dir/sub/c.txt")
        ]
    );

    let listing = store.list_with_delimiter(Some(&root)).await.unwrap();
    let objects: Vec<String> = listing
        .objects
        .iter()
        .map(|m| m.location.to_string())
        .collect();
    assert_eq!(objects, [format!("{prefix}/a.txt")]);
    assert_eq!(listing.objects[0].size, 5);
    let mut dirs: Vec<String> = listing
        .common_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    dirs.sort();
    assert_eq!(dirs, [format!("{prefix}/dir"), format!("{prefix}/dir2")]);
}

#[tokio::test]
async fn copy_delete_and_head_after_delete() {
    let (_shim, store) = store().await;
    let prefix = unique_prefix("gcs_shim_copy");
    let src = Path::from(format!("{prefix}/src/é x+y.txt"));
    let dst = Path::from(format!("{prefix}/dst/copy.txt"));
    store.put(&src, "copy me".into()).await.unwrap();

    store.copy(&src, &dst).await.unwrap();
    let got = store.get(&dst).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"copy me");
    assert_eq!(store.head(&src).await.unwrap().size, 7);

    store.delete(&dst).await.unwrap();
    let err = store.head(&dst).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = store.get(&dst).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // Copying a missing object: fake-gcs's 404 passes through the shim.
    let err = store.copy(&dst, &src).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn upstream_errors_pass_through() {
    let gcs = fake_gcs();
    let shim = GcsShim::start(&gcs.endpoint).await;
    let missing = format!("no-such-bucket-{}", unique_prefix("b"));
    let store = builder(&shim, &missing).build().unwrap();
    let err = store
        .put(&Path::from("x.txt"), "x".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // Raw: the status and fake-gcs's JSON error body arrive unchanged.
    let resp = reqwest::Client::new()
        .put(format!("{}/{missing}/x.txt", shim.endpoint()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert!(body.contains("\"code\":404"), "{body}");
}

/// Documents fake-gcs gaps: it ignores every precondition. `ifGenerationMatch` is
/// not honoured, so `PutMode::Create` / `copy_if_not_exists` on an existing object
/// overwrite it and `PutMode::Update` with a stale version succeeds (real GCS: 412 →
/// `AlreadyExists` / `Precondition`); `If-Match` / `If-None-Match` on GET are ignored
/// too (real GCS: 412 / 304 → `Precondition` / `NotModified`).
/// If this starts failing, fake-gcs learned preconditions: turn it into real checks.
#[tokio::test]
async fn fake_gcs_ignores_preconditions() {
    let (_shim, store) = store().await;
    let prefix = unique_prefix("gcs_shim_preconditions");
    let path = Path::from(format!("{prefix}/once.txt"));
    let other = Path::from(format!("{prefix}/other.txt"));
    store.put(&path, "first".into()).await.unwrap();
    store.put(&other, "other".into()).await.unwrap();

    store
        .put_opts(&path, "second".into(), PutMode::Create.into())
        .await
        .unwrap();
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"second");

    let stale = UpdateVersion {
        e_tag: None,
        version: Some("1".to_owned()),
    };
    store
        .put_opts(&path, "third".into(), PutMode::Update(stale).into())
        .await
        .unwrap();

    store.copy_if_not_exists(&other, &path).await.unwrap();
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"other");

    let current = store.head(&path).await.unwrap().e_tag;
    let wrong_match = GetOptions {
        if_match: Some("\"nope\"".to_owned()),
        ..Default::default()
    };
    store.get_opts(&path, wrong_match).await.unwrap();
    let same_none_match = GetOptions {
        if_none_match: current,
        ..Default::default()
    };
    store.get_opts(&path, same_none_match).await.unwrap();
}

/// Documents a shim limit: XML multipart uploads reach fake-gcs unchanged and fail
/// with its `400 invalid uploadType`.
#[tokio::test]
async fn put_multipart_is_not_supported() {
    let (_shim, store) = store().await;
    let path = Path::from(format!("{}/mp.bin", unique_prefix("gcs_shim_multipart")));
    let err = store.put_multipart(&path).await.unwrap_err();
    assert!(err.to_string().contains("invalid uploadType"), "{err}");
}

#[tokio::test]
async fn content_type_is_kept_and_defaults_to_octet_stream() {
    let (_shim, store) = store().await;
    let prefix = unique_prefix("gcs_shim_content_type");
    let csv = Path::from(format!("{prefix}/a.csv"));
    let plain = Path::from(format!("{prefix}/b"));
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "text/csv".into());
    let opts = PutOptions {
        attributes,
        ..Default::default()
    };
    store.put_opts(&csv, "x,y".into(), opts).await.unwrap();
    store.put(&plain, "b".into()).await.unwrap();
    let content_type = |attributes: &Attributes| {
        attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref().to_owned())
    };
    let got = store.get(&csv).await.unwrap();
    assert_eq!(content_type(&got.attributes).as_deref(), Some("text/csv"));
    let got = store.get(&plain).await.unwrap();
    assert_eq!(
        content_type(&got.attributes).as_deref(),
        Some("application/octet-stream")
    );
}

#[tokio::test]
async fn v4_signed_urls_work_with_plain_reqwest() {
    let gcs = fake_gcs();
    let shim = GcsShim::start(&gcs.endpoint).await;
    let signing = GcpSigningCredential {
        email: TEST_CLIENT_EMAIL.to_owned(),
        private_key: Some(ServiceAccountKey::from_pem(TEST_PRIVATE_KEY_PEM.as_bytes()).unwrap()),
    };
    let store = builder(&shim, &gcs.bucket)
        .with_signing_credentials(Arc::new(StaticCredentialProvider::new(signing)))
        .build()
        .unwrap();
    let prefix = unique_prefix("gcs_shim_signed");
    let path = Path::from(format!("{prefix}/dir/signed.txt"));
    store.put(&path, "signed content".into()).await.unwrap();

    let url = store
        .signed_url(http::Method::GET, &path, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(url.as_str().starts_with(&shim.endpoint()), "{url}");
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing in {url}"))
    };
    assert_eq!(param("X-Goog-Algorithm"), "GOOG4-RSA-SHA256");
    assert_eq!(param("X-Goog-Expires"), "300");
    assert!(
        param("X-Goog-Credential").starts_with(&format!("{TEST_CLIENT_EMAIL}/")),
        "{url}"
    );
    assert_eq!(
        param("X-Goog-Signature").len(),
        512,
        "hex of a 2048-bit signature"
    );

    let client = reqwest::Client::new();
    let resp = client.get(url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "signed content");

    // A signed PUT passes through the shim untouched and fake-gcs stores it.
    let put_path = Path::from(format!("{prefix}/dir/uploaded.txt"));
    let put_url = store
        .signed_url(http::Method::PUT, &put_path, Duration::from_secs(300))
        .await
        .unwrap();
    let resp = client
        .put(put_url)
        .body("via signed put")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let got = store.get(&put_path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"via signed put");
}

#[tokio::test]
async fn dropping_the_shim_stops_it() {
    let (shim, store) = store().await;
    let endpoint = shim.endpoint();
    store.list_with_delimiter(None).await.unwrap();
    drop(shim);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = reqwest::Client::new()
        .get(format!("{endpoint}/storage/v1/b"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

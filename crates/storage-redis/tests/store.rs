//! `RedisStore` as an `ObjectStore`, against the test Redis
//! (`scripts/redis.sh start`): SCAN paging, glob characters in a prefix,
//! range reads, deletes, and keys that are not strings.

#![allow(clippy::unwrap_used)]

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use storage_core::EndpointPolicy;
use storage_redis::{RedisBackend, RedisConfig, RedisOptions, RedisStore, SCAN_COUNT};
use storage_testing::{redis, unique_prefix, RedisServer};

/// The database these tests write to (the server tests use 1 to 4, the SDK
/// test 1 and 5).
const DB: u32 = 6;

async fn store(server: &RedisServer) -> RedisStore {
    let backend = RedisBackend::new(
        RedisOptions::new().with_endpoint_policy(EndpointPolicy::allow_private()),
    );
    let config = RedisConfig {
        host: server.host.clone(),
        port: server.port,
        db: DB.into(),
        password: Some(server.password.clone()),
        path: String::new(),
    };
    backend.connect(&config).await.unwrap()
}

async fn listed(store: &RedisStore, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(Some(&Path::parse(prefix).unwrap()))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// More keys than one SCAN call returns: every one listed once, with its size.
#[tokio::test]
async fn listing_walks_every_scan_page() {
    let server = redis();
    let store = store(&server).await;
    let prefix = unique_prefix("redis-scan");
    let n = SCAN_COUNT * 2 + 500;
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{prefix}/k{i:05}"), format!("value {i}")))
        .collect();
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for (key, value) in &pairs {
        args.extend([key.as_bytes(), value.as_bytes()]);
    }
    assert_eq!(server.command(DB, &args), "+OK");
    let metas: Vec<_> = store
        .list(Some(&Path::from(prefix.as_str())))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(metas.len(), n);
    let mut keys: Vec<_> = metas.iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a key listed twice");
    let first = metas
        .iter()
        .find(|m| m.location.as_ref() == format!("{prefix}/k00007"))
        .unwrap();
    assert_eq!(first.size, "value 7".len() as u64);
}

/// `*`, `?` and `[` in a prefix are the characters, not a pattern (the
/// paths are parsed, not built, so they stay the keys' own characters).
#[tokio::test]
async fn a_prefix_is_not_a_glob() {
    let server = redis();
    let store = store(&server).await;
    let prefix = unique_prefix("redis-glob");
    for key in ["a*b/1", "axb/1", "a?b/1", "a[x]b/1", "ab/1"] {
        store
            .put(
                &Path::parse(format!("{prefix}/{key}")).unwrap(),
                "{}".into(),
            )
            .await
            .unwrap();
    }
    for wanted in ["a*b", "a?b", "a[x]b"] {
        assert_eq!(
            listed(&store, &format!("{prefix}/{wanted}")).await,
            [format!("{prefix}/{wanted}/1")]
        );
    }
    assert_eq!(listed(&store, &prefix).await.len(), 5);
}

/// Reads, ranges, heads and deletes; a missing key is `NotFound`.
#[tokio::test]
async fn reads_ranges_and_deletes() {
    let server = redis();
    let store = store(&server).await;
    let key = Path::from(format!("{}/r.json", unique_prefix("redis-read")));
    store
        .put(&key, PutPayload::from_static(b"hello world"))
        .await
        .unwrap();
    let whole = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&whole[..], b"hello world");
    let part = store.get_range(&key, 2..5).await.unwrap();
    assert_eq!(&part[..], b"llo");
    assert_eq!(store.head(&key).await.unwrap().size, 11);
    store.delete(&key).await.unwrap();
    let gone = store.get(&key).await.unwrap_err();
    assert!(
        matches!(gone, object_store::Error::NotFound { .. }),
        "{gone}"
    );
    // Deleting what is gone is not an error (object_store's contract).
    store.delete(&key).await.unwrap();
}

/// A key that turned into a hash between the listing and the read is a
/// file gone (`NotFound`: the import reports it and goes on), not an error
/// that stops the sync; the listing reports such keys without a size.
#[tokio::test]
async fn a_key_of_another_type_reads_as_gone() {
    let server = redis();
    let store = store(&server).await;
    let key = format!("{}/h.json", unique_prefix("redis-hash"));
    assert_eq!(
        server.command(DB, &[b"HSET", key.as_bytes(), b"f", b"v"]),
        ":1"
    );
    let err = store.get(&Path::from(key.as_str())).await.unwrap_err();
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("no longer holds a string"),
        "{err}"
    );
}

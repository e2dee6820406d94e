//! Micro benchmarks (criterion) of the per-object work of a sync, with no
//! I/O: the listing filter, key and URL mapping, and task-file parsing.
//!
//! Run with `cargo bench --bench micro` (a filter after `--` picks
//! benchmarks: `cargo bench --bench micro -- parse`). Each input is built
//! once, outside the timed loop, and checked before it is timed, so a fast
//! wrong answer cannot pass.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark stops on any failure

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use serde_json::json;
use storage_connections::core::bucket::{BucketTarget, Explain};
use storage_connections::core::filter::{compile_anchored, Listing, RegexTarget};
use storage_connections::core::object_store::memory::InMemory;
use storage_connections::core::object_store::path::Path;
use storage_connections::core::parse::{parse_tasks, TaskParser};
use storage_connections::core::uri::BucketUri;
use storage_connections::core::{Backend, ImportStorage, Settings, StorageKind};
use storage_connections::localfiles::{normalize_path, LocalFiles, LocalFilesBackend};

/// Keys per listing benchmark: a large folder's worth.
const KEYS: usize = 100_000;

/// `KEYS` bucket keys, a third of them `.jpg`, in nested folders.
fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| {
            let ext = ["jpg", "png", "json"][i % 3];
            format!(
                "datasets/2024-{:02}/batch-{:03}/image_{i:06}.{ext}",
                i % 12 + 1,
                i % 500
            )
        })
        .collect()
}

fn filter(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(KEYS as u64));
    for (name, target) in [
        ("full_key", RegexTarget::FullKey),
        ("file_name", RegexTarget::FileName),
    ] {
        let listing = Listing::new(Some("datasets/"), true, Some(r".*\.jpg"), target).unwrap();
        assert_eq!(
            keys.iter().filter(|k| listing.accepts(k)).count(),
            KEYS / 3 + 1
        );
        group.bench_function(format!("regex_{name}_100k"), |b| {
            b.iter(|| {
                keys.iter()
                    .filter(|k| listing.accepts(black_box(k)))
                    .count()
            })
        });
    }
    // An anchored prefix-style pattern, as users write for one folder.
    let listing = Listing::new(
        None,
        true,
        Some(r"datasets/2024-0[1-6]/.*\.(jpg|png)"),
        RegexTarget::FullKey,
    )
    .unwrap();
    assert!(keys.iter().any(|k| listing.accepts(k)));
    group.bench_function("regex_folder_alternation_100k", |b| {
        b.iter(|| {
            keys.iter()
                .filter(|k| listing.accepts(black_box(k)))
                .count()
        })
    });
    let listing = Listing::new(None, true, None, RegexTarget::FullKey).unwrap();
    group.bench_function("no_regex_100k", |b| {
        b.iter(|| {
            keys.iter()
                .filter(|k| listing.accepts(black_box(k)))
                .count()
        })
    });
    group.finish();
    c.bench_function("filter/compile_anchored", |b| {
        b.iter(|| compile_anchored(black_box(r".*\.(jpg|jpeg|png)")).unwrap())
    });
}

fn keys_and_urls(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("keys");
    group.throughput(Throughput::Elements(KEYS as u64));

    // Paths as users type them: doubled slashes, `.`/`..`, backslashes.
    let raw: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| match i % 3 {
            0 => format!(" /srv/files//{k}/ "),
            1 => format!("/srv/files/./tmp/../{k}"),
            _ => format!("\\srv\\files\\{}", k.replace('/', "\\")),
        })
        .collect();
    assert_eq!(normalize_path(&raw[1]), format!("/srv/files/{}", keys[1]));
    assert_eq!(normalize_path(&raw[2]), format!("/srv/files/{}", keys[2]));
    group.bench_function("normalize_path_100k", |b| {
        b.iter(|| {
            raw.iter()
                .map(|p| normalize_path(black_box(p)).len())
                .sum::<usize>()
        })
    });

    let locations: Vec<Path> = keys.iter().map(|k| Path::from(k.as_str())).collect();
    group.bench_function("object_store_path_from_100k", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| Path::from(black_box(k.as_str())).as_ref().len())
                .sum::<usize>()
        })
    });

    // Local files: the link key is the absolute path, the task URL is
    // `/data/local-files/?d=<relative, percent-encoded>`.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("images")).unwrap();
    let backend = LocalFilesBackend::new(
        LocalFiles::new(root.path())
            .unwrap()
            .with_serving_enabled(true),
    );
    let mut settings = Settings::defaults(&backend.fields(StorageKind::Import));
    settings.set(
        "path",
        root.path().join("images").display().to_string().into(),
    );
    backend
        .check_settings(StorageKind::Import, &mut settings)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = runtime.block_on(backend.import_storage(&settings)).unwrap();
    assert!(local
        .task_url(&locations[0])
        .starts_with("/data/local-files/?d=images/datasets/"));
    group.bench_function("localfiles_key_and_url_100k", |b| {
        b.iter(|| {
            locations
                .iter()
                .map(|l| local.object_key(black_box(l)).len() + local.task_url(l).len())
                .sum::<usize>()
        })
    });

    // Buckets (S3, GCS, GCS SA share this): raw key, `s3://bucket/key`.
    let explain: Explain = Arc::new(|err| err);
    let bucket = BucketTarget {
        store: Arc::new(InMemory::new()),
        uri: BucketUri::new("s3", "photos"),
        prefix: Some("datasets".into()),
        explain,
    }
    .import(&Settings::default(), None)
    .unwrap();
    assert_eq!(
        bucket.task_url(&locations[0]),
        format!("s3://photos/{}", keys[0])
    );
    group.bench_function("bucket_key_and_url_100k", |b| {
        b.iter(|| {
            locations
                .iter()
                .map(|l| bucket.object_key(black_box(l)).len() + bucket.task_url(l).len())
                .sum::<usize>()
        })
    });

    // The way back, when a task is shown: which object a URI names.
    let uri = BucketUri::new("s3", "photos");
    let uris: Vec<String> = keys.iter().map(|k| uri.uri(k)).collect();
    assert_eq!(uri.location(&uris[0]).unwrap(), locations[0]);
    group.bench_function("bucket_uri_location_100k", |b| {
        b.iter(|| {
            uris.iter()
                .filter_map(|u| uri.location(black_box(u)))
                .count()
        })
    });
    group.finish();
}

/// A task as Label Studio exports it: data, one annotation, one prediction.
fn task(i: usize) -> serde_json::Value {
    json!({
        "data": {"image": format!("s3://photos/datasets/image_{i:06}.jpg"), "text": "a short caption of the picture"},
        "annotations": [{"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}]}],
        "predictions": [{"model_version": "v1", "score": 0.87, "result": []}],
    })
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let inputs = [
        ("object", "one.json", 1, task(0).to_string()),
        (
            "array_1k",
            "array.json",
            1_000,
            serde_json::Value::Array((0..1_000).map(task).collect()).to_string(),
        ),
        (
            "jsonl_10k",
            "lines.jsonl",
            10_000,
            (0..10_000)
                .map(|i| task(i).to_string() + "\n")
                .collect::<String>(),
        ),
    ];
    for (name, key, count, text) in &inputs {
        let parsed = parse_tasks(key, text.as_bytes()).unwrap();
        assert_eq!(parsed.len(), *count);
        assert_eq!(parsed[count - 1].annotations.len(), 1);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("parse_tasks_{name}"), |b| {
            b.iter(|| parse_tasks(key, black_box(text.as_bytes())).unwrap().len())
        });
    }
    // The streaming path of large files: the same JSONL in 64 KiB pieces.
    let (_, key, count, text) = &inputs[2];
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("task_parser_jsonl_10k_64k_chunks", |b| {
        b.iter(|| {
            let mut parser = TaskParser::new(key, 64 << 20);
            let mut tasks = Vec::new();
            for chunk in black_box(text.as_bytes()).chunks(64 << 10) {
                parser.push(chunk, &mut tasks).unwrap();
            }
            parser.finish(&mut tasks).unwrap();
            assert_eq!(tasks.len(), *count);
            tasks.len()
        })
    });
    group.finish();
}

// What `criterion_group!`/`criterion_main!` expand to, without their
// undocumented public function.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    filter(&mut c);
    keys_and_urls(&mut c);
    parse(&mut c);
    c.final_summary();
}

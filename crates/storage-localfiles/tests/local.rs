//! The local-files backend on a real temporary directory.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

use serde_json::{json, Map, Value};
use storage_core::import::{ImportConfig, ImportOutcome, NoProgress};
use storage_core::memory::ImportFixture;
use storage_core::{Backend, Error, ImportStorage, Result, Settings, StorageKind};
use storage_localfiles::{LocalFiles, LocalFilesBackend};

/// The shared import fixture with one local-files import storage.
struct Db(ImportFixture);

impl std::ops::Deref for Db {
    type Target = ImportFixture;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Db {
    fn new() -> Self {
        Self(ImportFixture::new("localfiles"))
    }

    /// Runs a Files-mode import of `source`.
    async fn import_files(&self, source: &dyn ImportStorage) -> Result<ImportOutcome> {
        self.import(source, true, &ImportConfig::default(), &NoProgress)
            .await
    }

    /// Each linked key with the task's Files-mode URL.
    fn urls(&self) -> Vec<(String, Value)> {
        let tasks = self.db.tasks(self.project);
        self.db
            .links(self.storage)
            .into_iter()
            .map(|l| {
                let task = tasks.iter().find(|t| t.id == l.task_id).unwrap();
                (l.link.key, task.data["$undefined$"].clone())
            })
            .collect()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: String,
    backend: LocalFilesBackend,
}

fn fixture(serving: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("root");
    for (file, body) in [
        ("samples/img/img_000.jpg", "a"),
        ("samples/img/img 001.jpg", "b"),
        ("samples/img/img%20002.jpg", "e"),
        ("samples/img/notes.png", "c"),
        ("samples/img/nested/img_002.jpg", "d"),
        ("samples/json/t.json", r#"[{"text": "x"}, {"text": "y"}]"#),
    ] {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    let backend = LocalFilesBackend::new(
        LocalFiles::new(&root)
            .unwrap()
            .with_serving_enabled(serving),
    );
    Fixture {
        root: root.to_string_lossy().into(),
        _dir: dir,
        backend,
    }
}

fn settings(backend: &LocalFilesBackend, kind: StorageKind, body: Value) -> Result<Settings> {
    let specs = backend.fields(kind);
    let mut settings = Settings::defaults(&specs);
    let body: Map<String, Value> = body.as_object().unwrap().clone();
    settings
        .apply(&specs, &body)
        .map_err(Error::InvalidConfig)?;
    backend.check_settings(kind, &mut settings)?;
    Ok(settings)
}

fn message(err: Error) -> String {
    match err {
        Error::InvalidConfig(errors) => errors.to_string(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn path_rules_use_label_studio_messages() {
    let f = fixture(true);
    let root = &f.root;
    let check = |path: String| settings(&f.backend, StorageKind::Import, json!({"path": path}));
    assert!(check(format!("{root}/samples/img")).is_ok());
    assert_eq!(
        message(check("/tmp".into()).unwrap_err()),
        format!("Absolute local path \"/tmp\" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. For example: \"{root}/dataset1\".")
    );
    assert_eq!(
        message(check(root.clone()).unwrap_err()),
        format!("Absolute local path \"{root}\" cannot be the same as LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. Please add a subdirectory. For example: \"{root}/dataset1\".")
    );
    assert_eq!(
        message(check(format!("{root}/nope")).unwrap_err()),
        format!("Absolute local path \"{root}/nope\" does not exist")
    );
    // `..` is collapsed first, then the result is checked.
    let escaped = check(format!("{root}/samples/../../outside")).unwrap_err();
    assert!(message(escaped).contains("must be a subdirectory"));
    assert_eq!(
        message(check(String::new()).unwrap_err()),
        "Path must be set for Local Files storage"
    );
    assert!(message(check("samples/img".into()).unwrap_err()).contains("must be absolute"));

    let normalised = check(format!("  {root}//samples/./img/ ")).unwrap();
    assert_eq!(
        normalised.str("path"),
        Some(format!("{root}/samples/img").as_str())
    );
}

#[test]
fn symlinks_out_of_the_root_and_look_alike_prefixes_are_refused() {
    let f = fixture(true);
    let root = std::path::Path::new(&f.root);
    std::os::unix::fs::symlink(root.parent().unwrap().join("outside"), root.join("link")).unwrap();
    let err = settings(
        &f.backend,
        StorageKind::Import,
        json!({"path": format!("{}/link", f.root)}),
    )
    .unwrap_err();
    assert!(message(err).contains("must be a subdirectory"));
    let sibling = format!("{}-evil", f.root);
    std::fs::create_dir_all(&sibling).unwrap();
    let err = settings(&f.backend, StorageKind::Import, json!({"path": sibling})).unwrap_err();
    assert!(
        message(err).contains("must be a subdirectory"),
        "a string prefix is not a parent"
    );
}

#[test]
fn serving_must_be_enabled() {
    let f = fixture(false);
    let err = settings(
        &f.backend,
        StorageKind::Export,
        json!({"path": format!("{}/samples/img", f.root)}),
    )
    .unwrap_err();
    assert!(message(err).contains("LOCAL_FILES_SERVING_ENABLED"));
}

#[tokio::test]
async fn files_mode_links_absolute_paths_and_urls_relative_to_the_root() {
    let f = fixture(true);
    let import = |recursive: bool| {
        settings(
            &f.backend,
            StorageKind::Import,
            json!({"path": format!("{}/samples/img", f.root), "regex_filter": "img", "use_blob_urls": true, "recursive_scan": recursive}),
        )
        .unwrap()
    };
    let db = Db::new();
    let source = f.backend.import_storage(&import(false)).await.unwrap();
    let outcome = db.import_files(source.as_ref()).await.unwrap();
    assert_eq!(
        outcome.progress.created, 3,
        "regex matches the file name; notes.png and the nested file are out"
    );
    let mut tasks = db.urls();
    tasks.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        tasks,
        vec![
            (
                format!("{}/samples/img/img 001.jpg", f.root),
                json!("/data/local-files/?d=samples/img/img%20001.jpg")
            ),
            (
                format!("{}/samples/img/img%20002.jpg", f.root),
                json!("/data/local-files/?d=samples/img/img%2520002.jpg")
            ),
            (
                format!("{}/samples/img/img_000.jpg", f.root),
                json!("/data/local-files/?d=samples/img/img_000.jpg")
            ),
        ]
    );
    let recursive = f.backend.import_storage(&import(true)).await.unwrap();
    let outcome = db.import_files(recursive.as_ref()).await.unwrap();
    assert_eq!((outcome.progress.created, outcome.progress.existed), (1, 3));
}

#[tokio::test]
async fn export_writes_pretty_json_named_by_annotation_id() {
    let f = fixture(true);
    let s = settings(
        &f.backend,
        StorageKind::Export,
        json!({"path": format!("{}/samples/json", f.root), "can_delete_objects": true}),
    )
    .unwrap();
    let target = f.backend.export_storage(&s).await.unwrap();
    let annotation = storage_core::persist::ExportedAnnotation {
        id: 42,
        project: 1,
        payload: json!({"id": 42, "result": []}),
    };
    storage_core::export::export_annotation(target.as_ref(), &annotation)
        .await
        .unwrap();
    let written = std::fs::read_to_string(format!("{}/samples/json/42", f.root)).unwrap();
    assert_eq!(written, "{\n  \"id\": 42,\n  \"result\": []\n}");
    assert!(target.can_delete_objects());
    storage_core::export::delete_annotation(target.as_ref(), 42)
        .await
        .unwrap();
    assert!(!std::path::Path::new(&format!("{}/samples/json/42", f.root)).exists());
}

#[tokio::test]
async fn tasks_mode_reads_files_in_groups_each_file_whole_and_in_order() {
    let f = fixture(true);
    let folder = std::path::Path::new(&f.root).join("many");
    std::fs::create_dir_all(&folder).unwrap();
    // More files than one read group holds, a file over a group's byte
    // budget (read alone, still whole: not streamed below 4 MiB), and a
    // broken one between them.
    for i in 0..200 {
        std::fs::write(
            folder.join(format!("t{i:03}.json")),
            json!({"n": i}).to_string(),
        )
        .unwrap();
    }
    let padding = "x".repeat(1_500_000);
    std::fs::write(
        folder.join("t100-big.json"),
        json!([{"n": "big", "pad": padding}, {"n": "big2"}]).to_string(),
    )
    .unwrap();
    std::fs::write(folder.join("t150-broken.json"), "{\"n\": ").unwrap();

    let settings = settings(
        &f.backend,
        StorageKind::Import,
        json!({"path": folder.to_string_lossy(), "use_blob_urls": false}),
    )
    .unwrap();
    let source = f.backend.import_storage(&settings).await.unwrap();
    let db = Db::new();
    let config = ImportConfig {
        batch_size: 50,
        ..ImportConfig::default()
    };
    let outcome = db
        .import(source.as_ref(), false, &config, &NoProgress)
        .await
        .unwrap();
    assert_eq!(outcome.progress.created, 202, "{outcome:?}");
    assert!(
        outcome
            .file_errors
            .iter()
            .any(|e| e.contains("t150-broken.json")),
        "{:?}",
        outcome.file_errors
    );

    // Every task came from its own file: the link's key names the file
    // whose `n` the task holds.
    let tasks = db.db.tasks(db.project);
    let links = db.db.links(db.storage);
    assert_eq!(links.len(), 202);
    for link in &links {
        let task = tasks.iter().find(|t| t.id == link.task_id).unwrap();
        let name = link.link.key.rsplit('/').next().unwrap();
        match &task.data["n"] {
            Value::Number(n) => assert_eq!(name, format!("t{:03}.json", n.as_u64().unwrap())),
            other => assert_eq!(name, "t100-big.json", "{other}"),
        }
    }
    // Tasks are created in the listing's (sorted) order.
    let mut by_id: Vec<_> = links.iter().map(|l| (l.task_id, &l.link.key)).collect();
    by_id.sort();
    assert!(by_id.windows(2).all(|w| w[0].1 <= w[1].1), "{by_id:?}");
    assert_eq!(
        tasks.iter().find(|t| t.data["n"] == "big").unwrap().data["pad"]
            .as_str()
            .unwrap()
            .len(),
        1_500_000
    );
}

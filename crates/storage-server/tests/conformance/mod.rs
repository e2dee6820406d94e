//! The behaviour every bucket backend must show, run through the real HTTP
//! server against each backend's real server or emulator: listing with
//! prefix, regex and recursion, Files and Tasks modes (JSON, JSONL and
//! Parquet task files), re-sync dedupe,
//! export write/overwrite/delete, presigned redirects and the proxy with
//! Range and ETag.
//!
//! A backend's test file builds a [`Bucket`] and instantiates every case
//! with `conformance_cases!(fixture_fn);`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use storage_core::Backend;
use storage_testing::conformance::Seed;

use crate::support::{report_checks, report_message, Server, TOKEN};

/// A bucket on a real server, and how to reach it.
pub struct Bucket {
    /// The backend under test, configured for the test server.
    pub backend: Arc<dyn Backend>,
    /// Its type name in routes.
    pub storage_type: &'static str,
    /// The URI scheme of its objects (`s3`, `gs`).
    pub scheme: &'static str,
    /// The bucket name.
    pub bucket: String,
    /// Connection fields to send with every storage body.
    pub connection: Value,
    /// Fixtures under a prefix no other test uses, written and read back
    /// through a store of the test's own.
    pub seed: Seed,
    /// The query parameter of signed URLs that carries the lifetime in
    /// seconds (`X-Amz-Expires`), or, for Azure SAS, `se`: the expiry time,
    /// checked to lie the storage's `presign_ttl` ahead.
    pub expiry_param: &'static str,
    /// Test servers (protocol adapters, API doubles) that must live as long
    /// as the bucket is used.
    pub guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Bucket {
    fn body(&self, project: i64, extra: Value) -> Value {
        let mut body = self.connection.clone();
        let map = body.as_object_mut().unwrap();
        map.insert("project".into(), json!(project));
        map.insert(self.backend.bucket_field().into(), json!(self.bucket));
        for (k, v) in extra.as_object().unwrap() {
            map.insert(k.clone(), v.clone());
        }
        body
    }

    /// The URI of `key` in task data, by the backend's own rule (a
    /// Databricks "bucket" is `Volumes/<catalog>/<schema>/<volume>`).
    fn uri(&self, key: &str) -> String {
        let specs = self.backend.fields(storage_core::StorageKind::Import);
        let mut settings = storage_core::Settings::defaults(&specs);
        settings
            .apply(&specs, self.body(0, json!({})).as_object().unwrap())
            .unwrap();
        match self.backend.bucket_uri(&settings) {
            Some(uri) => uri.uri(key),
            None => format!("{}://{}/{key}", self.scheme, self.bucket),
        }
    }

    /// A server with this bucket's backend, and a fresh project on it.
    async fn start(&self) -> (Server, i64) {
        let server = Server::start_with(
            tempfile::tempdir().unwrap(),
            crate::support::fast_runner(),
            vec![self.backend.clone()],
        )
        .await;
        let project = server.project().await;
        (server, project)
    }

    /// An import storage of blob URLs over `sub` of the prefix, synced.
    async fn import_synced(&self, server: &Server, project: i64, sub: &str) -> (String, Value) {
        self.import_synced_in(server, project, sub, true).await
    }

    /// A Tasks-mode import storage over `sub` of the prefix, synced.
    async fn tasks_synced(&self, server: &Server, project: i64, sub: &str) -> (String, Value) {
        self.import_synced_in(server, project, sub, false).await
    }

    async fn import_synced_in(
        &self,
        server: &Server,
        project: i64,
        sub: &str,
        use_blob_urls: bool,
    ) -> (String, Value) {
        let path = self
            .create(
                server,
                false,
                project,
                json!({"prefix": self.seed.key(sub), "use_blob_urls": use_blob_urls}),
            )
            .await;
        let done = self.synced(server, &path).await;
        (path, done)
    }

    async fn create(&self, server: &Server, export: bool, project: i64, extra: Value) -> String {
        let kind = if export { "export/" } else { "" };
        let (status, storage) = server
            .post(
                &format!("/api/storages/{kind}{}", self.storage_type),
                self.body(project, extra),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{storage}");
        format!(
            "/api/storages/{kind}{}/{}",
            self.storage_type, storage["id"]
        )
    }

    async fn synced(&self, server: &Server, path: &str) -> Value {
        let (status, body) = server.post(&format!("{path}/sync"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        server.wait_synced(path).await
    }
}

async fn tasks(server: &Server, project: i64, resolve: bool) -> Vec<Value> {
    let (status, body) = server
        .get(&format!(
            "/api/tasks?project={project}&page_size=1000&resolve_uri={resolve}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["tasks"].as_array().unwrap().clone()
}

pub async fn files_mode_filters_prefix_regex_and_recursion(b: &Bucket) {
    for key in ["a.jpg", "b.png", "sub/c.jpg", "sub/deeper/d.jpg"] {
        b.seed.put(key, "img").await;
    }
    // A sibling whose name starts with the prefix is not under it.
    b.seed
        .put_raw(&format!("{}x/e.jpg", b.seed.prefix), "x")
        .await;
    let (server, project) = b.start().await;
    let flat = b
        .create(
            &server,
            false,
            project,
            json!({"prefix": b.seed.key(""), "regex_filter": ".*\\.jpg", "use_blob_urls": true}),
        )
        .await;
    let done = b.synced(&server, &flat).await;
    assert_eq!(
        (done["status"].clone(), done["last_sync_count"].clone()),
        (json!("completed"), json!(1)),
        "{done}"
    );
    let shown = tasks(&server, project, false).await;
    assert_eq!(shown[0]["data"]["image"], b.uri(&b.seed.key("a.jpg")));
    assert_eq!(shown[0]["storage_filename"], b.seed.key("a.jpg"));

    let tree = b
        .create(&server, false, project, json!({"prefix": b.seed.prefix, "regex_filter": ".*\\.jpg", "use_blob_urls": true, "recursive_scan": true}))
        .await;
    let done = b.synced(&server, &tree).await;
    assert_eq!(done["last_sync_count"], 3, "{done}");
    let mut keys: Vec<String> = tasks(&server, project, false)
        .await
        .iter()
        .skip(1)
        .map(|t| t["storage_filename"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            b.seed.key("a.jpg"),
            b.seed.key("sub/c.jpg"),
            b.seed.key("sub/deeper/d.jpg")
        ]
    );

    // The regex is anchored at the start of the full key.
    let anchored = b
        .create(&server, false, project, json!({"prefix": b.seed.prefix, "regex_filter": "sub", "use_blob_urls": true, "recursive_scan": true}))
        .await;
    assert_eq!(
        b.synced(&server, &anchored).await["last_sync_count"],
        0,
        "keys start with the prefix, not 'sub'"
    );
}

pub async fn tasks_mode_reads_every_format_and_reports_bad_files(b: &Bucket) {
    b.seed.put("t/one.json", r#"{"text": "one"}"#).await;
    b.seed.put("t/list.json", r#"[{"text": "l0"}, {"data": {"text": "l1"}, "predictions": [{"result": [], "score": 0.1}]}]"#).await;
    b.seed
        .put(
            "t/lines.jsonl",
            "{\"text\": \"j0\"}\n\n{\"text\": \"j1\"}\n",
        )
        .await;
    b.seed.put("t/broken.json", "{\"text\": ").await;
    let (server, project) = b.start().await;
    let (_, done) = b.tasks_synced(&server, project, "t").await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["last_sync_count"], 5);
    assert!(
        done["traceback"]
            .as_str()
            .unwrap()
            .contains(&format!("{} line 1", b.seed.key("t/broken.json"))),
        "{done}"
    );
    let texts: Vec<String> = tasks(&server, project, false)
        .await
        .iter()
        .map(|t| t["data"]["text"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = texts.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["j0", "j1", "l0", "l1", "one"]);
}

/// `wrapped.parquet` holds six rows in three row groups, Label Studio's
/// wrapper as columns; row 4 has annotations but no data.
pub async fn tasks_mode_reads_parquet_row_groups(b: &Bucket) {
    let wrapped = storage_testing::parquet_fixture("wrapped.parquet");
    b.seed
        .put_bytes("p/cut.parquet", wrapped[..100].to_vec())
        .await;
    b.seed.put_bytes("p/wrapped.parquet", wrapped).await;
    let (server, project) = b.start().await;
    let (path, done) = b.tasks_synced(&server, project, "p").await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["last_sync_count"], 5, "{done}");
    assert_eq!(done["meta"]["tasks_failed_validation"], 1, "{done}");
    let traceback = done["traceback"].as_str().unwrap();
    for expected in [
        format!("{}: row 4: ", b.seed.key("p/wrapped.parquet")),
        format!("{}: not a Parquet file", b.seed.key("p/cut.parquet")),
    ] {
        assert!(traceback.contains(&expected), "{expected} in {traceback}");
    }
    let tasks = tasks(&server, project, false).await;
    let texts: Vec<&str> = tasks
        .iter()
        .map(|t| t["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["text 0", "text 1", "text 2", "text 3", "text 5"]);
    assert_eq!(tasks[0]["total_annotations"], 1, "{}", tasks[0]);
    assert_eq!(tasks[1]["total_predictions"], 1, "{}", tasks[1]);

    let again = b.synced(&server, &path).await;
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(again["meta"]["tasks_existed"], 5, "{again}");
}

pub async fn resync_creates_nothing_new(b: &Bucket) {
    for i in 0..25 {
        b.seed.put(&format!("r/{i:02}.txt"), "t").await;
    }
    let (server, project) = b.start().await;
    let (path, first) = b.import_synced(&server, project, "r").await;
    assert_eq!(first["last_sync_count"], 25, "{first}");
    let again = b.synced(&server, &path).await;
    assert_eq!(
        (
            again["last_sync_count"].clone(),
            again["meta"]["tasks_existed"].clone()
        ),
        (json!(0), json!(25)),
        "{again}"
    );
    b.seed.put("r/new.txt", "t").await;
    assert_eq!(b.synced(&server, &path).await["last_sync_count"], 1);
    let (_, project_after) = server.get(&format!("/api/projects/{project}")).await;
    assert_eq!(project_after["task_number"], 26);
}

/// The follow-the-bucket scenario: each policy's storage syncs
/// [`FOLLOW_FILES`] one-task JSON files, the tasks of three are annotated
/// ([`annotate_follow_tasks`]), then five files change (one annotated),
/// ten are deleted (two annotated) and three are added
/// ([`follow_changes`]), and a re-sync must report exactly what
/// [`FOLLOW_POLICIES`] says.
pub const FOLLOW_FILES: usize = 30;

/// `(on_object_changed, on_object_deleted, [created, updated, deleted,
/// marked, objects_missing, tasks left])` of the follow scenario's re-sync.
pub const FOLLOW_POLICIES: [(&str, &str, [i64; 6]); 3] = [
    // Label Studio's behaviour: only the new files count.
    ("keep", "keep", [3, 0, 0, 0, 0, 33]),
    // Four changed tasks updated; the changed annotated task and the ten
    // gone objects marked.
    ("update", "mark", [3, 4, 0, 11, 10, 33]),
    // The eight gone tasks without annotations deleted, the two annotated
    // ones marked, with the changed annotated one.
    ("update", "delete", [3, 4, 8, 3, 10, 25]),
];

/// The body of file `i` of the follow scenario, in version `version`.
pub fn follow_file(i: usize, version: u8) -> (String, String) {
    (
        format!("f{i:02}.json"),
        json!({"text": format!("v{version}-{i:02}")}).to_string(),
    )
}

/// What the follow scenario does to the files between the syncs: files to
/// write (changed and new) and files to delete.
pub fn follow_changes() -> (Vec<(String, String)>, Vec<String>) {
    let written = (0..5)
        .map(|i| follow_file(i, 2))
        .chain((FOLLOW_FILES..FOLLOW_FILES + 3).map(|i| follow_file(i, 1)))
        .collect();
    let deleted = (10..20).map(|i| follow_file(i, 1).0).collect();
    (written, deleted)
}

/// The storage body fields of a follow policy.
pub fn follow_fields(changed: &str, deleted: &str) -> Value {
    json!({"use_blob_urls": false, "on_object_changed": changed, "on_object_deleted": deleted,
           "deletion_guard": 50})
}

/// Annotates the tasks of files 00, 10 and 11.
pub async fn annotate_follow_tasks(server: &Server, project: i64) {
    for task in tasks(server, project, false).await {
        if ["v1-00", "v1-10", "v1-11"].contains(&task["data"]["text"].as_str().unwrap()) {
            let (status, body) = server
                .post(
                    &format!("/api/tasks/{}/annotations", task["id"]),
                    json!({"result": []}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
}

/// Checks the re-sync `done` of the follow scenario under `policy`.
pub async fn check_follow(
    server: &Server,
    project: i64,
    (changed, deleted, expected): (&str, &str, [i64; 6]),
    done: &Value,
) {
    let meta = &done["meta"];
    let counts = [
        done["last_sync_count"].as_i64(),
        meta["tasks_updated"].as_i64(),
        meta["tasks_deleted"].as_i64(),
        meta["tasks_marked"].as_i64(),
        meta["objects_missing"].as_i64(),
    ];
    assert_eq!(done["status"], "completed", "{changed}/{deleted}: {done}");
    assert_eq!(
        counts.map(Option::unwrap_or_default),
        expected[..5],
        "{changed}/{deleted}: {done}"
    );
    let tasks = tasks(server, project, false).await;
    let texts: Vec<String> = tasks
        .iter()
        .map(|t| t["data"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts.len() as i64,
        expected[5],
        "{changed}/{deleted}: {texts:?}"
    );
    // Marked tasks show it.
    let shown_marked = tasks
        .iter()
        .filter(|t| t["storage_object_exists"] == json!(false))
        .count();
    assert_eq!(shown_marked as i64, expected[3], "{changed}/{deleted}");
    // Annotated tasks keep their data, changed or gone.
    for kept in ["v1-00", "v1-10", "v1-11"] {
        assert!(
            texts.iter().any(|t| t == kept),
            "{changed}/{deleted}: {kept} in {texts:?}"
        );
    }
    let updated = changed == "update";
    assert_eq!(texts.contains(&"v2-01".to_string()), updated, "{texts:?}");
    assert_eq!(texts.contains(&"v1-01".to_string()), !updated, "{texts:?}");
}

pub async fn follows_changed_and_deleted_objects(b: &Bucket) {
    for (_, deleted, _) in FOLLOW_POLICIES {
        for i in 0..FOLLOW_FILES {
            let (name, body) = follow_file(i, 1);
            b.seed.put(&format!("{deleted}/{name}"), &body).await;
        }
    }
    let (server, _) = b.start().await;
    let mut storages = Vec::new();
    for (changed, deleted, _) in FOLLOW_POLICIES {
        let project = server.project().await;
        let mut extra = follow_fields(changed, deleted);
        extra["prefix"] = json!(b.seed.key(deleted));
        let path = b.create(&server, false, project, extra).await;
        let first = b.synced(&server, &path).await;
        assert_eq!(first["last_sync_count"], FOLLOW_FILES, "{first}");
        annotate_follow_tasks(&server, project).await;
        storages.push((project, path));
    }
    let (written, gone) = follow_changes();
    for (_, deleted, _) in FOLLOW_POLICIES {
        for (name, body) in &written {
            b.seed.put(&format!("{deleted}/{name}"), body).await;
        }
        for name in &gone {
            b.seed.delete(&format!("{deleted}/{name}")).await;
        }
    }
    for (policy, (project, path)) in FOLLOW_POLICIES.into_iter().zip(storages) {
        let done = b.synced(&server, &path).await;
        check_follow(&server, project, policy, &done).await;
        // Converged: the next sync finds nothing to do.
        let again = b.synced(&server, &path).await;
        let meta = &again["meta"];
        assert_eq!(
            [
                &again["last_sync_count"],
                &meta["tasks_updated"],
                &meta["tasks_deleted"],
                &meta["tasks_marked"]
            ],
            [&json!(0), &json!(0), &json!(0), &json!(0)],
            "{again}"
        );
    }
}

pub async fn export_writes_overwrites_and_deletes(b: &Bucket) {
    b.seed.put("src/a.txt", "t").await;
    let (server, project) = b.start().await;
    b.import_synced(&server, project, "src").await;
    let export = b
        .create(
            &server,
            true,
            project,
            json!({"prefix": b.seed.key("out/"), "can_delete_objects": true}),
        )
        .await;
    let first = server.wait_synced(&export).await;
    assert_eq!(first["status"], "completed", "{first}");
    assert!(first.get("aws_secret_access_key").is_none());

    let task = tasks(&server, project, false).await[0]["id"]
        .as_i64()
        .unwrap();
    let (status, annotation) = server
        .post(
            &format!("/api/tasks/{task}/annotations"),
            json!({"result": [{"value": {"choices": ["a"]}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{annotation}");
    let id = annotation["id"].as_i64().unwrap();
    let object = format!("out/{id}");
    let read = || async {
        let bytes = b.seed.read(&object).await.expect("the exported annotation");
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    let written = read().await;
    assert_eq!(written["id"], id);
    assert_eq!(written["task"]["id"], task);
    assert_eq!(written["result"][0]["value"]["choices"][0], "a");

    server
        .patch(&format!("/api/annotations/{id}"), json!({"result": []}))
        .await;
    assert_eq!(read().await["result"], json!([]), "saving again overwrites");
    let synced = b.synced(&server, &export).await;
    assert_eq!(
        (synced["status"].clone(), synced["last_sync_count"].clone()),
        (json!("completed"), json!(1))
    );

    assert_eq!(
        server.delete(&format!("/api/annotations/{id}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(
        b.seed.read(&object).await.is_none(),
        "can_delete_objects removes the object"
    );
}

async fn one_resolvable_task(b: &Bucket, presign: bool) -> (Server, i64, String, String) {
    b.seed.put("media/clip.bin", "0123456789abcdef").await;
    let (server, project) = b.start().await;
    let path = b
        .create(&server, false, project, json!({"prefix": b.seed.key("media"), "use_blob_urls": true, "presign": presign, "presign_ttl": 15}))
        .await;
    b.synced(&server, &path).await;
    let task = &tasks(&server, project, true).await[0];
    let url = task["data"]["image"].as_str().unwrap().to_string();
    let uri = b.uri(&b.seed.key("media/clip.bin"));
    assert_eq!(
        url,
        format!(
            "/tasks/{}/resolve/?fileuri={}",
            task["id"],
            base64::engine::general_purpose::URL_SAFE.encode(&uri)
        ),
        "task data points at the resolver"
    );
    (server, task["id"].as_i64().unwrap(), url, path)
}

async fn get(server: &Server, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = server
        .client
        .get(server.url(url))
        .header("Authorization", format!("Token {TOKEN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

pub async fn presign_redirects_to_a_signed_url_that_works(b: &Bucket) {
    let (server, task, url, _) = one_resolvable_task(b, true).await;
    let response = get(&server, &url, &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["cache-control"], "no-store, max-age=900");
    let signed = response.headers()["location"].to_str().unwrap().to_string();
    if b.expiry_param == "se" {
        let url = reqwest::Url::parse(&signed).unwrap();
        let expiry = url
            .query_pairs()
            .find(|(name, _)| name == "se")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("no se in {signed}"));
        let expiry = chrono::DateTime::parse_from_rfc3339(&expiry).unwrap();
        let ahead = expiry
            .signed_duration_since(chrono::Utc::now())
            .num_seconds();
        assert!((890..=900).contains(&ahead), "{ahead} s ahead: {signed}");
    } else {
        assert!(
            signed.contains(&format!("{}=900", b.expiry_param)),
            "{signed}"
        );
    }
    assert!(!signed.contains("%25"), "never encoded twice: {signed}");
    let fetched = reqwest::get(&signed).await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK, "{signed}");
    assert_eq!(fetched.bytes().await.unwrap(), "0123456789abcdef");
    // The legacy alias and the project-level resolver answer the same.
    let presign_alias = url.replace("/resolve/", "/presign/");
    assert_eq!(
        get(&server, &presign_alias, &[]).await.status(),
        StatusCode::SEE_OTHER
    );
    let (_, task_json) = server.get(&format!("/api/tasks/{task}")).await;
    let project_url = url.replace(
        &format!("/tasks/{task}/"),
        &format!("/projects/{}/", task_json["project"]),
    );
    assert_eq!(
        get(&server, &project_url, &[]).await.status(),
        StatusCode::SEE_OTHER
    );
}

pub async fn proxy_streams_with_range_and_etag(b: &Bucket) {
    let (server, _, url, _) = one_resolvable_task(b, false).await;
    let full = get(&server, &url, &[]).await;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(
        full.headers()["cache-control"],
        "private, max-age=3600, must-revalidate"
    );
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(full.bytes().await.unwrap(), "0123456789abcdef");
    let part = get(&server, &url, &[("Range", "bytes=2-5")]).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 2-5/16");
    assert_eq!(part.bytes().await.unwrap(), "2345");
    let cached = get(&server, &url, &[("If-None-Match", etag.as_str())]).await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
}

pub async fn resolver_refuses_what_it_cannot_resolve(b: &Bucket) {
    let (server, task, url, _) = one_resolvable_task(b, true).await;
    let no_uri = get(&server, &format!("/tasks/{task}/resolve/"), &[]).await;
    assert_eq!(no_uri.status(), StatusCode::BAD_REQUEST);
    let foreign = base64::engine::general_purpose::URL_SAFE
        .encode(format!("{}://another-bucket/x.jpg", b.scheme));
    assert_eq!(
        get(
            &server,
            &format!("/tasks/{task}/resolve/?fileuri={foreign}"),
            &[]
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    let fileuri = url.split("fileuri=").nth(1).unwrap();
    assert_eq!(
        get(
            &server,
            &format!("/tasks/999999/resolve/?fileuri={fileuri}"),
            &[]
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    let anonymous = server.client.get(server.url(&url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

pub async fn validation_explains_missing_bucket_and_empty_prefix(b: &Bucket) {
    let (server, project) = b.start().await;
    let route = format!("/api/storages/{}/validate", b.storage_type);
    let mut body = b.body(project, json!({"prefix": b.seed.key("nothing-here")}));
    let (status, answer) = server.post(&route, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["validation_errors"]["non_field_errors"][0]
        .as_str()
        .unwrap();
    assert!(
        message.contains(&b.seed.key("nothing-here")) && message.contains("found"),
        "{message}"
    );
    // Export storages accept an empty prefix.
    let (status, answer) = server
        .post(
            &format!("/api/storages/export/{}/validate", b.storage_type),
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    body[b.backend.bucket_field()] = json!("no-such-bucket-for-conformance");
    let (status, answer) = server.post(&route, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["validation_errors"]["non_field_errors"][0]
        .as_str()
        .unwrap();
    assert!(
        message.contains("Cannot find bucket no-such-bucket-for-conformance"),
        "{message}"
    );
}

pub async fn validation_report_names_each_check(b: &Bucket) {
    b.seed.put("report/a.json", r#"{"text": "a"}"#).await;
    b.seed.put("report/b.json", r#"{"text": "b"}"#).await;
    let (server, project) = b.start().await;
    let import = format!("/api/storages/{}/validate?report=true", b.storage_type);
    let export = format!(
        "/api/storages/export/{}/validate?report=true",
        b.storage_type
    );
    let presign = b.backend.capabilities().presign;

    // Tasks mode with presign: every import check runs.
    let body = b.body(
        project,
        json!({"prefix": b.seed.key("report"), "use_blob_urls": false, "presign": true}),
    );
    let (status, report) = server.post(&import, body).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["valid"], true, "{report}");
    let presigned = if presign { "passed" } else { "skipped" };
    assert_eq!(
        report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "read=passed",
            &format!("presign={presigned}")
        ],
        "{report}"
    );
    assert!(
        report_message(&report, "list").starts_with("2 objects match"),
        "{report}"
    );
    let text = report.to_string();
    for secret in b
        .backend
        .fields(storage_core::StorageKind::Import)
        .iter()
        .filter(|f| f.secret)
    {
        if let Some(value) = b.connection[secret.name].as_str().filter(|v| v.len() > 3) {
            assert!(!text.contains(value), "{} is in the report", secret.name);
        }
    }

    // Nothing matches the regex: listing works, nothing to read or sign.
    let body = b.body(
        project,
        json!({"prefix": b.seed.key("report"), "regex_filter": "nothing",
                                      "use_blob_urls": true}),
    );
    let (_, report) = server.post(&import, body).await;
    assert_eq!(report["valid"], true, "{report}");
    assert!(
        report_message(&report, "list").contains("no object"),
        "{report}"
    );
    assert_eq!(
        report_checks(&report)[3..],
        ["read=skipped", "presign=skipped"]
    );

    // A missing bucket: listing fails and says so; what needs it is skipped.
    let mut body = b.body(project, json!({"prefix": b.seed.key("report")}));
    body[b.backend.bucket_field()] = json!("no-such-bucket-for-conformance");
    let (_, report) = server.post(&import, body).await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report_checks(&report)[2], "list=failed", "{report}");
    assert!(
        report_message(&report, "list").contains("no-such-bucket-for-conformance"),
        "{report}"
    );
    assert_eq!(
        report_checks(&report)[3..],
        ["read=skipped", "presign=skipped"]
    );

    // Not a valid body: the configuration fails, naming the field.
    let (status, report) = server
        .post(&import, json!({"project": project, "presign_ttl": -1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report_checks(&report)[0],
        "configuration=failed",
        "{report}"
    );
    assert!(
        report_message(&report, "configuration").contains("presign_ttl"),
        "{report}"
    );

    // Export: a probe object is written and deleted...
    let body = b.body(
        project,
        json!({"prefix": b.seed.key("report-out"), "can_delete_objects": true}),
    );
    let (_, report) = server.post(&export, body).await;
    assert_eq!(
        report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "write=passed",
            "delete=passed"
        ],
        "{report}"
    );
    let probe = report_message(&report, "delete")
        .split('"')
        .nth(1)
        .unwrap()
        .to_string();
    let key = probe.rsplit('/').next().unwrap();
    assert!(
        b.seed.read(&format!("report-out/{key}")).await.is_none(),
        "{probe} is left"
    );
    // ... and left, named, when the storage may not delete.
    let body = b.body(project, json!({"prefix": b.seed.key("report-kept")}));
    let (_, report) = server.post(&export, body).await;
    assert_eq!(report_checks(&report)[4], "delete=skipped", "{report}");
    let kept = report_message(&report, "delete")
        .split('"')
        .nth(1)
        .unwrap()
        .to_string();
    let key = kept.rsplit('/').next().unwrap();
    assert!(
        b.seed.read(&format!("report-kept/{key}")).await.is_some(),
        "{kept} is named but gone"
    );
    // The plain call is still Label Studio's.
    let body = b.body(project, json!({"prefix": b.seed.key("report")}));
    let (status, plain) = server
        .post(&format!("/api/storages/{}/validate", b.storage_type), body)
        .await;
    assert_eq!((status, plain), (StatusCode::OK, Value::Null));
}

/// Builds a provider's push of one object change: `(bucket, full key,
/// created (else deleted), message id)`.
pub type PushBody = fn(&Bucket, &str, bool, &str) -> Value;

/// Sends `body` to a storage's notification endpoint with `token`.
async fn push_to(
    server: &Server,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
    // As a provider sends it: no user credentials.
    let response = server
        .raw(
            reqwest::Method::POST,
            &format!("{path}/notifications{query}"),
            Some(body.clone()),
            None,
        )
        .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A provider's pushes to the running server: refused without the
/// storage's token (401) or with a wrong one (403); with it, each object
/// created becomes one task and each deleted one is removed, exactly, and
/// what is no change of this storage's objects (another bucket, a key
/// outside the prefix, an object that does not exist, a replayed message)
/// creates nothing; a body that is no push is a 400 naming what is wrong.
pub async fn pushed_notifications_apply_exactly(b: &Bucket, push: PushBody) {
    const OBJECTS: usize = 20;
    let (server, project) = b.start().await;
    // An import storage is created over a prefix that holds an object.
    b.seed.put("push/o00.jpg", "x").await;
    let path = b
        .create(
            &server,
            false,
            project,
            json!({"prefix": b.seed.key("push"), "use_blob_urls": true,
                   "on_object_deleted": "delete", "deletion_guard": 100}),
        )
        .await;
    let first = push(b, &b.seed.key("push/o00.jpg"), true, "m-first");

    let (status, body) = push_to(&server, &path, None, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = push_to(&server, &path, Some("not-the-token"), &first).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, issued) = server
        .post(&format!("{path}/notifications/token"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token = issued["token"].as_str().unwrap().to_string();
    assert!(
        issued["endpoint"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{path}/notifications?token={token}")),
        "{issued}"
    );
    let (_, shown) = server.get(&path).await;
    assert!(
        !shown.to_string().contains(&token) && !shown.to_string().contains("notification_token"),
        "{shown}"
    );
    let (status, body) = push_to(&server, &path, Some("not-the-token"), &first).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    for i in 0..OBJECTS {
        b.seed.put(&format!("push/o{i:02}.jpg"), "x").await;
    }
    for i in 0..OBJECTS {
        let body = push(
            b,
            &b.seed.key(&format!("push/o{i:02}.jpg")),
            true,
            &format!("m{i}"),
        );
        let (status, answer) = push_to(&server, &path, Some(&token), &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["tasks_created"], 1, "{answer}");
    }
    assert_eq!(tasks(&server, project, false).await.len(), OBJECTS);

    // Nothing of these becomes a task.
    b.seed.put("elsewhere.jpg", "x").await;
    let mut other_bucket = push(b, &b.seed.key("push/o00.jpg"), true, "m-other");
    let renamed = other_bucket
        .to_string()
        .replace(&b.bucket, "some-other-bucket");
    other_bucket = serde_json::from_str(&renamed).unwrap();
    for (body, why) in [
        (other_bucket, "another bucket"),
        (
            push(b, &b.seed.key("elsewhere.jpg"), true, "m-outside"),
            "outside the prefix",
        ),
        (
            push(b, &b.seed.key("push/never-written.jpg"), true, "m-forged"),
            "no such object",
        ),
        (
            push(b, &b.seed.key("push/o01.jpg"), true, "m1"),
            "a replayed message",
        ),
    ] {
        let (status, answer) = push_to(&server, &path, Some(&token), &body).await;
        assert_eq!(status, StatusCode::OK, "{why}: {answer}");
        assert_eq!(answer["tasks_created"], 0, "{why}: {answer}");
    }
    assert_eq!(tasks(&server, project, false).await.len(), OBJECTS);

    for i in 0..5 {
        b.seed.delete(&format!("push/o{i:02}.jpg")).await;
        let body = push(
            b,
            &b.seed.key(&format!("push/o{i:02}.jpg")),
            false,
            &format!("d{i}"),
        );
        let (status, answer) = push_to(&server, &path, Some(&token), &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["tasks_deleted"], 1, "{answer}");
    }
    assert_eq!(tasks(&server, project, false).await.len(), OBJECTS - 5);

    let (status, refused) =
        push_to(&server, &path, Some(&token), &json!("not a notification")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let (_, storage) = server.get(&path).await;
    let events = &storage["meta"]["events"];
    assert_eq!(events["received"], OBJECTS as u64 + 4 + 5, "{storage}");
    assert_eq!(events["ignored"], 3, "{storage}");
    assert_eq!(events["tasks_created"], OBJECTS as u64, "{storage}");
    assert_eq!(events["tasks_deleted"], 5, "{storage}");
    // The links are a sync's: a sync finds nothing new.
    let synced = b.synced(&server, &path).await;
    assert_eq!(synced["last_sync_count"], 0, "{synced}");
    assert_eq!(tasks(&server, project, false).await.len(), OBJECTS - 5);
}

/// A Cloud Storage notification as Pub/Sub pushes it (payload format
/// `JSON_API_V1`: the object resource, base64, in `data`).
pub fn pubsub_push(b: &Bucket, key: &str, created: bool, id: &str) -> Value {
    let event_type = if created {
        "OBJECT_FINALIZE"
    } else {
        "OBJECT_DELETE"
    };
    let resource = json!({"kind": "storage#object", "bucket": b.bucket, "name": key,
                          "size": "1", "contentType": "image/jpeg", "generation": "1"});
    json!({
        "message": {
            "attributes": {"bucketId": b.bucket, "objectId": key, "eventType": event_type,
                           "payloadFormat": "JSON_API_V1", "objectGeneration": "1",
                           "notificationConfig": "projects/_/buckets/b/notificationConfigs/1"},
            "data": base64::engine::general_purpose::STANDARD.encode(resource.to_string()),
            "messageId": id,
            "publishTime": "2026-12-01T10:00:00.000Z"
        },
        "subscription": "projects/label-studio/subscriptions/storage-push"
    })
}

/// A Blob Storage event as Event Grid delivers it (Event Grid schema, a
/// batch of one).
pub fn event_grid_push(b: &Bucket, key: &str, created: bool, id: &str) -> Value {
    let account = b.connection["account_name"]
        .as_str()
        .unwrap_or("devstoreaccount1");
    let event_type = if created {
        "Microsoft.Storage.BlobCreated"
    } else {
        "Microsoft.Storage.BlobDeleted"
    };
    json!([{
        "topic": format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/{}", account),
        "subject": format!("/blobServices/default/containers/{}/blobs/{key}", b.bucket),
        "eventType": event_type,
        "id": id,
        "data": {"api": if created { "PutBlob" } else { "DeleteBlob" }, "contentType": "image/jpeg",
                 "contentLength": 1, "blobType": "BlockBlob",
                 "url": format!("https://{}.blob.core.windows.net/{}/{key}", account, b.bucket),
                 "sequencer": "00000000000004420000000000028963"},
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": "2026-12-01T10:00:00.0000000Z"
    }])
}

/// Instantiates every conformance case as a `#[tokio::test]` for the
/// fixture `$fixture: async fn() -> Bucket`.
#[macro_export]
macro_rules! conformance_cases {
    ($fixture:path) => {
        $crate::conformance_cases!(@cases $fixture;
            files_mode_filters_prefix_regex_and_recursion,
            tasks_mode_reads_every_format_and_reports_bad_files,
            tasks_mode_reads_parquet_row_groups,
            resync_creates_nothing_new,
            follows_changed_and_deleted_objects,
            export_writes_overwrites_and_deletes,
            presign_redirects_to_a_signed_url_that_works,
            proxy_streams_with_range_and_etag,
            resolver_refuses_what_it_cannot_resolve,
            validation_explains_missing_bucket_and_empty_prefix,
            validation_report_names_each_check,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let bucket = $fixture(stringify!($case)).await;
                $crate::conformance::$case(&bucket).await;
            }
        )*
    };
}

//! The REST surface over a real socket, a real SQLite file and a real
//! document root.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod conformance;
mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{envelope, Server, TOKEN};

const IMAGES: &[(&str, &str)] = &[
    ("samples/img/img_000.jpg", "jpeg-0"),
    ("samples/img/img_001.jpg", "jpeg-1"),
    ("samples/img/img_002.jpg", "jpeg-2"),
    ("samples/img/notes.png", "png"),
    ("samples/img/readme.txt", "text"),
    ("samples/nested/sub/deep.jpg", "deep"),
];

async fn image_storage(server: &Server, project: i64) -> (i64, Value) {
    server.write_files(IMAGES);
    let (status, storage) = server
        .post(
            "/api/storages/localfiles/",
            json!({"project": project, "title": "imgs", "path": server.path("samples/img"),
                   "regex_filter": ".*\\.jpg", "use_blob_urls": true, "description": "jpgs"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{storage}");
    (storage["id"].as_i64().unwrap(), storage)
}

#[tokio::test]
async fn authentication_is_required_and_checked() {
    let server = Server::start().await;
    let anonymous = server
        .client
        .get(server.url("/api/storages/types"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Token");
    let body: Value = anonymous.json().await.unwrap();
    envelope(StatusCode::UNAUTHORIZED, &body, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["detail"],
        "Authentication credentials were not provided."
    );

    for (header, detail) in [
        ("Token wrong-token".to_string(), "Invalid token."),
        (
            format!("Bearer {TOKEN}"),
            "Authentication credentials were not provided.",
        ),
    ] {
        let response = server
            .client
            .get(server.url("/api/storages/localfiles/?project=1"))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"], detail);
    }
}

#[tokio::test]
async fn type_lists_and_trailing_slashes() {
    let server = Server::start().await;
    for path in [
        "/api/storages/types",
        "/api/storages/types/",
        "/api/storages/export/types",
        "/api/storages/export/types/",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            body,
            json!([{"name": "localfiles", "title": "Local files"}]),
            "{path}"
        );
    }
    let project = server.project().await;
    let (id, _) = image_storage(&server, project).await;
    for path in [
        format!("/api/storages/localfiles/{id}"),
        format!("/api/storages/localfiles/{id}/"),
    ] {
        assert_eq!(server.get(&path).await.0, StatusCode::OK, "{path}");
    }
    for path in [
        format!("/api/storages/localfiles?project={project}"),
        format!("/api/storages/localfiles/?project={project}"),
    ] {
        let (status, list) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);
    }
    let (status, body) = server.get("/api/nothing-here").await;
    envelope(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validate_reports_each_problem_with_label_studio_messages() {
    let server = Server::start().await;
    server.write_files(IMAGES);
    let project = server.project().await;
    let root = server.root.to_string_lossy().into_owned();
    let good = json!({"project": project, "path": server.path("samples/img"), "regex_filter": ".*\\.jpg", "use_blob_urls": true});
    let response = server
        .client
        .post(server.url("/api/storages/localfiles/validate"))
        .header("Authorization", format!("Token {TOKEN}"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), 0, "empty body");

    let cases = [
        (json!({"path": server.path("samples/img")}), "project", "This field is required.".to_string()),
        (json!({}), "project", "This field is required.".to_string()),
        (json!({"project": 999999, "path": server.path("samples/img")}), "project", "Invalid pk \"999999\" - object does not exist.".to_string()),
        (json!({"project": "abc", "path": server.path("samples/img")}), "project", "Incorrect type. Expected pk value, received str.".to_string()),
        (json!({"project": project, "path": "/tmp"}), "non_field_errors",
            format!("Absolute local path \"/tmp\" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. For example: \"{root}/dataset1\".")),
        (json!({"project": project, "path": root.clone()}), "non_field_errors",
            format!("Absolute local path \"{root}\" cannot be the same as LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. Please add a subdirectory. For example: \"{root}/dataset1\".")),
        (json!({"project": project, "path": server.path("does-not-exist")}), "non_field_errors",
            format!("Absolute local path \"{root}/does-not-exist\" does not exist")),
        (json!({"project": project, "path": format!("{root}/samples/../..")}), "non_field_errors",
            format!("Absolute local path \"{}\" must be a subdirectory of", server.root.parent().unwrap().display())),
        (json!({"project": project, "path": server.path("samples/img"), "regex_filter": "[unclosed"}), "regex_filter",
            "Invalid regular expression".to_string()),
        (json!({"project": project, "path": server.path("samples/img"), "use_blob_urls": "maybe"}), "use_blob_urls",
            "Must be a valid boolean.".to_string()),
        (json!({"project": project, "path": server.path("samples/img"), "title": "t".repeat(257)}), "title",
            "Ensure this field has no more than 256 characters.".to_string()),
    ];
    for (body, field, message) in cases {
        for route in [
            "/api/storages/localfiles/validate",
            "/api/storages/export/localfiles/validate",
        ] {
            if field == "regex_filter" && route.contains("export") {
                continue;
            }
            let (status, response) = server.post(route, body.clone()).await;
            let errors = envelope(status, &response, StatusCode::BAD_REQUEST);
            assert_eq!(response["detail"], "Validation error");
            let got = errors[field][0]
                .as_str()
                .unwrap_or_else(|| panic!("{route} {body}: {response}"));
            assert!(
                got.starts_with(&message),
                "{route} {body}: {got:?} should start with {message:?}"
            );
        }
    }
    // Validation never saves anything.
    let (_, list) = server
        .get(&format!("/api/storages/localfiles?project={project}"))
        .await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn create_get_list_patch_delete_import_storage() {
    let server = Server::start().await;
    let project = server.project().await;
    let (id, created) = image_storage(&server, project).await;
    let mut keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "created_at",
            "deletion_guard",
            "description",
            "id",
            "last_sync",
            "last_sync_count",
            "last_sync_job",
            "meta",
            "next_sync",
            "on_object_changed",
            "on_object_deleted",
            "path",
            "project",
            "recursive_scan",
            "regex_filter",
            "shard_listing",
            "status",
            "sync_interval",
            "synchronizable",
            "title",
            "traceback",
            "type",
            "use_blob_urls",
            "watch"
        ]
    );
    assert_eq!(created["type"], "localfiles");
    assert_eq!(created["status"], "initialized");
    assert_eq!(created["meta"], json!({}));
    assert_eq!(created["recursive_scan"], false);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, list) = server
        .get(&format!("/api/storages/localfiles/?project={project}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([created.clone()]));

    let (status, body) = server.get("/api/storages/localfiles/").await;
    let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(
        errors["non_field_errors"][0],
        "query parameter \"project\" is required"
    );
    let (status, body) = server.get("/api/storages/localfiles/?project=999999").await;
    envelope(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "No Project matches the given query.");
    let (status, body) = server.get("/api/storages/localfiles/?project=abc").await;
    envelope(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Not found.");

    // A partial PATCH keeps what it does not mention (Label Studio demands `path`).
    let (status, patched) = server
        .patch(
            &format!("/api/storages/localfiles/{id}"),
            json!({"title": "renamed", "status": "completed", "last_sync_count": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["title"], "renamed");
    assert_eq!(patched["path"], created["path"]);
    assert_eq!(patched["description"], "jpgs");
    assert_eq!(patched["status"], "initialized", "status is read-only");
    assert_eq!(patched["last_sync_count"], Value::Null);
    let (status, body) = server
        .patch(
            &format!("/api/storages/localfiles/{id}"),
            json!({"path": "/tmp"}),
        )
        .await;
    envelope(status, &body, StatusCode::BAD_REQUEST);
    let (_, unchanged) = server.get(&format!("/api/storages/localfiles/{id}")).await;
    assert_eq!(
        unchanged["path"], created["path"],
        "a refused PATCH writes nothing"
    );

    for path in [
        "/api/storages/localfiles/999999".to_string(),
        format!("/api/storages/export/localfiles/{id}"),
        "/api/storages/localfiles/abc".to_string(),
        format!("/api/storages/s3/{id}"),
    ] {
        let (status, body) = server.get(&path).await;
        envelope(status, &body, StatusCode::NOT_FOUND);
    }
    let (status, body) = server
        .patch("/api/storages/localfiles/999999", json!({"title": "x"}))
        .await;
    envelope(status, &body, StatusCode::NOT_FOUND);

    let (status, body) = server
        .delete(&format!("/api/storages/localfiles/{id}"))
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = server
        .delete(&format!("/api/storages/localfiles/{id}"))
        .await;
    envelope(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn files_mode_sync_creates_tasks_once_and_serves_them() {
    let server = Server::start().await;
    let project = server.project().await;
    let (id, _) = image_storage(&server, project).await;
    let path = format!("/api/storages/localfiles/{id}");

    let (status, queued) = server.post(&format!("{path}/sync"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        matches!(queued["status"].as_str(), Some("queued" | "in_progress")),
        "{queued}"
    );
    assert_eq!(queued["meta"]["attempts"], 1);
    assert!(queued["last_sync_job"].is_string());
    let done = server.wait_synced(&path).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["last_sync_count"], 3);
    assert_eq!(done["meta"]["tasks_existed"], 0);
    assert!(done["last_sync"].is_string() && done["meta"]["time_completed"].is_string());
    assert!(done["traceback"].is_null());

    let (status, tasks) = server.get(&format!("/api/tasks?project={project}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tasks["total"], 3);
    let task = &tasks["tasks"][0];
    assert_eq!(
        task["data"],
        json!({"image": "/data/local-files/?d=samples/img/img_000.jpg"})
    );
    assert_eq!(
        task["storage_filename"],
        server.path("samples/img/img_000.jpg")
    );
    assert_eq!(task["inner_id"], 1);
    let (status, detail) = server.get(&format!("/api/tasks/{}", task["id"])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["data"], task["data"]);

    // The URL in the task serves the file.
    let url = server.url(task["data"]["image"].as_str().unwrap());
    let response = server
        .client
        .get(&url)
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    assert_eq!(response.bytes().await.unwrap(), "jpeg-0");

    // Re-sync of an unchanged folder creates nothing.
    let again = server.sync_and_wait(&path).await;
    assert_eq!(
        (again["status"].clone(), again["last_sync_count"].clone()),
        (json!("completed"), json!(0))
    );
    assert_eq!(again["meta"]["tasks_existed"], 3);
    assert_eq!(again["meta"]["attempts"], 2);
    let (_, project_after) = server.get(&format!("/api/projects/{project}")).await;
    assert_eq!(project_after["task_number"], 3);

    // New files are picked up; deleting the storage keeps its tasks.
    server.write_files(&[("samples/img/img_003.jpg", "jpeg-3")]);
    server.post(&format!("{path}/sync"), json!({})).await;
    assert_eq!(server.wait_synced(&path).await["last_sync_count"], 1);
    assert_eq!(server.delete(&path).await.0, StatusCode::NO_CONTENT);
    let (_, project_after) = server.get(&format!("/api/projects/{project}")).await;
    assert_eq!(project_after["task_number"], 4);
}

#[tokio::test]
async fn local_files_serving_refuses_what_it_must() {
    let server = Server::start().await;
    let project = server.project().await;
    image_storage(&server, project).await;
    server.write_files(&[
        ("samples/other/secret.txt", "s"),
        ("samples/img-evil/x.jpg", "e"),
    ]);
    let get = |d: &str, auth: bool| {
        let mut request = server
            .client
            .get(server.url(&format!("/data/local-files/?d={d}")));
        if auth {
            request = request.header("Authorization", format!("Token {TOKEN}"));
        }
        request.send()
    };
    assert_eq!(
        get("samples/img/img_001.jpg", true).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get("samples/img/img_001.jpg", false)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    for refused in [
        "../../etc/passwd",
        "samples/img/../../../etc/passwd",
        "%2e%2e/%2e%2e/etc/passwd",
        "/etc/passwd/../../..",
    ] {
        let status = get(refused, true).await.unwrap().status();
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{refused}: {status}"
        );
    }
    assert_eq!(
        get("../../etc/passwd", true).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // Under the root but under no storage path, or a look-alike of one.
    assert_eq!(
        get("samples/other/secret.txt", true)
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("samples/img-evil/x.jpg", true).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("samples/img/missing.jpg", true).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    std::os::unix::fs::symlink("/etc/hostname", server.root.join("samples/img/link.jpg")).unwrap();
    assert_eq!(
        get("samples/img/link.jpg", true).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let response = server
        .client
        .get(server.url("/data/local-files/"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn local_files_serving_supports_range_and_etag() {
    let server = Server::start().await;
    let project = server.project().await;
    image_storage(&server, project).await;
    let url = server.url("/data/local-files/?d=samples/img/img_002.jpg");
    let auth = format!("Token {TOKEN}");
    let full = server
        .client
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    let etag = full.headers()["etag"].clone();
    assert_eq!(full.headers()["accept-ranges"], "bytes");

    let cached = server
        .client
        .get(&url)
        .header("Authorization", &auth)
        .header("If-None-Match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers()["etag"], etag);

    let part = server
        .client
        .get(&url)
        .header("Authorization", &auth)
        .header("Range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 1-3/6");
    assert_eq!(part.bytes().await.unwrap(), "peg");
    let tail = server
        .client
        .get(&url)
        .header("Authorization", &auth)
        .header("Range", "bytes=-2")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.bytes().await.unwrap(), "-2");
    let beyond = server
        .client
        .get(&url)
        .header("Authorization", &auth)
        .header("Range", "bytes=50-60")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers()["content-range"], "bytes */6");
}

#[tokio::test]
async fn tasks_mode_reads_json_and_reports_bad_files() {
    let server = Server::start().await;
    let project = server.project().await;
    server.write_files(&[
        ("json/task_a.json", r#"{"image": "a.jpg", "meta_note": "single flat task"}"#),
        ("json/task_b_list.json", r#"[{"image": "b0.jpg"}, {"image": "b1.jpg"}]"#),
        ("json/task_c.json", r#"{"data": {"image": "c.jpg"}, "predictions": [{"result": [{"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}], "score": 0.5, "model_version": "m1"}]}"#),
        ("json/task_d.jsonl", "{\"image\": \"d0.jpg\"}\n\n{\"image\": \"d1.jpg\"}\n"),
        ("json/task_e.json", "{\"image\": "),
    ]);
    let (status, storage) = server
        .post("/api/storages/localfiles", json!({"project": project, "path": server.path("json"), "regex_filter": ".*\\.jsonl?", "use_blob_urls": false}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{storage}");
    let path = format!("/api/storages/localfiles/{}", storage["id"]);
    let done = server.sync_and_wait(&path).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["last_sync_count"], 6);
    let traceback = done["traceback"].as_str().unwrap();
    assert!(
        traceback.contains("json/task_e.json line 1: invalid JSON"),
        "{traceback}"
    );

    let (_, tasks) = server
        .get(&format!("/api/tasks?project={project}&page_size=100"))
        .await;
    assert_eq!(tasks["total"], 6);
    assert_eq!(tasks["total_predictions"], 1);
    let images: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["data"]["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        vec!["a.jpg", "b0.jpg", "b1.jpg", "c.jpg", "d0.jpg", "d1.jpg"]
    );
    assert_eq!(tasks["tasks"][0]["data"]["meta_note"], "single flat task");
    assert_eq!(tasks["tasks"][3]["predictions"][0]["score"], 0.5);

    // Fixing the file and re-syncing imports it, and only it.
    server.write_files(&[("json/task_e.json", r#"{"image": "e.jpg"}"#)]);
    let fixed = server.sync_and_wait(&path).await;
    assert_eq!(
        (fixed["status"].clone(), fixed["last_sync_count"].clone()),
        (json!("completed"), json!(1))
    );
    assert!(
        fixed["traceback"].is_null(),
        "a new sync clears the old traceback"
    );
}

#[tokio::test]
async fn media_in_tasks_mode_fails_with_a_hint() {
    let server = Server::start().await;
    let project = server.project().await;
    server.write_files(IMAGES);
    let (_, storage) = server
        .post("/api/storages/localfiles", json!({"project": project, "path": server.path("samples/img"), "regex_filter": "", "use_blob_urls": false}))
        .await;
    let path = format!("/api/storages/localfiles/{}", storage["id"]);
    let failed = server.sync_and_wait(&path).await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["traceback"]
            .as_str()
            .unwrap()
            .contains("is not a JSON/JSONL/Parquet file"),
        "{failed}"
    );
    assert!(failed["last_sync"].is_null());
    assert!(failed["meta"]["time_failure"].is_string());
}

/// Local files take the same Parquet path as buckets (range reads of a
/// file on disk), and the SQLite links keep each row's row group.
#[tokio::test]
async fn parquet_in_a_local_folder_becomes_one_task_per_row() {
    let server = Server::start().await;
    let project = server.project().await;
    std::fs::create_dir_all(server.root.join("pq")).unwrap();
    std::fs::write(
        server.root.join("pq/rows.PARQUET"),
        storage_testing::parquet_fixture("bare-zstd.parquet"),
    )
    .unwrap();
    let (_, storage) = server
        .post(
            "/api/storages/localfiles",
            json!({"project": project, "path": server.path("pq"), "use_blob_urls": false}),
        )
        .await;
    let path = format!("/api/storages/localfiles/{}", storage["id"]);
    let done = server.sync_and_wait(&path).await;
    assert_eq!(
        (done["status"].clone(), done["last_sync_count"].clone()),
        (json!("completed"), json!(3)),
        "{done}"
    );
    let (_, tasks) = server.get(&format!("/api/tasks?project={project}")).await;
    let first = &tasks["tasks"][0]["data"];
    assert_eq!(first["captured"], "2024-05-01T12:30:00Z", "{first}");
    assert_eq!(first["attrs"], json!({"k": 1}), "{first}");
    let links: Vec<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT row_group, row_index FROM storage_links ORDER BY row_index")
            .fetch_all(server.db.pool())
            .await
            .unwrap();
    assert_eq!(
        links,
        [(Some(0), Some(0)), (Some(0), Some(1)), (Some(0), Some(2))]
    );
}

#[tokio::test]
async fn export_storage_writes_annotations_and_deletes_them() {
    let server = Server::start().await;
    let project = server.project().await;
    let (import_id, _) = image_storage(&server, project).await;
    server
        .sync_and_wait(&format!("/api/storages/localfiles/{import_id}"))
        .await;
    std::fs::create_dir_all(server.root.join("export")).unwrap();

    let (status, export) = server
        .post("/api/storages/export/localfiles", json!({"project": project, "title": "export-local", "path": server.path("export"), "can_delete_objects": true}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    assert_eq!(export["status"], "queued", "creation starts a first export");
    assert_eq!(export["can_delete_objects"], true);
    assert!(export.get("recursive_scan").is_none());
    let path = format!("/api/storages/export/localfiles/{}", export["id"]);
    let first = server.wait_synced(&path).await;
    assert_eq!(
        (first["status"].clone(), first["last_sync_count"].clone()),
        (json!("completed"), json!(0))
    );

    let (_, tasks) = server.get(&format!("/api/tasks?project={project}")).await;
    let task_id = tasks["tasks"][0]["id"].as_i64().unwrap();
    let result = json!([{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}]);
    let (status, annotation) = server
        .post(
            &format!("/api/tasks/{task_id}/annotations"),
            json!({"result": result}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{annotation}");
    let annotation_id = annotation["id"].as_i64().unwrap();
    assert_eq!(annotation["task"], task_id);

    // Written on save, named by the annotation id, pretty-printed.
    let file = server.root.join(format!("export/{annotation_id}"));
    let written = std::fs::read_to_string(&file).expect("annotation exported on save");
    assert!(written.contains("\n  \"id\": "), "indented: {written}");
    let exported: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(exported["id"], annotation_id);
    assert_eq!(exported["result"], result);
    assert_eq!(exported["task"]["id"], task_id);
    assert_eq!(
        exported["task"]["data"]["image"],
        "/data/local-files/?d=samples/img/img_000.jpg"
    );
    assert!(exported["completed_by"]["email"].is_string());

    let synced = server.sync_and_wait(&path).await;
    assert_eq!(
        (synced["status"].clone(), synced["last_sync_count"].clone()),
        (json!("completed"), json!(1))
    );
    assert_eq!(synced["meta"]["total_annotations"], 1);

    let (status, _) = server
        .patch(
            &format!("/api/annotations/{annotation_id}"),
            json!({"result": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let rewritten: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(rewritten["result"], json!([]));

    assert_eq!(
        server
            .delete(&format!("/api/annotations/{annotation_id}"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(!file.exists(), "can_delete_objects removes the object");

    // Aggregate lists carry the type; without a project they are empty.
    let (_, all) = server
        .get(&format!("/api/storages/export?project={project}"))
        .await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["type"], "localfiles");
    let (_, all) = server
        .get(&format!("/api/storages/?project={project}"))
        .await;
    assert_eq!(all[0]["id"], import_id);
    assert_eq!(server.get("/api/storages/").await.1, json!([]));
    assert_eq!(server.get("/api/storages/export").await.1, json!([]));
}

#[tokio::test]
async fn bad_bodies_get_clear_400s() {
    let server = Server::start().await;
    let auth = format!("Token {TOKEN}");
    for (body, content_type) in [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ("\"text\"", "application/json"),
    ] {
        let response = server
            .client
            .post(server.url("/api/storages/localfiles/validate"))
            .header("Authorization", &auth)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        envelope(status, &value, StatusCode::BAD_REQUEST);
    }
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = server
        .client
        .post(server.url("/api/storages/localfiles/validate"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(format!("{{\"title\": \"{huge}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Form bodies are accepted as Label Studio accepts them.
    let project = server.project().await;
    server.write_files(IMAGES);
    let response = server
        .client
        .post(server.url("/api/storages/localfiles/validate"))
        .header("Authorization", &auth)
        .form(&[
            ("project", project.to_string()),
            ("path", server.path("samples/img")),
            ("use_blob_urls", "true".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn not_synchronizable_storages_refuse_sync() {
    let server = Server::start().await;
    let project = server.project().await;
    let (id, _) = image_storage(&server, project).await;
    server
        .patch(
            &format!("/api/storages/localfiles/{id}"),
            json!({"synchronizable": false}),
        )
        .await;
    let (status, body) = server
        .post(&format!("/api/storages/localfiles/{id}/sync"), json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"message": format!("Storage {id} is not synchronizable")})
    );
    // A folder removed after creation is a 400 at sync, not a failed job.
    server
        .patch(
            &format!("/api/storages/localfiles/{id}"),
            json!({"synchronizable": true}),
        )
        .await;
    std::fs::remove_dir_all(server.root.join("samples/img")).unwrap();
    let (status, body) = server
        .post(&format!("/api/storages/localfiles/{id}/sync"), json!({}))
        .await;
    let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
    assert!(errors["non_field_errors"][0]
        .as_str()
        .unwrap()
        .contains("does not exist"));
}

#[tokio::test]
async fn concurrent_sync_requests_start_one_job() {
    let server = Server::start().await;
    let project = server.project().await;
    let path = server.folder_storage(project, "many", 500).await;
    let sync_path = format!("{path}/sync");
    let requests = (0..50).map(|_| server.post(&sync_path, json!({})));
    let responses = futures::future::join_all(requests).await;
    let jobs: std::collections::HashSet<String> = responses
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK);
            body["last_sync_job"].as_str().unwrap().to_string()
        })
        .collect();
    let done = server.wait_synced(&path).await;
    assert_eq!(done["status"], "completed");
    assert!(
        jobs.len() <= 2,
        "one job (or one more started after the first finished): {jobs:?}"
    );
    let (_, project_after) = server.get(&format!("/api/projects/{project}")).await;
    assert_eq!(
        project_after["task_number"], 500,
        "exactly one task per file"
    );
}

#[tokio::test]
async fn a_job_left_in_progress_by_a_dead_process_is_resumed_at_start() {
    let server = Server::start().await;
    let project = server.project().await;
    let (id, _) = image_storage(&server, project).await;
    // What a killed process leaves behind: in progress, with a lease that
    // nobody renews.
    use storage_core::persist::{StorageRepository, SyncGuard};
    let storage = server.db.storage(id).await.unwrap().unwrap();
    let mut stuck = storage.sync.clone();
    stuck.status = storage_core::SyncStatus::InProgress;
    stuck.last_sync_job = Some("dead-job".into());
    stuck.lease_until = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    assert!(server
        .db
        .update_sync(id, &SyncGuard::of(&storage.sync), &stuck)
        .await
        .unwrap());
    let dir = server.stop().await;

    let restarted = Server::start_in(dir, support::fast_runner()).await;
    let done = restarted
        .wait_synced(&format!("/api/storages/localfiles/{id}"))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["last_sync_count"], 3);
    assert_eq!(done["meta"]["resumes"], 1);
}

#[tokio::test]
async fn shutdown_mid_sync_requeues_and_the_next_start_finishes_exactly() {
    let mut runner = support::fast_runner();
    runner.import.batch_size = 20;
    runner.progress_interval = std::time::Duration::from_millis(10);
    let server = Server::start_in(tempfile::tempdir().unwrap(), runner.clone()).await;
    let project = server.project().await;
    let path = server.folder_storage(project, "big", 3000).await;
    server.sync(&path).await;
    let mut interrupted = false;
    for _ in 0..400 {
        let (_, state) = server.get(&path).await;
        if state["status"] == "in_progress" && state["last_sync_count"].as_u64().unwrap_or(0) > 0 {
            interrupted = true;
            break;
        }
        if state["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let db = server.db.clone();
    let dir = server.stop().await;
    let id: i64 = path.rsplit('/').next().unwrap().parse().unwrap();
    use storage_core::persist::StorageRepository;
    let stopped = db.storage(id).await.unwrap().unwrap();
    eprintln!("interrupted mid-sync: {interrupted}");
    if interrupted {
        assert_eq!(
            stopped.sync.status,
            storage_core::SyncStatus::Queued,
            "interrupted jobs wait for the next start"
        );
    }
    let restarted = Server::start_in(dir, runner).await;
    let done = restarted.wait_synced(&path).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["last_sync_count"], 3000,
        "the job's count covers both attempts: {done}"
    );
    assert_eq!(done["meta"]["tasks_existed"], 0, "{done}");
    let (_, project_after) = restarted.get(&format!("/api/projects/{project}")).await;
    assert_eq!(project_after["task_number"], 3000);
}

#[tokio::test]
async fn local_files_follow_changed_and_deleted_files() {
    use conformance::{
        annotate_follow_tasks, check_follow, follow_changes, follow_fields, follow_file,
        FOLLOW_FILES, FOLLOW_POLICIES,
    };
    let server = Server::start().await;
    let mut storages = Vec::new();
    for (changed, deleted, _) in FOLLOW_POLICIES {
        let files: Vec<(String, String)> = (0..FOLLOW_FILES)
            .map(|i| follow_file(i, 1))
            .map(|(name, body)| (format!("follow-{deleted}/{name}"), body))
            .collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_str()))
            .collect();
        server.write_files(&files);
        let project = server.project().await;
        let mut body = follow_fields(changed, deleted);
        body["project"] = json!(project);
        body["path"] = json!(server.path(&format!("follow-{deleted}")));
        let path = server
            .create_storage("/api/storages/localfiles", body)
            .await;
        let first = server.sync_and_wait(&path).await;
        assert_eq!(first["last_sync_count"], FOLLOW_FILES, "{first}");
        annotate_follow_tasks(&server, project).await;
        storages.push((project, path));
    }
    let (written, gone) = follow_changes();
    for (_, deleted, _) in FOLLOW_POLICIES {
        for (name, body) in &written {
            server.write_files(&[(&format!("follow-{deleted}/{name}"), body)]);
        }
        for name in &gone {
            std::fs::remove_file(server.path(&format!("follow-{deleted}/{name}"))).unwrap();
        }
    }
    for (policy, (project, path)) in FOLLOW_POLICIES.into_iter().zip(storages) {
        let done = server.sync_and_wait(&path).await;
        check_follow(&server, project, policy, &done).await;
    }
}

#[tokio::test]
async fn a_storage_with_a_sync_interval_syncs_by_itself() {
    let runner = storage_core::RunnerConfig {
        min_sync_interval: std::time::Duration::from_secs(1),
        ..support::fast_runner()
    };
    let server = Server::start_in(tempfile::tempdir().unwrap(), runner).await;
    let project = server.project().await;
    let files = |range: std::ops::Range<usize>| {
        let files: Vec<(String, &str)> = range.map(|i| (format!("timed/{i}.jpg"), "x")).collect();
        server.write_files(
            &files
                .iter()
                .map(|(n, b)| (n.as_str(), *b))
                .collect::<Vec<_>>(),
        );
    };
    files(0..3);
    let body = |interval: Value| {
        json!({"project": project, "path": server.path("timed"), "use_blob_urls": true,
               "sync_interval": interval})
    };
    for (bad, message) in [
        (json!(0), "greater than or equal to 1"),
        (json!("soon"), "A valid integer is required"),
    ] {
        let (status, error) = server.post("/api/storages/localfiles", body(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        let text = error["validation_errors"]["sync_interval"][0]
            .as_str()
            .unwrap();
        assert!(text.contains(message), "{error}");
    }
    let path = server
        .create_storage("/api/storages/localfiles", body(json!(1)))
        .await;
    let (_, created) = server.get(&path).await;
    assert!(created["next_sync"].is_string(), "{created}");

    // No sync request: the schedule syncs the files, then the new ones.
    let tasks = || async {
        let (_, page) = server.get(&format!("/api/tasks?project={project}")).await;
        page["total"].as_u64().unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tasks().await < 3 {
        assert!(std::time::Instant::now() < deadline, "no scheduled sync");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    files(3..5);
    while tasks().await < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second scheduled sync"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let state = server.wait_synced(&path).await;
    assert_eq!(state["meta"]["scheduled"], true, "{state}");
    assert!(state["meta"]["attempts"].as_u64().unwrap() >= 2, "{state}");
    assert_eq!(tasks().await, 5);

    // Null turns the schedule off.
    let (status, patched) = server.patch(&path, json!({"sync_interval": null})).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert!(patched["next_sync"].is_null(), "{patched}");
}

#[tokio::test]
async fn sync_intervals_below_the_server_minimum_are_refused() {
    let server = Server::start().await;
    let project = server.project().await;
    server.write_files(&[("m/a.jpg", "x")]);
    let (status, error) = server
        .post(
            "/api/storages/localfiles",
            json!({"project": project, "path": server.path("m"), "sync_interval": 59}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(
        error["validation_errors"]["sync_interval"][0],
        "Ensure this value is greater than or equal to 60 (the server's --min-sync-interval)."
    );
}

/// A local-files storage of `count` files that removes the tasks of gone
/// files, synced once; its path.
async fn deleting_storage(server: &Server, project: i64, folder: &str, count: usize) -> String {
    let files: Vec<String> = (0..count).map(|i| format!("{folder}/{i:04}.jpg")).collect();
    server.write_files(&files.iter().map(|f| (f.as_str(), "x")).collect::<Vec<_>>());
    let body = json!({"project": project, "path": server.path(folder), "use_blob_urls": true,
                      "on_object_deleted": "delete"});
    let path = server
        .create_storage("/api/storages/localfiles", body)
        .await;
    assert_eq!(server.sync_and_wait(&path).await["last_sync_count"], count);
    path
}

async fn task_total(server: &Server, project: i64) -> u64 {
    let (_, page) = server.get(&format!("/api/tasks?project={project}")).await;
    page["total"].as_u64().unwrap()
}

#[tokio::test]
async fn the_deletion_guard_holds_back_half_a_folder_until_confirmed() {
    let server = Server::start().await;
    let project = server.project().await;
    let path = deleting_storage(&server, project, "guarded", 20).await;
    for i in 0..10 {
        std::fs::remove_file(server.path(&format!("guarded/{i:04}.jpg"))).unwrap();
    }
    let held = server.sync_and_wait(&path).await;
    assert_eq!(held["status"], "completed_with_errors", "{held}");
    assert_eq!(held["meta"]["objects_missing"], 10, "{held}");
    assert_eq!(held["meta"]["tasks_deleted"], 0, "{held}");
    let traceback = held["traceback"].as_str().unwrap();
    assert!(
        traceback.contains("10 of 20 linked objects (50.0%) are no longer listed")
            && traceback.contains("deletion_guard of 20%")
            && traceback.contains("\"confirm_deletions\": true"),
        "{traceback}"
    );
    assert_eq!(task_total(&server, project).await, 20);

    // A bad confirmation is refused, naming the field.
    let (status, error) = server
        .post(
            &format!("{path}/sync"),
            json!({"confirm_deletions": "maybe"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["validation_errors"]["confirm_deletions"].is_array(),
        "{error}"
    );

    let (status, queued) = server
        .post(&format!("{path}/sync"), json!({"confirm_deletions": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{queued}");
    let applied = server.wait_synced(&path).await;
    assert_eq!(applied["status"], "completed", "{applied}");
    assert_eq!(applied["meta"]["tasks_deleted"], 10, "{applied}");
    assert_eq!(task_total(&server, project).await, 10);

    // The confirmation was for that sync only.
    for i in 10..13 {
        std::fs::remove_file(server.path(&format!("guarded/{i:04}.jpg"))).unwrap();
    }
    let next = server.sync_and_wait(&path).await;
    assert_eq!(next["status"], "completed_with_errors", "{next}");
    assert_eq!(task_total(&server, project).await, 10);
}

#[tokio::test]
async fn an_empty_listing_where_a_thousand_objects_are_linked_deletes_nothing() {
    let server = Server::start().await;
    let project = server.project().await;
    let path = deleting_storage(&server, project, "emptied", 1000).await;
    let (status, patched) = server.patch(&path, json!({"deletion_guard": 100})).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    for i in 0..1000 {
        std::fs::remove_file(server.path(&format!("emptied/{i:04}.jpg"))).unwrap();
    }
    let held = server.sync_and_wait(&path).await;
    assert_eq!(held["status"], "completed_with_errors", "{held}");
    assert!(
        held["traceback"]
            .as_str()
            .unwrap()
            .contains("the listing returned no object while 1000 objects are linked"),
        "{held}"
    );
    assert_eq!(task_total(&server, project).await, 1000);
}

#[tokio::test]
async fn validation_report_of_local_folders() {
    let server = Server::start().await;
    let project = server.project().await;
    server.write_files(&[("report/in/a.json", r#"{"image": "a"}"#)]);
    std::fs::create_dir_all(server.root.join("report/out")).unwrap();
    let (status, report) = server
        .post(
            "/api/storages/localfiles/validate?report=true",
            json!({"project": project, "path": server.path("report/in"), "use_blob_urls": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        support::report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "read=passed",
            "presign=skipped"
        ],
        "{report}"
    );
    let (_, report) = server
        .post(
            "/api/storages/export/localfiles/validate?report=true",
            json!({"project": project, "path": server.path("report/out"), "can_delete_objects": true}),
        )
        .await;
    assert_eq!(
        support::report_checks(&report),
        [
            "configuration=passed",
            "credentials=passed",
            "list=passed",
            "write=passed",
            "delete=passed"
        ],
        "{report}"
    );
    assert_eq!(
        std::fs::read_dir(server.root.join("report/out"))
            .unwrap()
            .count(),
        0,
        "the probe is gone"
    );
    // A folder outside the document root: the configuration says so.
    let (_, report) = server
        .post(
            "/api/storages/localfiles/validate?report=true",
            json!({"project": project, "path": "/etc"}),
        )
        .await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(
        support::report_checks(&report)[0],
        "configuration=failed",
        "{report}"
    );
    assert!(
        report["checks"][0]["message"]
            .as_str()
            .unwrap()
            .contains("path"),
        "{report}"
    );
}

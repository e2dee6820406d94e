//! The request forms of Label Studio's Python SDK (label-studio-sdk 2.1.2,
//! driven end to end by tests/sdk and scripts/sdk-test.sh), pinned here so the
//! Rust suite alone catches a change that would break the SDK: which paths
//! carry a trailing slash, the query parameters it adds, the empty bodies it
//! expects, and how its task pager finds the last page.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{envelope, Server, TOKEN};

/// Status and raw body, for the calls whose body the SDK requires to be empty.
async fn raw(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = server
        .client
        .request(method, server.url(path))
        .header("Authorization", format!("Token {TOKEN}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn storage_calls_in_the_sdks_form() {
    let server = Server::start().await;
    let project = server.project().await;
    server.write_files(&[("sdk/in/tasks.json", r#"[{"image": "a"}, {"image": "b"}]"#)]);
    std::fs::create_dir_all(server.root.join("sdk/out")).unwrap();
    let source = server.path("sdk/in");

    // Import routes: the SDK puts a slash after the type of list and create
    // only, and sends `ordering` when asked to.
    let (status, created) = server
        .post(
            "/api/storages/localfiles/",
            json!({"project": project, "path": source, "title": "in"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (status, listed) = server
        .get(&format!(
            "/api/storages/localfiles/?ordering=id&project={project}"
        ))
        .await;
    assert_eq!((status, listed), (StatusCode::OK, json!([created])));

    // validate answers 200 with an empty body (the SDK returns None; a JSON
    // body would be ignored, a non-2xx raises).
    let (status, body) = raw(
        &server,
        reqwest::Method::POST,
        "/api/storages/localfiles/validate",
        Some(json!({"project": project, "path": source, "id": id})),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));

    let (status, synced) = server
        .post(&format!("/api/storages/localfiles/{id}/sync"), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK, "{synced}");
    assert_eq!(synced["id"], id);
    let done = server
        .wait_synced(&format!("/api/storages/localfiles/{id}"))
        .await;
    assert_eq!(
        (done["status"].as_str(), done["last_sync_count"].as_i64()),
        (Some("completed"), Some(2))
    );

    // Export routes: no slash anywhere.
    let (status, export) = server
        .post(
            "/api/storages/export/localfiles",
            json!({"project": project, "path": server.path("sdk/out")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    let export_id = export["id"].as_i64().unwrap();
    let (status, listed) = server
        .get(&format!(
            "/api/storages/export/localfiles?project={project}"
        ))
        .await;
    assert_eq!(
        (status, listed[0]["id"].as_i64()),
        (StatusCode::OK, Some(export_id))
    );

    // delete answers 204 with an empty body, and a later get the JSON 404
    // the SDK raises as ApiError(status_code=404).
    for path in [
        format!("/api/storages/localfiles/{id}"),
        format!("/api/storages/export/localfiles/{export_id}"),
    ] {
        let (status, body) = raw(&server, reqwest::Method::DELETE, &path, None).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NO_CONTENT, ""),
            "{path}"
        );
        let (status, body) = server.get(&path).await;
        envelope(status, &body, StatusCode::NOT_FOUND);
        assert_eq!(body["detail"], "Not found.");
    }
}

#[tokio::test]
async fn task_pager_and_annotation_routes_in_the_sdks_form() {
    let server = Server::start().await;
    let project = server
        .project_with(json!([{"image": "a"}, {"image": "b"}, {"image": "c"}]))
        .await;

    // The generated SDK's pager asks for page + 1 until a page has no
    // tasks or the server answers 404 (its `SyncPagerExt` stops there):
    // the page after the last is Label Studio's 404 "Invalid page.".
    let mut seen = Vec::new();
    for page in 1.. {
        let response = server
            .client
            .get(server.url(&format!(
                "/api/tasks/?page={page}&page_size=2&project={project}"
            )))
            .header("Authorization", format!("Token {}", server.token))
            .header("X-Fern-SDK-Name", "label-studio-sdk")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == StatusCode::NOT_FOUND {
            assert_eq!(body["detail"], "Invalid page.");
            assert_eq!(page, 3);
            break;
        }
        assert_eq!(status, StatusCode::OK, "page {page}: {body}");
        assert_eq!(body["total"], 3);
        seen.extend(
            body["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["data"]["image"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(seen, ["a", "b", "c"]);

    // Annotations: create under the task, update and delete by id, all with a
    // trailing slash.
    let (_, page) = server
        .get(&format!("/api/tasks/?page=1&project={project}"))
        .await;
    let task = page["tasks"][0]["id"].as_i64().unwrap();
    let (status, annotation) = server
        .post(
            &format!("/api/tasks/{task}/annotations/"),
            json!({"result": [], "lead_time": 2.5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{annotation}");
    assert_eq!(
        (
            annotation["task"].as_i64(),
            annotation["lead_time"].as_f64()
        ),
        (Some(task), Some(2.5))
    );
    let id = annotation["id"].as_i64().unwrap();
    let (status, updated) = server
        .patch(
            &format!("/api/annotations/{id}/"),
            json!({"lead_time": 4.0}),
        )
        .await;
    assert_eq!(
        (status, updated["lead_time"].as_f64()),
        (StatusCode::OK, Some(4.0)),
        "{updated}"
    );
    let (status, body) = raw(
        &server,
        reqwest::Method::DELETE,
        &format!("/api/annotations/{id}/"),
        None,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    let (_, task_json) = server.get(&format!("/api/tasks/{task}/")).await;
    assert_eq!(task_json["total_annotations"], 0);
}

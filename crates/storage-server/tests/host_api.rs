//! The host surface's projects, tasks, annotations and users as Label
//! Studio 1.23.2 shows them, over a real socket and a real SQLite file:
//! project counters through imports, syncs and annotation changes, the
//! parsed label config, pagination ends, and organisation boundaries.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{envelope, Api, Server, Setup};

/// An image with two controls: a classification and boxes.
const TWO_CONTROLS: &str = r#"<View>
  <Image name="image" value="$image"/>
  <Choices name="class" toName="image"><Choice value="Cat"/><Choice value="Dog" alias="dog"/></Choices>
  <RectangleLabels name="box" toName="image"><Label value="Face" background="red"/></RectangleLabels>
</View>"#;

const COUNTERS: [&str; 8] = [
    "task_number",
    "finished_task_number",
    "total_annotations_number",
    "total_predictions_number",
    "num_tasks_with_annotations",
    "useful_annotation_number",
    "ground_truth_number",
    "skipped_annotations_number",
];

async fn project(api: &Api, config: &str) -> Value {
    let (status, project) = api
        .post(
            "/api/projects",
            json!({"title": "host", "label_config": config}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    project
}

/// The counters of a project (in [`COUNTERS`] order), its queue for the
/// caller, and the task list's totals.
async fn counters(api: &Api, project: i64) -> ([u64; 8], (u64, u64), [u64; 3]) {
    let (status, body) = api.get(&format!("/api/projects/{project}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counters = COUNTERS.map(|name| {
        body[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} is no integer: {body}"))
    });
    let queue = (
        body["queue_total"].as_u64().unwrap(),
        body["queue_done"].as_u64().unwrap(),
    );
    let (_, page) = api
        .get(&format!("/api/tasks?project={project}&page_size=1"))
        .await;
    let totals = ["total", "total_annotations", "total_predictions"]
        .map(|name| page[name].as_u64().unwrap());
    (counters, queue, totals)
}

async fn annotate(api: &Api, task: i64, body: Value) -> i64 {
    let (status, annotation) = api
        .post(&format!("/api/tasks/{task}/annotations"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{annotation}");
    annotation["id"].as_i64().unwrap()
}

/// A token of a user in another organisation.
async fn outsider(server: &Server) -> Api {
    let org = server.db.ensure_organization("elsewhere").await.unwrap();
    let user = server
        .db
        .ensure_user("outsider@example.com", org)
        .await
        .unwrap();
    let token = "outsider-token-0123456789";
    server.db.set_user_token(user, token).await.unwrap();
    Api::new(server.base.clone(), token)
}

#[tokio::test]
async fn counters_follow_imports_syncs_and_every_annotation_change() {
    let server = Server::start().await;
    let created = project(&server, TWO_CONTROLS).await;
    let id = created["id"].as_i64().unwrap();
    for name in COUNTERS {
        assert_eq!(created[name], 0, "{name}: {created}");
    }

    // Import: a predicted task, a skipped one, a ground truth, a bare one.
    // Annotations that come with tasks are the importer's (as in Label
    // Studio), so they are in the caller's queue (`queue_done`).
    let prediction = json!({"model_version": "m1", "score": 0.5, "result": [
        {"from_name": "class", "to_name": "image", "type": "choices", "value": {"choices": ["Cat"]}}]});
    server
        .import(
            id,
            json!([
                {"data": {"image": "a.jpg"}, "predictions": [prediction],
                 "annotations": [{"result": []}]},
                {"data": {"image": "b.jpg"}, "annotations": [{"result": [], "was_cancelled": true}]},
                {"data": {"image": "c.jpg"}, "annotations": [{"result": [], "ground_truth": true}]},
                {"data": {"image": "d.jpg"}},
            ]),
        )
        .await;
    assert_eq!(
        counters(&server, id).await,
        ([4, 2, 2, 1, 1, 1, 1, 1], (4, 3), [4, 2, 1])
    );

    // A sync of two task files, one of them annotated.
    server.write_files(&[
        (
            "sync/e.json",
            r#"{"data": {"image": "e.jpg"}, "annotations": [{"result": []}]}"#,
        ),
        ("sync/f.json", r#"{"image": "f.jpg"}"#),
    ]);
    let storage = server.local_storage(id, "sync", false).await;
    let synced = server.sync_and_wait(&storage).await;
    assert_eq!(synced["status"], "completed", "{synced}");
    assert_eq!(
        counters(&server, id).await,
        ([6, 3, 3, 1, 2, 2, 1, 1], (6, 4), [6, 3, 1])
    );

    // The caller annotates the bare task: finished, in the caller's queue.
    let (_, page) = server.get(&format!("/api/tasks?project={id}")).await;
    let tasks: Vec<i64> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    let mine = annotate(&server, tasks[3], json!({"result": []})).await;
    assert_eq!(
        counters(&server, id).await,
        ([6, 4, 4, 1, 3, 3, 1, 1], (6, 5), [6, 4, 1])
    );

    // Cancelled: skipped, the task unfinished again (but still the caller's).
    let (status, body) = server
        .patch(
            &format!("/api/annotations/{mine}"),
            json!({"was_cancelled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        counters(&server, id).await,
        ([6, 3, 3, 1, 2, 2, 1, 2], (6, 5), [6, 3, 1])
    );

    // Restored as ground truth: finished, counted as ground truth only.
    let (status, body) = server
        .patch(
            &format!("/api/annotations/{mine}"),
            json!({"was_cancelled": false, "ground_truth": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        counters(&server, id).await,
        ([6, 4, 4, 1, 2, 2, 2, 1], (6, 5), [6, 4, 1])
    );

    // Deleted: back to where the sync left it.
    let (status, _) = server.delete(&format!("/api/annotations/{mine}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        counters(&server, id).await,
        ([6, 3, 3, 1, 2, 2, 1, 1], (6, 4), [6, 3, 1])
    );
}

#[tokio::test]
async fn a_project_read_takes_its_counters_from_the_project_row() {
    let server = Server::start().await;
    let id = project(&server, TWO_CONTROLS).await["id"].as_i64().unwrap();
    server.import(id, json!([{"image": "a.jpg"}])).await;
    // A task written behind the host's back (as no code path of the server
    // does) is not counted: reads do not count tasks, the row does.
    sqlx::query(
        "INSERT INTO tasks (project_id, inner_id, data, created_at, updated_at)
         VALUES ($1, 99, '{}', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
    )
    .bind(id)
    .execute(server.db.pool())
    .await
    .unwrap();
    let (_, project) = server.get(&format!("/api/projects/{id}")).await;
    assert_eq!(project["task_number"], 1, "{project}");
    let (_, page) = server.get(&format!("/api/tasks?project={id}")).await;
    assert_eq!(page["total"], 1, "{page}");
}

#[tokio::test]
async fn the_label_config_is_parsed_as_label_studio_does() {
    let server = Server::start().await;
    let project = project(&server, TWO_CONTROLS).await;
    let expected_parsed = json!({
        "class": {
            "type": "Choices",
            "to_name": ["image"],
            "inputs": [{"type": "Image", "valueType": null, "value": "image"}],
            "labels": ["Cat", "dog"],
            "labels_attrs": {"Cat": {"value": "Cat"}, "dog": {"value": "Dog", "alias": "dog"}},
        },
        "box": {
            "type": "RectangleLabels",
            "to_name": ["image"],
            "inputs": [{"type": "Image", "valueType": null, "value": "image"}],
            "labels": ["Face"],
            "labels_attrs": {"Face": {"value": "Face", "background": "red"}},
        },
    });
    let expected_weights = json!({
        "class": {"overall": 1.0, "type": "Choices", "labels": {"Cat": 1.0, "dog": 1.0}},
        "box": {"overall": 1.0, "type": "RectangleLabels", "labels": {"Face": 1.0}},
    });
    let id = project["id"].as_i64().unwrap();
    let (_, read) = server.get(&format!("/api/projects/{id}")).await;
    for body in [&project, &read] {
        assert_eq!(body["parsed_label_config"], expected_parsed);
        assert_eq!(body["control_weights"], expected_weights);
        assert_eq!(body["config_has_control_tags"], true);
        assert_eq!(body["config_suitable_for_bulk_annotation"], false);
        assert_eq!(body["annotator_evaluation_enabled"], false);
        assert_eq!(
            body["created_by"],
            json!({"id": body["created_by"]["id"], "first_name": "", "last_name": "",
                   "email": "admin@localhost", "avatar": null})
        );
    }

    // No label_config: Label Studio's default, without controls.
    let (status, bare) = server.post("/api/projects", json!({"title": "bare"})).await;
    assert_eq!(status, StatusCode::CREATED, "{bare}");
    assert_eq!(bare["label_config"], "<View></View>");
    assert_eq!(bare["parsed_label_config"], json!({}));
    assert_eq!(bare["config_has_control_tags"], false);
}

#[tokio::test]
async fn a_malformed_or_oversized_label_config_is_a_400_naming_it() {
    let server = Server::start_setup(
        tempfile::tempdir().unwrap(),
        Setup {
            max_body_bytes: None,
            ..Setup::default()
        },
    )
    .await;
    for config in [
        "<View><Image name=\"i\" value=\"$i\"></View>",
        "<View",
        "",
        "<View><Text name=\"t\" value=\"$t\"/><Choices name=\"c\" toName=\"missing\"/></View>",
        "<View><Text name=\"t\" value=\"$t\"/><Text name=\"t\" value=\"$u\"/></View>",
    ] {
        let (status, body) = server
            .post(
                "/api/projects",
                json!({"title": "bad", "label_config": config}),
            )
            .await;
        let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
        assert!(errors["label_config"][0].is_string(), "{config}: {body}");
    }
    let huge = format!(
        "<View><Text name=\"t\" value=\"$t\"/>{}</View>",
        "<!-- padding -->".repeat(70_000)
    );
    let (status, body) = server
        .post(
            "/api/projects",
            json!({"title": "huge", "label_config": huge}),
        )
        .await;
    let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(
        errors["label_config"],
        json!(["Ensure this field has no more than 1048576 bytes."])
    );
    let (_, list) = server.get("/api/projects").await;
    assert_eq!(list["count"], 0, "nothing was created: {list}");
}

#[tokio::test]
async fn task_pages_end_with_label_studios_404() {
    let server = Server::start().await;
    let id = project(&server, TWO_CONTROLS).await["id"].as_i64().unwrap();
    // Page 1 of an empty project is an empty page.
    let (status, page) = server.get(&format!("/api/tasks?project={id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["tasks"], json!([]));
    let (status, body) = server.get(&format!("/api/tasks?project={id}&page=2")).await;
    envelope(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Invalid page.");

    server
        .import(id, json!([{"image": "a"}, {"image": "b"}, {"image": "c"}]))
        .await;
    // A "page until 404" loop ends.
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) = server
            .get(&format!("/api/tasks?project={id}&page={page}&page_size=2"))
            .await;
        if status == StatusCode::NOT_FOUND {
            assert_eq!(body["detail"], "Invalid page.");
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(
            body["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["data"]["image"].clone()),
        );
        page += 1;
    }
    assert_eq!((page, seen), (3, vec![json!("a"), json!("b"), json!("c")]));
    for bad in ["0", "abc", "-1"] {
        let (status, body) = server
            .get(&format!("/api/tasks?project={id}&page={bad}"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
        assert_eq!(body["detail"], "Invalid page.");
    }
    let (_, last) = server
        .get(&format!("/api/tasks?project={id}&page=last&page_size=2"))
        .await;
    assert_eq!(last["tasks"].as_array().unwrap().len(), 1, "{last}");
}

#[tokio::test]
async fn task_lists_summarise_predictions() {
    let server = Server::start().await;
    let id = project(&server, TWO_CONTROLS).await["id"].as_i64().unwrap();
    let result = json!([{"from_name": "class", "to_name": "image", "type": "choices",
                         "value": {"choices": ["Cat"]}}]);
    server
        .import(
            id,
            json!([
                {"data": {"image": "a"}, "predictions": [
                    {"model_version": "m1", "result": result},
                    {"model_version": "m2", "result": []},
                    {"model_version": "m1", "result": []}]},
                {"data": {"image": "b"}},
            ]),
        )
        .await;
    let (_, page) = server.get(&format!("/api/tasks?project={id}")).await;
    let (predicted, bare) = (&page["tasks"][0], &page["tasks"][1]);
    assert_eq!(
        predicted["predictions_results"],
        "[{from_name: class, to_name: image, type: choices, value: {choices: [Cat]}}] [] []"
    );
    assert_eq!(predicted["predictions_model_versions"], "m1,m2");
    assert_eq!(bare["predictions_results"], "");
    assert_eq!(bare["predictions_model_versions"], "");
    assert_eq!(bare["annotations_results"], "");
}

#[tokio::test]
async fn projects_are_listed_in_pages_newest_first() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            project(&server, "<View></View>").await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let other = outsider(&server).await;
    let theirs = project(&other, "<View></View>").await["id"]
        .as_i64()
        .unwrap();

    let (status, first) = server.get("/api/projects?page_size=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["count"], 3);
    assert_eq!(
        first["next"],
        format!("{}/api/projects?page_size=2&page=2", server.base)
    );
    assert_eq!(first["previous"], Value::Null);
    let listed = |page: &Value| -> Vec<i64> {
        page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(listed(&first), [ids[2], ids[1]]);
    assert_eq!(first["results"][0]["task_number"], 0);
    let (_, second) = server.get("/api/projects?page_size=2&page=2").await;
    assert_eq!(listed(&second), [ids[0]]);
    assert_eq!(second["next"], Value::Null);
    assert_eq!(
        second["previous"],
        format!("{}/api/projects?page_size=2", server.base)
    );
    let (status, body) = server.get("/api/projects?page_size=2&page=3").await;
    envelope(status, &body, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Invalid page.");

    // Each organisation sees its own.
    let (_, mine) = server.get("/api/projects").await;
    assert!(!listed(&mine).contains(&theirs));
    let (_, yours) = other.get("/api/projects").await;
    assert_eq!(listed(&yours), [theirs]);
}

#[tokio::test]
async fn annotations_are_read_one_by_one_and_per_task() {
    let server = Server::start().await;
    let id = project(&server, TWO_CONTROLS).await["id"].as_i64().unwrap();
    server.import(id, json!([{"image": "a"}])).await;
    let (_, page) = server.get(&format!("/api/tasks?project={id}")).await;
    let task = page["tasks"][0]["id"].as_i64().unwrap();
    let first = annotate(&server, task, json!({"result": [], "lead_time": 1.5})).await;
    let skipped = annotate(&server, task, json!({"result": [], "was_cancelled": true})).await;
    let second = annotate(&server, task, json!({"result": []})).await;

    let (status, one) = server.get(&format!("/api/annotations/{first}")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(
        (one["id"].as_i64(), one["task"].as_i64()),
        (Some(first), Some(task))
    );
    assert_eq!(one["lead_time"], 1.5);
    let (status, list) = server.get(&format!("/api/tasks/{task}/annotations/")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    // Label Studio lists the annotations that are not cancelled.
    assert_eq!(ids, [first, second]);
    assert!(!ids.contains(&skipped));

    let (status, _) = server.get("/api/annotations/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get("/api/tasks/999999/annotations").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Another organisation finds none of it.
    let other = outsider(&server).await;
    for path in [
        format!("/api/annotations/{first}"),
        format!("/api/tasks/{task}/annotations"),
        format!("/api/projects/{id}"),
        format!("/api/tasks?project={id}"),
    ] {
        let (status, body) = other.get(&path).await;
        envelope(status, &body, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn whoami_describes_the_caller() {
    let server = Server::start().await;
    let (status, me) = server.get("/api/current-user/whoami").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "admin@localhost");
    assert_eq!(me["username"], "admin@localhost");
    assert_eq!(me["initials"], "ad");
    assert_eq!(
        (me["first_name"].as_str(), me["last_name"].as_str()),
        (Some(""), Some(""))
    );
    assert!(me["id"].as_i64().is_some() && me["active_organization"].as_i64().is_some());
    assert!(me["date_joined"].as_str().unwrap().ends_with('Z'), "{me}");
    let other = outsider(&server).await;
    let (_, them) = other.get("/api/current-user/whoami").await;
    assert_eq!(them["email"], "outsider@example.com");
    assert_ne!(them["active_organization"], me["active_organization"]);
    let (status, _) = Api::new(server.base.clone(), "wrong-token")
        .get("/api/current-user/whoami")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

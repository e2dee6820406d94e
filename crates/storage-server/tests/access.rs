//! Access between users and organisations over a real socket: two
//! organisations, three users with their own tokens (A1 and A2 in org A,
//! B in org B). Every route that names an object of org A answers B with
//! 404 (never 403, never the object), A2 with what A1 would get, and a
//! missing or wrong token with 401. Then the `storage-server` binary's
//! `create-user` subcommand, run as a real process.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use object_store::ObjectStoreExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_core::{Backend, EndpointPolicy};
use storage_s3::{S3Backend, S3Options};
use support::buckets::s3_builder;
use support::process::{self, Process};
use support::{envelope, fast_runner, Api, Server, TOKEN as A1};

const A2: &str = "token-a2-0123456789abcdef";
const B: &str = "token-b-0123456789abcdef";
/// In every title of org A's objects; no answer to B may carry it.
const PRIVATE: &str = "A-PRIVATE";

/// One request as `token` (none: no Authorization header); the status and
/// the body as text.
async fn send(
    server: &Server,
    token: Option<&str>,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, String) {
    let authorization = token.map(|token| format!("Token {token}"));
    let response = server
        .raw(
            method.clone(),
            path,
            body.cloned(),
            authorization.as_deref(),
        )
        .await;
    (response.status(), response.text().await.unwrap())
}

async fn json_as(
    server: &Server,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, text) = send(server, Some(token), &method, path, body.as_ref()).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A request of the table: what it is, and what A2 (org A) gets.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    a2: StatusCode,
}

fn case(method: Method, path: impl Into<String>, body: Option<Value>, a2: StatusCode) -> Case {
    Case {
        method,
        path: path.into(),
        body,
        a2,
    }
}

/// Org A's objects, made by A1.
struct OrgA {
    project: i64,
    local_import: i64,
    local_export: i64,
    s3_import: i64,
    s3_export: i64,
    task: i64,
    s3_task_uri: String,
    s3_task: i64,
    annotation: i64,
}

async fn org_a(server: &Server) -> OrgA {
    let moto = storage_testing::moto();
    let prefix = storage_testing::unique_prefix("access");
    let seed = s3_builder(&moto).build().unwrap();
    seed.put(
        &object_store::path::Path::from(format!("{prefix}/x.jpg")),
        "jpeg".into(),
    )
    .await
    .unwrap();
    server.write_files(&[("a/img.jpg", "A-PRIVATE-IMAGE")]);
    std::fs::create_dir_all(server.root.join("a-export")).unwrap();

    let (status, project) = json_as(
        server,
        A1,
        Method::POST,
        "/api/projects",
        Some(json!({"title": PRIVATE})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let project = project["id"].as_i64().unwrap();
    let s3 = json!({"project": project, "title": PRIVATE, "bucket": moto.bucket, "prefix": prefix, "use_blob_urls": true,
                    "s3_endpoint": moto.endpoint, "aws_access_key_id": moto.access_key_id,
                    "aws_secret_access_key": moto.secret_access_key, "region_name": "us-east-1"});
    let mut s3_export = s3.clone();
    s3_export["prefix"] = json!(format!("{prefix}-export"));
    let mut ids = Vec::new();
    for (route, body) in [
        (
            "/api/storages/localfiles",
            json!({"project": project, "title": PRIVATE, "path": server.path("a"), "use_blob_urls": true}),
        ),
        (
            "/api/storages/export/localfiles",
            json!({"project": project, "title": PRIVATE, "path": server.path("a-export")}),
        ),
        ("/api/storages/s3", s3.clone()),
        // Elsewhere: exported annotations must not become imported tasks.
        ("/api/storages/export/s3", s3_export),
    ] {
        let (status, storage) = json_as(server, A1, Method::POST, route, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{route}: {storage}");
        ids.push(storage["id"].as_i64().unwrap());
    }
    json_as(
        server,
        A1,
        Method::POST,
        &format!("/api/storages/localfiles/{}/sync", ids[0]),
        None,
    )
    .await;
    server
        .wait_synced(&format!("/api/storages/localfiles/{}", ids[0]))
        .await;
    let s3_task_uri = format!("s3://{}/{prefix}/x.jpg", moto.bucket);
    let (status, _) = json_as(
        server,
        A1,
        Method::POST,
        &format!("/api/projects/{project}/import"),
        Some(json!([{"image": s3_task_uri}])),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, tasks) = json_as(
        server,
        A1,
        Method::GET,
        &format!("/api/tasks?project={project}"),
        None,
    )
    .await;
    let task = tasks["tasks"][0]["id"].as_i64().unwrap();
    let s3_task = tasks["tasks"][1]["id"].as_i64().unwrap();
    let (status, annotation) = json_as(
        server,
        A1,
        Method::POST,
        &format!("/api/tasks/{task}/annotations"),
        Some(json!({"result": []})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{annotation}");
    OrgA {
        project,
        local_import: ids[0],
        local_export: ids[1],
        s3_import: ids[2],
        s3_export: ids[3],
        task,
        s3_task_uri,
        s3_task,
        annotation: annotation["id"].as_i64().unwrap(),
    }
}

/// Every route that names one of org A's objects, reads first, then
/// writes, deletes last (A2 runs them in this order).
fn routes(a: &OrgA) -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let p = a.project;
    let fileuri = URL_SAFE.encode(&a.s3_task_uri);
    let title = Some(json!({"title": "changed"}));
    let mut cases = vec![
        case(M::GET, format!("/api/projects/{p}"), None, S::OK),
        case(M::GET, format!("/api/tasks?project={p}"), None, S::OK),
        case(M::GET, format!("/api/tasks/{}", a.task), None, S::OK),
        case(M::GET, "/data/local-files/?d=a/img.jpg", None, S::OK),
    ];
    for alias in ["resolve", "presign"] {
        cases.push(case(
            M::GET,
            format!("/tasks/{}/{alias}/?fileuri={fileuri}", a.s3_task),
            None,
            S::SEE_OTHER,
        ));
        cases.push(case(
            M::GET,
            format!("/projects/{p}/{alias}/?fileuri={fileuri}"),
            None,
            S::SEE_OTHER,
        ));
    }
    let storages = [
        ("localfiles", a.local_import),
        ("export/localfiles", a.local_export),
        ("s3", a.s3_import),
        ("export/s3", a.s3_export),
    ];
    for (kind, id) in storages {
        cases.push(case(
            M::GET,
            format!("/api/storages/{kind}?project={p}"),
            None,
            S::OK,
        ));
        cases.push(case(
            M::GET,
            format!("/api/storages/{kind}/{id}"),
            None,
            S::OK,
        ));
        cases.push(case(
            M::GET,
            format!("/api/storages/{kind}/{id}/"),
            None,
            S::OK,
        ));
        cases.push(case(
            M::POST,
            format!("/api/storages/{kind}/validate"),
            Some(json!({"id": id, "project": p})),
            S::OK,
        ));
    }
    for (kind, id) in storages {
        cases.push(case(
            M::PATCH,
            format!("/api/storages/{kind}/{id}"),
            title.clone(),
            S::OK,
        ));
        cases.push(case(
            M::POST,
            format!("/api/storages/{kind}/{id}/sync"),
            None,
            S::OK,
        ));
    }
    cases.extend([
        case(
            M::POST,
            format!("/api/projects/{p}/import"),
            Some(json!([{"image": "new.jpg"}])),
            S::CREATED,
        ),
        case(
            M::POST,
            format!("/api/tasks/{}/annotations", a.task),
            Some(json!({"result": []})),
            S::CREATED,
        ),
        case(
            M::PATCH,
            format!("/api/annotations/{}", a.annotation),
            Some(json!({"result": []})),
            S::OK,
        ),
        case(
            M::DELETE,
            format!("/api/annotations/{}", a.annotation),
            None,
            S::NO_CONTENT,
        ),
    ]);
    for (kind, id) in storages {
        cases.push(case(
            M::DELETE,
            format!("/api/storages/{kind}/{id}"),
            None,
            S::NO_CONTENT,
        ));
    }
    cases
}

async fn start() -> Server {
    let s3 = S3Options::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_timeout(Duration::from_secs(10));
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(S3Backend::new(s3))];
    let server = Server::start_with(tempfile::tempdir().unwrap(), fast_runner(), backends).await;
    let org_a = server.db.ensure_organization("default").await.unwrap();
    let a2 = server
        .db
        .ensure_user("a2@example.com", org_a)
        .await
        .unwrap();
    server.db.set_user_token(a2, A2).await.unwrap();
    let org_b = server.db.ensure_organization("org-b").await.unwrap();
    assert_ne!(org_a, org_b);
    let b = server.db.ensure_user("b@example.com", org_b).await.unwrap();
    server.db.set_user_token(b, B).await.unwrap();
    server
}

/// Waits until no sync of org A's storages is queued or running.
async fn wait_idle(server: &Server, a: &OrgA) {
    let started = Instant::now();
    for (kind, id) in [
        ("localfiles", a.local_import),
        ("export/localfiles", a.local_export),
        ("s3", a.s3_import),
        ("export/s3", a.s3_export),
    ] {
        loop {
            let (status, storage) = json_as(
                server,
                A1,
                Method::GET,
                &format!("/api/storages/{kind}/{id}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{storage}");
            if !matches!(storage["status"].as_str(), Some("queued" | "in_progress")) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{kind} {id} still syncing: {storage}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn another_organisation_gets_404_for_every_object_and_the_same_organisation_gets_through() {
    let server = start().await;
    let a = org_a(&server).await;
    wait_idle(&server, &a).await;
    let cases = routes(&a);

    // B: 404 everywhere, nothing of A in the answer, nothing changed.
    for c in &cases {
        let (status, text) = send(&server, Some(B), &c.method, &c.path, c.body.as_ref()).await;
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("B {} {}: not JSON: {text}", c.method, c.path));
        envelope(status, &body, StatusCode::NOT_FOUND);
        assert!(!text.contains(PRIVATE), "B {} {}: {text}", c.method, c.path);
    }
    let (status, annotation_task) = json_as(
        &server,
        A1,
        Method::GET,
        &format!("/api/tasks/{}", a.task),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        annotation_task["total_annotations"], 1,
        "B's PATCH/DELETE left A's annotation alone"
    );
    for (kind, id) in [
        ("localfiles", a.local_import),
        ("export/localfiles", a.local_export),
        ("s3", a.s3_import),
        ("export/s3", a.s3_export),
    ] {
        let (status, storage) = json_as(
            &server,
            A1,
            Method::GET,
            &format!("/api/storages/{kind}/{id}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "B deleted {kind} {id}: {storage}");
        assert_eq!(storage["title"], PRIVATE, "B changed {kind} {id}");
    }
    let (_, project) = json_as(
        &server,
        A1,
        Method::GET,
        &format!("/api/projects/{}", a.project),
        None,
    )
    .await;
    assert_eq!(
        project["task_number"], 2,
        "B imported nothing into A's project"
    );

    // B's own view: empty aggregate lists for A's project; its own project
    // lists only its own storages; A's project in a body is "Invalid pk".
    for kind in ["", "/export"] {
        let (status, list) = json_as(
            &server,
            B,
            Method::GET,
            &format!("/api/storages{kind}?project={}", a.project),
            None,
        )
        .await;
        assert_eq!(
            (status, list),
            (StatusCode::OK, json!([])),
            "/api/storages{kind}"
        );
    }
    let (status, own) = json_as(
        &server,
        B,
        Method::POST,
        "/api/projects",
        Some(json!({"title": "b"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let own = own["id"].as_i64().unwrap();
    server.write_files(&[("b/img.jpg", "b")]);
    let (status, mine) = json_as(
        &server,
        B,
        Method::POST,
        "/api/storages/localfiles",
        Some(json!({"project": own, "path": server.path("b")})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{mine}");
    let (_, list) = json_as(
        &server,
        B,
        Method::GET,
        &format!("/api/storages?project={own}"),
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], mine["id"]);
    let invalid = format!("Invalid pk \"{}\" - object does not exist.", a.project);
    for (method, route) in [
        (Method::POST, "/api/storages/localfiles".to_string()),
        (
            Method::POST,
            "/api/storages/localfiles/validate".to_string(),
        ),
        (Method::POST, "/api/storages/export/localfiles".to_string()),
        (
            Method::PATCH,
            format!("/api/storages/localfiles/{}", mine["id"]),
        ),
    ] {
        let (status, body) = json_as(
            &server,
            B,
            method.clone(),
            &route,
            Some(json!({"project": a.project, "path": server.path("b")})),
        )
        .await;
        let errors = envelope(status, &body, StatusCode::BAD_REQUEST);
        assert_eq!(errors["project"][0], invalid, "{method} {route}");
    }
    // B's file is B's: A2 does not see it either.
    assert_eq!(
        send(
            &server,
            Some(B),
            &Method::GET,
            "/data/local-files/?d=b/img.jpg",
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &server,
            Some(A2),
            &Method::GET,
            "/data/local-files/?d=b/img.jpg",
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    // No token, a wrong token: 401 on every route, before anything else.
    for c in &cases {
        for token in [None, Some("wrong-token-0123456789")] {
            let (status, text) = send(&server, token, &c.method, &c.path, c.body.as_ref()).await;
            let body: Value = serde_json::from_str(&text).unwrap();
            envelope(status, &body, StatusCode::UNAUTHORIZED);
            assert!(!text.contains(PRIVATE));
        }
    }

    // A2, the same organisation: what A1 would get, in order (syncs
    // finish before the deletes).
    let mut idle = false;
    for c in &cases {
        if c.method == Method::DELETE && c.path.starts_with("/api/storages/") && !idle {
            wait_idle(&server, &a).await;
            idle = true;
        }
        let (status, text) = send(&server, Some(A2), &c.method, &c.path, c.body.as_ref()).await;
        assert_eq!(status, c.a2, "A2 {} {}: {text}", c.method, c.path);
    }
    let (_, project) = json_as(
        &server,
        A2,
        Method::GET,
        &format!("/api/projects/{}", a.project),
        None,
    )
    .await;
    let (_, tasks) = json_as(
        &server,
        A2,
        Method::GET,
        &format!("/api/tasks?project={}", a.project),
        None,
    )
    .await;
    // A2's import and the S3 sync's one object.
    assert_eq!(project["task_number"], 4, "{tasks}");
}

// ---------------------------------------------------------------------------
// The storage-server binary's `create-user`

/// Runs `create-user` and returns the one line it prints: the token.
fn create_user(data_dir: &std::path::Path, email: &str, organization: &str) -> String {
    let output = process::command(data_dir)
        .args([
            "create-user",
            "--email",
            email,
            "--organization",
            organization,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "create-user failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.trim_end_matches('\n');
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "create-user must print the token alone on stdout, got {stdout:?}"
    );
    token.to_string()
}

#[tokio::test]
async fn storage_server_create_user_gives_working_tokens_scoped_to_their_organisation() {
    let data = tempfile::tempdir().unwrap();
    let token_a = create_user(data.path(), "alice@example.com", "org-a");

    let mut command = process::command(data.path());
    command.args(["--token", "admin-token-0123456789"]);
    let server = Process::start(command, data.path(), "server");
    // The status a user with `token` gets for `GET path`.
    let status_as = |token: &str, path: String| {
        let api = Api::new(server.base.clone(), token);
        async move { api.get(&path).await.0 }
    };
    assert_eq!(
        status_as(&token_a, "/api/storages/types".into()).await,
        StatusCode::OK,
        "the create-user token works"
    );
    let (status, project) = Api::new(server.base.clone(), &token_a)
        .post("/api/projects", json!({"title": "alice's"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = project["id"].as_i64().unwrap();
    let project = format!("/api/projects/{id}");
    assert_eq!(status_as(&token_a, project.clone()).await, StatusCode::OK);

    // A second user, created while the server runs, in another organisation.
    let token_b = create_user(data.path(), "bob@example.com", "org-b");
    assert_ne!(token_a, token_b);
    assert_eq!(
        status_as(&token_b, project.clone()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status_as(&token_b, format!("/api/tasks?project={id}")).await,
        StatusCode::NOT_FOUND
    );
    // The admin is in the default organisation, not in org-a.
    assert_eq!(
        status_as("admin-token-0123456789", project.clone()).await,
        StatusCode::NOT_FOUND
    );
    // A third user in org-a sees it; a new token replaces the old one.
    let token_a2 = create_user(data.path(), "carol@example.com", "org-a");
    assert_eq!(status_as(&token_a2, project.clone()).await, StatusCode::OK);
    let token_a_new = create_user(data.path(), "alice@example.com", "org-a");
    assert_eq!(
        status_as(&token_a_new, project.clone()).await,
        StatusCode::OK
    );
    assert_eq!(status_as(&token_a, project).await, StatusCode::UNAUTHORIZED);
    drop(server);
}

//! The real Label Studio (1.23.2, installed by `scripts/label-studio.sh
//! install` into target/ls-venv) as a separate process on a free loopback
//! port, with a throw-away data directory and local-files root.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Api;

/// The legacy API token of Label Studio's admin user.
pub const LS_TOKEN: &str = "label-studio-test-token-0123456789";

/// Where `scripts/label-studio.sh install` puts Label Studio.
fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ls-venv")
}

/// A running Label Studio, killed when dropped.
#[derive(Debug)]
pub struct LabelStudio {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its API with the admin's token.
    pub api: Api,
    /// Its database's URL (`sqlite://…` or `postgres://…`).
    pub database_url: String,
    /// Its local-files document root.
    pub files: PathBuf,
    log: PathBuf,
}

impl LabelStudio {
    /// Starts Label Studio on SQLite in `dir` (its data directory is
    /// `dir/ls-data`, its document root `dir/files`), with an admin user
    /// whose token is [`LS_TOKEN`], and waits until it answers.
    pub async fn start(dir: &Path) -> Self {
        Self::start_on(dir, None, &[]).await
    }

    /// As [`LabelStudio::start`], on the empty PostgreSQL database at
    /// `postgres` (as Label Studio runs in production).
    pub async fn start_on_postgres(dir: &Path, postgres: &str) -> Self {
        Self::start_on(dir, Some(postgres), &[]).await
    }

    /// As [`LabelStudio::start`], with more environment variables.
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_on(dir, None, env).await
    }

    async fn start_on(dir: &Path, postgres: Option<&str>, env: &[(&str, &str)]) -> Self {
        let binary = venv().join("bin/label-studio");
        assert!(
            binary.exists(),
            "Label Studio 1.23.2 is not installed at {}: run scripts/label-studio.sh install \
             (scripts/test does)",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("ls-data");
        let files = dir.join("files");
        std::fs::create_dir_all(&files).unwrap();
        let log = dir.join("label-studio.log");
        let mut command = Command::new(&binary);
        let database_url = match postgres {
            Some(url) => {
                let parsed = reqwest::Url::parse(url).unwrap();
                command
                    .env("DJANGO_DB", "default")
                    .env("POSTGRE_HOST", parsed.host_str().unwrap())
                    .env("POSTGRE_PORT", parsed.port().unwrap_or(5432).to_string())
                    .env("POSTGRE_NAME", parsed.path().trim_start_matches('/'))
                    .env("POSTGRE_USER", parsed.username())
                    .env("POSTGRE_PASSWORD", parsed.password().unwrap_or(""));
                url.to_string()
            }
            None => {
                command.env_remove("DJANGO_DB");
                format!("sqlite://{}", data.join("label_studio.sqlite3").display())
            }
        };
        command.envs(env.iter().copied());
        let child = command
            .args(["start", "--no-browser", "--internal-host", "127.0.0.1"])
            .arg("--data-dir")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["--username", "admin@example.com", "--password", "Passw0rd!"])
            .args(["--user-token", LS_TOKEN, "--enable-legacy-api-token"])
            .args(["--log-level", "WARNING"])
            .env("LOCAL_FILES_SERVING_ENABLED", "true")
            .env("LOCAL_FILES_DOCUMENT_ROOT", &files)
            // The emulators listen on loopback, which Label Studio refuses
            // as a storage endpoint by default (as this server does).
            .env("USE_DEFAULT_BANNED_SUBNETS", "false")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start Label Studio");
        let base = format!("http://127.0.0.1:{port}");
        let mut ls = Self {
            child,
            api: Api::new(base.clone(), LS_TOKEN),
            base,
            database_url,
            files,
            log,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = ls.child.try_wait().unwrap() {
                panic!(
                    "Label Studio exited ({status}) before answering:\n{}",
                    ls.log()
                );
            }
            if let Ok(response) = ls
                .api
                .client
                .get(format!("{}/api/projects", ls.base))
                .header("Authorization", format!("Token {LS_TOKEN}"))
                .send()
                .await
            {
                if response.status().is_success() {
                    return ls;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "Label Studio did not answer within 300 s:\n{}",
                ls.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin's browser session: logs in through Label Studio's login
    /// form and returns the `Cookie` header a browser would then send
    /// (`csrftoken=…; sessionid=…`).
    pub async fn session(&self) -> String {
        let client = &self.api.client;
        let login = format!("{}/user/login/", self.base);
        let cookies = |response: &reqwest::Response| -> Vec<String> {
            response
                .headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split(';').next())
                .map(str::to_string)
                .collect()
        };
        let form = client.get(&login).send().await.unwrap();
        let csrf = cookies(&form)
            .into_iter()
            .find(|c| c.starts_with("csrftoken="))
            .expect("Label Studio's login form sets csrftoken");
        let token = csrf.trim_start_matches("csrftoken=").to_string();
        let answer = client
            .post(&login)
            .header(reqwest::header::COOKIE, &csrf)
            .header(reqwest::header::REFERER, &login)
            .form(&[
                ("csrfmiddlewaretoken", token.as_str()),
                ("email", "admin@example.com"),
                ("password", "Passw0rd!"),
            ])
            .send()
            .await
            .unwrap();
        let session = cookies(&answer)
            .into_iter()
            .find(|c| c.starts_with("sessionid="))
            .unwrap_or_else(|| panic!("no session after logging in ({})", answer.status()));
        format!("{csrf}; {session}")
    }

    /// An access token of a new personal access token of the admin (made
    /// with `session`), as `Authorization: Bearer` takes it.
    pub async fn access_token(&self, session: &str) -> String {
        let client = &self.api.client;
        let created: Value = client
            .post(format!("{}/api/token/", self.base))
            .header(reqwest::header::COOKIE, session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refresh = created["token"].as_str().expect("a personal access token");
        let access: Value = client
            .post(format!("{}/api/token/refresh", self.base))
            .json(&json!({ "refresh": refresh }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        access["access"]
            .as_str()
            .expect("an access token")
            .to_string()
    }

    /// A new project with an image labelling config; its id.
    pub async fn project(&self, title: &str) -> i64 {
        let project = self
            .api
            .ok(
                reqwest::Method::POST,
                "/api/projects",
                Some(json!({
                    "title": title,
                    "label_config": "<View><Image name=\"image\" value=\"$image\"/>\
                        <Choices name=\"c\" toName=\"image\"><Choice value=\"a\"/></Choices></View>",
                })),
            )
            .await;
        project["id"].as_i64().unwrap()
    }

    /// A local-files import storage of `project` over `folder` (below the
    /// document root), created through Label Studio's API; its id.
    pub async fn local_storage(&self, project: i64, folder: &str, use_blob_urls: bool) -> i64 {
        let storage = self
            .api
            .ok(
                reqwest::Method::POST,
                "/api/storages/localfiles",
                Some(json!({
                    "project": project,
                    "path": self.files.join(folder),
                    "use_blob_urls": use_blob_urls,
                    "title": folder,
                })),
            )
            .await;
        storage["id"].as_i64().unwrap()
    }

    /// The tasks of `project` as Label Studio's Data Manager lists them.
    pub async fn tasks(&self, project: i64) -> Vec<Value> {
        let page = self
            .api
            .ok(
                reqwest::Method::GET,
                &format!("/api/tasks?project={project}&page_size=100000&fields=all"),
                None,
            )
            .await;
        page["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Label Studio's own sync of storage `path`, bypassing this server:
    /// the storage once it ended (it runs inside the request without
    /// Redis, or in its worker).
    pub async fn own_sync(&self, path: &str) -> Value {
        let answer = self
            .api
            .ok(reqwest::Method::POST, &format!("{path}/sync"), None)
            .await;
        if answer["status"] == "completed" {
            answer
        } else {
            self.wait_synced(path).await
        }
    }

    /// [`LabelStudio::tasks`] while tasks are being deleted: `None` when
    /// Label Studio's list failed because a task of its page went between
    /// its two reads (it answers 500 then, as with its own deletions).
    pub async fn tasks_while_deleting(&self, project: i64) -> Option<Vec<Value>> {
        let (status, page) = self
            .api
            .get(&format!(
                "/api/tasks?project={project}&page_size=100000&fields=all"
            ))
            .await;
        if status == reqwest::StatusCode::INTERNAL_SERVER_ERROR {
            return None;
        }
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        Some(page["tasks"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until Label Studio shows storage `path`'s sync ended
    /// (`completed`, `completed_with_errors` or `failed`); the storage.
    pub async fn wait_synced(&self, path: &str) -> Value {
        let started = Instant::now();
        loop {
            let storage = self.api.ok(reqwest::Method::GET, path, None).await;
            if matches!(
                storage["status"].as_str(),
                Some("completed" | "completed_with_errors" | "failed")
            ) {
                return storage;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the sync of {path} did not end: {storage}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LabelStudio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The deployment's one reverse-proxy rule, as a test proxy on a free
/// loopback port: `POST /api/storages/[export/]<type>/<id>/sync` goes to
/// this server, everything else to Label Studio; `Host` passes through.
#[derive(Debug)]
pub struct SyncProxy {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The sync requests sent to this server: path and status.
    pub synced: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl SyncProxy {
    pub async fn start(label_studio: &str, ours: &str) -> Self {
        use axum::body::{Body, Bytes};
        use axum::extract::{Request, State};
        use axum::response::Response;

        #[derive(Clone)]
        struct Route {
            label_studio: String,
            ours: String,
            client: reqwest::Client,
            synced: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
            rule: regex::Regex,
        }
        async fn forward(State(route): State<Route>, request: Request) -> Response {
            let (parts, body) = request.into_parts();
            let body: Bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
            let path = parts.uri.path().to_string();
            let to_ours = parts.method == axum::http::Method::POST && route.rule.is_match(&path);
            let upstream = if to_ours {
                &route.ours
            } else {
                &route.label_studio
            };
            let query = parts
                .uri
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let mut forwarded = route
                .client
                .request(parts.method.clone(), format!("{upstream}{path}{query}"));
            for (name, value) in &parts.headers {
                if !matches!(
                    name.as_str(),
                    "connection" | "content-length" | "transfer-encoding"
                ) {
                    forwarded = forwarded.header(name, value);
                }
            }
            let answer = forwarded.body(body).send().await.unwrap();
            if to_ours {
                route
                    .synced
                    .lock()
                    .unwrap()
                    .push((path, answer.status().as_u16()));
            }
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if !matches!(
                    name.as_str(),
                    "connection" | "content-length" | "transfer-encoding"
                ) {
                    response = response.header(name, value);
                }
            }
            response
                .body(Body::from(answer.bytes().await.unwrap()))
                .unwrap()
        }

        let synced = std::sync::Arc::default();
        let route = Route {
            label_studio: label_studio.to_string(),
            ours: ours.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            synced: std::sync::Arc::clone(&synced),
            rule: regex::Regex::new(r"^/api/storages/(export/)?[a-z0-9_]+/[0-9]+/sync/?$").unwrap(),
        };
        let app = axum::Router::new().fallback(forward).with_state(route);
        let (base, server) = super::serve_on_loopback(app).await;
        Self {
            base,
            synced,
            _server: server,
        }
    }
}

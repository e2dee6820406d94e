#![doc = include_str!("../README.md")]

pub mod cloud;
mod config;
pub mod cors;
pub mod listen;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use storage_api::{host_router, router, ApiEventRenderer, ApiState, MetricsAccess, MetricsToken};
use storage_core::webhooks::Courier;
use storage_core::SyncService;
use storage_db::Database;
use storage_labelstudio::{LabelStudioDatabase, WhoAmI};
use storage_localfiles::{LocalFiles, LocalFilesBackend};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

pub use cloud::CloudArgs;
pub use config::{Cli, Command, Config};
pub use listen::HttpLimits;

/// What start-up can fail with: an unreadable data directory, an
/// unreachable database, a socket that cannot be bound.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The e-mail of the admin user whose token is `--token`.
pub const ADMIN_EMAIL: &str = "admin@localhost";

/// A server ready to serve: its router and the state behind it.
#[derive(Debug)]
pub struct App {
    /// Label Studio's storage API and the minimal project/task/annotation
    /// API, with request tracing.
    pub router: axum::Router,
    /// The sync workers (already started).
    pub sync: SyncService,
    /// The webhook courier (already started).
    pub courier: Courier,
    /// The database.
    pub db: Database,
    /// The admin user's API token.
    pub token: AdminToken,
    /// The local-files document root (created).
    pub document_root: PathBuf,
    /// The connection limits [`serve`] applies.
    pub limits: HttpLimits,
    database_url: String,
}

/// The admin user's API token and where it came from.
#[derive(Clone)]
pub struct AdminToken {
    /// The token.
    pub value: String,
    /// Whether it was generated (and kept in `<data-dir>/api-token`) rather
    /// than given with `--token`.
    pub generated: bool,
}

// Written by hand: the token is a secret.
impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("value", &"***")
            .field("generated", &self.generated)
            .finish()
    }
}

/// Opens the database (creating the data directory), makes sure the admin
/// user has its token, builds every backend, resumes the jobs a previous
/// run left and starts the sync workers, and builds the router.
pub async fn app(config: &Config) -> Result<App, Error> {
    // Bad flags fail before anything starts.
    let cors = cors::layer(&config.cors_allowed_origins)
        .map_err(|e| format!("--cors-allowed-origins: {e}"))?;
    std::fs::create_dir_all(&config.data_dir)?;
    let database_url = config.database_url();
    let db = Database::connect(&database_url).await?;

    let org = db.ensure_organization("default").await?;
    let admin = db.ensure_user(ADMIN_EMAIL, org).await?;
    let token = admin_token(config)?;
    db.set_user_token(admin, &token.value).await?;

    let root = config.document_root();
    std::fs::create_dir_all(&root)?;
    let local = LocalFiles::new(&root)?
        .with_serving_enabled(config.local_files_serving_enabled)
        .with_url_base(config.host.clone());
    let backends = config
        .cloud
        .bucket_backends(config.endpoint_policy())
        .with(Arc::new(LocalFilesBackend::new(local.clone())));

    // On Label Studio's database, storages, tasks and project access are
    // Label Studio's, and Label Studio says who a caller is; our own
    // database keeps what is ours (webhooks, the admin token).
    let label_studio = match &config.label_studio_database_url {
        Some(url) => Some(
            LabelStudioDatabase::connect_with_webhook_policy(url, config.endpoint_policy()).await?,
        ),
        None => None,
    };
    let sync = match &label_studio {
        Some(ls) => SyncService::new(
            ls.storages(),
            ls.tasks(),
            ls.annotations(),
            backends,
            config.runner_config(),
        ),
        None => SyncService::new(
            db.storages(),
            db.tasks(),
            db.annotations(),
            backends,
            config.runner_config(),
        )
        .with_export_outbox(db.exports())
        .with_shard_queue(db.shards()),
    };
    // An embedded SQLite file has one process: a job left in progress by a
    // previous run died with it and is resumed now. A shared PostgreSQL
    // database may have other live instances: their jobs are taken over only
    // once their lease expires (the watchdog), never at start-up.
    let exclusive = label_studio
        .as_ref()
        .map_or(db.exclusive(), |ls| ls.engine() == "sqlite");
    sync.recover(exclusive).await?;
    sync.start();

    let metrics = match config.metrics_token.as_deref().filter(|t| !t.is_empty()) {
        _ if config.metrics_public => MetricsAccess::Public,
        Some(token) => MetricsAccess::Token(MetricsToken::new(token)),
        None => MetricsAccess::Administrators,
    };
    let state = match (&label_studio, &config.label_studio_url) {
        (Some(ls), Some(url)) => {
            ApiState::new(sync.clone(), ls.access(), Arc::new(WhoAmI::new(url)?))
        }
        _ => ApiState::new(sync.clone(), db.access(), db.authenticator())
            .with_host(db.host())
            .with_administrators([admin]),
    };
    let state = state
        .with_url_base(config.host.clone())
        .with_max_body_bytes(usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX))
        .with_max_label_config_bytes(
            usize::try_from(config.max_label_config_bytes).unwrap_or(usize::MAX),
        )
        .with_metrics(metrics)
        .with_webhooks(db.webhooks())
        .with_endpoint_policy(config.endpoint_policy());
    let courier = Courier::new(
        db.webhooks(),
        Arc::new(ApiEventRenderer::new(state.clone())),
        config.courier_config(),
    )?;
    // As for sync jobs: a delivery a previous run of this process left
    // mid-flight is taken again at once.
    if db.exclusive() {
        courier.recover().await?;
    }
    courier.start();
    // The request span has method, URI and version, no headers; marking the
    // Authorization header sensitive keeps tokens out of the logs even if a
    // layer starts printing headers.
    // On Label Studio's database, Label Studio serves projects and tasks.
    let mut router = router(state.clone());
    if label_studio.is_none() {
        router = router.merge(host_router(state));
    }
    let mut router = router
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            config.http_body_timeout_seconds,
        )))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
        ]));
    // Outermost, so preflights are answered before routing and every
    // answer, errors included, carries the headers.
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    Ok(App {
        router,
        sync,
        courier,
        db,
        token,
        document_root: root,
        limits: HttpLimits {
            header_timeout: Duration::from_secs(config.http_header_timeout_seconds),
            max_connections: usize::try_from(config.http_max_connections).unwrap_or(usize::MAX),
        },
        database_url,
    })
}

/// A handler that panicked (a bug): a logged error and a JSON 500 in
/// Label Studio's envelope, instead of a dropped connection.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    storage_api::ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error: the request failed; the server's log has the details.",
    )
    .into_response()
}

/// Serves `app` on `listener` until SIGINT or SIGTERM, then lets running
/// syncs reach a batch boundary (30 s at most).
pub async fn serve(app: App, listener: tokio::net::TcpListener) -> Result<(), Error> {
    tracing::info!(
        addr = %listener.local_addr()?,
        database = %redact_url(&app.database_url),
        engine = app.db.engine(),
        local_files_root = %app.document_root.display(),
        "storage server listening"
    );
    listen::serve_connections(listener, app.router, app.limits, shutdown_signal()).await;
    tracing::info!("stopping: letting running syncs reach a batch boundary");
    app.courier.shutdown();
    tokio::time::timeout(Duration::from_secs(30), app.sync.shutdown())
        .await
        .ok();
    tracing::info!("stopped");
    Ok(())
}

/// Creates (or finds) the user `email` in the organisation `organization`
/// (created when new) and gives it a new token, which it returns.
pub async fn create_user(
    config: &Config,
    email: &str,
    organization: &str,
) -> Result<String, Error> {
    std::fs::create_dir_all(&config.data_dir)?;
    let db = Database::connect(&config.database_url()).await?;
    let org = db.ensure_organization(organization).await?;
    let user = db.ensure_user(email, org).await?;
    let token = new_token();
    db.set_user_token(user, &token).await?;
    Ok(token)
}

/// Logs to stdout (text, or JSON lines with `json`), filtered by
/// `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        // `span` (the innermost span's fields) and `spans` (all of them) on
        // every line: a sync's lines carry its `storage` and `job` ids.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}

fn admin_token(config: &Config) -> std::io::Result<AdminToken> {
    if let Some(token) = config.token.clone().filter(|t| !t.is_empty()) {
        return Ok(AdminToken {
            value: token,
            generated: false,
        });
    }
    let file = config.token_file();
    if let Ok(existing) = std::fs::read_to_string(&file) {
        if !existing.trim().is_empty() {
            return Ok(AdminToken {
                value: existing.trim().to_string(),
                generated: true,
            });
        }
    }
    let token = new_token();
    write_private(&file, &token)?;
    Ok(AdminToken {
        value: token,
        generated: true,
    })
}

fn write_private(file: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // Only the owner may read the token; elsewhere the directory's
    // permissions are all there is.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(file)?.write_all(contents.as_bytes())
}

fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 20] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `url` with its password, if any, replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500() {
        let router = axum::Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            )
            .layer(CatchPanicLayer::custom(panicked));
        let response = router
            .oneshot(
                axum::http::Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answered");
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["status_code"], 500);
        assert!(body["detail"]
            .as_str()
            .expect("detail")
            .starts_with("Internal server error"));
    }
}

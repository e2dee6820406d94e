//! Run with: `cargo run --release --example server`
//!
//! A complete storage server on an embedded SQLite database (or on
//! PostgreSQL, which several instances may share): Label Studio's storage API, local-files serving, and a minimal project/task/
//! annotation API. Every flag is also an environment variable
//! (`--help` lists them).

#![allow(clippy::print_stdout)] // the token and address are for the person who started it

#[path = "common/cloud.rs"]
mod cloud;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use storage_connections::api::{host_router, router, ApiState, MetricsAccess, MetricsToken};
use storage_connections::core::{EndpointPolicy, RunnerConfig, SyncService};
use storage_connections::db::Database;
use storage_connections::localfiles::{LocalFiles, LocalFilesBackend};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

#[derive(Debug, Parser)]
#[command(about = "Label Studio compatible storage server")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "STORAGE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Directory for the database, the generated token and local files.
    #[arg(long, env = "STORAGE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Database URL: `sqlite://<path>` (default
    /// `sqlite://<data-dir>/storage.sqlite3`) or `postgres://...`, which
    /// several server instances may share (docs/scaling.md).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// API token of the admin user; when unset one is generated once,
    /// kept in `<data-dir>/api-token` and printed at start.
    #[arg(long, env = "STORAGE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Allow local-files storages and `/data/local-files/`.
    #[arg(long, env = "LOCAL_FILES_SERVING_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    local_files_serving_enabled: bool,
    /// Root that local-files storage paths must be below; default
    /// `<data-dir>/local-files`.
    #[arg(long, env = "LOCAL_FILES_DOCUMENT_ROOT")]
    local_files_document_root: Option<PathBuf>,
    /// Absolute base URL of generated task URLs (Label Studio's `HOST`);
    /// empty gives relative URLs.
    #[arg(long, env = "STORAGE_HOST", default_value = "")]
    host: String,
    /// Accept storage endpoints (`s3_endpoint`, ...) on loopback, private
    /// and link-local addresses: for tests and S3-compatible servers on a
    /// private network. Refused by default (SSRF).
    #[arg(long, env = "STORAGE_ALLOW_PRIVATE_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    allow_private_endpoints: bool,
    #[command(flatten)]
    cloud: cloud::CloudArgs,
    /// Syncs that run at once.
    #[arg(long, env = "STORAGE_SYNC_WORKERS", default_value_t = 4)]
    sync_workers: usize,
    /// Seconds a running sync is held without its heartbeat (renewed every
    /// second); after that another worker or instance takes it over.
    #[arg(long, env = "STORAGE_SYNC_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    sync_lease_seconds: u64,
    /// Log as JSON lines instead of text. Lines logged during a sync carry
    /// its `storage` id and `job` id (in `span` and `spans`).
    #[arg(long, env = "STORAGE_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    log_json: bool,
    /// Serve `GET /metrics` without authentication (default: an API token
    /// or the `--metrics-token` is required).
    #[arg(long, env = "STORAGE_METRICS_PUBLIC", default_value_t = false, action = clap::ArgAction::Set)]
    metrics_public: bool,
    /// A scrape-only token for `GET /metrics` (`Authorization: Bearer
    /// <token>` or `Token <token>`), so Prometheus need not hold an API token.
    #[arg(long, env = "STORAGE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates (or finds) a user in an organisation, gives it a new token
    /// and prints the token.
    CreateUser {
        /// The user's e-mail.
        #[arg(long)]
        email: String,
        /// The organisation's title (created when new).
        #[arg(long, default_value = "default")]
        organization: String,
    },
}

const ADMIN_EMAIL: &str = "admin@localhost";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    init_logging(args.log_json);
    std::fs::create_dir_all(&args.data_dir)?;
    let database_url = args.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            args.data_dir.join("storage.sqlite3").display()
        )
    });
    let db = Database::connect(&database_url).await?;

    if let Some(Command::CreateUser {
        email,
        organization,
    }) = &args.command
    {
        let org = db.ensure_organization(organization).await?;
        let user = db.ensure_user(email, org).await?;
        let token = new_token();
        db.set_user_token(user, &token).await?;
        println!("{token}");
        return Ok(());
    }

    let org = db.ensure_organization("default").await?;
    let admin = db.ensure_user(ADMIN_EMAIL, org).await?;
    let token = admin_token(&args)?;
    db.set_user_token(admin, &token.value).await?;

    let root = args
        .local_files_document_root
        .clone()
        .unwrap_or_else(|| args.data_dir.join("local-files"));
    std::fs::create_dir_all(&root)?;
    let local = LocalFiles::new(&root)?
        .with_serving_enabled(args.local_files_serving_enabled)
        .with_url_base(args.host.clone());
    let policy = if args.allow_private_endpoints {
        EndpointPolicy::allow_private()
    } else {
        EndpointPolicy::strict()
    };
    let backends = args
        .cloud
        .bucket_backends(policy)
        .with(Arc::new(LocalFilesBackend::new(local)));

    let sync = SyncService::new(
        db.storages(),
        db.tasks(),
        db.annotations(),
        backends,
        RunnerConfig {
            workers: args.sync_workers,
            lease: Duration::from_secs(args.sync_lease_seconds),
            ..RunnerConfig::default()
        },
    );
    // An embedded SQLite file has one process: a job left in progress by a
    // previous run died with it and is resumed now. A shared PostgreSQL
    // database may have other live instances: their jobs are taken over only
    // once their lease expires (the watchdog), never at start-up.
    sync.recover(db.exclusive()).await?;
    sync.start();

    let metrics = match args.metrics_token.as_deref().filter(|t| !t.is_empty()) {
        _ if args.metrics_public => MetricsAccess::Public,
        Some(token) => MetricsAccess::Token(MetricsToken::new(token)),
        None => MetricsAccess::ApiToken,
    };
    let state = ApiState::new(sync.clone(), db.access(), db.authenticator())
        .with_host(db.host())
        .with_url_base(args.host.clone())
        .with_metrics(metrics);
    // The request span has method, URI and version, no headers; marking the
    // Authorization header sensitive keeps tokens out of the logs even if a
    // layer starts printing headers.
    let app = axum::Router::new()
        .merge(router(state.clone()))
        .merge(host_router(state))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
        ]));

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        database = %redact_url(&database_url),
        engine = db.engine(),
        local_files_root = %root.display(),
        "storage server listening"
    );
    if token.generated {
        println!(
            "API token (kept in {}): {}",
            token_file(&args.data_dir).display(),
            token.value
        );
    }
    println!("Listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopping: letting running syncs reach a batch boundary");
    tokio::time::timeout(Duration::from_secs(30), sync.shutdown())
        .await
        .ok();
    tracing::info!("stopped");
    Ok(())
}

struct Token {
    value: String,
    generated: bool,
}

fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("api-token")
}

fn admin_token(args: &Args) -> std::io::Result<Token> {
    if let Some(token) = args.token.clone().filter(|t| !t.is_empty()) {
        return Ok(Token {
            value: token,
            generated: false,
        });
    }
    let file = token_file(&args.data_dir);
    if let Ok(existing) = std::fs::read_to_string(&file) {
        if !existing.trim().is_empty() {
            return Ok(Token {
                value: existing.trim().to_string(),
                generated: true,
            });
        }
    }
    let token = new_token();
    write_private(&file, &token)?;
    Ok(Token {
        value: token,
        generated: true,
    })
}

fn write_private(file: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(contents.as_bytes())
}

fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 20] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn init_logging(json: bool) {
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

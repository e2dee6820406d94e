//! The server's settings: every flag is also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use storage_core::webhooks::CourierConfig;
use storage_core::EndpointPolicy;

use crate::cloud::CloudArgs;

/// The command line of the `storage-server` binary: the settings and an
/// optional subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "storage-server",
    about = "Label Studio compatible storage server"
)]
pub struct Cli {
    /// How the server runs.
    #[command(flatten)]
    pub config: Config,
    /// Something to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How the server runs, from flags and environment variables (`--help`
/// lists them).
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "STORAGE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Directory for the database, the generated token and local files.
    #[arg(long, env = "STORAGE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://<path>` (default
    /// `sqlite://<data-dir>/storage.sqlite3`) or `postgres://...`, which
    /// several server instances may share (docs/scaling.md).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Label Studio's own database (`postgres://…` or `sqlite://…`): sync
    /// the storages of an unchanged Label Studio into its own tables
    /// (docs/label-studio.md). Needs `--label-studio-url`; the server then
    /// serves the storage API only, and Label Studio authenticates callers.
    #[arg(long, env = "LABEL_STUDIO_DATABASE_URL", requires = "label_studio_url")]
    pub label_studio_database_url: Option<String>,
    /// The address of that Label Studio (`http://label-studio:8080`), which
    /// is asked who a caller's token belongs to.
    #[arg(long, env = "LABEL_STUDIO_URL", requires = "label_studio_database_url")]
    pub label_studio_url: Option<String>,
    /// API token of the admin user; when unset one is generated once,
    /// kept in `<data-dir>/api-token` and printed at start.
    #[arg(long, env = "STORAGE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Allow local-files storages and `/data/local-files/`.
    #[arg(long, env = "LOCAL_FILES_SERVING_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_files_serving_enabled: bool,
    /// Root that local-files storage paths must be below; default
    /// `<data-dir>/local-files`.
    #[arg(long, env = "LOCAL_FILES_DOCUMENT_ROOT")]
    pub local_files_document_root: Option<PathBuf>,
    /// Absolute base URL of generated task URLs (Label Studio's `HOST`);
    /// empty gives relative URLs.
    #[arg(long, env = "STORAGE_HOST", default_value = "")]
    pub host: String,
    /// Accept storage endpoints (`s3_endpoint`, ...) on loopback, private
    /// and link-local addresses: for tests and S3-compatible servers on a
    /// private network. Refused by default (SSRF).
    #[arg(long, env = "STORAGE_ALLOW_PRIVATE_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_endpoints: bool,
    /// Origins a browser app may call the API from (CORS): `*` (any, as
    /// Label Studio by default), a comma-separated list of
    /// `scheme://host[:port]`, or empty for none. Credentials (cookies) are
    /// never allowed: the API authenticates with a token header.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "*", value_parser = crate::cors::parse_origins)]
    pub cors_allowed_origins: String,
    /// Seconds a client has to send a request's head (request line and
    /// headers); also how long an idle keep-alive connection stays open.
    #[arg(long, env = "STORAGE_HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_seconds: u64,
    /// Seconds a request body may go without sending data; then the
    /// request is answered 408.
    #[arg(long, env = "STORAGE_HTTP_BODY_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout_seconds: u64,
    /// Connections open at once; at the cap new connections wait (in the
    /// kernel's backlog) until one closes. Keep it well below the
    /// process's file descriptor limit (`ulimit -n`).
    #[arg(long, env = "STORAGE_HTTP_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_max_connections: u64,
    /// The largest request body in bytes; a larger one is answered 413
    /// (at once when its `Content-Length` says so, before it is sent).
    #[arg(long, env = "STORAGE_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_bytes: u64,
    /// The largest `label_config` of a project in bytes; a larger one is a
    /// 400 naming the field.
    #[arg(long, env = "STORAGE_MAX_LABEL_CONFIG_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_label_config_bytes: u64,
    /// The server's own cloud credentials and endpoints.
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Syncs that run at once.
    #[arg(long, env = "STORAGE_SYNC_WORKERS", default_value_t = 4)]
    pub sync_workers: usize,
    /// Seconds a running sync is held without its heartbeat (renewed every
    /// second); after that another worker or instance takes it over.
    #[arg(long, env = "STORAGE_SYNC_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    pub sync_lease_seconds: u64,
    /// Syncs of one organisation that run at once, counted over every
    /// instance sharing the database; `0` means `--sync-workers` minus one
    /// (at least 1), so one organisation never holds every worker. At its
    /// cap, the queued syncs of other organisations are started first.
    #[arg(
        long,
        env = "STORAGE_SYNC_WORKERS_PER_ORGANIZATION",
        default_value_t = 0
    )]
    pub sync_workers_per_organization: usize,
    /// Seconds a sync may run; a longer one fails with a message naming
    /// this flag.
    #[arg(long, env = "STORAGE_SYNC_MAX_DURATION_SECONDS", default_value_t = 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_max_duration_seconds: u64,
    /// Seconds a storage listing may go without yielding an object (an
    /// endpoint answering empty pages forever); then the sync fails.
    #[arg(long, env = "STORAGE_SYNC_LISTING_STALL_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_listing_stall_seconds: u64,
    /// Seconds a connection check (validate, create, update of a storage)
    /// may take; then it fails with a 400 saying it timed out.
    #[arg(long, env = "STORAGE_CHECK_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub storage_check_timeout_seconds: u64,
    /// The shortest `sync_interval` (seconds) an import storage may be
    /// given: scheduled syncs more often would hold workers and hammer
    /// endpoints (tests lower it).
    #[arg(long, env = "STORAGE_MIN_SYNC_INTERVAL", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_sync_interval: u64,
    /// Seconds one webhook delivery may take, connection included; a
    /// slower receiver counts as failed and is tried again.
    #[arg(long, env = "STORAGE_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout_seconds: u64,
    /// Seconds after an event during which its failed deliveries are
    /// retried (exponential backoff with jitter); then it is given up and
    /// counted in the webhook's `delivery.failed`. Default: 24 hours.
    #[arg(long, env = "STORAGE_WEBHOOK_RETRY_SECONDS", default_value_t = 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_seconds: u64,
    /// The longest wait between two attempts at one delivery (the waits
    /// start at about a second and double).
    #[arg(long, env = "STORAGE_WEBHOOK_MAX_BACKOFF_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_max_backoff_seconds: u64,
    /// Seconds after an annotation was saved during which its failing
    /// on-save export is retried (exponential backoff with jitter); then it
    /// is given up until the next export sync. Default: 24 hours.
    #[arg(long, env = "STORAGE_EXPORT_RETRY_SECONDS", default_value_t = 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub export_retry_seconds: u64,
    /// The longest wait between two attempts at one on-save export.
    #[arg(long, env = "STORAGE_EXPORT_MAX_BACKOFF_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub export_max_backoff_seconds: u64,
    /// Log as JSON lines instead of text. Lines logged during a sync carry
    /// its `storage` id and `job` id (in `span` and `spans`).
    #[arg(long, env = "STORAGE_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_json: bool,
    /// Serve `GET /metrics` without authentication (default: the admin
    /// user's API token or the `--metrics-token` is required; other users'
    /// tokens get 403, as the metrics count every organisation's syncs).
    #[arg(long, env = "STORAGE_METRICS_PUBLIC", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_public: bool,
    /// A scrape-only token for `GET /metrics` (`Authorization: Bearer
    /// <token>` or `Token <token>`), so Prometheus need not hold an API token.
    #[arg(long, env = "STORAGE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// What the binary can do instead of serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
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

impl Config {
    /// The database URL: `--database-url`, or the SQLite file in the data
    /// directory.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("storage.sqlite3").display()
            )
        })
    }

    /// The root local-files storages must be below.
    pub fn document_root(&self) -> PathBuf {
        self.local_files_document_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("local-files"))
    }

    /// Which storage endpoints may be reached.
    pub fn endpoint_policy(&self) -> EndpointPolicy {
        if self.allow_private_endpoints {
            EndpointPolicy::allow_private()
        } else {
            EndpointPolicy::strict()
        }
    }

    /// The file a generated admin token is kept in.
    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("api-token")
    }
}

// Written by hand so that neither token nor a database password reaches a
// log line or an error.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::redact_url),
            )
            .field(
                "label_studio_database_url",
                &self
                    .label_studio_database_url
                    .as_deref()
                    .map(crate::redact_url),
            )
            .field(
                "label_studio_url",
                &self.label_studio_url.as_deref().map(crate::redact_url),
            )
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field(
                "local_files_serving_enabled",
                &self.local_files_serving_enabled,
            )
            .field("local_files_document_root", &self.local_files_document_root)
            .field("host", &self.host)
            .field("allow_private_endpoints", &self.allow_private_endpoints)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field(
                "http_header_timeout_seconds",
                &self.http_header_timeout_seconds,
            )
            .field("http_body_timeout_seconds", &self.http_body_timeout_seconds)
            .field("http_max_connections", &self.http_max_connections)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_label_config_bytes", &self.max_label_config_bytes)
            .field("cloud", &self.cloud)
            .field("sync_workers", &self.sync_workers)
            .field("sync_lease_seconds", &self.sync_lease_seconds)
            .field(
                "sync_workers_per_organization",
                &self.sync_workers_per_organization,
            )
            .field("sync_max_duration_seconds", &self.sync_max_duration_seconds)
            .field(
                "sync_listing_stall_seconds",
                &self.sync_listing_stall_seconds,
            )
            .field(
                "storage_check_timeout_seconds",
                &self.storage_check_timeout_seconds,
            )
            .field("min_sync_interval", &self.min_sync_interval)
            .field("webhook_timeout_seconds", &self.webhook_timeout_seconds)
            .field("webhook_retry_seconds", &self.webhook_retry_seconds)
            .field(
                "webhook_max_backoff_seconds",
                &self.webhook_max_backoff_seconds,
            )
            .field("export_retry_seconds", &self.export_retry_seconds)
            .field(
                "export_max_backoff_seconds",
                &self.export_max_backoff_seconds,
            )
            .field("log_json", &self.log_json)
            .field("metrics_public", &self.metrics_public)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Config {
    /// The job runner's settings from the `--sync-*` flags and
    /// `--storage-check-timeout-seconds`.
    pub fn runner_config(&self) -> storage_core::RunnerConfig {
        let defaults = storage_core::RunnerConfig::default();
        storage_core::RunnerConfig {
            workers: self.sync_workers,
            lease: Duration::from_secs(self.sync_lease_seconds),
            per_tenant_workers: self.sync_workers_per_organization,
            max_duration: Duration::from_secs(self.sync_max_duration_seconds),
            check_timeout: Duration::from_secs(self.storage_check_timeout_seconds),
            min_sync_interval: Duration::from_secs(self.min_sync_interval),
            on_save_retry_for: Duration::from_secs(self.export_retry_seconds),
            on_save_backoff: defaults
                .on_save_backoff
                .with_max_backoff(Duration::from_secs(self.export_max_backoff_seconds)),
            import: storage_core::import::ImportConfig {
                listing_stall_timeout: Duration::from_secs(self.sync_listing_stall_seconds),
                ..defaults.import.clone()
            },
            ..defaults
        }
    }
}

impl Config {
    /// The webhook courier's settings from the `--webhook-*` flags; webhook
    /// URLs obey the storage endpoint policy.
    pub fn courier_config(&self) -> CourierConfig {
        let defaults = CourierConfig::default();
        CourierConfig {
            timeout: Duration::from_secs(self.webhook_timeout_seconds),
            retry_for: Duration::from_secs(self.webhook_retry_seconds),
            backoff: defaults
                .backoff
                .with_max_backoff(Duration::from_secs(self.webhook_max_backoff_seconds)),
            policy: self.endpoint_policy(),
            ..defaults
        }
    }
}

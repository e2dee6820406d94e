//! The `redis` storage type: fields as Label Studio's, a connection that
//! obeys the endpoint policy, and the import and export storages.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use serde_json::Value;
use storage_core::fields::{FieldSpec, FieldType};
use storage_core::filter::{Listing, RegexTarget};
use storage_core::{
    Backend, EndpointPolicy, Error, ExportStorage, ImportOptions, ImportStorage, Result, Settings,
    StorageKind, Unlisted, ValidationErrors,
};

use crate::store::{glob_escape, key_location, RedisStore};

/// The write-only field holding the password (`AUTH <password>`).
pub const PASSWORD_FIELD: &str = "password";

const DEFAULT_HOST: &str = "localhost";
const DEFAULT_PORT: u16 = 6379;
const DB_REQUIRED: &str = "Please explicitly pass a redis db id to prevent accidentally \
overwriting existing database! Database 0 is where Redis clients write by default, so it is \
refused; use 1 or more.";

/// Server-wide options of the Redis backend.
#[derive(Debug, Clone, Copy)]
pub struct RedisOptions {
    policy: EndpointPolicy,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            policy: EndpointPolicy::strict(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
        }
    }
}

impl RedisOptions {
    /// Strict endpoint policy, 10 s to connect, 60 s per command.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which hosts storages may name (`--allow-private-endpoints`).
    pub fn with_endpoint_policy(mut self, policy: EndpointPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a connection (and a command) may take; Label Studio's
    /// client waits forever.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.response_timeout = timeout;
        self
    }
}

/// A Redis storage's connection settings. `Debug` leaves out the password.
#[derive(Clone, Default, PartialEq)]
pub struct RedisConfig {
    /// Host name or IP address (Label Studio: null or empty is `localhost`).
    pub host: String,
    /// Port (a string on the wire).
    pub port: u16,
    /// Database number, 1 or more.
    pub db: i64,
    /// `AUTH` password.
    pub password: Option<String>,
    /// Key prefix of the import listing (null is "": every key).
    pub path: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Reads and checks the settings (no network): host, port, db.
    pub fn from_settings(settings: &Settings) -> std::result::Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let host = settings
            .str("host")
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_HOST)
            .to_string();
        if !valid_host(&host) {
            errors.add(
                "host",
                "Not a valid Redis host: a host name or an IP address, without a scheme \
                 (redis://), a port or a path.",
            );
        }
        let port = match settings
            .str("port")
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            None => DEFAULT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    errors.add("port", "A valid port (1 to 65535) is required.");
                    DEFAULT_PORT
                }
            },
        };
        let db = settings.int("db").unwrap_or(0);
        if db < 1 {
            errors.add("db", DB_REQUIRED);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            host,
            port,
            db,
            password: settings.str(PASSWORD_FIELD).map(str::to_string),
            path: settings.str("path").unwrap_or_default().to_string(),
        })
    }

    /// `host:port` (IPv6 in brackets).
    pub fn address(&self) -> String {
        format!("{}:{}", bracketed(&self.host), self.port)
    }
}

fn bracketed(host: &str) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn valid_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

/// The Redis fields of `kind` storages, in Label Studio's response order.
fn fields(kind: StorageKind) -> Vec<FieldSpec> {
    let mut fields = vec![
        FieldSpec::string("path", "Key prefix the import lists (SCAN MATCH <path>*)"),
        FieldSpec::string("host", "Redis host name or IP address (default localhost)"),
        FieldSpec::string(
            "port",
            "Redis port, a string as in Label Studio (default 6379)",
        ),
        FieldSpec::string(
            "regex_filter",
            "Regex matched at the start of each key (import only)",
        ),
        FieldSpec::boolean(
            "use_blob_urls",
            false,
            "Must stay false: Redis values are always read as tasks",
        ),
    ];
    if kind == StorageKind::Export {
        fields.push(
            FieldSpec::boolean(
                "can_delete_objects",
                false,
                "Delete the exported key when its annotation is deleted",
            )
            .nullable(),
        );
    }
    fields.push(FieldSpec {
        name: "db",
        ty: FieldType::Int { min: 0, max: 32767 },
        nullable: true,
        default: Value::from(match kind {
            StorageKind::Import => 1,
            StorageKind::Export => 2,
        }),
        secret: false,
        help: "Redis database number, 1 or more (import default 1, export default 2)",
    });
    fields.push(FieldSpec::string(PASSWORD_FIELD, "Redis password (write-only)").secret());
    if kind == StorageKind::Import {
        fields.extend(storage_core::fields::follow_fields());
    }
    fields
}

/// The `redis` storage type.
///
/// ```
/// use storage_core::Backend;
/// let backend = storage_redis::RedisBackend::new(storage_redis::RedisOptions::new());
/// assert_eq!((backend.name(), backend.title()), ("redis", "Redis"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RedisBackend {
    options: RedisOptions,
}

impl RedisBackend {
    /// A backend with these server-wide options.
    pub fn new(options: RedisOptions) -> Self {
        Self { options }
    }

    /// Connects to the storage's database: the host is checked by the
    /// endpoint policy (every address it resolves to), the connection goes
    /// to the first checked address (no second lookup), then `AUTH`,
    /// `SELECT` and `PING`.
    pub async fn connect(&self, config: &RedisConfig) -> Result<RedisStore> {
        let address = config.address();
        let policy = self.options.policy;
        let url = format!("http://{address}");
        policy
            .check("host", &url)
            .await
            .map_err(|err| refused(err, &url, &address))?;
        let ip = tokio::time::timeout(
            self.options.connect_timeout,
            tokio::net::lookup_host((config.host.as_str(), config.port)),
        )
        .await
        .map_err(|_| unreachable_host(&address, "resolving the host name timed out"))?
        .map_err(|e| unreachable_host(&address, &format!("the host name does not resolve: {e}")))?
        .next()
        .ok_or_else(|| unreachable_host(&address, "the host name has no address"))?
        .ip();
        // The address connected to, checked again: the name may have
        // resolved to another address since the policy's lookup.
        let ip_url = format!("http://{}:{}", bracketed(&ip.to_string()), config.port);
        policy
            .check_literal("host", &ip_url)
            .map_err(|err| refused(err, &ip_url, &address))?;
        let mut redis = RedisConnectionInfo::default().set_db(config.db);
        if let Some(password) = &config.password {
            redis = redis.set_password(password);
        }
        let info = ConnectionAddr::Tcp(ip.to_string(), config.port)
            .into_connection_info()
            .map_err(|e| unreachable_host(&address, &e.to_string()))?
            .set_redis_settings(redis);
        let client = redis::Client::open(info).map_err(|e| explain(e, config))?;
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.response_timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&connection)
            .await
            .map_err(|e| explain(e, config))?;
        let store = RedisStore::new(conn, format!("{address}/{}", config.db));
        store.ping().await.map_err(|e| explain(e, config))?;
        Ok(store)
    }

    async fn store(&self, settings: &Settings) -> Result<(RedisConfig, RedisStore)> {
        let config = RedisConfig::from_settings(settings).map_err(Error::InvalidConfig)?;
        let store = self.connect(&config).await?;
        Ok((config, store))
    }
}

/// The endpoint policy's refusal, naming `host:port` instead of the URL
/// it was checked as.
fn refused(err: Error, url: &str, address: &str) -> Error {
    let Error::InvalidConfig(errors) = &err else {
        return err;
    };
    let message = errors
        .messages("host")
        .join("; ")
        .replace(&format!("{url}/"), address)
        .replace(url, address);
    Error::invalid("host", format!("Redis host refused: {message}"))
}

fn unreachable_host(address: &str, why: &str) -> Error {
    Error::invalid(
        "host",
        format!("Cannot connect to the Redis server at {address}: {why}"),
    )
}

/// Words a Redis failure for the user: a refused password names the
/// `password` field, an unreachable server its `host:port`. The password
/// never appears (Redis never repeats it).
fn explain(err: redis::RedisError, config: &RedisConfig) -> Error {
    let address = config.address();
    let text = err.to_string();
    let code = err.code().map(str::to_string);
    let said = |what: &str| text.contains(what) || code.as_deref() == Some(what);
    if err.kind() == redis::ErrorKind::AuthenticationFailed
        || said("WRONGPASS")
        || text.contains("invalid password")
    {
        return Error::CredentialsRejected {
            fields: vec![PASSWORD_FIELD.into()],
            code: Some("WRONGPASS".into()),
            message: format!(
                "The Redis server at {address} refused the password: check the password field"
            ),
        };
    }
    if said("NOAUTH") {
        return Error::CredentialsRejected {
            fields: vec![PASSWORD_FIELD.into()],
            code: Some("NOAUTH".into()),
            message: format!(
                "The Redis server at {address} requires a password: set the password field"
            ),
        };
    }
    if text.contains("DB index is out of range") {
        return Error::invalid(
            "db",
            format!(
                "The Redis server at {address} has no database {}: it is configured with fewer databases",
                config.db
            ),
        );
    }
    let text = match &config.password {
        Some(password) if !password.is_empty() => text.replace(password.as_str(), "***"),
        _ => text,
    };
    unreachable_host(&address, &text)
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn title(&self) -> &'static str {
        "Redis"
    }

    fn fields(&self, kind: StorageKind) -> Vec<FieldSpec> {
        fields(kind)
    }

    fn check_settings(&self, kind: StorageKind, settings: &mut Settings) -> Result<()> {
        let mut errors = match RedisConfig::from_settings(settings) {
            Ok(config) => {
                let url = format!("http://{}", config.address());
                match self.options.policy.check_literal("host", &url) {
                    Err(err) => match refused(err, &url, &config.address()) {
                        Error::InvalidConfig(errors) => errors,
                        other => ValidationErrors::general(other.to_string()),
                    },
                    Ok(_) => ValidationErrors::default(),
                }
            }
            Err(errors) => errors,
        };
        if kind == StorageKind::Import && settings.bool("use_blob_urls", false) {
            errors.add(
                "use_blob_urls",
                "Redis storages read each value as tasks (JSON or JSONL); Files mode is not \
                 available: a Redis key cannot be served as a media URL. Set use_blob_urls to false.",
            );
        }
        if let Err(e) = storage_core::fields::check_import_rules(settings, kind) {
            errors.merge(e);
        }
        errors.into_result()
    }

    async fn import_storage(&self, settings: &Settings) -> Result<Arc<dyn ImportStorage>> {
        let (config, store) = self.store(settings).await?;
        let options = ImportOptions::from_settings(settings);
        Ok(Arc::new(RedisImport {
            listing: Listing::new(
                None,
                true,
                options.regex_filter.as_deref(),
                RegexTarget::FullKey,
            )?,
            store,
            path: config.path,
            unlisted: Arc::default(),
        }))
    }

    async fn export_storage(&self, settings: &Settings) -> Result<Arc<dyn ExportStorage>> {
        let (_, store) = self.store(settings).await?;
        Ok(Arc::new(RedisExport {
            store,
            can_delete_objects: settings.bool("can_delete_objects", false),
        }))
    }
}

/// A Redis import storage: the keys that start with `path`.
#[derive(Debug)]
pub(crate) struct RedisImport {
    store: RedisStore,
    listing: Listing,
    path: String,
    unlisted: Arc<std::sync::Mutex<Unlisted>>,
}

#[async_trait]
impl ImportStorage for RedisImport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.store.clone())
    }

    fn listing(&self) -> &Listing {
        &self.listing
    }

    /// Keys are flat: there is no folder to split a sync by.
    async fn folders(&self) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// `SCAN MATCH <path>*` page by page: `path` is a plain key prefix
    /// (Redis keys are flat), its glob characters escaped. A key that
    /// object_store cannot name as it is is reported, not left out
    /// silently.
    fn list(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        let pattern = format!("{}*", glob_escape(&self.path));
        let unlisted = self.unlisted.clone();
        let name = self.store.name().to_string();
        self.store
            .scan(pattern)
            .filter_map(move |item| {
                let (unlisted, name) = (unlisted.clone(), name.clone());
                async move {
                    match item {
                        Ok((key, size)) => match (key_location(&key), size) {
                            (Some(location), Some(size)) => Some(Ok(ObjectMeta {
                                location,
                                last_modified: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                                size,
                                e_tag: None,
                                version: None,
                            })),
                            // Reported here rather than failing its `GET`
                            // (WRONGTYPE), which would stop the whole sync.
                            (Some(_), None) => {
                                unlisted
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .add(format!(
                                        "{}: WRONGTYPE: this key does not hold a string (a hash, \
                                         a list, a set…); only string values hold tasks",
                                        String::from_utf8_lossy(&key).escape_debug()
                                    ));
                                None
                            }
                            (None, _) => {
                                unlisted
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .add(format!(
                                        "{}: this key cannot be imported: it is not UTF-8, or it \
                                         has an empty segment, a leading or trailing \"/\", or a \
                                         \".\" or \"..\" segment",
                                        String::from_utf8_lossy(&key).escape_debug()
                                    ));
                                None
                            }
                        },
                        Err(err) => Some(Err(Error::backend(
                            format!("listing the keys of Redis {name}"),
                            err,
                        ))),
                    }
                }
            })
            .boxed()
    }

    fn take_unlisted(&self) -> Unlisted {
        std::mem::take(
            &mut *self
                .unlisted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn object_key(&self, location: &Path) -> String {
        location.as_ref().to_string()
    }

    fn task_url(&self, location: &Path) -> String {
        // Only in messages: Redis has no task URLs (Files mode is refused,
        // Label Studio's `can_resolve_url` is false).
        format!("redis://{}/{}", self.store.name(), location.as_ref())
    }

    /// Label Studio's check: `PING` (made when connecting). An empty
    /// database is accepted.
    async fn check_connection(&self) -> Result<()> {
        Ok(())
    }
}

/// A Redis export storage: `SET <key> <json>` in its database.
#[derive(Debug)]
pub(crate) struct RedisExport {
    store: RedisStore,
    can_delete_objects: bool,
}

#[async_trait]
impl ExportStorage for RedisExport {
    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.store.clone())
    }

    /// The key alone, as Label Studio writes it: `path` is not a prefix of
    /// exported keys.
    fn location(&self, key: &str) -> Path {
        Path::from(key)
    }

    fn can_delete_objects(&self) -> bool {
        self.can_delete_objects
    }

    async fn check_connection(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(kind: StorageKind, body: Value) -> Settings {
        let specs = fields(kind);
        let mut settings = Settings::defaults(&specs);
        settings
            .apply(&specs, body.as_object().expect("an object"))
            .expect("valid fields");
        settings
    }

    #[test]
    fn defaults_and_refusals() {
        let backend = RedisBackend::default();
        let import = settings(StorageKind::Import, json!({}));
        assert_eq!(import.int("db"), Some(1));
        assert_eq!(settings(StorageKind::Export, json!({})).int("db"), Some(2));
        let config = RedisConfig::from_settings(&import).unwrap();
        assert_eq!(
            (config.host.as_str(), config.port, config.path.as_str()),
            ("localhost", 6379, "")
        );
        for (body, field) in [
            (json!({"db": 0}), "db"),
            (json!({"db": null}), "db"),
            (json!({"port": "x"}), "port"),
            (json!({"host": "redis://example.com"}), "host"),
            (
                json!({"use_blob_urls": true, "host": "example.com"}),
                "use_blob_urls",
            ),
            (
                json!({"regex_filter": "(", "host": "example.com"}),
                "regex_filter",
            ),
            (json!({"host": "127.0.0.1"}), "host"),
        ] {
            let mut s = settings(StorageKind::Import, body.clone());
            let err = backend
                .check_settings(StorageKind::Import, &mut s)
                .unwrap_err();
            let Error::InvalidConfig(errors) = &err else {
                panic!("{err:?}")
            };
            assert!(errors.fields().any(|f| f == field), "{body}: {err:?}");
        }
        let mut ok = settings(
            StorageKind::Import,
            json!({"host": "example.com", "port": "6380", "password": "SECRET"}),
        );
        backend
            .check_settings(StorageKind::Import, &mut ok)
            .unwrap();
        let config = RedisConfig::from_settings(&ok).unwrap();
        assert!(!format!("{config:?}").contains("SECRET"));
        assert_eq!(config.address(), "example.com:6380");
    }
}

//! The PostgreSQL server started by `scripts/postgres.sh`: one fresh
//! database per test, so tests run in parallel and never see each other's
//! rows.

use sqlx::{Connection, PgConnection};

use reqwest::Url;

/// URL of the test server's `storage` database, e.g.
/// `postgres://postgres@127.0.0.1:17170/storage`.
pub const ENV_POSTGRES_URL: &str = "STORAGE_TEST_POSTGRES_URL";

/// How to get the server; part of every panic message.
const HOW_TO_START: &str = "The test PostgreSQL server is not running (or its variable is not \
exported). `./scripts/test` starts and stops it around the whole suite. For a manual \
`cargo test`, run first: scripts/postgres.sh install && scripts/postgres.sh start && \
eval \"$(scripts/postgres.sh env)\" (and `scripts/postgres.sh stop` when done).";

/// The URL in [`ENV_POSTGRES_URL`].
///
/// # Panics
/// When it is unset or blank; the message says how to start the server.
#[track_caller]
pub fn server_url() -> String {
    match std::env::var(ENV_POSTGRES_URL) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{ENV_POSTGRES_URL} is not set, so the PostgreSQL tests cannot run. {HOW_TO_START}"
        ),
    }
}

/// Creates an empty database named after `test` (plus a random suffix) on
/// the test server and returns its URL. The databases stay until
/// `scripts/postgres.sh stop` throws the server's data away.
///
/// # Panics
/// As [`server_url`], and when the server cannot be reached.
pub async fn fresh_database(test: &str) -> String {
    fresh_database_on(&server_url(), test).await
}

/// As [`fresh_database`], on the server of the database URL `server`
/// (which must allow `CREATE DATABASE`).
///
/// # Panics
/// When the server cannot be reached or refuses.
pub async fn fresh_database_on(server: &str, test: &str) -> String {
    let server = server.to_owned();
    let mut url = Url::parse(&server)
        .unwrap_or_else(|err| panic!("{ENV_POSTGRES_URL} is not a URL ({err}). {HOW_TO_START}"));
    let mut conn = PgConnection::connect(&server).await.unwrap_or_else(|err| {
        let _ = url.set_password(None);
        panic!("cannot connect to PostgreSQL at {url} ({ENV_POSTGRES_URL}): {err}. {HOW_TO_START}")
    });
    // Identifiers are at most 63 bytes: a short readable part, then 32 hex digits.
    let readable: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let name = format!("t_{readable}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("creating database {name}: {err}"));
    let _ = conn.close().await;
    url.set_path(&name);
    url.into()
}

/// Drops a database made by [`fresh_database`], closing its connections
/// (`WITH (FORCE)`), so large test databases do not pile up on a server
/// that runs for long. Best effort: a failure is printed, not raised.
pub async fn drop_database(url: &str) {
    let Ok(parsed) = Url::parse(url) else {
        return;
    };
    let name = parsed.path().trim_start_matches('/').to_owned();
    let result = async {
        let mut conn = PgConnection::connect(&server_url()).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        conn.close().await
    }
    .await;
    if let Err(err) = result {
        eprintln!("could not drop the test database {name}: {err}");
    }
}

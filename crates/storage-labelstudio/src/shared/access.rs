//! Who may see a project (Label Studio's organisation membership), the
//! schema version check, and the one table of our own.
//!
//! This file is compiled twice, as a child module of each engine
//! (`sqlite::access`, `postgres::access`); `super` is the engine.

use async_trait::async_trait;
use storage_core::persist::{Caller, ProjectAccess};
use storage_core::Result;

use crate::{SETTINGS_TABLE, UNFINISHED_TABLE, VERSIONS_TABLE};

use super::{db, Engine};

impl Engine {
    /// The names of the applied migrations of Django app `app`.
    pub(crate) async fn migrations(&self, app: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM django_migrations WHERE app = $1 ORDER BY name")
            .bind(app)
            .fetch_all(&self.pool)
            .await
            .map_err(db(
                "reading Label Studio's django_migrations (is this Label Studio's database?)",
            ))
    }

    /// Creates our tables beside Label Studio's (never a column in one of
    /// its tables): task files begun but not finished, and our own
    /// settings of its storages.
    pub(crate) async fn create_own_tables(&self) -> Result<()> {
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS {UNFINISHED_TABLE} (storage_id BIGINT NOT NULL, \
                 key TEXT NOT NULL, PRIMARY KEY (storage_id, key))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {SETTINGS_TABLE} (storage_id BIGINT PRIMARY KEY, \
                 settings TEXT NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (storage_id BIGINT NOT NULL, \
                 key TEXT NOT NULL, etag TEXT, size BIGINT, last_modified BIGINT, \
                 PRIMARY KEY (storage_id, key))"
            ),
        ] {
            sqlx::query(&ddl)
                .execute(&self.pool)
                .await
                .map_err(db("creating this server's tables beside Label Studio's"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl ProjectAccess for Engine {
    async fn project_visible(&self, caller: &Caller, project: i64) -> Result<bool> {
        let found: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(p.id AS BIGINT) FROM project p \
             JOIN organizations_organizationmember m ON m.organization_id = p.organization_id \
             WHERE p.id = $1 AND p.organization_id = $2 AND m.user_id = $3 \
             AND m.deleted_at IS NULL AND p.deleted_at IS NULL",
        )
        .bind(project)
        .bind(caller.organization_id)
        .bind(caller.user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading a Label Studio project's organization"))?;
        Ok(!found.is_empty())
    }
}

//! Organisations, users and their API tokens (`Authenticator`, and the
//! account helpers `ensure_organization`, `ensure_user`, `set_user_token`
//! as public methods of the engine), and which projects a caller may see
//! (`ProjectAccess`).
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::accounts` and `postgres::accounts` (the `#[path]` module declarations
//! at the end of `src/sqlite.rs` and `src/postgres.rs`). So `super` is the
//! engine module, and the `use super::{...}` lines below name everything
//! this file takes from it; every other name is an ordinary import.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::QueryBuilder;
use storage_core::persist::{Authenticator, Caller, ProjectAccess};
use storage_core::{Error, Result};

use super::rows::{db, db_error, get};
use crate::shape::{now, token_hash};
use crate::sql::{foreign_key_violation, unique_violation};

// From the engine module: the engine, how it binds a time, and the lock
// that serialises creating organisations where processes share a database.
use super::{push_list, stamp, Db, Engine, LIST_CHUNK, LOCK_ORGANIZATIONS};

impl Engine {
    /// Waits for the connections to close.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The id of the organisation titled `title`, created if missing.
    pub async fn ensure_organization(&self, title: &str) -> Result<i64> {
        let context = "ensuring an organization";
        let mut tx = self.begin_write(context).await?;
        if let Some(lock) = LOCK_ORGANIZATIONS {
            sqlx::query(lock)
                .execute(&mut *tx)
                .await
                .map_err(db(context))?;
        }
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM organizations WHERE title = $1 ORDER BY id LIMIT 1")
                .bind(title)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(context))?;
        let id = match found {
            Some(id) => id,
            None => sqlx::query_scalar(
                "INSERT INTO organizations (title, created_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(title)
            .bind(stamp(now()))
            .fetch_one(&mut *tx)
            .await
            .map_err(db(context))?,
        };
        tx.commit().await.map_err(db(context))?;
        Ok(id)
    }

    /// The id of the user with this e-mail address, created in
    /// `organization_id` if missing (an existing user keeps its
    /// organisation).
    pub async fn ensure_user(&self, email: &str, organization_id: i64) -> Result<i64> {
        let context = format!("ensuring a user of organization {organization_id}");
        sqlx::query(
            "INSERT INTO users (email, organization_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(organization_id)
        .bind(stamp(now()))
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if foreign_key_violation(&err) {
                Error::not_found(format!("organization {organization_id}"))
            } else {
                db_error(context.clone(), err)
            }
        })?;
        sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(&self.pool)
            .await
            .map_err(db(context))
    }

    /// Sets (replacing any previous one) the API token of a user. Only its
    /// SHA-256 is stored.
    pub async fn set_user_token(&self, user_id: i64, token: &str) -> Result<()> {
        if token.is_empty() {
            return Err(Error::invalid("token", "This field may not be blank."));
        }
        let done = sqlx::query("UPDATE users SET token_hash = $1 WHERE id = $2")
            .bind(token_hash(token))
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(|err| {
                if unique_violation(&err) {
                    Error::invalid("token", "This token is already in use.")
                } else {
                    db_error(format!("setting the token of user {user_id}"), err)
                }
            })?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("user {user_id}")));
        }
        Ok(())
    }
}

#[async_trait]
impl crate::database::Accounts for Engine {
    async fn ensure_organization(&self, title: &str) -> Result<i64> {
        Engine::ensure_organization(self, title).await
    }

    async fn ensure_user(&self, email: &str, organization_id: i64) -> Result<i64> {
        Engine::ensure_user(self, email, organization_id).await
    }

    async fn set_user_token(&self, user_id: i64, token: &str) -> Result<()> {
        Engine::set_user_token(self, user_id, token).await
    }

    async fn close(&self) {
        Engine::close(self).await
    }
}

#[async_trait]
impl ProjectAccess for Engine {
    async fn project_visible(&self, caller: &Caller, project: i64) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM projects WHERE id = $1 AND organization_id = $2")
                .bind(project)
                .bind(caller.organization_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db(format!(
                    "checking access of user {} to project {project}",
                    caller.user_id
                )))?;
        Ok(found.is_some())
    }

    async fn visible_projects(&self, caller: &Caller, projects: &[i64]) -> Result<HashSet<i64>> {
        let mut visible = HashSet::new();
        for chunk in projects.chunks(LIST_CHUNK) {
            let mut query =
                QueryBuilder::<Db>::new("SELECT id FROM projects WHERE organization_id = ");
            query.push_bind(caller.organization_id).push(" AND id");
            push_list(&mut query, chunk.to_vec());
            let ids: Vec<i64> = query
                .build_query_scalar()
                .persistent(false)
                .fetch_all(&self.pool)
                .await
                .map_err(db(format!(
                    "checking which projects user {} may see",
                    caller.user_id
                )))?;
            visible.extend(ids);
        }
        Ok(visible)
    }
}

#[async_trait]
impl Authenticator for Engine {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        if token.is_empty() {
            return Ok(None);
        }
        // Only the hash is looked up, so the lookup reveals nothing about
        // the stored tokens that timing could leak.
        let row = sqlx::query("SELECT id, organization_id FROM users WHERE token_hash = $1")
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await
            .map_err(db("authenticating a token"))?;
        row.map(|row| {
            Ok(Caller {
                user_id: get(&row, "id")?,
                organization_id: get(&row, "organization_id")?,
            })
        })
        .transpose()
    }
}

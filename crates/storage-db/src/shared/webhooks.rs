//! Webhooks and their outbox (`WebhookRepository`), and `record_event`,
//! which every change that announces itself calls inside its own
//! transaction.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::webhooks` and `postgres::webhooks` (the `#[path]` module
//! declarations at the end of `src/sqlite.rs` and `src/postgres.rs`). So
//! `super` is the engine module, and the `use super::{...}` lines below
//! name everything this file takes from it; every other name is an
//! ordinary import.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::QueryBuilder;
use storage_core::webhooks::{
    recorded, Action, Attempt, Delivery, DeliveryState, Event, Outcome, Webhook, WebhookFields,
    WebhookRepository, WebhookScope, TASKS_PER_EVENT,
};
use storage_core::{Error, Result};

use super::rows::{db, execute, fetch_all, get, time};
use crate::shape::{now, parse_object, parse_value, to_text};
use crate::sql::{foreign_key_violation, missing_project};

// From the engine module: the engine, its database, row and connection
// types, how it binds and reads a time and binds a list.
use super::{push_list, read_time, stamp, Db, DbConn, DbRow, Engine};

/// Webhook columns under the alias `w`, with its pending deliveries.
const WEBHOOK_SELECT: &str = "SELECT w.id, w.organization_id, w.project_id, w.url, \
    w.send_payload, w.send_for_all_actions, w.headers, w.is_active, w.secret, w.created_at, \
    w.updated_at, w.last_attempt_at, w.last_status, w.last_error, w.delivered, w.failed, \
    w.consecutive_failures, \
    (SELECT count(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id) AS pending \
    FROM webhooks w";

impl Engine {
    /// Records `action` in `project` for every active webhook that wants
    /// it, inside the caller's transaction `conn`: nothing when none does.
    pub(super) async fn record_event(
        conn: &mut DbConn,
        project: i64,
        action: Action,
        payload: &Value,
    ) -> Result<()> {
        let context = format!("recording the webhook event {action} of project {project}");
        let webhooks: Vec<i64> = sqlx::query_scalar(
            "SELECT w.id FROM webhooks w JOIN projects p ON p.organization_id = w.organization_id
             WHERE p.id = $1 AND w.is_active = $2
               AND (w.project_id = $1 OR w.project_id IS NULL)
               AND (w.send_for_all_actions = $2 OR EXISTS (
                   SELECT 1 FROM webhook_actions a WHERE a.webhook_id = w.id AND a.action = $3))
             ORDER BY w.id",
        )
        .bind(project)
        .bind(true)
        .bind(action.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(db(context.as_str()))?;
        if webhooks.is_empty() {
            return Ok(());
        }
        let at = now();
        let event: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_events (project_id, action, payload, created_at)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(project)
        .bind(action.as_str())
        .bind(to_text(payload))
        .bind(stamp(at))
        .fetch_one(&mut *conn)
        .await
        .map_err(db(context.as_str()))?;
        let mut insert = QueryBuilder::<Db>::new(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, next_attempt_at) ",
        );
        insert.push_values(&webhooks, |mut row, webhook| {
            row.push_bind(*webhook)
                .push_bind(event)
                .push_bind(stamp(at));
        });
        execute(conn, insert, &context).await?;
        Ok(())
    }

    /// Records `action` (`TASKS_CREATED` or `TASKS_DELETED`) of the tasks
    /// `ids`, one event per [`TASKS_PER_EVENT`] of them.
    pub(super) async fn record_tasks_event(
        conn: &mut DbConn,
        project: i64,
        action: Action,
        ids: &[i64],
    ) -> Result<()> {
        for chunk in ids.chunks(TASKS_PER_EVENT) {
            Self::record_event(conn, project, action, &recorded::tasks(chunk)).await?;
        }
        Ok(())
    }

    /// Deletes the events no delivery waits for any more (their webhooks
    /// were deleted or switched off).
    async fn drop_undeliverable_events(conn: &mut DbConn, context: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM webhook_events WHERE NOT EXISTS (
                 SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .execute(&mut *conn)
        .await
        .map_err(db(context))?;
        Ok(())
    }

    /// The webhooks `WEBHOOK_SELECT` + `filter` finds, with their actions.
    async fn webhooks_where(
        conn: &mut DbConn,
        filter: QueryBuilder<'_, Db>,
        context: &str,
    ) -> Result<Vec<Webhook>> {
        let rows = fetch_all(conn, filter, context).await?;
        let mut webhooks = rows
            .iter()
            .map(webhook_from_row)
            .collect::<Result<Vec<_>>>()?;
        if webhooks.is_empty() {
            return Ok(webhooks);
        }
        let mut query = QueryBuilder::<Db>::new(
            "SELECT webhook_id, action FROM webhook_actions WHERE webhook_id",
        );
        push_list(
            &mut query,
            webhooks.iter().map(|w| w.id).collect::<Vec<_>>(),
        );
        query.push(" ORDER BY webhook_id, action");
        let mut actions: HashMap<i64, Vec<Action>> = HashMap::new();
        for row in fetch_all(conn, query, context).await? {
            let name: String = get(&row, "action")?;
            // An action this version does not know (written by a newer
            // one) is left out rather than failing the webhook.
            if let Ok(action) = name.parse() {
                actions
                    .entry(get(&row, "webhook_id")?)
                    .or_default()
                    .push(action);
            }
        }
        for webhook in &mut webhooks {
            webhook.actions = actions.remove(&webhook.id).unwrap_or_default();
            webhook.actions.sort();
        }
        Ok(webhooks)
    }

    async fn one_webhook(conn: &mut DbConn, id: i64, context: &str) -> Result<Option<Webhook>> {
        let mut query = QueryBuilder::<Db>::new(WEBHOOK_SELECT);
        query.push(" WHERE w.id = ").push_bind(id);
        Ok(Self::webhooks_where(conn, query, context).await?.pop())
    }

    async fn write_actions(
        conn: &mut DbConn,
        id: i64,
        actions: &[Action],
        context: &str,
    ) -> Result<()> {
        sqlx::query("DELETE FROM webhook_actions WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(db(context))?;
        let mut actions = actions.to_vec();
        actions.sort();
        actions.dedup();
        if actions.is_empty() {
            return Ok(());
        }
        let mut insert =
            QueryBuilder::<Db>::new("INSERT INTO webhook_actions (webhook_id, action) ");
        insert.push_values(&actions, |mut row, action| {
            row.push_bind(id).push_bind(action.as_str());
        });
        execute(conn, insert, context).await?;
        Ok(())
    }

    /// The deliveries `ids` claimed until `lease_until`, with their
    /// webhooks and events.
    async fn claimed(
        conn: &mut DbConn,
        claimed: Vec<(i64, i64, i64, i64)>,
        lease_until: DateTime<Utc>,
        context: &str,
    ) -> Result<Vec<Delivery>> {
        let mut query = QueryBuilder::<Db>::new(WEBHOOK_SELECT);
        query.push(" WHERE w.id");
        push_list(&mut query, claimed.iter().map(|c| c.1).collect::<Vec<_>>());
        let webhooks: HashMap<i64, Webhook> = Self::webhooks_where(conn, query, context)
            .await?
            .into_iter()
            .map(|w| (w.id, w))
            .collect();
        let mut query = QueryBuilder::<Db>::new(
            "SELECT id, project_id, action, payload, created_at FROM webhook_events WHERE id",
        );
        push_list(&mut query, claimed.iter().map(|c| c.2).collect::<Vec<_>>());
        let mut events = HashMap::new();
        for row in fetch_all(conn, query, context).await? {
            let event = event_from_row(&row)?;
            events.insert(event.id, event);
        }
        let mut deliveries = Vec::with_capacity(claimed.len());
        for (id, webhook, event, attempts) in claimed {
            let (Some(webhook), Some(event)) = (webhooks.get(&webhook), events.get(&event)) else {
                continue;
            };
            deliveries.push(Delivery {
                id,
                webhook: webhook.clone(),
                event: event.clone(),
                attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                lease_until,
            });
        }
        Ok(deliveries)
    }
}

fn webhook_from_row(row: &DbRow) -> Result<Webhook> {
    let id: i64 = get(row, "id")?;
    let what = |column: &str| format!("{column} of webhook {id}");
    let count =
        |column: &str| -> Result<u64> { Ok(u64::try_from(get::<i64>(row, column)?).unwrap_or(0)) };
    Ok(Webhook {
        id,
        organization: get(row, "organization_id")?,
        project: get(row, "project_id")?,
        url: get(row, "url")?,
        send_payload: get(row, "send_payload")?,
        send_for_all_actions: get(row, "send_for_all_actions")?,
        headers: parse_object(&get::<String>(row, "headers")?, || what("headers"))?,
        is_active: get(row, "is_active")?,
        actions: Vec::new(),
        secret: get(row, "secret")?,
        created_at: time(row, "created_at", || what("created_at"))?,
        updated_at: time(row, "updated_at", || what("updated_at"))?,
        delivery: DeliveryState {
            last_attempt_at: read_time(row, "last_attempt_at", || what("last_attempt_at"))?,
            last_status: get::<Option<i32>>(row, "last_status")?
                .and_then(|status| u16::try_from(status).ok()),
            last_error: get(row, "last_error")?,
            delivered: count("delivered")?,
            failed: count("failed")?,
            pending: count("pending")?,
            consecutive_failures: count("consecutive_failures")?,
        },
    })
}

fn event_from_row(row: &DbRow) -> Result<Event> {
    let id: i64 = get(row, "id")?;
    let what = |column: &str| format!("{column} of webhook event {id}");
    let action: String = get(row, "action")?;
    Ok(Event {
        id,
        project: get(row, "project_id")?,
        action: action
            .parse()
            .map_err(|err| Error::backend(format!("decoding {}", what("action")), err))?,
        payload: parse_value(&get::<String>(row, "payload")?, || what("payload"))?,
        created_at: time(row, "created_at", || what("created_at"))?,
    })
}

#[async_trait]
impl WebhookRepository for Engine {
    async fn insert_webhook(&self, organization: i64, fields: WebhookFields) -> Result<Webhook> {
        let context = "creating a webhook";
        let mut tx = self.begin_write(context).await?;
        let at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webhooks (organization_id, project_id, url, send_payload,
                 send_for_all_actions, headers, is_active, secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(organization)
        .bind(fields.project)
        .bind(&fields.url)
        .bind(fields.send_payload)
        .bind(fields.send_for_all_actions)
        .bind(to_text(&fields.headers))
        .bind(fields.is_active)
        .bind(&fields.secret)
        .bind(stamp(at))
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| match (foreign_key_violation(&err), fields.project) {
            (true, Some(project)) => missing_project(project),
            _ => db(context)(err),
        })?;
        Self::write_actions(&mut tx, id, &fields.actions, context).await?;
        let webhook = Self::one_webhook(&mut tx, id, context)
            .await?
            .ok_or_else(|| Error::backend(context, "the new webhook was not found"))?;
        tx.commit().await.map_err(db(context))?;
        Ok(webhook)
    }

    async fn webhook(&self, id: i64) -> Result<Option<Webhook>> {
        let context = format!("reading webhook {id}");
        let mut conn = self.pool.acquire().await.map_err(db(context.as_str()))?;
        Self::one_webhook(&mut conn, id, &context).await
    }

    async fn webhooks(&self, organization: i64, scope: WebhookScope) -> Result<Vec<Webhook>> {
        let context = "listing webhooks";
        let mut conn = self.pool.acquire().await.map_err(db(context))?;
        let mut query = QueryBuilder::<Db>::new(WEBHOOK_SELECT);
        query
            .push(" WHERE w.organization_id = ")
            .push_bind(organization);
        match scope {
            WebhookScope::All => {}
            WebhookScope::Project(project) => {
                query.push(" AND w.project_id = ").push_bind(project);
            }
            WebhookScope::OrganizationOnly => {
                query.push(" AND w.project_id IS NULL");
            }
        }
        query.push(" ORDER BY w.id");
        Self::webhooks_where(&mut conn, query, context).await
    }

    async fn update_webhook(&self, id: i64, fields: WebhookFields) -> Result<Option<Webhook>> {
        let context = format!("updating webhook {id}");
        let mut tx = self.begin_write(&context).await?;
        let done = sqlx::query(
            "UPDATE webhooks SET url = $1, send_payload = $2, send_for_all_actions = $3,
                 headers = $4, is_active = $5, secret = $6, updated_at = $7
             WHERE id = $8",
        )
        .bind(&fields.url)
        .bind(fields.send_payload)
        .bind(fields.send_for_all_actions)
        .bind(to_text(&fields.headers))
        .bind(fields.is_active)
        .bind(&fields.secret)
        .bind(stamp(now()))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Self::write_actions(&mut tx, id, &fields.actions, &context).await?;
        if !fields.is_active {
            // A webhook switched off drops what it had not received yet,
            // as Label Studio sends nothing to an inactive webhook.
            sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db(context.as_str()))?;
            Self::drop_undeliverable_events(&mut tx, &context).await?;
        }
        let webhook = Self::one_webhook(&mut tx, id, &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(webhook)
    }

    async fn delete_webhook(&self, id: i64) -> Result<bool> {
        let context = format!("deleting webhook {id}");
        let mut tx = self.begin_write(&context).await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db(context.as_str()))?;
        Self::drop_undeliverable_events(&mut tx, &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(done.rows_affected() > 0)
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        webhooks: usize,
        per_webhook: usize,
    ) -> Result<Vec<Delivery>> {
        let context = "claiming webhook deliveries";
        // Stored at the database's precision, so that the outcome's
        // compare-and-set on it matches.
        let lease_until = lease_until.trunc_subsecs(6);
        let mut tx = self.begin_write(context).await?;
        // Claims of every process take turns (SQLite's single writer does
        // this by itself): a run is read and claimed in one go, so no two
        // claims ever hold parts of one webhook's queue.
        Self::lock_outbox_claims(&mut tx, context).await?;
        // The head of each active webhook's queue, if due and not held.
        let heads: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT d.webhook_id, d.id FROM (
                 SELECT (SELECT min(e.id) FROM webhook_deliveries e WHERE e.webhook_id = w.id)
                     AS head
                 FROM webhooks w WHERE w.is_active = $1) heads
             JOIN webhook_deliveries d ON d.id = heads.head
             WHERE d.next_attempt_at <= $2 AND (d.lease_until IS NULL OR d.lease_until < $2)
             ORDER BY d.next_attempt_at, d.id LIMIT $3",
        )
        .bind(true)
        .bind(stamp(now))
        .bind(i64::try_from(webhooks).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db(context))?;
        if heads.is_empty() {
            tx.rollback().await.map_err(db(context))?;
            return Ok(Vec::new());
        }
        // Each head and the deliveries behind it: nothing behind an
        // unheld head is held (a run is claimed and settled whole).
        let mut ids = Vec::new();
        for (webhook, head) in heads {
            let run: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM webhook_deliveries WHERE webhook_id = $1 AND id >= $2
                 ORDER BY id LIMIT $3",
            )
            .bind(webhook)
            .bind(head)
            .bind(i64::try_from(per_webhook.max(1)).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(db(context))?;
            ids.extend(run);
        }
        let mut claim = QueryBuilder::<Db>::new(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ",
        );
        claim.push_bind(stamp(lease_until)).push(" WHERE id");
        push_list(&mut claim, ids);
        claim.push(" RETURNING id, webhook_id, event_id, attempts");
        let claimed: Vec<(i64, i64, i64, i64)> = claim
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(context))?;
        let mut deliveries = Self::claimed(&mut tx, claimed, lease_until, context).await?;
        tx.commit().await.map_err(db(context))?;
        deliveries.sort_by_key(|delivery| delivery.id);
        Ok(deliveries)
    }

    async fn release_claims(&self) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL",
        )
        .execute(&self.pool)
        .await
        .map_err(db("releasing the claims of webhook deliveries"))?;
        Ok(())
    }

    async fn record_attempts(
        &self,
        attempts: &[(Delivery, Attempt, Outcome)],
        untried: &[Delivery],
    ) -> Result<usize> {
        let Some(webhook) = attempts
            .first()
            .map(|(d, _, _)| d.webhook.id)
            .or_else(|| untried.first().map(|d| d.webhook.id))
        else {
            return Ok(0);
        };
        let context = format!("recording deliveries to webhook {webhook}");
        let mut tx = self.begin_write(&context).await?;
        let (mut recorded, mut delivered, mut given_up) = (0_i64, 0_i64, 0_i64);
        let mut last: Option<(&Attempt, bool)> = None;
        let mut finished = Vec::new();
        for (delivery, attempt, outcome) in attempts {
            let lease = stamp(delivery.lease_until);
            let held = match outcome {
                Outcome::Delivered | Outcome::GivenUp => {
                    sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1 AND lease_until = $2")
                        .bind(delivery.id)
                        .bind(lease)
                        .execute(&mut *tx)
                        .await
                }
                Outcome::RetryAt(at) => {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET next_attempt_at = $1, lease_until = NULL,
                             last_error = $2
                         WHERE id = $3 AND lease_until = $4",
                    )
                    .bind(stamp(*at))
                    .bind(&attempt.error)
                    .bind(delivery.id)
                    .bind(lease)
                    .execute(&mut *tx)
                    .await
                }
            }
            .map_err(db(context.as_str()))?
            .rows_affected()
                > 0;
            if !held {
                continue;
            }
            recorded += 1;
            match outcome {
                Outcome::Delivered => delivered += 1,
                Outcome::GivenUp => given_up += 1,
                Outcome::RetryAt(_) => {}
            }
            if !matches!(outcome, Outcome::RetryAt(_)) {
                finished.push(delivery.event.id);
            }
            last = Some((attempt, *outcome == Outcome::Delivered));
        }
        if let Some(first) = untried.first() {
            let mut release = QueryBuilder::<Db>::new(
                "UPDATE webhook_deliveries SET lease_until = NULL, attempts = attempts - 1
                 WHERE lease_until = ",
            );
            release.push_bind(stamp(first.lease_until)).push(" AND id");
            push_list(
                &mut release,
                untried.iter().map(|d| d.id).collect::<Vec<_>>(),
            );
            execute(&mut tx, release, &context).await?;
        }
        if let Some((attempt, accepted)) = last {
            // Failed attempts in a row: none after an accepted last one;
            // one after deliveries of this run; else one more.
            sqlx::query(
                "UPDATE webhooks SET last_attempt_at = $1, last_status = $2, last_error = $3,
                     delivered = delivered + $4, failed = failed + $5,
                     consecutive_failures = CASE WHEN $6 THEN 0 WHEN $4 > 0 THEN 1
                         ELSE consecutive_failures + 1 END
                 WHERE id = $7",
            )
            .bind(stamp(attempt.at.trunc_subsecs(6)))
            .bind(attempt.status.map(i32::from))
            .bind(&attempt.error)
            .bind(delivered)
            .bind(given_up)
            .bind(accepted)
            .bind(webhook)
            .execute(&mut *tx)
            .await
            .map_err(db(context.as_str()))?;
        }
        if !finished.is_empty() {
            let mut events = QueryBuilder::<Db>::new("DELETE FROM webhook_events WHERE id");
            push_list(&mut events, finished);
            events.push(
                " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                 WHERE d.event_id = webhook_events.id)",
            );
            execute(&mut tx, events, &context).await?;
        }
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(usize::try_from(recorded).unwrap_or(0))
    }
}

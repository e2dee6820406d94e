//! On-save exports through the outbox ([`ExportOutbox`]): the database
//! queues a delivery per export storage in the transaction that saves or
//! deletes an annotation; the runner writes each (at once for the request
//! that saved it, then in the background), retries failures with backoff
//! and jitter for [`RunnerConfig::on_save_retry_for`], and shows what
//! fails on the storage (see [`state::with_export_backlog`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use futures::future::join_all;

use super::runner::Runner;
use super::state::{self, error_report};
use super::RunnerConfig;
use crate::persist::{ExportDelivery, ExportOutbox, ExportOutcome, SyncGuard};
use crate::{Error, ExportStorage, Result, Storage, SyncState, SyncStatus};

/// An export storage and its target.
type Target = (Storage, Arc<dyn ExportStorage>);

/// Deliveries attempted at once.
const CONCURRENCY: usize = 8;

impl Runner {
    pub(super) fn export_outbox(&self) -> Option<&Arc<dyn ExportOutbox>> {
        self.exports.get()
    }

    /// Retries due on-save exports until shutdown.
    pub(super) async fn export_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        while !*shutdown.borrow() {
            let attempted = match self.deliver_exports(None).await {
                Ok((attempted, _)) => attempted,
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the on-save export outbox");
                    0
                }
            };
            if attempted > 0 {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Attempts the due on-save exports (of `annotation` only, when
    /// given), once; returns how many were attempted and how many failed.
    pub(super) async fn deliver_exports(&self, annotation: Option<i64>) -> Result<(usize, usize)> {
        let Some(outbox) = self.export_outbox() else {
            return Ok((0, 0));
        };
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        let deliveries = outbox
            .claim_exports(now, now + lease, CONCURRENCY, annotation)
            .await?;
        let mut targets: HashMap<i64, Result<Target>> = HashMap::new();
        for delivery in &deliveries {
            if let Entry::Vacant(entry) = targets.entry(delivery.storage) {
                entry.insert(self.export_target(delivery.storage).await);
            }
        }
        let outcomes = join_all(deliveries.iter().map(|delivery| async {
            let outcome = match &targets[&delivery.storage] {
                Ok((storage, target)) => self.export_one(storage, target.as_ref(), delivery).await,
                Err(err) => Err(err.to_string()),
            };
            self.settle_export(outbox.as_ref(), delivery, outcome).await
        }))
        .await;
        let failed = outcomes.iter().filter(|failed| **failed).count();
        let mut storages: Vec<i64> = deliveries.iter().map(|d| d.storage).collect();
        storages.sort_unstable();
        storages.dedup();
        for storage in storages {
            if let Err(err) = self.show_export_backlog(storage).await {
                tracing::warn!(storage, error = %err, "could not show the on-save exports on the storage");
            }
        }
        Ok((deliveries.len(), failed))
    }

    /// Export storage `id` and its target.
    async fn export_target(&self, id: i64) -> Result<Target> {
        let storage = self
            .storages
            .storage(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("export storage {id}")))?;
        let target = self
            .backends
            .require(&storage.storage_type)?
            .export_storage(&storage.settings)
            .await
            .map_err(|err| {
                Error::backend(
                    format!("opening export storage {id}"),
                    self.redacted(&storage, &error_report(&err)),
                )
            })?;
        Ok((storage, target))
    }

    /// Writes (or removes) one annotation; why it failed, redacted.
    async fn export_one(
        &self,
        storage: &Storage,
        target: &dyn ExportStorage,
        delivery: &ExportDelivery,
    ) -> std::result::Result<(), String> {
        let result = if delivery.deleted {
            if target.can_delete_objects() {
                crate::export::delete_annotation(target, delivery.annotation).await
            } else {
                Ok(())
            }
        } else {
            match self
                .annotations
                .annotation_for_export(delivery.annotation)
                .await
            {
                Ok(Some(annotation)) => crate::export::export_annotation(target, &annotation).await,
                // Deleted since: its deletion is queued behind this.
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            }
        };
        result.map_err(|err| {
            self.redacted(
                storage,
                &crate::redact::without_provider_bodies(&error_report(&err)),
            )
        })
    }

    /// Records the outcome of an attempt; returns whether it failed.
    async fn settle_export(
        &self,
        outbox: &dyn ExportOutbox,
        delivery: &ExportDelivery,
        result: std::result::Result<(), String>,
    ) -> bool {
        let (storage, annotation, attempt) =
            (delivery.storage, delivery.annotation, delivery.attempt);
        let outcome = match result {
            Ok(()) => ExportOutcome::Done,
            Err(error) => {
                let outcome = after_failure(&self.config, delivery, error);
                match &outcome {
                    ExportOutcome::GivenUp(error) => tracing::error!(
                        storage, annotation, attempt, %error,
                        "on-save export given up: its retries ran out; an export sync writes it"
                    ),
                    ExportOutcome::RetryAt(_, error) => tracing::warn!(
                        storage, annotation, attempt, %error,
                        "on-save export failed; it will be retried"
                    ),
                    ExportOutcome::Done => {}
                }
                outcome
            }
        };
        let failed = outcome != ExportOutcome::Done;
        match outbox.record_export(delivery, &outcome).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                storage,
                annotation,
                "an on-save export's claim expired before its outcome was recorded"
            ),
            Err(err) => {
                tracing::warn!(storage, annotation, error = %err, "could not record an on-save export")
            }
        }
        failed
    }

    /// After an export sync: the saves queued before it started are
    /// forgotten when it completed (it wrote those annotations), and the
    /// outbox is shown on the storage again (the job wrote the state it
    /// started from).
    pub(super) async fn after_export_sync(&self, storage: &Storage, ended: &SyncState) {
        let Some(outbox) = self.export_outbox() else {
            return;
        };
        let started = ended
            .meta
            .get("time_in_progress")
            .and_then(serde_json::Value::as_str)
            .and_then(|at| chrono::DateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f%:z").ok());
        if let (SyncStatus::Completed, Some(started)) = (ended.status, started) {
            if let Err(err) = outbox.forget_written(storage.id, started.to_utc()).await {
                tracing::warn!(error = %err, "could not forget the on-save exports the sync wrote");
            }
        }
        if let Err(err) = self.show_export_backlog(storage.id).await {
            tracing::warn!(error = %err, "could not show the on-save exports on the storage");
        }
    }

    /// Writes what the outbox holds for `storage` into its state (a
    /// compare-and-set, repeated if the state moved meanwhile).
    pub(super) async fn show_export_backlog(&self, id: i64) -> Result<()> {
        let Some(outbox) = self.export_outbox() else {
            return Ok(());
        };
        let backlog = outbox.export_backlog(id).await?;
        loop {
            let Some(storage) = self.storages.storage(id).await? else {
                return Ok(());
            };
            let next = state::with_export_backlog(&storage.sync, &backlog);
            if next == storage.sync
                || self
                    .storages
                    .update_sync(id, &SyncGuard::of(&storage.sync), &next)
                    .await?
            {
                return Ok(());
            }
        }
    }
}

/// When a failed attempt is tried again, or that it is given up.
fn after_failure(config: &RunnerConfig, delivery: &ExportDelivery, error: String) -> ExportOutcome {
    let now = Utc::now();
    let wait = config.on_save_backoff.jittered_delay(delivery.attempt);
    let retry_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
    let deadline = delivery.created_at
        + chrono::Duration::from_std(config.on_save_retry_for).unwrap_or_default();
    if retry_at > deadline {
        ExportOutcome::GivenUp(error)
    } else {
        ExportOutcome::RetryAt(retry_at, error)
    }
}

//! The export engine: one object per annotation, named by its id.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use crate::persist::{AnnotationSource, ExportedAnnotation};
// Re-exported where it was first defined, for existing callers.
pub use crate::progress::ExportProgress;
use crate::progress::{Progress, ProgressSink};
use crate::retry::RetryPolicy;
use crate::{Error, ExportStorage, Result};

/// Django's `timesince` as Label Studio's `created_ago` shows it
/// (`0 minutes`, `2 hours, 5 minutes`), with its no-break spaces: the
/// `created_ago` of an exported annotation.
pub fn created_ago(created: DateTime<Utc>, now: DateTime<Utc>) -> String {
    const CHUNKS: [(i64, &str, &str); 6] = [
        (365 * 24 * 3600, "year", "years"),
        (30 * 24 * 3600, "month", "months"),
        (7 * 24 * 3600, "week", "weeks"),
        (24 * 3600, "day", "days"),
        (3600, "hour", "hours"),
        (60, "minute", "minutes"),
    ];
    let mut since = (now - created).num_seconds();
    let mut parts = Vec::with_capacity(2);
    for (seconds, one, many) in CHUNKS {
        let count = since / seconds;
        if count == 0 {
            if parts.is_empty() {
                continue;
            }
            break;
        }
        parts.push(format!(
            "{count}\u{a0}{}",
            if count == 1 { one } else { many }
        ));
        since -= count * seconds;
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0\u{a0}minutes".into()
    } else {
        parts.join(", ")
    }
}

/// Tuning of export syncs.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Annotations read from the host per page.
    pub page_size: usize,
    /// Objects written at once.
    pub write_concurrency: usize,
    /// Attempts for writes that fail with a temporary error.
    pub write_attempts: u32,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            page_size: 1000,
            write_concurrency: 16,
            write_attempts: 3,
        }
    }
}

/// The result of an export that ran to its end.
#[derive(Debug, Clone, Default)]
pub struct ExportOutcome {
    /// Final counters.
    pub progress: ExportProgress,
    /// The first write errors (at most [`MAX_REPORTED_ERRORS`]).
    pub errors: Vec<String>,
}

/// How many individual errors an outcome keeps for the traceback.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// The object key of an annotation: its id, no extension (Label Studio's
/// default naming).
pub fn annotation_key(id: i64) -> String {
    id.to_string()
}

/// Writes one annotation to `target`.
pub async fn export_annotation(
    target: &dyn ExportStorage,
    annotation: &ExportedAnnotation,
) -> Result<()> {
    let body = if target.pretty_json() {
        serde_json::to_vec_pretty(&annotation.payload)
    } else {
        serde_json::to_vec(&annotation.payload)
    }
    .map_err(|e| Error::backend("encoding annotation", e))?;
    let location = target.location(&annotation_key(annotation.id));
    let payload = PutPayload::from(body);
    target
        .store()
        .put(&location, payload)
        .await
        .map(|_| ())
        .map_err(|e| {
            Error::from_object_store(
                format!("writing annotation {} to \"{location}\"", annotation.id),
                e,
            )
        })
}

async fn export_with_retries(
    target: &dyn ExportStorage,
    annotation: &ExportedAnnotation,
    attempts: u32,
) -> Result<()> {
    RetryPolicy::default()
        .with_max_attempts(attempts)
        .run(|| export_annotation(target, annotation))
        .await
}

/// Deletes the object of annotation `id` from `target`; a missing object is
/// not an error.
pub async fn delete_annotation(target: &dyn ExportStorage, id: i64) -> Result<()> {
    let location = target.location(&annotation_key(id));
    match target.store().delete(&location).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(err) => Err(Error::from_object_store(
            format!("deleting annotation {id} at \"{location}\""),
            err,
        )),
    }
}

/// Writes every annotation of `project` to `target`, export storage
/// `storage_id`, and records each page's written annotations with the host
/// ([`AnnotationSource::record_exported`]). Write failures are counted and
/// reported, not hidden; errors reading from the host stop the export.
pub async fn export_project(
    project: i64,
    storage_id: i64,
    target: &dyn ExportStorage,
    source: &dyn AnnotationSource,
    config: &ExportConfig,
    progress: &dyn ProgressSink,
) -> Result<ExportOutcome> {
    let mut outcome = ExportOutcome::default();
    outcome.progress.total = source.count_annotations(project).await?;
    let mut after_id = 0;
    loop {
        let page = source
            .annotations_for_export(project, after_id, config.page_size.max(1))
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after_id = last.id;
        // Collected first: a lazy `map` closure over borrowed items trips
        // rustc's higher-ranked Send inference (rust-lang/rust#102211).
        let writes: Vec<_> = page
            .iter()
            .map(|annotation| export_with_retries(target, annotation, config.write_attempts))
            .collect();
        // In order, so each result pairs with its annotation.
        let results: Vec<Result<()>> = futures::stream::iter(writes)
            .buffered(config.write_concurrency.max(1))
            .collect()
            .await;
        let mut written = Vec::with_capacity(page.len());
        for (annotation, result) in page.iter().zip(results) {
            match result {
                Ok(()) => {
                    outcome.progress.written += 1;
                    written.push(annotation.id);
                }
                Err(err) => {
                    outcome.progress.failed += 1;
                    if outcome.errors.len() < MAX_REPORTED_ERRORS {
                        outcome.errors.push(err.to_string());
                    }
                }
            }
        }
        source.record_exported(storage_id, &written).await?;
        progress.report(&Progress::Export(outcome.progress.clone()))?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod created_ago_tests {
    use super::*;

    #[test]
    fn created_ago_reads_like_django() {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 0, 0, 0).unwrap();
        let cases = [
            (chrono::Duration::zero(), "0\u{a0}minutes"),
            (chrono::Duration::seconds(59), "0\u{a0}minutes"),
            (chrono::Duration::minutes(1), "1\u{a0}minute"),
            (
                chrono::Duration::minutes(125),
                "2\u{a0}hours, 5\u{a0}minutes",
            ),
            (chrono::Duration::days(8), "1\u{a0}week, 1\u{a0}day"),
        ];
        for (since, expected) in cases {
            assert_eq!(created_ago(at, at + since), expected, "after {since}");
        }
    }
}

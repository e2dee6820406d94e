//! The import sync engine: list, filter, dedupe, read and create tasks in
//! batches, one transaction per batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::future::Either;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};
use serde_json::{Map, Value};

use crate::fields::ObjectChanged;
use crate::follow::{FollowPolicy, GoneSweep};
use crate::parquet_file::{self, RowGroupSpan, RowProblems};
use crate::parse::{check_task_file_extension, ParsedTask, TaskParser, MAX_REPORTED_PROBLEMS};
use crate::persist::{GoneTasks, LinkedObject, NewTask, ObjectLink, SettledObject, TaskSink};
// Re-exported where they were first defined, for existing callers.
pub use crate::progress::{ImportProgress, NoProgress, Progress, ProgressSink};
use crate::retry::RetryPolicy;
use crate::{Error, ImportStorage, Result};

/// The data key of Files-mode tasks, moved to the first `$variable` of the
/// label config when tasks are shown.
pub const UNDEFINED_DATA_KEY: &str = "$undefined$";

/// Tuning of import syncs.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Objects per batch: one dedupe query and one transaction each.
    pub batch_size: usize,
    /// Task files read at once (Tasks mode).
    pub read_concurrency: usize,
    /// Task files up to this size are read whole, several at once, and
    /// their tasks written in one transaction; larger ones are streamed one
    /// at a time and written in batches as they are parsed.
    pub stream_threshold_bytes: u64,
    /// A larger single task (one object of a file) is a per-file error.
    pub max_task_bytes: usize,
    /// A Parquet row group whose column chunks (as stored) are larger is
    /// not read: the file is reported. One row group is what a Parquet
    /// file costs in memory.
    pub max_row_group_bytes: u64,
    /// Attempts for reads that fail with a temporary error.
    pub read_attempts: u32,
    /// A listing that yields no object for this long fails the sync (an
    /// endpoint answering empty pages with new continuation tokens
    /// forever would otherwise hold a worker forever).
    pub listing_stall_timeout: Duration,
}

impl ImportConfig {
    /// The retry policy of task-file reads.
    fn read_retry(&self) -> RetryPolicy {
        RetryPolicy::default().with_max_attempts(self.read_attempts)
    }
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            read_concurrency: 16,
            stream_threshold_bytes: 4 * 1024 * 1024,
            max_task_bytes: 64 * 1024 * 1024,
            max_row_group_bytes: 1024 * 1024 * 1024,
            read_attempts: 3,
            listing_stall_timeout: Duration::from_secs(120),
        }
    }
}

/// The result of an import that ran to its end.
#[derive(Debug, Clone, Default)]
pub struct ImportOutcome {
    /// Final counters.
    pub progress: ImportProgress,
    /// One line per bad task (key, line, reason): the first
    /// [`MAX_REPORTED_PROBLEMS`] of a file, then one line counting the
    /// rest; and one per task file that could not be read.
    pub file_errors: Vec<String>,
    /// Tasks skipped as invalid, reported or not
    /// (`meta.tasks_failed_validation`).
    pub bad_tasks: u64,
}

/// What reading one task file found wrong: the bad tasks it skipped and
/// the error that ended it early, if any.
#[derive(Debug, Default)]
struct FileProblems {
    key: String,
    /// The first bad tasks, each naming its line.
    reported: Vec<Error>,
    /// Bad tasks, reported or not.
    rejected: u64,
    /// What stopped the file before its end (cut inside a task, ...).
    ended: Option<Error>,
}

impl FileProblems {
    fn of(key: &str, parser: &mut TaskParser, ended: Option<Error>) -> Self {
        Self {
            key: key.to_string(),
            reported: parser.take_problems(),
            rejected: parser.rejected(),
            ended,
        }
    }
}

/// Steps the reading of an import may hand over before the writing takes
/// them: one batch ahead left the writer waiting for reads (100,000 one-task
/// files took 1.77–2.20 s with one, 1.51–1.81 s with four).
const STEPS_AHEAD: usize = 4;

/// A linked object whose listing entry changed: its key, its entry now,
/// and what its links recorded.
type ChangedObject = (String, ObjectMeta, LinkedObject);

/// What reading a listing batch hands to the writing, in order.
enum Step {
    /// Tasks to create in one transaction (Files-mode tasks, or those of
    /// small task files read whole), with what reading them counted and
    /// found wrong.
    Create(Vec<NewTask>, ImportOutcome),
    /// The rest of a listing batch: its large task files, streamed one at
    /// a time, and its changed objects; then progress is reported.
    Finish {
        large: Vec<(String, ObjectMeta)>,
        changed: Vec<ChangedObject>,
    },
}

impl ImportOutcome {
    /// Adds what another part of the same run counted and found.
    pub(crate) fn absorb(&mut self, other: ImportOutcome) {
        let (mine, theirs) = (&mut self.progress, other.progress);
        mine.objects += theirs.objects;
        mine.created += theirs.created;
        mine.existed += theirs.existed;
        mine.failed_files += theirs.failed_files;
        mine.changed += theirs.changed;
        mine.updated += theirs.updated;
        mine.deleted += theirs.deleted;
        mine.marked += theirs.marked;
        mine.missing += theirs.missing;
        self.file_errors.extend(other.file_errors);
        self.bad_tasks += other.bad_tasks;
    }

    /// Records a task file that could not be read as tasks, or that was
    /// gone when it was read (deleted since the listing, or a local file
    /// that now leads out of the document root): it is reported and tried
    /// again by the next sync. Any other error stops the run.
    fn file_failed(&mut self, err: Error) -> Result<()> {
        match err {
            Error::InvalidTaskFile { .. } | Error::NotFound { .. } => {
                self.progress.failed_files += 1;
                self.file_errors.push(err.to_string());
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Reports the objects the listing left out (names that cannot become
    /// a key or a task URL), each a failed file.
    fn unlisted(&mut self, unlisted: crate::Unlisted) {
        self.progress.failed_files += unlisted.total;
        let shown = unlisted.lines.len() as u64;
        self.file_errors.extend(unlisted.lines);
        if unlisted.total > shown {
            self.file_errors.push(format!(
                "{} more files left out for their names, not shown",
                unlisted.total - shown
            ));
        }
    }

    /// Reports the bad tasks of a file whose valid tasks were imported. The
    /// outcome is the same for a file read whole or streamed.
    fn bad_tasks(&mut self, problems: FileProblems) {
        if problems.rejected == 0 && problems.ended.is_none() {
            return;
        }
        self.progress.failed_files += 1;
        self.bad_tasks += problems.rejected;
        let unreported = problems
            .rejected
            .saturating_sub(problems.reported.len() as u64);
        self.file_errors
            .extend(problems.reported.iter().map(ToString::to_string));
        if unreported > 0 {
            self.file_errors.push(format!(
                "{}: {unreported} more bad tasks not shown (the first {MAX_REPORTED_PROBLEMS} are)",
                problems.key
            ));
        }
        if let Some(ended) = problems.ended {
            self.file_errors.push(ended.to_string());
        }
    }
}

/// The objects a sync of `source` considers, with their link keys, in
/// listing order: the listing (prefix, `recursive_scan`) without folder
/// markers, then `regex_filter`. Nothing is read or written; `storages ls`
/// shows this.
pub fn importable(
    source: &dyn ImportStorage,
) -> futures::stream::BoxStream<'_, Result<(String, ObjectMeta)>> {
    filtered(source, source.list())
}

/// [`importable`], failing when the listing yields no object for
/// `stall_timeout` (see [`bounded_listing`]).
pub fn importable_within(
    source: &dyn ImportStorage,
    stall_timeout: Duration,
) -> futures::stream::BoxStream<'_, Result<(String, ObjectMeta)>> {
    let prefix = source.listing().prefix.clone().unwrap_or_default();
    let what = format!("the listing of {}", source.task_url(&prefix));
    filtered(source, bounded_listing(source.list(), stall_timeout, what))
}

/// Fails `listing` with a message naming `what` when it yields no object
/// for `stall_timeout`. Only the time spent waiting for the next object
/// counts (not the time the consumer takes to write a batch), and every
/// object counts as progress, before any filter: a large bucket filtered
/// by a rare regex is not a stall. An endpoint that repeats objects
/// forever is stopped by the runner's maximum job duration instead.
pub fn bounded_listing(
    listing: futures::stream::BoxStream<'static, Result<ObjectMeta>>,
    stall_timeout: Duration,
    what: String,
) -> futures::stream::BoxStream<'static, Result<ObjectMeta>> {
    futures::stream::unfold(Some(listing), move |listing| {
        let what = what.clone();
        async move {
            let mut listing = listing?;
            match tokio::time::timeout(stall_timeout, listing.next()).await {
                Ok(Some(item)) => Some((item, Some(listing))),
                Ok(None) => None,
                Err(_) => Some((Err(listing_stalled(&what, stall_timeout)), None)),
            }
        }
    })
    .boxed()
}

fn listing_stalled(what: &str, stall_timeout: Duration) -> Error {
    Error::backend(
        format!(
            "{what} returned no new object for {} s",
            stall_timeout.as_secs_f64()
        ),
        "the endpoint may be misbehaving (the limit is the server's \
         --sync-listing-stall-seconds)",
    )
}

/// The listing without folder markers, with link keys, then `regex_filter`.
fn filtered<'a>(
    source: &'a dyn ImportStorage,
    listing: futures::stream::BoxStream<'a, Result<ObjectMeta>>,
) -> futures::stream::BoxStream<'a, Result<(String, ObjectMeta)>> {
    let listing_filter = source.listing().clone();
    listing
        .try_filter(|meta| futures::future::ready(!meta.location.as_ref().ends_with('/')))
        .map_ok(move |meta| (source.object_key(&meta.location), meta))
        .try_filter(move |(key, _)| futures::future::ready(listing_filter.accepts(key)))
        .boxed()
}

/// One import sync of one storage: where tasks go and how to read them.
#[derive(Debug, Clone, Copy)]
pub struct ImportJob<'a> {
    /// The storage whose links dedupe the objects.
    pub storage_id: i64,
    /// The project that receives the tasks.
    pub project: i64,
    /// What to list and read.
    pub source: &'a dyn ImportStorage,
    /// Files mode (one task per object) instead of Tasks mode.
    pub use_blob_urls: bool,
    /// Where tasks and links are written.
    pub sink: &'a dyn TaskSink,
    /// Batch size, read concurrency, limits.
    pub config: &'a ImportConfig,
    /// What happens to objects that changed or are gone since they were
    /// synced (the default: nothing, as in Label Studio).
    pub follow: FollowPolicy,
}

/// Whether a sync looks up the links of each batch's keys before reading
/// and writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookUp {
    EachBatch,
    /// The storage had no links when the sync began.
    Never,
}

/// How the tasks read from an object are written.
#[derive(Debug, Clone, Copy)]
enum Writing<'a> {
    /// A new object: tasks for the rows not linked yet.
    Create,
    /// A changed object read again (see [`TaskSink::refresh_tasks`]):
    /// its links keep the listing entry `was` until the file has been read
    /// to its end; `last_row` gathers the highest row index read.
    Refresh {
        was: &'a LinkedObject,
        last_row: &'a AtomicI64,
    },
}

impl ImportJob<'_> {
    /// Syncs the source into the project.
    ///
    /// Objects already linked to the storage are skipped whole (their
    /// content is not read again). Tasks and links are written in batches,
    /// one transaction each, a small task file always within one; a large
    /// one is streamed and stays marked unfinished until its end. So an
    /// interrupted sync leaves whole batches only and the next sync creates
    /// exactly what is missing.
    ///
    /// Following the bucket ([`ImportJob::follow`]), linked objects whose
    /// listing entry changed are read again, and once the listing has
    /// ended without error the tasks of linked objects it no longer holds
    /// are removed, within the deletion guard (see [`crate::follow`]).
    pub async fn run(&self, progress: &dyn ProgressSink) -> Result<ImportOutcome> {
        // Before the first link there is nothing a lookup could find, and
        // `create_tasks` dedupes in its own transaction whatever this says.
        let look_up = if self.sink.has_links(self.storage_id).await? {
            LookUp::EachBatch
        } else {
            LookUp::Never
        };
        let mut batches = importable_within(self.source, self.config.listing_stall_timeout)
            .try_chunks(self.config.batch_size.max(1));

        // Listing the next batch overlaps with writing the current one: a
        // producer and a consumer joined on this task, two batches in flight.
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let produce = async move {
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|err| err.1);
                let failed = batch.is_err();
                if sender.send(batch).await.is_err() || failed {
                    break;
                }
            }
        };
        let consume = async {
            let mut outcome = ImportOutcome::default();
            let mut sweep = self.follow.gone_tasks().map(|_| GoneSweep::default());
            // Owned here so that a consumer that stops early drops it, which
            // ends a producer waiting for room in the channel.
            let mut receiver = receiver;
            let batches = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
            self.import_batches(batches, look_up, sweep.as_mut(), &mut outcome, progress)
                .await?;
            Ok((outcome, sweep))
        };
        // A consumer that ends (done, or failed) ends the listing too, even
        // one waiting for a slow endpoint.
        let result =
            match futures::future::select(std::pin::pin!(produce), std::pin::pin!(consume)).await {
                Either::Left(((), consume)) => consume.await,
                Either::Right((result, _listing)) => result,
            };
        let (mut outcome, sweep) = result?;
        outcome.unlisted(self.source.take_unlisted());
        if let (Some(sweep), Some(gone)) = (sweep, self.follow.gone_tasks()) {
            self.remove_gone(sweep, gone, &mut outcome).await?;
            progress.report(&Progress::Import(outcome.progress.clone()))?;
        }
        Ok(outcome)
    }

    /// Removes the tasks of the linked objects the whole listing did not
    /// hold, unless the deletion guard holds them back.
    async fn remove_gone(
        &self,
        sweep: GoneSweep,
        gone: GoneTasks,
        outcome: &mut ImportOutcome,
    ) -> Result<()> {
        let objects = sweep
            .finish(self.sink, self.source, self.storage_id)
            .await?;
        outcome.progress.missing = objects.keys.len() as u64;
        if let Some(reason) = objects.held_back(outcome.progress.objects, self.follow.guard_percent)
        {
            if !self.follow.confirm_deletions {
                tracing::warn!(storage = self.storage_id, "{reason}");
                outcome.file_errors.push(reason);
                return Ok(());
            }
        }
        let removed = objects
            .remove(self.sink, self.storage_id, gone, self.config.batch_size)
            .await?;
        outcome.progress.deleted += removed.deleted;
        outcome.progress.marked += removed.marked;
        Ok(())
    }

    /// Imports one batch of listed objects (applied events).
    pub(crate) async fn import_batch(
        &self,
        batch: Vec<(String, ObjectMeta)>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        let batches = futures::stream::once(async { Ok(batch) });
        self.import_batches(batches, LookUp::EachBatch, None, outcome, progress)
            .await
    }

    /// Imports listed objects a batch at a time in two stages joined by a
    /// channel: one dedupes a batch against the links and reads its task
    /// files, the other writes what the first hands it, in order. So the
    /// transactions overlap the reads of the batches after them, and memory
    /// holds at most six batches of tasks (one being read,
    /// [`STEPS_AHEAD`] waiting, one being written). Progress is reported
    /// after each batch is written.
    async fn import_batches(
        &self,
        batches: impl futures::Stream<Item = Result<Vec<(String, ObjectMeta)>>>,
        look_up: LookUp,
        mut sweep: Option<&mut GoneSweep>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        let (steps, receiver) = tokio::sync::mpsc::channel(STEPS_AHEAD);
        let read = async move {
            let mut batches = std::pin::pin!(batches);
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                if let Some(sweep) = sweep.as_deref_mut() {
                    let keys: Vec<&str> = batch.iter().map(|(key, _)| key.as_str()).collect();
                    sweep
                        .observe(self.sink, self.source, self.storage_id, &keys)
                        .await?;
                }
                if !self.read_batch(batch, look_up, &steps).await? {
                    break;
                }
            }
            Ok(())
        };
        let write = async {
            // Owned here so that a writer that fails drops it, which stops
            // the reader at its next step.
            let mut receiver = receiver;
            while let Some(step) = receiver.recv().await {
                self.write_step(step, outcome, progress).await?;
            }
            Ok::<_, Error>(())
        };
        // A failed write ends the reading at once (it may be waiting for a
        // slow listing); its error is the one to tell.
        match futures::future::select(std::pin::pin!(read), std::pin::pin!(write)).await {
            Either::Left((read, write)) => write.await.and(read),
            Either::Right((write, read)) => {
                write?;
                read.await
            }
        }
    }

    /// Dedupes `batch` against the links (unless `look_up` says there are
    /// none) and hands what is to be written to `steps`; false once the
    /// writer has stopped.
    async fn read_batch(
        &self,
        batch: Vec<(String, ObjectMeta)>,
        look_up: LookUp,
        steps: &tokio::sync::mpsc::Sender<Step>,
    ) -> Result<bool> {
        let mut counted = ImportOutcome::default();
        let mut seen = HashSet::with_capacity(batch.len());
        let batch: Vec<_> = batch
            .into_iter()
            .filter(|(key, _)| seen.insert(key.clone()))
            .collect();
        counted.progress.objects += batch.len() as u64;
        let (linked, changed) = match look_up {
            LookUp::Never => (HashMap::new(), Vec::new()),
            LookUp::EachBatch => self.linked_in(&batch).await?,
        };
        counted.progress.existed += linked.values().sum::<u64>();
        let fresh: Vec<_> = batch
            .into_iter()
            .filter(|(key, _)| !linked.contains_key(key))
            .collect();
        let Some(large) = self.read_fresh(fresh, counted, steps).await? else {
            return Ok(false);
        };
        Ok(steps.send(Step::Finish { large, changed }).await.is_ok())
    }

    /// Of the objects of `batch`, those linked already with their task
    /// counts, and (following changes) those whose listing entry changed
    /// since they were read.
    async fn linked_in(
        &self,
        batch: &[(String, ObjectMeta)],
    ) -> Result<(HashMap<String, u64>, Vec<ChangedObject>)> {
        let keys: Vec<String> = batch.iter().map(|(key, _)| key.clone()).collect();
        if self.follow.changed != ObjectChanged::Update {
            let linked = self.sink.linked_keys(self.storage_id, &keys).await?;
            return Ok((linked, Vec::new()));
        }
        let mut objects = self.sink.linked_objects(self.storage_id, &keys).await?;
        let linked = objects
            .iter()
            .map(|(key, object)| (key.clone(), object.tasks))
            .collect();
        let changed = batch
            .iter()
            .filter_map(|(key, meta)| {
                let was = objects.remove(key)?;
                was.changed(meta.e_tag.as_deref(), meta.size, meta.last_modified)
                    .then(|| (key.clone(), meta.clone(), was))
            })
            .collect();
        Ok((linked, changed))
    }

    /// Hands the tasks of objects not linked yet to `steps`, a batch at a
    /// time: Files-mode tasks, or those of the small task files, read
    /// several at once, each file whole within one batch. Returns the
    /// large task files (and Parquet files), to be streamed; `None` once
    /// the writer has stopped.
    async fn read_fresh(
        &self,
        fresh: Vec<(String, ObjectMeta)>,
        mut counted: ImportOutcome,
        steps: &tokio::sync::mpsc::Sender<Step>,
    ) -> Result<Option<Vec<(String, ObjectMeta)>>> {
        if self.use_blob_urls {
            let tasks: Vec<NewTask> = fresh
                .iter()
                .map(|(key, meta)| self.file_task(key, meta))
                .collect();
            let sent = steps.send(Step::Create(tasks, counted)).await;
            return Ok(sent.is_ok().then(Vec::new));
        }
        for (key, _) in &fresh {
            check_task_file_extension(key)?;
        }
        // Parquet files are always read row group by row group.
        let (small, large): (Vec<_>, Vec<_>) = fresh.into_iter().partition(|(key, meta)| {
            meta.size <= self.config.stream_threshold_bytes && !parquet_file::is_parquet(key)
        });
        let metas = small.iter().map(|(_, meta)| meta.clone()).collect();
        let mut files = self
            .source
            .read_small(metas, self.config.read_concurrency)
            .zip(futures::stream::iter(small));
        let mut pending = Vec::new();
        while let Some((read, (key, meta))) = files.next().await {
            let file = match read {
                Ok(bytes) => Ok(parse_task_file(&key, &meta, &bytes, self.config)),
                // Tried again one at a time, with the retry policy.
                Err(_) => read_task_file(self.source, key, meta, self.config).await,
            };
            match file {
                Ok((tasks, problems)) => {
                    pending.extend(tasks);
                    counted.bad_tasks(problems);
                }
                Err(err) => counted.file_failed(err)?,
            }
            if pending.len() >= self.config.batch_size {
                let step = Step::Create(std::mem::take(&mut pending), std::mem::take(&mut counted));
                if steps.send(step).await.is_err() {
                    return Ok(None);
                }
            }
        }
        let sent = steps.send(Step::Create(pending, counted)).await;
        Ok(sent.is_ok().then_some(large))
    }

    /// Writes one step the reading handed over.
    async fn write_step(
        &self,
        step: Step,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        match step {
            Step::Create(tasks, counted) => {
                outcome.absorb(counted);
                self.write(tasks, Writing::Create, outcome).await
            }
            Step::Finish { large, changed } => {
                for (key, meta) in large {
                    self.stream_task_file(&key, &meta, Writing::Create, outcome, progress)
                        .await?;
                }
                self.refresh_changed(changed, outcome, progress).await?;
                progress.report(&Progress::Import(outcome.progress.clone()))
            }
        }
    }

    /// Reads linked objects whose listing entry changed again. In Files
    /// mode only their links learn the new entry (the task URL is the
    /// same); a task file is read as a stream, one at a time.
    async fn refresh_changed(
        &self,
        changed: Vec<ChangedObject>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        if changed.is_empty() {
            return Ok(());
        }
        outcome.progress.changed += changed.len() as u64;
        if self.use_blob_urls {
            let settled: Vec<SettledObject> = changed
                .iter()
                .map(|(key, meta, _)| settled(key, meta, None))
                .collect();
            self.sink
                .settle_objects(self.storage_id, &settled, None)
                .await?;
            return Ok(());
        }
        for (key, meta, was) in &changed {
            let last_row = AtomicI64::new(-1);
            let writing = Writing::Refresh {
                was,
                last_row: &last_row,
            };
            self.stream_task_file(key, meta, writing, outcome, progress)
                .await?;
        }
        Ok(())
    }

    /// Writes `tasks` in one transaction: creates them (what was linked
    /// already counts as existing) or, for a changed object, refreshes
    /// them.
    async fn write(
        &self,
        mut tasks: Vec<NewTask>,
        writing: Writing<'_>,
        outcome: &mut ImportOutcome,
    ) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let count = tasks.len() as u64;
        let Writing::Refresh { was, last_row } = writing else {
            let created = self
                .sink
                .create_tasks(self.project, self.storage_id, tasks)
                .await?;
            outcome.progress.created += created;
            outcome.progress.existed += count - created.min(count);
            return Ok(());
        };
        for task in &mut tasks {
            last_row.fetch_max(task.link.row_index.unwrap_or(-1), Ordering::Relaxed);
            task.link.etag.clone_from(&was.etag);
            task.link.size = was.size;
            task.link.last_modified = was.last_modified;
        }
        let refreshed = self
            .sink
            .refresh_tasks(self.project, self.storage_id, tasks)
            .await?;
        outcome.progress.created += refreshed.created;
        outcome.progress.updated += refreshed.updated;
        outcome.progress.marked += refreshed.marked;
        Ok(())
    }

    /// Imports a large task file (or any Parquet file) in batches as it is
    /// read. The file is marked unfinished until its last task is written,
    /// so a run stopped in the middle (crash, shutdown, a read that keeps
    /// failing) reads it again next time and creates only the tasks that
    /// are missing; of a Parquet file, only the row groups not wholly
    /// linked are read again. Bad tasks are skipped and reported as for a
    /// small file; a file read to its end is finished.
    ///
    /// A changed file read again is not marked: its links keep their old
    /// listing entry until it has been read to its end, and only then are
    /// the links of rows it no longer holds removed.
    async fn stream_task_file(
        &self,
        key: &str,
        meta: &ObjectMeta,
        writing: Writing<'_>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        if let Writing::Create = writing {
            self.sink.begin_object(self.storage_id, key).await?;
        }
        let mut retry = self.config.read_retry().backoff();
        let read_to_end = loop {
            let attempt = if parquet_file::is_parquet(key) {
                self.parquet_once(key, meta, writing, outcome, progress)
                    .await
            } else {
                self.stream_once(key, meta, writing, outcome, progress)
                    .await
            };
            match attempt {
                Ok(problems) => {
                    let read_to_end = problems.ended.is_none();
                    outcome.bad_tasks(problems);
                    break read_to_end;
                }
                Err(err) if retry.again(&err).await => continue,
                Err(err) => return outcome.file_failed(err),
            }
        };
        match writing {
            Writing::Create => self.sink.finish_object(self.storage_id, key).await,
            Writing::Refresh { last_row, .. } if read_to_end => {
                let last_row = last_row.load(Ordering::Relaxed);
                let object = settled(key, meta, Some(last_row));
                let removed = self
                    .sink
                    .settle_objects(self.storage_id, &[object], self.follow.gone_tasks())
                    .await?;
                outcome.progress.deleted += removed.deleted;
                outcome.progress.marked += removed.marked;
                Ok(())
            }
            // Read again next time, as a file still changed.
            Writing::Refresh { .. } => Ok(()),
        }
    }

    async fn stream_once(
        &self,
        key: &str,
        meta: &ObjectMeta,
        writing: Writing<'_>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<FileProblems> {
        let context = || format!("reading task file \"{key}\"");
        let mut chunks = self
            .source
            .store()
            .get(&meta.location)
            .await
            .map_err(|err| Error::from_object_store(context(), err))?
            .into_stream();
        let mut parser = TaskParser::new(key, self.config.max_task_bytes);
        let mut parsed = Vec::new();
        let mut ended = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|err| Error::from_object_store(context(), err))?;
            if let Err(err) = parser.push(&chunk, &mut parsed) {
                ended = Some(err);
                break;
            }
            self.write_parsed((key, meta), &mut parsed, false, writing, outcome, progress)
                .await?;
        }
        if ended.is_none() {
            ended = parser.finish(&mut parsed).err();
        }
        self.write_parsed((key, meta), &mut parsed, true, writing, outcome, progress)
            .await?;
        Ok(FileProblems::of(key, &mut parser, ended))
    }

    /// Reads a Parquet file row group by row group: its footer, then per
    /// row group one range read of its column chunks, decoded on a blocking
    /// thread that hands out tasks a batch at a time (two batches in
    /// flight), so memory holds one row group's column chunks. Row groups
    /// whose rows are all linked already (a resumed sync) are not read.
    async fn parquet_once(
        &self,
        key: &str,
        meta: &ObjectMeta,
        writing: Writing<'_>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<FileProblems> {
        let store = self.source.store();
        let metadata = parquet_file::read_metadata(&*store, &meta.location, meta.size, key).await?;
        let file = ParquetFile {
            store,
            key,
            meta,
            metadata,
        };
        let mut problems = RowProblems::default();
        let mut ended = None;
        for group in parquet_file::row_groups(key, &file.metadata, meta.size)? {
            if group.rows == 0 {
                continue;
            }
            if let Writing::Create = writing {
                let linked = self
                    .sink
                    .count_linked_rows(self.storage_id, key, group.row_numbers())
                    .await?;
                if linked >= group.rows as u64 {
                    outcome.progress.existed += linked;
                    continue;
                }
            }
            let (found, result) = self
                .import_row_group(&file, group, writing, outcome, progress)
                .await?;
            problems.merge(found);
            if let Err(err) = result {
                ended = Some(err);
                break;
            }
        }
        Ok(FileProblems {
            key: key.to_string(),
            reported: problems.reported,
            rejected: problems.rejected,
            ended,
        })
    }

    /// Reads one row group of a Parquet file, decodes it on a blocking
    /// thread and writes its tasks as they come. Returns its bad rows and
    /// how it ended: a damaged row group, or one above the size limit,
    /// ends the file (reported).
    async fn import_row_group(
        &self,
        file: &ParquetFile<'_>,
        group: RowGroupSpan,
        writing: Writing<'_>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<(RowProblems, Result<()>)> {
        let key = file.key;
        let stored = group.bytes.end - group.bytes.start;
        if stored > self.config.max_row_group_bytes {
            let reason = format!(
                "row group {} is {stored} bytes, above the limit of {} bytes: write the file \
                 with smaller row groups",
                group.index, self.config.max_row_group_bytes
            );
            return Ok((
                RowProblems::default(),
                Err(parquet_file::invalid(key, reason)),
            ));
        }
        let bytes = file
            .store
            .get_range(&file.meta.location, group.bytes.clone())
            .await
            .map_err(|err| Error::from_object_store(format!("reading task file \"{key}\""), err))?;
        let (sender, mut receiver) = tokio::sync::mpsc::channel(2);
        let row_group = Some(group.index as i64);
        let decoding = tokio::task::spawn_blocking({
            let (key, metadata) = (key.to_string(), file.metadata.clone());
            let batch_size = self.config.batch_size;
            move || {
                let mut problems = RowProblems::default();
                let ended = parquet_file::decode_row_group(
                    &key,
                    &metadata,
                    &group,
                    bytes,
                    batch_size,
                    &mut problems,
                    |tasks| sender.blocking_send(tasks).is_ok(),
                );
                (problems, ended)
            }
        });
        // Returning early drops the receiver, which stops the decoding.
        while let Some(tasks) = receiver.recv().await {
            self.write(
                new_tasks(key, file.meta, row_group, tasks),
                writing,
                outcome,
            )
            .await?;
            progress.report(&Progress::Import(outcome.progress.clone()))?;
        }
        // A panic of the parquet crate on a hostile file is that file's
        // failure, reported; the sync goes on.
        decoding.await.map_err(|err| {
            parquet_file::invalid(key, format!("the Parquet reader failed on it ({err})"))
        })
    }

    /// Writes the parsed tasks of a streamed file a batch at a time; the
    /// last, partial batch only when `all` (the file ended).
    async fn write_parsed(
        &self,
        (key, meta): (&str, &ObjectMeta),
        parsed: &mut Vec<ParsedTask>,
        all: bool,
        writing: Writing<'_>,
        outcome: &mut ImportOutcome,
        progress: &dyn ProgressSink,
    ) -> Result<()> {
        let batch_size = self.config.batch_size.max(1);
        while parsed.len() >= batch_size || (all && !parsed.is_empty()) {
            let rest = parsed.split_off(batch_size.min(parsed.len()));
            let batch = std::mem::replace(parsed, rest);
            self.write(new_tasks(key, meta, None, batch), writing, outcome)
                .await?;
            progress.report(&Progress::Import(outcome.progress.clone()))?;
        }
        Ok(())
    }

    fn file_task(&self, key: &str, meta: &ObjectMeta) -> NewTask {
        let mut data = Map::new();
        data.insert(
            UNDEFINED_DATA_KEY.into(),
            Value::String(self.source.task_url(&meta.location)),
        );
        NewTask {
            data: data.into(),
            annotations: Vec::new(),
            predictions: Vec::new(),
            allow_skip: true,
            link: link(key, None, meta),
        }
    }
}

/// A Parquet task file being imported: where it is, its key, listing
/// entry and footer.
struct ParquetFile<'a> {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    key: &'a str,
    meta: &'a ObjectMeta,
    metadata: std::sync::Arc<parquet::file::metadata::ParquetMetaData>,
}

/// The object `key` as its links record it from now on.
fn settled(key: &str, meta: &ObjectMeta, last_row: Option<i64>) -> SettledObject {
    SettledObject {
        key: key.to_string(),
        last_row,
        etag: meta.e_tag.clone(),
        size: Some(meta.size),
        last_modified: Some(meta.last_modified),
    }
}

fn link(key: &str, row_index: Option<i64>, meta: &ObjectMeta) -> ObjectLink {
    ObjectLink {
        key: key.to_string(),
        row_index,
        row_group: None,
        etag: meta.e_tag.clone(),
        size: Some(meta.size),
        last_modified: Some(meta.last_modified),
    }
}

async fn read_task_file(
    source: &dyn ImportStorage,
    key: String,
    meta: ObjectMeta,
    config: &ImportConfig,
) -> Result<(Vec<NewTask>, FileProblems)> {
    let store = source.store();
    let bytes = config
        .read_retry()
        .run(|| async {
            match store.get(&meta.location).await {
                Ok(get) => get.bytes().await,
                Err(err) => Err(err),
            }
            .map_err(|err| Error::from_object_store(format!("reading task file \"{key}\""), err))
        })
        .await?;
    Ok(parse_task_file(&key, &meta, &bytes, config))
}

/// The tasks of the whole task file `key`, and what was wrong in it.
fn parse_task_file(
    key: &str,
    meta: &ObjectMeta,
    bytes: &[u8],
    config: &ImportConfig,
) -> (Vec<NewTask>, FileProblems) {
    let mut parser = TaskParser::new(key, config.max_task_bytes);
    let mut parsed = Vec::new();
    let ended = parser
        .push(bytes, &mut parsed)
        .and_then(|()| parser.finish(&mut parsed))
        .err();
    let problems = FileProblems::of(key, &mut parser, ended);
    (new_tasks(key, meta, None, parsed), problems)
}

/// The tasks parsed from the object `key` (from its row group
/// `row_group`, of a Parquet file), with their links.
fn new_tasks(
    key: &str,
    meta: &ObjectMeta,
    row_group: Option<i64>,
    parsed: Vec<ParsedTask>,
) -> Vec<NewTask> {
    parsed
        .into_iter()
        .map(|task| NewTask {
            link: ObjectLink {
                row_group,
                ..link(key, task.row_index, meta)
            },
            data: task.data,
            annotations: task.annotations,
            predictions: task.predictions,
            allow_skip: task.allow_skip,
        })
        .collect()
}

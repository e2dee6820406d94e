//! A [`TaskSink`] that writes tasks as JSON Lines, as Label Studio imports
//! them, instead of creating them in a database: the `storages sync`
//! command's output, and a way to see what a sync would create.
//!
//! Each line is one task:
//! `{"data": {...}, "annotations": [...], "predictions": [...], "allow_skip": false, "meta": {"storage_key": "...", "row_index": 3}}`.
//! `annotations` and `predictions` appear when the task file had some,
//! `allow_skip` only when it is false, `row_index` for tasks of arrays and
//! JSON Lines files.
//!
//! [`JsonlSink::create`] writes to a temporary file beside the destination
//! and renames it into place in [`JsonlSink::finish`], so a failed or
//! interrupted run leaves the previous file as it was.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::persist::{NewTask, TaskSink};
use crate::{Error, Result};

/// Called with the number of tasks each write added (a progress bar).
pub type OnWritten = Box<dyn Fn(u64) + Send + Sync>;

/// A [`TaskSink`] writing one JSON line per task.
///
/// A sink is one run: "already linked" means "written earlier by this
/// sink", so a key listed twice is read once, and a task file read again
/// after a failed read (the engine retries) writes only the rows it had not
/// written.
pub struct JsonlSink {
    state: Mutex<State>,
    data_key: Option<String>,
    on_written: Option<OnWritten>,
}

struct State {
    writer: Option<BufWriter<Box<dyn Write + Send>>>,
    /// The temporary file and its destination, when writing to a file.
    file: Option<PartialFile>,
    /// Per object key: what was written.
    keys: HashMap<String, Written>,
    /// Objects begun and not finished (large task files being streamed).
    unfinished: HashSet<String>,
    tasks: u64,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Written {
    tasks: u64,
    /// The task without a row (a file of one object, or a Files-mode task).
    whole: bool,
    /// The highest row written. The parser yields the rows of a file in
    /// increasing order, and a re-read starts from its first row, so rows
    /// up to this one are exactly those written: one number per object
    /// instead of a set of every row.
    last_row: Option<i64>,
}

impl fmt::Debug for JsonlSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlSink")
            .field("data_key", &self.data_key)
            .finish_non_exhaustive()
    }
}

impl JsonlSink {
    /// A sink writing to `writer` as it goes (standard output, a pipe).
    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        Self::with_parts(writer, None)
    }

    /// A sink that replaces the file `path` when [`JsonlSink::finish`]
    /// succeeds; until then it writes a temporary file in the same folder,
    /// deleted if the sink is dropped unfinished. The result has the mode
    /// of any new file (not a temporary file's private one).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let (file, partial) = PartialFile::create(path)?;
        Ok(Self::with_parts(Box::new(file), Some(partial)))
    }

    fn with_parts(writer: Box<dyn Write + Send>, file: Option<PartialFile>) -> Self {
        Self {
            state: Mutex::new(State {
                // 1 MiB: a few syscalls per batch of tasks.
                writer: Some(BufWriter::with_capacity(1 << 20, writer)),
                file,
                keys: HashMap::new(),
                unfinished: HashSet::new(),
                tasks: 0,
                error: None,
            }),
            data_key: None,
            on_written: None,
        }
    }

    /// Writes the URL of Files-mode tasks under `key` (the variable of the
    /// label config, e.g. `image`) instead of `$undefined$`.
    pub fn with_data_key(mut self, key: Option<String>) -> Self {
        self.data_key = key;
        self
    }

    /// Calls `f` with the number of tasks of every successful write.
    pub fn with_on_written(mut self, f: OnWritten) -> Self {
        self.on_written = Some(f);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks written so far.
    pub fn written(&self) -> u64 {
        self.lock().tasks
    }

    /// Flushes the output and, for [`JsonlSink::create`], renames the file
    /// into place; an earlier write error is reported here too. Later
    /// writes fail.
    pub fn finish(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        if let Some(error) = state.error.take() {
            return Err(std::io::Error::other(error));
        }
        if let Some(writer) = state.writer.take() {
            writer.into_inner().map_err(|e| e.into_error())?.flush()?;
        }
        match state.file.take() {
            Some(file) => file.commit(),
            None => Ok(()),
        }
    }

    /// The JSON line of a task.
    fn line(&self, task: &NewTask) -> Value {
        let data = task.data.clone().shown(self.data_key.as_deref());
        let mut line = Map::new();
        line.insert("data".into(), Value::Object(data.to_object()));
        if !task.annotations.is_empty() {
            line.insert("annotations".into(), Value::Array(task.annotations.clone()));
        }
        if !task.predictions.is_empty() {
            line.insert("predictions".into(), Value::Array(task.predictions.clone()));
        }
        if !task.allow_skip {
            line.insert("allow_skip".into(), Value::Bool(false));
        }
        let mut meta = Map::new();
        meta.insert("storage_key".into(), Value::String(task.link.key.clone()));
        if let Some(row) = task.link.row_index {
            meta.insert("row_index".into(), row.into());
        }
        line.insert("meta".into(), Value::Object(meta));
        Value::Object(line)
    }
}

#[async_trait]
impl TaskSink for JsonlSink {
    async fn linked_keys(&self, _storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let state = self.lock();
        Ok(keys
            .iter()
            .filter(|key| !state.unfinished.contains(*key))
            .filter_map(|key| {
                let written = state.keys.get(key)?;
                (written.tasks > 0).then(|| (key.clone(), written.tasks))
            })
            .collect())
    }

    /// The mark only keeps a streamed file out of [`TaskSink::linked_keys`]
    /// until it ends; nothing outlives the sink.
    async fn begin_object(&self, _storage_id: i64, key: &str) -> Result<()> {
        self.lock().unfinished.insert(key.to_string());
        Ok(())
    }

    async fn finish_object(&self, _storage_id: i64, key: &str) -> Result<()> {
        self.lock().unfinished.remove(key);
        Ok(())
    }

    async fn create_tasks(
        &self,
        _project: i64,
        _storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> Result<u64> {
        let mut buffer = Vec::new();
        let mut fresh = Vec::new();
        let mut state = self.lock();
        // Decided on a copy of the marks and applied after the write, so a
        // failed write leaves them as they were (all or nothing).
        let mut marks: HashMap<&str, Written> = HashMap::new();
        for task in &tasks {
            let key = task.link.key.as_str();
            let mark = marks.entry(key).or_insert_with(|| {
                let current = state.keys.get(key);
                Written {
                    tasks: current.map_or(0, |w| w.tasks),
                    whole: current.is_some_and(|w| w.whole),
                    last_row: current.and_then(|w| w.last_row),
                }
            });
            let duplicate = match task.link.row_index {
                None => std::mem::replace(&mut mark.whole, true),
                Some(row) if mark.last_row.is_some_and(|last| row <= last) => true,
                Some(row) => {
                    mark.last_row = Some(row);
                    false
                }
            };
            if !duplicate {
                mark.tasks += 1;
                fresh.push(task);
            }
        }
        for task in &fresh {
            serde_json::to_writer(&mut buffer, &self.line(task))
                .map_err(|e| Error::backend("writing a task as JSON", e))?;
            buffer.push(b'\n');
        }
        let writer = state
            .writer
            .as_mut()
            .ok_or_else(|| Error::backend("writing tasks", "the output is closed"))?;
        if let Err(err) = writer.write_all(&buffer) {
            let message = err.to_string();
            state.error = Some(message.clone());
            return Err(Error::backend("writing tasks", message));
        }
        for (key, mark) in marks {
            state.keys.insert(key.to_string(), mark);
        }
        let created = fresh.len() as u64;
        state.tasks += created;
        drop(state);
        if let Some(on_written) = &self.on_written {
            on_written(created);
        }
        Ok(created)
    }
}

/// A file being written beside its destination: renamed over it by
/// [`PartialFile::commit`], deleted when dropped before.
#[derive(Debug)]
struct PartialFile {
    temp: PathBuf,
    destination: PathBuf,
    committed: bool,
}

impl PartialFile {
    fn create(destination: &Path) -> std::io::Result<(File, Self)> {
        let dir = match destination.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = destination
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Hidden, unique and in the destination's folder, so the rename
        // stays on one file system and is atomic. `create_new` never opens
        // someone else's file; its mode is any new file's (umask applies).
        let temp = dir.join(format!(".{name}.{}.partial", uuid::Uuid::new_v4().simple()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok((
            file,
            Self {
                temp,
                destination: destination.to_path_buf(),
                committed: false,
            },
        ))
    }

    fn commit(mut self) -> std::io::Result<()> {
        std::fs::rename(&self.temp, &self.destination)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A task whose data records its row, so the output shows which row
    /// each line came from.
    fn new_task(key: &str, row: Option<i64>) -> NewTask {
        crate::memory::new_task(key, row, json!({ "row": row }))
    }

    fn read_rows(path: &Path) -> Vec<(String, Value)> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        let mut rows: Vec<(String, Value)> = text
            .lines()
            .map(|line| {
                let line: Value = serde_json::from_str(line).unwrap();
                (
                    line["meta"]["storage_key"].as_str().unwrap().to_string(),
                    line["data"]["row"].clone(),
                )
            })
            .collect();
        rows.sort_by_key(|(key, row)| (key.clone(), row.as_i64()));
        rows
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn the_sink_writes_each_task_once_and_hides_unfinished_objects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sink.jsonl");
        let counted = Arc::new(AtomicU64::new(0));
        let seen = counted.clone();
        let sink = JsonlSink::create(&path)
            .unwrap()
            .with_on_written(Box::new(move |n| {
                seen.fetch_add(n, Ordering::Relaxed);
            }));
        let keys = vec!["k".to_string(), "whole".to_string(), "big".to_string()];

        let first = [
            new_task("k", Some(0)),
            new_task("k", Some(1)),
            new_task("whole", None),
        ];
        assert_eq!(sink.create_tasks(1, 1, first.to_vec()).await.unwrap(), 3);
        // A re-read of the same objects: only the new row is written.
        let again = [
            new_task("k", Some(0)),
            new_task("k", Some(1)),
            new_task("k", Some(2)),
            new_task("whole", None),
        ];
        assert_eq!(sink.create_tasks(1, 1, again.to_vec()).await.unwrap(), 1);
        sink.begin_object(1, "big").await.unwrap();
        assert_eq!(
            sink.create_tasks(1, 1, vec![new_task("big", Some(0))])
                .await
                .unwrap(),
            1
        );
        let linked = sink.linked_keys(1, &keys).await.unwrap();
        assert_eq!(
            linked,
            HashMap::from([("k".to_string(), 3), ("whole".to_string(), 1)])
        );
        sink.finish_object(1, "big").await.unwrap();
        let linked = sink.linked_keys(1, &keys).await.unwrap();
        assert_eq!(linked.get("big"), Some(&1));
        assert_eq!(sink.written(), 5);
        assert_eq!(counted.load(Ordering::Relaxed), 5);
        assert!(!path.exists(), "nothing in place before finish");
        sink.finish().unwrap();

        assert_eq!(
            read_rows(&path),
            vec![
                ("big".into(), json!(0)),
                ("k".into(), json!(0)),
                ("k".into(), json!(1)),
                ("k".into(), json!(2)),
                ("whole".into(), Value::Null),
            ]
        );
        assert_eq!(entries(dir.path()), vec!["sink.jsonl"], "no temporary file");
        assert!(sink
            .create_tasks(1, 1, vec![new_task("late", None)])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn an_unfinished_sink_leaves_the_previous_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "previous\n").unwrap();
        let sink = JsonlSink::create(&path).unwrap();
        sink.create_tasks(1, 1, vec![new_task("k", None)])
            .await
            .unwrap();
        assert_eq!(entries(dir.path()).len(), 2, "the temporary file beside it");
        drop(sink);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous\n");
        assert_eq!(entries(dir.path()), vec!["out.jsonl"]);
    }

    #[tokio::test]
    async fn lines_follow_label_studio_import_format() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink =
            JsonlSink::new(Box::new(Shared(buffer.clone()))).with_data_key(Some("image".into()));
        let mut file = new_task("a.jpg", None);
        file.data = Map::from_iter([(
            crate::import::UNDEFINED_DATA_KEY.to_string(),
            json!("s3://b/a.jpg"),
        )])
        .into();
        let mut row = new_task("t.json", Some(1));
        row.annotations = vec![json!({"result": []})];
        row.predictions = vec![json!({"score": 0.5})];
        row.allow_skip = false;
        sink.create_tasks(1, 1, vec![file, row]).await.unwrap();
        sink.finish().unwrap();
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"data":{"image":"s3://b/a.jpg"},"meta":{"storage_key":"a.jpg"}}"#,
                "\n",
                r#"{"data":{"row":1},"annotations":[{"result":[]}],"predictions":[{"score":0.5}],"allow_skip":false,"meta":{"storage_key":"t.json","row_index":1}}"#,
                "\n",
            )
        );
    }
}

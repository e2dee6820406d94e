//! Parquet task files (Tasks mode): one task per row, read row group by
//! row group with range reads, so a file of any size costs the memory of
//! one row group's column chunks (as stored, compressed) and a batch of
//! tasks.
//!
//! A row becomes a JSON object, column by column: a struct an object, a
//! list an array, a map an object, null null, a timestamp an RFC 3339 UTC
//! string, a date `YYYY-MM-DD`, a decimal a string, binary base64. That
//! object is then a payload as in the JSON formats
//! ([`crate::parse::interpret`]): with a `data` column it is a wrapper with
//! `annotations`, `predictions` and `allow_skip`, otherwise the row is the
//! task data. Writers without nested
//! types store those columns as JSON text; a `data` string holding a JSON
//! object and `annotations` / `predictions` strings holding a JSON array
//! are read as that JSON.
//!
//! A task's row index is its 0-based row in the file (unique in the file,
//! as the dedupe of links needs); its row group is recorded beside it, as
//! Label Studio's `row_group` / `row_index` link columns hold them.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::{ChunkReader, Length, RowGroupReader};
use parquet::file::serialized_reader::SerializedRowGroupReader;
use parquet::record::{Field, Row};
use serde_json::Value;

use crate::parse::{interpret, ParsedTask, MAX_REPORTED_PROBLEMS};
use crate::{Error, Result};

/// The magic bytes that open and close a Parquet file.
const MAGIC: &[u8; 4] = b"PAR1";
/// The magic of a file whose footer is encrypted.
const ENCRYPTED_MAGIC: &[u8; 4] = b"PARE";
/// The end of the file fetched first: most footers fit, so most files cost
/// one request for their metadata.
const FOOTER_PREFETCH: u64 = 64 * 1024;
/// A larger footer is refused rather than read: real ones are kilobytes to
/// a few megabytes, and a hostile length must not size an allocation.
const MAX_FOOTER_BYTES: u64 = 64 * 1024 * 1024;

/// Whether `key` names a Parquet file: its extension, case-insensitive, as
/// Label Studio decides the format.
pub fn is_parquet(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && ext.eq_ignore_ascii_case("parquet"))
}

/// One row group of a file: where its rows are in the file's row numbers
/// and where its column chunks are in the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroupSpan {
    /// Its position in the file (Label Studio's `row_group`).
    pub index: usize,
    /// The file's row number of its first row.
    pub first_row: i64,
    /// Its number of rows.
    pub rows: i64,
    /// The bytes of its column chunks, one range read.
    pub bytes: Range<u64>,
}

impl RowGroupSpan {
    /// The file's row numbers of its rows.
    pub fn row_numbers(&self) -> std::ops::RangeInclusive<i64> {
        self.first_row..=self.first_row + self.rows - 1
    }
}

/// The metadata (footer) of the Parquet file at `location`, `size` bytes
/// long, read with one or two range reads. A file that is not Parquet or
/// whose footer is damaged is an [`Error::InvalidTaskFile`] naming `key`.
pub async fn read_metadata(
    store: &dyn ObjectStore,
    location: &Path,
    size: u64,
    key: &str,
) -> Result<Arc<ParquetMetaData>> {
    let read = |range: Range<u64>| async move {
        store
            .get_range(location, range)
            .await
            .map_err(|err| Error::from_object_store(format!("reading task file \"{key}\""), err))
    };
    if size < 12 {
        return Err(invalid(
            key,
            format!("{size} bytes is too small for a Parquet file"),
        ));
    }
    let tail_start = size.saturating_sub(FOOTER_PREFETCH);
    let tail = read(tail_start..size).await?;
    let Some(trailer) = tail.len().checked_sub(8).map(|at| &tail[at..]) else {
        return Err(invalid(
            key,
            "the store returned fewer bytes than it listed",
        ));
    };
    if &trailer[4..] == ENCRYPTED_MAGIC {
        return Err(invalid(key, "encrypted Parquet files are not supported"));
    }
    if &trailer[4..] != MAGIC {
        return Err(invalid(
            key,
            "not a Parquet file (it does not end with the PAR1 magic bytes)",
        ));
    }
    let footer_len = u64::from(u32::from_le_bytes([
        trailer[0], trailer[1], trailer[2], trailer[3],
    ]));
    if footer_len > MAX_FOOTER_BYTES {
        return Err(invalid(
            key,
            format!("its footer claims {footer_len} bytes, above the limit of {MAX_FOOTER_BYTES}"),
        ));
    }
    let footer_start = size
        .checked_sub(8 + footer_len)
        .filter(|start| *start >= 4)
        .ok_or_else(|| {
            invalid(
                key,
                format!("its footer claims {footer_len} bytes, more than the file holds"),
            )
        })?;
    let footer = if footer_start >= tail_start {
        let at = usize::try_from(footer_start - tail_start).unwrap_or(usize::MAX);
        tail.slice(at..tail.len() - 8)
    } else {
        read(footer_start..size - 8).await?
    };
    // The decoder reads hostile bytes: a panic in it is this file's
    // failure, not the sync's.
    let decoded = std::panic::catch_unwind(|| ParquetMetaDataReader::decode_metadata(&footer))
        .map_err(|_| invalid(key, "its footer cannot be read (the Parquet reader failed)"))?;
    let metadata =
        decoded.map_err(|err| invalid(key, format!("its footer cannot be read: {err}")))?;
    Ok(Arc::new(metadata))
}

/// The row groups of a file `size` bytes long, in order. Column chunks
/// outside the file are an [`Error::InvalidTaskFile`] naming `key`.
pub fn row_groups(key: &str, metadata: &ParquetMetaData, size: u64) -> Result<Vec<RowGroupSpan>> {
    let mut first_row = 0i64;
    let mut spans = Vec::with_capacity(metadata.num_row_groups());
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let (start, end) = group
            .columns()
            .iter()
            .map(|column| {
                let (start, len) = column.byte_range();
                (start, start.saturating_add(len))
            })
            .fold((u64::MAX, 0), |(lo, hi), (start, end)| {
                (lo.min(start), hi.max(end))
            });
        let rows = group.num_rows();
        if rows < 0 || (rows > 0 && (start >= end || end > size)) {
            return Err(invalid(
                key,
                format!("row group {index} lies outside the file's {size} bytes"),
            ));
        }
        spans.push(RowGroupSpan {
            index,
            first_row,
            rows,
            bytes: start.min(end)..end,
        });
        first_row = first_row.checked_add(rows).ok_or_else(|| {
            invalid(
                key,
                format!("row group {index} claims {rows} rows, more than a file holds"),
            )
        })?;
    }
    Ok(spans)
}

/// Bad rows of a file: the first few with their reasons, all counted.
#[derive(Debug, Default)]
pub struct RowProblems {
    /// The first [`MAX_REPORTED_PROBLEMS`] bad rows, each naming its row.
    pub reported: Vec<Error>,
    /// Bad rows, reported or not.
    pub rejected: u64,
}

impl RowProblems {
    /// Adds the bad rows of a later row group.
    pub fn merge(&mut self, later: RowProblems) {
        self.rejected += later.rejected;
        let room = MAX_REPORTED_PROBLEMS.saturating_sub(self.reported.len());
        self.reported.extend(later.reported.into_iter().take(room));
    }

    fn reject(&mut self, err: Error) {
        self.rejected += 1;
        if self.reported.len() < MAX_REPORTED_PROBLEMS {
            self.reported.push(err);
        }
    }
}

/// Decodes the rows of `group` from `bytes` (its column chunks, read from
/// the file at `group.bytes`) into tasks, handed to `send` in batches of
/// `batch_size`; `send` returns false to stop. Bad rows are skipped into
/// `problems`. A damaged column chunk ends the row group with an
/// [`Error::InvalidTaskFile`]; the batches before it were sent.
///
/// CPU-bound: run it on a blocking thread.
pub fn decode_row_group(
    key: &str,
    metadata: &ParquetMetaData,
    group: &RowGroupSpan,
    bytes: Bytes,
    batch_size: usize,
    problems: &mut RowProblems,
    mut send: impl FnMut(Vec<ParsedTask>) -> bool,
) -> Result<()> {
    let damaged = |err: ParquetError| {
        invalid(
            key,
            format!("row group {} cannot be read: {err}", group.index),
        )
    };
    let chunks = Arc::new(ColumnChunks {
        offset: group.bytes.start,
        bytes,
    });
    let reader = SerializedRowGroupReader::new(
        chunks,
        metadata.row_group(group.index),
        None,
        Arc::new(ReaderProperties::builder().build()),
    )
    .map_err(damaged)?;
    let batch_size = batch_size.max(1);
    let mut tasks = Vec::with_capacity(batch_size);
    for (row_index, row) in (group.first_row..).zip(reader.get_row_iter(None).map_err(damaged)?) {
        let row = row.map_err(damaged)?;
        match interpret(json_columns_read(row_json(&row)), Some(row_index)) {
            Ok(task) => tasks.push(task),
            Err(reason) => problems.reject(invalid(key, format!("row {row_index}: {reason}"))),
        }
        if tasks.len() >= batch_size
            && !send(std::mem::replace(
                &mut tasks,
                Vec::with_capacity(batch_size),
            ))
        {
            return Ok(());
        }
    }
    if !tasks.is_empty() {
        send(tasks);
    }
    Ok(())
}

/// A row as a JSON object, column by column.
fn row_json(row: &Row) -> Value {
    Value::Object(
        row.get_column_iter()
            .map(|(name, field)| (name.clone(), field_json(field)))
            .collect(),
    )
}

/// A value as JSON. Groups, lists and maps recurse here; timestamps and
/// dates are written here (the parquet crate's own conversion panics on
/// values out of chrono's range, and writes timestamps in no standard
/// format); other leaves as the parquet crate writes them.
fn field_json(field: &Field) -> Value {
    use chrono::{DateTime, NaiveDate, SecondsFormat};
    let timestamp = |at: Option<DateTime<chrono::Utc>>, raw: i64| {
        at.map_or(raw.into(), |at| {
            at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into()
        })
    };
    match field {
        Field::Group(row) => row_json(row),
        Field::ListInternal(list) => list.elements().iter().map(field_json).collect(),
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(key, value)| {
                    let key = match field_json(key) {
                        Value::String(key) => key,
                        other => other.to_string(),
                    };
                    (key, field_json(value))
                })
                .collect(),
        ),
        Field::TimestampMillis(millis) => {
            timestamp(DateTime::from_timestamp_millis(*millis), *millis)
        }
        Field::TimestampMicros(micros) => {
            timestamp(DateTime::from_timestamp_micros(*micros), *micros)
        }
        Field::Date(days) => NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
            .map_or((*days).into(), |day| day.to_string().into()),
        leaf => leaf.to_json_value(),
    }
}

/// Reads the JSON text of `data` (an object), `annotations` and
/// `predictions` (arrays) columns as JSON; anything else stays as it is.
fn json_columns_read(mut row: Value) -> Value {
    if let Some(columns) = row.as_object_mut() {
        for (name, wanted) in [
            ("data", Value::is_object as fn(&Value) -> bool),
            ("annotations", Value::is_array),
            ("predictions", Value::is_array),
        ] {
            let parsed = match columns.get(name) {
                Some(Value::String(text)) => serde_json::from_str::<Value>(text).ok(),
                _ => None,
            };
            if let Some(parsed) = parsed.filter(wanted) {
                columns.insert(name.to_string(), parsed);
            }
        }
    }
    row
}

/// What is wrong with the Parquet file `key`, reported as that file's
/// failure.
pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidTaskFile {
        key: key.to_string(),
        line: None,
        reason: reason.into(),
    }
}

/// The column chunks of one row group, read in one range from `offset` of
/// the file: what the row group reader asks for, by file offsets.
struct ColumnChunks {
    offset: u64,
    bytes: Bytes,
}

impl ColumnChunks {
    fn slice(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        start
            .checked_sub(self.offset)
            .and_then(|at| usize::try_from(at).ok())
            .filter(|at| {
                at.checked_add(length)
                    .is_some_and(|end| end <= self.bytes.len())
            })
            .map(|at| self.bytes.slice(at..at + length))
            .ok_or_else(|| {
                ParquetError::EOF(format!(
                    "bytes {start}..{} lie outside the row group's column chunks",
                    start.saturating_add(length as u64)
                ))
            })
    }
}

impl Length for ColumnChunks {
    fn len(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

impl ChunkReader for ColumnChunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let rest = (self.len().saturating_sub(start)) as usize;
        Ok(self.slice(start, rest)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_files_are_known_by_their_extension() {
        assert!(is_parquet("a/tasks.parquet"));
        assert!(is_parquet("TASKS.PARQUET"));
        assert!(!is_parquet("a.parquet/tasks.json"));
        assert!(!is_parquet(".parquet"));
        assert!(!is_parquet("tasks.jsonl"));
    }

    #[test]
    fn json_text_columns_are_read_as_json_when_they_hold_the_right_kind() {
        let row = serde_json::json!({
            "data": "{\"text\": \"a\"}",
            "annotations": "[{\"result\": []}]",
            "predictions": "not json",
            "other": "{\"kept\": \"as text\"}",
        });
        assert_eq!(
            json_columns_read(row),
            serde_json::json!({
                "data": {"text": "a"},
                "annotations": [{"result": []}],
                "predictions": "not json",
                "other": "{\"kept\": \"as text\"}",
            })
        );
        let text_data = serde_json::json!({"data": "[1, 2]"});
        assert_eq!(json_columns_read(text_data.clone()), text_data);
    }

    #[test]
    fn bad_rows_of_many_row_groups_are_reported_up_to_the_bound_and_all_counted() {
        let mut file = RowProblems::default();
        for _ in 0..3 {
            let mut group = RowProblems::default();
            for row in 0..60 {
                group.reject(invalid("k", format!("row {row}")));
            }
            file.merge(group);
        }
        assert_eq!(file.rejected, 180);
        assert_eq!(file.reported.len(), MAX_REPORTED_PROBLEMS);
    }

    #[test]
    fn column_chunks_answer_only_inside_their_range() {
        let chunks = ColumnChunks {
            offset: 100,
            bytes: Bytes::from_static(b"0123456789"),
        };
        assert_eq!(
            chunks.get_bytes(102, 3).unwrap(),
            Bytes::from_static(b"234")
        );
        assert_eq!(chunks.len(), 110);
        assert!(chunks.get_bytes(99, 2).is_err());
        assert!(chunks.get_bytes(108, 3).is_err());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut chunks.get_read(105).unwrap(), &mut rest).unwrap();
        assert_eq!(rest, "56789");
    }
}

//! Turning the bytes of a task file into task payloads (Tasks mode).
//!
//! Accepted, decided by the first non-blank byte: one JSON object, a JSON
//! array of objects, or JSON Lines (one object per line, blank lines
//! skipped). Each payload is either a bare data object or a `{"data": ...}`
//! wrapper with optional `annotations`, `predictions` and `allow_skip`.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::task_data::TaskData;
use crate::{Error, Result};

/// One task read from a task file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedTask {
    /// The task data.
    pub data: TaskData,
    /// Annotations carried in the file.
    pub annotations: Vec<Value>,
    /// Predictions carried in the file.
    pub predictions: Vec<Value>,
    /// Whether annotators may skip the task (default true).
    pub allow_skip: bool,
    /// Position in an array or line number (0-based) in JSONL; `None` for a
    /// file that holds a single object.
    pub row_index: Option<i64>,
}

/// Extensions that Tasks mode reads; other extensions abort the sync, as in
/// Label Studio, because they mean the storage is in the wrong mode.
pub const TASK_FILE_EXTENSIONS: &[&str] = &["json", "jsonl", "parquet"];

/// Checks that `key` may hold tasks: no extension, or a task-file extension.
pub fn check_task_file_extension(key: &str) -> Result<()> {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !TASK_FILE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) =>
        {
            Err(Error::invalid_general(format!(
                "File \"{key}\" is not a JSON/JSONL/Parquet file. Only .json, .jsonl, and .parquet files can be processed.\n\
                 If you're trying to import non-JSON data (images, audio, text, etc.), edit storage settings and enable \"Files\" import method (use_blob_urls=true)"
            )))
        }
        _ => Ok(()),
    }
}

/// Parses a whole task file held in memory (see [`TaskParser`] for files
/// read piece by piece). Strict: the first bad task is the error (imports
/// use [`TaskParser`], which skips bad tasks and reports each).
///
/// ```
/// let tasks = storage_core::parse::parse_tasks("t.jsonl", b"{\"text\":\"a\"}\n\n{\"text\":\"b\"}\n").unwrap();
/// assert_eq!(tasks.len(), 2);
/// assert_eq!(tasks[1].row_index, Some(2));
/// ```
pub fn parse_tasks(key: &str, bytes: &[u8]) -> Result<Vec<ParsedTask>> {
    let mut parser = TaskParser::new(key, usize::MAX);
    let mut tasks = Vec::new();
    let pushed = parser.push(bytes, &mut tasks);
    let finished = pushed.and_then(|()| parser.finish(&mut tasks));
    match parser.take_problems().into_iter().next() {
        Some(first) => Err(first),
        None => finished.map(|()| tasks),
    }
}

/// Bad tasks of one file kept with their messages; more are only counted,
/// so a file of millions of bad lines costs no more memory than this.
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// An incremental task-file parser: bytes go in as they arrive, tasks come
/// out as soon as each one is complete, so a file of any size is read with
/// the memory of one task.
///
/// The format is decided by the first non-blank byte, as [`parse_tasks`]
/// documents. In JSON Lines each task starts on its own line (a task may
/// span lines); the row index of a task is the 0-based line it starts on,
/// or its position in an array. A file holding one object gives one task
/// without a row index.
///
/// A bad task (invalid JSON, not an object, larger than the limit, two on
/// one line, a Label Studio payload error) is skipped and reported with its
/// line ([`TaskParser::take_problems`]); the tasks around it are read as
/// usual, whatever the size of the file or of the pieces. Only what ends
/// the file early (it is empty, cut inside a task or before its array is
/// closed, or has text after its array) is an error of [`TaskParser::push`]
/// or [`TaskParser::finish`]; the tasks before it were already handed out.
///
/// ```
/// use storage_core::parse::TaskParser;
///
/// let mut parser = TaskParser::new("big.json", 1 << 20);
/// let mut tasks = Vec::new();
/// parser.push(b"[{\"text\": \"a\"}, {\"te", &mut tasks).unwrap();
/// assert_eq!(tasks.len(), 1);
/// parser.push(b"xt\": \"b\"}]", &mut tasks).unwrap();
/// parser.finish(&mut tasks).unwrap();
/// assert_eq!(tasks[1].row_index, Some(1));
/// ```
#[derive(Debug)]
pub struct TaskParser {
    key: String,
    max_task_bytes: usize,
    layout: Layout,
    /// Bytes seen, for the byte-order mark at the very start.
    offset: usize,
    /// 1-based line of the byte being read.
    line: usize,
    /// The object being read, from its `{`.
    value: Vec<u8>,
    value_line: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Array items seen so far.
    items: i64,
    /// Line on which the last JSON Lines object ended.
    last_end_line: usize,
    /// The first object of a `{`-file waits until it is known whether the
    /// file holds one object (no row index) or JSON Lines.
    first: Option<(Interpreted, usize)>,
    /// The object being read is over the limit: followed, not kept.
    oversized: bool,
    /// Bytes being skipped after a bad task.
    skip: Skip,
    /// The first [`MAX_REPORTED_PROBLEMS`] bad tasks.
    problems: Vec<Error>,
    /// Bad tasks met, reported or not.
    rejected: u64,
    /// JSON Lines: nothing but blanks read yet on this line of an object.
    line_start: bool,
    /// The last byte outside strings of the object being read.
    last_byte: u8,
    /// Why the JSON Lines object being read cannot be a task: a line ended
    /// inside one of its strings, or the next line's task began.
    broken: Option<&'static str>,
}

/// What the parser skips after a bad task, to find the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    /// JSON Lines: the rest of the line.
    Line,
    /// An array item that is not an object: up to the `,` or `]` that ends
    /// it, following strings and nesting.
    Item {
        depth: usize,
        in_string: bool,
        escaped: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Undecided,
    /// Inside `[`: expecting an item (`after_comma`: one must follow).
    ArrayItem {
        after_comma: bool,
    },
    /// After an item: expecting `,` or `]`.
    ArrayNext,
    ArrayClosed,
    Lines,
}

impl TaskParser {
    /// A parser for the file `key` (named in errors) that refuses tasks
    /// larger than `max_task_bytes`.
    pub fn new(key: &str, max_task_bytes: usize) -> Self {
        Self {
            key: key.to_string(),
            max_task_bytes,
            layout: Layout::Undecided,
            offset: 0,
            line: 1,
            value: Vec::new(),
            value_line: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            items: 0,
            last_end_line: 0,
            first: None,
            oversized: false,
            skip: Skip::Nothing,
            problems: Vec::new(),
            rejected: 0,
            line_start: false,
            last_byte: 0,
            broken: None,
        }
    }

    /// The bad tasks reported since the last call (at most
    /// [`MAX_REPORTED_PROBLEMS`] of a file), in file order; each an
    /// [`Error::InvalidTaskFile`] naming the key and line.
    pub fn take_problems(&mut self) -> Vec<Error> {
        std::mem::take(&mut self.problems)
    }

    /// Bad tasks of the file so far, the unreported ones included.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Records a bad task.
    fn problem(&mut self, line: Option<usize>, reason: String) {
        self.rejected += 1;
        if self.rejected <= MAX_REPORTED_PROBLEMS as u64 {
            let err = self.error(line, reason);
            self.problems.push(err);
        }
    }

    /// A bad task of a `{`-file: the file is JSON Lines, so a first object
    /// still waiting is a line task now.
    fn line_problem(&mut self, line: usize, reason: String, tasks: &mut Vec<ParsedTask>) {
        if let Some((first, first_line)) = self.first.take() {
            self.push_line_task(first, first_line, tasks);
        }
        self.items += 1;
        self.problem(Some(line), reason);
    }

    fn push_line_task(&mut self, item: Interpreted, line: usize, tasks: &mut Vec<ParsedTask>) {
        match item {
            Ok(task) => tasks.push(task.at(Some(line as i64 - 1))),
            Err(reason) => self.problem(Some(line), reason),
        }
    }

    /// Follows a skipped array item through `byte`; true when `byte` ends
    /// it (a `,` or `]` outside it, not consumed).
    fn skip_item(&mut self, byte: u8) -> bool {
        let Skip::Item {
            depth,
            in_string,
            escaped,
        } = &mut self.skip
        else {
            return false;
        };
        if *in_string {
            if *escaped {
                *escaped = false;
            } else if byte == b'\\' {
                *escaped = true;
            } else if byte == b'"' {
                *in_string = false;
            }
            return false;
        }
        match byte {
            b'"' => *in_string = true,
            b'[' | b'{' => *depth += 1,
            b',' | b']' if *depth == 0 => return true,
            b']' | b'}' => *depth = depth.saturating_sub(1),
            _ => {}
        }
        false
    }

    /// Reads the next piece of the file, appending the tasks it completes.
    pub fn push(&mut self, bytes: &[u8], tasks: &mut Vec<ParsedTask>) -> Result<()> {
        let mut bytes = bytes;
        // A byte-order mark may open the file (split across pieces, even).
        while self.offset < BOM.len() {
            let Some((&byte, tail)) = bytes.split_first() else {
                return Ok(());
            };
            if byte != BOM[self.offset] {
                self.offset = BOM.len();
                break;
            }
            self.offset += 1;
            bytes = tail;
        }
        let mut rest = bytes;
        while let Some((&byte, tail)) = rest.split_first() {
            if self.depth > 0 {
                // Inside an object: copy up to the byte that may close it.
                let taken = self.scan_object(rest);
                if !self.oversized {
                    self.value.extend_from_slice(&rest[..taken]);
                    if self.value.len() > self.max_task_bytes {
                        // Followed to its end, never held.
                        self.oversized = true;
                        self.value = Vec::new();
                    }
                }
                rest = &rest[taken..];
                if let Some(reason) = self.broken.take() {
                    // The lines after a broken task are read as usual.
                    self.depth = 0;
                    self.in_string = false;
                    self.escaped = false;
                    self.value = Vec::new();
                    self.line_problem(self.value_line, reason.into(), tasks);
                } else if self.depth == 0 {
                    self.complete(tasks);
                }
                continue;
            }
            match self.skip {
                Skip::Nothing => {}
                Skip::Line => {
                    rest = tail;
                    if byte == b'\n' {
                        self.line += 1;
                        self.skip = Skip::Nothing;
                    }
                    continue;
                }
                Skip::Item { .. } => {
                    if self.skip_item(byte) {
                        self.skip = Skip::Nothing;
                        self.layout = Layout::ArrayNext;
                    } else {
                        rest = tail;
                        if byte == b'\n' {
                            self.line += 1;
                        }
                        continue;
                    }
                }
            }
            rest = tail;
            if byte == b'\n' {
                self.line += 1;
                continue;
            }
            if byte.is_ascii_whitespace() {
                continue;
            }
            self.structural(byte, tasks)?;
        }
        Ok(())
    }

    /// Ends the file: checks that it was whole and emits the last task.
    pub fn finish(&mut self, tasks: &mut Vec<ParsedTask>) -> Result<()> {
        if self.depth > 0 {
            if let Some((first, first_line)) = self.first.take() {
                // A second object began: the file is JSON Lines.
                self.push_line_task(first, first_line, tasks);
            }
            return Err(self.error(
                Some(self.value_line),
                "invalid JSON: the file ends inside a task".into(),
            ));
        }
        match self.layout {
            Layout::Undecided => Err(self.error(None, "the file is empty".into())),
            Layout::ArrayItem { .. } | Layout::ArrayNext => Err(self.error(
                Some(self.line),
                "invalid JSON: the file ends before the array is closed".into(),
            )),
            Layout::ArrayClosed => Ok(()),
            Layout::Lines => {
                if let Some((item, _)) = self.first.take() {
                    match item {
                        Ok(task) => tasks.push(task.at(None)),
                        Err(reason) => self.problem(None, reason),
                    }
                }
                Ok(())
            }
        }
    }

    /// Handles a non-blank byte outside any object.
    fn structural(&mut self, byte: u8, tasks: &mut Vec<ParsedTask>) -> Result<()> {
        match (self.layout, byte) {
            (Layout::Undecided, b'[') => self.layout = Layout::ArrayItem { after_comma: false },
            (Layout::Undecided, b'{') => {
                self.layout = Layout::Lines;
                self.open();
            }
            (Layout::Undecided, _) => {
                // Read as JSON Lines from here: a bad first line must not
                // cost the valid lines after it.
                self.layout = Layout::Lines;
                self.skip = Skip::Line;
                self.line_problem(
                    self.line,
                    "Can't import JSON-formatted tasks: expected a JSON object, a JSON array or JSON Lines"
                        .into(),
                    tasks,
                );
            }
            (Layout::ArrayItem { .. }, b'{') => self.open(),
            (Layout::ArrayItem { after_comma: false }, b']') => self.layout = Layout::ArrayClosed,
            (Layout::ArrayItem { .. }, b']') => {
                self.problem(
                    Some(self.line),
                    "invalid JSON: trailing comma in the array".into(),
                );
                self.layout = Layout::ArrayClosed;
            }
            (Layout::ArrayItem { .. }, other) => {
                let index = self.items;
                self.items += 1;
                self.problem(
                    Some(self.line),
                    format!(
                        "item {index}: a task must be a JSON object, found {}",
                        starting_with(other)
                    ),
                );
                if other == b',' {
                    // An empty item: the comma is its end.
                    self.layout = Layout::ArrayItem { after_comma: true };
                } else {
                    self.skip = Skip::Item {
                        depth: 0,
                        in_string: false,
                        escaped: false,
                    };
                    self.skip_item(other);
                }
            }
            (Layout::ArrayNext, b',') => self.layout = Layout::ArrayItem { after_comma: true },
            (Layout::ArrayNext, b']') => self.layout = Layout::ArrayClosed,
            (Layout::ArrayNext, _) => {
                self.problem(
                    Some(self.line),
                    format!(
                        "invalid JSON: unexpected '{}' after an array item",
                        char::from(byte).escape_default()
                    ),
                );
                self.skip = Skip::Item {
                    depth: 0,
                    in_string: false,
                    escaped: false,
                };
                self.skip_item(byte);
            }
            (Layout::ArrayClosed, _) => {
                return Err(self.error(
                    Some(self.line),
                    format!(
                        "invalid JSON: unexpected '{}' after the array",
                        char::from(byte).escape_default()
                    ),
                ))
            }
            (Layout::Lines, b'{') if self.line > self.last_end_line => self.open(),
            (Layout::Lines, b'{') => {
                self.skip = Skip::Line;
                self.line_problem(
                    self.line,
                    "invalid JSON: one task per line expected".into(),
                    tasks,
                );
            }
            (Layout::Lines, other) => {
                self.skip = Skip::Line;
                self.line_problem(
                    self.line,
                    format!(
                        "a task must be a JSON object, found {}",
                        starting_with(other)
                    ),
                    tasks,
                );
            }
        }
        Ok(())
    }

    fn open(&mut self) {
        self.oversized = false;
        self.line_start = false;
        self.last_byte = b'{';
        self.value.clear();
        self.value.push(b'{');
        self.value_line = self.line;
        self.depth = 1;
    }

    /// Follows strings and nesting through `bytes` (inside an object) and
    /// returns how many belong to it: all, or up to its closing brace.
    ///
    /// In JSON Lines an object that cannot go on is ended early (and
    /// [`Self::broken`] says why), so that one bad line never swallows the
    /// lines after it: a line ending inside a string (JSON strings hold no
    /// raw line breaks), or a line opening with `{` where no value may
    /// start (after `:`, `,`, `[` or `{` one may: pretty-printed tasks).
    fn scan_object(&mut self, bytes: &[u8]) -> usize {
        let lines = self.layout == Layout::Lines;
        for (at, &byte) in bytes.iter().enumerate() {
            if byte == b'\n' {
                self.line += 1;
                self.line_start = true;
                if lines && self.in_string {
                    self.broken = Some("invalid JSON: the line ends inside a string");
                    return at + 1;
                }
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            if byte.is_ascii_whitespace() {
                continue;
            }
            if lines
                && self.line_start
                && byte == b'{'
                && !matches!(self.last_byte, b':' | b',' | b'[' | b'{')
            {
                self.broken =
                    Some("invalid JSON: the task is not closed before the next line's task");
                return at;
            }
            self.line_start = false;
            self.last_byte = byte;
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return at + 1;
                    }
                }
                _ => {}
            }
        }
        bytes.len()
    }

    /// Turns the object just read into a task, or reports it.
    fn complete(&mut self, tasks: &mut Vec<ParsedTask>) {
        let item = if self.oversized {
            Err((
                self.value_line,
                format!(
                    "the task is larger than the limit of {} bytes",
                    self.max_task_bytes
                ),
            ))
        } else {
            let line = self.value_line;
            read_payload(std::mem::take(&mut self.value))
                .map_err(|(at, reason)| (line + at.saturating_sub(1), reason))
        };
        match self.layout {
            Layout::ArrayItem { .. } => {
                let index = self.items;
                self.items += 1;
                self.layout = Layout::ArrayNext;
                let line = self.value_line;
                match item.and_then(|item| item.map_err(|reason| (line, reason))) {
                    Ok(task) => tasks.push(task.at(Some(index))),
                    Err((line, reason)) => {
                        self.problem(Some(line), format!("item {index}: {reason}"))
                    }
                }
            }
            _ => {
                self.last_end_line = self.line;
                let line = self.value_line;
                match item {
                    Err((at, reason)) => self.line_problem(at, reason, tasks),
                    Ok(item) => {
                        if let Some((first, first_line)) = self.first.take() {
                            self.push_line_task(first, first_line, tasks);
                            self.push_line_task(item, line, tasks);
                        } else if self.items == 0 {
                            self.first = Some((item, line));
                        } else {
                            self.push_line_task(item, line, tasks);
                        }
                        self.items += 1;
                    }
                }
            }
        }
    }

    fn error(&self, line: Option<usize>, reason: String) -> Error {
        Error::InvalidTaskFile {
            key: self.key.clone(),
            line,
            reason,
        }
    }
}

const BOM: &[u8] = b"\xef\xbb\xbf";

/// What a JSON value starting with `byte` is, for error messages.
fn starting_with(byte: u8) -> &'static str {
    match byte {
        b'"' => "a string",
        b'[' => "an array",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "text that is not JSON",
    }
}

/// A task read from its payload, waiting for its row index (known only
/// once the file's layout is), or why the payload is not a task.
type Interpreted = std::result::Result<TaskBody, String>;

/// A task without its row index.
#[derive(Debug)]
struct TaskBody {
    data: TaskData,
    annotations: Vec<Value>,
    predictions: Vec<Value>,
    allow_skip: bool,
}

impl TaskBody {
    fn at(self, row_index: Option<i64>) -> ParsedTask {
        ParsedTask {
            data: self.data,
            annotations: self.annotations,
            predictions: self.predictions,
            allow_skip: self.allow_skip,
            row_index,
        }
    }
}

/// Interprets one payload as Label Studio does: a `{"data": {...}}` wrapper
/// with optional `annotations`, `predictions` and `allow_skip`, or else a
/// bare data object.
pub fn interpret(item: Value, row_index: Option<i64>) -> std::result::Result<ParsedTask, String> {
    if !item.is_object() {
        return Err(format!(
            "a task must be a JSON object, found {}",
            json_type(&item)
        ));
    }
    let text = serde_json::to_vec(&item).map_err(|err| err.to_string())?;
    drop(item);
    match read_payload(text) {
        Ok(task) => task.map(|task| task.at(row_index)),
        Err((_, reason)) => Err(reason),
    }
}

/// Reads the text of one JSON object as a task payload, keeping the data as
/// text: a bare data object is kept whole, without a copy, and a wrapper's
/// `data` is copied out of it. Invalid JSON is `Err` with the 1-based line
/// of the text where it is; a payload that is JSON but not a task is
/// `Ok(Err(reason))`.
fn read_payload(text: Vec<u8>) -> std::result::Result<Interpreted, (usize, String)> {
    let invalid = |line: usize, message: String| {
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_string();
        (line, format!("invalid JSON: {message}"))
    };
    let fields = serde_json::from_slice::<PayloadFields<'_>>(&text)
        .map_err(|err| invalid(err.line(), err.to_string()))?;
    let allow_skip = fields
        .allow_skip
        .and_then(|raw| serde_json::from_str::<bool>(raw.get()).ok())
        .unwrap_or(true);
    if let Some(data) = fields.data.filter(|raw| raw.get().starts_with('{')) {
        let wrapped = list(fields.annotations, "annotations").and_then(|annotations| {
            let data = compact_text(data.get().as_bytes().to_vec())
                .map_err(|_| "invalid JSON: invalid unicode code point".to_string())?;
            Ok(TaskBody {
                annotations,
                predictions: list(fields.predictions, "predictions")?,
                data: TaskData::from_checked(data),
                allow_skip,
            })
        });
        return Ok(wrapped);
    }
    // `data` that is not an object is ordinary task data.
    for (field, raw) in [
        ("annotations", fields.annotations),
        ("predictions", fields.predictions),
    ] {
        if raw.is_some_and(non_empty) {
            return Ok(Err(format!(
                "If you use \"{field}\" field in the task, you must put \"data\" field in the task too"
            )));
        }
    }
    // The parse above checked the JSON, but not the UTF-8 of the strings it
    // skipped.
    let text = compact_text(text)
        .map_err(|not_utf8| invalid(not_utf8.line, "invalid unicode code point".into()))?;
    Ok(Ok(TaskBody {
        data: TaskData::from_checked(text),
        annotations: Vec::new(),
        predictions: Vec::new(),
        allow_skip: true,
    }))
}

/// Where checked JSON text stops being UTF-8.
struct NotUtf8 {
    /// 1-based line of the first bad byte.
    line: usize,
}

/// Checked JSON text as a compact string ([`compact`]), or where it is not
/// UTF-8. Neither step copies the text.
fn compact_text(mut json: Vec<u8>) -> std::result::Result<String, NotUtf8> {
    if let Err(err) = std::str::from_utf8(&json) {
        let before = &json[..err.valid_up_to()];
        let line = 1 + before.iter().filter(|b| **b == b'\n').count();
        return Err(NotUtf8 { line });
    }
    compact(&mut json);
    // Removing ASCII bytes between tokens keeps UTF-8 text UTF-8.
    String::from_utf8(json).map_err(|_| NotUtf8 { line: 1 })
}

/// Removes, in place, the whitespace between the tokens of checked JSON
/// text (indentation, line breaks): the data is stored and sent as compact
/// as `serde_json` writes it, whatever the layout of the file.
fn compact(json: &mut Vec<u8>) {
    let mut kept = 0;
    let (mut in_string, mut escaped) = (false, false);
    for read in 0..json.len() {
        let byte = json[read];
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        } else if byte == b'"' {
            in_string = true;
        }
        json[kept] = byte;
        kept += 1;
    }
    json.truncate(kept);
}

/// The top-level fields of a payload that Label Studio reads, borrowed from
/// its text; the values of the other fields are checked and skipped. A
/// repeated field counts once, the last (as in a JSON object read by
/// Python or `serde_json::Value`).
#[derive(Default)]
struct PayloadFields<'a> {
    data: Option<&'a RawValue>,
    annotations: Option<&'a RawValue>,
    predictions: Option<&'a RawValue>,
    allow_skip: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum PayloadField {
    Data,
    Annotations,
    Predictions,
    AllowSkip,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for PayloadFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = PayloadFields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut fields = PayloadFields::default();
                while let Some(field) = map.next_key::<PayloadField>()? {
                    let slot = match field {
                        PayloadField::Data => &mut fields.data,
                        PayloadField::Annotations => &mut fields.annotations,
                        PayloadField::Predictions => &mut fields.predictions,
                        PayloadField::AllowSkip => &mut fields.allow_skip,
                        PayloadField::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// `annotations` or `predictions` of a wrapper: absent or null is none.
fn list(raw: Option<&RawValue>, field: &str) -> std::result::Result<Vec<Value>, String> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => Ok(Vec::new()),
        Ok(Value::Array(items)) => Ok(items),
        Ok(other) => Err(format!(
            "\"{field}\" must be a list, found {}",
            json_type(&other)
        )),
        Err(err) => Err(format!("\"{field}\": invalid JSON: {err}")),
    }
}

/// Whether a JSON value is something rather than nothing (not null, not an
/// empty array or object), read from its text.
fn non_empty(raw: &RawValue) -> bool {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => false,
        Some(b'[') => !text[1..].trim_start().starts_with(']'),
        Some(b'{') => !text[1..].trim_start().starts_with('}'),
        _ => true,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_object_is_one_bare_task() {
        let tasks = parse_tasks("a.json", br#"{"image": "x.jpg", "meta_note": "n"}"#).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            Value::Object(tasks[0].data.to_object()),
            json!({"image": "x.jpg", "meta_note": "n"})
        );
        assert_eq!(tasks[0].row_index, None);
        assert!(tasks[0].allow_skip);
    }

    #[test]
    fn array_items_get_their_index() {
        let tasks =
            parse_tasks("b.json", br#"[{"image": "1"}, {"data": {"image": "2"}}]"#).unwrap();
        assert_eq!(
            tasks.iter().map(|t| t.row_index).collect::<Vec<_>>(),
            vec![Some(0), Some(1)]
        );
        assert_eq!(tasks[1].data.to_object()["image"], "2");
    }

    #[test]
    fn data_wrapper_keeps_annotations_predictions_and_allow_skip() {
        let tasks = parse_tasks(
            "c.json",
            br#"{"data": {"image": "x"}, "predictions": [{"result": [], "score": 0.5}], "allow_skip": false, "id": 99}"#,
        )
        .unwrap();
        assert_eq!(tasks[0].predictions.len(), 1);
        assert!(tasks[0].annotations.is_empty());
        assert!(!tasks[0].allow_skip);
        assert_eq!(
            Value::Object(tasks[0].data.to_object()),
            json!({"image": "x"}),
            "other top-level keys dropped"
        );
    }

    #[test]
    fn jsonl_skips_blank_lines_and_reports_the_bad_line() {
        let tasks = parse_tasks("d.jsonl", b"{\"t\": 1}\n\n  \n{\"t\": 2}\n").unwrap();
        assert_eq!(
            tasks.iter().map(|t| t.row_index).collect::<Vec<_>>(),
            vec![Some(0), Some(3)]
        );
        let err = parse_tasks("e.jsonl", b"{\"t\": 1}\n{\"t\": 2}\n{\"t\": \n").unwrap_err();
        match err {
            Error::InvalidTaskFile { key, line, .. } => {
                assert_eq!(key, "e.jsonl");
                assert_eq!(line, Some(3));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"   ",
            b"not json",
            b"{\"a\": ",
            b"[1, 2]",
            b"[{\"a\": 1},",
            b"\"text\"",
            b"{\"annotations\": [{\"result\": []}]}",
            b"{\"data\": {}, \"predictions\": 5}",
            b"\xff\xfe{}",
        ] {
            let err = parse_tasks("bad.json", bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidTaskFile { .. }),
                "{bad:?} gave {err:?}"
            );
            assert!(err.to_string().starts_with("bad.json"), "{err}");
        }
    }

    #[test]
    fn annotations_without_data_is_refused_with_label_studio_message() {
        let err = parse_tasks(
            "f.json",
            br#"{"text": "x", "predictions": [{"result": []}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("you must put \"data\" field in the task too"),
            "{err}"
        );
    }

    #[test]
    fn pieces_of_any_size_give_the_same_tasks_as_the_whole_file() {
        let files: [&[u8]; 5] = [
            b"\xef\xbb\xbf[{\"a\": \"x]}\\\"{\"},\n {\"data\": {\"b\": [1, {\"c\": 2}]}}\n]",
            b"{\"t\": 1}\n\n{\"t\": \"}{\"}\n{\n \"t\": 3\n}\n",
            b"{\n  \"pretty\": true\n}\n",
            b"[]",
            b"{\"t\": 1}\n{\"t\": ",
        ];
        for file in files {
            let whole = parse_tasks("f.json", file);
            for size in 1..file.len() {
                let mut parser = TaskParser::new("f.json", usize::MAX);
                let mut tasks = Vec::new();
                let pieces = file
                    .chunks(size)
                    .try_for_each(|piece| parser.push(piece, &mut tasks))
                    .and_then(|()| parser.finish(&mut tasks))
                    .map(|()| tasks);
                assert_eq!(
                    format!("{pieces:?}"),
                    format!("{whole:?}"),
                    "{} in pieces of {size}",
                    String::from_utf8_lossy(file)
                );
            }
        }
        assert_eq!(
            parse_tasks("f.json", files[0]).unwrap()[0].data.to_object()["a"],
            "x]}\"{"
        );
        let rows: Vec<_> = parse_tasks("f.jsonl", files[1])
            .unwrap()
            .iter()
            .map(|t| t.row_index)
            .collect();
        assert_eq!(
            rows,
            vec![Some(0), Some(2), Some(3)],
            "a task may span lines; its row is its first line"
        );
        assert_eq!(parse_tasks("f.json", files[2]).unwrap()[0].row_index, None);
    }

    #[test]
    fn two_tasks_on_one_line_and_oversized_tasks_are_refused() {
        let err = parse_tasks("g.jsonl", b"{\"t\": 1} {\"t\": 2}\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 1: invalid JSON: one task per line expected"),
            "{err}"
        );
        let mut parser = TaskParser::new("h.jsonl", 16);
        let mut tasks = Vec::new();
        parser
            .push(
                b"{\"t\": 1}\n{\"text\": \"far too long\"}\n{\"t\": 3}\n",
                &mut tasks,
            )
            .unwrap();
        parser.finish(&mut tasks).unwrap();
        let problems: Vec<String> = parser
            .take_problems()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            vec!["h.jsonl line 2: the task is larger than the limit of 16 bytes"]
        );
        assert_eq!(
            tasks.iter().map(|t| t.row_index).collect::<Vec<_>>(),
            vec![Some(0), Some(2)],
            "the tasks around the oversized one are read"
        );
    }

    /// Parses `file` leniently in pieces of `size`: the tasks' row indexes
    /// (or the first data value), the problems, the count, the ending.
    fn lenient(
        file: &[u8],
        size: usize,
        max: usize,
    ) -> (Vec<Option<i64>>, Vec<String>, u64, Option<String>) {
        let mut parser = TaskParser::new("f", max);
        let mut tasks = Vec::new();
        let ended = file
            .chunks(size.max(1))
            .try_for_each(|piece| parser.push(piece, &mut tasks))
            .and_then(|()| parser.finish(&mut tasks))
            .err()
            .map(|e| e.to_string());
        let problems = parser
            .take_problems()
            .iter()
            .map(ToString::to_string)
            .collect();
        (
            tasks.iter().map(|t| t.row_index).collect(),
            problems,
            parser.rejected(),
            ended,
        )
    }

    #[test]
    fn bad_tasks_are_skipped_and_each_reported_with_its_line() {
        let file = b"oops\n{\"t\": 1}\n{\"t\": nope}\n[1]\n{\"t\": 4} {\"t\": 5}\n\"s\"\n{\"predictions\": [{}]}\n{\"t\": 7}\n{\"t\": \"far too long for the limit\"}\n{\"t\": 9}";
        let expected = (
            vec![Some(1), Some(4), Some(7), Some(9)],
            vec![
                "f line 1: Can't import JSON-formatted tasks: expected a JSON object, a JSON array or JSON Lines".to_string(),
                "f line 3: invalid JSON: expected ident".into(),
                "f line 4: a task must be a JSON object, found an array".into(),
                "f line 5: invalid JSON: one task per line expected".into(),
                "f line 6: a task must be a JSON object, found a string".into(),
                "f line 7: If you use \"predictions\" field in the task, you must put \"data\" field in the task too".into(),
                "f line 9: the task is larger than the limit of 24 bytes".into(),
            ],
            7,
            None,
        );
        for size in 1..=file.len() {
            assert_eq!(lenient(file, size, 24), expected, "pieces of {size}");
        }

        let array = b"[{\"a\": 0}, 1, \"x,]\", {\"a\": oops},\n {\"a\": 4} junk, [\"]\"], {\"a\": 6},, {\"a\": 8},]";
        let expected = (
            vec![Some(0), Some(4), Some(6), Some(8)],
            vec![
                "f line 1: item 1: a task must be a JSON object, found a number".to_string(),
                "f line 1: item 2: a task must be a JSON object, found a string".into(),
                "f line 1: item 3: invalid JSON: expected value".into(),
                "f line 2: invalid JSON: unexpected 'j' after an array item".into(),
                "f line 2: item 5: a task must be a JSON object, found an array".into(),
                "f line 2: item 7: a task must be a JSON object, found text that is not JSON"
                    .into(),
                "f line 2: invalid JSON: trailing comma in the array".into(),
            ],
            7,
            None,
        );
        for size in 1..=array.len() {
            assert_eq!(lenient(array, size, 1 << 20), expected, "pieces of {size}");
        }

        // A file cut inside a task keeps the tasks before it, the first
        // object of a `{`-file included (it is a JSON Lines file).
        let (rows, problems, rejected, ended) = lenient(b"{\"t\": 1}\n{\"t\": ", 4, 1 << 20);
        assert_eq!((rows, problems, rejected), (vec![Some(0)], vec![], 0));
        assert_eq!(
            ended.unwrap(),
            "f line 2: invalid JSON: the file ends inside a task"
        );
        // One object alone is still a task without a row.
        assert_eq!(lenient(b"{\"t\": 1}\n", 3, 1 << 20).0, vec![None]);
    }

    #[test]
    fn a_broken_line_does_not_swallow_the_lines_after_it() {
        let file = b"{\"t\": \"open\n{\"t\": 1}\n{\"t\": {\"u\": 2}\n{\"t\": 3}\n{\n  \"t\":\n  {\"deep\": [\n{\"x\": 4}]}\n}\n";
        let expected = (
            vec![Some(1), Some(3), Some(4)],
            vec![
                "f line 1: invalid JSON: the line ends inside a string".to_string(),
                "f line 3: invalid JSON: the task is not closed before the next line's task".into(),
            ],
            2,
            None,
        );
        for size in 1..=file.len() {
            assert_eq!(lenient(file, size, 1 << 20), expected, "pieces of {size}");
        }
    }

    #[test]
    fn problems_are_kept_up_to_the_limit_and_counted_beyond() {
        let file = "x\n{\"t\": 0}\n".repeat(MAX_REPORTED_PROBLEMS + 5);
        let (rows, problems, rejected, ended) = lenient(file.as_bytes(), 4096, 1 << 20);
        assert_eq!(rows.len(), MAX_REPORTED_PROBLEMS + 5);
        assert_eq!(problems.len(), MAX_REPORTED_PROBLEMS);
        assert_eq!(rejected, MAX_REPORTED_PROBLEMS as u64 + 5);
        assert_eq!(ended, None);
    }

    #[test]
    fn data_is_kept_compact_and_as_written() {
        let file =
            b"{\n  \"data\": {\n    \"text\": \"a  b\\\" \\n\",\n    \"n\": [1, 2.50]\n  }\n}\n";
        let tasks = parse_tasks("t.json", file).unwrap();
        assert_eq!(
            tasks[0].data.as_str(),
            r#"{"text":"a  b\" \n","n":[1,2.50]}"#
        );
        let bare = parse_tasks("t.jsonl", b"{ \"z\" : 1 ,\t\"a\": \" x \" }\n").unwrap();
        assert_eq!(bare[0].data.as_str(), r#"{"z":1,"a":" x "}"#);
        let err = parse_tasks("t.jsonl", b"{\"a\": 1}\n{\"b\":\n \"\xff\"}\n").unwrap_err();
        assert!(
            err.to_string().contains("line 3") && err.to_string().contains("unicode"),
            "{err}"
        );
    }

    #[test]
    fn extension_check_matches_label_studio() {
        assert!(check_task_file_extension("a/b.json").is_ok());
        assert!(check_task_file_extension("a/b.JSONL").is_ok());
        assert!(check_task_file_extension("a/no_extension").is_ok());
        assert!(check_task_file_extension("a/.hidden").is_ok());
        assert!(check_task_file_extension("a/img.jpg").is_err());
    }
}

//! Turning the bytes of a task file into task payloads (Tasks mode).
//!
//! Accepted, decided by the first non-blank byte: one JSON object, a JSON
//! array of objects, or JSON Lines (one object per line, blank lines
//! skipped). Each payload is either a bare data object or a `{"data": ...}`
//! wrapper with optional `annotations`, `predictions` and `allow_skip`.

use serde_json::{Map, Value};

use crate::{Error, Result};

/// One task read from a task file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedTask {
    /// The task data.
    pub data: Map<String, Value>,
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

/// Parses a whole task file.
///
/// ```
/// let tasks = storage_core::parse::parse_tasks("t.jsonl", b"{\"text\":\"a\"}\n\n{\"text\":\"b\"}\n").unwrap();
/// assert_eq!(tasks.len(), 2);
/// assert_eq!(tasks[1].row_index, Some(2));
/// ```
pub fn parse_tasks(key: &str, bytes: &[u8]) -> Result<Vec<ParsedTask>> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::InvalidTaskFile {
        key: key.to_string(),
        line: Some(line_of(bytes, e.valid_up_to())),
        reason: "not valid UTF-8".into(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let err = |line: Option<usize>, reason: String| Error::InvalidTaskFile {
        key: key.to_string(),
        line,
        reason,
    };
    match text.trim_start().as_bytes().first() {
        None => Err(err(None, "the file is empty".into())),
        Some(b'[') => {
            let items: Vec<Value> = serde_json::from_str(text)
                .map_err(|e| err(Some(e.line()), format!("invalid JSON: {e}")))?;
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    interpret(item, Some(index as i64))
                        .map_err(|reason| err(None, format!("item {index}: {reason}")))
                })
                .collect()
        }
        Some(b'{') => match serde_json::from_str::<Value>(text) {
            Ok(item) => Ok(vec![interpret(item, None).map_err(|reason| err(None, reason))?]),
            Err(whole) => parse_lines(text).map_err(|(line, reason)| {
                // A single malformed object reads better as a JSON error than
                // as a complaint about line 2 of a "JSONL" file.
                if text.lines().filter(|l| !l.trim().is_empty()).count() <= 1 {
                    err(Some(whole.line()), format!("invalid JSON: {whole}"))
                } else {
                    err(Some(line), reason)
                }
            }),
        },
        Some(_) => Err(err(
            Some(1),
            "Can't import JSON-formatted tasks: expected a JSON object, a JSON array or JSON Lines"
                .into(),
        )),
    }
}

fn parse_lines(text: &str) -> std::result::Result<Vec<ParsedTask>, (usize, String)> {
    let mut tasks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: Value =
            serde_json::from_str(line).map_err(|e| (index + 1, format!("invalid JSON: {e}")))?;
        tasks.push(interpret(item, Some(index as i64)).map_err(|reason| (index + 1, reason))?);
    }
    Ok(tasks)
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Interprets one payload as Label Studio does.
pub fn interpret(item: Value, row_index: Option<i64>) -> std::result::Result<ParsedTask, String> {
    let Value::Object(mut payload) = item else {
        return Err(format!(
            "a task must be a JSON object, found {}",
            json_type(&item)
        ));
    };
    let allow_skip = payload
        .get("allow_skip")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    match payload.remove("data") {
        Some(Value::Object(data)) => Ok(ParsedTask {
            data,
            annotations: take_list(&mut payload, "annotations")?,
            predictions: take_list(&mut payload, "predictions")?,
            allow_skip,
            row_index,
        }),
        other => {
            if let Some(data) = other {
                // `data` that is not an object is ordinary task data.
                payload.insert("data".into(), data);
            }
            for field in ["annotations", "predictions"] {
                if payload.get(field).is_some_and(non_empty) {
                    return Err(format!(
                        "If you use \"{field}\" field in the task, you must put \"data\" field in the task too"
                    ));
                }
            }
            Ok(ParsedTask {
                data: payload,
                annotations: Vec::new(),
                predictions: Vec::new(),
                allow_skip: true,
                row_index,
            })
        }
    }
}

fn take_list(payload: &mut Map<String, Value>, field: &str) -> std::result::Result<Vec<Value>, String> {
    match payload.remove(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("\"{field}\" must be a list, found {}", json_type(&other))),
    }
}

fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
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
        assert_eq!(Value::Object(tasks[0].data.clone()), json!({"image": "x.jpg", "meta_note": "n"}));
        assert_eq!(tasks[0].row_index, None);
        assert!(tasks[0].allow_skip);
    }

    #[test]
    fn array_items_get_their_index() {
        let tasks = parse_tasks("b.json", br#"[{"image": "1"}, {"data": {"image": "2"}}]"#).unwrap();
        assert_eq!(tasks.iter().map(|t| t.row_index).collect::<Vec<_>>(), vec![Some(0), Some(1)]);
        assert_eq!(tasks[1].data["image"], "2");
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
        assert_eq!(Value::Object(tasks[0].data.clone()), json!({"image": "x"}), "other top-level keys dropped");
    }

    #[test]
    fn jsonl_skips_blank_lines_and_reports_the_bad_line() {
        let tasks = parse_tasks("d.jsonl", b"{\"t\": 1}\n\n  \n{\"t\": 2}\n").unwrap();
        assert_eq!(tasks.iter().map(|t| t.row_index).collect::<Vec<_>>(), vec![Some(0), Some(3)]);
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
            assert!(matches!(err, Error::InvalidTaskFile { .. }), "{bad:?} gave {err:?}");
            assert!(err.to_string().starts_with("bad.json"), "{err}");
        }
    }

    #[test]
    fn annotations_without_data_is_refused_with_label_studio_message() {
        let err = parse_tasks("f.json", br#"{"text": "x", "predictions": [{"result": []}]}"#).unwrap_err();
        assert!(err.to_string().contains("you must put \"data\" field in the task too"), "{err}");
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

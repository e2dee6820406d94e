//! Rows as every SQL engine reads them, and the Label Studio JSON shapes
//! built from them. Nothing here knows SQLite; a PostgreSQL implementation
//! shares it.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use storage_core::export::created_ago;
use storage_core::task_data::TaskData;
use storage_core::{Error, Result};

/// The current time, at the precision the database keeps (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The stored (and wire) form of a time: RFC 3339 UTC with microseconds,
/// fixed width, so text order is time order.
pub(crate) fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a time written by [`format_time`]; `what` names the column and
/// row for the error.
pub(crate) fn parse_time(text: &str, what: impl FnOnce() -> String) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| Error::backend(format!("decoding {}", what()), err))
}

/// Reads a stored JSON object (task data, settings, meta).
pub(crate) fn parse_object(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<Map<String, Value>> {
    serde_json::from_str(text).map_err(|err| Error::backend(format!("decoding {}", what()), err))
}

/// Reads stored task data: one JSON object, kept as text.
pub(crate) fn parse_task_data(text: String, what: impl FnOnce() -> String) -> Result<TaskData> {
    TaskData::from_text(text).map_err(|err| Error::backend(format!("decoding {}", what()), err))
}

/// Reads a stored JSON value (annotation and prediction results).
pub(crate) fn parse_value(text: &str, what: impl FnOnce() -> String) -> Result<Value> {
    serde_json::from_str(text).map_err(|err| Error::backend(format!("decoding {}", what()), err))
}

/// Serialises a JSON document for storage.
pub(crate) fn to_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Serialising a `serde_json` map or value cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The stored form of an API token: SHA-256, lower-case hex.
pub(crate) fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Fields of an annotation to create or update, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AnnotationInput {
    pub(crate) result: Option<Value>,
    pub(crate) was_cancelled: Option<bool>,
    pub(crate) ground_truth: Option<bool>,
    pub(crate) lead_time: Option<Option<f64>>,
}

impl AnnotationInput {
    /// Reads an API body; `result` is required on creation.
    pub(crate) fn from_body(body: &Map<String, Value>, creating: bool) -> Result<Self> {
        let result = match (body.get("result"), creating) {
            (Some(list @ Value::Array(_)), _) => Some(list.clone()),
            (None, false) => None,
            (None | Some(Value::Null), true) => {
                return Err(Error::invalid("result", "This field is required."))
            }
            (Some(Value::Null), false) => {
                return Err(Error::invalid("result", "This field may not be null."))
            }
            (Some(other), _) => {
                return Err(Error::invalid(
                    "result",
                    format!(
                        "Expected a list of items but got type \"{}\".",
                        python_type(other)
                    ),
                ))
            }
        };
        let flag = |name: &str| -> Result<Option<bool>> {
            match body.get(name) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(Error::invalid(name, "Must be a valid boolean.")),
            }
        };
        let lead_time = match body.get("lead_time") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::Number(n)) => Some(n.as_f64()),
            Some(_) => return Err(Error::invalid("lead_time", "A valid number is required.")),
        };
        Ok(Self {
            result,
            was_cancelled: flag("was_cancelled")?,
            ground_truth: flag("ground_truth")?,
            lead_time,
        })
    }
}

/// An annotation carried in a task file, as it is stored. Fields of the
/// wrong type fall back to their defaults; `completed_by` is ignored (the
/// project's creator is recorded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileAnnotation {
    pub(crate) result: String,
    pub(crate) was_cancelled: bool,
    pub(crate) ground_truth: bool,
    pub(crate) lead_time: Option<f64>,
}

impl FileAnnotation {
    /// `None` for an item that is not a JSON object.
    pub(crate) fn from_value(value: &Value) -> Option<Self> {
        let item = value.as_object()?;
        Some(Self {
            result: list_text(item.get("result")),
            was_cancelled: item
                .get("was_cancelled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ground_truth: item
                .get("ground_truth")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            lead_time: item.get("lead_time").and_then(Value::as_f64),
        })
    }
}

/// A prediction carried in a task file, as it is stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FilePrediction {
    pub(crate) result: String,
    pub(crate) score: Option<f64>,
    pub(crate) model_version: String,
}

impl FilePrediction {
    /// `None` for an item that is not a JSON object.
    pub(crate) fn from_value(value: &Value) -> Option<Self> {
        let item = value.as_object()?;
        Some(Self {
            result: list_text(item.get("result")),
            score: item.get("score").and_then(Value::as_f64),
            model_version: match item.get("model_version") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            },
        })
    }
}

/// The Python type name Django REST framework puts in its messages.
fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn list_text(value: Option<&Value>) -> String {
    match value {
        Some(list @ Value::Array(_)) => to_text(list),
        _ => "[]".into(),
    }
}

/// A task's annotation and prediction counters, derived from what it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) total_annotations: i64,
    pub(crate) cancelled_annotations: i64,
    pub(crate) total_predictions: i64,
}

impl Counters {
    /// Label Studio's rule: labelled once enough annotations are not
    /// cancelled.
    pub(crate) fn is_labeled(&self, overlap: i64) -> bool {
        self.total_annotations >= overlap.max(1)
    }
}

/// What of one task the project counters depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TaskTally {
    /// `is_labeled` (counted by `finished_task_number`).
    pub(crate) is_labeled: bool,
    /// Whether an annotation neither cancelled nor ground truth exists
    /// (counted by `num_tasks_with_annotations`).
    pub(crate) useful: bool,
}

/// A change of a project's counters, in the order of
/// [`COUNTER_COLUMNS`]; applied with one `UPDATE` in the transaction of
/// the change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CounterDelta(pub(crate) [i64; 8]);

/// The counter columns of `projects`, in the order of [`CounterDelta`]
/// and of `storage_core::host::ProjectCounters`.
pub(crate) const COUNTER_COLUMNS: [&str; 8] = [
    "task_number",
    "finished_task_number",
    "total_annotations_number",
    "total_predictions_number",
    "num_tasks_with_annotations",
    "useful_annotation_number",
    "ground_truth_number",
    "skipped_annotations_number",
];

impl CounterDelta {
    /// One annotation with these flags, counted `sign` times (1 created,
    /// -1 deleted).
    pub(crate) fn annotation(was_cancelled: bool, ground_truth: bool, sign: i64) -> Self {
        let one = |yes: bool| if yes { sign } else { 0 };
        Self([
            0,
            0,
            one(!was_cancelled),
            0,
            0,
            one(!was_cancelled && !ground_truth),
            one(ground_truth),
            one(was_cancelled),
        ])
    }

    /// A task that went from `before` to `after` (`None`: no task).
    pub(crate) fn task(before: Option<TaskTally>, after: Option<TaskTally>) -> Self {
        let count = |tally: Option<TaskTally>| {
            tally.map_or([0, 0, 0], |t| {
                [1, i64::from(t.is_labeled), i64::from(t.useful)]
            })
        };
        let (b, a) = (count(before), count(after));
        Self([a[0] - b[0], a[1] - b[1], 0, 0, a[2] - b[2], 0, 0, 0])
    }

    /// New predictions.
    pub(crate) fn predictions(count: i64) -> Self {
        Self([0, 0, 0, count, 0, 0, 0, 0])
    }

    /// Both changes.
    #[must_use]
    pub(crate) fn plus(self, other: Self) -> Self {
        let mut sum = self.0;
        for (total, more) in sum.iter_mut().zip(other.0) {
            *total += more;
        }
        Self(sum)
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }
}

/// A task row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRow {
    pub(crate) id: i64,
    pub(crate) project: i64,
    pub(crate) inner_id: i64,
    pub(crate) data: TaskData,
    pub(crate) meta: Map<String, Value>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) is_labeled: bool,
    pub(crate) overlap: i64,
    pub(crate) allow_skip: bool,
    pub(crate) total_annotations: i64,
    pub(crate) cancelled_annotations: i64,
    pub(crate) total_predictions: i64,
    pub(crate) updated_by: Option<i64>,
}

impl TaskRow {
    /// The nested `task` of an exported annotation (no annotations).
    pub(crate) fn export_json(&self) -> Value {
        json!({
            "id": self.id,
            "data": Value::Object(self.data.to_object()),
            "meta": Value::Object(self.meta.clone()),
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "is_labeled": self.is_labeled,
            "allow_skip": self.allow_skip,
            "overlap": self.overlap,
            "inner_id": self.inner_id,
            "total_annotations": self.total_annotations,
            "cancelled_annotations": self.cancelled_annotations,
            "total_predictions": self.total_predictions,
            "precomputed_agreement": null,
            "comment_count": 0,
            "unresolved_comment_count": 0,
            "last_comment_updated_at": null,
            "project": self.project,
            "updated_by": self.updated_by,
            "file_upload": null,
            "comment_authors": [],
        })
    }
}

/// A user as annotations show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRow {
    pub(crate) id: i64,
    pub(crate) email: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
}

impl UserRow {
    /// `created_username`: `"<full name> <email>, <id>"`.
    fn username(&self) -> String {
        let full = format!("{} {}", self.first_name, self.last_name);
        format!("{} {}, {}", full.trim(), self.email, self.id)
    }
}

/// An annotation row with its author.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AnnotationRow {
    pub(crate) id: i64,
    pub(crate) task: i64,
    pub(crate) project: i64,
    pub(crate) completed_by: Option<UserRow>,
    pub(crate) result: Value,
    pub(crate) was_cancelled: bool,
    pub(crate) ground_truth: bool,
    pub(crate) lead_time: Option<f64>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) updated_by: Option<i64>,
}

impl AnnotationRow {
    /// The annotation API's shape (`completed_by` is the user id).
    pub(crate) fn api_json(&self, now: DateTime<Utc>) -> Value {
        self.json(now, self.completed_by.as_ref().map(|u| json!(u.id)), None)
    }

    /// The export shape: `completed_by` expanded, `task` nested.
    pub(crate) fn export_json(&self, task: &TaskRow, now: DateTime<Utc>) -> Value {
        let user = self.completed_by.as_ref().map(|u| {
            json!({
                "id": u.id,
                "first_name": u.first_name,
                "last_name": u.last_name,
                "email": u.email,
            })
        });
        self.json(now, user, Some(task.export_json()))
    }

    fn json(&self, now: DateTime<Utc>, completed_by: Option<Value>, task: Option<Value>) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id));
        out.insert("result".into(), self.result.clone());
        out.insert(
            "created_username".into(),
            self.completed_by
                .as_ref()
                .map(UserRow::username)
                .map_or(Value::Null, Value::String),
        );
        out.insert(
            "created_ago".into(),
            Value::String(created_ago(self.created_at, now)),
        );
        out.insert("completed_by".into(), completed_by.unwrap_or(Value::Null));
        if let Some(task) = &task {
            out.insert("task".into(), task.clone());
        }
        out.insert("was_cancelled".into(), json!(self.was_cancelled));
        out.insert("ground_truth".into(), json!(self.ground_truth));
        out.insert("created_at".into(), json!(format_time(self.created_at)));
        out.insert("updated_at".into(), json!(format_time(self.updated_at)));
        out.insert("draft_created_at".into(), Value::Null);
        out.insert("lead_time".into(), json!(self.lead_time));
        out.insert("import_id".into(), Value::Null);
        out.insert("last_action".into(), Value::Null);
        out.insert("bulk_created".into(), json!(false));
        if task.is_none() {
            out.insert("task".into(), json!(self.task));
        }
        out.insert("project".into(), json!(self.project));
        out.insert("updated_by".into(), json!(self.updated_by));
        out.insert("parent_prediction".into(), Value::Null);
        out.insert("parent_annotation".into(), Value::Null);
        out.insert("last_created_by".into(), Value::Null);
        Value::Object(out)
    }
}

/// A prediction row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PredictionRow {
    pub(crate) id: i64,
    pub(crate) task: i64,
    pub(crate) project: i64,
    pub(crate) result: Value,
    pub(crate) score: Option<f64>,
    pub(crate) model_version: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl PredictionRow {
    /// The prediction API's shape.
    pub(crate) fn api_json(&self, now: DateTime<Utc>) -> Value {
        json!({
            "id": self.id,
            "result": self.result,
            "model_version": self.model_version,
            "created_ago": created_ago(self.created_at, now),
            "score": self.score,
            "cluster": null,
            "neighbors": null,
            "mislabeling": 0.0,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "model": null,
            "model_run": null,
            "task": self.task,
            "project": self.project,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_are_fixed_width_micros() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 7, 46, 2).unwrap();
        assert_eq!(format_time(at), "2026-11-23T07:46:02.000000Z");
        let back = parse_time(&format_time(at), String::new).unwrap();
        assert_eq!(back, at);
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn annotation_body_requires_a_result_list() {
        let body = |v: Value| v.as_object().cloned().unwrap();
        let err = AnnotationInput::from_body(&body(json!({})), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: result: This field is required."
        );
        assert!(AnnotationInput::from_body(&body(json!({"result": {}})), true).is_err());
        assert!(AnnotationInput::from_body(
            &body(json!({"result": [], "was_cancelled": "x"})),
            true
        )
        .is_err());
        let ok = AnnotationInput::from_body(&body(json!({"result": [], "lead_time": 2.5})), true)
            .unwrap();
        assert_eq!(ok.lead_time, Some(Some(2.5)));
        let partial =
            AnnotationInput::from_body(&body(json!({"ground_truth": true})), false).unwrap();
        assert_eq!(partial.result, None);
        assert_eq!(partial.ground_truth, Some(true));
    }
}

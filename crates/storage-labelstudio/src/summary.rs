//! Label Studio's project summary (`projects_projectsummary`): the data
//! columns its Data Manager shows and the annotation types and labels
//! created, updated as its import updates them (`update_data_columns`,
//! `update_created_annotations_and_labels`) for a batch of new tasks.

use serde_json::{Map, Value};
use storage_core::persist::NewTask;

/// The summary's columns this crate updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Summary {
    /// Column name → how many tasks have it.
    pub(crate) all_data_columns: Map<String, Value>,
    /// The columns every task has, sorted.
    pub(crate) common_data_columns: Vec<String>,
    /// `from_name|to_name|type` → results of annotations of that kind.
    pub(crate) created_annotations: Map<String, Value>,
    /// `from_name` → label → count.
    pub(crate) created_labels: Map<String, Value>,
}

fn increment(map: &mut Map<String, Value>, key: &str) {
    let count = map.get(key).and_then(Value::as_i64).unwrap_or(0);
    map.insert(key.to_string(), Value::from(count + 1));
}

impl Summary {
    /// Counts the data columns and annotations of `tasks`.
    pub(crate) fn add(&mut self, tasks: &[NewTask]) {
        let data: Vec<Map<String, Value>> =
            tasks.iter().map(|task| task.data.to_object()).collect();
        self.add_data_columns(&data);
        for annotation in tasks.iter().flat_map(|task| &task.annotations) {
            self.add_annotation(annotation);
        }
    }

    /// Counts the data columns of tasks with `data` (`update_data_columns`).
    pub(crate) fn add_data_columns(&mut self, data: &[Map<String, Value>]) {
        let mut common: Option<Vec<String>> = None;
        for data in data {
            for key in data.keys() {
                increment(&mut self.all_data_columns, key);
            }
            common = Some(match common {
                None => data.keys().cloned().collect(),
                Some(common) => common
                    .into_iter()
                    .filter(|k| data.contains_key(k))
                    .collect(),
            });
        }
        let Some(mut common) = common else {
            return;
        };
        if !self.common_data_columns.is_empty() {
            common.retain(|k| self.common_data_columns.contains(k));
        }
        common.sort();
        self.common_data_columns = common;
    }

    /// Uncounts the data columns of tasks with `data`, which are deleted
    /// or get other data (`remove_data_columns`): a column no task has any
    /// more leaves both lists.
    pub(crate) fn remove_data_columns(&mut self, data: &[Map<String, Value>]) {
        for key in data.iter().flat_map(Map::keys) {
            let Some(count) = self.all_data_columns.get(key).and_then(Value::as_i64) else {
                continue;
            };
            if count <= 1 {
                self.all_data_columns.remove(key);
                self.common_data_columns.retain(|k| k != key);
            } else {
                self.all_data_columns
                    .insert(key.clone(), Value::from(count - 1));
            }
        }
    }

    fn add_annotation(&mut self, annotation: &Value) {
        let Some(results) = annotation.get("result").and_then(Value::as_array) else {
            return;
        };
        for result in results {
            let kind = result.get("type").and_then(Value::as_str);
            let (Some(from), Some(to), Some(kind)) = (
                result.get("from_name").and_then(Value::as_str),
                result.get("to_name").and_then(Value::as_str),
                kind.filter(|k| !matches!(*k, "relation" | "pairwise")),
            ) else {
                continue;
            };
            increment(
                &mut self.created_annotations,
                &format!("{from}|{to}|{kind}"),
            );
            let labels = self
                .created_labels
                .entry(from.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(labels) = labels else {
                continue;
            };
            // Video rectangles keep their labels under `labels`.
            let kind = if kind == "videorectangle" {
                "labels"
            } else {
                kind
            };
            if kind == "text" {
                continue;
            }
            let Some(values) = result
                .get("value")
                .and_then(|v| v.get(kind))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for value in values {
                let names: Vec<String> = match value {
                    Value::Array(nested) if kind == "taxonomy" => {
                        nested.iter().map(label_text).collect()
                    }
                    other => vec![label_text(other)],
                };
                for name in names {
                    increment(labels, &name);
                }
            }
        }
    }
}

/// A label as Python's `str()` writes it.
fn label_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use storage_core::persist::ObjectLink;
    use storage_core::task_data::TaskData;

    fn task(data: Value, annotations: Vec<Value>) -> NewTask {
        NewTask {
            data: TaskData::from_object(data.as_object().expect("object")),
            annotations,
            predictions: Vec::new(),
            allow_skip: true,
            link: ObjectLink {
                key: "k".into(),
                row_index: None,
                row_group: None,
                etag: None,
                size: None,
                last_modified: None,
            },
        }
    }

    #[test]
    fn columns_and_labels_are_counted_as_label_studio_counts_them() {
        let choice = json!({"result": [
            {"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["a", "b"]}},
            {"from_name": "r", "to_name": "image", "type": "relation"},
            {"from_name": "t", "to_name": "image", "type": "textarea", "value": {"text": ["x"]}}
        ]});
        let mut summary = Summary {
            common_data_columns: vec!["image".into(), "old".into()],
            ..Summary::default()
        };
        summary.add(&[
            task(json!({"image": "a", "n": 1}), vec![choice.clone()]),
            task(json!({"image": "b"}), vec![choice]),
        ]);
        assert_eq!(
            Value::Object(summary.all_data_columns.clone()),
            json!({"image": 2, "n": 1})
        );
        assert_eq!(summary.common_data_columns, vec!["image".to_string()]);
        assert_eq!(
            Value::Object(summary.created_annotations.clone()),
            json!({"c|image|choices": 2, "t|image|textarea": 2})
        );
        assert_eq!(
            Value::Object(summary.created_labels.clone()),
            json!({"c": {"a": 2, "b": 2}, "t": {}})
        );
    }

    #[test]
    fn removed_columns_are_uncounted_and_leave_at_zero() {
        let object = |value: Value| value.as_object().expect("object").clone();
        let mut summary = Summary {
            all_data_columns: object(json!({"image": 2, "n": 1})),
            common_data_columns: vec!["image".into(), "n".into()],
            ..Summary::default()
        };
        summary.remove_data_columns(&[object(json!({"image": "a", "n": 1, "other": 2}))]);
        assert_eq!(
            Value::Object(summary.all_data_columns.clone()),
            json!({"image": 1})
        );
        assert_eq!(summary.common_data_columns, vec!["image".to_string()]);
    }
}

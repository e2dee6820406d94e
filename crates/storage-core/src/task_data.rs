//! Task data kept as the text of its JSON object.
//!
//! A sync only moves task data from a file to the database, and a task list
//! only moves it from the database to a response: neither needs the data as
//! a tree of [`Value`]s, which costs several times the size of its text (an
//! array of a million small objects: about 25 times). Keeping the text makes
//! a task cost its size once on its way through.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::host::shown_data;
use crate::import::UNDEFINED_DATA_KEY;

/// Task data: one JSON object, held as its text.
///
/// ```
/// use storage_core::task_data::TaskData;
///
/// let data = TaskData::from_text(r#"{"text": "a", "n": 1}"#.into()).unwrap();
/// assert_eq!(data.to_object()["n"], 1);
/// assert!(TaskData::from_text("[1]".into()).is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TaskData(String);

impl TaskData {
    /// The text of `object`.
    pub fn from_object(object: &Map<String, Value>) -> Self {
        // A map of JSON values always serializes.
        Self(serde_json::to_string(object).unwrap_or_else(|_| "{}".into()))
    }

    /// `text`, checked to be one JSON object.
    pub fn from_text(text: String) -> Result<Self, String> {
        if !text.trim_start().starts_with('{') {
            return Err("task data must be a JSON object".into());
        }
        serde_json::from_str::<IgnoredAny>(&text).map_err(|err| format!("invalid JSON: {err}"))?;
        Ok(Self(text))
    }

    /// `text` that the caller has already parsed as one JSON object.
    pub(crate) fn from_checked(text: String) -> Self {
        Self(text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Size of the text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never, for data made by this type's
    /// constructors).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The data as a map of values.
    pub fn to_object(&self) -> Map<String, Value> {
        // Every constructor checks (or is given) one JSON object.
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The data as Label Studio shows it: the Files-mode placeholder key
    /// `$undefined$` renamed to `data_key`, the first variable of the
    /// labelling config (see [`shown_data`]). Only data that holds the
    /// placeholder is parsed.
    pub fn shown(self, data_key: Option<&str>) -> Self {
        match data_key {
            Some(key) if self.0.contains(UNDEFINED_DATA_KEY) => {
                Self::from_object(&shown_data(self.to_object(), Some(key)))
            }
            _ => self,
        }
    }
}

impl TaskData {
    /// The data with every string value (at any depth; keys are not
    /// values) for which `replace` returns a new text replaced. Read and
    /// written as text: besides the new text, only the strings themselves
    /// and one pointer per item of a list or object being read are held,
    /// however large the data.
    pub fn map_strings(&self, replace: &mut dyn FnMut(&str) -> Option<String>) -> Self {
        let mut out = String::with_capacity(self.0.len());
        match write_mapped(&self.0, &mut out, replace) {
            Ok(()) => Self(out),
            // Not reached for data made by this type's constructors.
            Err(_) => self.clone(),
        }
    }
}

/// Writes the JSON value `text` to `out`, its string values mapped.
fn write_mapped(
    text: &str,
    out: &mut String,
    replace: &mut dyn FnMut(&str) -> Option<String>,
) -> serde_json::Result<()> {
    match text.as_bytes().first() {
        Some(b'"') => {
            let value: String = serde_json::from_str(text)?;
            match replace(&value) {
                Some(new) => out.push_str(&serde_json::to_string(&new)?),
                None => out.push_str(text),
            }
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_mapped(item.get(), out, replace)?;
            }
            out.push(']');
        }
        Some(b'{') => {
            let Entries(entries) = serde_json::from_str(text)?;
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key)?);
                out.push(':');
                write_mapped(value.get(), out, replace)?;
            }
            out.push('}');
        }
        _ => out.push_str(text),
    }
    Ok(())
}

/// The entries of a JSON object in their order, values borrowed as text.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl From<Map<String, Value>> for TaskData {
    fn from(object: Map<String, Value>) -> Self {
        Self::from_object(&object)
    }
}

impl fmt::Debug for TaskData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Data can be megabytes: its start says which task it is.
        const SHOWN: usize = 200;
        match self.0.char_indices().nth(SHOWN) {
            Some((end, _)) => write!(f, "TaskData({}… {} bytes)", &self.0[..end], self.0.len()),
            None => write!(f, "TaskData({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_are_task_data() {
        assert!(TaskData::from_text(" {\"a\": [1, {\"b\": null}]} ".into()).is_ok());
        for bad in ["", "1", "\"x\"", "[{}]", "{\"a\": }", "{} {}"] {
            assert!(TaskData::from_text(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_placeholder_key_is_shown_as_the_first_variable() {
        let data = TaskData::from_text(r#"{"$undefined$": "s3://b/k", "x": 1}"#.into()).unwrap();
        assert_eq!(data.clone().shown(None), data);
        let shown = data.shown(Some("image")).to_object();
        assert_eq!(
            Value::Object(shown),
            serde_json::json!({"image": "s3://b/k", "x": 1})
        );
    }

    #[test]
    fn strings_are_mapped_at_any_depth_and_nothing_else_changes() {
        let text = r#"{"a": "s3://b/1", "n": [1, 2.5e3, null, true, {"s3://b/k": ["s3://b/2", "x\"y"]}], "e": {}}"#;
        let data = TaskData::from_text(text.into()).unwrap();
        let mapped =
            data.map_strings(&mut |s| s.strip_prefix("s3://").map(|rest| format!("R:{rest}")));
        let expected = serde_json::json!(
            {"a": "R:b/1", "n": [1, 2.5e3, null, true, {"s3://b/k": ["R:b/2", "x\"y"]}], "e": {}}
        );
        assert_eq!(Value::Object(mapped.to_object()), expected);
        let keys: Vec<String> = mapped.to_object().keys().cloned().collect();
        assert_eq!(keys, ["a", "n", "e"]);
        let same = data.map_strings(&mut |_| None);
        assert_eq!(same.to_object(), data.to_object());
    }

    #[test]
    fn debug_shows_the_start_of_large_data() {
        let data = TaskData::from_object(&Map::from_iter([(
            "text".to_string(),
            Value::String("é".repeat(10_000)),
        )]));
        let shown = format!("{data:?}");
        assert!(shown.len() < 600, "{shown}");
        assert!(shown.ends_with(&format!("… {} bytes)", data.len())));
    }
}

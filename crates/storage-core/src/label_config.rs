//! Label Studio labelling configs (`label_config`), read with a real XML
//! parser: what Label Studio 1.23.2 shows of them (`parsed_label_config`,
//! default `control_weights`) and where Files-mode task data goes (the first
//! data key).
//!
//! The shapes follow `label_studio_sdk._extensions.label_studio_tools.core.
//! label_config.parse_config` (SDK 2.1.2, which Label Studio 1.23.2 uses),
//! `Project.get_updated_weights` and `core.label_config.extract_data_types`.
//!
//! ```
//! use storage_core::label_config::LabelConfig;
//!
//! let config = LabelConfig::parse(
//!     r#"<View><Image name="img" value="$image"/>
//!        <Choices name="class" toName="img"><Choice value="Cat"/><Choice value="Dog"/></Choices></View>"#,
//! ).unwrap();
//! assert_eq!(config.first_data_key(), Some("image"));
//! assert_eq!(config.parsed()["class"]["labels"], serde_json::json!(["Cat", "Dog"]));
//! ```

use roxmltree::{Document, Node};
use serde_json::{json, Map, Value};

/// Tags whose `value` (or `alias`) is a label of their control.
const LABEL_TAGS: [&str; 3] = ["Label", "Choice", "Relation"];
/// Tags with `name` and `toName` that are no control tags.
const NOT_CONTROL_TAGS: [&str; 1] = ["Filter"];

/// A parsed labelling config.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelConfig {
    parsed: Map<String, Value>,
    first_data_key: Option<String>,
    bulk: bool,
}

impl LabelConfig {
    /// Parses and checks a labelling config as Label Studio does when a
    /// project is created: well-formed XML without a DTD, unique `name`s,
    /// every `toName` naming a tag. An empty config is no XML document
    /// either.
    ///
    /// The error is a sentence for the `label_config` field.
    pub fn parse(config: &str) -> Result<Self, String> {
        let document = Document::parse(config).map_err(|err| err.to_string())?;
        let elements: Vec<Node<'_, '_>> = document
            .root_element()
            .descendants()
            .filter(Node::is_element)
            .collect();

        let mut names: Vec<&str> = Vec::new();
        for element in &elements {
            if let Some(name) = element.attribute("name") {
                if names.contains(&name) {
                    return Err("Label config contains non-unique names".into());
                }
                names.push(name);
            }
        }
        for element in &elements {
            for to_name in element
                .attribute("toName")
                .into_iter()
                .flat_map(|t| t.split(','))
            {
                if !names.contains(&to_name) {
                    let mut sorted = names.clone();
                    sorted.sort_unstable();
                    return Err(format!(
                        "toName=\"{to_name}\" not found in names: {sorted:?}"
                    ));
                }
            }
        }

        Ok(Self {
            parsed: parse_controls(&elements)?,
            first_data_key: first_data_key(&elements),
            bulk: elements.iter().all(suits_bulk_annotation),
        })
    }

    /// Parses leniently: a config that does not parse has no controls and
    /// no data key (Label Studio shows `{}` for it too).
    pub fn lenient(config: &str) -> Self {
        Self::parse(config).unwrap_or(Self {
            parsed: Map::new(),
            first_data_key: None,
            bulk: true,
        })
    }

    /// `parsed_label_config`: each control tag by name with its `type`,
    /// `to_name`, `inputs`, `labels` and `labels_attrs` (and `regex`,
    /// `conditionals`, `dynamic_labels` where Label Studio adds them).
    pub fn parsed(&self) -> &Map<String, Value> {
        &self.parsed
    }

    /// Whether the config has any control tag (`config_has_control_tags`).
    pub fn has_controls(&self) -> bool {
        !self.parsed.is_empty()
    }

    /// The default `control_weights`: every control but `Filter` with
    /// weight 1.0 overall and for each of its labels.
    pub fn control_weights(&self) -> Map<String, Value> {
        self.parsed
            .iter()
            .filter(|(_, control)| {
                !control["type"]
                    .as_str()
                    .is_some_and(|t| NOT_CONTROL_TAGS.contains(&t))
            })
            .map(|(name, control)| {
                let labels: Map<String, Value> = control["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|label| (label.to_string(), json!(1.0)))
                    .collect();
                (
                    name.clone(),
                    json!({"overall": 1.0, "type": control["type"], "labels": labels}),
                )
            })
            .collect()
    }

    /// Whether the config allows bulk annotation
    /// (`config_suitable_for_bulk_annotation`): no region tag, and no
    /// per-region or per-item classification.
    pub fn suitable_for_bulk_annotation(&self) -> bool {
        self.bulk
    }

    /// The first data variable of the config (Label Studio's first
    /// `data_types` key): where Files-mode task data (`$undefined$`) is
    /// shown.
    pub fn first_data_key(&self) -> Option<&str> {
        self.first_data_key.as_deref()
    }
}

fn tag<'input>(node: &Node<'_, 'input>) -> &'input str {
    node.tag_name().name()
}

/// A non-empty attribute (Python's truthiness of `attrib.get`).
fn present<'a>(node: &Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attribute(name).filter(|v| !v.is_empty())
}

fn parse_controls(elements: &[Node<'_, '_>]) -> Result<Map<String, Value>, String> {
    let mut outputs: Map<String, Value> = Map::new();
    let mut inputs: Map<String, Value> = Map::new();
    let mut labels: Map<String, Value> = Map::new();
    let mut variables: Vec<&str> = Vec::new();
    for element in elements {
        if let Some(flag) = element.attribute("indexFlag") {
            variables.push(flag);
        }
        let name = present(element, "name");
        let to_name = present(element, "toName");
        if let (Some(name), Some(to_name), false) =
            (name, to_name, NOT_CONTROL_TAGS.contains(&tag(element)))
        {
            let to_names: Vec<&str> = to_name.split(',').collect();
            let mut info = Map::new();
            info.insert("type".into(), json!(tag(element)));
            info.insert("to_name".into(), json!(to_names));
            let mut regex = Map::new();
            for variable in &variables {
                if to_names.iter().any(|n| n.contains(variable)) {
                    regex.insert((*variable).to_string(), json!(".*"));
                }
            }
            if !regex.is_empty() {
                info.insert("regex".into(), Value::Object(regex));
            }
            if element.attribute("perRegion") == Some("true") {
                let conditional = [
                    ("whenTagName", "tag"),
                    ("whenLabelValue", "label"),
                    ("whenChoiceValue", "choice"),
                ]
                .into_iter()
                .find_map(|(attribute, kind)| {
                    present(element, attribute).map(|value| json!({"type": kind, "name": value}))
                });
                if let Some(conditional) = conditional {
                    info.insert("conditionals".into(), conditional);
                }
            }
            if element.attribute("value").is_some_and(is_variable)
                || present(element, "apiUrl").is_some()
            {
                info.insert("dynamic_labels".into(), json!(true));
            }
            outputs.insert(name.to_string(), Value::Object(info));
        } else if let Some(name) = name {
            let value = present(element, "value");
            let value_list = present(element, "valueList");
            if value.is_some() || value_list.is_some() {
                let mut input = Map::new();
                input.insert("type".into(), json!(tag(element)));
                input.insert("valueType".into(), json!(element.attribute("valueType")));
                match (element.attribute("value"), value_list) {
                    (Some(value), _) => input.insert("value".into(), json!(strip(value))),
                    (None, Some(list)) => input.insert("valueList".into(), json!(strip(list))),
                    (None, None) => None,
                };
                inputs.insert(name.to_string(), Value::Object(input));
            }
        }
        if !LABEL_TAGS.contains(&tag(element)) {
            continue;
        }
        let parent = element.ancestors().skip(1).find_map(|ancestor| {
            ancestor
                .attribute("name")
                .filter(|name| outputs.contains_key(*name))
        });
        let Some(parent) = parent else { continue };
        let value = present(element, "alias")
            .or_else(|| present(element, "value"))
            .or_else(|| present(element, "valueList"));
        if let Some(value) = value {
            let attributes: Map<String, Value> = element
                .attributes()
                .map(|a| (a.name().to_string(), json!(a.value())))
                .collect();
            if let Value::Object(of_parent) = labels
                .entry(parent.to_string())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                of_parent.insert(value.to_string(), Value::Object(attributes));
            }
        }
    }
    for (name, info) in &mut outputs {
        let Value::Object(info) = info else { continue };
        let found: Vec<Value> = info["to_name"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().and_then(|n| inputs.get(n)).cloned())
            .collect();
        info.insert("inputs".into(), Value::Array(found));
        let attrs = labels.remove(name).unwrap_or_else(|| json!({}));
        let names: Vec<Value> = attrs
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys().map(|k| json!(k)))
            .collect();
        info.insert("labels".into(), Value::Array(names));
        info.insert("labels_attrs".into(), attrs);
    }
    Ok(outputs)
}

/// Label Studio's `get_config_suitable_for_bulk_annotation`, for one tag.
fn suits_bulk_annotation(element: &Node<'_, '_>) -> bool {
    const REGION_TAGS: [&str; 15] = [
        "Labels",
        "Brush",
        "BrushLabels",
        "Ellipse",
        "EllipseLabels",
        "KeyPoint",
        "KeyPointLabels",
        "Polygon",
        "PolygonLabels",
        "Rectangle",
        "RectangleLabels",
        "HyperTextLabels",
        "ParagraphLabels",
        "TimeSeriesLabels",
        "VideoRectangle",
    ];
    const CHECKED: [&str; 6] = [
        "Choices", "Taxonomy", "DateTime", "Number", "Rating", "TextArea",
    ];
    let name = tag(element);
    if REGION_TAGS.contains(&name) {
        return false;
    }
    if !CHECKED.contains(&name) {
        return true;
    }
    let flag = |attribute: &str| {
        element
            .attribute(attribute)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    if flag("perRegion") || flag("perItem") {
        return false;
    }
    if matches!(name, "Choices" | "Taxonomy") && element.attribute("value").is_some() {
        return false;
    }
    !(name == "Taxonomy" && (flag("labeling") || element.attribute("apiUrl").is_some()))
}

/// Python's `str.lstrip("$")`.
fn strip(value: &str) -> &str {
    value.trim_start_matches('$')
}

/// `^\$[A-Za-z_]+$`: a value that names task data (dynamic labels).
fn is_variable(value: &str) -> bool {
    value.strip_prefix('$').is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
    })
}

/// Label Studio's `extract_data_types`, first key: the first named tag
/// with a `value` that is `$key`, or else holds a `$key` somewhere.
fn first_data_key(elements: &[Node<'_, '_>]) -> Option<String> {
    elements.iter().find_map(|element| {
        present(element, "name")?;
        let value = element.attribute("value")?;
        if value.len() > 1 && value.starts_with('$') {
            return Some(value[1..].to_string());
        }
        let start = value.find('$')?;
        let key: String = value[start + 1..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        (!key.is_empty()).then_some(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(config: &str) -> Value {
        Value::Object(LabelConfig::parse(config).unwrap().parsed().clone())
    }

    #[test]
    fn image_classification() {
        let config = r#"<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image">
    <Choice value="Adult content"/>
    <Choice value="Weapons" />
    <Choice value="Violence" />
  </Choices>
</View>"#;
        assert_eq!(
            parsed(config),
            json!({"choice": {
                "type": "Choices",
                "to_name": ["image"],
                "inputs": [{"type": "Image", "valueType": null, "value": "image"}],
                "labels": ["Adult content", "Weapons", "Violence"],
                "labels_attrs": {
                    "Adult content": {"value": "Adult content"},
                    "Weapons": {"value": "Weapons"},
                    "Violence": {"value": "Violence"},
                },
            }})
        );
        let config = LabelConfig::parse(config).unwrap();
        assert_eq!(
            Value::Object(config.control_weights()),
            json!({"choice": {"overall": 1.0, "type": "Choices", "labels": {
                "Adult content": 1.0, "Weapons": 1.0, "Violence": 1.0}}})
        );
        assert_eq!(config.first_data_key(), Some("image"));
        assert!(config.has_controls());
        assert!(config.suitable_for_bulk_annotation());
    }

    #[test]
    fn named_entity_recognition_with_aliases_and_attributes() {
        let config = r#"<View>
  <Labels name="label" toName="text">
    <Label value="Person" background="red" alias="PER"/>
    <Label value="Organization" background="darkorange"/>
  </Labels>
  <Text name="text" value="$text" valueType="text"/>
</View>"#;
        assert_eq!(
            parsed(config),
            json!({"label": {
                "type": "Labels",
                "to_name": ["text"],
                "inputs": [{"type": "Text", "valueType": "text", "value": "text"}],
                "labels": ["PER", "Organization"],
                "labels_attrs": {
                    "PER": {"value": "Person", "background": "red", "alias": "PER"},
                    "Organization": {"value": "Organization", "background": "darkorange"},
                },
            }})
        );
    }

    #[test]
    fn several_objects_and_controls() {
        let config = r#"<View>
  <Header value="$title"/>
  <Image name="img" value="$image"/>
  <Audio name="audio" value="$audio"/>
  <RectangleLabels name="box" toName="img"><Label value="Car"/></RectangleLabels>
  <TextArea name="transcript" toName="audio,img" perRegion="true" whenTagName="box"/>
  <Choices name="mood" toName="audio" value="$options"/>
</View>"#;
        let value = parsed(config);
        assert_eq!(value["box"]["labels"], json!(["Car"]));
        assert_eq!(value["transcript"]["to_name"], json!(["audio", "img"]));
        assert_eq!(
            value["transcript"]["inputs"],
            json!([
                {"type": "Audio", "valueType": null, "value": "audio"},
                {"type": "Image", "valueType": null, "value": "image"},
            ])
        );
        assert_eq!(
            value["transcript"]["conditionals"],
            json!({"type": "tag", "name": "box"})
        );
        assert_eq!(value["transcript"]["labels"], json!([]));
        assert_eq!(value["mood"]["dynamic_labels"], json!(true));
        assert_eq!(
            value.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["box", "transcript", "mood"]
        );
        assert!(!LabelConfig::parse(config)
            .unwrap()
            .suitable_for_bulk_annotation());
        // The nameless Header is no data type in Label Studio.
        let config = LabelConfig::parse(config).unwrap();
        assert_eq!(config.first_data_key(), Some("image"));
    }

    #[test]
    fn repeater_index_flags_become_regexes() {
        let config = r#"<View><Repeater on="$pages" indexFlag="{{idx}}">
  <Image name="page_{{idx}}" value="$pages[{{idx}}].url"/>
  <Choices name="c_{{idx}}" toName="page_{{idx}}"><Choice value="A"/></Choices>
</Repeater></View>"#;
        let value = parsed(config);
        assert_eq!(value["c_{{idx}}"]["regex"], json!({"{{idx}}": ".*"}));
        // Label Studio keeps everything after the `$` as the key.
        assert_eq!(
            LabelConfig::parse(config).unwrap().first_data_key(),
            Some("pages[{{idx}}].url")
        );
    }

    #[test]
    fn filters_have_no_weights() {
        let config = r#"<View><Text name="t" value="$text"/>
  <Filter name="f" toName="labels"/>
  <Labels name="labels" toName="t"><Label value="A"/></Labels></View>"#;
        let config = LabelConfig::parse(config).unwrap();
        assert_eq!(
            config.parsed().keys().collect::<Vec<_>>(),
            ["labels"],
            "Filter is no control tag"
        );
        assert_eq!(
            config.control_weights().keys().collect::<Vec<_>>(),
            ["labels"]
        );
    }

    #[test]
    fn malformed_configs_are_refused_with_a_reason() {
        for (config, needle) in [
            ("<View><Image name=\"i\" value=\"$i\"></View>", ""),
            ("<View", ""),
            ("not xml", ""),
            ("<!DOCTYPE View [<!ENTITY x \"y\">]><View/>", ""),
            (
                "<View><Text name=\"a\" value=\"$a\"/><Text name=\"a\" value=\"$b\"/></View>",
                "non-unique names",
            ),
            (
                "<View><Text name=\"a\" value=\"$a\"/><Choices name=\"c\" toName=\"b\"/></View>",
                "toName=\"b\" not found",
            ),
        ] {
            let err = LabelConfig::parse(config).unwrap_err();
            assert!(err.contains(needle), "{config}: {err}");
        }
        assert_eq!(LabelConfig::lenient("<View").parsed(), &Map::new());
    }

    #[test]
    fn empty_and_control_free_configs() {
        assert!(LabelConfig::parse("").is_err());
        let empty = LabelConfig::lenient("");
        assert!(!empty.has_controls());
        assert_eq!(empty.first_data_key(), None);
        let view = LabelConfig::parse("<View></View>").unwrap();
        assert!(!view.has_controls());
        assert!(view.control_weights().is_empty());
    }
}

//! Declarative field schemas: validation with Label Studio's messages,
//! defaults, partial updates and secret redaction, written once for every
//! backend.

use serde_json::{Map, Number, Value};

use crate::{StorageKind, ValidationErrors};

/// The JSON type of a field and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string, optionally bounded in characters.
    Str {
        /// Maximum number of characters.
        max_len: Option<usize>,
    },
    /// A boolean (`true`/`false`, also `"true"`/`"false"`/`1`/`0` as forms send).
    Bool,
    /// An integer within bounds.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// One string of a fixed set.
    Choice {
        /// The accepted values.
        choices: &'static [&'static str],
    },
}

/// One field of a storage's wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    /// Label Studio's name of the field.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// `null` is accepted.
    pub nullable: bool,
    /// The value a new storage gets when the field is not sent.
    pub default: Value,
    /// Write-only: never in a response, a log or an error.
    pub secret: bool,
    /// One line for documentation and OpenAPI.
    pub help: &'static str,
}

impl FieldSpec {
    /// A nullable string field without a default.
    pub const fn string(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            ty: FieldType::Str { max_len: None },
            nullable: true,
            default: Value::Null,
            secret: false,
            help,
        }
    }

    /// A boolean field with a default.
    pub const fn boolean(name: &'static str, default: bool, help: &'static str) -> Self {
        Self {
            name,
            ty: FieldType::Bool,
            nullable: false,
            default: Value::Bool(default),
            secret: false,
            help,
        }
    }

    /// Marks the field write-only.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Accepts `null` and makes it the default.
    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self.default = Value::Null;
        self
    }

    /// Checks and normalises one value sent for this field.
    pub fn coerce(&self, value: &Value) -> Result<Value, String> {
        if value.is_null() {
            return if self.nullable {
                Ok(Value::Null)
            } else {
                Err("This field may not be null.".into())
            };
        }
        match self.ty {
            FieldType::Str { max_len } => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(_) | Value::Array(_) | Value::Object(_) | Value::Null => {
                        return Err("Not a valid string.".into())
                    }
                };
                if let Some(max) = max_len {
                    if s.chars().count() > max {
                        return Err(format!(
                            "Ensure this field has no more than {max} characters."
                        ));
                    }
                }
                Ok(Value::String(s))
            }
            FieldType::Bool => match value {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::Number(n) if n.as_i64() == Some(1) => Ok(Value::Bool(true)),
                Value::Number(n) if n.as_i64() == Some(0) => Ok(Value::Bool(false)),
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" | "t" | "y" => Ok(Value::Bool(true)),
                    "false" | "0" | "no" | "off" | "f" | "n" => Ok(Value::Bool(false)),
                    _ => Err("Must be a valid boolean.".into()),
                },
                _ => Err("Must be a valid boolean.".into()),
            },
            FieldType::Int { min, max } => {
                let n = match value {
                    Value::Number(n) => n.as_i64().or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                            .map(|f| f as i64)
                    }),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| "A valid integer is required.".to_string())?;
                if n < min {
                    return Err(format!(
                        "Ensure this value is greater than or equal to {min}."
                    ));
                }
                if n > max {
                    return Err(format!("Ensure this value is less than or equal to {max}."));
                }
                Ok(Value::Number(Number::from(n)))
            }
            FieldType::Choice { choices } => match value {
                Value::String(s) if choices.contains(&s.as_str()) => Ok(value.clone()),
                _ => Err(format!(
                    "\"{}\" is not a valid choice (one of: {}).",
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string),
                    choices.join(", ")
                )),
            },
        }
    }
}

/// Common import fields of every type: `regex_filter`, `use_blob_urls`,
/// `recursive_scan`.
pub fn import_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::string(
            "regex_filter",
            "Regex matched at the start of each key (local files: the file name)",
        ),
        FieldSpec::boolean(
            "use_blob_urls",
            false,
            "Files mode: one task per object; otherwise read tasks from JSON/JSONL",
        ),
        FieldSpec::boolean("recursive_scan", false, "Descend into sub-folders"),
    ]
    .into_iter()
    .chain(follow_fields())
    .collect()
}

/// The import fields of the server's syncs (extensions: Label Studio has
/// none of them, and their defaults keep its behaviour):
/// `on_object_changed`, `on_object_deleted`, `deletion_guard`,
/// `sync_interval` make syncs follow the bucket, `shard_listing` splits
/// them among workers. Part of [`import_fields`]; backends with their own
/// import fields add them.
pub fn follow_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec {
            name: "on_object_changed",
            ty: FieldType::Choice {
                choices: ObjectChanged::CHOICES,
            },
            nullable: false,
            default: Value::String(ObjectChanged::Keep.as_str().into()),
            secret: false,
            help: "keep: a synced object that changed keeps its tasks (Label Studio); update: \
                   read it again (tasks without annotations get the new data)",
        },
        FieldSpec {
            name: "on_object_deleted",
            ty: FieldType::Choice {
                choices: ObjectDeleted::CHOICES,
            },
            nullable: false,
            default: Value::String(ObjectDeleted::Keep.as_str().into()),
            secret: false,
            help: "keep: tasks of deleted objects stay (Label Studio); mark: their links get \
                   object_exists=false; delete: tasks without annotations are deleted, the \
                   others marked",
        },
        FieldSpec {
            name: "deletion_guard",
            ty: FieldType::Int { min: 0, max: 100 },
            nullable: false,
            default: Value::Number(DEFAULT_DELETION_GUARD.into()),
            secret: false,
            help: "The largest share (percent) of linked objects one sync may treat as \
                   deleted; above it nothing is deleted until a sync with confirm_deletions",
        },
        FieldSpec {
            name: crate::jobs::schedule::SYNC_INTERVAL_FIELD,
            // A year at most; the server's --min-sync-interval (default
            // 60 s) is checked when the storage is saved.
            ty: FieldType::Int {
                min: 1,
                max: 365 * 24 * 3600,
            },
            nullable: true,
            default: Value::Null,
            secret: false,
            help: "Seconds between automatic syncs (null: only when asked); at least the \
                   server's minimum (60 s by default)",
        },
        FieldSpec::boolean(
            crate::shards::SHARD_LISTING_FIELD,
            false,
            "Split each sync by the folders under the prefix, so that the workers of every \
             server instance list and import them together (needs recursive_scan; not with \
             on_object_deleted)",
        ),
    ]
}

/// `deletion_guard` of a storage that does not set it.
pub const DEFAULT_DELETION_GUARD: i64 = 20;

/// What a sync does with a linked object whose listing entry (ETag, size,
/// last-modified time) differs from its link's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectChanged {
    /// Nothing: its tasks stay as they were (Label Studio).
    #[default]
    Keep,
    /// Read it again: tasks without annotations get the new data, new rows
    /// new tasks, rows gone are handled as deleted objects; tasks with
    /// annotations keep their data and are marked.
    Update,
}

impl ObjectChanged {
    const CHOICES: &'static [&'static str] = &["keep", "update"];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Update => "update",
        }
    }
}

/// What a sync does with the tasks of a linked object no longer listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectDeleted {
    /// Nothing (Label Studio).
    #[default]
    Keep,
    /// Their links get `object_exists = false`.
    Mark,
    /// Tasks without annotations are deleted, the others marked.
    Delete,
}

impl ObjectDeleted {
    const CHOICES: &'static [&'static str] = &["keep", "mark", "delete"];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Mark => "mark",
            Self::Delete => "delete",
        }
    }
}

/// Presign fields of bucket types: `presign`, `presign_ttl` (minutes).
pub fn presign_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::boolean(
            "presign",
            true,
            "Redirect to signed URLs instead of proxying",
        ),
        FieldSpec {
            name: "presign_ttl",
            // 7 days, the longest a V4 signed URL (S3 and GCS) may live:
            // the limit the server enforces, so the schema says it too.
            ty: FieldType::Int { min: 0, max: 10080 },
            nullable: false,
            default: Value::Number(1.into()),
            secret: false,
            help: "Signed URL lifetime in minutes",
        },
    ]
}

/// Common export fields: `regex_filter` and `use_blob_urls` (kept for wire
/// compatibility, unused) and `can_delete_objects`.
pub fn export_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::string("regex_filter", "Unused for export storages"),
        FieldSpec::boolean("use_blob_urls", false, "Unused for export storages"),
        FieldSpec::boolean(
            "can_delete_objects",
            false,
            "Delete the exported object when its annotation is deleted",
        )
        .nullable(),
    ]
}

/// The fields every storage has that clients may write.
pub fn common_fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec {
            name: "title",
            ty: FieldType::Str { max_len: Some(256) },
            ..FieldSpec::string("title", "Storage title")
        },
        FieldSpec::string("description", "Storage description"),
        FieldSpec::boolean("synchronizable", true, "Whether sync requests are accepted"),
    ]
}

/// The fields of a storage that are never written by clients.
pub const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "type",
    "created_at",
    "status",
    "last_sync",
    "last_sync_count",
    "last_sync_job",
    "traceback",
    "meta",
];

/// The type-specific settings of one storage, validated against its schema.
///
/// Secrets are kept here as plain JSON strings, so the `Debug` output lists
/// field names only.
#[derive(Clone, Default, PartialEq)]
pub struct Settings(Map<String, Value>);

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Settings {
    /// Wraps stored settings (already validated when they were written).
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// The defaults of `specs`.
    pub fn defaults(specs: &[FieldSpec]) -> Self {
        Self(
            specs
                .iter()
                .map(|spec| (spec.name.to_string(), spec.default.clone()))
                .collect(),
        )
    }

    /// Applies the fields of `body` that `specs` know, checking each; fields
    /// not sent keep their current value (so a partial update keeps secrets
    /// it does not mention), and a secret sent as `""` is cleared.
    pub fn apply(
        &mut self,
        specs: &[FieldSpec],
        body: &Map<String, Value>,
    ) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        for spec in specs {
            let Some(value) = body.get(spec.name) else {
                continue;
            };
            let value = if spec.secret && (value.is_null() || value.as_str() == Some("")) {
                Ok(Value::Null)
            } else {
                spec.coerce(value)
            };
            match value {
                Ok(v) => {
                    self.0.insert(spec.name.to_string(), v);
                }
                Err(message) => errors.add(spec.name, message),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The raw JSON value of a field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A string field; `None` when unset, null or empty.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A boolean field; `default` when unset or null.
    pub fn bool(&self, name: &str, default: bool) -> bool {
        self.get(name).and_then(Value::as_bool).unwrap_or(default)
    }

    /// An integer field.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Value::as_i64)
    }

    /// A string field, `""` included; `None` when unset or null.
    fn str_or_empty(&self, name: &str) -> Option<String> {
        self.get(name).and_then(Value::as_str).map(str::to_string)
    }

    /// Sets a field (for builders and backends normalising a value).
    pub fn set(&mut self, name: &str, value: Value) {
        self.0.insert(name.to_string(), value);
    }

    /// Every field, secrets included. Use [`Settings::public`] for output.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The values of the secret fields of `specs`, to redact from any text
    /// that leaves the server ([`crate::redact::without_secrets`]): each
    /// value, and for a JSON key (a service-account key file) its key
    /// material too.
    pub fn secret_values(&self, specs: &[FieldSpec]) -> Vec<String> {
        const KEY_MATERIAL: &[&str] = &[
            "private_key",
            "private_key_id",
            "client_secret",
            "refresh_token",
        ];
        let mut values = Vec::new();
        for spec in specs.iter().filter(|spec| spec.secret) {
            let Some(value) = self.str(spec.name) else {
                continue;
            };
            if let Ok(Value::Object(json)) = serde_json::from_str::<Value>(value) {
                values.extend(
                    KEY_MATERIAL
                        .iter()
                        .filter_map(|name| json.get(*name).and_then(Value::as_str))
                        .map(str::to_string),
                );
            }
            values.push(value.to_string());
        }
        values
    }

    /// The fields of `specs` that may be shown, in schema order, secrets left
    /// out.
    pub fn public(&self, specs: &[FieldSpec]) -> Map<String, Value> {
        specs
            .iter()
            .filter(|spec| !spec.secret)
            .map(|spec| {
                (
                    spec.name.to_string(),
                    self.0.get(spec.name).cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    }
}

/// What a create, validate or update body sets on one storage: the fields
/// every storage has and the type's settings, checked against the schema
/// with Label Studio's messages.
///
/// The REST API builds it from a JSON body and the `storages` command from
/// its flags, so both accept exactly the same fields and values.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageFields {
    /// `title` (at most 256 characters).
    pub title: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `synchronizable` (default `true`).
    pub synchronizable: bool,
    /// The type-specific settings.
    pub settings: Settings,
}

impl StorageFields {
    /// The fields of a new storage whose type has the settings `specs`:
    /// every default.
    pub fn defaults(specs: &[FieldSpec]) -> Self {
        let common = Settings::defaults(&common_fields());
        Self {
            title: None,
            description: None,
            synchronizable: common.bool("synchronizable", true),
            settings: Settings::defaults(specs),
        }
    }

    /// The fields of a stored storage: the base of a partial update.
    pub fn of(storage: &crate::Storage) -> Self {
        Self {
            title: storage.title.clone(),
            description: storage.description.clone(),
            synchronizable: storage.synchronizable,
            settings: storage.settings.clone(),
        }
    }

    /// Applies the fields of `body` (a request body) that the common fields
    /// or `specs` know, checking each; every bad field is reported, and on
    /// an error nothing is applied. Other names are ignored, as the API
    /// ignores them (see [`unknown_fields`] to refuse them).
    pub fn apply(
        &mut self,
        specs: &[FieldSpec],
        body: &Map<String, Value>,
    ) -> Result<(), ValidationErrors> {
        let common_specs = common_fields();
        let mut common = Settings::defaults(&common_specs);
        common.set("title", self.title.clone().into());
        common.set("description", self.description.clone().into());
        common.set("synchronizable", Value::Bool(self.synchronizable));
        let mut errors = ValidationErrors::default();
        if let Err(e) = common.apply(&common_specs, body) {
            errors.merge(e);
        }
        let mut settings = self.settings.clone();
        if let Err(e) = settings.apply(specs, body) {
            errors.merge(e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.title = common.str_or_empty("title");
        self.description = common.str_or_empty("description");
        self.synchronizable = common.bool("synchronizable", true);
        self.settings = settings;
        Ok(())
    }
}

/// The names in `body` that no storage with the settings `specs` has: not
/// a setting, not a common field, not a read-only field and not `project`.
/// The API ignores them; a command line refuses them (there they can only
/// be typos).
pub fn unknown_fields<'a>(
    specs: &[FieldSpec],
    body: &'a Map<String, Value>,
) -> impl Iterator<Item = &'a str> {
    let known: Vec<&'static str> = specs
        .iter()
        .chain(&common_fields())
        .map(|spec| spec.name)
        .chain(READ_ONLY_FIELDS.iter().copied())
        .chain(["project"])
        .collect();
    body.keys()
        .map(String::as_str)
        .filter(move |name| !known.contains(name))
}

/// The import options every backend shares, read from settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Regex matched at the start of the key (or file name).
    pub regex_filter: Option<String>,
    /// Files mode.
    pub use_blob_urls: bool,
    /// Descend into sub-folders.
    pub recursive_scan: bool,
    /// What happens to tasks of changed objects.
    pub on_object_changed: ObjectChanged,
    /// What happens to tasks of deleted objects.
    pub on_object_deleted: ObjectDeleted,
    /// The largest share (percent) of linked objects one sync may treat as
    /// deleted.
    pub deletion_guard: u8,
    /// Split each sync by folder among the workers ([`crate::shards`]).
    pub shard_listing: bool,
}

impl ImportOptions {
    /// Reads the options from validated settings.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            regex_filter: settings.str("regex_filter").map(str::to_string),
            use_blob_urls: settings.bool("use_blob_urls", false),
            recursive_scan: settings.bool("recursive_scan", false),
            on_object_changed: match settings.str("on_object_changed") {
                Some("update") => ObjectChanged::Update,
                _ => ObjectChanged::Keep,
            },
            on_object_deleted: match settings.str("on_object_deleted") {
                Some("mark") => ObjectDeleted::Mark,
                Some("delete") => ObjectDeleted::Delete,
                _ => ObjectDeleted::Keep,
            },
            deletion_guard: settings
                .int("deletion_guard")
                .unwrap_or(DEFAULT_DELETION_GUARD)
                .clamp(0, 100) as u8,
            shard_listing: settings.bool(crate::shards::SHARD_LISTING_FIELD, false),
        }
    }
}

/// Checks the schema-independent rules of a settings map for `kind`: the
/// regex compiles, and `shard_listing` comes with `recursive_scan` and
/// without deletions (removing the tasks of deleted objects needs one
/// whole listing).
pub fn check_import_rules(settings: &Settings, kind: StorageKind) -> Result<(), ValidationErrors> {
    if kind != StorageKind::Import {
        return Ok(());
    }
    if let Some(pattern) = settings.str("regex_filter") {
        if let Err(err) = crate::filter::compile_anchored(pattern) {
            return Err(ValidationErrors::field("regex_filter", err));
        }
    }
    let options = ImportOptions::from_settings(settings);
    if options.shard_listing {
        let field = crate::shards::SHARD_LISTING_FIELD;
        if !options.recursive_scan {
            return Err(ValidationErrors::field(
                field,
                "Splitting the listing by folder needs recursive_scan: true.",
            ));
        }
        if options.on_object_deleted != ObjectDeleted::Keep {
            return Err(ValidationErrors::field(
                field,
                "A sharded sync cannot remove the tasks of deleted objects (that needs one \
                 whole listing); set on_object_deleted to keep, or shard_listing to false.",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn coerces_like_drf() {
        let ttl = &presign_fields()[1];
        assert_eq!(ttl.coerce(&json!("15")).unwrap(), json!(15));
        assert_eq!(
            ttl.coerce(&json!(40000)).unwrap_err(),
            "Ensure this value is less than or equal to 10080."
        );
        assert_eq!(
            ttl.coerce(&json!("x")).unwrap_err(),
            "A valid integer is required."
        );
        let flag = FieldSpec::boolean("use_blob_urls", false, "");
        assert_eq!(flag.coerce(&json!("true")).unwrap(), json!(true));
        assert_eq!(flag.coerce(&json!(0)).unwrap(), json!(false));
        assert_eq!(
            flag.coerce(&json!("maybe")).unwrap_err(),
            "Must be a valid boolean."
        );
        assert_eq!(
            flag.coerce(&Value::Null).unwrap_err(),
            "This field may not be null."
        );
        let title = &common_fields()[0];
        assert_eq!(
            title.coerce(&json!("x".repeat(257))).unwrap_err(),
            "Ensure this field has no more than 256 characters."
        );
        assert!(title.coerce(&json!("é".repeat(256))).is_ok());
        assert_eq!(
            title.coerce(&json!(["a"])).unwrap_err(),
            "Not a valid string."
        );
    }

    #[test]
    fn partial_update_keeps_secrets_and_empty_clears() {
        let specs = vec![
            FieldSpec::string("bucket", ""),
            FieldSpec::string("aws_secret_access_key", "").secret(),
        ];
        let mut settings = Settings::defaults(&specs);
        settings
            .apply(
                &specs,
                &body(json!({"bucket": "b", "aws_secret_access_key": "s3cr3t"})),
            )
            .unwrap();
        settings
            .apply(&specs, &body(json!({"bucket": "c"})))
            .unwrap();
        assert_eq!(settings.str("aws_secret_access_key"), Some("s3cr3t"));
        assert!(!settings
            .public(&specs)
            .contains_key("aws_secret_access_key"));
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        settings
            .apply(&specs, &body(json!({"aws_secret_access_key": ""})))
            .unwrap();
        assert_eq!(settings.str("aws_secret_access_key"), None);
    }

    #[test]
    fn storage_fields_from_a_body_check_every_field_and_keep_the_base() {
        let specs = vec![
            FieldSpec::string("bucket", ""),
            FieldSpec::string("aws_secret_access_key", "").secret(),
        ];
        let mut fields = StorageFields::defaults(&specs);
        assert_eq!(fields.title, None);
        assert!(fields.synchronizable);
        fields
            .apply(
                &specs,
                &body(json!({
                    "title": "t", "synchronizable": "false", "bucket": "b",
                    "aws_secret_access_key": "s3cr3t", "id": 9, "typo": 1,
                })),
            )
            .unwrap();
        assert_eq!(fields.title.as_deref(), Some("t"));
        assert_eq!(fields.description, None);
        assert!(!fields.synchronizable);
        assert_eq!(fields.settings.str("bucket"), Some("b"));

        // A partial update keeps what it does not name; a bad body changes
        // nothing and names every bad field.
        let before = fields.clone();
        let err = fields
            .apply(
                &specs,
                &body(
                    json!({"title": "x".repeat(257), "synchronizable": "maybe", "bucket": ["b"]}),
                ),
            )
            .unwrap_err();
        assert_eq!(
            err.fields().collect::<Vec<_>>(),
            vec!["bucket", "synchronizable", "title"]
        );
        assert_eq!(fields, before);
        fields
            .apply(&specs, &body(json!({"description": "", "title": null})))
            .unwrap();
        assert_eq!(fields.description.as_deref(), Some(""));
        assert_eq!(fields.title, None);
        assert_eq!(fields.settings.str("aws_secret_access_key"), Some("s3cr3t"));

        let sent = body(json!({"bucket": "b", "id": 1, "project": 2, "title": "t", "typo": 1}));
        assert_eq!(
            unknown_fields(&specs, &sent).collect::<Vec<_>>(),
            vec!["typo"]
        );
    }

    #[test]
    fn errors_name_every_bad_field() {
        let mut specs = import_fields();
        specs.extend(presign_fields());
        let mut settings = Settings::defaults(&specs);
        let err = settings
            .apply(
                &specs,
                &body(json!({"use_blob_urls": "x", "presign_ttl": -1})),
            )
            .unwrap_err();
        assert_eq!(
            err.fields().collect::<Vec<_>>(),
            vec!["presign_ttl", "use_blob_urls"]
        );
    }
}

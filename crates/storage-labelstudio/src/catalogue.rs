//! Label Studio's storage tables: one table (and one id sequence) per type
//! and kind, the type's connection fields in a shared "mixin" table for
//! every type but S3, and one link table per storage table.
//!
//! The storage system needs one id per storage across every table, so a
//! storage here is `label_studio_id * SLOTS + slot`, the slot naming its
//! table; routes and answers show Label Studio's own id
//! ([`StorageRepository::route_id`](storage_core::persist::StorageRepository::route_id)).

use storage_core::StorageKind;

/// How a connection field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// `text` (`NULL` when unset).
    Text,
    /// `bool`.
    Bool,
    /// An integer (`presign_ttl`, Redis's `db`).
    Int,
}

/// A connection field: its name (the same on the wire and in the table),
/// how it is stored, and whether it lives in the mixin table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) column: Column,
    pub(crate) in_mixin: bool,
}

const fn mixin(name: &'static str, column: Column) -> Field {
    Field {
        name,
        column,
        in_mixin: true,
    }
}

const fn own(name: &'static str, column: Column) -> Field {
    Field {
        name,
        column,
        in_mixin: false,
    }
}

/// One storage table of Label Studio.
#[derive(Debug)]
pub(crate) struct Table {
    /// Its place in [`TABLES`]: the low part of the storage ids.
    pub(crate) slot: i64,
    /// The type's name on the wire (`localfiles`, `s3`, `gcs`, `azure`,
    /// `redis`).
    pub(crate) storage_type: &'static str,
    pub(crate) kind: StorageKind,
    /// `io_storages_s3importstorage`, ...
    pub(crate) name: &'static str,
    /// The table of its connection fields, or `None` (S3 keeps them in
    /// `name`).
    pub(crate) mixin: Option<&'static str>,
    /// Its primary key: `id`, or the pointer into the mixin table.
    pub(crate) key: &'static str,
    /// Its link table (import: object keys to tasks; export: annotations).
    pub(crate) links: &'static str,
    /// The connection fields of its type.
    pub(crate) fields: &'static [Field],
    /// The fields of this table only (`presign`, `can_delete_objects`, ...).
    pub(crate) extra: &'static [Field],
}

impl Table {
    /// The storage system's id of this table's storage `id`; `None` for
    /// ids no storage can have (not positive, or too large to encode).
    pub(crate) fn storage_id(&self, id: i64) -> Option<i64> {
        (id > 0)
            .then(|| id.checked_mul(SLOTS)?.checked_add(self.slot))
            .flatten()
    }

    /// Every field: the type's, then the table's.
    pub(crate) fn all_fields(&self) -> impl Iterator<Item = &'static Field> {
        self.fields.iter().chain(self.extra)
    }

    /// `FROM` the table (`s`) joined with its mixin (`m`).
    pub(crate) fn joined(&self) -> String {
        match self.mixin {
            Some(mixin) => format!("{} s JOIN {mixin} m ON m.id = s.{}", self.name, self.key),
            None => format!("{} s", self.name),
        }
    }

    /// The column of `field`, qualified by its table's alias.
    pub(crate) fn column(&self, field: &Field) -> String {
        let alias = if field.in_mixin && self.mixin.is_some() {
            "m"
        } else {
            "s"
        };
        format!("{alias}.{}", field.name)
    }
}

/// How many tables ids leave room for.
pub(crate) const SLOTS: i64 = 16;

/// The table of storage `id` and the id Label Studio gives it.
pub(crate) fn table_of(id: i64) -> Option<(&'static Table, i64)> {
    let table = TABLES.get(usize::try_from(id.rem_euclid(SLOTS)).ok()?)?;
    (id > 0).then_some((table, id.div_euclid(SLOTS)))
}

/// The table of `storage_type` and `kind`.
pub(crate) fn table_for(kind: StorageKind, storage_type: &str) -> Option<&'static Table> {
    TABLES
        .iter()
        .find(|t| t.kind == kind && t.storage_type == storage_type)
}

use Column::{Bool, Int, Text};
use StorageKind::{Export, Import};

const LOCAL_FILES: &[Field] = &[
    mixin("path", Text),
    mixin("regex_filter", Text),
    mixin("use_blob_urls", Bool),
];
const S3: &[Field] = &[
    own("bucket", Text),
    own("prefix", Text),
    own("regex_filter", Text),
    own("use_blob_urls", Bool),
    own("aws_access_key_id", Text),
    own("aws_secret_access_key", Text),
    own("aws_session_token", Text),
    own("aws_sse_kms_key_id", Text),
    own("region_name", Text),
    own("s3_endpoint", Text),
];
const GCS: &[Field] = &[
    mixin("bucket", Text),
    mixin("prefix", Text),
    mixin("regex_filter", Text),
    mixin("use_blob_urls", Bool),
    mixin("google_application_credentials", Text),
    mixin("google_project_id", Text),
];
const AZURE: &[Field] = &[
    mixin("container", Text),
    mixin("prefix", Text),
    mixin("regex_filter", Text),
    mixin("use_blob_urls", Bool),
    mixin("account_name", Text),
    mixin("account_key", Text),
];
const REDIS: &[Field] = &[
    mixin("path", Text),
    mixin("host", Text),
    mixin("port", Text),
    mixin("password", Text),
    mixin("regex_filter", Text),
    mixin("use_blob_urls", Bool),
    own("db", Int),
];

/// Every storage table both Label Studio (open source) and this system
/// have. A slot is an index here: never reorder, only append.
pub(crate) static TABLES: &[Table] = &[
    Table {
        slot: 0,
        storage_type: "localfiles",
        kind: Import,
        name: "io_storages_localfilesimportstorage",
        mixin: Some("io_storages_localfilesmixin"),
        key: "localfilesmixin_ptr_id",
        links: "io_storages_localfilesimportstoragelink",
        fields: LOCAL_FILES,
        extra: &[own("recursive_scan", Bool)],
    },
    Table {
        slot: 1,
        storage_type: "localfiles",
        kind: Export,
        name: "io_storages_localfilesexportstorage",
        mixin: Some("io_storages_localfilesmixin"),
        key: "localfilesmixin_ptr_id",
        links: "io_storages_localfilesexportstoragelink",
        fields: LOCAL_FILES,
        extra: &[own("can_delete_objects", Bool)],
    },
    Table {
        slot: 2,
        storage_type: "s3",
        kind: Import,
        name: "io_storages_s3importstorage",
        mixin: None,
        key: "id",
        links: "io_storages_s3importstoragelink",
        fields: S3,
        extra: &[
            own("presign", Bool),
            own("presign_ttl", Int),
            own("recursive_scan", Bool),
        ],
    },
    Table {
        slot: 3,
        storage_type: "s3",
        kind: Export,
        name: "io_storages_s3exportstorage",
        mixin: None,
        key: "id",
        links: "io_storages_s3exportstoragelink",
        fields: S3,
        extra: &[own("can_delete_objects", Bool)],
    },
    Table {
        slot: 4,
        storage_type: "gcs",
        kind: Import,
        name: "io_storages_gcsimportstorage",
        mixin: Some("io_storages_gcsstoragemixin"),
        key: "gcsstoragemixin_ptr_id",
        links: "io_storages_gcsimportstoragelink",
        fields: GCS,
        extra: &[
            own("presign", Bool),
            own("presign_ttl", Int),
            own("recursive_scan", Bool),
        ],
    },
    Table {
        slot: 5,
        storage_type: "gcs",
        kind: Export,
        name: "io_storages_gcsexportstorage",
        mixin: Some("io_storages_gcsstoragemixin"),
        key: "gcsstoragemixin_ptr_id",
        links: "io_storages_gcsexportstoragelink",
        fields: GCS,
        extra: &[own("can_delete_objects", Bool)],
    },
    Table {
        slot: 6,
        storage_type: "azure",
        kind: Import,
        name: "io_storages_azureblobimportstorage",
        mixin: Some("io_storages_azureblobstoragemixin"),
        key: "azureblobstoragemixin_ptr_id",
        links: "io_storages_azureblobimportstoragelink",
        fields: AZURE,
        extra: &[
            own("presign", Bool),
            own("presign_ttl", Int),
            own("recursive_scan", Bool),
        ],
    },
    Table {
        slot: 7,
        storage_type: "azure",
        kind: Export,
        name: "io_storages_azureblobexportstorage",
        mixin: Some("io_storages_azureblobstoragemixin"),
        key: "azureblobstoragemixin_ptr_id",
        links: "io_storages_azureblobexportstoragelink",
        fields: AZURE,
        extra: &[own("can_delete_objects", Bool)],
    },
    Table {
        slot: 8,
        storage_type: "redis",
        kind: Import,
        name: "io_storages_redisimportstorage",
        mixin: Some("io_storages_redisstoragemixin"),
        key: "redisstoragemixin_ptr_id",
        links: "io_storages_redisimportstoragelink",
        fields: REDIS,
        extra: &[],
    },
    Table {
        slot: 9,
        storage_type: "redis",
        kind: Export,
        name: "io_storages_redisexportstorage",
        mixin: Some("io_storages_redisstoragemixin"),
        key: "redisstoragemixin_ptr_id",
        links: "io_storages_redisexportstoragelink",
        fields: REDIS,
        extra: &[own("can_delete_objects", Bool)],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_its_index_and_ids_round_trip() {
        for (index, table) in TABLES.iter().enumerate() {
            assert_eq!(table.slot, index as i64, "{}", table.name);
            let id = table.storage_id(41).expect("an id");
            assert_eq!(table.storage_id(0), None);
            assert_eq!(table.storage_id(i64::MAX), None, "no overflow");
            let (found, label_studio_id) = table_of(id).expect("a table");
            assert_eq!((found.name, label_studio_id), (table.name, 41));
            assert!(std::ptr::eq(
                table_for(table.kind, table.storage_type).expect("found"),
                table
            ));
        }
        assert!(table_of(0).is_none());
        assert!(table_of(-3).is_none());
        assert!(table_of(SLOTS * 7 + 12).is_none(), "an unused slot");
    }

    #[test]
    fn fields_are_the_type_s_then_the_table_s() {
        let s3 = table_for(Import, "s3").expect("s3");
        let names: Vec<&str> = s3.all_fields().map(|f| f.name).collect();
        assert_eq!(names.first(), Some(&"bucket"));
        assert_eq!(names.last(), Some(&"recursive_scan"));
        assert_eq!(names.len(), S3.len() + 3);
        let local = table_for(Import, "localfiles").expect("localfiles");
        assert_eq!(local.column(&local.fields[0]), "m.path");
        assert_eq!(local.column(&local.extra[0]), "s.recursive_scan");
    }
}

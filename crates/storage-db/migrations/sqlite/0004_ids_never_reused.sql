-- Ids are never reused (issue 12, finding 11). A SQLite `INTEGER PRIMARY
-- KEY` without AUTOINCREMENT hands the id of the newest row, once deleted,
-- to the next row: a new annotation of another organisation then gets the
-- id an export object was named after, and overwrites it. PostgreSQL's
-- sequences never go back, so its schema needs no counterpart.
--
-- Each table whose ids leave the server (and storage_links, for one rule)
-- is rebuilt with AUTOINCREMENT by SQLite's documented procedure (make the
-- new table, copy, drop the old one, rename), keeping rows, ids, indexes
-- and foreign keys; `sqlite_sequence` starts at each table's largest id.
-- Dropping a table that others reference would cascade into them while
-- foreign keys are enforced, so `SqliteDatabase` runs the migrations with
-- them off (a transaction cannot switch them) and checks them afterwards.
-- The guard below fails the migration rather than lose rows if they are on.

CREATE TEMP TABLE migration_0004_guard (foreign_keys INTEGER CHECK (foreign_keys = 0));
INSERT INTO migration_0004_guard SELECT foreign_keys FROM pragma_foreign_keys;
DROP TABLE migration_0004_guard;

CREATE TABLE organizations_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    title       TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);
INSERT INTO organizations_new SELECT * FROM organizations;
DROP TABLE organizations;
ALTER TABLE organizations_new RENAME TO organizations;

CREATE TABLE users_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    email            TEXT    NOT NULL UNIQUE,
    first_name       TEXT    NOT NULL DEFAULT '',
    last_name        TEXT    NOT NULL DEFAULT '',
    organization_id  INTEGER NOT NULL REFERENCES organizations (id),
    -- SHA-256 of the API token, lower-case hex; the token itself is never stored.
    token_hash       TEXT    UNIQUE,
    created_at       TEXT    NOT NULL
);
INSERT INTO users_new SELECT * FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;

CREATE TABLE projects_new (
    id                          INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id             INTEGER NOT NULL REFERENCES organizations (id),
    title                       TEXT    NOT NULL DEFAULT '',
    description                 TEXT    NOT NULL DEFAULT '',
    label_config                TEXT    NOT NULL DEFAULT '<View></View>',
    created_by                  INTEGER NOT NULL REFERENCES users (id),
    created_at                  TEXT    NOT NULL,
    maximum_annotations         INTEGER NOT NULL DEFAULT 1,
    task_number                 INTEGER NOT NULL DEFAULT 0,
    finished_task_number        INTEGER NOT NULL DEFAULT 0,
    total_annotations_number    INTEGER NOT NULL DEFAULT 0,
    total_predictions_number    INTEGER NOT NULL DEFAULT 0,
    num_tasks_with_annotations  INTEGER NOT NULL DEFAULT 0,
    useful_annotation_number    INTEGER NOT NULL DEFAULT 0,
    ground_truth_number         INTEGER NOT NULL DEFAULT 0,
    skipped_annotations_number  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO projects_new SELECT * FROM projects;
DROP TABLE projects;
ALTER TABLE projects_new RENAME TO projects;
CREATE INDEX projects_organization ON projects (organization_id);
CREATE INDEX projects_organization_newest ON projects (organization_id, id);

CREATE TABLE tasks_new (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id             INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    inner_id               INTEGER NOT NULL,
    data                   TEXT    NOT NULL,
    meta                   TEXT    NOT NULL DEFAULT '{}',
    allow_skip             INTEGER NOT NULL DEFAULT 1,
    overlap                INTEGER NOT NULL DEFAULT 1,
    is_labeled             INTEGER NOT NULL DEFAULT 0,
    total_annotations      INTEGER NOT NULL DEFAULT 0,
    cancelled_annotations  INTEGER NOT NULL DEFAULT 0,
    total_predictions      INTEGER NOT NULL DEFAULT 0,
    created_at             TEXT    NOT NULL,
    updated_at             TEXT    NOT NULL,
    updated_by             INTEGER REFERENCES users (id) ON DELETE SET NULL
);
INSERT INTO tasks_new SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE UNIQUE INDEX tasks_project_inner ON tasks (project_id, inner_id);

CREATE TABLE annotations_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id        INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    project_id     INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    completed_by   INTEGER REFERENCES users (id) ON DELETE SET NULL,
    result         TEXT    NOT NULL DEFAULT '[]',
    was_cancelled  INTEGER NOT NULL DEFAULT 0,
    ground_truth   INTEGER NOT NULL DEFAULT 0,
    lead_time      REAL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    updated_by     INTEGER REFERENCES users (id) ON DELETE SET NULL
);
INSERT INTO annotations_new SELECT * FROM annotations;
DROP TABLE annotations;
ALTER TABLE annotations_new RENAME TO annotations;
CREATE INDEX annotations_task ON annotations (task_id);
CREATE INDEX annotations_project ON annotations (project_id, id);
CREATE INDEX annotations_project_author ON annotations (project_id, completed_by, task_id);

CREATE TABLE predictions_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id        INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    project_id     INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    result         TEXT    NOT NULL DEFAULT '[]',
    score          REAL,
    model_version  TEXT    NOT NULL DEFAULT '',
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);
INSERT INTO predictions_new SELECT * FROM predictions;
DROP TABLE predictions;
ALTER TABLE predictions_new RENAME TO predictions;
CREATE INDEX predictions_task ON predictions (task_id);

CREATE TABLE storages_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL CHECK (kind IN ('import', 'export')),
    type             TEXT    NOT NULL,
    project_id       INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title            TEXT,
    description      TEXT,
    created_at       TEXT    NOT NULL,
    synchronizable   INTEGER NOT NULL DEFAULT 1,
    settings         TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL DEFAULT 'initialized',
    last_sync        TEXT,
    last_sync_count  INTEGER,
    last_sync_job    TEXT,
    traceback        TEXT,
    meta             TEXT    NOT NULL DEFAULT '{}',
    lease_until      TEXT
);
INSERT INTO storages_new SELECT * FROM storages;
DROP TABLE storages;
ALTER TABLE storages_new RENAME TO storages;
CREATE INDEX storages_project_kind ON storages (project_id, kind);
CREATE INDEX storages_status ON storages (status);

CREATE TABLE storage_links_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    storage_id     INTEGER NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    task_id        INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    key            TEXT    NOT NULL,
    row_index      INTEGER,
    etag           TEXT,
    size           INTEGER,
    last_modified  TEXT,
    object_exists  INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT    NOT NULL
);
INSERT INTO storage_links_new SELECT * FROM storage_links;
DROP TABLE storage_links;
ALTER TABLE storage_links_new RENAME TO storage_links;
CREATE UNIQUE INDEX storage_links_dedupe
    ON storage_links (storage_id, key, COALESCE(row_index, -1));
CREATE INDEX storage_links_task ON storage_links (task_id);


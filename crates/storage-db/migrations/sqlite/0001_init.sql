-- Initial schema (SQLite). A PostgreSQL migration mirrors it with
-- BIGSERIAL/BIGINT ids, BOOLEAN flags, TIMESTAMPTZ times and JSONB documents.
--
-- Conventions:
--   * times are RFC 3339 UTC text with microseconds, fixed width
--     ("2026-11-23T07:46:02.290639Z"), so text order is time order;
--   * JSON documents (task data, settings, results, meta) are TEXT;
--   * flags are INTEGER 0/1.

CREATE TABLE organizations (
    id          INTEGER PRIMARY KEY,
    title       TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);

CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    email            TEXT    NOT NULL UNIQUE,
    first_name       TEXT    NOT NULL DEFAULT '',
    last_name        TEXT    NOT NULL DEFAULT '',
    organization_id  INTEGER NOT NULL REFERENCES organizations (id),
    -- SHA-256 of the API token, lower-case hex; the token itself is never stored.
    token_hash       TEXT    UNIQUE,
    created_at       TEXT    NOT NULL
);

CREATE TABLE projects (
    id                   INTEGER PRIMARY KEY,
    organization_id      INTEGER NOT NULL REFERENCES organizations (id),
    title                TEXT    NOT NULL DEFAULT '',
    description          TEXT    NOT NULL DEFAULT '',
    label_config         TEXT    NOT NULL DEFAULT '<View></View>',
    created_by           INTEGER NOT NULL REFERENCES users (id),
    created_at           TEXT    NOT NULL,
    maximum_annotations  INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX projects_organization ON projects (organization_id);

CREATE TABLE tasks (
    id                     INTEGER PRIMARY KEY,
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

-- Position of a task in its project; also serves "max(inner_id)" and
-- listing a project's tasks.
CREATE UNIQUE INDEX tasks_project_inner ON tasks (project_id, inner_id);

CREATE TABLE annotations (
    id             INTEGER PRIMARY KEY,
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

CREATE INDEX annotations_task ON annotations (task_id);
-- Export pages through a project's annotations by id.
CREATE INDEX annotations_project ON annotations (project_id, id);

CREATE TABLE predictions (
    id             INTEGER PRIMARY KEY,
    task_id        INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    project_id     INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    result         TEXT    NOT NULL DEFAULT '[]',
    score          REAL,
    model_version  TEXT    NOT NULL DEFAULT '',
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);

CREATE INDEX predictions_task ON predictions (task_id);

CREATE TABLE storages (
    id               INTEGER PRIMARY KEY,
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

CREATE INDEX storages_project_kind ON storages (project_id, kind);
CREATE INDEX storages_status ON storages (status);

CREATE TABLE storage_links (
    id             INTEGER PRIMARY KEY,
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

-- The dedupe index: one task per (storage, key, row) whether or not the
-- object holds several tasks (row_index NULL counts as -1). Its prefix
-- (storage_id, key) also serves the "which keys are linked" lookups.
CREATE UNIQUE INDEX storage_links_dedupe
    ON storage_links (storage_id, key, COALESCE(row_index, -1));
-- Cascading task deletes and "the first link of a task".
CREATE INDEX storage_links_task ON storage_links (task_id);

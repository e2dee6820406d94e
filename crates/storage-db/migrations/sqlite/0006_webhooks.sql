-- Mirrored in migrations/postgres/0006_webhooks.sql.
-- Webhooks (Label Studio's `webhook` and `webhook_action` tables) and their
-- outbox: an event is written in the same transaction as the change it
-- announces, with one delivery row per webhook that wants it; a delivery
-- row lives until its webhook accepted it or its retries ran out.

CREATE TABLE webhooks (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id       INTEGER NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id            INTEGER REFERENCES projects (id) ON DELETE CASCADE,
    url                   TEXT    NOT NULL,
    send_payload          INTEGER NOT NULL DEFAULT 1,
    send_for_all_actions  INTEGER NOT NULL DEFAULT 1,
    headers               TEXT    NOT NULL DEFAULT '{}',
    is_active             INTEGER NOT NULL DEFAULT 1,
    -- The HMAC key of the signature header; never shown.
    secret                TEXT,
    created_at            TEXT    NOT NULL,
    updated_at            TEXT    NOT NULL,
    -- Delivery state: the last attempt, its HTTP status (NULL when no
    -- answer came) and error, the events delivered and given up, and the
    -- failed attempts since the last success.
    last_attempt_at       TEXT,
    last_status           INTEGER,
    last_error            TEXT,
    delivered             INTEGER NOT NULL DEFAULT 0,
    failed                INTEGER NOT NULL DEFAULT 0,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX webhooks_organization_project ON webhooks (organization_id, project_id);

CREATE TABLE webhook_actions (
    webhook_id  INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    action      TEXT    NOT NULL,
    PRIMARY KEY (webhook_id, action)
);

CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id       INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         INTEGER NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    lease_until      TEXT,
    last_error       TEXT
);

-- A webhook's deliveries in order: the head of each webhook's queue.
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- On-save exports: written in the transaction of the annotation change,
-- one row per export storage of the project, removed once the storage
-- has it. A row whose retries ran out is kept (`given_up`) until an
-- export sync of its storage writes every annotation again.
CREATE TABLE export_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    storage_id       INTEGER NOT NULL REFERENCES storages (id) ON DELETE CASCADE,
    -- No foreign key: a deletion is exported after its annotation is gone.
    annotation_id    INTEGER NOT NULL,
    deleted          INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    lease_until      TEXT,
    last_error       TEXT,
    given_up         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT    NOT NULL
);

-- One annotation's exports to one storage in order: the head of each queue.
CREATE INDEX export_deliveries_order ON export_deliveries (storage_id, annotation_id, id);

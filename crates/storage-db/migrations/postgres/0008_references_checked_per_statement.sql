-- PostgreSQL only: SQLite keeps its foreign keys, whose checks cost it
-- little.
--
-- A foreign key is checked once per inserted row, each check a query of its
-- own. Of inserting a batch of 1,000 tasks and their 1,000 links, those
-- 3,000 queries were 60% (docs/benchmarks.md). The foreign keys a sync
-- writes through, tasks.project_id and storage_links.storage_id and
-- .task_id, become triggers that do the same per statement:
--
-- * an insert locks the rows it references FOR KEY SHARE, as a foreign key
--   check does, and fails with foreign_key_violation if one is missing;
-- * a deletion deletes the rows referencing what it deleted, as ON DELETE
--   CASCADE did;
-- * the references of a row never change afterwards.
--
-- Under READ COMMITTED each statement of a PL/pgSQL function sees what was
-- committed before it began, so these behave as the foreign keys did with
-- concurrent writers: an insert waits for a transaction deleting a row it
-- references and then fails; a deletion waits for a transaction inserting
-- a row that references it, then deletes that row too.
--
-- The ids are gathered into arrays and looked up with `= ANY`, which is
-- always an index scan: a transition table has no statistics to plan a
-- join with.

ALTER TABLE tasks DROP CONSTRAINT tasks_project_id_fkey;
ALTER TABLE storage_links DROP CONSTRAINT storage_links_storage_id_fkey;
ALTER TABLE storage_links DROP CONSTRAINT storage_links_task_id_fkey;

-- Locks the rows of `parent` with the given ids FOR KEY SHARE, except those
-- this transaction inserted (no other transaction sees them, so none can
-- delete them before this one ends), and fails unless all of them exist.
CREATE FUNCTION lock_referenced(parent REGCLASS, ids BIGINT[], child TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    wanted BIGINT := cardinality(ids);
    found BIGINT;
BEGIN
    EXECUTE format('SELECT COUNT(*) FROM %s WHERE id = ANY ($1) AND age(xmin) = 0', parent)
        INTO found USING ids;
    IF found < wanted THEN
        EXECUTE format('SELECT 1 FROM %s WHERE id = ANY ($1) AND age(xmin) <> 0 '
                       'FOR KEY SHARE', parent)
            USING ids;
        EXECUTE format('SELECT COUNT(*) FROM %s WHERE id = ANY ($1)', parent)
            INTO found USING ids;
        IF found < wanted THEN
            RAISE EXCEPTION 'insert into % references a row of % that does not exist',
                child, parent USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
END $$;

CREATE FUNCTION tasks_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lock_referenced('projects',
        (SELECT array_agg(DISTINCT project_id) FROM inserted), 'tasks');
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_references
    AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_check_references();

CREATE FUNCTION storage_links_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lock_referenced('storages',
        (SELECT array_agg(DISTINCT storage_id) FROM inserted), 'storage_links');
    PERFORM lock_referenced('tasks',
        (SELECT array_agg(DISTINCT task_id) FROM inserted), 'storage_links');
    RETURN NULL;
END $$;

CREATE TRIGGER storage_links_references
    AFTER INSERT ON storage_links REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION storage_links_check_references();

CREATE FUNCTION references_cannot_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the references of a row of % cannot change', TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation';
END $$;

CREATE TRIGGER tasks_fixed_references
    BEFORE UPDATE OF project_id ON tasks
    FOR EACH ROW WHEN (OLD.project_id <> NEW.project_id)
    EXECUTE FUNCTION references_cannot_change();

CREATE TRIGGER storage_links_fixed_references
    BEFORE UPDATE OF storage_id, task_id ON storage_links
    FOR EACH ROW WHEN (OLD.storage_id <> NEW.storage_id OR OLD.task_id <> NEW.task_id)
    EXECUTE FUNCTION references_cannot_change();

CREATE FUNCTION tasks_of_deleted_projects() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasks WHERE project_id = ANY (ARRAY(SELECT id FROM deleted));
    RETURN NULL;
END $$;

CREATE TRIGGER projects_delete_tasks
    AFTER DELETE ON projects REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_of_deleted_projects();

CREATE FUNCTION storage_links_of_deleted_storages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM storage_links WHERE storage_id = ANY (ARRAY(SELECT id FROM deleted));
    RETURN NULL;
END $$;

CREATE TRIGGER storages_delete_links
    AFTER DELETE ON storages REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION storage_links_of_deleted_storages();

CREATE FUNCTION storage_links_of_deleted_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM storage_links WHERE task_id = ANY (ARRAY(SELECT id FROM deleted));
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_delete_links
    AFTER DELETE ON tasks REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION storage_links_of_deleted_tasks();

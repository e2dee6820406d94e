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

-- An AFTER INSERT trigger's arguments are pairs (column, referenced
-- table). For each pair it locks the referenced rows FOR KEY SHARE, except
-- those this transaction inserted (no other transaction sees them, so none
-- can delete them before this one ends), and fails unless all of them
-- exist.
CREATE FUNCTION check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pair INT := 0;
    ids BIGINT[];
    found BIGINT;
BEGIN
    WHILE pair < TG_NARGS LOOP
        EXECUTE format('SELECT array_agg(DISTINCT %I) FROM inserted', TG_ARGV[pair])
            INTO ids;
        EXECUTE format('SELECT COUNT(*) FROM %I WHERE id = ANY ($1) AND age(xmin) = 0',
                       TG_ARGV[pair + 1])
            INTO found USING ids;
        IF found < cardinality(ids) THEN
            EXECUTE format('SELECT 1 FROM %I WHERE id = ANY ($1) AND age(xmin) <> 0 '
                           'FOR KEY SHARE', TG_ARGV[pair + 1])
                USING ids;
            EXECUTE format('SELECT COUNT(*) FROM %I WHERE id = ANY ($1)', TG_ARGV[pair + 1])
                INTO found USING ids;
            IF found < cardinality(ids) THEN
                RAISE EXCEPTION 'insert into % references a row of % that does not exist',
                    TG_TABLE_NAME, TG_ARGV[pair + 1] USING ERRCODE = 'foreign_key_violation';
            END IF;
        END IF;
        pair := pair + 2;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_references
    AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION check_references('project_id', 'projects');

CREATE TRIGGER storage_links_references
    AFTER INSERT ON storage_links REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION check_references('storage_id', 'storages', 'task_id', 'tasks');

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

-- An AFTER DELETE trigger's arguments (table, column): deletes the rows of
-- that table whose column names a deleted row.
CREATE FUNCTION delete_referencing() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I WHERE %I = ANY ($1)', TG_ARGV[0], TG_ARGV[1])
        USING ARRAY(SELECT id FROM deleted);
    RETURN NULL;
END $$;

CREATE TRIGGER projects_delete_tasks
    AFTER DELETE ON projects REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION delete_referencing('tasks', 'project_id');

CREATE TRIGGER storages_delete_links
    AFTER DELETE ON storages REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION delete_referencing('storage_links', 'storage_id');

CREATE TRIGGER tasks_delete_links
    AFTER DELETE ON tasks REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION delete_referencing('storage_links', 'task_id');

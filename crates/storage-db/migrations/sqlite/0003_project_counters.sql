-- Label Studio's project counters, kept on the project row and changed in
-- the transaction that changes tasks or annotations, so that reading a
-- project or a page of its tasks never counts its tasks (it did, with a
-- scan of every task of the project on each read). Existing rows are
-- counted once here.
ALTER TABLE projects ADD COLUMN task_number                INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN finished_task_number       INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN total_annotations_number   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN total_predictions_number   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN num_tasks_with_annotations INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN useful_annotation_number   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN ground_truth_number        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN skipped_annotations_number INTEGER NOT NULL DEFAULT 0;

UPDATE projects SET
    task_number = (SELECT COUNT(*) FROM tasks t WHERE t.project_id = projects.id),
    finished_task_number = (SELECT COUNT(*) FROM tasks t
                            WHERE t.project_id = projects.id AND t.is_labeled),
    total_annotations_number = (SELECT COUNT(*) FROM annotations a
                                WHERE a.project_id = projects.id AND NOT a.was_cancelled),
    total_predictions_number = (SELECT COUNT(*) FROM predictions p
                                WHERE p.project_id = projects.id),
    num_tasks_with_annotations = (SELECT COUNT(DISTINCT a.task_id) FROM annotations a
                                  WHERE a.project_id = projects.id
                                    AND NOT a.was_cancelled AND NOT a.ground_truth),
    useful_annotation_number = (SELECT COUNT(*) FROM annotations a
                                WHERE a.project_id = projects.id
                                  AND NOT a.was_cancelled AND NOT a.ground_truth),
    ground_truth_number = (SELECT COUNT(*) FROM annotations a
                           WHERE a.project_id = projects.id AND a.ground_truth),
    skipped_annotations_number = (SELECT COUNT(*) FROM annotations a
                                  WHERE a.project_id = projects.id AND a.was_cancelled);

-- A caller's queue (`queue_total`, `queue_done`): the tasks of a project
-- the caller annotated, read from the index alone.
CREATE INDEX annotations_project_author ON annotations (project_id, completed_by, task_id);
-- The projects list of an organisation, newest first.
CREATE INDEX projects_organization_newest ON projects (organization_id, id);

//! What the SQL of both engines uses that does not depend on the engine:
//! column lists, the values of new task rows, and tests of database errors.

use serde_json::Value;
use storage_core::parse::ParsedTask;
use storage_core::persist::{NewTask, ObjectLink};

use crate::shape::Counters;

/// Storage columns, as `storage_from_row` reads them.
pub(crate) const STORAGE_COLUMNS: &str =
    "id, kind, type, project_id, title, description, created_at, \
    synchronizable, settings, status, last_sync, last_sync_count, last_sync_job, traceback, \
    meta, lease_until";

/// Task columns under the alias `t`, named apart from annotation columns.
pub(crate) const TASK_COLUMNS: &str =
    "t.id AS t_id, t.project_id AS t_project_id, t.inner_id AS t_inner_id, \
    t.data AS t_data, t.meta AS t_meta, t.created_at AS t_created_at, \
    t.updated_at AS t_updated_at, t.is_labeled AS t_is_labeled, t.overlap AS t_overlap, \
    t.allow_skip AS t_allow_skip, t.total_annotations AS t_total_annotations, \
    t.cancelled_annotations AS t_cancelled_annotations, \
    t.total_predictions AS t_total_predictions, t.updated_by AS t_updated_by";

/// Annotation columns under the alias `a`, with its author `u`.
pub(crate) const ANNOTATION_COLUMNS: &str = "a.id AS a_id, a.task_id AS a_task_id, \
    a.project_id AS a_project_id, a.completed_by AS a_completed_by, a.result AS a_result, \
    a.was_cancelled AS a_was_cancelled, a.ground_truth AS a_ground_truth, \
    a.lead_time AS a_lead_time, a.created_at AS a_created_at, a.updated_at AS a_updated_at, \
    a.updated_by AS a_updated_by, u.email AS u_email, u.first_name AS u_first_name, \
    u.last_name AS u_last_name";

/// Annotations `a` with their authors `u`.
pub(crate) const ANNOTATION_FROM: &str =
    "FROM annotations a LEFT JOIN users u ON u.id = a.completed_by";

/// Project columns under the alias `p` with its creator `u`, as
/// `project_from_row` reads them.
pub(crate) const PROJECT_SELECT: &str = "SELECT p.id, p.organization_id, p.title, p.description, \
    p.label_config, p.created_by, p.created_at, p.task_number, p.finished_task_number, \
    p.total_annotations_number, p.total_predictions_number, p.num_tasks_with_annotations, \
    p.useful_annotation_number, p.ground_truth_number, p.skipped_annotations_number, \
    u.email AS u_email, u.first_name AS u_first_name, u.last_name AS u_last_name, \
    u.organization_id AS u_organization_id, u.created_at AS u_created_at \
    FROM projects p JOIN users u ON u.id = p.created_by";

/// Rows per multi-row `INSERT`, at most; fewer when the variables of a
/// statement would pass the engine's `MAX_VARIABLES`.
const MAX_ROWS_PER_STATEMENT: usize = 1_000;

/// How many rows of `variables_per_row` bound values one statement takes
/// under the engine's limit of `max_variables`.
pub(crate) fn rows_per_statement(max_variables: usize, variables_per_row: usize) -> usize {
    (max_variables / variables_per_row).clamp(1, MAX_ROWS_PER_STATEMENT)
}

/// The row counts of the statements that insert `rows` rows, at most
/// `per_statement` each: full statements, then the rest in powers of two,
/// largest first. So inserts of any size use a handful of statement shapes,
/// which stay prepared on each connection: parsing a 1,000-row `VALUES`
/// anew for every batch cost more than a tenth of a JSONL sync.
pub(crate) fn statement_sizes(rows: usize, per_statement: usize) -> Vec<usize> {
    let per_statement = per_statement.max(1);
    let mut sizes = vec![per_statement; rows / per_statement];
    let mut rest = rows % per_statement;
    while rest > 0 {
        let size = 1 << rest.ilog2();
        sizes.push(size);
        rest -= size;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_sizes_cover_the_rows_in_few_shapes() {
        assert_eq!(statement_sizes(0, 1000), Vec::<usize>::new());
        assert_eq!(statement_sizes(1000, 1000), [1000]);
        assert_eq!(
            statement_sizes(2500, 1000),
            [1000, 1000, 256, 128, 64, 32, 16, 4]
        );
        assert_eq!(statement_sizes(7, 1000), [4, 2, 1]);
        assert_eq!(statement_sizes(5, 1), [1; 5]);
        for rows in 0..3000 {
            let sizes = statement_sizes(rows, 1000);
            assert_eq!(sizes.iter().sum::<usize>(), rows);
            assert!(sizes
                .iter()
                .all(|&size| size == 1000 || size.is_power_of_two()));
        }
    }
}

pub(crate) fn foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_foreign_key_violation())
}

pub(crate) fn unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Django REST framework's message for a related object that does not exist.
pub(crate) fn missing_project(project: i64) -> storage_core::Error {
    storage_core::Error::invalid(
        "project",
        format!("Invalid pk \"{project}\" - object does not exist."),
    )
}

/// What new tasks inherit from their project.
#[derive(Debug)]
pub(crate) struct ProjectDefaults {
    /// The author recorded for annotations that arrive with task files.
    pub(crate) creator: i64,
    /// `maximum_annotations`, at least 1.
    pub(crate) overlap: i64,
}

/// What every task creation path (storage sync, task import) provides,
/// owned: the data text moves into the insert statement's arguments (the
/// database driver would copy a borrowed one).
#[derive(Debug)]
pub(crate) struct TaskInput {
    pub(crate) data: String,
    pub(crate) annotations: Vec<Value>,
    pub(crate) predictions: Vec<Value>,
    pub(crate) allow_skip: bool,
}

impl TaskInput {
    /// A task of a storage sync, and its link.
    pub(crate) fn of(task: NewTask) -> (Self, ObjectLink) {
        let NewTask {
            data,
            annotations,
            predictions,
            allow_skip,
            link,
        } = task;
        let input = Self {
            data: data.into_string(),
            annotations,
            predictions,
            allow_skip,
        };
        (input, link)
    }
}

impl From<ParsedTask> for TaskInput {
    fn from(task: ParsedTask) -> Self {
        Self {
            data: task.data.into_string(),
            annotations: task.annotations,
            predictions: task.predictions,
            allow_skip: task.allow_skip,
        }
    }
}

/// The values of one new task row that differ between tasks.
#[derive(Debug)]
pub(crate) struct TaskValues {
    pub(crate) inner_id: i64,
    pub(crate) data: String,
    pub(crate) allow_skip: bool,
    pub(crate) is_labeled: bool,
    pub(crate) counters: Counters,
}

// The code both SQL engines run, written once and compiled into each engine's
// module with `include!` (src/sqlite.rs, src/postgres.rs): sqlx's generic
// bounds over a `Database` type parameter would outweigh the code itself.
//
// The including module defines what differs, under these names:
//   Engine            the database type (a struct with a `pool` field)
//   Db, DbRow, DbConn its sqlx database, row and connection types
//   Stamp, stamp()    how a time is bound (text or a native timestamp)
//   read_time()       how a time column is read
//   MAX_VARIABLES     bound variables per statement
//   LIST_CHUNK        values per `push_list` list
//   ROW_LOCK          the locking clause of a `SELECT` that serializes
//                     writers of one row ("" where transactions already are)
//   LOCK_ORGANIZATIONS a statement serializing organisation creation, if needed
//   push_list()       "column IN (...)" or "column = ANY($n)"
//   temporary_code()  which error codes are worth a retry
//   Engine::begin_write, Engine::insert_task_rows, Engine::insert_link_rows,
//   Engine::linked_key_counts, Engine::linked_row_pairs, Engine::claim_next.
//
// SQL here is accepted by both engines: `$n` parameters, `RETURNING`,
// `COALESCE`, `IS NOT DISTINCT FROM`, `ON CONFLICT`, flags compared as
// booleans (`NOT flag`), sums cast to BIGINT.

impl Engine {
    /// Waits for the connections to close.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The id of the organisation titled `title`, created if missing.
    pub async fn ensure_organization(&self, title: &str) -> Result<i64> {
        let context = "ensuring an organization";
        let mut tx = self.begin_write(context).await?;
        if let Some(lock) = LOCK_ORGANIZATIONS {
            sqlx::query(lock)
                .execute(&mut *tx)
                .await
                .map_err(db(context))?;
        }
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM organizations WHERE title = $1 ORDER BY id LIMIT 1")
                .bind(title)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(context))?;
        let id = match found {
            Some(id) => id,
            None => sqlx::query_scalar(
                "INSERT INTO organizations (title, created_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(title)
            .bind(stamp(now()))
            .fetch_one(&mut *tx)
            .await
            .map_err(db(context))?,
        };
        tx.commit().await.map_err(db(context))?;
        Ok(id)
    }

    /// The id of the user with this e-mail address, created in
    /// `organization_id` if missing (an existing user keeps its
    /// organisation).
    pub async fn ensure_user(&self, email: &str, organization_id: i64) -> Result<i64> {
        let context = format!("ensuring a user of organization {organization_id}");
        sqlx::query(
            "INSERT INTO users (email, organization_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(organization_id)
        .bind(stamp(now()))
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if foreign_key_violation(&err) {
                Error::not_found(format!("organization {organization_id}"))
            } else {
                db_error(context.clone(), err)
            }
        })?;
        sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(&self.pool)
            .await
            .map_err(db(context))
    }

    /// Sets (replacing any previous one) the API token of a user. Only its
    /// SHA-256 is stored.
    pub async fn set_user_token(&self, user_id: i64, token: &str) -> Result<()> {
        if token.is_empty() {
            return Err(Error::invalid("token", "This field may not be blank."));
        }
        let done = sqlx::query("UPDATE users SET token_hash = $1 WHERE id = $2")
            .bind(token_hash(token))
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(|err| {
                if unique_violation(&err) {
                    Error::invalid("token", "This token is already in use.")
                } else {
                    db_error(format!("setting the token of user {user_id}"), err)
                }
            })?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("user {user_id}")));
        }
        Ok(())
    }

    /// Reads what new tasks of `project` inherit, holding the project's row
    /// until the transaction ends: task creation in one project is
    /// serialized, so inner ids and the dedupe check never race.
    async fn lock_project(
        conn: &mut DbConn,
        project: i64,
        context: &str,
    ) -> Result<ProjectDefaults> {
        let sql =
            format!("SELECT created_by, maximum_annotations FROM projects WHERE id = $1{ROW_LOCK}");
        let row = sqlx::query(&sql)
            .bind(project)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))?
            .ok_or_else(|| Error::not_found(format!("project {project}")))?;
        Ok(ProjectDefaults {
            creator: get(&row, "created_by")?,
            overlap: get::<i64>(&row, "maximum_annotations")?.max(1),
        })
    }

    /// Creates tasks with their annotations and predictions in `conn`'s
    /// transaction, after [`Engine::lock_project`]; returns their ids in the
    /// order of `tasks`.
    async fn insert_tasks(
        conn: &mut DbConn,
        project: i64,
        defaults: &ProjectDefaults,
        tasks: &[TaskInput<'_>],
        at: DateTime<Utc>,
        context: &str,
    ) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let first_inner: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(inner_id), 0) + 1 FROM tasks WHERE project_id = $1",
        )
        .bind(project)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(context))?;

        struct Prepared {
            annotations: Vec<FileAnnotation>,
            predictions: Vec<FilePrediction>,
        }
        let mut rows = Vec::with_capacity(tasks.len());
        let mut prepared = Vec::with_capacity(tasks.len());
        for (input, inner_id) in tasks.iter().zip(first_inner..) {
            let annotations: Vec<_> = input
                .annotations
                .iter()
                .filter_map(FileAnnotation::from_value)
                .collect();
            let predictions: Vec<_> = input
                .predictions
                .iter()
                .filter_map(FilePrediction::from_value)
                .collect();
            let cancelled = annotations.iter().filter(|a| a.was_cancelled).count() as i64;
            let counters = Counters {
                total_annotations: annotations.len() as i64 - cancelled,
                cancelled_annotations: cancelled,
                total_predictions: predictions.len() as i64,
            };
            rows.push(TaskValues {
                inner_id,
                data: to_text(input.data),
                allow_skip: input.allow_skip,
                is_labeled: counters.is_labeled(defaults.overlap),
                counters,
            });
            prepared.push(Prepared {
                annotations,
                predictions,
            });
        }

        let stamp = &stamp(at);
        let id_of_inner: HashMap<i64, i64> =
            Self::insert_task_rows(conn, project, defaults.overlap, &rows, stamp, context)
                .await?
                .into_iter()
                .collect();
        let ids = rows
            .iter()
            .map(|task| {
                id_of_inner.get(&task.inner_id).copied().ok_or_else(|| {
                    Error::backend(context, "a created task was not returned by the database")
                })
            })
            .collect::<Result<Vec<i64>>>()?;

        let annotations: Vec<(i64, &FileAnnotation)> = prepared
            .iter()
            .zip(&ids)
            .flat_map(|(task, id)| task.annotations.iter().map(move |a| (*id, a)))
            .collect();
        for chunk in annotations.chunks(rows_per_statement(10)) {
            let mut query = QueryBuilder::<Db>::new(
                "INSERT INTO annotations (task_id, project_id, completed_by, result, \
                 was_cancelled, ground_truth, lead_time, created_at, updated_at, updated_by) ",
            );
            query.push_values(chunk, |mut row, (task_id, annotation)| {
                row.push_bind(*task_id)
                    .push_bind(project)
                    .push_bind(defaults.creator)
                    .push_bind(annotation.result.as_str())
                    .push_bind(annotation.was_cancelled)
                    .push_bind(annotation.ground_truth)
                    .push_bind(annotation.lead_time)
                    .push_bind(stamp)
                    .push_bind(stamp)
                    .push_bind(defaults.creator);
            });
            query
                .build()
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(db(context))?;
        }

        let predictions: Vec<(i64, &FilePrediction)> = prepared
            .iter()
            .zip(&ids)
            .flat_map(|(task, id)| task.predictions.iter().map(move |p| (*id, p)))
            .collect();
        for chunk in predictions.chunks(rows_per_statement(7)) {
            let mut query = QueryBuilder::<Db>::new(
                "INSERT INTO predictions (task_id, project_id, result, score, model_version, \
                 created_at, updated_at) ",
            );
            query.push_values(chunk, |mut row, (task_id, prediction)| {
                row.push_bind(*task_id)
                    .push_bind(project)
                    .push_bind(prediction.result.as_str())
                    .push_bind(prediction.score)
                    .push_bind(prediction.model_version.as_str())
                    .push_bind(stamp)
                    .push_bind(stamp);
            });
            query
                .build()
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(db(context))?;
        }
        Ok(ids)
    }

    /// The `(key, row_index)` pairs of `keys` already linked to the storage
    /// (row index `None` as -1, as the dedupe index has it).
    async fn linked_rows(
        conn: &mut DbConn,
        storage_id: i64,
        keys: &[&str],
        rows: (i64, i64),
        context: &str,
    ) -> Result<HashSet<(String, i64)>> {
        // The row range keeps a batch of a large streamed file from reading
        // every link of that file again.
        let mut linked = HashSet::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            linked.extend(Self::linked_row_pairs(conn, storage_id, chunk, rows, context).await?);
        }
        Ok(linked)
    }

    /// Recomputes the counters of a task from its annotations and marks it
    /// updated.
    async fn refresh_task(
        conn: &mut DbConn,
        task_id: i64,
        by: Option<i64>,
        at: DateTime<Utc>,
        context: &str,
    ) -> Result<()> {
        // The counts below must see every annotation committed before this
        // transaction holds the task's row (concurrent annotators of one
        // task on PostgreSQL); SQLite has serialized the transaction already.
        sqlx::query(&format!("SELECT id FROM tasks WHERE id = $1{ROW_LOCK}"))
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))?;
        sqlx::query(
            "UPDATE tasks SET
                 total_annotations = (SELECT COUNT(*) FROM annotations a
                                      WHERE a.task_id = tasks.id AND NOT a.was_cancelled),
                 cancelled_annotations = (SELECT COUNT(*) FROM annotations a
                                          WHERE a.task_id = tasks.id AND a.was_cancelled),
                 is_labeled = ((SELECT COUNT(*) FROM annotations a
                                WHERE a.task_id = tasks.id AND NOT a.was_cancelled)
                               >= CASE WHEN overlap > 1 THEN overlap ELSE 1 END),
                 updated_at = $2,
                 updated_by = COALESCE($3, updated_by)
             WHERE id = $1",
        )
        .bind(task_id)
        .bind(stamp(at))
        .bind(by)
        .execute(&mut *conn)
        .await
        .map_err(db(context))?;
        Ok(())
    }

    async fn annotation_row(
        conn: &mut DbConn,
        id: i64,
        context: &str,
    ) -> Result<Option<AnnotationRow>> {
        let sql = format!("SELECT {ANNOTATION_COLUMNS} {ANNOTATION_FROM} WHERE a.id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))?;
        row.as_ref().map(annotation_from_row).transpose()
    }

    async fn task_records(
        &self,
        where_sql: &str,
        binds: &[i64],
        context: &str,
    ) -> Result<Vec<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS},
                 (SELECT l.key FROM storage_links l WHERE l.task_id = t.id ORDER BY l.id LIMIT 1)
                     AS storage_filename
             FROM tasks t {where_sql}"
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db(context))?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in &rows {
            let storage_filename: Option<String> = get(row, "storage_filename")?;
            tasks.push((task_from_row(row)?, storage_filename));
        }
        let ids: Vec<i64> = tasks.iter().map(|(task, _)| task.id).collect();
        let at = now();
        let mut annotations: HashMap<i64, Vec<Value>> = HashMap::new();
        let mut predictions: HashMap<i64, Vec<Value>> = HashMap::new();
        for chunk in ids.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "SELECT {ANNOTATION_COLUMNS} {ANNOTATION_FROM} WHERE a.task_id"
            ));
            push_list(&mut query, chunk.to_vec());
            query.push(" ORDER BY a.id");
            for row in query
                .build()
                .persistent(false)
                .fetch_all(&self.pool)
                .await
                .map_err(db(context))?
            {
                let annotation = annotation_from_row(&row)?;
                annotations
                    .entry(annotation.task)
                    .or_default()
                    .push(annotation.api_json(at));
            }

            let mut query = QueryBuilder::<Db>::new(
                "SELECT id, task_id, project_id, result, score, model_version, created_at, \
                 updated_at FROM predictions WHERE task_id",
            );
            push_list(&mut query, chunk.to_vec());
            query.push(" ORDER BY id");
            for row in query
                .build()
                .persistent(false)
                .fetch_all(&self.pool)
                .await
                .map_err(db(context))?
            {
                let prediction = prediction_from_row(&row)?;
                predictions
                    .entry(prediction.task)
                    .or_default()
                    .push(prediction.api_json(at));
            }
        }
        Ok(tasks
            .into_iter()
            .map(|(task, storage_filename)| TaskRecord {
                annotations: annotations.remove(&task.id).unwrap_or_default(),
                predictions: predictions.remove(&task.id).unwrap_or_default(),
                id: task.id,
                project: task.project,
                inner_id: task.inner_id,
                data: task.data,
                meta: task.meta,
                created_at: task.created_at,
                updated_at: task.updated_at,
                is_labeled: task.is_labeled,
                overlap: task.overlap,
                allow_skip: task.allow_skip,
                total_annotations: task.total_annotations,
                cancelled_annotations: task.cancelled_annotations,
                total_predictions: task.total_predictions,
                storage_filename,
            })
            .collect())
    }

    /// Tasks, annotations and predictions of a project.
    async fn project_counts(&self, project: i64) -> Result<(u64, u64, u64)> {
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        let row = sqlx::query(
            "SELECT COUNT(*) AS tasks,
                    CAST(COALESCE(SUM(total_annotations), 0) AS BIGINT) AS annotations,
                    CAST(COALESCE(SUM(total_predictions), 0) AS BIGINT) AS predictions
             FROM tasks WHERE project_id = $1",
        )
        .bind(project)
        .fetch_one(&self.pool)
        .await
        .map_err(db(format!("counting the tasks of project {project}")))?;
        let count = |name: &str| -> Result<u64> {
            get::<i64>(&row, name).map(|n| u64::try_from(n).unwrap_or(0))
        };
        Ok((
            count("tasks")?,
            count("annotations")?,
            count("predictions")?,
        ))
    }

    async fn exported(
        &self,
        where_sql: &str,
        binds: &[i64],
        context: &str,
    ) -> Result<Vec<ExportedAnnotation>> {
        let sql = format!(
            "SELECT {ANNOTATION_COLUMNS}, {TASK_COLUMNS}, p.label_config AS project_label_config
             FROM annotations a
             JOIN tasks t ON t.id = a.task_id
             JOIN projects p ON p.id = t.project_id
             LEFT JOIN users u ON u.id = a.completed_by
             {where_sql}"
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db(context))?;
        let at = now();
        rows.iter()
            .map(|row| {
                let annotation = annotation_from_row(row)?;
                let mut task = task_from_row(row)?;
                let label_config: String = get(row, "project_label_config")?;
                task.data = storage_core::host::shown_data(task.data, &label_config);
                Ok(ExportedAnnotation {
                    id: annotation.id,
                    project: annotation.project,
                    payload: annotation.export_json(&task, at),
                })
            })
            .collect()
    }

    /// Writes `state` if the stored state still matches `expected`.
    async fn write_sync(
        conn: &mut DbConn,
        id: i64,
        expected: &SyncGuard,
        state: &SyncState,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE storages SET status = $1, last_sync = $2, last_sync_count = $3,
                                 last_sync_job = $4, traceback = $5, meta = $6, lease_until = $7
             WHERE id = $8 AND status = $9 AND last_sync_job IS NOT DISTINCT FROM $10",
        )
        .bind(state.status.as_str())
        .bind(state.last_sync.map(stamp))
        .bind(state.last_sync_count)
        .bind(&state.last_sync_job)
        .bind(&state.traceback)
        .bind(to_text(&state.meta))
        .bind(state.lease_until.map(stamp))
        .bind(id)
        .bind(expected.status.as_str())
        .bind(&expected.job)
        .execute(&mut *conn)
        .await
        .map_err(db(format!("updating the sync state of storage {id}")))?;
        Ok(done.rows_affected() > 0)
    }
}

/// What new tasks inherit from their project.
#[derive(Debug)]
struct ProjectDefaults {
    /// The author recorded for annotations that arrive with task files.
    creator: i64,
    /// `maximum_annotations`, at least 1.
    overlap: i64,
}

/// What every task creation path (storage sync, task import) provides.
#[derive(Debug)]
struct TaskInput<'a> {
    data: &'a Map<String, Value>,
    annotations: &'a [Value],
    predictions: &'a [Value],
    allow_skip: bool,
}

/// The values of one new task row that differ between tasks.
#[derive(Debug)]
struct TaskValues {
    inner_id: i64,
    data: String,
    allow_skip: bool,
    is_labeled: bool,
    counters: Counters,
}

/// Rows per multi-row `INSERT`, at most; fewer when the variables of a
/// statement would pass [`MAX_VARIABLES`].
const MAX_ROWS_PER_STATEMENT: usize = 1_000;

fn rows_per_statement(variables_per_row: usize) -> usize {
    (MAX_VARIABLES / variables_per_row).clamp(1, MAX_ROWS_PER_STATEMENT)
}

const STORAGE_COLUMNS: &str = "id, kind, type, project_id, title, description, created_at, \
    synchronizable, settings, status, last_sync, last_sync_count, last_sync_job, traceback, \
    meta, lease_until";

/// Task columns under the alias `t`, named apart from annotation columns.
const TASK_COLUMNS: &str = "t.id AS t_id, t.project_id AS t_project_id, t.inner_id AS t_inner_id, \
    t.data AS t_data, t.meta AS t_meta, t.created_at AS t_created_at, \
    t.updated_at AS t_updated_at, t.is_labeled AS t_is_labeled, t.overlap AS t_overlap, \
    t.allow_skip AS t_allow_skip, t.total_annotations AS t_total_annotations, \
    t.cancelled_annotations AS t_cancelled_annotations, \
    t.total_predictions AS t_total_predictions, t.updated_by AS t_updated_by";

/// Annotation columns under the alias `a`, with its author `u`.
const ANNOTATION_COLUMNS: &str = "a.id AS a_id, a.task_id AS a_task_id, \
    a.project_id AS a_project_id, a.completed_by AS a_completed_by, a.result AS a_result, \
    a.was_cancelled AS a_was_cancelled, a.ground_truth AS a_ground_truth, \
    a.lead_time AS a_lead_time, a.created_at AS a_created_at, a.updated_at AS a_updated_at, \
    a.updated_by AS a_updated_by, u.email AS u_email, u.first_name AS u_first_name, \
    u.last_name AS u_last_name";

/// Annotations `a` with their authors `u`.
const ANNOTATION_FROM: &str = "FROM annotations a LEFT JOIN users u ON u.id = a.completed_by";

fn get<'r, T>(row: &'r DbRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get(column)
        .map_err(|err| db_error(format!("reading column {column}"), err))
}

/// A time column that is never NULL.
fn time(row: &DbRow, column: &str, what: impl FnOnce() -> String) -> Result<DateTime<Utc>> {
    read_time(row, column, what)?
        .ok_or_else(|| Error::backend(format!("reading column {column}"), "unexpected NULL"))
}

fn storage_from_row(row: &DbRow) -> Result<Storage> {
    let id: i64 = get(row, "id")?;
    let what = |column: &str| format!("{column} of storage {id}");
    let kind: String = get(row, "kind")?;
    let status: String = get(row, "status")?;
    Ok(Storage {
        id,
        kind: kind
            .parse()
            .map_err(|err| Error::backend(format!("decoding {}", what("kind")), err))?,
        storage_type: get(row, "type")?,
        project: get(row, "project_id")?,
        title: get(row, "title")?,
        description: get(row, "description")?,
        created_at: time(row, "created_at", || what("created_at"))?,
        synchronizable: get(row, "synchronizable")?,
        settings: Settings::from_map(parse_object(&get::<String>(row, "settings")?, || {
            what("settings")
        })?),
        sync: SyncState {
            status: status
                .parse::<SyncStatus>()
                .map_err(|err| Error::backend(format!("decoding {}", what("status")), err))?,
            last_sync: read_time(row, "last_sync", || what("last_sync"))?,
            last_sync_count: get(row, "last_sync_count")?,
            last_sync_job: get(row, "last_sync_job")?,
            traceback: get(row, "traceback")?,
            meta: parse_object(&get::<String>(row, "meta")?, || what("meta"))?,
            lease_until: read_time(row, "lease_until", || what("lease_until"))?,
        },
    })
}

fn task_from_row(row: &DbRow) -> Result<TaskRow> {
    let id: i64 = get(row, "t_id")?;
    let what = |column: &str| format!("{column} of task {id}");
    Ok(TaskRow {
        id,
        project: get(row, "t_project_id")?,
        inner_id: get(row, "t_inner_id")?,
        data: parse_object(&get::<String>(row, "t_data")?, || what("data"))?,
        meta: parse_object(&get::<String>(row, "t_meta")?, || what("meta"))?,
        created_at: time(row, "t_created_at", || what("created_at"))?,
        updated_at: time(row, "t_updated_at", || what("updated_at"))?,
        is_labeled: get(row, "t_is_labeled")?,
        overlap: get(row, "t_overlap")?,
        allow_skip: get(row, "t_allow_skip")?,
        total_annotations: get(row, "t_total_annotations")?,
        cancelled_annotations: get(row, "t_cancelled_annotations")?,
        total_predictions: get(row, "t_total_predictions")?,
        updated_by: get(row, "t_updated_by")?,
    })
}

fn annotation_from_row(row: &DbRow) -> Result<AnnotationRow> {
    let id: i64 = get(row, "a_id")?;
    let what = |column: &str| format!("{column} of annotation {id}");
    let completed_by: Option<i64> = get(row, "a_completed_by")?;
    let email: Option<String> = get(row, "u_email")?;
    let completed_by = match (completed_by, email) {
        (Some(user), Some(email)) => Some(UserRow {
            id: user,
            email,
            first_name: get(row, "u_first_name")?,
            last_name: get(row, "u_last_name")?,
        }),
        _ => None,
    };
    Ok(AnnotationRow {
        id,
        task: get(row, "a_task_id")?,
        project: get(row, "a_project_id")?,
        completed_by,
        result: parse_value(&get::<String>(row, "a_result")?, || what("result"))?,
        was_cancelled: get(row, "a_was_cancelled")?,
        ground_truth: get(row, "a_ground_truth")?,
        lead_time: get(row, "a_lead_time")?,
        created_at: time(row, "a_created_at", || what("created_at"))?,
        updated_at: time(row, "a_updated_at", || what("updated_at"))?,
        updated_by: get(row, "a_updated_by")?,
    })
}

fn prediction_from_row(row: &DbRow) -> Result<PredictionRow> {
    let id: i64 = get(row, "id")?;
    let what = |column: &str| format!("{column} of prediction {id}");
    Ok(PredictionRow {
        id,
        task: get(row, "task_id")?,
        project: get(row, "project_id")?,
        result: parse_value(&get::<String>(row, "result")?, || what("result"))?,
        score: get(row, "score")?,
        model_version: get(row, "model_version")?,
        created_at: time(row, "created_at", || what("created_at"))?,
        updated_at: time(row, "updated_at", || what("updated_at"))?,
    })
}

fn project_from_row(row: &DbRow, counts: (u64, u64, u64)) -> Result<Project> {
    let id: i64 = get(row, "id")?;
    Ok(Project {
        id,
        organization: get(row, "organization_id")?,
        title: get(row, "title")?,
        description: get(row, "description")?,
        label_config: get(row, "label_config")?,
        created_by: get(row, "created_by")?,
        created_at: time(row, "created_at", || format!("created_at of project {id}"))?,
        task_number: counts.0,
        total_annotations_number: counts.1,
        total_predictions_number: counts.2,
    })
}

/// Wraps a database error with what was being done. Lock conflicts, pool
/// timeouts and I/O errors are worth a retry.
fn db_error(context: impl Into<String>, err: sqlx::Error) -> Error {
    let retry = match &err {
        sqlx::Error::Database(e) if e.code().is_some_and(|code| temporary_code(&code)) => {
            Retry::Temporary
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => Retry::Temporary,
        _ => Retry::Permanent,
    };
    Error::Backend {
        context: context.into(),
        source: Box::new(err),
        retry,
    }
}

fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let context = context.into();
    move |err| db_error(context, err)
}

fn foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_foreign_key_violation())
}

/// Django REST framework's message for a related object that does not exist.
fn missing_project(project: i64) -> Error {
    Error::invalid(
        "project",
        format!("Invalid pk \"{project}\" - object does not exist."),
    )
}

fn unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[async_trait]
impl crate::database::Accounts for Engine {
    async fn ensure_organization(&self, title: &str) -> Result<i64> {
        Engine::ensure_organization(self, title).await
    }

    async fn ensure_user(&self, email: &str, organization_id: i64) -> Result<i64> {
        Engine::ensure_user(self, email, organization_id).await
    }

    async fn set_user_token(&self, user_id: i64, token: &str) -> Result<()> {
        Engine::set_user_token(self, user_id, token).await
    }

    async fn close(&self) {
        Engine::close(self).await
    }
}

#[async_trait]
impl StorageRepository for Engine {
    async fn insert_storage(&self, new: NewStorage) -> Result<Storage> {
        let created_at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO storages (kind, type, project_id, title, description, created_at,
                                   synchronizable, settings, status, meta)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, '{}') RETURNING id",
        )
        .bind(new.kind.as_str())
        .bind(&new.storage_type)
        .bind(new.project)
        .bind(&new.title)
        .bind(&new.description)
        .bind(stamp(created_at))
        .bind(new.synchronizable)
        .bind(to_text(new.settings.as_map()))
        .bind(SyncStatus::Initialized.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|err| {
            if foreign_key_violation(&err) {
                missing_project(new.project)
            } else {
                db_error(
                    format!("creating a storage of project {}", new.project),
                    err,
                )
            }
        })?;
        Ok(Storage {
            id,
            kind: new.kind,
            storage_type: new.storage_type,
            project: new.project,
            title: new.title,
            description: new.description,
            created_at,
            synchronizable: new.synchronizable,
            settings: new.settings,
            sync: SyncState::default(),
        })
    }

    async fn storage(&self, id: i64) -> Result<Option<Storage>> {
        let sql = format!("SELECT {STORAGE_COLUMNS} FROM storages WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("reading storage {id}")))?
            .as_ref()
            .map(storage_from_row)
            .transpose()
    }

    async fn storages(&self, filter: StorageFilter<'_>) -> Result<Vec<Storage>> {
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {STORAGE_COLUMNS} FROM storages WHERE 1 = 1"
        ));
        if let Some(project) = filter.project {
            query.push(" AND project_id = ").push_bind(project);
        }
        if let Some(kind) = filter.kind {
            query.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(storage_type) = filter.storage_type {
            query.push(" AND type = ").push_bind(storage_type);
        }
        query.push(" ORDER BY id");
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing storages"))?
            .iter()
            .map(storage_from_row)
            .collect()
    }

    async fn update_storage(&self, storage: &Storage) -> Result<()> {
        let done = sqlx::query(
            "UPDATE storages SET project_id = $1, title = $2, description = $3,
                                 synchronizable = $4, settings = $5
             WHERE id = $6",
        )
        .bind(storage.project)
        .bind(&storage.title)
        .bind(&storage.description)
        .bind(storage.synchronizable)
        .bind(to_text(storage.settings.as_map()))
        .bind(storage.id)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if foreign_key_violation(&err) {
                missing_project(storage.project)
            } else {
                db_error(format!("updating storage {}", storage.id), err)
            }
        })?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("storage {}", storage.id)));
        }
        Ok(())
    }

    async fn delete_storage(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM storages WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db(format!("deleting storage {id}")))?;
        Ok(done.rows_affected() > 0)
    }

    async fn storages_with_status(&self, statuses: &[SyncStatus]) -> Result<Vec<Storage>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {STORAGE_COLUMNS} FROM storages WHERE status"
        ));
        push_list(
            &mut query,
            statuses.iter().map(|status| status.as_str()).collect(),
        );
        query.push(" ORDER BY id");
        query
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing storages by status"))?
            .iter()
            .map(storage_from_row)
            .collect()
    }

    async fn update_sync(&self, id: i64, expected: &SyncGuard, state: &SyncState) -> Result<bool> {
        let context = format!("updating the sync state of storage {id}");
        let mut conn = self.pool.acquire().await.map_err(db(context))?;
        Self::write_sync(&mut conn, id, expected, state).await
    }

    async fn claim_queued(
        &self,
        skip: &[i64],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Storage>> {
        self.claim_next(skip, now, lease_until).await
    }
}

#[async_trait]
impl TaskSink for Engine {
    async fn linked_keys(&self, storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let context = format!("looking up linked keys of storage {storage_id}");
        let mut conn = self.pool.acquire().await.map_err(db(context.as_str()))?;
        let mut linked = HashMap::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for (key, tasks) in
                Self::linked_key_counts(&mut conn, storage_id, &chunk, &context).await?
            {
                linked.insert(key, u64::try_from(tasks).unwrap_or(0));
            }
        }
        Ok(linked)
    }

    async fn begin_object(&self, storage_id: i64, key: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO unfinished_objects (storage_id, key) VALUES ($1, $2)
             ON CONFLICT (storage_id, key) DO NOTHING",
        )
        .bind(storage_id)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(db(format!(
            "marking \"{key}\" of storage {storage_id} unfinished"
        )))?;
        Ok(())
    }

    async fn finish_object(&self, storage_id: i64, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM unfinished_objects WHERE storage_id = $1 AND key = $2")
            .bind(storage_id)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db(format!(
                "marking \"{key}\" of storage {storage_id} finished"
            )))?;
        Ok(())
    }

    async fn create_tasks(&self, project: i64, storage_id: i64, tasks: &[NewTask]) -> Result<u64> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let context = format!("creating tasks for storage {storage_id}");
        let mut tx = self.begin_write(&context).await?;
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT project_id FROM storages WHERE id = $1")
                .bind(storage_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(context.as_str()))?;
        if owner.is_none() {
            return Err(Error::not_found(format!("storage {storage_id}")));
        }
        // Before the dedupe check: a writer that held the project commits
        // before this one looks at the links.
        let defaults = Self::lock_project(&mut tx, project, &context).await?;

        let mut keys: Vec<&str> = tasks.iter().map(|task| task.link.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let rows = tasks.iter().map(|task| task.link.row_index.unwrap_or(-1));
        let row_range = (rows.clone().min().unwrap_or(-1), rows.max().unwrap_or(-1));
        let mut linked = Self::linked_rows(&mut tx, storage_id, &keys, row_range, &context).await?;
        // Skip what is linked already, and repeats within the batch.
        let fresh: Vec<&NewTask> = tasks
            .iter()
            .filter(|task| {
                linked.insert((task.link.key.clone(), task.link.row_index.unwrap_or(-1)))
            })
            .collect();
        if fresh.is_empty() {
            tx.rollback().await.map_err(db(context.as_str()))?;
            return Ok(0);
        }

        let at = now();
        let inputs: Vec<TaskInput<'_>> = fresh
            .iter()
            .map(|task| TaskInput {
                data: &task.data,
                annotations: &task.annotations,
                predictions: &task.predictions,
                allow_skip: task.allow_skip,
            })
            .collect();
        let ids = Self::insert_tasks(&mut tx, project, &defaults, &inputs, at, &context).await?;
        let links: Vec<(i64, &ObjectLink)> = ids
            .iter()
            .copied()
            .zip(fresh.iter().map(|task| &task.link))
            .collect();
        Self::insert_link_rows(&mut tx, storage_id, &links, &stamp(at), &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        tracing::debug!(
            storage_id,
            project,
            created = fresh.len(),
            skipped = tasks.len() - fresh.len(),
            "created tasks"
        );
        Ok(fresh.len() as u64)
    }
}

#[async_trait]
impl AnnotationSource for Engine {
    async fn annotations_for_export(
        &self,
        project: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<ExportedAnnotation>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.exported(
            "WHERE a.project_id = $1 AND a.id > $2 ORDER BY a.id LIMIT $3",
            &[project, after_id, limit],
            &format!("reading annotations of project {project} for export"),
        )
        .await
    }

    async fn count_annotations(&self, project: i64) -> Result<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM annotations WHERE project_id = $1")
                .bind(project)
                .fetch_one(&self.pool)
                .await
                .map_err(db(format!("counting annotations of project {project}")))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn annotation_for_export(&self, id: i64) -> Result<Option<ExportedAnnotation>> {
        Ok(self
            .exported(
                "WHERE a.id = $1",
                &[id],
                &format!("reading annotation {id} for export"),
            )
            .await?
            .pop())
    }
}

#[async_trait]
impl ProjectAccess for Engine {
    async fn project_visible(&self, caller: &Caller, project: i64) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM projects WHERE id = $1 AND organization_id = $2")
                .bind(project)
                .bind(caller.organization_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db(format!(
                    "checking access of user {} to project {project}",
                    caller.user_id
                )))?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl Authenticator for Engine {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        if token.is_empty() {
            return Ok(None);
        }
        // Only the hash is looked up, so the lookup reveals nothing about
        // the stored tokens that timing could leak.
        let row = sqlx::query("SELECT id, organization_id FROM users WHERE token_hash = $1")
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await
            .map_err(db("authenticating a token"))?;
        row.map(|row| {
            Ok(Caller {
                user_id: get(&row, "id")?,
                organization_id: get(&row, "organization_id")?,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl HostStore for Engine {
    async fn create_project(&self, caller: &Caller, project: NewProject) -> Result<Project> {
        let created_at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO projects (organization_id, title, description, label_config, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(caller.organization_id)
        .bind(&project.title)
        .bind(&project.description)
        .bind(&project.label_config)
        .bind(caller.user_id)
        .bind(stamp(created_at))
        .fetch_one(&self.pool)
        .await
        .map_err(db(format!("creating a project for user {}", caller.user_id)))?;
        Ok(Project {
            id,
            organization: caller.organization_id,
            title: project.title,
            description: project.description,
            label_config: project.label_config,
            created_by: caller.user_id,
            created_at,
            task_number: 0,
            total_annotations_number: 0,
            total_predictions_number: 0,
        })
    }

    async fn project(&self, id: i64) -> Result<Option<Project>> {
        let row = sqlx::query(
            "SELECT id, organization_id, title, description, label_config, created_by, created_at
             FROM projects WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(format!("reading project {id}")))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let counts = self.project_counts(id).await?;
        project_from_row(&row, counts).map(Some)
    }

    async fn import_tasks(&self, project: i64, tasks: Vec<ParsedTask>) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let context = format!("importing tasks into project {project}");
        let inputs: Vec<TaskInput<'_>> = tasks
            .iter()
            .map(|task| TaskInput {
                data: &task.data,
                annotations: &task.annotations,
                predictions: &task.predictions,
                allow_skip: task.allow_skip,
            })
            .collect();
        let mut tx = self.begin_write(&context).await?;
        let defaults = Self::lock_project(&mut tx, project, &context).await?;
        let ids = Self::insert_tasks(&mut tx, project, &defaults, &inputs, now(), &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(ids)
    }

    async fn tasks(&self, project: i64, page: u64, page_size: u64) -> Result<TaskPage> {
        let (total, total_annotations, total_predictions) = self.project_counts(project).await?;
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
        let offset = i64::try_from(page.max(1) - 1)
            .unwrap_or(i64::MAX)
            .saturating_mul(limit);
        let tasks = self
            .task_records(
                "WHERE t.project_id = $1 ORDER BY t.id LIMIT $2 OFFSET $3",
                &[project, limit, offset],
                &format!("listing tasks of project {project}"),
            )
            .await?;
        Ok(TaskPage {
            tasks,
            total,
            total_annotations,
            total_predictions,
        })
    }

    async fn task(&self, id: i64) -> Result<Option<TaskRecord>> {
        Ok(self
            .task_records("WHERE t.id = $1", &[id], &format!("reading task {id}"))
            .await?
            .pop())
    }

    async fn create_annotation(
        &self,
        caller: &Caller,
        task: i64,
        body: &Map<String, Value>,
    ) -> Result<Value> {
        let input = AnnotationInput::from_body(body, true)?;
        let context = format!("creating an annotation of task {task}");
        let mut tx = self.begin_write(&context).await?;
        let project: i64 = sqlx::query_scalar("SELECT project_id FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(context.as_str()))?
            .ok_or_else(|| Error::not_found(format!("task {task}")))?;
        let at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO annotations (task_id, project_id, completed_by, result, was_cancelled,
                                      ground_truth, lead_time, created_at, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $3) RETURNING id",
        )
        .bind(task)
        .bind(project)
        .bind(caller.user_id)
        .bind(to_text(
            input.result.as_ref().unwrap_or(&Value::Array(Vec::new())),
        ))
        .bind(input.was_cancelled.unwrap_or(false))
        .bind(input.ground_truth.unwrap_or(false))
        .bind(input.lead_time.flatten())
        .bind(stamp(at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        Self::refresh_task(&mut tx, task, Some(caller.user_id), at, &context).await?;
        let row = Self::annotation_row(&mut tx, id, &context)
            .await?
            .ok_or_else(|| {
                Error::backend(context.as_str(), "the created annotation was not found")
            })?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(row.api_json(now()))
    }

    async fn update_annotation(
        &self,
        caller: &Caller,
        id: i64,
        body: &Map<String, Value>,
    ) -> Result<Option<Value>> {
        let input = AnnotationInput::from_body(body, false)?;
        let context = format!("updating annotation {id}");
        let mut tx = self.begin_write(&context).await?;
        let Some(current) = Self::annotation_row(&mut tx, id, &context).await? else {
            return Ok(None);
        };
        let at = now();
        sqlx::query(
            "UPDATE annotations SET result = $1, was_cancelled = $2, ground_truth = $3,
                                    lead_time = $4, updated_at = $5, updated_by = $6
             WHERE id = $7",
        )
        .bind(to_text(input.result.as_ref().unwrap_or(&current.result)))
        .bind(input.was_cancelled.unwrap_or(current.was_cancelled))
        .bind(input.ground_truth.unwrap_or(current.ground_truth))
        .bind(input.lead_time.unwrap_or(current.lead_time))
        .bind(stamp(at))
        .bind(caller.user_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        Self::refresh_task(&mut tx, current.task, Some(caller.user_id), at, &context).await?;
        let row = Self::annotation_row(&mut tx, id, &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(row.map(|row| row.api_json(now())))
    }

    async fn delete_annotation(&self, id: i64) -> Result<Option<i64>> {
        let context = format!("deleting annotation {id}");
        let mut tx = self.begin_write(&context).await?;
        let row =
            sqlx::query("DELETE FROM annotations WHERE id = $1 RETURNING task_id, project_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(context.as_str()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task: i64 = get(&row, "task_id")?;
        let project: i64 = get(&row, "project_id")?;
        Self::refresh_task(&mut tx, task, None, now(), &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(Some(project))
    }

    async fn annotation_project(&self, id: i64) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT project_id FROM annotations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("reading annotation {id}")))
    }
}

//! Faults, proven over real sockets, real SQLite files and real processes:
//! the server process killed with SIGKILL in the middle of a 200,000-file
//! sync, the S3 server going away in the middle of a sync (briefly and for
//! good; also under a sync split into shards), a queued job no worker
//! ever takes, many sync requests and many
//! syncs at once, and export targets that cannot be written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers stop on the first failure

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_core::shards::ShardQueue;
use storage_core::{Backend, EndpointPolicy, RunnerConfig};
use storage_s3::{S3Backend, S3Options};
use support::buckets::s3_builder;
use support::process::{self, Process};
use support::{fast_runner, Api, Server, TOKEN};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long any wait of these tests may last before it fails the test.
const PATIENCE: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// The storage-server binary as a separate process.

/// The server binary over `data_dir` with the tests' token, and its API.
fn start_process(data_dir: &Path) -> (Process, Api) {
    start_process_with(data_dir, &[])
}

/// [`start_process`] with more flags.
fn start_process_with(data_dir: &Path, flags: &[&str]) -> (Process, Api) {
    let mut command = process::command(data_dir);
    command
        .args(["--token", TOKEN])
        .args(flags)
        .env("RUST_BACKTRACE", "1");
    let process = Process::start(command, data_dir, "server");
    let api = Api::new(process.base.clone(), TOKEN);
    (process, api)
}

/// `count` one-byte files named `f000000.jpg`... in a folder, removed on
/// drop. Both are spread over threads: creating and unlinking 200,000
/// files is kernel time, and one thread leaves the other core idle.
struct ManyFiles {
    dir: PathBuf,
    count: usize,
}

const FILE_THREADS: usize = 4;

impl ManyFiles {
    fn write(dir: PathBuf, count: usize) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let files = Self { dir, count };
        files.each(|path| std::fs::write(path, b"x").unwrap());
        files
    }

    fn each(&self, action: impl Fn(PathBuf) + Sync) {
        std::thread::scope(|scope| {
            for t in 0..FILE_THREADS {
                let action = &action;
                scope.spawn(move || {
                    for i in (t..self.count).step_by(FILE_THREADS) {
                        action(self.dir.join(format!("f{i:06}.jpg")));
                    }
                });
            }
        });
    }
}

impl Drop for ManyFiles {
    fn drop(&mut self) {
        self.each(|path| {
            let _ = std::fs::remove_file(path);
        });
    }
}

/// The `field` values of every task of `project`, through the paged task
/// list (bucket URIs as stored, not rewritten to the resolver), and the
/// `total` it reports.
async fn all_task_values<F, Fut>(get: F, project: i64, field: &str) -> (u64, Vec<String>)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    const PAGE: usize = 10_000;
    let mut values = Vec::new();
    let mut total = 0;
    for page in 1.. {
        let body = get(format!(
            "/api/tasks?project={project}&page={page}&page_size={PAGE}&resolve_uri=false"
        ))
        .await;
        total = body["total"].as_u64().unwrap();
        let tasks = body["tasks"].as_array().unwrap();
        values.extend(tasks.iter().map(|t| match &t["data"][field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
        // The page after the last is Label Studio's 404 "Invalid page.".
        if tasks.len() < PAGE || values.len() as u64 >= total {
            break;
        }
    }
    (total, values)
}

fn distinct(values: &[String]) -> usize {
    values.iter().collect::<HashSet<_>>().len()
}

const FILES: usize = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_200k_file_sync_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().canonicalize().unwrap();
    let folder = data_dir.join("local-files").join("big");
    let files = ManyFiles::write(folder.clone(), FILES);
    eprintln!(
        "{FILES} files written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (mut server, api) = start_process(&data_dir);
    let project = api
        .ok(
            Method::POST,
            "/api/projects",
            Some(json!({"title": "killed", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"})),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let storage = api
        .ok(
            Method::POST,
            "/api/storages/localfiles",
            Some(json!({"project": project, "path": folder, "use_blob_urls": true})),
        )
        .await;
    let path = format!("/api/storages/localfiles/{}", storage["id"]);
    let sync_started = Instant::now();
    let queued = api.sync(&path).await;
    let job = queued["last_sync_job"].as_str().unwrap().to_string();

    // Kill as soon as the sync has written progress, well before its end.
    let at_kill = loop {
        let state = api.ok(Method::GET, &path, None).await;
        let count = state["last_sync_count"].as_u64().unwrap_or(0);
        if state["status"] == "in_progress" && count > 0 {
            break state;
        }
        assert!(
            state["status"] != "completed",
            "the sync ended before it could be killed: {state}"
        );
        assert!(
            sync_started.elapsed() < PATIENCE,
            "no progress: {state}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill();
    let count_at_kill = at_kill["last_sync_count"].as_u64().unwrap();
    eprintln!(
        "killed after {:.1} s at last_sync_count {count_at_kill}",
        sync_started.elapsed().as_secs_f64()
    );
    assert!(count_at_kill < FILES as u64, "{at_kill}");

    // The next process finds the job its predecessor left in progress and
    // resumes it (same job) instead of leaving it stuck.
    let restarted = Instant::now();
    let (server, api) = start_process(&data_dir);
    let resumed = api
        .wait_synced_within(&path, PATIENCE, || server.log_text())
        .await;
    eprintln!(
        "restarted and resumed in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(resumed["status"], "completed", "{resumed}");
    assert_eq!(
        resumed["last_sync_job"],
        job.as_str(),
        "the killed job is resumed, not replaced: {resumed}"
    );
    assert_eq!(resumed["meta"]["resumes"], 1, "{resumed}");
    assert!(resumed["traceback"].is_null(), "{resumed}");
    // Exact, although the killed attempt committed batches after its last
    // progress report: the job created every task, none existed before it.
    assert_eq!(resumed["last_sync_count"], FILES, "{resumed}");
    assert_eq!(resumed["meta"]["tasks_existed"], 0, "{resumed}");

    // A new sync finds every object linked and creates nothing.
    let resync = Instant::now();
    api.sync(&path).await;
    let again = api
        .wait_synced_within(&path, PATIENCE, || server.log_text())
        .await;
    eprintln!("re-sync in {:.1} s", resync.elapsed().as_secs_f64());
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(again["meta"]["tasks_existed"], FILES, "{again}");

    let shown = api
        .ok(Method::GET, &format!("/api/projects/{project}"), None)
        .await;
    assert_eq!(shown["task_number"], FILES, "{shown}");
    let page = api
        .ok(
            Method::GET,
            &format!("/api/tasks?project={project}&page_size=2"),
            None,
        )
        .await;
    assert_eq!(
        page["tasks"][0]["data"]["image"], "/data/local-files/?d=big/f000000.jpg",
        "{page}"
    );
    drop(server);

    // Every object has exactly one task, and every task its own object:
    // read from the database file itself (paging 200,000 tasks through the
    // API of a debug build takes longer than the rest of the test).
    let counting = Instant::now();
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}?mode=ro",
        data_dir.join("storage.sqlite3").display()
    ))
    .await
    .unwrap();
    let storage_id = storage["id"].as_i64().unwrap();
    let (tasks, distinct_data): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT data) FROM tasks WHERE project_id = ?")
            .bind(project)
            .fetch_one(&db)
            .await
            .unwrap();
    let (links, keys, linked_tasks): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT key), COUNT(DISTINCT task_id) FROM storage_links WHERE storage_id = ?",
    )
    .bind(storage_id)
    .fetch_one(&db)
    .await
    .unwrap();
    let n = FILES as i64;
    assert_eq!(
        (tasks, distinct_data, links, keys, linked_tasks),
        (n, n, n, n, n)
    );
    let urls: Vec<String> = sqlx::query_scalar(
        "SELECT json_extract(data, '$.\"$undefined$\"') FROM tasks WHERE project_id = ?",
    )
    .bind(project)
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    let expected: HashSet<String> = (0..FILES)
        .map(|i| format!("/data/local-files/?d=big/f{i:06}.jpg"))
        .collect();
    let got: HashSet<String> = urls.into_iter().collect();
    assert!(
        got == expected,
        "every file has its task: e.g. {:?} is missing",
        expected.difference(&got).next()
    );
    eprintln!("counted in {:.1} s", counting.elapsed().as_secs_f64());
    drop(files);
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// An S3 server that goes away: a TCP proxy in front of moto.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Connections are passed to moto.
    Up,
    /// Every connection is reset as soon as it is accepted (and counted):
    /// what clients see of a server that crashes or restarts.
    Reset,
    /// Nothing listens: connections are refused, as by a stopped server.
    Refuse,
}

/// A TCP proxy to `upstream` that a test can take down and bring back.
/// Switching away from [`Link::Up`] also resets the open connections.
struct Proxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    resets: Arc<AtomicUsize>,
    /// Connections to reset while the link is up.
    budget: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let link = watch::channel(Link::Up).0;
        let resets = Arc::new(AtomicUsize::new(0));
        let budget = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(Self::serve(
            listener,
            upstream,
            link.subscribe(),
            resets.clone(),
            budget.clone(),
        ));
        Self {
            addr,
            link,
            resets,
            budget,
            task,
        }
    }

    /// Resets the next `n` connections, then passes them again: an outage
    /// measured in attempts rather than time.
    fn reset_next(&self, n: usize) {
        self.budget.store(n, Ordering::SeqCst);
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    fn resets(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
    }

    async fn serve(
        listener: TcpListener,
        upstream: SocketAddr,
        mut link: watch::Receiver<Link>,
        resets: Arc<AtomicUsize>,
        budget: Arc<AtomicUsize>,
    ) {
        let addr = listener.local_addr().unwrap();
        let mut listener = Some(listener);
        loop {
            let current = *link.borrow_and_update();
            if current == Link::Refuse {
                // Closing the socket makes the port refuse connections.
                listener = None;
                if link.wait_for(|l| *l != Link::Refuse).await.is_err() {
                    return;
                }
                continue;
            }
            let accepting = match &listener {
                Some(listener) => listener,
                None => {
                    // Listening again on the same port (SO_REUSEADDR is set).
                    listener = Some(
                        TcpListener::bind(addr)
                            .await
                            .expect("rebind the proxy port"),
                    );
                    continue;
                }
            };
            tokio::select! {
                accepted = accepting.accept() => {
                    let Ok((client, _)) = accepted else { continue };
                    let spend = || budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                    if *link.borrow() == Link::Up && !spend() {
                        tokio::spawn(Self::pipe(client, upstream, link.clone()));
                    } else {
                        resets.fetch_add(1, Ordering::SeqCst);
                        let _ = client.set_zero_linger();
                        drop(client);
                    }
                }
                changed = link.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn pipe(mut client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            let _ = client.set_zero_linger();
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            _ = link.wait_for(|l| *l != Link::Up) => {
                let _ = client.set_zero_linger();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn moto_store(moto: &storage_testing::S3Server) -> Arc<dyn ObjectStore> {
    Arc::new(s3_builder(moto).build().unwrap())
}

/// Puts `count` task files `{prefix}/t00000.json`... (`{"n": i}`) into moto.
async fn seed_task_files(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    range: std::ops::Range<usize>,
) {
    futures::stream::iter(range)
        .map(|i| {
            let store = store.clone();
            let key = format!("{prefix}/t{i:05}.json");
            async move {
                store
                    .put(&key.into(), format!("{{\"n\": {i}}}").into())
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// Polls until the storage's sync has made progress (or fails the test).
async fn wait_in_progress(server: &Server, path: &str) -> Value {
    let started = Instant::now();
    loop {
        let (_, state) = server.get(path).await;
        if state["status"] == "in_progress" && state["last_sync_count"].as_u64().unwrap_or(0) > 0 {
            return state;
        }
        assert!(
            !matches!(
                state["status"].as_str(),
                Some("completed" | "completed_with_errors" | "failed")
            ),
            "the sync ended before the fault: {state}"
        );
        assert!(started.elapsed() < PATIENCE, "no progress: {state}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that a failed sync's traceback says the endpoint refused the
/// connection, and does not quote the secret key.
fn assert_refused_without_secret(traceback: &str, secret: &str) {
    assert!(
        traceback.to_lowercase().contains("connection refused"),
        "says what went wrong: {traceback}"
    );
    assert!(!traceback.contains(secret), "no secret: {traceback}");
}

async fn wait_synced(server: &Server, path: &str) -> Value {
    server.wait_synced_within(path, PATIENCE, String::new).await
}

async fn task_numbers(server: &Server, project: i64) -> (u64, Vec<String>) {
    all_task_values(|p| async move { server.get(&p).await.1 }, project, "n").await
}

const OBJECTS: usize = 1500;

/// A server with the S3 backend, syncing in batches of 50 (so a sync of
/// [`OBJECTS`] task files is long enough to be cut in the middle). Its S3
/// options are the defaults but for the endpoint policy: the retries under
/// test are the ones a deployment gets.
async fn s3_server_in_small_batches() -> Server {
    let backend: Arc<dyn Backend> = Arc::new(S3Backend::new(
        S3Options::new().with_endpoint_policy(EndpointPolicy::allow_private()),
    ));
    let runner = RunnerConfig {
        import: storage_core::import::ImportConfig {
            batch_size: 50,
            ..Default::default()
        },
        ..fast_runner()
    };
    Server::start_with(tempfile::tempdir().unwrap(), runner, vec![backend]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_is_retried_then_fails_readably_and_a_resync_completes_exactly() {
    let moto = storage_testing::moto();
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let prefix = storage_testing::unique_prefix("faults-outage");
    let store = moto_store(&moto);
    let seeding = Instant::now();
    seed_task_files(&store, &prefix, 0..OBJECTS).await;
    eprintln!(
        "{OBJECTS} objects put in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let server = s3_server_in_small_batches().await;
    let endpoint = format!("http://{}", proxy.addr);
    let storage_in = |project: i64| {
        json!({"project": project, "bucket": moto.bucket, "prefix": prefix, "use_blob_urls": false,
               "s3_endpoint": endpoint, "aws_access_key_id": moto.access_key_id,
               "aws_secret_access_key": moto.secret_access_key, "region_name": "us-east-1"})
    };

    // 1. A brief outage in the middle of the sync: retried, nothing lost.
    let project = server.project().await;
    let (status, storage) = server.post("/api/storages/s3", storage_in(project)).await;
    assert_eq!(status, StatusCode::CREATED, "{storage}");
    let path = format!("/api/storages/s3/{}", storage["id"]);
    server.sync(&path).await;
    let before = wait_in_progress(&server, &path).await;
    proxy.set(Link::Reset);
    let cut = Instant::now();
    while proxy.resets() < 3 {
        assert!(
            cut.elapsed() < PATIENCE,
            "no request reached the proxy during the outage"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    proxy.set(Link::Up);
    eprintln!(
        "brief outage at last_sync_count {}: {} connections reset in {:.2} s",
        before["last_sync_count"],
        proxy.resets(),
        cut.elapsed().as_secs_f64()
    );
    let done = wait_synced(&server, &path).await;
    assert_eq!(
        done["status"], "completed",
        "the requests that met the outage were retried: {done}"
    );
    assert_eq!(done["last_sync_count"], OBJECTS, "{done}");
    let (total, numbers) = task_numbers(&server, project).await;
    assert_eq!(
        (total, numbers.len(), distinct(&numbers)),
        (OBJECTS as u64, OBJECTS, OBJECTS)
    );

    // 2. A lasting outage in the middle of a sync (a second project's
    // storage reads the same objects): the sync fails, and says where.
    let project2 = server.project().await;
    let (status, storage2) = server.post("/api/storages/s3", storage_in(project2)).await;
    assert_eq!(status, StatusCode::CREATED, "{storage2}");
    let path2 = format!("/api/storages/s3/{}", storage2["id"]);
    server.sync(&path2).await;
    wait_in_progress(&server, &path2).await;
    proxy.set(Link::Refuse);
    let cut = Instant::now();
    let failed = wait_synced(&server, &path2).await;
    eprintln!(
        "lasting outage: failed after {:.1} s",
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(failed["status"], "failed", "{failed}");
    let traceback = failed["traceback"].as_str().unwrap();
    eprintln!("traceback:\n{traceback}");
    assert!(
        traceback.contains(&format!("reading task file \"{prefix}/t")),
        "names the object: {traceback}"
    );
    assert!(
        traceback.contains(&proxy.addr.to_string()),
        "names the endpoint: {traceback}"
    );
    assert_refused_without_secret(traceback, &moto.secret_access_key);
    let partial = failed["last_sync_count"].as_u64().unwrap_or(0);
    assert!(partial < OBJECTS as u64, "{failed}");

    // 3. The server is back: a new sync creates exactly what is missing.
    proxy.set(Link::Up);
    server.sync(&path2).await;
    let resynced = wait_synced(&server, &path2).await;
    assert_eq!(resynced["status"], "completed", "{resynced}");
    assert!(resynced["traceback"].is_null(), "{resynced}");
    let created = resynced["last_sync_count"].as_u64().unwrap();
    let existed = resynced["meta"]["tasks_existed"].as_u64().unwrap();
    assert_eq!(created + existed, OBJECTS as u64, "{resynced}");
    let (total, numbers) = task_numbers(&server, project2).await;
    assert_eq!(
        (total, numbers.len(), distinct(&numbers)),
        (OBJECTS as u64, OBJECTS, OBJECTS)
    );

    // 4. Exports meet the outage too: every write fails and is counted.
    let (status, export) = server
        .post("/api/storages/export/s3", {
            let mut body = storage_in(project2);
            body["prefix"] = json!(format!("{prefix}-export"));
            body
        })
        .await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    let export_path = format!("/api/storages/export/s3/{}", export["id"]);
    let first = wait_synced(&server, &export_path).await;
    assert_eq!(first["status"], "completed", "{first}");
    server.annotate_tasks(project2, 3).await;
    proxy.set(Link::Refuse);
    server.sync(&export_path).await;
    let failed = wait_synced(&server, &export_path).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["meta"]["annotations_failed"], 3, "{failed}");
    assert_eq!(failed["last_sync_count"], 0, "{failed}");
    let traceback = failed["traceback"].as_str().unwrap();
    assert!(
        traceback.starts_with("3 of 3 annotations could not be written"),
        "{traceback}"
    );
    assert!(
        !traceback.contains(&moto.secret_access_key),
        "no secret: {traceback}"
    );
    proxy.set(Link::Up);
    server.sync(&export_path).await;
    let exported = wait_synced(&server, &export_path).await;
    assert_eq!(
        (
            exported["status"].as_str(),
            exported["last_sync_count"].as_u64()
        ),
        (Some("completed"), Some(3)),
        "{exported}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_sync_that_loses_its_endpoint_fails_naming_the_part_and_a_resync_completes() {
    const FOLDERS: usize = 4;
    let moto = storage_testing::moto();
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let prefix = storage_testing::unique_prefix("faults-shards");
    let store = moto_store(&moto);
    let per_folder = OBJECTS / FOLDERS;
    for folder in 0..FOLDERS {
        let range = folder * per_folder..(folder + 1) * per_folder;
        seed_task_files(&store, &format!("{prefix}/d{folder}"), range).await;
    }

    let backend: Arc<dyn Backend> = Arc::new(S3Backend::new(
        S3Options::new().with_endpoint_policy(EndpointPolicy::allow_private()),
    ));
    let runner = RunnerConfig {
        workers: 2,
        import: storage_core::import::ImportConfig {
            batch_size: 50,
            ..Default::default()
        },
        ..fast_runner()
    };
    let server = Server::start_with(tempfile::tempdir().unwrap(), runner, vec![backend]).await;
    let project = server.project().await;
    let body = json!({"project": project, "bucket": moto.bucket, "prefix": prefix,
                      "use_blob_urls": false, "recursive_scan": true, "shard_listing": true,
                      "s3_endpoint": format!("http://{}", proxy.addr),
                      "aws_access_key_id": moto.access_key_id,
                      "aws_secret_access_key": moto.secret_access_key, "region_name": "us-east-1"});
    let (status, storage) = server.post("/api/storages/s3", body).await;
    assert_eq!(status, StatusCode::CREATED, "{storage}");
    let path = format!("/api/storages/s3/{}", storage["id"]);

    // The endpoint goes away for good in the middle of the sync: the job
    // fails, and its traceback says which part and why.
    server.sync(&path).await;
    wait_in_progress(&server, &path).await;
    proxy.set(Link::Refuse);
    let failed = wait_synced(&server, &path).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let traceback = failed["traceback"].as_str().unwrap();
    assert!(
        traceback.contains("parts of the listing")
            && traceback.contains(&format!("folder \"{prefix}/d")),
        "names the part: {traceback}"
    );
    assert_refused_without_secret(traceback, &moto.secret_access_key);
    let job = failed["last_sync_job"].as_str().unwrap();
    let shards_left = server
        .db
        .job_shards(storage["id"].as_i64().unwrap(), job)
        .await
        .unwrap();
    assert!(
        shards_left.is_empty(),
        "the failed job's shards are removed: {shards_left:?}"
    );

    // Back up: a new sync creates exactly what is missing.
    proxy.set(Link::Up);
    let resynced = server.sync_and_wait(&path).await;
    assert_eq!(resynced["status"], "completed", "{resynced}");
    assert_eq!(resynced["meta"]["shards"], FOLDERS + 1, "{resynced}");
    let created = resynced["last_sync_count"].as_u64().unwrap();
    let existed = resynced["meta"]["tasks_existed"].as_u64().unwrap();
    assert_eq!(created + existed, OBJECTS as u64, "{resynced}");
    let (total, numbers) = task_numbers(&server, project).await;
    assert_eq!(
        (total, numbers.len(), distinct(&numbers)),
        (OBJECTS as u64, OBJECTS, OBJECTS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_listing_that_meets_an_outage_is_retried_beyond_the_clients_own_retries() {
    const FILES: usize = 300;
    // Attempts of one request by the S3 client itself.
    const CLIENT_ATTEMPTS: usize = 3;
    let moto = storage_testing::moto();
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let prefix = storage_testing::unique_prefix("faults-listing");
    let store = moto_store(&moto);
    futures::stream::iter(0..FILES)
        .map(|i| {
            let store = store.clone();
            let key = format!("{prefix}/img{i:04}.jpg");
            async move { store.put(&key.into(), "x".into()).await.unwrap() }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let backend = || -> Vec<Arc<dyn Backend>> {
        let retry = object_store::RetryConfig {
            max_retries: CLIENT_ATTEMPTS - 1,
            ..Default::default()
        };
        let options = S3Options::new()
            .with_endpoint_policy(EndpointPolicy::allow_private())
            .with_retry(retry);
        vec![Arc::new(S3Backend::new(options))]
    };

    let server = Server::start_with(tempfile::tempdir().unwrap(), fast_runner(), backend()).await;
    let project = server.project().await;
    let path = server
        .create_storage("/api/storages/s3", json!({"project": project, "bucket": moto.bucket, "prefix": prefix, "use_blob_urls": true,
                   "s3_endpoint": format!("http://{}", proxy.addr), "aws_access_key_id": moto.access_key_id,
                   "aws_secret_access_key": moto.secret_access_key, "region_name": "us-east-1"}))
        .await;

    // The endpoint resets one connection more than the S3 client tries on
    // its own: the listing (all a Files-mode sync asks of S3) fails once
    // and is asked for again.
    proxy.reset_next(CLIENT_ATTEMPTS + 1);
    server.sync(&path).await;
    let done = wait_synced(&server, &path).await;
    assert_eq!(
        done["status"], "completed",
        "the listing was retried after the client gave up: {done}"
    );
    assert_eq!(
        proxy.resets(),
        CLIENT_ATTEMPTS + 1,
        "every planned reset met a request"
    );
    assert_eq!(done["last_sync_count"], FILES, "{done}");
    let server = &server;
    let (total, urls) =
        all_task_values(|p| async move { server.get(&p).await.1 }, project, "image").await;
    assert_eq!(total, FILES as u64);
    let expected: HashSet<String> = (0..FILES)
        .map(|i| format!("s3://{}/{prefix}/img{i:04}.jpg", moto.bucket))
        .collect();
    assert_eq!(urls.len(), FILES, "one task per object");
    assert!(
        urls.into_iter().collect::<HashSet<_>>() == expected,
        "each object has its own task"
    );
}

// ---------------------------------------------------------------------------
// The job runner under load and without workers.

/// A server whose API answers but whose workers are stopped: queued jobs
/// stay queued until another process runs them (or the queue times out).
async fn server_without_workers(dir: tempfile::TempDir, runner: RunnerConfig) -> Server {
    let server = Server::start_in(dir, runner).await;
    server.sync.shutdown().await;
    server
}

#[tokio::test]
async fn a_queued_job_no_worker_takes_times_out_and_a_requeue_clears_the_traceback() {
    let runner = RunnerConfig {
        queue_timeout: Duration::from_secs(1),
        ..fast_runner()
    };
    let server = server_without_workers(tempfile::tempdir().unwrap(), runner).await;
    let project = server.project().await;
    let path = server.folder_storage(project, "never", 5).await;
    let queued = server.sync(&path).await;
    assert_eq!(queued["status"], "queued", "{queued}");

    // What every instance's watchdog does on its rounds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.sync.recover(false).await.unwrap();
    let (_, failed) = server.get(&path).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["traceback"], "The sync job was not started within 1 s of being queued (no worker took it); start a new sync to try again.");
    assert!(failed["meta"]["time_failure"].is_string(), "{failed}");
    assert!(failed["last_sync"].is_null(), "{failed}");

    let requeued = server.sync(&path).await;
    let (_, shown) = server.get(&path).await;
    for state in [&requeued, &shown] {
        assert_eq!(state["status"], "queued", "{state}");
        assert!(
            state["traceback"].is_null(),
            "a re-queue clears the old traceback: {state}"
        );
        assert!(state["meta"].get("time_failure").is_none(), "{state}");
        assert_eq!(state["meta"]["attempts"], 2, "{state}");
        assert_ne!(
            state["last_sync_job"], queued["last_sync_job"],
            "a new job: {state}"
        );
    }
    let dir = server.stop().await;

    // A server with workers runs the re-queued job (queued in time).
    let server = Server::start_in(
        dir,
        RunnerConfig {
            queue_timeout: Duration::from_secs(3600),
            ..fast_runner()
        },
    )
    .await;
    let (_, state) = server.get(&path).await;
    if state["status"] == "failed" {
        // The restart itself took longer than the 1 s queue timeout.
        server.sync(&path).await;
    }
    assert_completed(&wait_synced(&server, &path).await, 5);
}

/// Asserts that a sync ended `completed`, with `count` new objects and no
/// traceback.
fn assert_completed(done: &Value, count: u64) {
    assert_eq!(
        (done["status"].as_str(), done["last_sync_count"].as_u64()),
        (Some("completed"), Some(count)),
        "{done}"
    );
    assert!(done["traceback"].is_null(), "{done}");
}

#[tokio::test]
async fn fifty_concurrent_sync_requests_queue_exactly_one_job() {
    const FILES: usize = 2000;
    let server = server_without_workers(tempfile::tempdir().unwrap(), fast_runner()).await;
    let project = server.project().await;
    let path = server.folder_storage(project, "one-job", FILES).await;
    let sync_path = format!("{path}/sync");
    // Without workers the job stays queued while all 50 requests land: each
    // must find the one job the first request queued.
    let responses =
        futures::future::join_all((0..50).map(|_| server.post(&sync_path, json!({})))).await;
    let mut jobs = HashSet::new();
    for (status, body) in &responses {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "queued", "{body}");
        jobs.insert(body["last_sync_job"].as_str().unwrap().to_string());
    }
    assert_eq!(jobs.len(), 1, "50 requests, one job: {jobs:?}");
    let (_, state) = server.get(&path).await;
    assert_eq!(state["meta"]["attempts"], 1, "queued once: {state}");
    let dir = server.stop().await;

    let server = Server::start_in(dir, fast_runner()).await;
    let done = wait_synced(&server, &path).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        jobs.contains(done["last_sync_job"].as_str().unwrap()),
        "{done}"
    );
    assert_eq!(done["last_sync_count"], FILES, "{done}");
    let (_, project_after) = server.get(&format!("/api/projects/{project}")).await;
    assert_eq!(
        project_after["task_number"], FILES,
        "exactly one task per file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_storages_syncing_at_once_all_finish_exactly() {
    const STORAGES: usize = 20;
    const FILES: usize = 300;
    let runner = RunnerConfig {
        workers: STORAGES,
        ..fast_runner()
    };
    let server = Server::start_in(tempfile::tempdir().unwrap(), runner).await;
    let project = server.project().await;
    let mut paths = Vec::new();
    for s in 0..STORAGES {
        paths.push(
            server
                .folder_storage(project, &format!("many/s{s:02}"), FILES)
                .await,
        );
    }
    for round in 0..2 {
        let sync_paths: Vec<String> = paths.iter().map(|path| format!("{path}/sync")).collect();
        let requests = sync_paths.iter().map(|path| server.post(path, json!({})));
        for (status, body) in futures::future::join_all(requests).await {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        for path in &paths {
            let done = wait_synced(&server, path).await;
            assert_eq!(done["status"], "completed", "round {round}: {done}");
            let (created, existed) = if round == 0 { (FILES, 0) } else { (0, FILES) };
            assert_eq!(done["last_sync_count"], created, "round {round}: {done}");
            assert_eq!(
                done["meta"]["tasks_existed"], existed,
                "round {round}: {done}"
            );
        }
    }
    let server = &server;
    let (total, urls) =
        all_task_values(|p| async move { server.get(&p).await.1 }, project, "image").await;
    assert_eq!(
        (total, urls.len(), distinct(&urls)),
        (
            (STORAGES * FILES) as u64,
            STORAGES * FILES,
            STORAGES * FILES
        )
    );
}

// ---------------------------------------------------------------------------
// Export targets that cannot be written.

#[tokio::test]
async fn export_write_failures_end_completed_with_errors_or_failed_never_completed() {
    let server = Server::start().await;
    let project = server
        .project_with(json!([{"image": "a"}, {"image": "b"}, {"image": "c"}]))
        .await;
    let out = server.root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let path = server
        .create_storage(
            "/api/storages/export/localfiles",
            json!({"project": project, "path": server.path("out")}),
        )
        .await;
    wait_synced(&server, &path).await;

    let annotations = server.annotate_tasks(project, 3).await;
    // Root ignores file modes: a directory where the object goes is what
    // stops a write. One annotation's object cannot be written...
    let blocked = out.join(annotations[1].to_string());
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
    server.sync(&path).await;
    let partial = wait_synced(&server, &path).await;
    assert_eq!(partial["status"], "completed_with_errors", "{partial}");
    assert_eq!(partial["last_sync_count"], 2, "{partial}");
    assert_eq!(partial["meta"]["annotations_failed"], 1, "{partial}");
    assert_eq!(partial["meta"]["total_annotations"], 3, "{partial}");
    let traceback = partial["traceback"].as_str().unwrap();
    assert!(
        traceback.starts_with("1 of 3 annotations could not be written"),
        "{traceback}"
    );
    assert!(
        traceback.contains(&format!("writing annotation {}", annotations[1])),
        "{traceback}"
    );

    // ... and when none can, the sync fails.
    for id in &annotations {
        let object = out.join(id.to_string());
        if object.is_file() {
            std::fs::remove_file(&object).unwrap();
        }
        std::fs::create_dir_all(object.join("in-the-way")).unwrap();
    }
    server.sync(&path).await;
    let failed = wait_synced(&server, &path).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        (
            failed["last_sync_count"].as_u64(),
            failed["meta"]["annotations_failed"].as_u64()
        ),
        (Some(0), Some(3)),
        "{failed}"
    );
    assert!(
        failed["traceback"]
            .as_str()
            .unwrap()
            .starts_with("3 of 3 annotations could not be written"),
        "{failed}"
    );
    assert!(
        failed["last_sync"].is_null() && failed["meta"]["time_failure"].is_string(),
        "{failed}"
    );

    // Saving an annotation still answers 200, and the failed write of its
    // object shows on the storage (which stays failed, its counts its own).
    let (status, _) = server
        .patch(
            &format!("/api/annotations/{}", annotations[0]),
            json!({"result": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The request's own attempt, or the background one that took it first.
    let started = Instant::now();
    let shown = loop {
        let (_, shown) = server.get(&path).await;
        if shown["meta"]["annotations_failed_ids"].is_array() {
            break shown;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the failure never showed: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(shown["meta"]["annotations_failed"], 3, "{shown}");
    assert_eq!(
        shown["meta"]["annotations_failed_ids"],
        json!([annotations[0]]),
        "{shown}"
    );
    assert_eq!(shown["meta"]["annotations_pending"], 1, "{shown}");

    // The target folder replaced by a file: the sync is refused and says why.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::write(&out, b"not a folder").unwrap();
    let (status, refused) = server.post(&format!("{path}/sync"), json!({})).await;
    let errors = support::envelope(status, &refused, StatusCode::BAD_REQUEST);
    assert!(
        errors["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains("/out"),
        "names the folder: {refused}"
    );
    let (_, unchanged) = server.get(&path).await;
    assert_eq!(unchanged["status"], "failed", "{unchanged}");

    // Fixed: everything is written.
    std::fs::remove_file(&out).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    server.sync(&path).await;
    assert_completed(&wait_synced(&server, &path).await, 3);
}

// ---------------------------------------------------------------------------
// On-save exports through the outbox: a failed write is shown and retried
// until it lands, with no request.

/// Waits until the export storage at `path` is in `status`; its state.
async fn wait_storage_status(server: &Server, path: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let (_, state) = server.get(path).await;
        if state["status"] == status {
            return state;
        }
        assert!(started.elapsed() < PATIENCE, "never {status}: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the storage shows the on-save export of `annotation` failing.
fn assert_export_failing(state: &Value, annotation: i64) {
    assert_eq!(state["status"], "completed_with_errors", "{state}");
    assert_eq!(state["meta"]["annotations_failed"], 1, "{state}");
    assert_eq!(
        state["meta"]["annotations_failed_ids"],
        json!([annotation]),
        "{state}"
    );
    assert_eq!(state["meta"]["annotations_pending"], 1, "{state}");
    let traceback = state["traceback"].as_str().unwrap();
    assert!(
        traceback.contains(&format!("annotation(s) {annotation}")),
        "{traceback}"
    );
}

/// Asserts the storage is back to `completed` with nothing failing.
fn assert_export_landed(state: &Value) {
    assert_eq!(state["status"], "completed", "{state}");
    assert!(state["traceback"].is_null(), "{state}");
    assert_eq!(state["meta"]["annotations_failed"], 0, "{state}");
    assert_eq!(state["meta"]["annotations_pending"], 0, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_save_export_to_a_broken_folder_lands_once_the_folder_is_back() {
    let server = Server::start().await;
    let project = server.project_with(json!([{"image": "a"}])).await;
    let out = server.root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let path = server
        .create_storage(
            "/api/storages/export/localfiles",
            json!({"project": project, "path": server.path("out")}),
        )
        .await;
    wait_synced(&server, &path).await;

    // The export folder replaced by a file: saving still answers 201.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::write(&out, b"not a folder").unwrap();
    let annotation = server.annotate_tasks(project, 1).await[0];
    // The request's own attempt, or the background one that took it first.
    let failing = wait_storage_status(&server, &path, "completed_with_errors").await;
    assert_export_failing(&failing, annotation);

    // Repaired: the annotation's file appears with no request but reads.
    std::fs::remove_file(&out).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let object = out.join(annotation.to_string());
    let started = Instant::now();
    while !object.is_file() {
        assert!(
            started.elapsed() < PATIENCE,
            "the retry never wrote {}",
            object.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written: Value = serde_json::from_slice(&std::fs::read(&object).unwrap()).unwrap();
    assert_eq!(written["id"], annotation);
    assert_export_landed(&wait_storage_status(&server, &path, "completed").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_save_export_to_an_unreachable_bucket_lands_once_it_is_back() {
    let moto = storage_testing::moto();
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let prefix = storage_testing::unique_prefix("faults-on-save");
    let server = s3_server_in_small_batches().await;
    let project = server.project_with(json!([{"image": "a"}])).await;
    let path = server
        .create_storage(
            "/api/storages/export/s3",
            json!({"project": project, "bucket": moto.bucket, "prefix": prefix,
                   "s3_endpoint": format!("http://{}", proxy.addr), "aws_access_key_id": moto.access_key_id,
                   "aws_secret_access_key": moto.secret_access_key, "region_name": "us-east-1"}),
        )
        .await;
    wait_synced(&server, &path).await;

    proxy.set(Link::Refuse);
    let annotation = server.annotate_tasks(project, 1).await[0];
    let failing = wait_storage_status(&server, &path, "completed_with_errors").await;
    assert_export_failing(&failing, annotation);
    let traceback = failing["traceback"].as_str().unwrap();
    assert!(!traceback.contains(&moto.secret_access_key), "{traceback}");

    proxy.set(Link::Up);
    let landed = wait_storage_status(&server, &path, "completed").await;
    assert_export_landed(&landed);
    let object = moto_store(&moto)
        .get(&format!("{prefix}/{annotation}").into())
        .await
        .expect("the retried export wrote the annotation")
        .bytes()
        .await
        .unwrap();
    let written: Value = serde_json::from_slice(&object).unwrap();
    assert_eq!(written["id"], annotation);
}

/// The tasks of `project` whose link is marked (`storage_object_exists`
/// false), and how many tasks there are.
async fn marked_tasks(server: &Server, project: i64) -> (usize, u64) {
    let (_, page) = server
        .get(&format!(
            "/api/tasks?project={project}&page_size=5000&resolve_uri=false"
        ))
        .await;
    let tasks = page["tasks"].as_array().unwrap();
    let marked = tasks
        .iter()
        .filter(|t| t["storage_object_exists"] == json!(false))
        .count();
    (marked, page["total"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_broken_midway_deletes_and_marks_nothing_and_the_next_one_converges() {
    const GONE: usize = 100;
    let moto = storage_testing::moto();
    let upstream: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let prefix = storage_testing::unique_prefix("faults-follow");
    let store = moto_store(&moto);
    seed_task_files(&store, &prefix, 0..OBJECTS).await;

    let server = s3_server_in_small_batches().await;
    let project = server.project().await;
    let path = server
        .create_storage(
            "/api/storages/s3",
            json!({"project": project, "bucket": moto.bucket, "prefix": prefix, "use_blob_urls": false,
                   "s3_endpoint": format!("http://{}", proxy.addr), "aws_access_key_id": moto.access_key_id,
                   "aws_secret_access_key": moto.secret_access_key, "region_name": "us-east-1",
                   "on_object_changed": "update", "on_object_deleted": "delete", "deletion_guard": 100}),
        )
        .await;
    server.sync(&path).await;
    assert_eq!(
        wait_synced(&server, &path).await["last_sync_count"],
        OBJECTS
    );

    // Objects deleted, the others changed (so the next sync reads them
    // again, slowly enough to be cut in the middle).
    for i in 0..GONE {
        store
            .delete(&format!("{prefix}/t{i:05}.json").into())
            .await
            .unwrap();
    }
    futures::stream::iter(GONE..OBJECTS)
        .map(|i| {
            let store = store.clone();
            let key = format!("{prefix}/t{i:05}.json");
            async move {
                let body = format!("{{\"n\": {i}, \"v\": 2}}");
                store.put(&key.into(), body.into()).await.unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    server.sync(&path).await;
    let started = Instant::now();
    loop {
        let (_, state) = server.get(&path).await;
        if state["meta"]["tasks_updated"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            state["status"] != "completed",
            "the sync ended before the fault: {state}"
        );
        assert!(started.elapsed() < PATIENCE, "no progress: {state}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.set(Link::Refuse);
    let failed = wait_synced(&server, &path).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        marked_tasks(&server, project).await,
        (0, OBJECTS as u64),
        "nothing deleted or marked: {failed}"
    );

    proxy.set(Link::Up);
    server.sync(&path).await;
    let done = wait_synced(&server, &path).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["meta"]["tasks_deleted"], GONE, "{done}");
    assert_eq!(done["meta"]["objects_missing"], GONE, "{done}");
    assert_eq!(
        marked_tasks(&server, project).await,
        (0, (OBJECTS - GONE) as u64)
    );
    let (_, page) = server
        .get(&format!(
            "/api/tasks?project={project}&page_size=5000&resolve_uri=false"
        ))
        .await;
    let stale = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["data"]["v"] != json!(2))
        .count();
    assert_eq!(stale, 0, "every changed file's task has its new data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_scheduled_sync_resumes_it_exactly() {
    const SCHEDULED_FILES: usize = 50_000;
    let flags = ["--min-sync-interval", "1"];
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().canonicalize().unwrap();
    let folder = data_dir.join("local-files").join("timed");
    let _files = ManyFiles::write(folder.clone(), SCHEDULED_FILES);

    let (mut server, api) = start_process_with(&data_dir, &flags);
    let project = api
        .ok(
            Method::POST,
            "/api/projects",
            Some(json!({"title": "scheduled"})),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let storage = api
        .ok(
            Method::POST,
            "/api/storages/localfiles",
            Some(json!({"project": project, "path": folder, "use_blob_urls": true, "sync_interval": 3})),
        )
        .await;
    let path = format!("/api/storages/localfiles/{}", storage["id"]);

    // No sync request: kill as soon as the scheduled sync has progressed.
    // (The interval leaves seconds to see the resumed job end before the
    // next scheduled one.)
    let started = Instant::now();
    let at_kill = loop {
        let state = api.ok(Method::GET, &path, None).await;
        if state["status"] == "in_progress" && state["last_sync_count"].as_u64().unwrap_or(0) > 0 {
            break state;
        }
        assert!(
            state["status"] != "completed",
            "ended before the kill: {state}"
        );
        assert!(started.elapsed() < PATIENCE, "no scheduled sync: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(at_kill["meta"]["scheduled"], true, "{at_kill}");
    server.kill();

    let (server, api) = start_process_with(&data_dir, &flags);
    let resumed = api
        .wait_synced_within(&path, PATIENCE, || server.log_text())
        .await;
    assert_eq!(resumed["status"], "completed", "{resumed}");
    assert_eq!(
        resumed["last_sync_job"], at_kill["last_sync_job"],
        "{resumed}"
    );
    assert_eq!(resumed["meta"]["resumes"], 1, "{resumed}");
    assert_eq!(resumed["last_sync_count"], SCHEDULED_FILES, "{resumed}");
    let shown = api
        .ok(Method::GET, &format!("/api/projects/{project}"), None)
        .await;
    assert_eq!(shown["task_number"], SCHEDULED_FILES, "{shown}");
}

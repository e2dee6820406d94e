//! Correctness at scale through the HTTP API: a large JSON Lines task file
//! is streamed into exactly one task per line, also when the server stops
//! in the middle of the file and a new process finishes it.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use storage_core::import::ImportConfig;
use storage_core::RunnerConfig;
use support::{fast_runner, Server};

/// Lines of the large file: about 9 MiB, above the 4 MiB streaming threshold.
const LINES: usize = 60_000;

fn write_jsonl(server: &Server, name: &str) {
    let folder = server.root.join("big");
    std::fs::create_dir_all(&folder).unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(folder.join(name)).unwrap());
    for i in 0..LINES {
        writeln!(file, r#"{{"text": "line {i}: some words to make the task about one hundred and fifty bytes long", "n": {i}}}"#).unwrap();
    }
    file.flush().unwrap();
    let size = std::fs::metadata(folder.join(name)).unwrap().len();
    assert!(
        size > ImportConfig::default().stream_threshold_bytes,
        "the file must be streamed ({size} bytes)"
    );
}

async fn tasks_storage(server: &Server, project: i64) -> String {
    server.local_storage(project, "big", false).await
}

/// Every task of the project, by paging the task list: (row values of `n`).
async fn task_numbers(server: &Server, project: i64) -> Vec<i64> {
    let mut numbers = Vec::new();
    for page in 1.. {
        let (status, body) = server
            .get(&format!(
                "/api/tasks?project={project}&page={page}&page_size=5000"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let tasks = body["tasks"].as_array().unwrap();
        numbers.extend(tasks.iter().map(|t| t["data"]["n"].as_i64().unwrap()));
        // The page after the last is Label Studio's 404 "Invalid page.".
        if tasks.len() < 5000 || numbers.len() as u64 >= body["total"].as_u64().unwrap() {
            break;
        }
    }
    numbers.sort_unstable();
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_jsonl_file_becomes_exactly_one_task_per_line() {
    let server = Server::start().await;
    write_jsonl(&server, "tasks.jsonl");
    server.write_files(&[("big/small.json", r#"{"text": "small", "n": -1}"#)]);
    let project = server.project().await;
    let path = tasks_storage(&server, project).await;

    let done = server.sync_and_wait(&path).await;
    assert_eq!(
        (done["status"].as_str(), done["last_sync_count"].as_u64()),
        (Some("completed"), Some(LINES as u64 + 1)),
        "{done}"
    );
    let expected: Vec<i64> = (-1..LINES as i64).collect();
    assert_eq!(
        task_numbers(&server, project).await,
        expected,
        "one task per line, none twice"
    );

    let again = server.sync_and_wait(&path).await;
    assert_eq!(again["last_sync_count"], 0, "{again}");
    assert_eq!(again["meta"]["tasks_existed"], LINES as u64 + 1, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_inside_a_large_file_is_finished_by_the_next_one() {
    // Small batches, so that the stop lands inside the file.
    let runner = RunnerConfig {
        import: ImportConfig {
            batch_size: 200,
            ..ImportConfig::default()
        },
        ..fast_runner()
    };
    let server = Server::start_in(tempfile::tempdir().unwrap(), runner.clone()).await;
    write_jsonl(&server, "tasks.jsonl");
    let project = server.project().await;
    let path = tasks_storage(&server, project).await;

    server.post(&format!("{path}/sync"), json!({})).await;
    let started = Instant::now();
    let progress = loop {
        let (_, state) = server.get(&path).await;
        let count = state["last_sync_count"].as_u64().unwrap_or(0);
        if state["status"] == "in_progress" && count > 0 {
            break count;
        }
        assert!(
            state["status"] != "completed",
            "the sync ended before it could be stopped: {state}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress: {state}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let dir = server.stop().await;
    assert!(progress < LINES as u64);

    // The next process resumes the job (stopped at a batch boundary) and
    // reads the unfinished file again, creating only what is missing.
    let server = Server::start_in(dir, runner).await;
    let done = server.wait_synced(&path).await;
    assert_eq!(done["status"], "completed", "{done}");
    let expected: Vec<i64> = (0..LINES as i64).collect();
    assert_eq!(
        task_numbers(&server, project).await,
        expected,
        "every line once after the restart"
    );

    let again = server.sync_and_wait(&path).await;
    assert_eq!(
        again["last_sync_count"], 0,
        "a finished file is not read again: {again}"
    );
}

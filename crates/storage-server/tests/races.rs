//! A folder below the document root swapped for a symlink to a folder
//! outside it, over and over, while `/data/local-files/` serves and a
//! Tasks-mode sync reads: not one byte from outside the root may come out.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::Server;

const FILES: usize = 300;

/// Swaps `folder` for a symlink to `outside` and back until stopped;
/// counts the swaps.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(folder: PathBuf, outside: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicUsize::new(0));
        let (stopping, counting) = (stop.clone(), swaps.clone());
        let thread = std::thread::spawn(move || {
            let aside = folder.with_extension("aside");
            while !stopping.load(Ordering::Relaxed) {
                std::fs::rename(&folder, &aside).unwrap();
                std::os::unix::fs::symlink(&outside, &folder).unwrap();
                // Each state lasts a moment: on a busy machine a bare
                // yield left the real folder in place for too short a time
                // for any request to be served from it.
                std::thread::sleep(Duration::from_micros(200));
                std::fs::remove_file(&folder).unwrap();
                std::fs::rename(&aside, &folder).unwrap();
                counting.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Self {
            stop,
            swaps,
            thread: Some(thread),
        }
    }

    /// Swaps so far.
    fn count(&self) -> usize {
        self.swaps.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.swaps.load(Ordering::Relaxed)
    }
}

/// `<root>/shared/box` with `FILES` files saying "inside", and a folder
/// outside the root with the same names saying "SECRET".
fn lay_out(server: &Server, outside_dir: &Path) -> (PathBuf, PathBuf) {
    let folder = server.root.join("shared/box");
    let outside = outside_dir.join("elsewhere");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..FILES {
        let name = format!("t{i:04}.json");
        std::fs::write(folder.join(&name), r#"{"text": "inside"}"#).unwrap();
        std::fs::write(outside.join(&name), r#"{"text": "SECRET"}"#).unwrap();
    }
    (folder, outside)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_files_never_come_from_outside_the_root() {
    let server = Server::start().await;
    let outside_dir = tempfile::tempdir().unwrap();
    let (folder, outside) = lay_out(&server, outside_dir.path());
    let project = server.project().await;
    server.local_storage(project, "shared", true).await;

    let swapper = Swapper::start(folder, outside);
    let (mut served, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    while Instant::now() < deadline {
        let (status, _, body) = server
            .call_text(
                reqwest::Method::GET,
                &format!("/data/local-files/?d=shared/box/t{:04}.json", i % FILES),
                None,
            )
            .await;
        i += 1;
        assert!(!body.contains("SECRET"), "request {i} served {body}");
        match status {
            StatusCode::OK => served += 1,
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => refused += 1,
            other => panic!("request {i}: {other} {body}"),
        }
    }
    let swaps = swapper.stop();
    assert!(swaps > 100, "the folder was swapped only {swaps} times");
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_mode_syncs_never_read_files_outside_the_root() {
    let server = Server::start().await;
    let outside_dir = tempfile::tempdir().unwrap();
    let (folder, outside) = lay_out(&server, outside_dir.path());
    let swapper = Swapper::start(folder, outside);

    // Fresh storages (in fresh projects) read every file again: at least
    // four, and until the folder was swapped often enough during them (a
    // busy machine gives the swapper fewer turns per sync).
    let mut imported = 0;
    let mut rounds = 0;
    while rounds < 4 || (swapper.count() <= 100 && rounds < 40) {
        rounds += 1;
        let project = server.project().await;
        let storage = server
            .create_storage(
                "/api/storages/localfiles",
                json!({"project": project, "path": server.path("shared"),
                       "use_blob_urls": false, "recursive_scan": true}),
            )
            .await;
        let synced = server.sync_and_wait(&storage).await;
        // Files read while their folder led outside are reported, not read;
        // a listing that met the folder between its two names fails the
        // sync (it is not half-applied).
        let vanished = synced["traceback"]
            .as_str()
            .is_some_and(|t| t.contains("No such file or directory"));
        assert!(
            matches!(
                synced["status"].as_str(),
                Some("completed" | "completed_with_errors")
            ) || (synced["status"] == "failed" && vanished),
            "{synced}"
        );
        let (_, tasks) = server
            .get(&format!("/api/tasks?project={project}&page_size=10000"))
            .await;
        let tasks = tasks["tasks"].as_array().unwrap();
        for task in tasks {
            assert_eq!(task["data"], json!({"text": "inside"}), "{task}");
        }
        imported += tasks.len();
    }
    let swaps = swapper.stop();
    assert!(swaps > 100, "the folder was swapped only {swaps} times");
    assert!(imported > 0, "nothing was imported at all");
}

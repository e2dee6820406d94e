//! Macro benchmark: syncs driven through the HTTP API of the `storage-server`
//! binary (a separate process, built by `cargo bench` with the bench profile), timing each sync from the
//! `POST .../sync` to its final status and reading the server's peak
//! resident memory (VmHWM) from /proc. One fresh server and data directory
//! per scenario, so each peak belongs to that scenario alone.
//!
//! Run with `cargo bench -p storage-server --bench http_sync`.
//! `BENCH` chooses scenarios (default `files,tasks,export`; also `jsonl`, `parquet`, `s3`, `azure`, `redis`,
//! `databricks`, `big_task`):
//!
//! - `files`: Files-mode local folders of `BENCH_FILES` files (default `10000,100000`), and a
//!   re-sync, next to their floor in the same run: a bare listing through the same code path;
//! - `tasks`: Tasks mode, `BENCH_TASK_FILES` JSON files of one task each (default `10000,100000`),
//!   next to its floor in the same run: reading the files once plus a Files-mode sync of them;
//! - `jsonl`: Tasks mode, one JSON Lines file of `BENCH_JSONL_MIB` MiB (default 1024), next to
//!   its floor in the same run: serde_json parsing every line;
//! - `parquet`: Tasks mode, one Parquet file of `BENCH_PARQUET_MIB` MiB (default 1024; row
//!   groups of 2^20 rows, as pyarrow writes by default; uncompressed, so the file's size is
//!   its data's), then the same tasks as one JSON Lines file, each on a fresh server;
//! - `export`: `BENCH_ANNOTATIONS` annotations (default 100000) exported to a local folder;
//! - `s3`: Files mode against moto (`scripts/emulators.sh start`), `BENCH_S3_OBJECTS` objects
//!   (default 20000), next to a bare paginated ListObjectsV2 of the same prefix;
//! - `azure`: the same against Azurite, `BENCH_AZURE_BLOBS` blobs (default 10000), next to a
//!   bare List Blobs;
//! - `redis`: Tasks mode against the test Redis (`scripts/redis.sh start`), `BENCH_REDIS_KEYS`
//!   keys of one task each (default 10000), next to a bare SCAN and to a SCAN that reads every
//!   value;
//! - `databricks`: Files mode with `recursive_scan` against the Files API double,
//!   `BENCH_DATABRICKS_FILES` files (default 10000), next to a bare recursive listing through
//!   the same Files API client;
//! - `follow`: a Files-mode local folder of `BENCH_FOLLOW_FILES` files (default
//!   `100000,1000000`) synced, then re-synced unchanged with the default policies and with
//!   `on_object_changed: update` + `on_object_deleted: delete`, then 1% deleted and 1% changed
//!   and synced again under those policies; each with the server's peak RSS over the phase;
//! - `webhooks`: a Files-mode sync of `BENCH_WEBHOOK_FILES` files (default 100000)
//!   announced to a loopback receiver (delay from the sync's end to its
//!   `STORAGE_SYNC_COMPLETED`), then `BENCH_WEBHOOK_EVENTS` events (default 2000) queued
//!   while the receiver fails and drained once it answers (events/s, next to a plain client);
//! - `big_task`: the server's peak memory, as a multiple of the task's size (the floor), while
//!   it syncs one task of `BENCH_TASK_MIB` MiB (default 60) and while it lists it
//!   (`GET /api/tasks`), for a task of one long string and one of many small objects.
//!
//! - `events`: event-driven sync, a watched local folder and an S3 bucket whose notifications go to
//!   SQS (moto): latency from an object's creation to its task (`created_at`), p50 and p99 over
//!   `BENCH_EVENT_OBJECTS` objects (default 1000) created one after another, the sustained rate
//!   of `BENCH_EVENT_BURST` objects (default 10000 local, a tenth on moto) created at once, and
//!   the LIST calls both make (counted by a proxy in front of moto) next to a re-sync's;
//! - `shards`: one storage split into shards (`shard_listing`) on SeaweedFS
//!   (`scripts/emulators.sh start`), `BENCH_SHARD_OBJECTS` objects (default 100000) under 16
//!   top-level prefixes, synced by a server with 1, 2 and 4 workers and without sharding, each
//!   next to one sequential listing of the same prefix (the floor, same run); with a
//!   `postgres://` `BENCH_DATABASE_URL`, also by two instances of 2 workers on one database.
//!   Directly, then through a proxy adding `BENCH_SHARD_LATENCY_MS` (default 30) to each
//!   request, as a cloud endpoint's round trip does.
//!
//! `BENCH_DATABASE_URL` runs the server on that database instead of its
//! embedded SQLite file (a `postgres://` URL: a fresh database per scenario
//! on that server). Every scenario asserts its counts, so a fast wrong
//! answer cannot pass.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark reports on stdout and stops on any failure

// The tests' way to start the binary and talk to it, so there is one.
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::process::{self, Process};
use support::receiver::Receiver;
use support::Api;

const TOKEN: &str = "bench-token-0123456789";

fn main() {
    let scenarios = std::env::var("BENCH").unwrap_or_else(|_| "files,tasks,export".into());
    println!("| scenario | objects | tasks | time (s) | per second | again, nothing new (s) | peak server RSS (MiB) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for scenario in scenarios.split(',').map(str::trim) {
        match scenario {
            "files" => {
                for n in env_list("BENCH_FILES", "10000,100000") {
                    files(n);
                }
            }
            "tasks" => {
                for n in env_list("BENCH_TASK_FILES", "10000,100000") {
                    tasks(n);
                }
            }
            "jsonl" => jsonl(env_list("BENCH_JSONL_MIB", "1024")[0]),
            "parquet" => parquet(env_list("BENCH_PARQUET_MIB", "1024")[0]),
            "export" => export(env_list("BENCH_ANNOTATIONS", "100000")[0]),
            "s3" => s3(env_list("BENCH_S3_OBJECTS", "20000")[0]),
            "azure" => azure(env_list("BENCH_AZURE_BLOBS", "10000")[0]),
            "redis" => redis(env_list("BENCH_REDIS_KEYS", "10000")[0]),
            "databricks" => databricks(env_list("BENCH_DATABRICKS_FILES", "10000")[0]),
            "big_task" => big_task(env_list("BENCH_TASK_MIB", "60")[0]),
            "follow" => {
                for n in env_list("BENCH_FOLLOW_FILES", "100000,1000000") {
                    follow(n);
                }
            }
            "webhooks" => webhooks(
                env_list("BENCH_WEBHOOK_FILES", "100000")[0],
                env_list("BENCH_WEBHOOK_EVENTS", "2000")[0],
            ),
            "events" => events(
                env_list("BENCH_EVENT_OBJECTS", "1000")[0],
                env_list("BENCH_EVENT_BURST", "10000")[0],
            ),
            "shards" => shards(env_list("BENCH_SHARD_OBJECTS", "100000")[0]),
            other => {
                panic!("unknown scenario {other:?} in BENCH (files, tasks, jsonl, parquet, export, s3, azure, redis, databricks, big_task, follow, webhooks, events, shards)")
            }
        }
    }
}

fn files(n: usize) {
    let bench = Bench::start();
    let folder = bench.folder("images");
    for i in 0..n {
        std::fs::write(folder.join(format!("img_{i:07}.jpg")), b"x").unwrap();
    }
    let storage = bench.local_import(&folder, true);
    let (first, state) = bench.sync_and_wait("localfiles", storage);
    assert_eq!(state["last_sync_count"], n as u64, "{state}");
    let (again, state) = bench.sync_and_wait("localfiles", storage);
    assert_eq!(state["last_sync_count"], 0, "{state}");
    bench.report("files, local", n, n, first, Some(again));
    let listing = bench.bare_local_listing(&folder, n);
    report_floor(
        "floor: a bare listing of the folder through the same code path (`importable`)",
        n,
        listing,
        first,
    );
    println!(
        "| | | | | | ratio re-sync / floor: **{:.2}** | |",
        again.as_secs_f64() / listing.as_secs_f64()
    );
}

/// Tasks mode over `n` one-task JSON files, next to its floor measured in
/// the same run: reading the same files once (in this process, one after
/// another, warm cache as for the sync) plus a Files-mode sync of the same
/// `n` objects (a second storage on the same folder, same server, both
/// after a warm-up sync of 1,000 files in each mode).
fn tasks(n: usize) {
    let bench = Bench::start();
    // Both timed syncs run on a warm server (threads started, statements
    // prepared), whichever comes first.
    let warm_up = bench.folder("warm-up");
    for i in 0..1000 {
        std::fs::write(warm_up.join(format!("task_{i:07}.json")), task_line(i)).unwrap();
    }
    for use_blob_urls in [false, true] {
        let storage = bench.local_import(&warm_up, use_blob_urls);
        let (_, state) = bench.sync_and_wait("localfiles", storage);
        assert_eq!(state["last_sync_count"], 1000, "{state}");
    }
    let folder = bench.folder("tasks");
    for i in 0..n {
        std::fs::write(folder.join(format!("task_{i:07}.json")), task_line(i)).unwrap();
    }
    let storage = bench.local_import(&folder, false);
    let (first, state) = bench.sync_and_wait("localfiles", storage);
    assert_eq!(state["last_sync_count"], n as u64, "{state}");
    let (again, state) = bench.sync_and_wait("localfiles", storage);
    assert_eq!(state["last_sync_count"], 0, "{state}");
    bench.report("tasks, one per JSON file", n, n, first, Some(again));

    let started = Instant::now();
    let mut bytes = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        bytes += std::fs::read(entry.unwrap().path()).unwrap().len();
    }
    let read = started.elapsed();
    assert!(bytes > 0);
    let files_mode = bench.local_import(&folder, true);
    let (files_sync, state) = bench.sync_and_wait("localfiles", files_mode);
    assert_eq!(state["last_sync_count"], n as u64, "{state}");
    report_floor(
        &format!(
            "floor: reading the {n} files once ({:.2} s) + a Files-mode sync of them ({:.2} s)",
            read.as_secs_f64(),
            files_sync.as_secs_f64()
        ),
        n,
        read + files_sync,
        first,
    );
}

/// One row for a floor measured in the same run, with the scenario's time
/// as a ratio to it.
fn report_floor(floor: &str, n: usize, floor_took: Duration, took: Duration) {
    println!(
        "| {floor} | {n} | | {:.2} | {:.0} | ratio sync / floor: **{:.2}** | |",
        floor_took.as_secs_f64(),
        n as f64 / floor_took.as_secs_f64(),
        took.as_secs_f64() / floor_took.as_secs_f64()
    );
}

/// Tasks mode over one JSON Lines file of `mib` MiB, next to its floor in
/// the same run: parsing every line into a `serde_json::Value` alone.
fn jsonl(mib: usize) {
    let bench = Bench::start();
    let folder = bench.folder("jsonl");
    let path = folder.join("tasks.jsonl");
    let lines = write_jsonl(&path, |bytes, _| bytes >= mib << 20);
    let took = bench.sync_task_file(&folder, &format!("tasks, one {mib} MiB JSONL file"), lines);
    let (parsed, floor) = parse_jsonl(&path);
    assert_eq!(parsed, lines);
    let size_mib = std::fs::metadata(&path).unwrap().len() as f64 / f64::from(1 << 20);
    println!(
        "| the sync: {:.0} MiB/s, {:.0} tasks/s; serde_json alone: {:.0} MiB/s | | | | | | |",
        size_mib / took.as_secs_f64(),
        lines as f64 / took.as_secs_f64(),
        size_mib / floor.as_secs_f64()
    );
    report_floor(
        "floor: serde_json parsing every line of the file",
        lines,
        floor,
        took,
    );
}

/// Parses every line of a JSON Lines file into a `Value` (the floor of a
/// JSONL sync): the lines parsed and the time, reading included.
fn parse_jsonl(path: &Path) -> (usize, Duration) {
    use std::io::BufRead;
    let started = Instant::now();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
    let (mut line, mut parsed) = (Vec::new(), 0);
    while reader.read_until(b'\n', &mut line).unwrap() > 0 {
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert!(value.is_object());
        parsed += 1;
        line.clear();
    }
    (parsed, started.elapsed())
}

/// Writes `task_line`s to `path` until `done(bytes, lines)`; returns the
/// number of lines.
fn write_jsonl(path: &Path, done: impl Fn(usize, usize) -> bool) -> usize {
    let mut file = BufWriter::new(std::fs::File::create(path).unwrap());
    let (mut written, mut lines) = (0, 0);
    while !done(written, lines) {
        let line = task_line(lines);
        file.write_all(line.as_bytes()).unwrap();
        written += line.len();
        lines += 1;
    }
    file.into_inner().unwrap().sync_all().unwrap();
    lines
}

fn parquet(mib: usize) {
    let bench = Bench::start();
    let folder = bench.folder("parquet");
    let rows = write_parquet(&folder.join("tasks.parquet"), mib << 20);
    bench.sync_task_file(&folder, &format!("tasks, one {mib} MiB Parquet file"), rows);
    drop(bench);

    let bench = Bench::start();
    let folder = bench.folder("jsonl");
    let path = folder.join("tasks.jsonl");
    write_jsonl(&path, |_, lines| lines == rows);
    let size = std::fs::metadata(&path).unwrap().len() >> 20;
    let scenario = format!("tasks, the same rows as one {size} MiB JSONL file");
    bench.sync_task_file(&folder, &scenario, rows);
}

/// Writes the tasks of `task_line` as Parquet rows (`text`, and
/// `meta_info` as a struct) to `path` until it holds `bytes`, in row
/// groups of 2^20 rows; returns the number of rows.
fn write_parquet(path: &Path, bytes: usize) -> usize {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;

    const GROUP_ROWS: usize = 1 << 20;
    const CHUNK_ROWS: usize = 1 << 16;
    let schema = parquet::schema::parser::parse_message_type(
        "message task { required binary text (STRING);
         required group meta_info { required binary source (STRING); required int64 index; } }",
    )
    .unwrap();
    let properties = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema.into(), properties.into()).unwrap();
    let mut rows = 0;
    while writer.bytes_written() < bytes {
        let group_rows = rows..rows + GROUP_ROWS;
        let mut group = writer.next_row_group().unwrap();
        for column in 0..3 {
            let mut writer = group.next_column().unwrap().unwrap();
            for start in group_rows.clone().step_by(CHUNK_ROWS) {
                let chunk = start..start + CHUNK_ROWS;
                if column == 2 {
                    let index: Vec<i64> = chunk.map(|i| i as i64).collect();
                    writer
                        .typed::<Int64Type>()
                        .write_batch(&index, None, None)
                        .unwrap();
                } else {
                    let text: Vec<ByteArray> = chunk
                        .map(|i| match column {
                            0 => ByteArray::from(task_text(i).as_str()),
                            _ => ByteArray::from("bench"),
                        })
                        .collect();
                    writer
                        .typed::<ByteArrayType>()
                        .write_batch(&text, None, None)
                        .unwrap();
                }
            }
            writer.close().unwrap();
        }
        group.close().unwrap();
        rows += GROUP_ROWS;
    }
    writer.close().unwrap();
    rows
}

/// One large task, synced and listed: how much memory each costs beyond
/// the server's own, in multiples of the task file's size.
fn big_task(mib: usize) {
    println!("| task shape | task file (MiB) | sync: peak over idle (x task) | list: peak over idle (x task) |");
    println!("|---|---:|---:|---:|");
    for shape in ["one long string", "many small objects"] {
        let bench = Bench::start();
        let folder = bench.folder("big");
        let data = if shape == "one long string" {
            json!({"text": "x".repeat(mib << 20)})
        } else {
            let items: Vec<Value> = (0..(mib << 20) / 26)
                .map(|i| json!({"a": i, "b": "yy"}))
                .collect();
            json!({"text": "t", "items": items})
        };
        let file = folder.join("task.json");
        std::fs::write(&file, serde_json::to_vec(&json!({"data": data})).unwrap()).unwrap();
        let text_len = data["text"].as_str().map(str::len);
        drop(data);
        let size = std::fs::metadata(&file).unwrap().len() as f64 / f64::from(1 << 20);
        let storage = bench.local_import(&folder, false);
        let pid = bench.server.child.id();
        reset_peak_rss(pid);
        let idle = rss_mib(pid, "VmRSS:");
        let (_, state) = bench.sync_and_wait("localfiles", storage);
        assert_eq!(state["last_sync_count"], 1, "{state}");
        let sync = (rss_mib(pid, "VmHWM:") - idle) / size;
        reset_peak_rss(pid);
        let idle = rss_mib(pid, "VmRSS:");
        let page = bench.call(
            reqwest::Method::GET,
            &format!("/api/tasks?project={}", bench.project),
            None,
        );
        assert_eq!(
            page["tasks"][0]["data"]["text"].as_str().map(str::len),
            text_len
        );
        let list = (rss_mib(pid, "VmHWM:") - idle) / size;
        println!("| {shape} | {size:.0} | {sync:.2} | {list:.2} |");
    }
}

/// Following the bucket at scale: what the comparison with the links
/// costs next to today's re-sync, and what 1% deleted and 1% changed cost.
fn follow(n: usize) {
    let bench = Bench::start();
    let folder = bench.folder("follow");
    let name = |i: usize| folder.join(format!("img_{i:07}.jpg"));
    for i in 0..n {
        std::fs::write(name(i), b"x").unwrap();
    }
    let storage = bench.local_import(&folder, true);
    let path = format!("/api/storages/localfiles/{storage}");
    let policies = |changed: &str, deleted: &str| {
        let body = json!({"on_object_changed": changed, "on_object_deleted": deleted});
        bench.call(reqwest::Method::PATCH, &path, Some(body));
    };
    let pid = bench.server.child.id();
    let phase = |label: &str| {
        reset_peak_rss(pid);
        let (took, state) = bench.sync_and_wait("localfiles", storage);
        let peak = rss_mib(pid, "VmHWM:");
        println!(
            "| {label} | {n} | {:.2} | {} | {} | {} | {peak:.0} |",
            took.as_secs_f64(),
            state["last_sync_count"],
            state["meta"]["objects_changed"],
            state["meta"]["tasks_deleted"],
        );
        state
    };
    println!("| phase | files | seconds | created | changed | deleted | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let first = phase("first sync");
    assert_eq!(first["last_sync_count"], n as u64, "{first}");
    let keep = phase("unchanged re-sync, keep/keep (Label Studio's)");
    assert_eq!(keep["meta"]["tasks_existed"], n as u64, "{keep}");
    policies("update", "delete");
    let unchanged = phase("unchanged re-sync, update/delete");
    assert_eq!(unchanged["meta"]["objects_changed"], 0, "{unchanged}");
    assert_eq!(unchanged["meta"]["tasks_deleted"], 0, "{unchanged}");
    // Every 100th file deleted, the one after it changed (size and time).
    for i in (0..n).step_by(100) {
        std::fs::remove_file(name(i)).unwrap();
        std::fs::write(name(i + 1), b"changed").unwrap();
    }
    let followed = phase("1% deleted + 1% changed, update/delete");
    assert_eq!(
        followed["meta"]["tasks_deleted"],
        (n / 100) as u64,
        "{followed}"
    );
    assert_eq!(
        followed["meta"]["objects_changed"],
        (n / 100) as u64,
        "{followed}"
    );
    assert_eq!(followed["last_sync_count"], 0, "{followed}");
}

/// Webhooks: a Files-mode sync of `files` files announced to a loopback
/// receiver (the delay from the sync's end to its `STORAGE_SYNC_COMPLETED`
/// there, next to the courier's poll interval), then `events` events
/// queued while the receiver fails and drained once it answers (events/s,
/// next to the same number of posts from a plain client: the floor).
fn webhooks(files: usize, events: usize) {
    let bench = Bench::start_with(&[
        "--allow-private-endpoints",
        "true",
        "--webhook-max-backoff-seconds",
        "1",
    ]);
    let receiver = bench.runtime.block_on(Receiver::start());
    let webhook = json!({"project": bench.project, "url": receiver.url, "secret": "bench-secret"});
    bench.call(reqwest::Method::POST, "/api/webhooks/", Some(webhook));
    let folder = bench.folder("announced");
    for i in 0..files {
        std::fs::write(folder.join(format!("img_{i:07}.jpg")), b"x").unwrap();
    }
    let storage = bench.local_import(&folder, true);
    let (took, state) = bench.sync_and_wait("localfiles", storage);
    assert_eq!(state["last_sync_count"], files as u64, "{state}");
    let accepted = bench.runtime.block_on(receiver.wait_accepted(
        Duration::from_secs(600),
        "STORAGE_SYNC_COMPLETED",
        |r| r.iter().any(|e| e.action() == "STORAGE_SYNC_COMPLETED"),
    ));
    let announced: usize = accepted
        .iter()
        .filter(|e| e.action() == "TASKS_CREATED")
        .map(|e| e.json["tasks"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(announced, files, "TASKS_CREATED covers every task");
    let ended = chrono::DateTime::parse_from_rfc3339(state["last_sync"].as_str().unwrap()).unwrap();
    let delay = accepted.last().unwrap().wall - ended.to_utc();
    println!("| webhooks | measure | value | floor | ratio |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| sync of {files} files ({:.2} s), {} events | sync end to STORAGE_SYNC_COMPLETED at the receiver (ms) | {} | 250 (poll interval) | {:.1} |",
        took.as_secs_f64(),
        accepted.len(),
        delay.num_milliseconds(),
        delay.num_milliseconds() as f64 / 250.0
    );

    // A backlog: one event per task import, queued while the receiver fails.
    receiver.fail_for(Duration::from_secs(3600));
    let before = receiver.accepted().len();
    let path = format!("/api/projects/{}/import", bench.project);
    for i in 0..events {
        bench.call(
            reqwest::Method::POST,
            &path,
            Some(json!([{"text": format!("t{i}")}])),
        );
    }
    receiver.recover();
    let drained = bench.runtime.block_on(receiver.wait_accepted(
        Duration::from_secs(600),
        "the backlog",
        |r| r.len() >= before + events,
    ));
    let backlog = &drained[before..];
    let seconds = (backlog.last().unwrap().at - backlog[0].at).as_secs_f64();
    let rate = events as f64 / seconds;
    // The floor: the same bodies posted one after another by a plain client.
    let body = backlog[0].body.clone();
    let client = reqwest::Client::new();
    let started = Instant::now();
    bench.runtime.block_on(async {
        for _ in 0..events {
            let answer = client
                .post(&receiver.url)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success());
        }
    });
    let floor = events as f64 / started.elapsed().as_secs_f64();
    println!(
        "| {events} queued events, one webhook, in order | events/s delivered | {rate:.0} | {floor:.0} (plain client) | {:.1} |",
        floor / rate
    );
}

/// Starts a new peak (`VmHWM`) from the current resident size.
fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// Annotations arrive the fast way, with their tasks in a JSONL file; the
/// export storage is created afterwards so that only its sync writes them.
fn export(n: usize) {
    let bench = Bench::start();
    let folder = bench.folder("annotated");
    let mut file = BufWriter::new(std::fs::File::create(folder.join("annotated.jsonl")).unwrap());
    for i in 0..n {
        let task = json!({"data": {"text": format!("task {i}")}, "annotations": [{"result": [
            {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["yes"]}}
        ]}]});
        writeln!(file, "{task}").unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    let import = bench.local_import(&folder, false);
    let (_, state) = bench.sync_and_wait("localfiles", import);
    assert_eq!(state["last_sync_count"], n as u64, "{state}");

    let target = bench.folder("export");
    let storage = bench.call(
        reqwest::Method::POST,
        "/api/storages/export/localfiles",
        Some(json!({"project": bench.project, "path": target.canonicalize().unwrap()})),
    )["id"]
        .as_i64()
        .unwrap();
    let (first, state) = bench.sync_and_wait("export/localfiles", storage);
    assert_eq!(state["last_sync_count"], n as u64, "{state}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        n,
        "one file per annotation"
    );
    bench.report("export, annotations to local files", n, n, first, None);
}

fn s3(n: usize) {
    let moto = storage_testing::moto();
    let store = moto.object_store();
    bucket_sync(
        BucketScenario {
            label: "files, S3 (moto)",
            floor: "bare ListObjectsV2",
            storage_type: "s3",
            body: json!({
                "bucket": moto.bucket, "s3_endpoint": moto.endpoint, "region_name": "us-east-1",
                "aws_access_key_id": moto.access_key_id, "aws_secret_access_key": moto.secret_access_key,
            }),
            server_args: vec!["--allow-private-endpoints".into(), "true".into()],
            prefix_field: "prefix",
            tasks_mode: false,
            write: store.clone(),
            list: store,
        },
        tokio::runtime::Runtime::new().unwrap(),
        n,
    );
}

fn azure(n: usize) {
    let azurite = storage_testing::azurite();
    let store = azurite.object_store();
    bucket_sync(
        BucketScenario {
            label: "files, Azure (Azurite)",
            floor: "bare List Blobs",
            storage_type: "azure",
            body: json!({
                "container": azurite.container, "account_name": azurite.account,
                "account_key": azurite.key,
            }),
            server_args: vec![
                "--allow-private-endpoints".into(),
                "true".into(),
                "--azure-blob-endpoint".into(),
                azurite.endpoint_template(),
            ],
            prefix_field: "prefix",
            tasks_mode: false,
            write: store.clone(),
            list: store,
        },
        tokio::runtime::Runtime::new().unwrap(),
        n,
    );
}

/// Tasks mode (Redis values are task JSON, never media), database 1 of the
/// test Redis (`scripts/redis.sh start`).
fn redis(n: usize) {
    let redis = storage_testing::redis();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = storage_redis::RedisConfig {
        host: redis.host.clone(),
        port: redis.port,
        db: 1,
        password: Some(redis.password.clone()),
        path: String::new(),
    };
    let backend = storage_redis::RedisBackend::new(
        storage_redis::RedisOptions::new()
            .with_endpoint_policy(storage_core::EndpointPolicy::allow_private()),
    );
    let store: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(runtime.block_on(backend.connect(&config)).unwrap());
    bucket_sync(
        BucketScenario {
            label: "tasks, Redis",
            floor: "bare SCAN",
            storage_type: "redis",
            body: json!({
                "host": redis.host, "port": redis.port.to_string(), "db": 1,
                "password": redis.password,
            }),
            server_args: vec!["--allow-private-endpoints".into(), "true".into()],
            prefix_field: "path",
            tasks_mode: true,
            write: store.clone(),
            list: store,
        },
        runtime,
        n,
    );
}

/// Files mode with `recursive_scan` from the Databricks Files API double
/// (in this process, pages of 1,000 entries as Databricks' maximum), in
/// directories of 1,000 files; the floor lists through the same Files API
/// client the storage uses.
fn databricks(n: usize) {
    use storage_core::{Backend, StorageKind};
    use storage_databricks::{DatabricksBackend, DatabricksConfig, DatabricksOptions};

    const PAT: &str = "dapi-bench-token";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let double = runtime.block_on(
        storage_testing::databricks_double::DatabricksDouble::builder()
            .volume("main", "default", "bench")
            .pat(PAT)
            .page_size(1000)
            .start(),
    );
    let body = json!({
        "host": double.host(), "catalog": "main", "schema": "default", "volume": "bench",
        "auth_type": "pat", "token": PAT, "recursive_scan": true,
    });
    let backend = DatabricksBackend::new(
        DatabricksOptions::new()
            .with_endpoint_policy(storage_core::EndpointPolicy::allow_private()),
    );
    let specs = backend.fields(StorageKind::Import);
    let mut settings = storage_core::Settings::defaults(&specs);
    settings.apply(&specs, body.as_object().unwrap()).unwrap();
    let api: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::new(
        runtime
            .block_on(backend.store(&DatabricksConfig::from_settings(&settings)))
            .unwrap(),
    );
    bucket_sync(
        BucketScenario {
            label: "files, Databricks (Files API double)",
            floor: "bare recursive directory listing",
            storage_type: "databricks",
            body,
            server_args: vec!["--allow-private-endpoints".into(), "true".into()],
            prefix_field: "prefix",
            tasks_mode: false,
            write: double.volume_store("main", "default", "bench"),
            list: api,
        },
        runtime,
        n,
    );
    drop(double);
}

/// How a bucket type's scenario reaches its source.
struct BucketScenario {
    label: &'static str,
    /// What the bare listing is called in the report.
    floor: &'static str,
    storage_type: &'static str,
    /// The storage's connection fields (without project, prefix, use_blob_urls).
    body: Value,
    server_args: Vec<String>,
    /// The storage field that holds the prefix (`prefix`; Redis: `path`).
    prefix_field: &'static str,
    /// Each object is one task's JSON (Tasks mode), else a one-byte file.
    tasks_mode: bool,
    /// Where the objects are written, and what the floor lists through.
    write: std::sync::Arc<dyn object_store::ObjectStore>,
    list: std::sync::Arc<dyn object_store::ObjectStore>,
}

/// Writes `n` objects under a fresh prefix (in directories of 1,000),
/// times a bare listing of them (the floor, in the same run; in Tasks mode
/// also a listing that reads every object), then a sync of the prefix
/// through a fresh server, and reports each with its ratio to the floor.
/// `runtime` keeps serving anything the scenario started on it (a double).
fn bucket_sync(scenario: BucketScenario, runtime: tokio::runtime::Runtime, n: usize) {
    use futures::{StreamExt, TryStreamExt};
    use object_store::{ObjectStoreExt, PutPayload};

    let prefix = storage_testing::unique_prefix("bench");
    let (write, list) = (&scenario.write, &scenario.list);
    let tasks_mode = scenario.tasks_mode;
    let (listed, read) = runtime.block_on(async {
        let prefix = &prefix;
        futures::stream::iter(0..n)
            .map(|i| async move {
                let path = format!("{prefix}/d{:03}/obj_{i:07}", i / 1000);
                if tasks_mode {
                    let task = PutPayload::from(task_line(i).into_bytes());
                    write.put(&format!("{path}.json").into(), task).await
                } else {
                    write
                        .put(&format!("{path}.jpg").into(), PutPayload::from_static(b"x"))
                        .await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let started = Instant::now();
        let metas: Vec<_> = list
            .list(Some(&prefix.as_str().into()))
            .try_collect()
            .await
            .unwrap();
        let listed = started.elapsed();
        assert_eq!(metas.len(), n);
        // Tasks mode reads every object: the floor of that is listing plus
        // reading, 16 reads at once as the import does.
        let read = if tasks_mode {
            futures::stream::iter(metas)
                .map(|meta| async move { list.get(&meta.location).await?.bytes().await })
                .buffer_unordered(16)
                .try_for_each(|_| async { Ok(()) })
                .await
                .unwrap();
            Some(started.elapsed())
        } else {
            None
        };
        (listed, read)
    });

    let args: Vec<&str> = scenario.server_args.iter().map(String::as_str).collect();
    let bench = Bench::start_with(&args);
    let mut body = scenario.body;
    body.as_object_mut().unwrap().extend([
        ("project".into(), json!(bench.project)),
        (scenario.prefix_field.into(), json!(prefix)),
        ("use_blob_urls".into(), json!(!tasks_mode)),
    ]);
    let route = format!("/api/storages/{}", scenario.storage_type);
    let storage = bench.call(reqwest::Method::POST, &route, Some(body))["id"]
        .as_i64()
        .unwrap();
    let (first, state) = bench.sync_and_wait(scenario.storage_type, storage);
    assert_eq!(state["last_sync_count"], n as u64, "{state}");
    bench.report(scenario.label, n, n, first, None);
    let floors = [
        (scenario.floor.to_string(), Some(listed)),
        ("listing and reading every object".into(), read),
    ];
    for (floor, took) in floors {
        let Some(took) = took else { continue };
        println!(
            "| {floor} of the same {n} objects | {n} | | {:.2} | {:.0} | ratio sync / this: {:.2} | |",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            first.as_secs_f64() / took.as_secs_f64()
        );
    }
}

/// One storage of `n` objects under 16 top-level prefixes on SeaweedFS,
/// synced split into shards by servers of 1, 2 and 4 workers (and by two
/// instances on PostgreSQL), and in one listing, each next to one
/// sequential listing of the same objects; directly, and for each latency
/// of `BENCH_SHARD_LATENCY_MS` (default `30`) through a proxy that holds
/// every request that long, as a cloud endpoint answers.
fn shards(n: usize) {
    use futures::{StreamExt, TryStreamExt};
    use object_store::{ObjectStoreExt, PutPayload};
    const PARTS: usize = 16;

    let seaweed = storage_testing::seaweedfs();
    let store = seaweed.object_store();
    let prefix = storage_testing::unique_prefix("shards");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (store, prefix) = (&store, &prefix);
        let started = Instant::now();
        futures::stream::iter(0..n)
            .map(|i| async move {
                let path = format!("{prefix}/p{:02}/obj_{i:07}.jpg", i % PARTS);
                store.put(&path.into(), PutPayload::from_static(b"x")).await
            })
            .buffer_unordered(64)
            .try_for_each(|_| async { Ok(()) })
            .await
            .unwrap();
        eprintln!(
            "wrote {n} objects in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    });
    let latencies = std::iter::once(0).chain(env_list("BENCH_SHARD_LATENCY_MS", "30"));
    for latency in latencies {
        let mut endpoint = seaweed.clone();
        if latency > 0 {
            let upstream = seaweed.endpoint.trim_start_matches("http://").to_string();
            let proxy = runtime.block_on(delaying_proxy(
                upstream,
                Duration::from_millis(latency as u64),
            ));
            endpoint.endpoint = proxy;
        }
        let listed = runtime.block_on(async {
            let started = Instant::now();
            let count = endpoint
                .object_store()
                .list(Some(&prefix.as_str().into()))
                .try_fold(0usize, |count, _| async move { Ok(count + 1) })
                .await
                .unwrap();
            assert_eq!(count, n);
            started.elapsed()
        });
        let place = if latency > 0 {
            format!("SeaweedFS + {latency} ms a request")
        } else {
            "SeaweedFS".to_string()
        };
        println!(
            "| floor: one sequential listing of the {n} objects, {place} | {n} | | {:.2} | {:.0} | | |",
            listed.as_secs_f64(),
            n as f64 / listed.as_secs_f64()
        );
        let run = |label: String, bench: &Bench, sharded: bool| {
            let body = json!({
                "project": bench.project, "bucket": endpoint.bucket, "prefix": prefix,
                "s3_endpoint": endpoint.endpoint, "region_name": "us-east-1",
                "aws_access_key_id": endpoint.access_key_id,
                "aws_secret_access_key": endpoint.secret_access_key,
                "use_blob_urls": true, "recursive_scan": true, "shard_listing": sharded,
            });
            let storage = bench.call(reqwest::Method::POST, "/api/storages/s3", Some(body))["id"]
                .as_i64()
                .unwrap();
            let (took, state) = bench.sync_and_wait("s3", storage);
            assert_eq!(state["last_sync_count"], n as u64, "{state}");
            if sharded {
                assert_eq!(state["meta"]["shards"], PARTS as u64 + 1, "{state}");
            }
            bench.report(&label, n, n, took, None);
            println!(
                "| | | | | | ratio sync / floor: **{:.2}** | |",
                took.as_secs_f64() / listed.as_secs_f64()
            );
        };
        for (workers, sharded) in [(1, false), (1, true), (2, true), (4, true)] {
            let workers_arg = workers.to_string();
            let bench = Bench::start_with(&[
                "--allow-private-endpoints",
                "true",
                "--sync-workers",
                &workers_arg,
            ]);
            let how = if sharded {
                "in 17 shards"
            } else {
                "one listing"
            };
            run(
                format!("files, {place}, {how}, {workers} worker(s)"),
                &bench,
                sharded,
            );
        }
        let on_postgres =
            std::env::var("BENCH_DATABASE_URL").is_ok_and(|url| url.starts_with("postgres"));
        if on_postgres {
            let args = ["--allow-private-endpoints", "true", "--sync-workers", "2"];
            let bench = Bench::start_with(&args);
            let _second = bench.second_instance(&args);
            run(
                format!("files, {place}, in 17 shards, 2 instances x 2 workers"),
                &bench,
                true,
            );
        }
    }
}

/// A TCP proxy to `upstream` (`host:port`) on a loopback port that holds
/// each chunk a client sends for `latency` before passing it on: about one
/// round trip per request, as a remote endpoint costs. It forwards bytes
/// untouched, so signatures stay valid. Returns its `http://` base URL; it
/// runs on the current runtime.
async fn delaying_proxy(upstream: String, latency: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(read) = client_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        tokio::time::sleep(latency).await;
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                };
                let answers = async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    let _ = client_write.shutdown().await;
                };
                tokio::join!(requests, answers);
            });
        }
    });
    format!("http://{address}")
}

fn task_line(i: usize) -> String {
    format!(
        "{{\"text\": \"{}\", \"meta_info\": {{\"source\": \"bench\", \"index\": {i}}}}}\n",
        task_text(i)
    )
}

/// Event-driven sync against the re-syncs it replaces (see the module's
/// documentation).
fn events(objects: usize, burst: usize) {
    println!("| source | objects | latency p50 (ms) | p99 (ms) | burst | burst written (s) | burst applied (s) | events/s | LIST calls by events | re-sync (s) | LIST calls by a re-sync |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    local_events(objects, burst);
    s3_events(objects, burst / 10);
}

fn local_events(objects: usize, burst: usize) {
    let bench = Bench::start();
    let folder = bench.folder("watched");
    let storage = bench.call(
        reqwest::Method::POST,
        "/api/storages/localfiles",
        Some(
            json!({"project": bench.project, "path": folder.canonicalize().unwrap(),
                    "use_blob_urls": true, "watch": true}),
        ),
    )["id"]
        .as_i64()
        .unwrap();
    // The watch's first, reconciling sync.
    bench.wait_events_started("localfiles", storage);
    let mut written = Vec::with_capacity(objects);
    for i in 0..objects {
        std::fs::write(folder.join(format!("lat_{i:06}.jpg")), b"x").unwrap();
        written.push(chrono::Utc::now());
        std::thread::sleep(Duration::from_millis(5));
    }
    bench.wait_tasks(objects);
    let latencies = bench.latencies(&written);
    let started = Instant::now();
    for i in 0..burst {
        std::fs::write(folder.join(format!("burst_{i:06}.jpg")), b"x").unwrap();
    }
    let written = started.elapsed();
    bench.wait_tasks(objects + burst);
    let applied = started.elapsed();
    let (resync, state) = bench.sync_and_wait("localfiles", storage);
    assert_eq!(state["last_sync_count"], 0, "{state}");
    report_events(
        "local files (inotify)",
        &latencies,
        (burst, written, applied),
        "—".into(),
        resync,
        "—".into(),
    );
}

fn s3_events(objects: usize, burst: usize) {
    let bench = Bench::start_with(&["--allow-private-endpoints", "true"]);
    let (bucket, proxy) = bench.runtime.block_on(async {
        let bucket = support::sqs::NotifiedBucket::create().await;
        let proxy = support::sqs::ListingCounter::start(bucket.moto.endpoint.clone()).await;
        (bucket, proxy)
    });
    bench
        .runtime
        .block_on(bucket.put(std::iter::once("in/seed.jpg".to_string())));
    let storage = bench.call(
        reqwest::Method::POST,
        "/api/storages/s3",
        Some(bucket.storage(bench.project, &proxy.endpoint, json!({}))),
    )["id"]
        .as_i64()
        .unwrap();
    bench.wait_tasks(1);
    let listed = proxy.count();
    let mut written = Vec::with_capacity(objects);
    for i in 0..objects {
        bench
            .runtime
            .block_on(bucket.put(std::iter::once(format!("in/lat_{i:06}.jpg"))));
        written.push(chrono::Utc::now());
    }
    bench.wait_tasks(1 + objects);
    let latencies = bench.latencies(&written);
    let started = Instant::now();
    bench
        .runtime
        .block_on(bucket.put((0..burst).map(|i| format!("in/burst_{i:06}.jpg"))));
    let written = started.elapsed();
    bench.wait_tasks(1 + objects + burst);
    let applied = started.elapsed();
    let by_events = proxy.count() - listed;
    let before_sync = proxy.count();
    let (resync, state) = bench.sync_and_wait("s3", storage);
    assert_eq!(state["last_sync_count"], 0, "{state}");
    let by_sync = proxy.count() - before_sync;
    report_events(
        "S3 notifications via SQS (moto)",
        &latencies,
        (burst, written, applied),
        by_events.to_string(),
        resync,
        by_sync.to_string(),
    );
}

/// `burst`: how many objects were created at once, how long creating
/// them took, and how long until all their tasks were there.
fn report_events(
    source: &str,
    latencies: &[f64],
    (burst, written, applied): (usize, Duration, Duration),
    lists_by_events: String,
    resync: Duration,
    lists_by_sync: String,
) {
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {source} | {} | {:.0} | {:.0} | {burst} | {:.2} | {:.2} | {:.0} | {lists_by_events} | {:.2} | {lists_by_sync} |",
        latencies.len(),
        at(0.5),
        at(0.99),
        written.as_secs_f64(),
        applied.as_secs_f64(),
        burst as f64 / applied.as_secs_f64(),
        resync.as_secs_f64(),
    );
}

impl Bench {
    /// Waits until the project holds exactly `count` tasks.
    fn wait_tasks(&self, count: usize) {
        let started = Instant::now();
        loop {
            let page = self.call(
                reqwest::Method::GET,
                &format!("/api/tasks?project={}&page_size=1", self.project),
                None,
            );
            let total = page["total"].as_u64().unwrap() as usize;
            assert!(
                total <= count,
                "{total} tasks, more than the {count} objects"
            );
            if total == count {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3600),
                "{total} of {count} tasks"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a watched storage's first sync has finished.
    fn wait_events_started(&self, storages: &str, storage: i64) {
        let path = format!("/api/storages/{storages}/{storage}");
        loop {
            let state = self.call(reqwest::Method::GET, &path, None);
            if state["meta"]["events"].is_object() && state["status"] == "completed" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Milliseconds from `written[i]` to the `created_at` of the task of
    /// the object named `lat_{i:06}`, sorted.
    fn latencies(&self, written: &[chrono::DateTime<chrono::Utc>]) -> Vec<f64> {
        let page = self.call(
            reqwest::Method::GET,
            &format!(
                "/api/tasks?project={}&page_size=100000&resolve_uri=false",
                self.project
            ),
            None,
        );
        let mut latencies: Vec<f64> = page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|task| {
                let data = task["data"].to_string();
                let at = data.find("lat_")?;
                let i: usize = data[at + 4..at + 10].parse().ok()?;
                let created =
                    chrono::DateTime::parse_from_rfc3339(task["created_at"].as_str()?).ok()?;
                Some((created.to_utc() - written[i]).num_microseconds()? as f64 / 1000.0)
            })
            .collect();
        assert_eq!(latencies.len(), written.len(), "a task per object");
        latencies.sort_by(f64::total_cmp);
        latencies
    }
}

fn task_text(i: usize) -> String {
    format!(
        "Task {i}: the quick brown fox jumps over the lazy dog, again and again, to fill a line"
    )
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name} is a list of numbers"))
        })
        .collect()
}

/// A fresh server on a fresh data directory, with one project.
struct Bench {
    dir: tempfile::TempDir,
    /// The server's `--database-url`, when not its embedded default.
    database: Option<String>,
    server: Process,
    api: Api,
    runtime: tokio::runtime::Runtime,
    project: i64,
}

impl Bench {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("local-files")).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut command = process::command(dir.path());
        command.args(args).env("STORAGE_API_TOKEN", TOKEN);
        let database = std::env::var("BENCH_DATABASE_URL")
            .ok()
            .map(|url| scenario_database(&runtime, &url));
        if let Some(url) = &database {
            command.args(["--database-url", url]);
        }
        let server = Process::start(command, dir.path(), "server");
        let api = Api::new(server.base.clone(), TOKEN);
        let mut bench = Self {
            dir,
            database,
            server,
            api,
            runtime,
            project: 0,
        };
        bench.project = bench.call(
            reqwest::Method::POST,
            "/api/projects",
            Some(json!({"title": "bench", "label_config": "<View><Text name=\"text\" value=\"$text\"/></View>"})),
        )["id"]
            .as_i64()
            .unwrap();
        bench
    }

    /// Another server process on this one's database (with its own data
    /// directory and document root), running until dropped.
    fn second_instance(&self, args: &[&str]) -> Process {
        let database = self
            .database
            .as_deref()
            .expect("a second instance needs a shared database");
        let data = self.dir.path().join("second");
        std::fs::create_dir_all(data.join("local-files")).unwrap();
        let mut command = process::command(&data);
        command
            .args(args)
            .args(["--database-url", database])
            .env("STORAGE_API_TOKEN", TOKEN);
        Process::start(command, &data, "second")
    }

    /// A successful call's body.
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.runtime.block_on(self.api.ok(method, path, body))
    }

    /// `storages` is the path after `/api/storages/`, e.g. `s3` or
    /// `export/localfiles`: the time from the sync request to `completed`.
    fn sync_and_wait(&self, storages: &str, storage: i64) -> (Duration, Value) {
        let path = format!("/api/storages/{storages}/{storage}");
        let started = Instant::now();
        let state = self.runtime.block_on(async {
            self.api.sync(&path).await;
            self.api
                .wait_synced_within(&path, Duration::from_secs(24 * 3600), String::new)
                .await
        });
        assert_eq!(state["status"], "completed", "sync failed: {state}");
        (started.elapsed(), state)
    }

    /// A new folder under the server's document root.
    fn folder(&self, name: &str) -> PathBuf {
        let folder = self.dir.path().join("local-files").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        folder
    }

    fn local_import(&self, folder: &Path, use_blob_urls: bool) -> i64 {
        self.call(
            reqwest::Method::POST,
            "/api/storages/localfiles",
            Some(json!({"project": self.project, "path": folder.canonicalize().unwrap(), "use_blob_urls": use_blob_urls})),
        )["id"]
            .as_i64()
            .unwrap()
    }

    /// The time to list `folder` (which holds `n` files) as a sync lists
    /// it, in this process: the local-files backend's listing through
    /// `storage_core::import::importable` (the walk, the symlink checks,
    /// the sorted names, the link keys and the filter), nothing written.
    fn bare_local_listing(&self, folder: &Path, n: usize) -> Duration {
        use futures::TryStreamExt;
        use storage_core::{Backend, Settings, StorageKind};
        let backend = storage_localfiles::LocalFilesBackend::new(
            storage_localfiles::LocalFiles::new(self.dir.path().join("local-files"))
                .unwrap()
                .with_serving_enabled(true),
        );
        let specs = backend.fields(StorageKind::Import);
        let mut settings = Settings::defaults(&specs);
        let body = json!({"path": folder.canonicalize().unwrap(), "use_blob_urls": true});
        settings.apply(&specs, body.as_object().unwrap()).unwrap();
        backend
            .check_settings(StorageKind::Import, &mut settings)
            .unwrap();
        self.runtime.block_on(async {
            let source = backend.import_storage(&settings).await.unwrap();
            let started = Instant::now();
            let listed = storage_core::import::importable(source.as_ref())
                .try_fold(0usize, |count, _| async move { Ok(count + 1) })
                .await
                .unwrap();
            let took = started.elapsed();
            assert_eq!(listed, n);
            took
        })
    }

    /// Syncs the one task file of `folder` in Tasks mode and reports it;
    /// it must give `tasks` tasks.
    fn sync_task_file(&self, folder: &Path, scenario: &str, tasks: usize) -> Duration {
        let storage = self.local_import(folder, false);
        let (took, state) = self.sync_and_wait("localfiles", storage);
        assert_eq!(state["last_sync_count"], tasks as u64, "{state}");
        self.report(scenario, 1, tasks, took, None);
        took
    }

    fn report(
        &self,
        scenario: &str,
        objects: usize,
        tasks: usize,
        took: Duration,
        again: Option<Duration>,
    ) {
        println!(
            "| {scenario} | {objects} | {tasks} | {:.2} | {:.0} | {} | {:.0} |",
            took.as_secs_f64(),
            tasks as f64 / took.as_secs_f64(),
            again.map_or("".into(), |d| format!("{:.2}", d.as_secs_f64())),
            peak_rss_mib(self.server.child.id())
        );
    }
}

/// A PostgreSQL URL gets a fresh database per scenario on its server, so
/// every scenario starts empty as it does on SQLite; others are used as given.
fn scenario_database(runtime: &tokio::runtime::Runtime, url: &str) -> String {
    if url.starts_with("postgres") {
        runtime.block_on(storage_testing::postgres::fresh_database_on(url, "bench"))
    } else {
        url.to_owned()
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    rss_mib(pid, "VmHWM:")
}

/// A memory line of the process's status (`VmHWM:` peak, `VmRSS:` now), MiB.
fn rss_mib(pid: u32, line: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

//! `storages sync`: what cli_sync did, through the real binary.

use serde_json::{json, Value};

use crate::common::{
    file_task, local_root, read_lines, write_config, Bucket, Cli, EXIT_INVALID, INVALID_REGEX,
};

const EXIT_FILES_FAILED: i32 = 3;

#[test]
fn local_files_mode_writes_one_task_per_matching_file() {
    let (dir, root) = local_root();
    let out = dir.path().join("tasks.jsonl");
    let out_arg = out.display().to_string();
    // `--set=NAME=VALUE` works as well as two arguments.
    let base = Cli::local("sync", &root)
        .arg(format!("--set=path={root}/data"))
        .set(r"regex_filter=.*\.jpg")
        .arg("--files")
        .out(&out);

    let run = base.run().succeeded();
    assert_eq!(
        read_lines(&out),
        vec![
            file_task(
                &format!("{root}/data/a.jpg"),
                "/data/local-files/?d=data/a.jpg"
            ),
            file_task(
                &format!("{root}/data/b c.jpg"),
                "/data/local-files/?d=data/b%20c.jpg"
            ),
        ]
    );
    run.reported(&format!(
        "synced localfiles storage: 2 objects, 2 tasks written to {out_arg} in "
    ));
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one summary line without a terminal: {run:?}"
    );
    assert_eq!(run.stdout, "");

    // Recursive, and the URL under the label config's variable; the file
    // is replaced, not appended to.
    base.set("recursive_scan=true")
        .args(&["--data-key", "image"])
        .run()
        .succeeded();
    let keys: Vec<(&str, &str)> = vec![
        ("a.jpg", "a.jpg"),
        ("b c.jpg", "b%20c.jpg"),
        ("sub/d.jpg", "sub/d.jpg"),
    ];
    let expected: Vec<Value> = keys
        .iter()
        .map(|(name, quoted)| {
            json!({
                "data": {"image": format!("/data/local-files/?d=data/{quoted}")},
                "meta": {"storage_key": format!("{root}/data/{name}")},
            })
        })
        .collect();
    assert_eq!(read_lines(&out), expected);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // An ordinary file's mode, not a temporary file's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), mode(&plain));
    }
}

#[test]
fn standard_output_gets_the_tasks_and_standard_error_the_summary() {
    let (_dir, root) = local_root();
    let run = Cli::local("sync", &root)
        .set(format!("path={root}/data"))
        .set(r"regex_filter=a\.jpg")
        .arg("--files")
        .out("-")
        .run()
        .succeeded();
    let line: Value = serde_json::from_str(run.stdout.trim_end()).unwrap();
    assert_eq!(
        line,
        file_task(
            &format!("{root}/data/a.jpg"),
            "/data/local-files/?d=data/a.jpg"
        )
    );
    run.reported("synced localfiles storage: 1 objects, 1 tasks written to standard output in ");
}

#[test]
fn local_tasks_mode_reads_every_format_and_reports_bad_files() {
    let (dir, root) = local_root();
    let tasks = folder(dir.path(), "tasks");
    std::fs::write(tasks.join("one.json"), r#"{"text": "a"}"#).unwrap();
    std::fs::write(
        tasks.join("many.json"),
        r#"[{"data": {"text": "b"}, "annotations": [{"result": []}], "predictions": [{"result": [], "score": 0.5}]}, {"text": "c"}]"#,
    )
    .unwrap();
    std::fs::write(
        tasks.join("lines.jsonl"),
        "{\"text\": \"d\"}\n\n{\"data\": {\"text\": \"e\"}, \"allow_skip\": false}\n",
    )
    .unwrap();
    std::fs::write(tasks.join("bad.json"), "{\"text\": ").unwrap();
    let out = dir.path().join("out.jsonl");
    let out_arg = out.display().to_string();
    // A storage as `GET /api/storages/localfiles/{id}` shows it: the fields
    // that are not settings are accepted and ignored.
    let storage = json!({
        "id": 4, "type": "localfiles", "project": 1, "title": "ignored", "status": "completed",
        "path": format!("{root}/tasks"), "use_blob_urls": false, "regex_filter": null,
    });
    let config = write_config(dir.path(), "storage.json", &storage);

    let run = Cli::local("sync", &root)
        .arg("--config")
        .arg(config.display().to_string())
        .out(&out)
        .run();

    assert_eq!(run.code, EXIT_FILES_FAILED, "{run:?}");
    let key = |name: &str| format!("{root}/tasks/{name}");
    assert_eq!(
        read_lines(&out),
        vec![
            json!({"data": {"text": "d"}, "meta": {"storage_key": key("lines.jsonl"), "row_index": 0}}),
            json!({"data": {"text": "e"}, "allow_skip": false, "meta": {"storage_key": key("lines.jsonl"), "row_index": 2}}),
            json!({
                "data": {"text": "b"},
                "annotations": [{"result": []}],
                "predictions": [{"result": [], "score": 0.5}],
                "meta": {"storage_key": key("many.json"), "row_index": 0},
            }),
            json!({"data": {"text": "c"}, "meta": {"storage_key": key("many.json"), "row_index": 1}}),
            json!({"data": {"text": "a"}, "meta": {"storage_key": key("one.json")}}),
        ]
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[0].starts_with(&format!(
            "synced localfiles storage: 4 objects, 5 tasks written to {out_arg}, 1 task files failed in "
        )),
        "{run:?}"
    );
    assert!(
        lines[1].starts_with(&format!("failed: {}", key("bad.json"))),
        "{run:?}"
    );
}

#[test]
fn a_large_task_file_is_streamed_once() {
    let (dir, root) = local_root();
    let tasks = folder(dir.path(), "big");
    // Above the 4 MiB threshold, so the engine streams it in batches
    // between begin_object and finish_object.
    let rows = 50_000;
    let mut text = String::new();
    for i in 0..rows {
        text.push_str(&format!("{{\"text\": \"{i:0>80}\"}}\n"));
    }
    assert!(
        text.len() as u64 > storage_core::import::ImportConfig::default().stream_threshold_bytes
    );
    std::fs::write(tasks.join("big.jsonl"), text).unwrap();
    let out = dir.path().join("big.jsonl.out");

    Cli::local("sync", &root)
        .set(format!("path={root}/big"))
        .arg("--tasks")
        .out(&out)
        .run()
        .succeeded();

    let lines = read_lines(&out);
    assert_eq!(lines.len(), rows);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["meta"]["row_index"], json!(i));
        assert_eq!(line["data"]["text"], json!(format!("{i:0>80}")));
    }
}

#[test]
fn invalid_settings_name_the_field_and_exit_2() {
    let (dir, root) = local_root();
    let out = dir.path().join("never.jsonl");
    let local = Cli::local("sync", &root).out(&out);
    let data = format!("path={root}/data");

    local.clone().set("path=data").arg("--files").run().failed_with(
        EXIT_INVALID,
        &format!(
            "error: invalid storage settings\n  non_field_errors: Absolute local path \"data\" must be \
             absolute (start with \"/\"). For example: \"{root}/dataset1\".\n"
        ),
    );

    local
        .clone()
        .set("use_blob_urls=maybe")
        .set("regx_filter=x")
        .set(&data)
        .run()
        .failed_with(
            EXIT_INVALID,
            "error: invalid storage settings\n  regx_filter: Unknown field; localfiles import storages take: \
             path, regex_filter, use_blob_urls, recursive_scan.\n  use_blob_urls: Must be a valid boolean.\n",
        );

    local
        .clone()
        .set("regex_filter=(")
        .set(&data)
        .run()
        .failed_starting(EXIT_INVALID, INVALID_REGEX);

    // Tasks mode over images: Label Studio's "use Files mode" message.
    local.arg("--tasks").set(&data).run().failed_starting(
        EXIT_INVALID,
        &format!(
            "error: invalid storage settings\n  non_field_errors: File \"{root}/data/a.jpg\" is not a JSON/JSONL/Parquet file."
        ),
    );

    Cli::new(&["sync", "--type", "ftp", "--set", "path=/x"])
        .out(&out)
        .run()
        .failed_with(
            EXIT_INVALID,
            "error: --type: unknown storage type \"ftp\" (one of: s3, gcs, azure, redis, gcs_sa, azure_spi, gcswif, s3s, databricks, localfiles)\n",
        );

    assert!(!out.exists(), "no output after an invalid run");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing but data/ was created"
    );
}

#[tokio::test]
async fn s3_files_and_tasks_modes_on_moto() {
    let bucket = Bucket::seeded(
        "cli_sync",
        &[
            ("img/a.jpg", "a"),
            ("img/b c.jpg", "b"),
            ("img/notes.txt", "n"),
            ("img/sub/d.jpg", "d"),
            (
                "tasks/t.json",
                r#"[{"text": "x"}, {"data": {"text": "y"}}]"#,
            ),
            ("tasks/t.jsonl", "{\"text\": \"z\"}\n{\"text\": \"w\"}\n"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s3.jsonl");
    let out_arg = out.display().to_string();
    let mut fields = bucket.fields("img");
    fields["regex_filter"] = json!(r".*\.jpg");
    let config = write_config(dir.path(), "s3.json", &fields);
    let files = Cli::s3("sync", &config).arg("--files").out(&out);
    let key = |name: &str| format!("{}/{name}", bucket.prefix);
    let url = |name: &str| format!("s3://{}/{}/{name}", bucket.moto.bucket, bucket.prefix);

    let run = files.run().succeeded();
    assert_eq!(
        read_lines(&out),
        vec![
            file_task(&key("img/a.jpg"), &url("img/a.jpg")),
            file_task(&key("img/b c.jpg"), &url("img/b c.jpg")),
        ]
    );
    run.reported(&format!(
        "synced s3 storage: 2 objects, 2 tasks written to {out_arg} in "
    ));

    files.set("recursive_scan=1").run().succeeded();
    let keys: Vec<Value> = read_lines(&out)
        .iter()
        .map(|l| l["meta"]["storage_key"].clone())
        .collect();
    assert_eq!(
        keys,
        vec![
            json!(key("img/a.jpg")),
            json!(key("img/b c.jpg")),
            json!(key("img/sub/d.jpg"))
        ]
    );

    write_config(dir.path(), "s3.json", &bucket.fields("tasks"));
    Cli::s3("sync", &config)
        .arg("--tasks")
        .out(&out)
        .run()
        .succeeded();
    assert_eq!(
        read_lines(&out),
        vec![
            json!({"data": {"text": "x"}, "meta": {"storage_key": key("tasks/t.json"), "row_index": 0}}),
            json!({"data": {"text": "y"}, "meta": {"storage_key": key("tasks/t.json"), "row_index": 1}}),
            json!({"data": {"text": "z"}, "meta": {"storage_key": key("tasks/t.jsonl"), "row_index": 0}}),
            json!({"data": {"text": "w"}, "meta": {"storage_key": key("tasks/t.jsonl"), "row_index": 1}}),
        ]
    );

    // The server's endpoint policy applies: a loopback endpoint needs the
    // switch (said explicitly, whatever the environment says).
    let run = Cli::new(&["sync", "--type", "s3", "--config"])
        .arg(config.display().to_string())
        .arg("--allow-private-endpoints=false")
        .out(&out)
        .run();
    run.failed_starting(
        EXIT_INVALID,
        "error: invalid storage settings\n  s3_endpoint: ",
    );
    assert_eq!(run.stderr.lines().count(), 2, "{run:?}");
}

/// A new folder `name` in `dir`; its path.
fn folder(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}

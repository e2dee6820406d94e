//! `storages sync`: what cli_sync did, through the real binary.

use serde_json::{json, Value};

use crate::common::{file_task, local_root, read_lines, storages, storages_owned, Bucket};

const EXIT_INVALID: i32 = 2;
const EXIT_FILES_FAILED: i32 = 3;

#[test]
fn local_files_mode_writes_one_task_per_matching_file() {
    let (dir, root) = local_root();
    let out = dir.path().join("tasks.jsonl");
    let out_arg = out.display().to_string();
    let path = format!("--set=path={root}/data");
    let base = [
        "sync",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        &path,
        "--set",
        r"regex_filter=.*\.jpg",
        "--files",
        "--out",
        &out_arg,
    ];

    let run = storages(&base);
    assert_eq!(run.code, 0, "{run:?}");
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
    let summary = format!("synced localfiles storage: 2 objects, 2 tasks written to {out_arg} in ");
    assert!(run.stderr.starts_with(&summary), "{run:?}");
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one summary line without a terminal: {run:?}"
    );
    assert_eq!(run.stdout, "");

    // Recursive, and the URL under the label config's variable; the file
    // is replaced, not appended to.
    let mut args = base.to_vec();
    args.extend(["--set", "recursive_scan=true", "--data-key", "image"]);
    let run = storages(&args);
    assert_eq!(run.code, 0, "{run:?}");
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
    let path = format!("path={root}/data");
    let run = storages(&[
        "sync",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        "--set",
        &path,
        "--set",
        r"regex_filter=a\.jpg",
        "--files",
        "--out",
        "-",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let line: Value = serde_json::from_str(run.stdout.trim_end()).unwrap();
    assert_eq!(
        line,
        file_task(
            &format!("{root}/data/a.jpg"),
            "/data/local-files/?d=data/a.jpg"
        )
    );
    assert!(
        run.stderr.starts_with(
            "synced localfiles storage: 1 objects, 1 tasks written to standard output in "
        ),
        "{run:?}"
    );
}

#[test]
fn local_tasks_mode_reads_every_format_and_reports_bad_files() {
    let (dir, root) = local_root();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
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
    let config = dir.path().join("storage.json");
    let storage = json!({
        "id": 4, "type": "localfiles", "project": 1, "title": "ignored", "status": "completed",
        "path": format!("{root}/tasks"), "use_blob_urls": false, "regex_filter": null,
    });
    std::fs::write(&config, storage.to_string()).unwrap();

    let run = storages(&[
        "sync",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        "--config",
        &config.display().to_string(),
        "--out",
        &out_arg,
    ]);

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
    let tasks = dir.path().join("big");
    std::fs::create_dir_all(&tasks).unwrap();
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

    let run = storages(&[
        "sync",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        &format!("--set=path={root}/big"),
        "--tasks",
        "--out",
        &out.display().to_string(),
    ]);

    assert_eq!(run.code, 0, "{run:?}");
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
    let out_arg = out.display().to_string();
    let local = [
        "sync",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        "--out",
        &out_arg,
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        local.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    let run = storages_owned(&with(&["--set", "path=data", "--files"]));
    assert_eq!(run.code, EXIT_INVALID);
    assert_eq!(
        run.stderr,
        format!(
            "error: invalid storage settings\n  non_field_errors: Absolute local path \"data\" must be \
             absolute (start with \"/\"). For example: \"{root}/dataset1\".\n"
        )
    );

    let path = format!("path={root}/data");
    let run = storages_owned(&with(&[
        "--set",
        "use_blob_urls=maybe",
        "--set",
        "regx_filter=x",
        "--set",
        &path,
    ]));
    assert_eq!(run.code, EXIT_INVALID);
    assert_eq!(
        run.stderr,
        "error: invalid storage settings\n  regx_filter: Unknown field; localfiles import storages take: \
         path, regex_filter, use_blob_urls, recursive_scan.\n  use_blob_urls: Must be a valid boolean.\n"
    );

    let run = storages_owned(&with(&["--set", "regex_filter=(", "--set", &path]));
    assert_eq!(run.code, EXIT_INVALID);
    assert!(
        run.stderr.starts_with(
            "error: invalid storage settings\n  regex_filter: Invalid regular expression: "
        ),
        "{run:?}"
    );

    // Tasks mode over images: Label Studio's "use Files mode" message.
    let run = storages_owned(&with(&["--tasks", "--set", &path]));
    assert_eq!(run.code, EXIT_INVALID);
    assert!(
        run.stderr.starts_with(&format!(
            "error: invalid storage settings\n  non_field_errors: File \"{root}/data/a.jpg\" is not a JSON/JSONL/Parquet file."
        )),
        "{run:?}"
    );

    let run = storages(&[
        "sync", "--type", "ftp", "--set", "path=/x", "--out", &out_arg,
    ]);
    assert_eq!(run.code, EXIT_INVALID);
    assert_eq!(
        run.stderr,
        "error: --type: unknown storage type \"ftp\" (one of: s3, gcs, gcs_sa, localfiles)\n"
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
    let bucket = Bucket::new("cli_sync");
    bucket
        .put(&[
            ("img/a.jpg", "a"),
            ("img/b c.jpg", "b"),
            ("img/notes.txt", "n"),
            ("img/sub/d.jpg", "d"),
            (
                "tasks/t.json",
                r#"[{"text": "x"}, {"data": {"text": "y"}}]"#,
            ),
            ("tasks/t.jsonl", "{\"text\": \"z\"}\n{\"text\": \"w\"}\n"),
        ])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s3.jsonl");
    let out_arg = out.display().to_string();
    let config = dir.path().join("s3.json");
    let config_arg = config.display().to_string();
    let mut fields = bucket.fields("img");
    fields["regex_filter"] = json!(r".*\.jpg");
    std::fs::write(&config, fields.to_string()).unwrap();
    let files = [
        "sync",
        "--type",
        "s3",
        "--config",
        &config_arg,
        "--allow-private-endpoints",
        "--files",
        "--out",
        &out_arg,
    ];
    let key = |name: &str| format!("{}/{name}", bucket.prefix);
    let url = |name: &str| format!("s3://{}/{}/{name}", bucket.moto.bucket, bucket.prefix);

    let run = storages(&files);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        read_lines(&out),
        vec![
            file_task(&key("img/a.jpg"), &url("img/a.jpg")),
            file_task(&key("img/b c.jpg"), &url("img/b c.jpg")),
        ]
    );
    assert!(
        run.stderr.starts_with(&format!(
            "synced s3 storage: 2 objects, 2 tasks written to {out_arg} in "
        )),
        "{run:?}"
    );

    let mut recursive = files.to_vec();
    recursive.extend(["--set", "recursive_scan=1"]);
    let run = storages(&recursive);
    assert_eq!(run.code, 0, "{run:?}");
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

    std::fs::write(&config, bucket.fields("tasks").to_string()).unwrap();
    let run = storages(&[
        "sync",
        "--type",
        "s3",
        "--config",
        &config_arg,
        "--allow-private-endpoints",
        "--tasks",
        "--out",
        &out_arg,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
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
    let run = storages(&[
        "sync",
        "--type",
        "s3",
        "--config",
        &config_arg,
        "--allow-private-endpoints=false",
        "--out",
        &out_arg,
    ]);
    assert_eq!(run.code, EXIT_INVALID, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: invalid storage settings\n  s3_endpoint: "),
        "{run:?}"
    );
    assert_eq!(run.stderr.lines().count(), 2, "{run:?}");
}

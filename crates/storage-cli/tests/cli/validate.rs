//! `storages validate`: the API's connection check from the command line.

use serde_json::json;

use crate::common::{local_root, tree, write_config, Bucket, Cli, EXIT_INVALID};

#[test]
fn a_readable_local_folder_is_valid_and_nothing_is_created() {
    let (dir, root) = local_root();
    let before = tree(dir.path());
    let base = Cli::local("validate", &root).set(format!("path={root}/data"));
    for (flags, kind) in [(&[][..], "import"), (&["--export"][..], "export")] {
        let run = base.clone().args(flags).run().succeeded();
        assert_eq!(
            run.stderr,
            format!("ok: the localfiles {kind} storage is valid and can be reached\n")
        );
        assert_eq!(run.stdout, "");
    }
    assert_eq!(tree(dir.path()), before, "validate created nothing");
}

#[test]
fn a_missing_local_folder_names_the_path_and_exits_2() {
    let (dir, root) = local_root();
    Cli::local("validate", &root)
        .set(format!("path={root}/missing"))
        .run()
        .failed_with(
            EXIT_INVALID,
            &format!(
                "error: invalid storage settings\n  non_field_errors: Absolute local path \
                 \"{root}/missing\" does not exist\n"
            ),
        );
    assert!(!dir.path().join("missing").exists());

    // Outside the document root: the message says which root it must be below.
    Cli::local("validate", &format!("{root}/data"))
        .set(format!("path={root}"))
        .run()
        .failed_naming(
            EXIT_INVALID,
            &format!("must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}/data\""),
        );
}

#[tokio::test]
async fn s3_on_moto_passes_and_a_missing_bucket_fails_in_words_without_the_secret() {
    let bucket = Bucket::seeded("cli_validate", &[("img/a.jpg", "a")]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut fields = bucket.fields("img");
    // A secret of its own, so the test can look for it in the output.
    fields["aws_secret_access_key"] = json!("cli-validate-secret-0123456789");
    let config = write_config(dir.path(), "s3.json", &fields);
    let cli = Cli::s3("validate", &config);

    let run = cli.run().succeeded();
    assert_eq!(
        run.stderr,
        "ok: the s3 import storage is valid and can be reached\n"
    );

    let missing = format!("{}-missing", bucket.prefix.to_ascii_lowercase());
    let mut gone = fields.clone();
    gone["bucket"] = json!(missing);
    write_config(dir.path(), "s3.json", &gone);
    let run = cli.run();
    run.failed_with(
        EXIT_INVALID,
        &format!(
            "error: invalid storage settings\n  non_field_errors: Cannot find bucket {missing} in S3\n"
        ),
    );
    assert!(
        !run.stderr.contains("cli-validate-secret"),
        "no secret in the report: {run:?}"
    );

    // An import storage must hold an object under its prefix.
    write_config(dir.path(), "s3.json", &bucket.fields("empty"));
    cli.run().failed_with(
        EXIT_INVALID,
        &format!(
            "error: invalid storage settings\n  non_field_errors: s3://{}/{}/empty not found.\n",
            bucket.moto.bucket, bucket.prefix
        ),
    );
}

#[test]
fn report_prints_each_check_as_text_or_json() {
    let (_dir, root) = local_root();
    std::fs::write(format!("{root}/data/a.json"), r#"{"text": "a"}"#).unwrap();
    let base = Cli::local("validate", &root)
        .set(format!("path={root}/data"))
        .set(r"regex_filter=.*\.json")
        .args(&["--tasks"]);
    let run = base.clone().args(&["--report"]).run().succeeded();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", run.stdout);
    for (line, name) in lines
        .iter()
        .zip(["configuration", "credentials", "list", "read"])
    {
        assert!(line.starts_with("passed ") && line.contains(name), "{line}");
    }
    assert!(lines[2].contains("1 object matches"), "{}", lines[2]);
    assert!(lines[4].starts_with("skipped presign"), "{}", lines[4]);
    assert_eq!(lines[5], "the storage is valid");

    let run = base.clone().args(&["--report", "json"]).run().succeeded();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["checks"][3]["name"], "read");

    // Nothing to read: the read is skipped; the folder lists.
    let empty = Cli::local("validate", &root)
        .set(format!("path={root}/data"))
        .set("regex_filter=nothing".to_string())
        .args(&["--tasks", "--report"]);
    let run = empty.run().succeeded();
    assert!(run.stdout.contains("skipped read"), "{}", run.stdout);
}

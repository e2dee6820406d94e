//! `storages validate`: the API's connection check from the command line.

use serde_json::json;

use crate::common::{local_root, storages, tree, Bucket};

#[test]
fn a_readable_local_folder_is_valid_and_nothing_is_created() {
    let (dir, root) = local_root();
    let path = format!("path={root}/data");
    let before = tree(dir.path());
    for kind in [&[][..], &["--export"][..]] {
        let mut args = vec![
            "validate",
            "--type",
            "localfiles",
            "--local-files-document-root",
            &root,
            "--set",
            &path,
        ];
        args.extend(kind);
        let run = storages(&args);
        assert_eq!(run.code, 0, "{run:?}");
        let kind = if kind.is_empty() { "import" } else { "export" };
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
    let path = format!("path={root}/missing");
    let run = storages(&[
        "validate",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        "--set",
        &path,
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "error: invalid storage settings\n  non_field_errors: Absolute local path \
             \"{root}/missing\" does not exist\n"
        )
    );
    assert!(!dir.path().join("missing").exists());

    // Outside the document root: the message says which root it must be below.
    let run = storages(&[
        "validate",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &format!("{root}/data"),
        "--set",
        &format!("path={root}"),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}/data\""
        )),
        "{run:?}"
    );
}

#[tokio::test]
async fn s3_on_moto_passes_and_a_missing_bucket_fails_in_words_without_the_secret() {
    let bucket = Bucket::new("cli_validate");
    bucket.put(&[("img/a.jpg", "a")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s3.json");
    let config_arg = config.display().to_string();
    let mut fields = bucket.fields("img");
    // A secret of its own, so the test can look for it in the output.
    fields["aws_secret_access_key"] = json!("cli-validate-secret-0123456789");
    std::fs::write(&config, fields.to_string()).unwrap();
    let args = [
        "validate",
        "--type",
        "s3",
        "--config",
        &config_arg,
        "--allow-private-endpoints",
    ];

    let run = storages(&args);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stderr,
        "ok: the s3 import storage is valid and can be reached\n"
    );

    let missing = format!("{}-missing", bucket.prefix.to_ascii_lowercase());
    let mut gone = fields.clone();
    gone["bucket"] = json!(missing);
    std::fs::write(&config, gone.to_string()).unwrap();
    let run = storages(&args);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "error: invalid storage settings\n  non_field_errors: Cannot find bucket {missing} in S3\n"
        )
    );
    assert!(
        !run.stderr.contains("cli-validate-secret"),
        "no secret in the report: {run:?}"
    );

    // An import storage must hold an object under its prefix.
    std::fs::write(&config, bucket.fields("empty").to_string()).unwrap();
    let run = storages(&args);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "error: invalid storage settings\n  non_field_errors: s3://{}/{}/empty not found.\n",
            bucket.moto.bucket, bucket.prefix
        )
    );
}

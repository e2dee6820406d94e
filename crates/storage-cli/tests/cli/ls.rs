//! `storages ls`: the objects a sync would import, a dry run.

use serde_json::json;

use crate::common::{local_root, storages, tree, Bucket};

/// The keys and sizes of `ls` output; every line has three tab-separated
/// columns and an RFC 3339 time.
fn listed(stdout: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            assert_eq!(columns.len(), 3, "{line}");
            assert!(
                chrono::DateTime::parse_from_rfc3339(columns[2]).is_ok(),
                "{line}"
            );
            (columns[0].to_string(), columns[1].parse().unwrap())
        })
        .collect()
}

#[test]
fn local_listing_applies_recursive_and_regex_and_creates_nothing() {
    let (dir, root) = local_root();
    let before = tree(dir.path());
    let path = format!("path={root}/data");
    let base = [
        "ls",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        "--set",
        &path,
    ];
    let key = |name: &str| format!("{root}/data/{name}");
    let size = |name: &str| name.len() as u64;

    let run = storages(&base);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    let mut objects = listed(&run.stdout);
    objects.sort();
    assert_eq!(
        objects,
        ["a.jpg", "b c.jpg", "notes.txt"]
            .map(|n| (key(n), size(n)))
            .to_vec()
    );

    let mut args = base.to_vec();
    args.extend([
        "--set",
        "recursive_scan=true",
        "--set",
        r"regex_filter=.*\.jpg",
    ]);
    let run = storages(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let mut objects = listed(&run.stdout);
    objects.sort();
    assert_eq!(
        objects,
        ["a.jpg", "b c.jpg", "sub/d.jpg"]
            .map(|n| (key(n), size(n)))
            .to_vec()
    );

    args.extend(["--limit", "2"]);
    let run = storages(&args);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(listed(&run.stdout).len(), 2, "{run:?}");

    assert_eq!(tree(dir.path()), before, "ls created nothing");

    let run = storages(&[
        "ls",
        "--type",
        "localfiles",
        "--local-files-document-root",
        &root,
        "--set",
        &path,
        "--set",
        "regex_filter=(",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.starts_with(
            "error: invalid storage settings\n  regex_filter: Invalid regular expression: "
        ),
        "{run:?}"
    );
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn s3_listing_on_moto_applies_prefix_recursive_and_regex() {
    let bucket = Bucket::new("cli_ls");
    bucket
        .put(&[
            ("img/a.jpg", "a"),
            ("img/b c.jpg", "bb"),
            ("img/notes.txt", "nnn"),
            ("img/sub/d.jpg", "dddd"),
            ("other/e.jpg", "e"),
        ])
        .await;
    let before = bucket.keys().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s3.json");
    let config_arg = config.display().to_string();
    let mut fields = bucket.fields("img");
    // S3 regexes see the whole key, prefix included.
    fields["regex_filter"] = json!(format!(r"{}/img/.*\.jpg", bucket.prefix));
    std::fs::write(&config, fields.to_string()).unwrap();
    let key = |name: &str| format!("{}/{name}", bucket.prefix);
    let base = [
        "ls",
        "--type",
        "s3",
        "--config",
        &config_arg,
        "--allow-private-endpoints",
    ];

    let run = storages(&base);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        listed(&run.stdout),
        vec![(key("img/a.jpg"), 1), (key("img/b c.jpg"), 2)]
    );

    let mut args = base.to_vec();
    args.extend(["--set", "recursive_scan=true"]);
    let run = storages(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let mut objects = listed(&run.stdout);
    objects.sort();
    assert_eq!(
        objects,
        vec![
            (key("img/a.jpg"), 1),
            (key("img/b c.jpg"), 2),
            (key("img/sub/d.jpg"), 4)
        ]
    );

    assert_eq!(
        bucket.keys().await,
        before,
        "ls wrote nothing to the bucket"
    );
}

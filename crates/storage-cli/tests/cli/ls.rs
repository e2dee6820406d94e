//! `storages ls`: the objects a sync would import, a dry run.

use serde_json::json;

use crate::common::{
    local_root, tree, write_config, Bucket, Cli, Run, EXIT_INVALID, INVALID_REGEX,
};

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

/// The listing of a run, sorted by key.
fn sorted(run: &Run) -> Vec<(String, u64)> {
    let mut objects = listed(&run.stdout);
    objects.sort();
    objects
}

#[test]
fn local_listing_applies_recursive_and_regex_and_creates_nothing() {
    let (dir, root) = local_root();
    let before = tree(dir.path());
    let base = Cli::local("ls", &root).set(format!("path={root}/data"));
    let key = |name: &str| format!("{root}/data/{name}");
    let size = |name: &str| name.len() as u64;

    let run = base.run().succeeded();
    assert_eq!(run.stderr, "");
    assert_eq!(
        sorted(&run),
        ["a.jpg", "b c.jpg", "notes.txt"]
            .map(|n| (key(n), size(n)))
            .to_vec()
    );

    let filtered = base
        .clone()
        .set("recursive_scan=true")
        .set(r"regex_filter=.*\.jpg");
    let run = filtered.run().succeeded();
    assert_eq!(
        sorted(&run),
        ["a.jpg", "b c.jpg", "sub/d.jpg"]
            .map(|n| (key(n), size(n)))
            .to_vec()
    );

    let run = filtered.args(&["--limit", "2"]).run().succeeded();
    assert_eq!(listed(&run.stdout).len(), 2, "{run:?}");

    assert_eq!(tree(dir.path()), before, "ls created nothing");

    let run = base.set("regex_filter=(").run();
    run.failed_starting(EXIT_INVALID, INVALID_REGEX);
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn s3_listing_on_moto_applies_prefix_recursive_and_regex() {
    let bucket = Bucket::seeded(
        "cli_ls",
        &[
            ("img/a.jpg", "a"),
            ("img/b c.jpg", "bb"),
            ("img/notes.txt", "nnn"),
            ("img/sub/d.jpg", "dddd"),
            ("other/e.jpg", "e"),
        ],
    )
    .await;
    let before = bucket.keys().await;
    let dir = tempfile::tempdir().unwrap();
    let mut fields = bucket.fields("img");
    // S3 regexes see the whole key, prefix included.
    fields["regex_filter"] = json!(format!(r"{}/img/.*\.jpg", bucket.prefix));
    let base = Cli::s3("ls", &write_config(dir.path(), "s3.json", &fields));
    let key = |name: &str| format!("{}/{name}", bucket.prefix);

    let run = base.run().succeeded();
    assert_eq!(
        listed(&run.stdout),
        vec![(key("img/a.jpg"), 1), (key("img/b c.jpg"), 2)]
    );

    let run = base.set("recursive_scan=true").run().succeeded();
    assert_eq!(
        sorted(&run),
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

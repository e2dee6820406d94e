//! `storages ls`: the objects a sync would import, without reading or
//! creating anything.

use std::io::Write;

use futures::TryStreamExt;
use storage_core::import::importable;
use storage_core::StorageKind;

use crate::storage::{failed, StorageArgs, EXIT_FAILED};

/// List the objects a sync would import: the listing after prefix,
/// recursive_scan and regex_filter (a dry run).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints one object per line on standard output: its key (the storage \
link's key: the object key, or the absolute path of a local file), its size in bytes and its \
last modification time (RFC 3339), separated by tabs, in listing order. Nothing is read or \
created. Objects a sync would skip as already imported are listed too: there is no database.\n\n\
Exit codes: 0 listed, 1 the listing failed, 2 invalid arguments or settings."
)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Stop after this many objects.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

/// Lists the objects to `out`; errors go to `report`. Returns the exit code.
pub(crate) async fn run(args: LsArgs, out: &mut dyn Write, report: &mut dyn Write) -> u8 {
    let configured = match args.storage.configure(StorageKind::Import, report) {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let source = match configured
        .backend
        .import_storage(&configured.fields.settings)
        .await
    {
        Ok(source) => source,
        Err(err) => return failed(report, &err),
    };
    let mut objects = importable(source.as_ref());
    let mut listed = 0;
    while args.limit.is_none_or(|limit| listed < limit) {
        match objects.try_next().await {
            Ok(Some((key, meta))) => {
                let modified = meta
                    .last_modified
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                if let Err(err) = writeln!(out, "{key}\t{}\t{modified}", meta.size) {
                    let _ = writeln!(report, "error: writing the listing: {err}");
                    return EXIT_FAILED;
                }
                listed += 1;
            }
            Ok(None) => break,
            Err(err) => return failed(report, &err),
        }
    }
    if let Err(err) = out.flush() {
        let _ = writeln!(report, "error: writing the listing: {err}");
        return EXIT_FAILED;
    }
    0
}

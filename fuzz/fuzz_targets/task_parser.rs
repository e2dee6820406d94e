//! The task-file parser on arbitrary bytes: it must never panic, and the
//! incremental parser fed the file in two pieces (split anywhere, even
//! inside a byte-order mark, a string or an escape) must give exactly what
//! the whole-file parser gives: the same tasks, or the same error.
//!
//! The first input byte chooses the split point (as a fraction of the
//! rest); the rest is the task file. Seeds: fuzz/corpus/task_parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_core::parse::{parse_tasks, TaskParser};

fuzz_target!(|input: &[u8]| {
    let Some((&split, file)) = input.split_first() else {
        return;
    };
    let at = file.len() * usize::from(split) / 255;
    let whole = parse_tasks("fuzz.json", file);

    let mut parser = TaskParser::new("fuzz.json", usize::MAX);
    let mut tasks = Vec::new();
    let pieces = parser
        .push(&file[..at], &mut tasks)
        .and_then(|()| parser.push(&file[at..], &mut tasks))
        .and_then(|()| parser.finish(&mut tasks))
        .map(|()| tasks);

    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "split at {at}"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "split at {at}"),
        _ => panic!("split at {at}: whole file gave {whole:?}, two pieces gave {pieces:?}"),
    }
});

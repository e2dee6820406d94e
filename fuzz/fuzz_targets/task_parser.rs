//! The task-file parser on arbitrary bytes: it must never panic, and the
//! incremental parser fed the file in two pieces (split anywhere, even
//! inside a byte-order mark, a string or an escape) must give exactly what
//! it gives fed the whole file: the same tasks, the same bad tasks reported
//! (each with its line), the same count, and the same ending error. The
//! strict whole-file parser agrees: its error is the first problem, or the
//! ending error when there is none.
//!
//! The first input byte chooses the split point (as a fraction of the
//! rest); the rest is the task file. Seeds: fuzz/corpus/task_parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_core::parse::{parse_tasks, ParsedTask, TaskParser};

/// Tasks, problems, count of bad tasks, ending error.
type Outcome = (Vec<ParsedTask>, Vec<String>, u64, Option<String>);

fn lenient(pieces: &[&[u8]]) -> Outcome {
    let mut parser = TaskParser::new("fuzz.json", usize::MAX);
    let mut tasks = Vec::new();
    let ended = pieces
        .iter()
        .try_for_each(|piece| parser.push(piece, &mut tasks))
        .and_then(|()| parser.finish(&mut tasks))
        .err()
        .map(|err| err.to_string());
    let problems = parser
        .take_problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    (tasks, problems, parser.rejected(), ended)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, file)) = input.split_first() else {
        return;
    };
    let at = file.len() * usize::from(split) / 255;
    let whole = lenient(&[file]);
    let pieces = lenient(&[&file[..at], &file[at..]]);
    assert_eq!(whole, pieces, "split at {at}");

    let strict = parse_tasks("fuzz.json", file).map_err(|err| err.to_string());
    let expected = match (whole.1.first(), &whole.3) {
        (Some(first), _) => Err(first.clone()),
        (None, Some(ended)) => Err(ended.clone()),
        (None, None) => Ok(whole.0.clone()),
    };
    assert_eq!(strict, expected);
});

//! File tests: a rule's before → after as one text file in
//! `passes/testdata/<pass>/`, as Cranelift's and MLIR's are. A file holds
//! comment lines (`;`), a `passes:` line, optionally `exact` (outputs are
//! then compared in tract on seeded inputs, to 1e-5 relative), the input
//! model in the text form (`ir::text`, read by `ir::parse`), a `=>` line,
//! and the expected output: the printed result, or `unchanged`.
//!
//! `cargo test --lib filetests` runs them all and shows a diff for each
//! mismatch; `UPDATE_FILETESTS=1` rewrites the expectations (review the
//! change in git before committing it).

use crate::ir::diff::text_diff;
use crate::ir::parse::model_from_text;
use crate::ir::text::model_to_text;
use crate::passes::testing::{max_rel_err, rewrite};
use std::path::{Path, PathBuf};

struct FileTest {
    head: String,
    passes: String,
    exact: bool,
    input: String,
    expected: String,
}

fn read(text: &str) -> Result<FileTest, String> {
    let (before, expected) = text
        .split_once("\n=>\n")
        .ok_or("no `=>` line between input and expected output")?;
    let mut head = String::new();
    let (mut passes, mut exact, mut input) = (None, false, String::new());
    for line in before.lines() {
        if input.is_empty() && (line.starts_with(';') || line.trim().is_empty()) {
            head.push_str(line);
            head.push('\n');
        } else if let Some(p) = line.strip_prefix("passes: ").filter(|_| input.is_empty()) {
            passes = Some(p.to_string());
            head.push_str(line);
            head.push('\n');
        } else if line == "exact" && input.is_empty() {
            exact = true;
            head.push_str("exact\n");
        } else {
            input.push_str(line);
            input.push('\n');
        }
    }
    Ok(FileTest {
        head,
        passes: passes.ok_or("no `passes:` line")?,
        exact,
        input,
        expected: expected.to_string(),
    })
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "test") {
            out.push(path);
        }
    }
}

/// Runs one file; `Err` is what to report. With `update`, a mismatch
/// rewrites the file's expectation instead.
fn run(path: &Path, update: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let t = read(&text)?;
    let before = model_from_text(&t.input).map_err(|e| format!("input: {e:#}"))?;
    let after = rewrite(&before, &t.passes);
    let printed = model_to_text(&after);
    let got = if printed == model_to_text(&before) {
        "unchanged\n".to_string()
    } else {
        printed
    };
    if t.exact {
        let err = max_rel_err(&before, &after);
        if err > 1e-5 {
            return Err(format!("{} changed outputs: max_rel_err {err:e}", t.passes));
        }
    }
    if got != t.expected {
        if update {
            let body = format!("{}{}=>\n{got}", t.head, t.input);
            std::fs::write(path, body).map_err(|e| e.to_string())?;
            return Ok(());
        }
        return Err(format!(
            "expected → got (UPDATE_FILETESTS=1 to accept):\n{}",
            text_diff(&t.expected, &got)
        ));
    }
    // The expectation is in the printer's form: it reads back as itself.
    if got != "unchanged\n" {
        let reread = model_from_text(&got).map_err(|e| format!("expected output: {e:#}"))?;
        if model_to_text(&reread) != got {
            return Err("the expected output does not read back as itself".into());
        }
    }
    Ok(())
}

#[test]
fn filetests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("passes/testdata");
    let mut paths = vec![];
    files(&root, &mut paths);
    assert!(paths.len() >= 7, "the file tests are missing");
    let update = std::env::var_os("UPDATE_FILETESTS").is_some();
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            run(p, update).err().map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} file tests failed:\n\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}

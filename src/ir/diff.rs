//! Readable graph diffs: a unified diff of the text forms, preceded by a
//! one-line summary. `onnx-opt diff` and the pass snapshots print this.

use super::text::model_to_text;
use super::Model;
use similar::{ChangeTag, TextDiff};
use std::fmt::Write;

pub fn model_diff(before: &Model, after: &Model) -> String {
    text_diff(&model_to_text(before), &model_to_text(after))
}

pub fn text_diff(before: &str, after: &str) -> String {
    let diff = TextDiff::from_lines(before, after);
    let (mut removed, mut added) = (0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Delete => removed += 1,
            ChangeTag::Insert => added += 1,
            ChangeTag::Equal => {}
        }
    }
    let mut out = String::new();
    if removed == 0 && added == 0 {
        out.push_str("no change\n");
        return out;
    }
    let _ = writeln!(out, "{removed} lines removed, {added} added");
    for hunk in diff.unified_diff().context_radius(1).iter_hunks() {
        let _ = write!(out, "{hunk}");
    }
    out
}

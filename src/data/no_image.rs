//! Stand-in for `image.rs` when onnx-opt is built without the `images`
//! feature: image folders are refused with a one-line error saying how to
//! get them.

use super::preprocess::Preprocess;
use crate::runtime::Tensor;
use anyhow::{bail, Result};
use std::path::Path;

const WHY: &str =
    "this onnx-opt was built without image support: rebuild with `cargo build --features images`";

pub fn shape(_: &Path, _: &Preprocess) -> Result<Vec<usize>> {
    bail!(WHY)
}

pub fn load(_: &Path, _: &Preprocess) -> Result<Tensor> {
    bail!(WHY)
}

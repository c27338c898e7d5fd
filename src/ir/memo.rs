//! Tensors computed from a constant, kept so that a rule asked the same
//! question again computes nothing. Whoever makes a memo owns it and hands
//! it to its rules through `RuleContext::memo` (`fuse` folds the BatchNorms
//! ahead while tract infers types, then `fuse-bn` takes the kept folds).
//!
//! A kept tensor is a function of its key: the source payload (kept alive
//! here, so its address names it), the source dims, and what the caller
//! says the computation is (a tag and numbers, bit for bit). So a kept
//! result is the one computing it again would give, and output never
//! depends on what was kept.

use super::{Tensor, TensorData};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// (source payload address and length, dims, caller's tag, caller's numbers)
type Key = (usize, usize, Vec<i64>, String, Vec<u64>);

/// Kept only between [`TensorMemo::keep`] and the drop of its guard;
/// otherwise every call computes.
#[derive(Default, Debug)]
pub struct TensorMemo {
    kept: Mutex<Option<HashMap<Key, (Bytes, Tensor)>>>,
}

impl TensorMemo {
    /// Keeps results until the guard is dropped (then frees them all).
    pub fn keep(&self) -> Keeping<'_> {
        *self.kept.lock().expect("memo lock") = Some(HashMap::new());
        Keeping(self)
    }

    /// `compute()`, derived from `source` as `tag` and `numbers` say, or
    /// the tensor kept for the same key. A source not held as raw bytes is
    /// never kept (its address would not name it).
    pub fn get_or(
        &self,
        source: &Tensor,
        tag: &str,
        numbers: &[f64],
        compute: impl FnOnce() -> Tensor,
    ) -> Tensor {
        let TensorData::Raw(bytes) = &source.data else {
            return compute();
        };
        let mut kept = self.kept.lock().expect("memo lock");
        let Some(map) = kept.as_mut() else {
            return compute();
        };
        let key = (
            bytes.as_ptr() as usize,
            bytes.len(),
            source.dims.clone(),
            tag.to_string(),
            numbers.iter().map(|v| v.to_bits()).collect(),
        );
        map.entry(key)
            .or_insert_with(|| (bytes.clone(), compute()))
            .1
            .clone()
    }
}

/// See [`TensorMemo::keep`].
pub struct Keeping<'a>(&'a TensorMemo);

impl Drop for Keeping<'_> {
    fn drop(&mut self) {
        *self.0.kept.lock().expect("memo lock") = None;
    }
}

//! Outputs that are maps, sequences of maps or strings, read as tensors so
//! that they are compared, judged and checked like any other output. Every
//! classifier skl2onnx converts ends, by default, in a ZipMap: a sequence of
//! one map (class → probability) per row; one trained on named classes also
//! returns its labels as strings. Without this, nothing could run such a
//! model: not `--verify`, not calibration, not the random samples.
//!
//! A sequence of N maps that share their K keys becomes an [N, K] tensor, a
//! lone map a [K] tensor, the columns in key order (numbers by value,
//! strings by their bytes), so a column is one class in both models.
//! A string tensor becomes an int64 tensor of the strings' 63-bit FNV-1a
//! hashes: equal strings compare equal, two different ones differ by far
//! more than any tolerance (relative to the hashes' scale, by about one).
//! Anything else (rows with other keys, a sequence of tensors) is an error
//! that names what it met.

use super::super::tensor::Tensor;
use anyhow::{anyhow, bail, Result};
use ort::value::{DynValue, DynValueTypeMarker, TensorElementType, ValueType};

/// `v`, a map or a sequence of maps, as a tensor (see the module's comment).
pub(super) fn as_tensor(v: &DynValue) -> Result<Tensor> {
    match v.dtype() {
        ValueType::Map { key, value } => {
            let (_, values) = row(v, key, value)?;
            tensor(value, &[values.len()], &values)
        }
        ValueType::Sequence(inner) => match &**inner {
            ValueType::Map { key, value } => {
                let maps = v
                    .try_extract_sequence::<DynValueTypeMarker>()
                    .map_err(|e| anyhow!("reading an ONNX Runtime sequence: {e}"))?;
                let mut keys: Option<Vec<Key>> = None;
                let mut data = Vec::new();
                for (i, map) in maps.iter().enumerate() {
                    let (these, values) = row(map, key, value)?;
                    match &keys {
                        None => keys = Some(these),
                        Some(first) if *first != these => bail!(
                            "map {i} of the sequence has keys {} where map 0 has {}",
                            spelled(&these),
                            spelled(first)
                        ),
                        Some(_) => {}
                    }
                    data.extend(values);
                }
                let width = keys.map_or(0, |k| k.len());
                tensor(value, &[maps.len(), width], &data)
            }
            other => bail!(
                "a sequence of {other} is not supported (sequences of maps, as ZipMap makes, are)"
            ),
        },
        other => bail!("{other} is not supported"),
    }
}

/// `v`, a string tensor, as its strings' hashes (see the module's comment).
pub(super) fn strings_as_tensor(v: &DynValue) -> Result<Tensor> {
    let (shape, strings) = v
        .try_extract_strings()
        .map_err(|e| anyhow!("reading an ONNX Runtime string tensor: {e}"))?;
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let hashes: Vec<i64> = strings.iter().map(|s| fnv1a(s.as_bytes())).collect();
    Tensor::from_i64(&shape, &hashes)
}

/// FNV-1a, 64 bits, top bit cleared (a stable hash: both models' runs agree).
fn fnv1a(bytes: &[u8]) -> i64 {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash >> 1) as i64
}

/// Values read as f64, as a tensor of the map's value type.
fn tensor(value: &TensorElementType, shape: &[usize], data: &[f64]) -> Result<Tensor> {
    if *value == TensorElementType::Float32 {
        let data: Vec<f32> = data.iter().map(|&x| x as f32).collect(); // exact: they were f32
        return Tensor::from_f32(shape, &data);
    }
    Tensor::from_f64(shape, data)
}

/// A map key: ZipMap's are int64 or string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Text(String),
}

/// One map's keys, sorted, and its values in that order (as f64: a map's
/// values are float or double).
fn row(
    map: &DynValue,
    key: &TensorElementType,
    value: &TensorElementType,
) -> Result<(Vec<Key>, Vec<f64>)> {
    use TensorElementType::{Float32, Float64, Int64, String as Text};
    let mut pairs = match (key, value) {
        (Int64, Float32) => pairs(map, Key::Int, |v: f32| v.into())?,
        (Int64, Float64) => pairs(map, Key::Int, |v: f64| v)?,
        (Text, Float32) => pairs(map, Key::Text, |v: f32| v.into())?,
        (Text, Float64) => pairs(map, Key::Text, |v: f64| v)?,
        _ => bail!(
            "a map from {key} to {value} is not supported (int64 or string to float or double are)"
        ),
    };
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pairs.into_iter().unzip())
}

/// A map's pairs, keys and values converted by `key` and `value`.
fn pairs<K, V>(map: &DynValue, key: fn(K) -> Key, value: fn(V) -> f64) -> Result<Vec<(Key, f64)>>
where
    K: ort::value::IntoTensorElementType + Clone + std::hash::Hash + Eq,
    V: ort::value::PrimitiveTensorElementType + Clone,
{
    let pairs = map
        .try_extract_key_values::<K, V>()
        .map_err(|e| anyhow!("reading an ONNX Runtime map: {e}"))?;
    Ok(pairs.into_iter().map(|(k, v)| (key(k), value(v))).collect())
}

/// Keys for an error message (the first few).
fn spelled(keys: &[Key]) -> String {
    let shown: Vec<String> = keys
        .iter()
        .take(8)
        .map(|k| match k {
            Key::Int(i) => i.to_string(),
            Key::Text(s) => format!("{s:?}"),
        })
        .collect();
    let more = if keys.len() > 8 { ", …" } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

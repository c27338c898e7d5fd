//! Constant tensors (initializers, `Constant` values, tensor attributes).
//!
//! The payload keeps the storage the file used (`raw_data` or one of the typed
//! fields) so a round trip is lossless; passes read it through typed views and
//! write new tensors as little-endian raw data.

use super::{DataType, Opaque};
use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use std::borrow::Cow;

#[derive(Clone, PartialEq, Debug)]
pub enum TensorData {
    /// Little-endian packed elements (`raw_data`). Aliases the file buffer when loaded.
    Raw(Bytes),
    Float(Vec<f32>),
    /// Also holds the small integer, bool and f16 types, as ONNX stores them.
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Double(Vec<f64>),
    /// Also holds u32.
    Uint64(Vec<u64>),
    String(Vec<Bytes>),
}

#[derive(Clone, PartialEq, Debug)]
pub struct Tensor {
    /// The name a tensor held by an attribute carries in the file
    /// (initializers are named by the outlet they feed).
    pub name: Option<String>,
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub data: TensorData,
    pub doc_string: Option<String>,
    /// `TensorProto.segment`, carried through untouched.
    pub segment: Option<Opaque>,
    /// `data_location` as written in the file, when it was written (external
    /// data is always resolved into `Raw` on load).
    pub data_location: Option<i32>,
    pub metadata_props: Vec<Opaque>,
}

impl Tensor {
    pub fn new(dtype: DataType, dims: Vec<i64>, data: TensorData) -> Tensor {
        Tensor {
            name: None,
            dtype,
            dims,
            data,
            doc_string: None,
            segment: None,
            data_location: None,
            metadata_props: vec![],
        }
    }

    pub fn from_f32(dims: Vec<i64>, values: &[f32]) -> Tensor {
        let bytes = pack_le(values, |v| v.to_le_bytes());
        Tensor::new(DataType::FLOAT, dims, TensorData::Raw(bytes.into()))
    }

    /// [`Tensor::from_f32`] of values the caller hands over: on
    /// little-endian targets the payload is the vector itself, not a copy
    /// (folding a weight then writes it once, into memory already touched).
    pub fn from_f32_vec(dims: Vec<i64>, values: Vec<f32>) -> Tensor {
        if !cfg!(target_endian = "little") {
            return Tensor::from_f32(dims, &values);
        }
        let bytes = Bytes::from_owner(LeF32s(values));
        Tensor::new(DataType::FLOAT, dims, TensorData::Raw(bytes))
    }

    pub fn from_i64(dims: Vec<i64>, values: &[i64]) -> Tensor {
        let bytes = pack_le(values, |v| v.to_le_bytes());
        Tensor::new(DataType::INT64, dims, TensorData::Raw(bytes.into()))
    }

    /// Number of elements (1 for a scalar). Saturates instead of wrapping on
    /// absurd dims, so a payload check against it fails rather than passes
    /// (validation refuses such dims on import; see `validate::MAX_ELEMENTS`).
    pub fn numel(&self) -> usize {
        self.dims.iter().fold(1usize, |n, &d| {
            n.saturating_mul(usize::try_from(d).unwrap_or(0))
        })
    }

    pub fn is_scalar_like(&self) -> bool {
        self.numel() == 1
    }

    /// Bytes the payload takes in the file.
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::Raw(b) => b.len(),
            TensorData::Float(v) => v.len() * 4,
            TensorData::Int32(v) => v.len() * 4,
            TensorData::Int64(v) => v.len() * 8,
            TensorData::Double(v) => v.len() * 8,
            TensorData::Uint64(v) => v.len() * 8,
            TensorData::String(v) => v.iter().map(|s| s.len()).sum(),
        }
    }

    /// The elements as f32, for float tensors (f32, f64).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let out: Vec<f32> = match (self.dtype, &self.data) {
            (DataType::FLOAT, TensorData::Raw(b)) => {
                le_chunks::<4>(b)?.map(f32::from_le_bytes).collect()
            }
            (DataType::FLOAT, TensorData::Float(v)) => v.clone(),
            (DataType::DOUBLE, TensorData::Raw(b)) => le_chunks::<8>(b)?
                .map(|c| f64::from_le_bytes(c) as f32)
                .collect(),
            (DataType::DOUBLE, TensorData::Double(v)) => v.iter().map(|&x| x as f32).collect(),
            (dt, _) => bail!("expected a float tensor, found {dt}"),
        };
        self.check_len(out.len())?;
        Ok(out)
    }

    /// The elements as i64, for integer and bool tensors.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let out: Vec<i64> = match (self.dtype.0, &self.data) {
            (7, TensorData::Raw(b)) => le_chunks::<8>(b)?.map(i64::from_le_bytes).collect(),
            (6, TensorData::Raw(b)) => le_chunks::<4>(b)?
                .map(|c| i32::from_le_bytes(c) as i64)
                .collect(),
            (5, TensorData::Raw(b)) => le_chunks::<2>(b)?
                .map(|c| i16::from_le_bytes(c) as i64)
                .collect(),
            (4, TensorData::Raw(b)) => le_chunks::<2>(b)?
                .map(|c| u16::from_le_bytes(c) as i64)
                .collect(),
            (3, TensorData::Raw(b)) => b.iter().map(|&x| x as i8 as i64).collect(),
            (2 | 9, TensorData::Raw(b)) => b.iter().map(|&x| x as i64).collect(),
            (12, TensorData::Raw(b)) => le_chunks::<4>(b)?
                .map(|c| u32::from_le_bytes(c) as i64)
                .collect(),
            (7, TensorData::Int64(v)) => v.clone(),
            (2..=6 | 9, TensorData::Int32(v)) => v.iter().map(|&x| x as i64).collect(),
            (12 | 13, TensorData::Uint64(v)) => v.iter().map(|&x| x as i64).collect(),
            (_, _) => bail!("expected an integer tensor, found {}", self.dtype),
        };
        self.check_len(out.len())?;
        Ok(out)
    }

    fn check_len(&self, got: usize) -> Result<()> {
        ensure!(
            got == self.numel(),
            "tensor holds {got} elements but its dims {:?} say {}",
            self.dims,
            self.numel()
        );
        Ok(())
    }

    /// Same type, dims and elements, bit for bit (`-0.0` differs from `0.0`),
    /// whichever storage each uses. Pair with `digest` to find duplicates.
    pub fn same_payload(&self, other: &Tensor) -> bool {
        if self.dtype != other.dtype || self.dims != other.dims {
            return false;
        }
        match (&self.data, &other.data) {
            (TensorData::String(a), TensorData::String(b)) => a == b,
            (TensorData::String(_), _) | (_, TensorData::String(_)) => false,
            _ => self.le_bytes() == other.le_bytes(),
        }
    }

    /// The payload as little-endian bytes of its storage (empty for strings).
    fn le_bytes(&self) -> Cow<'_, [u8]> {
        fn pack<T: Number, const N: usize>(
            v: &[T],
            f: impl Fn(&T) -> [u8; N],
        ) -> Cow<'static, [u8]> {
            Cow::Owned(pack_le(v, f))
        }
        match &self.data {
            TensorData::Raw(b) => Cow::Borrowed(b),
            TensorData::Float(v) => pack(v, |x| x.to_le_bytes()),
            TensorData::Int32(v) => pack(v, |x| x.to_le_bytes()),
            TensorData::Int64(v) => pack(v, |x| x.to_le_bytes()),
            TensorData::Double(v) => pack(v, |x| x.to_le_bytes()),
            TensorData::Uint64(v) => pack(v, |x| x.to_le_bytes()),
            TensorData::String(_) => Cow::Borrowed(&[]),
        }
    }

    /// A cheap fingerprint of the payload: a hash of 32 elements sampled
    /// evenly, the same for raw and typed storage of the same values. It
    /// finds candidate duplicates in O(1); `same_payload` confirms them.
    pub fn payload_hash(&self) -> u64 {
        const SAMPLES: usize = 32;
        let n = match &self.data {
            TensorData::Raw(b) => self.dtype.size_of().map_or(b.len(), |s| b.len() / s.max(1)),
            TensorData::Float(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Double(v) => v.len(),
            TensorData::Uint64(v) => v.len(),
            TensorData::String(_) => return self.digest(),
        };
        let mut h = WordHash(n as u64);
        for k in 0..SAMPLES.min(n) {
            let i = k * n / SAMPLES.min(n);
            let word = match &self.data {
                TensorData::Raw(b) => {
                    let size = self.dtype.size_of().unwrap_or(1).max(1);
                    let mut w = [0u8; 8];
                    let bytes = &b[i * size..(i * size + size).min(b.len())];
                    w[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
                    u64::from_le_bytes(w)
                }
                TensorData::Float(v) => v[i].to_bits() as u64,
                TensorData::Int32(v) => v[i] as u32 as u64,
                TensorData::Int64(v) => v[i] as u64,
                TensorData::Double(v) => v[i].to_bits(),
                TensorData::Uint64(v) => v[i],
                TensorData::String(_) => unreachable!("returned above"),
            };
            h.word(word);
        }
        h.0
    }

    /// A stable 64-bit FNV-1a digest of type, dims and payload, shown in the
    /// text form so that snapshot diffs reveal changed weights.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::default();
        h.write(&self.dtype.0.to_le_bytes());
        for d in &self.dims {
            h.write(&d.to_le_bytes());
        }
        match &self.data {
            TensorData::Raw(b) => h.write(b),
            TensorData::Float(v) => v.iter().for_each(|x| h.write(&x.to_le_bytes())),
            TensorData::Int32(v) => v.iter().for_each(|x| h.write(&x.to_le_bytes())),
            TensorData::Int64(v) => v.iter().for_each(|x| h.write(&x.to_le_bytes())),
            TensorData::Double(v) => v.iter().for_each(|x| h.write(&x.to_le_bytes())),
            TensorData::Uint64(v) => v.iter().for_each(|x| h.write(&x.to_le_bytes())),
            TensorData::String(v) => v.iter().for_each(|x| h.write(x)),
        }
        h.0
    }
}

/// Primitive numbers: no padding, every bit pattern a valid byte sequence.
trait Number: Copy {}
impl Number for f32 {}
impl Number for f64 {}
impl Number for i32 {}
impl Number for i64 {}
impl Number for u64 {}

/// f32 values seen as their bytes, which on a little-endian target are their
/// `to_le_bytes` (only used there).
struct LeF32s(Vec<f32>);

impl AsRef<[u8]> for LeF32s {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: f32 has no padding; the slice covers exactly the vector's
        // initialised elements and lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.0.as_ptr().cast::<u8>(),
                std::mem::size_of_val(&self.0[..]),
            )
        }
    }
}

/// Packs elements into little-endian bytes: on little-endian targets a plain
/// copy of the slice's memory (element by element it was 6% of `fuse`).
fn pack_le<T: Number, const N: usize>(values: &[T], f: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
    if cfg!(target_endian = "little") && std::mem::size_of::<T>() == N {
        // SAFETY: `T` is a primitive number (sealed `Number`): its memory is
        // `size_of_val(values)` initialised bytes without padding, which on
        // a little-endian target are exactly its `to_le_bytes`.
        let raw = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        return raw.to_vec();
    }
    let mut bytes = vec![0u8; values.len() * N];
    for (chunk, v) in bytes.chunks_exact_mut(N).zip(values) {
        chunk.copy_from_slice(&f(v));
    }
    bytes
}

fn le_chunks<const N: usize>(b: &[u8]) -> Result<impl Iterator<Item = [u8; N]> + '_> {
    ensure!(
        b.len() % N == 0,
        "raw data of {} bytes is not a whole number of {N}-byte elements",
        b.len()
    );
    Ok(b.chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact yields N bytes")))
}

/// Multiply-rotate hashing of 64-bit words.
struct WordHash(u64);

impl WordHash {
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hash_is_the_same_for_raw_and_typed_storage() {
        let values = [1.5f32, -2.0, 3.25];
        let raw = Tensor::from_f32(vec![3], &values);
        let typed = Tensor::new(DataType::FLOAT, vec![3], TensorData::Float(values.to_vec()));
        assert!(raw.same_payload(&typed));
        assert_eq!(raw.payload_hash(), typed.payload_hash());
        let other = Tensor::from_f32(vec![3], &[1.5, -2.0, 3.5]);
        assert_ne!(raw.payload_hash(), other.payload_hash());
    }
}

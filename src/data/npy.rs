//! `.npy` arrays: the header, and rows of the data decoded into tensors.
//!
//! A `.npy` file on disk is memory-mapped ([`NpyFile`]), so a multi-GB
//! batched array is never read whole: each sample decodes only its rows.
//! Arrays inside a `.npz` are read into memory first (a zip entry may be
//! compressed) and sliced the same way.

use crate::runtime::{ElemType, Tensor};
use anyhow::{anyhow, bail, Context, Result};
use npyz::{DType, Endianness, NpyHeader, Order, TypeChar};
use std::path::Path;

/// What a `.npy` header says: element type, byte order, shape, where the data starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub elem_type: ElemType,
    pub big_endian: bool,
    pub fortran: bool,
    pub shape: Vec<usize>,
    /// Offset of the first data byte in the file.
    pub data_offset: usize,
}

impl Header {
    /// Parses the header at the start of `bytes` (the whole file, or at least its header).
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        let mut rest = bytes;
        let header = NpyHeader::from_reader(&mut rest).map_err(|e| anyhow!("not a .npy: {e}"))?;
        let DType::Plain(ts) = header.dtype() else {
            bail!("structured or sub-array dtypes are not supported");
        };
        let elem_type = match (ts.type_char(), ts.size_field()) {
            (TypeChar::Bool, 1) => ElemType::Bool,
            (TypeChar::Int, 1) => ElemType::I8,
            (TypeChar::Int, 2) => ElemType::I16,
            (TypeChar::Int, 4) => ElemType::I32,
            (TypeChar::Int, 8) => ElemType::I64,
            (TypeChar::Uint, 1) => ElemType::U8,
            (TypeChar::Uint, 2) => ElemType::U16,
            (TypeChar::Uint, 4) => ElemType::U32,
            (TypeChar::Uint, 8) => ElemType::U64,
            (TypeChar::Float, 2) => ElemType::F16,
            (TypeChar::Float, 4) => ElemType::F32,
            (TypeChar::Float, 8) => ElemType::F64,
            _ => bail!("numpy dtype {ts} is not supported"),
        };
        let shape: Vec<usize> = header
            .shape()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .context("array dimension too large")?;
        Ok(Header {
            elem_type,
            big_endian: ts.endianness() == Endianness::Big,
            fortran: header.order() == Order::Fortran && shape.len() > 1,
            shape,
            data_offset: bytes.len() - rest.len(),
        })
    }

    /// Bytes of one index of axis 0 (the whole array for a scalar).
    fn row_bytes(&self) -> Result<usize> {
        let rest = self.shape.get(1..).unwrap_or(&[]);
        rest.iter()
            .try_fold(self.elem_type.size_of(), |a, &d| a.checked_mul(d))
            .context("array too large")
    }

    /// Bytes the data must hold.
    fn data_bytes(&self) -> Result<usize> {
        let rows = self.shape.first().copied().unwrap_or(1);
        self.row_bytes()?
            .checked_mul(rows)
            .context("array too large")
    }

    /// Decodes rows `start..start + count` of axis 0 out of `file` (the
    /// whole file's bytes) as a tensor of shape `shape` (which holds exactly
    /// those elements: `[count, ...]`, or without the leading axis).
    pub fn rows(&self, file: &[u8], start: usize, count: usize, shape: &[usize]) -> Result<Tensor> {
        let data = &file[self.data_offset.min(file.len())..];
        let need = self.data_bytes()?;
        if data.len() < need {
            bail!(
                "truncated data: {} bytes for shape {:?} of {}, need {need}",
                data.len(),
                self.shape,
                self.elem_type
            );
        }
        if self.fortran {
            // A Fortran-order array is the C-order array of the reversed
            // shape, transposed: only a whole array can be read that way.
            if start != 0 || count != self.shape[0] {
                bail!(
                    "a Fortran-order array can only be read whole; save it with \
                     numpy.ascontiguousarray to read it sample by sample"
                );
            }
            let storage: Vec<usize> = self.shape.iter().rev().copied().collect();
            let t = decode(self.elem_type, &storage, &data[..need], self.big_endian)?;
            let axes: Vec<usize> = (0..storage.len()).rev().collect();
            return t.permuted(&axes)?.reshaped(shape);
        }
        let row = self.row_bytes()?;
        let bytes = &data[start * row..(start + count) * row];
        decode(self.elem_type, shape, bytes, self.big_endian)
    }
}

/// A `.npy` file, memory-mapped: only the pages of the rows read are loaded.
pub struct NpyFile {
    map: memmap2::Mmap,
    pub header: Header,
}

impl NpyFile {
    pub fn open(path: &Path) -> Result<NpyFile> {
        let file = std::fs::File::open(path).context("cannot open")?;
        // SAFETY: the map is read-only and lives no longer than this value;
        // a file truncated underneath by another process is the one risk
        // every mmap reader accepts (numpy's mmap_mode does the same).
        let map = unsafe { memmap2::Mmap::map(&file) }.context("cannot memory-map")?;
        let header = Header::parse(&map)?;
        Ok(NpyFile { map, header })
    }

    pub fn rows(&self, start: usize, count: usize, shape: &[usize]) -> Result<Tensor> {
        self.header.rows(&self.map, start, count, shape)
    }
}

macro_rules! chunks {
    ($data:expr, $t:ty, $big:expr) => {{
        const N: usize = std::mem::size_of::<$t>();
        $data
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                if $big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            })
            .collect::<Vec<$t>>()
    }};
}

fn decode(elem_type: ElemType, shape: &[usize], data: &[u8], big: bool) -> Result<Tensor> {
    match elem_type {
        ElemType::Bool => {
            let v = data
                .iter()
                .map(|&b| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(anyhow!("invalid bool byte {other}")),
                })
                .collect::<Result<Vec<bool>>>()?;
            Tensor::from_bool(shape, &v)
        }
        ElemType::I8 => Tensor::from_i8(shape, &chunks!(data, i8, big)),
        ElemType::U8 => Tensor::from_u8(shape, data),
        ElemType::I16 => Tensor::from_i16(shape, &chunks!(data, i16, big)),
        ElemType::U16 => Tensor::from_u16(shape, &chunks!(data, u16, big)),
        ElemType::I32 => Tensor::from_i32(shape, &chunks!(data, i32, big)),
        ElemType::U32 => Tensor::from_u32(shape, &chunks!(data, u32, big)),
        ElemType::I64 => Tensor::from_i64(shape, &chunks!(data, i64, big)),
        ElemType::U64 => Tensor::from_u64(shape, &chunks!(data, u64, big)),
        ElemType::F32 => Tensor::from_f32(shape, &chunks!(data, f32, big)),
        ElemType::F64 => Tensor::from_f64(shape, &chunks!(data, f64, big)),
        ElemType::F16 => Tensor::from_f16_bits(shape, &chunks!(data, u16, big)),
    }
}

/// Decodes a whole `.npy` (header + data) into a tensor.
pub fn parse(bytes: &[u8]) -> Result<Tensor> {
    let h = Header::parse(bytes)?;
    let rows = h.shape.first().copied().unwrap_or(1);
    let shape = h.shape.clone();
    h.rows(bytes, 0, rows, &shape)
}

/// A `.npy` file (version 1.0) of `descr` ('<f4', '<i8', ...) and `shape`
/// holding `data`, bytes already in `descr`'s order: the fixtures of this
/// crate's tests and of the integration tests are written with it.
pub fn write(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_str = match shape {
        [d] => format!("({d},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let fo = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fo}, 'shape': {shape_str}, }}");
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

#[cfg(test)]
pub fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn decoding() {
        let t = parse(&write(
            "<f4",
            false,
            &[2, 2],
            &f32_le(&[1.0, 2.0, 3.0, 4.0]),
        ))
        .unwrap();
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        // Fortran order: memory holds columns
        let f = write(
            "<f4",
            true,
            &[2, 3],
            &f32_le(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
        );
        let t = parse(&f).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let h = Header::parse(&f).unwrap();
        assert!(err_of(h.rows(&f, 0, 1, &[1, 3])).contains("Fortran"));
        // big endian
        let be: Vec<u8> = [1i64, -2].iter().flat_map(|x| x.to_be_bytes()).collect();
        let t = parse(&write(">i8", false, &[2], &be)).unwrap();
        assert_eq!(t.elem_type(), ElemType::I64);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, -2.0]);
        // f16, bool, scalar
        let h: Vec<u8> = [0x3c00u16, 0xc000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = parse(&write("<f2", false, &[2], &h)).unwrap();
        assert_eq!(
            (t.elem_type(), t.to_f32_vec().unwrap()),
            (ElemType::F16, vec![1.0, -2.0])
        );
        let t = parse(&write("|b1", false, &[3], &[1, 0, 1])).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 0.0, 1.0]);
        assert!(err_of(parse(&write("|b1", false, &[1], &[7]))).contains("invalid bool"));
        let t = parse(&write("<f8", false, &[], &2.5f64.to_le_bytes())).unwrap();
        assert_eq!((t.shape().len(), t.to_f64_vec().unwrap()), (0, vec![2.5]));
        // errors
        assert!(err_of(parse(&write("<f4", false, &[4], &[0; 8]))).contains("truncated"));
        assert!(err_of(parse(&write("<c8", false, &[1], &[0; 8]))).contains("not supported"));
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn rows_of_a_mapped_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        std::fs::write(&path, write("<f4", false, &[4, 1, 3], &f32_le(&v))).unwrap();
        let f = NpyFile::open(&path).unwrap();
        assert_eq!(f.header.shape, vec![4, 1, 3]);
        let t = f.rows(2, 1, &[1, 3]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![6.0, 7.0, 8.0]);
        let t = f.rows(2, 2, &[2, 1, 3]).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), v[6..].to_vec());
    }
}

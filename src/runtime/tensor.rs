//! Element types and the tensor wrapper that hides tract's `Tensor`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use tract_onnx::prelude::{f16, DatumType, IntoTensor, TDim, TValue};

/// Element type of an input or output tensor.
///
/// Covers the numeric ONNX types tract can feed and return. Strings,
/// complex numbers, bfloat16, float8 and int4 are not supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    F32,
    F64,
    F16,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Bool,
}

impl ElemType {
    /// All supported element types.
    pub const ALL: [ElemType; 12] = [
        ElemType::F32,
        ElemType::F64,
        ElemType::F16,
        ElemType::I8,
        ElemType::U8,
        ElemType::I16,
        ElemType::U16,
        ElemType::I32,
        ElemType::U32,
        ElemType::I64,
        ElemType::U64,
        ElemType::Bool,
    ];

    /// The element type of an ONNX `TensorProto.DataType` code.
    pub fn from_onnx(code: i32) -> Result<ElemType> {
        Ok(match code {
            1 => ElemType::F32,
            2 => ElemType::U8,
            3 => ElemType::I8,
            4 => ElemType::U16,
            5 => ElemType::I16,
            6 => ElemType::I32,
            7 => ElemType::I64,
            9 => ElemType::Bool,
            10 => ElemType::F16,
            11 => ElemType::F64,
            12 => ElemType::U32,
            13 => ElemType::U64,
            8 => bail!("element type string is not supported"),
            14 | 15 => bail!("complex element types are not supported"),
            16 => bail!("element type bfloat16 is not supported"),
            17..=20 | 23..=25 => bail!("float8/float4 element types are not supported"),
            21 | 22 => bail!("int4/uint4 element types are not supported"),
            0 => bail!("element type is undefined (0)"),
            other => bail!("unknown ONNX element type code {other}"),
        })
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, ElemType::F32 | ElemType::F64 | ElemType::F16)
    }

    /// Size of one element in bytes.
    pub fn size_of(self) -> usize {
        match self {
            ElemType::I8 | ElemType::U8 | ElemType::Bool => 1,
            ElemType::I16 | ElemType::U16 | ElemType::F16 => 2,
            ElemType::I32 | ElemType::U32 | ElemType::F32 => 4,
            ElemType::I64 | ElemType::U64 | ElemType::F64 => 8,
        }
    }

    /// numpy's name for this type (`float32`, `int64`, `bool`, ...).
    pub fn numpy_name(self) -> &'static str {
        match self {
            ElemType::F32 => "float32",
            ElemType::F64 => "float64",
            ElemType::F16 => "float16",
            ElemType::I8 => "int8",
            ElemType::U8 => "uint8",
            ElemType::I16 => "int16",
            ElemType::U16 => "uint16",
            ElemType::I32 => "int32",
            ElemType::U32 => "uint32",
            ElemType::I64 => "int64",
            ElemType::U64 => "uint64",
            ElemType::Bool => "bool",
        }
    }

    /// The ONNX `TensorProto.DataType` code of this element type.
    pub fn onnx_code(self) -> i32 {
        match self {
            ElemType::F32 => 1,
            ElemType::U8 => 2,
            ElemType::I8 => 3,
            ElemType::U16 => 4,
            ElemType::I16 => 5,
            ElemType::I32 => 6,
            ElemType::I64 => 7,
            ElemType::Bool => 9,
            ElemType::F16 => 10,
            ElemType::F64 => 11,
            ElemType::U32 => 12,
            ElemType::U64 => 13,
        }
    }

    pub(crate) fn to_datum(self) -> DatumType {
        match self {
            ElemType::F32 => DatumType::F32,
            ElemType::F64 => DatumType::F64,
            ElemType::F16 => DatumType::F16,
            ElemType::I8 => DatumType::I8,
            ElemType::U8 => DatumType::U8,
            ElemType::I16 => DatumType::I16,
            ElemType::U16 => DatumType::U16,
            ElemType::I32 => DatumType::I32,
            ElemType::U32 => DatumType::U32,
            ElemType::I64 => DatumType::I64,
            ElemType::U64 => DatumType::U64,
            ElemType::Bool => DatumType::Bool,
        }
    }

    /// The element type of a tract datum type; quantized types map to their
    /// storage type (what ONNX sees), TDim to i64.
    pub(crate) fn from_datum(dt: DatumType) -> Result<ElemType> {
        let dt = if dt.is_quantized() {
            dt.unquantized()
        } else {
            dt
        };
        Ok(match dt {
            DatumType::F32 => ElemType::F32,
            DatumType::F64 => ElemType::F64,
            DatumType::F16 => ElemType::F16,
            DatumType::I8 => ElemType::I8,
            DatumType::U8 => ElemType::U8,
            DatumType::I16 => ElemType::I16,
            DatumType::U16 => ElemType::U16,
            DatumType::I32 => ElemType::I32,
            DatumType::U32 => ElemType::U32,
            DatumType::I64 | DatumType::TDim => ElemType::I64,
            DatumType::U64 => ElemType::U64,
            DatumType::Bool => ElemType::Bool,
            other => bail!("element type {other:?} is not supported"),
        })
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.numpy_name())
    }
}

/// A dense tensor of one of the [`ElemType`]s, in row-major order.
///
/// Cheap to clone (the data is shared).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    value: TValue,
    elem_type: ElemType,
}

macro_rules! constructor {
    ($name:ident, $t:ty) => {
        #[doc = concat!("A tensor of `", stringify!($t), "` from its shape and row-major data.")]
        pub fn $name(shape: &[usize], data: &[$t]) -> Result<Tensor> {
            Tensor::check_len(shape, data.len())?;
            let t = tract_onnx::prelude::Tensor::from_shape(shape, data)?;
            Tensor::from_tract(t)
        }
    };
}

impl Tensor {
    constructor!(from_f32, f32);
    constructor!(from_f64, f64);
    constructor!(from_i8, i8);
    constructor!(from_u8, u8);
    constructor!(from_i16, i16);
    constructor!(from_u16, u16);
    constructor!(from_i32, i32);
    constructor!(from_u32, u32);
    constructor!(from_i64, i64);
    constructor!(from_u64, u64);
    constructor!(from_bool, bool);

    /// A float16 tensor from f32 data (rounded to the nearest f16).
    pub fn from_f32_as_f16(shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let data: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
        Tensor::check_len(shape, data.len())?;
        Tensor::from_tract(tract_onnx::prelude::Tensor::from_shape(shape, &data)?)
    }

    pub(crate) fn from_f16(shape: &[usize], data: &[f16]) -> Result<Tensor> {
        Tensor::check_len(shape, data.len())?;
        Tensor::from_tract(tract_onnx::prelude::Tensor::from_shape(shape, data)?)
    }

    /// A float16 tensor from the bit patterns of its elements.
    pub fn from_f16_bits(shape: &[usize], bits: &[u16]) -> Result<Tensor> {
        let data: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        Tensor::from_f16(shape, &data)
    }

    /// The tensor with its axes permuted (`axes[i]` = source axis of axis i).
    pub fn permuted(&self, axes: &[usize]) -> Result<Tensor> {
        let t = self.value.clone().into_tensor().permute_axes(axes)?;
        Tensor::from_tract(t)
    }

    /// The same elements in another shape (of the same element count).
    pub fn reshaped(&self, shape: &[usize]) -> Result<Tensor> {
        Tensor::check_len(shape, self.len())?;
        let t = self.value.clone().into_tensor().into_shape(shape)?;
        Tensor::from_tract(t)
    }

    fn check_len(shape: &[usize], len: usize) -> Result<()> {
        let expected = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .context("tensor shape overflows usize")?;
        if expected != len {
            bail!("shape {shape:?} needs {expected} elements, got {len}");
        }
        Ok(())
    }

    /// Wraps a tract tensor. Quantized types are reinterpreted as their
    /// storage type and TDim is evaluated to i64, so that the tensor holds
    /// exactly what an ONNX consumer would see.
    pub(crate) fn from_tract(t: tract_onnx::prelude::Tensor) -> Result<Tensor> {
        let dt = t.datum_type();
        let elem_type = ElemType::from_datum(dt)?;
        let t = if dt.is_quantized() {
            reinterpret(&t, elem_type)?
        } else if dt == DatumType::TDim {
            let slice = t.try_as_plain_ram()?.as_slice::<TDim>()?.to_vec();
            let ints = slice
                .iter()
                .map(|d| d.to_i64())
                .collect::<std::result::Result<Vec<i64>, _>>()
                .context("output holds a symbolic dimension that has no value")?;
            tract_onnx::prelude::Tensor::from_shape(t.shape(), &ints)?
        } else {
            t
        };
        Ok(Tensor {
            value: t.into(),
            elem_type,
        })
    }

    /// The elements in row-major order, as stored (no conversion).
    pub(crate) fn to_vec<T: tract_onnx::prelude::Datum>(&self) -> Result<Vec<T>> {
        Ok(self.value.try_as_plain_ram()?.as_slice::<T>()?.to_vec())
    }

    pub(crate) fn tvalue(&self) -> TValue {
        self.value.clone()
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        self.elem_type
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Converts the tensor to another element type (numeric cast, like
    /// numpy's `astype`; bools become 0/1 and non-zero becomes true).
    pub fn cast(&self, to: ElemType) -> Result<Tensor> {
        if to == self.elem_type {
            return Ok(self.clone());
        }
        let t = self
            .value
            .cast_to_dt(to.to_datum())
            .with_context(|| format!("casting {} to {}", self.elem_type, to))?
            .into_owned();
        Tensor::from_tract(t)
    }

    /// The elements in row-major order as little-endian bytes, the layout of
    /// ONNX `raw_data` (bools one byte each).
    pub fn to_le_bytes(&self) -> Result<Vec<u8>> {
        let ram = self.value.try_as_plain_ram()?;
        macro_rules! le {
            ($t:ty) => {
                ram.as_slice::<$t>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect()
            };
        }
        Ok(match self.elem_type {
            ElemType::F32 => le!(f32),
            ElemType::F64 => le!(f64),
            ElemType::F16 => le!(f16),
            ElemType::I8 => le!(i8),
            ElemType::U8 => le!(u8),
            ElemType::I16 => le!(i16),
            ElemType::U16 => le!(u16),
            ElemType::I32 => le!(i32),
            ElemType::U32 => le!(u32),
            ElemType::I64 => le!(i64),
            ElemType::U64 => le!(u64),
            ElemType::Bool => ram.as_slice::<bool>()?.iter().map(|&b| b as u8).collect(),
        })
    }

    /// The elements in row-major order as f32: borrowed when the tensor
    /// holds f32 (calibration reads every activation of every sample), else
    /// converted as [`Tensor::to_f32_vec`] does.
    pub fn f32s(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        if self.elem_type == ElemType::F32 {
            if let Ok(s) = self
                .value
                .try_as_plain_ram()
                .and_then(|r| r.as_slice::<f32>())
            {
                return Ok(std::borrow::Cow::Borrowed(s));
            }
        }
        Ok(std::borrow::Cow::Owned(self.to_f32_vec()?))
    }

    /// The elements in row-major order, converted to f32 (bools as 0/1).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let t = self
            .value
            .cast_to_dt(DatumType::F32)
            .with_context(|| format!("converting a {} tensor to f32", self.elem_type))?;
        Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    /// The elements in row-major order, converted to f64 (bools as 0/1).
    /// Exact for every type except 64-bit integers above 2^53.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let t = self
            .value
            .cast_to_dt(DatumType::F64)
            .with_context(|| format!("converting a {} tensor to f64", self.elem_type))?;
        Ok(t.try_as_plain_ram()?.as_slice::<f64>()?.to_vec())
    }
}

/// Reinterprets a quantized tract tensor as its plain storage type.
fn reinterpret(
    t: &tract_onnx::prelude::Tensor,
    to: ElemType,
) -> Result<tract_onnx::prelude::Tensor> {
    let plain = t.try_as_plain_ram()?;
    let bytes = plain.as_bytes();
    let shape = t.shape();
    Ok(match to {
        ElemType::U8 => tract_onnx::prelude::Tensor::from_shape(shape, bytes)?,
        ElemType::I8 => {
            let v: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
            tract_onnx::prelude::Tensor::from_shape(shape, &v)?
        }
        ElemType::I32 => {
            let v: Vec<i32> = bytes
                .chunks_exact(4)
                .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tract_onnx::prelude::Tensor::from_shape(shape, &v)?
        }
        other => bail!("unexpected quantized storage type {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_codes_round_trip() {
        assert_eq!(ElemType::from_onnx(1).unwrap(), ElemType::F32);
        assert_eq!(ElemType::from_onnx(7).unwrap(), ElemType::I64);
        assert!(ElemType::from_onnx(8)
            .unwrap_err()
            .to_string()
            .contains("string"));
        assert!(ElemType::from_onnx(99).is_err());
        for e in ElemType::ALL {
            assert_eq!(ElemType::from_datum(e.to_datum()).unwrap(), e);
            assert_eq!(ElemType::from_onnx(e.onnx_code()).unwrap(), e);
        }
    }

    #[test]
    fn constructors_and_views() {
        let t = Tensor::from_i64(&[2, 2], &[1, 2, 3, 4]).unwrap();
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(t.elem_type(), ElemType::I64);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        let b = Tensor::from_bool(&[3], &[true, false, true]).unwrap();
        assert_eq!(b.to_f32_vec().unwrap(), vec![1.0, 0.0, 1.0]);
        let h = Tensor::from_f32_as_f16(&[2], &[0.5, -2.0]).unwrap();
        assert_eq!(h.elem_type(), ElemType::F16);
        assert_eq!(h.to_f64_vec().unwrap(), vec![0.5, -2.0]);
        assert!(Tensor::from_f32(&[2, 3], &[0.0; 5]).is_err());
        let c = t.cast(ElemType::F32).unwrap();
        assert_eq!(c.elem_type(), ElemType::F32);
        assert_eq!(c.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn quantized_tract_tensors_show_their_storage() {
        use tract_onnx::prelude::QParams;
        let f = tract_onnx::prelude::Tensor::from_shape(&[3], &[0f32, 1.0, -2.0]).unwrap();
        for (dt, want) in [
            (
                DatumType::QU8(QParams::ZpScale {
                    zero_point: 128,
                    scale: 0.5,
                }),
                ElemType::U8,
            ),
            (
                DatumType::QI8(QParams::ZpScale {
                    zero_point: 1,
                    scale: 0.5,
                }),
                ElemType::I8,
            ),
        ] {
            let q = f.cast_to_dt(dt).unwrap().into_owned();
            let t = Tensor::from_tract(q).unwrap();
            assert_eq!(t.elem_type(), want);
            let raw = t.to_f32_vec().unwrap();
            let zp = if want == ElemType::U8 { 128.0 } else { 1.0 };
            assert_eq!(raw, vec![zp, zp + 2.0, zp - 4.0]);
        }
    }

    #[test]
    fn serde_names() {
        assert_eq!(serde_json::to_string(&ElemType::F16).unwrap(), "\"f16\"");
        assert_eq!(ElemType::Bool.to_string(), "bool");
    }
}

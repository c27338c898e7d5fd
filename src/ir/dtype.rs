//! ONNX element types (`TensorProto.DataType`), kept as the raw enum value so
//! that types this build does not know still round-trip.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DataType(pub i32);

impl DataType {
    pub const UNDEFINED: Self = Self(0);
    pub const FLOAT: Self = Self(1);
    pub const UINT8: Self = Self(2);
    pub const INT8: Self = Self(3);
    pub const UINT16: Self = Self(4);
    pub const INT16: Self = Self(5);
    pub const INT32: Self = Self(6);
    pub const INT64: Self = Self(7);
    pub const STRING: Self = Self(8);
    pub const BOOL: Self = Self(9);
    pub const FLOAT16: Self = Self(10);
    pub const DOUBLE: Self = Self(11);
    pub const UINT32: Self = Self(12);
    pub const UINT64: Self = Self(13);
    pub const COMPLEX64: Self = Self(14);
    pub const COMPLEX128: Self = Self(15);
    pub const BFLOAT16: Self = Self(16);

    /// Short lowercase name used in the text form (`f32`, `i64`, ...).
    pub fn short_name(self) -> &'static str {
        match self.0 {
            0 => "undef",
            1 => "f32",
            2 => "u8",
            3 => "i8",
            4 => "u16",
            5 => "i16",
            6 => "i32",
            7 => "i64",
            8 => "string",
            9 => "bool",
            10 => "f16",
            11 => "f64",
            12 => "u32",
            13 => "u64",
            14 => "c64",
            15 => "c128",
            16 => "bf16",
            17 => "f8e4m3fn",
            18 => "f8e4m3fnuz",
            19 => "f8e5m2",
            20 => "f8e5m2fnuz",
            21 => "u4",
            22 => "i4",
            23 => "f4e2m1",
            24 => "f8e8m0",
            25 => "u2",
            26 => "i2",
            27 => "f6e2m3",
            28 => "f6e3m2",
            _ => "unknown",
        }
    }

    /// Bytes per element for fixed-size types; `None` for strings, sub-byte
    /// and unknown types.
    pub fn size_of(self) -> Option<usize> {
        Some(match self.0 {
            2 | 3 | 9 | 17..=20 => 1,
            4 | 5 | 10 | 16 => 2,
            1 | 6 | 12 => 4,
            7 | 11 | 13 | 14 => 8,
            15 => 16,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self.0, 1 | 10 | 11 | 16)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.short_name() {
            "unknown" => write!(f, "dtype{}", self.0),
            name => f.write_str(name),
        }
    }
}

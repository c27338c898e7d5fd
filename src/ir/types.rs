//! Value types (`TypeProto`) and value infos, symbolic dimensions included.

use super::{DataType, Opaque};

#[derive(Clone, PartialEq, Debug)]
pub enum DimValue {
    Known(i64),
    Param(String),
    Unknown,
}

#[derive(Clone, PartialEq, Debug)]
pub struct Dim {
    pub value: DimValue,
    pub denotation: Option<String>,
}

/// `None` shape = rank unknown.
pub type Shape = Option<Vec<Dim>>;

#[derive(Clone, PartialEq, Debug)]
pub enum TypeKind {
    Tensor {
        elem: Option<DataType>,
        shape: Shape,
    },
    SparseTensor {
        elem: Option<DataType>,
        shape: Shape,
    },
    Sequence(Option<Box<TypeInfo>>),
    Map {
        key: Option<DataType>,
        value: Option<Box<TypeInfo>>,
    },
    Optional(Option<Box<TypeInfo>>),
    Opaque {
        domain: Option<String>,
        name: Option<String>,
    },
    /// A `TypeProto` with no value set.
    Unset,
}

#[derive(Clone, PartialEq, Debug)]
pub struct TypeInfo {
    pub kind: TypeKind,
    pub denotation: Option<String>,
}

impl TypeInfo {
    pub fn tensor(elem: DataType, dims: &[i64]) -> TypeInfo {
        let shape = dims
            .iter()
            .map(|&d| Dim {
                value: DimValue::Known(d),
                denotation: None,
            })
            .collect();
        TypeInfo {
            kind: TypeKind::Tensor {
                elem: Some(elem),
                shape: Some(shape),
            },
            denotation: None,
        }
    }

    pub fn tensor_elem(&self) -> Option<DataType> {
        match &self.kind {
            TypeKind::Tensor { elem, .. } => *elem,
            _ => None,
        }
    }

    /// A tensor's dims when its rank is known: each a number, or `None` when
    /// symbolic or unknown (a negative `dim_value`, as paddle writes for a
    /// dynamic dim, is unknown too).
    pub fn dims(&self) -> Option<Vec<Option<i64>>> {
        match &self.kind {
            TypeKind::Tensor {
                shape: Some(dims), ..
            } => Some(
                dims.iter()
                    .map(|d| match d.value {
                        DimValue::Known(v) if v >= 0 => Some(v),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// A tensor's rank, when known (symbolic dims count).
    pub fn rank(&self) -> Option<usize> {
        match &self.kind {
            TypeKind::Tensor {
                shape: Some(dims), ..
            } => Some(dims.len()),
            _ => None,
        }
    }

    /// Fully static tensor dims, if known.
    pub fn static_dims(&self) -> Option<Vec<i64>> {
        self.dims()?.into_iter().collect()
    }
}

/// What `ValueInfoProto` says of a value, besides its name (the name lives
/// on the producing outlet).
#[derive(Clone, PartialEq, Debug, Default)]
pub struct ValueInfo {
    pub ty: Option<TypeInfo>,
    pub doc_string: Option<String>,
    pub metadata_props: Vec<Opaque>,
}

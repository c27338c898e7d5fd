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

    /// Fully static tensor dims, if known.
    pub fn static_dims(&self) -> Option<Vec<i64>> {
        match &self.kind {
            TypeKind::Tensor {
                shape: Some(dims), ..
            } => dims
                .iter()
                .map(|d| match d.value {
                    DimValue::Known(v) => Some(v),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
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

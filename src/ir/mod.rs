//! The intermediate representation: a model, its graphs on petgraph, tensors,
//! types and attributes; the verifier, the rewrite API and the text form.
//!
//! Invariant: nothing here knows protobuf, tract or files.

mod attr;
pub mod build;
mod constant;
pub mod diff;
mod dtype;
mod graph;
pub mod memo;
mod model;
pub mod op_kinds;
mod opaque;
pub mod parse;
pub mod patch;
pub mod rank;
pub mod shape_value;
mod tensor;
pub mod text;
mod types;
pub mod verify;

pub use attr::{AttrValue, Attribute};
pub use constant::constant_value;
pub use dtype::DataType;
pub use graph::{
    Graph, GraphInput, GraphOutput, Node, NodeId, NodeKind, Operator, Outlet, Value, Wire,
};
pub use model::{Model, ModelStats, OpsetId};
pub use opaque::Opaque;
pub use patch::Patch;
pub use tensor::{Tensor, TensorData};
pub use types::{Dim, DimValue, Shape, TypeInfo, TypeKind, ValueInfo};

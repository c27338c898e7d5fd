//! Node attributes. Graph-valued attributes hold IR graphs, so subgraphs of
//! If/Loop/Scan are reachable by passes and the verifier.

use super::{Graph, Opaque, Tensor, TypeInfo};
use bytes::Bytes;

#[derive(Clone, Debug)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(Bytes),
    Tensor(Tensor),
    Graph(Box<Graph>),
    SparseTensor(Opaque),
    Type(TypeInfo),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Bytes>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
    SparseTensors(Vec<Opaque>),
    Types(Vec<TypeInfo>),
    /// No value: a reference (`ref_attr_name`) inside a function body.
    None,
}

#[derive(Clone, Debug)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
    /// `AttributeProto.type` as written (kept for lossless output).
    pub declared_type: Option<i32>,
    pub ref_attr_name: Option<String>,
    pub doc_string: Option<String>,
}

impl Attribute {
    pub fn new(name: &str, value: AttrValue) -> Attribute {
        Attribute {
            name: name.to_string(),
            value,
            declared_type: None,
            ref_attr_name: None,
            doc_string: None,
        }
    }

    pub fn int(name: &str, v: i64) -> Attribute {
        Attribute::new(name, AttrValue::Int(v))
    }

    pub fn ints(name: &str, v: &[i64]) -> Attribute {
        Attribute::new(name, AttrValue::Ints(v.to_vec()))
    }

    pub fn float(name: &str, v: f32) -> Attribute {
        Attribute::new(name, AttrValue::Float(v))
    }

    /// Subgraphs held by this attribute, in order.
    pub fn graphs(&self) -> &[Graph] {
        match &self.value {
            AttrValue::Graph(g) => std::slice::from_ref(g.as_ref()),
            AttrValue::Graphs(gs) => gs,
            _ => &[],
        }
    }

    pub fn graphs_mut(&mut self) -> &mut [Graph] {
        match &mut self.value {
            AttrValue::Graph(g) => std::slice::from_mut(g.as_mut()),
            AttrValue::Graphs(gs) => gs,
            _ => &mut [],
        }
    }
}

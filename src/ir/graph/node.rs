//! What a graph is made of: operator, input, initializer and capture
//! nodes ([`Node`], [`NodeKind`], [`Operator`]), the values they produce
//! ([`Value`], [`Outlet`]) and the wires between them ([`Wire`]).

use super::NodeId;
use crate::ir::{AttrValue, Attribute, Opaque, Tensor, ValueInfo};

/// One output of one node: a tensor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Outlet {
    pub node: NodeId,
    pub slot: usize,
}

impl Outlet {
    pub fn new(node: NodeId, slot: usize) -> Outlet {
        Outlet { node, slot }
    }
}

/// A use of an outlet: the producer's output slot feeds the consumer's input slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Wire {
    pub from: usize,
    pub to: usize,
}

/// A produced value: its name and what `value_info` says of it.
#[derive(Clone, PartialEq, Debug)]
pub struct Value {
    /// Empty for an omitted optional output.
    pub name: String,
    pub info: Option<ValueInfo>,
    /// Position in the file's `value_info` list (new entries sort last).
    pub info_rank: u32,
}

impl Value {
    pub fn named(name: impl Into<String>) -> Value {
        Value {
            name: name.into(),
            info: None,
            info_rank: u32::MAX,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Operator {
    pub op_type: String,
    /// `None` or `""`: the default ONNX domain.
    pub domain: Option<String>,
    pub overload: Option<String>,
    pub attributes: Vec<Attribute>,
    /// Declared input slots, omitted optional inputs included.
    pub arity: usize,
    pub doc_string: Option<String>,
    pub metadata_props: Vec<Opaque>,
    pub device_configurations: Vec<Opaque>,
}

impl Operator {
    pub fn new(op_type: &str, arity: usize, attributes: Vec<Attribute>) -> Operator {
        Operator {
            op_type: op_type.to_string(),
            domain: None,
            overload: None,
            attributes,
            arity,
            doc_string: None,
            metadata_props: vec![],
            device_configurations: vec![],
        }
    }

    pub fn is_default_domain(&self) -> bool {
        matches!(self.domain.as_deref(), None | Some("") | Some("ai.onnx"))
    }

    /// True for the ONNX-domain operator `op_type`.
    pub fn is(&self, op_type: &str) -> bool {
        self.op_type == op_type && self.is_default_domain()
    }

    /// An ONNX-domain operator whose output is random: never folded, never
    /// merged with its twin.
    pub fn is_random(&self) -> bool {
        const RANDOM: &[&str] = &[
            "RandomNormal",
            "RandomNormalLike",
            "RandomUniform",
            "RandomUniformLike",
            "Multinomial",
            "Bernoulli",
        ];
        self.is_default_domain() && RANDOM.contains(&self.op_type.as_str())
    }

    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// An `INT` attribute, or `default` when absent.
    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        match self.attr(name).map(|a| &a.value) {
            Some(AttrValue::Int(v)) => *v,
            _ => default,
        }
    }

    /// A `FLOAT` attribute, or `default` when absent.
    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        match self.attr(name).map(|a| &a.value) {
            Some(AttrValue::Float(v)) => *v,
            _ => default,
        }
    }

    /// An `INTS` attribute, if present.
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.attr(name).map(|a| &a.value) {
            Some(AttrValue::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// Sets (replaces or adds) an attribute.
    pub fn set_attr(&mut self, attr: Attribute) {
        match self.attributes.iter_mut().find(|a| a.name == attr.name) {
            Some(a) => *a = attr,
            None => self.attributes.push(attr),
        }
    }

    pub fn has_subgraphs(&self) -> bool {
        self.attributes.iter().any(|a| !a.graphs().is_empty())
    }
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A graph input that is not an initializer.
    Input,
    Initializer(Tensor),
    /// A `sparse_initializer`, carried through untouched.
    SparseInitializer(Opaque),
    /// A value of an enclosing graph, used by this subgraph.
    Capture,
    Op(Operator),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: Option<String>,
    pub kind: NodeKind,
    pub outputs: Vec<Value>,
}

impl Node {
    pub fn op(name: Option<String>, op: Operator, outputs: Vec<Value>) -> Node {
        Node {
            name,
            kind: NodeKind::Op(op),
            outputs,
        }
    }

    pub fn as_op(&self) -> Option<&Operator> {
        match &self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }

    pub fn as_op_mut(&mut self) -> Option<&mut Operator> {
        match &mut self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }

    /// A readable label for messages: the node name, else its first output.
    pub fn label(&self) -> String {
        match (&self.name, &self.kind) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, NodeKind::Op(op)) => format!(
                "{}({})",
                op.op_type,
                self.outputs.first().map_or("", |v| &v.name)
            ),
            _ => self
                .outputs
                .first()
                .map_or(String::new(), |v| v.name.clone()),
        }
    }
}

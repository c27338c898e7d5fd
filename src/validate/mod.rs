//! Validation of the user's model against ONNX's rules, before any pass runs.
//!
//! The IR verifier (`ir::verify`) checks onnx-opt's own invariants after
//! every pass: a failure there is our bug. This module checks what the *file*
//! claims, against what ONNX's operator schemas allow: a failure here is the
//! user's model at fault, reported as such with the node and the rule, so a
//! MatMul with 52 inputs or a Flatten with `axis=100` is refused on import
//! instead of reaching tract (which may panic on it) or a pass.
//!
//! What is checked, in every graph and subgraph:
//! - tensors (initializers, `Constant` values, tensor attributes): a known
//!   element type, dims >= 0 whose product fits [`MAX_ELEMENTS`], and a payload
//!   that holds exactly that many elements of that type (no raw bytes in a
//!   STRING tensor);
//! - graph inputs: every declared dim and their product within [`MAX_ELEMENTS`],
//!   rank within [`MAX_RANK`];
//! - the ai.onnx opset: a version of at least 1;
//! - default-domain operators, against the schema the model's opset selects
//!   ([`schema`], a table generated from the pinned onnx wheel by
//!   tools/opschema/gen.py), as onnx's checker judges them: the operator
//!   exists at that opset and is not deprecated there; arity, required
//!   inputs and outputs present; attributes it defines, of their kind, the
//!   required ones given ([`rules`]); element types its type constraints
//!   allow, one type per type variable, and declared output types equal to
//!   the ones the schema makes ([`types`]); dims that broadcast, MatMul
//!   inner dims that agree, and declared shapes equal to the ones the inputs
//!   make ([`dims`]); then the ranges of [`rules`]
//!   (axes within rank, positive strides, kernels and dilations, If
//!   branches, constant shapes that size an allocation, ...). Ranks come
//!   from declared types, a light propagation through rank-preserving
//!   operators ([`ranks`]) and the dims carried forward.
//!
//! Operators of other domains are skipped: refusing what we do not know
//! would refuse valid models. An element type, dim or rank that is not
//! known is never refused either.

mod dims;
mod ranks;
mod rules;
pub mod schema;
mod schema_table;
mod types;

use crate::ir::{
    AttrValue, DataType, Graph, Model, NodeKind, Operator, Tensor, TensorData, TypeKind,
};
use std::fmt;

/// Most elements a tensor may have (2^31 - 1: 8 GiB as f32). Every number from
/// the file that sizes an allocation goes through this bound; protobuf caps a
/// model file at 2 GiB anyway, so only a malformed shape reaches it.
pub const MAX_ELEMENTS: u64 = i32::MAX as u64;

/// Most elements of a tensor made at run time from a constant shape
/// (ConstantOfShape, Expand, Tile): 2^28, 1 GiB as f32. Such a tensor is
/// allocated by every run and every constant fold; a shape of [2^31] in a
/// hostile file would otherwise take 8 GiB each time.
pub const MAX_COMPUTED_ELEMENTS: u64 = 1 << 28;

/// Highest rank accepted (ONNX sets none; no real model comes near, and an
/// axis beyond it is refused even where a value's rank is unknown).
pub const MAX_RANK: usize = 64;

/// The user's model breaks a rule of ONNX: which node (or graph input,
/// initializer), and which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What is at fault: `node 'conv1' (Conv)`, `initializer 'w'`, ...
    pub at: String,
    pub rule: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the input model is not valid ONNX: {}: {}",
            self.at, self.rule
        )
    }
}

impl std::error::Error for Invalid {}

/// Checks the model against ONNX's rules; the first broken rule is the error.
pub fn validate(model: &Model) -> Result<(), Invalid> {
    let opset = match model.opset("") {
        Some(v) if v < 1 => {
            return Err(Invalid {
                at: "opset_import".into(),
                rule: format!("ai.onnx version {v}: opset versions start at 1"),
            })
        }
        Some(v) => Some(v),
        // Before IR 3 a model imported no opsets and meant ai.onnx's first.
        None if model.opset_import.is_empty() && model.ir_version.is_some_and(|v| v < 3) => Some(1),
        // From IR 3 a model says which opsets it uses (onnx's checker).
        None if model.opset_import.is_empty() => {
            return Err(Invalid {
                at: "opset_import".into(),
                rule: "it is empty: a model of IR version 3 or later names the opsets it uses"
                    .into(),
            })
        }
        None => None,
    };
    // The model's inputs are fed: each tensor needs an element type (onnx's
    // checker requires the field, and inference refuses 0 where it is read).
    for input in &model.graph.inputs {
        if let Some(TypeKind::Tensor { elem, .. }) = input.info.ty.as_ref().map(|t| &t.kind) {
            if elem.is_none_or(|e| e.0 == 0) {
                return Err(Invalid {
                    at: format!(
                        "graph input '{}'",
                        model.graph.node(input.node).outputs[0].name
                    ),
                    rule: "its tensor type has no element type".into(),
                });
            }
        }
    }
    validate_graph(&model.graph, opset, &[])
}

/// What the enclosing graph knows of a value a subgraph captures.
struct Captured {
    ty: Option<schema::TypeCode>,
    dims: Option<dims::Dims>,
    rank: Option<usize>,
    /// A small integer constant's values (a shape, axes, pads).
    values: Option<Vec<i64>>,
}

/// One graph; `captures` holds what is known of the values it captures
/// from the enclosing graph, in capture order.
fn validate_graph(g: &Graph, opset: Option<i64>, captures: &[Captured]) -> Result<(), Invalid> {
    for input in &g.inputs {
        let name = &g.node(input.node).outputs[0].name;
        if let Some(ty) = &input.info.ty {
            declared_shape(&ty.kind).map_err(|rule| Invalid {
                at: format!("graph input '{name}'"),
                rule,
            })?;
        }
    }
    let order = g.topo_order().map_err(|e| Invalid {
        at: format!("graph '{}'", g.name.as_deref().unwrap_or("")),
        rule: format!("{e:#}"),
    })?;
    let mut ranks = ranks::Ranks::default();
    let codes: Vec<_> = captures.iter().map(|c| c.ty).collect();
    let mut types = types::Types::with_captures(g, &codes);
    // A captured value has the dims it has outside: a branch adding a
    // [2, 8] capture to a [4, 8] declaration is refused as onnx refuses it.
    let mut shapes = dims::Shapes::default();
    for (&id, c) in g.captures.iter().zip(captures) {
        let outlet = crate::ir::Outlet::new(id, 0);
        if let Some(d) = &c.dims {
            shapes.learn(outlet, d.clone());
            ranks.learn(outlet, d.len());
        }
        if let Some(r) = c.rank {
            ranks.learn(outlet, r);
        }
        if let Some(v) = &c.values {
            ranks.capture(outlet, v.clone());
        }
    }
    for id in order {
        let node = g.node(id);
        match &node.kind {
            NodeKind::Initializer(t) => tensor(t).map_err(|rule| Invalid {
                at: format!("initializer '{}'", node.outputs[0].name),
                rule,
            })?,
            NodeKind::Op(op) => {
                // The node's name, else its first output's (unnamed nodes are common).
                let name = match &node.name {
                    Some(n) if !n.is_empty() => n.as_str(),
                    _ => node.outputs.first().map_or("", |v| v.name.as_str()),
                };
                let at = || format!("node '{name}' ({})", op.op_type);
                for v in node.outputs.iter() {
                    if let Some(ty) = v.info.as_ref().and_then(|i| i.ty.as_ref()) {
                        declared_shape(&ty.kind).map_err(|rule| Invalid {
                            at: at(),
                            rule: format!("the declared type of {}: {rule}", v.name),
                        })?;
                    }
                }
                // Each subgraph takes its share of the node's implicit
                // inputs, in the order of its graph attributes.
                let mut outer = g.implicit_inputs(id).into_iter().map(|o| Captured {
                    ty: types.of(g, o),
                    dims: shapes.of(g, o),
                    rank: ranks.of(g, o),
                    values: ranks.small_values(g, o),
                });
                for attr in &op.attributes {
                    attribute_tensors(&attr.value).map_err(|rule| Invalid {
                        at: at(),
                        rule: format!("attribute {}: {rule}", attr.name),
                    })?;
                    for sub in attr.graphs() {
                        let seen: Vec<_> = outer.by_ref().take(sub.captures.len()).collect();
                        validate_graph(sub, opset, &seen).map_err(|e| Invalid {
                            at: format!("{} > {}", at(), e.at),
                            rule: e.rule,
                        })?;
                    }
                }
                if op.is_default_domain() {
                    let s = default_schema(op, opset).map_err(|rule| Invalid { at: at(), rule })?;
                    rules::check(g, id, op, s, opset.unwrap_or(0), &ranks)
                        .and_then(|()| types.check(g, id, op, s))
                        .and_then(|()| shapes.check(g, id, op, s))
                        .map_err(|rule| Invalid { at: at(), rule })?;
                }
                ranks.propagate(g, id, op);
                for k in 0..node.outputs.len() {
                    let outlet = crate::ir::Outlet::new(id, k);
                    if let Some(d) = shapes.of(g, outlet) {
                        ranks.learn(outlet, d.len());
                    }
                }
            }
            _ => {}
        }
    }
    graph_output_types(g)
}

/// A graph output that is an initializer or a graph input has that value's
/// element type; its declaration may not say another (onnx's checker
/// refuses it; an operator's outputs are checked against its schema).
fn graph_output_types(g: &Graph) -> Result<(), Invalid> {
    for out in &g.outputs {
        let Some(declared) = out.info.ty.as_ref().and_then(schema::type_code) else {
            continue;
        };
        let actual = match &g.node(out.outlet.node).kind {
            NodeKind::Initializer(t) => schema::tensor_code(i64::from(t.dtype.0)),
            NodeKind::Input => g
                .inputs
                .iter()
                .find(|i| i.node == out.outlet.node)
                .and_then(|i| i.info.ty.as_ref())
                .and_then(schema::type_code),
            _ => None,
        };
        if let Some(actual) = actual.filter(|&a| a != declared) {
            let name = g.outlet_name(out.outlet);
            return Err(Invalid {
                at: format!("graph output '{name}'"),
                rule: format!(
                    "declared {}, but the value is {}",
                    schema::type_name(declared),
                    schema::type_name(actual)
                ),
            });
        }
    }
    Ok(())
}

/// The schema a default-domain operator has at the model's opset: an
/// operator ONNX does not define, or not yet at that opset, or deprecated
/// there, is refused, as onnx's checker refuses it.
fn default_schema(op: &Operator, opset: Option<i64>) -> Result<&'static schema::Schema, String> {
    let Some(opset) = opset else {
        return Err("the model imports no ai.onnx opset for this operator".into());
    };
    match schema::lookup(&op.op_type, opset) {
        schema::Lookup::Found(s) => Ok(s),
        schema::Lookup::Deprecated(s) => Err(format!(
            "{} is deprecated from opset {} (the model's is {opset})",
            op.op_type, s.since
        )),
        schema::Lookup::Later { since } => Err(format!(
            "{} does not exist at opset {opset}: ONNX defines it from opset {since}",
            op.op_type
        )),
        schema::Lookup::Unknown => Err(format!(
            "ai.onnx has no operator {} (onnx's schemas up to opset {})",
            op.op_type,
            schema::LATEST_OPSET
        )),
    }
}

/// A declared type: an element type ONNX defines (0 says "unknown"), rank
/// and dims within bounds (negative dims are how some exporters write
/// "dynamic"; they are left alone).
fn declared_shape(kind: &TypeKind) -> Result<(), String> {
    if let TypeKind::Tensor { elem: Some(e), .. } = kind {
        if !(0..=schema::MAX_ELEM).contains(&e.0) {
            return Err(format!("element type {} is not one ONNX defines", e.0));
        }
    }
    let TypeKind::Tensor {
        shape: Some(dims), ..
    } = kind
    else {
        return Ok(());
    };
    if dims.len() > MAX_RANK {
        return Err(format!("rank {} is above {MAX_RANK}", dims.len()));
    }
    // -1 is how some exporters say "unknown"; below it, nothing.
    if let Some(v) = dims.iter().find_map(|d| match d.value {
        crate::ir::DimValue::Known(v) if v < -1 => Some(v),
        _ => None,
    }) {
        return Err(format!("dim {v}: a dim is >= 0 (or -1 for unknown)"));
    }
    let known = dims.iter().filter_map(|d| match d.value {
        crate::ir::DimValue::Known(v) if v > 0 => Some(v),
        _ => None,
    });
    element_count(known).map(|_| ())
}

/// The product of dims, checked: each >= 0 and the product within
/// [`MAX_ELEMENTS`].
pub fn element_count(dims: impl IntoIterator<Item = i64>) -> Result<u64, String> {
    element_count_within(dims, MAX_ELEMENTS)
}

/// [`element_count`] against another limit.
pub fn element_count_within(
    dims: impl IntoIterator<Item = i64>,
    limit: u64,
) -> Result<u64, String> {
    let mut n: u64 = 1;
    let mut dims_seen = vec![];
    for d in dims {
        dims_seen.push(d);
        let d = u64::try_from(d).map_err(|_| format!("negative dim {d}"))?;
        n = n.saturating_mul(d);
    }
    if n > limit {
        return Err(format!(
            "dims {dims_seen:?} make more than {limit} elements (onnx-opt's limit)"
        ));
    }
    Ok(n)
}

fn attribute_tensors(value: &AttrValue) -> Result<(), String> {
    match value {
        AttrValue::Tensor(t) => tensor(t),
        AttrValue::Tensors(ts) => ts.iter().try_for_each(tensor),
        _ => Ok(()),
    }
}

/// A tensor's type, dims and payload agree.
pub fn tensor(t: &Tensor) -> Result<(), String> {
    let dt = t.dtype;
    if !(1..=23).contains(&dt.0) {
        return Err(format!("unknown element type {}", dt.0));
    }
    if t.dims.len() > MAX_RANK {
        return Err(format!("rank {} is above {MAX_RANK}", t.dims.len()));
    }
    let n = element_count(t.dims.iter().copied())?;
    let (held, per_element): (u64, f64) = match (&t.data, dt) {
        (TensorData::String(v), DataType::STRING) => (v.len() as u64, 1.0),
        (TensorData::String(v), _) if v.is_empty() => (0, 1.0),
        (TensorData::String(_), _) => return Err(format!("a {dt} tensor holds strings")),
        (TensorData::Raw(b), DataType::STRING) if !b.is_empty() => {
            return Err("a STRING tensor holds raw bytes (strings have no raw form)".into())
        }
        (TensorData::Raw(b), _) => match dt.size_of() {
            Some(s) => (b.len() as u64, s as f64),
            // 4-bit types: two elements a byte.
            None => (b.len() as u64, 0.5),
        },
        // Complex numbers take two entries of float_data / double_data.
        (TensorData::Float(v), DataType::FLOAT) => (v.len() as u64, 1.0),
        (TensorData::Float(v), DataType::COMPLEX64) => (v.len() as u64, 2.0),
        (TensorData::Double(v), DataType::DOUBLE) => (v.len() as u64, 1.0),
        (TensorData::Double(v), DataType::COMPLEX128) => (v.len() as u64, 2.0),
        (TensorData::Int64(v), DataType::INT64) => (v.len() as u64, 1.0),
        (TensorData::Uint64(v), DataType::UINT32 | DataType::UINT64) => (v.len() as u64, 1.0),
        (TensorData::Int32(v), _) if matches!(dt.0, 21..=23) => (v.len() as u64, 0.5),
        (TensorData::Int32(v), _) if matches!(dt.0, 2..=6 | 9 | 10 | 16..=20) => {
            (v.len() as u64, 1.0)
        }
        (data, _) if byte_len_is_zero(data) => (0, 1.0),
        _ => return Err(format!("its data is stored in a field {dt} does not use")),
    };
    let expected = (n as f64 * per_element).ceil() as u64;
    if held != expected {
        let unit = if matches!(t.data, TensorData::Raw(_)) {
            "bytes"
        } else {
            "entries"
        };
        return Err(format!(
            "holds {held} {unit} of data but its type {dt} and dims {:?} need {expected}",
            t.dims
        ));
    }
    Ok(())
}

fn byte_len_is_zero(data: &TensorData) -> bool {
    match data {
        TensorData::Raw(b) => b.is_empty(),
        TensorData::Float(v) => v.is_empty(),
        TensorData::Int32(v) => v.is_empty(),
        TensorData::Int64(v) => v.is_empty(),
        TensorData::Double(v) => v.is_empty(),
        TensorData::Uint64(v) => v.is_empty(),
        TensorData::String(v) => v.is_empty(),
    }
}

#[cfg(test)]
mod tests;

//! Structure-aware mutations of a model's protobuf, for fuzzing (`crate::fuzz`).
//! They live here because only `onnx` sees protobuf types: each one edits the
//! decoded `ModelProto` the way a careless exporter or an attacker would
//! (arity, attributes, dims, element types, payloads, subgraphs, names,
//! opsets) and encodes it again, so the result is well-formed protobuf that
//! the importer, validation and the passes must handle.

use super::proto as pb;
use crate::fuzz::{Rng, INTERESTING};
use prost::Message;

/// One structural mutation of `bytes`; `None` when they do not decode.
pub fn mutate_proto(bytes: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut m = pb::ModelProto::decode(bytes).ok()?;
    if rng.below(16) == 0 {
        for o in &mut m.opset_import {
            o.version = Some(*rng.pick(&[1, 7, 11, 13, 99, -1, 0]));
        }
        return Some(m.encode_to_vec());
    }
    let graph = m.graph.get_or_insert_with(Default::default);
    // Mostly the main graph; sometimes a subgraph (If/Loop/Scan bodies).
    let in_subgraph = rng.below(4) == 0;
    match pick_subgraph(graph, rng).filter(|_| in_subgraph) {
        Some(sub) => mutate_graph(sub, rng),
        None => mutate_graph(graph, rng),
    }
    Some(m.encode_to_vec())
}

fn mutate_graph(g: &mut pb::GraphProto, rng: &mut Rng) {
    match rng.below(11) {
        0 => arity(g, rng),
        1 | 2 => attribute(g, rng),
        3 => input_dims(g, rng),
        4 => tensor(g, rng),
        5 => subgraph(g, rng),
        6 => op_type(g, rng),
        7 => rewire(g, rng),
        8 => outputs(g, rng),
        9 => {
            if !g.node.is_empty() {
                let k = rng.below(g.node.len());
                g.node.remove(k);
            }
        }
        _ => constant(g, rng),
    }
}

fn pick_subgraph<'g>(g: &'g mut pb::GraphProto, rng: &mut Rng) -> Option<&'g mut pb::GraphProto> {
    let mut subs: Vec<&mut pb::GraphProto> = g
        .node
        .iter_mut()
        .flat_map(|n| n.attribute.iter_mut())
        .flat_map(|a| a.g.as_mut().into_iter().chain(a.graphs.iter_mut()))
        .collect();
    if subs.is_empty() {
        return None;
    }
    let k = rng.below(subs.len());
    Some(subs.swap_remove(k))
}

fn some_node<'g>(g: &'g mut pb::GraphProto, rng: &mut Rng) -> Option<&'g mut pb::NodeProto> {
    if g.node.is_empty() {
        return None;
    }
    let k = rng.below(g.node.len());
    g.node.get_mut(k)
}

/// A MatMul with 52 inputs, a Conv with none, an omitted input in the middle.
fn arity(g: &mut pb::GraphProto, rng: &mut Rng) {
    let Some(n) = some_node(g, rng) else { return };
    match rng.below(3) {
        0 if !n.input.is_empty() => {
            let extra = *rng.pick(&[1, 2, 50]);
            let name = n.input[0].clone();
            n.input.extend(std::iter::repeat_n(name, extra));
        }
        1 => n.input.truncate(rng.below(n.input.len().max(1))),
        _ if !n.input.is_empty() => {
            let k = rng.below(n.input.len());
            n.input[k] = String::new();
        }
        _ => {}
    }
}

const ATTR_NAMES: &[&str] = &[
    "axis",
    "axes",
    "strides",
    "kernel_shape",
    "dilations",
    "pads",
    "perm",
    "group",
    "keepdims",
    "to",
    "transA",
    "blocksize",
    "epsilon",
    "alpha",
];

/// An attribute set to an extreme value, of the wrong kind, dropped or added.
fn attribute(g: &mut pb::GraphProto, rng: &mut Rng) {
    use pb::attribute_proto::AttributeType as T;
    let Some(n) = some_node(g, rng) else { return };
    if n.attribute.is_empty() || rng.below(4) == 0 {
        let name = rng.pick(ATTR_NAMES).to_string();
        n.attribute.push(pb::AttributeProto {
            name: Some(name),
            r#type: Some(T::Int as i32),
            i: Some(*rng.pick(INTERESTING)),
            ..Default::default()
        });
        return;
    }
    let k = rng.below(n.attribute.len());
    let a = &mut n.attribute[k];
    match rng.below(6) {
        0 => {
            n.attribute.remove(k);
        }
        1 => {
            a.r#type = Some(T::Float as i32);
            a.f = Some(f32::from_bits(rng.below(u32::MAX as usize) as u32));
            a.i = None;
            a.ints.clear();
        }
        2 if !a.ints.is_empty() => a.ints.clear(),
        3 if !a.ints.is_empty() => {
            let j = rng.below(a.ints.len());
            a.ints[j] = *rng.pick(INTERESTING);
        }
        4 => {
            a.ints.push(*rng.pick(INTERESTING));
        }
        _ => a.i = Some(*rng.pick(INTERESTING)),
    }
}

/// A graph input dim of 2^40, 0 or -7; a rank change.
fn input_dims(g: &mut pb::GraphProto, rng: &mut Rng) {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value as V;
    if g.input.is_empty() {
        return;
    }
    let k = rng.below(g.input.len());
    let Some(V::TensorType(t)) = g.input[k].r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        return;
    };
    if rng.below(5) == 0 {
        t.elem_type = Some(rng.below(25) as i32);
        return;
    }
    let shape = t.shape.get_or_insert_with(Default::default);
    if shape.dim.is_empty() || rng.below(4) == 0 {
        shape.dim.push(pb::tensor_shape_proto::Dimension {
            value: Some(D::DimValue(*rng.pick(INTERESTING))),
            ..Default::default()
        });
    } else {
        let j = rng.below(shape.dim.len());
        shape.dim[j].value = Some(D::DimValue(*rng.pick(INTERESTING)));
    }
}

/// An initializer whose dims, element type or payload disagree.
fn tensor(g: &mut pb::GraphProto, rng: &mut Rng) {
    if g.initializer.is_empty() {
        return;
    }
    let k = rng.below(g.initializer.len());
    mutate_tensor(&mut g.initializer[k], rng);
}

fn mutate_tensor(t: &mut pb::TensorProto, rng: &mut Rng) {
    match rng.below(5) {
        0 if !t.dims.is_empty() => {
            let j = rng.below(t.dims.len());
            t.dims[j] = *rng.pick(INTERESTING);
        }
        1 => t.data_type = Some(rng.below(25) as i32),
        2 => {
            if let Some(raw) = &t.raw_data {
                let cut = rng.below(raw.len().max(1));
                t.raw_data = Some(raw.slice(..cut));
            } else {
                t.float_data.truncate(t.float_data.len() / 2);
                t.int64_data.truncate(t.int64_data.len() / 2);
            }
        }
        3 => t.data_type = Some(8), // STRING over raw bytes
        _ => t.dims.push(*rng.pick(INTERESTING)),
    }
}

/// A Constant whose tensor claims 2^31 elements with no data, and kin.
fn constant(g: &mut pb::GraphProto, rng: &mut Rng) {
    let constants: Vec<usize> = (0..g.node.len())
        .filter(|&i| g.node[i].op_type.as_deref() == Some("Constant"))
        .collect();
    if constants.is_empty() {
        return;
    }
    let n = &mut g.node[*rng.pick(&constants)];
    if let Some(t) = n.attribute.iter_mut().find_map(|a| a.t.as_mut()) {
        if rng.below(2) == 0 {
            t.dims = vec![*rng.pick(INTERESTING)];
            t.raw_data = Some(Default::default());
        } else {
            mutate_tensor(t, rng);
        }
    }
}

/// An If whose else branch is emptied, a branch dropped, a body cleared.
fn subgraph(g: &mut pb::GraphProto, rng: &mut Rng) {
    let Some(n) = some_node(g, rng) else { return };
    let with_graph: Vec<usize> = (0..n.attribute.len())
        .filter(|&i| n.attribute[i].g.is_some())
        .collect();
    if with_graph.is_empty() {
        return;
    }
    let k = *rng.pick(&with_graph);
    match rng.below(3) {
        0 => {
            n.attribute.remove(k);
        }
        1 => n.attribute[k].g = Some(Default::default()),
        _ => {
            if let Some(sub) = n.attribute[k].g.as_mut() {
                sub.output.clear();
            }
        }
    }
}

const OP_TYPES: &[&str] = &[
    "Flatten",
    "ReduceMean",
    "MatMul",
    "Conv",
    "MaxPool",
    "If",
    "ConstantOfShape",
    "Expand",
    "Transpose",
    "Concat",
    "Softmax",
    "Gemm",
    "Reshape",
    "Relu",
    "Split",
    "NoSuchOp",
];

fn op_type(g: &mut pb::GraphProto, rng: &mut Rng) {
    let Some(n) = some_node(g, rng) else { return };
    n.op_type = Some(rng.pick(OP_TYPES).to_string());
}

/// An input pointing at an undefined name, at a later value (a cycle), or at itself.
fn rewire(g: &mut pb::GraphProto, rng: &mut Rng) {
    let outputs: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).collect();
    let Some(n) = some_node(g, rng) else { return };
    if n.input.is_empty() {
        return;
    }
    let k = rng.below(n.input.len());
    n.input[k] = match rng.below(3) {
        0 => "no_such_value".into(),
        1 if !outputs.is_empty() => rng.pick(&outputs).clone(),
        _ => n.output.first().cloned().unwrap_or_default(),
    };
}

/// Outputs added, dropped or renamed to an existing name (SSA broken).
fn outputs(g: &mut pb::GraphProto, rng: &mut Rng) {
    let names: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).collect();
    let Some(n) = some_node(g, rng) else { return };
    match rng.below(3) {
        0 => n.output.push(format!("extra{}", rng.below(1000))),
        1 => n.output.truncate(n.output.len().saturating_sub(1)),
        _ if !n.output.is_empty() && !names.is_empty() => n.output[0] = rng.pick(&names).clone(),
        _ => {}
    }
}

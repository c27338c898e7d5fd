//! The bridge from IR models to the tract runtime: encode, load, run. Passes
//! that evaluate or calibrate and the CLI's verify/bench all go through here.

use crate::ir::{
    DataType, Dim, DimValue, Graph, GraphInput, GraphOutput, Model, Node, NodeId, NodeKind, Outlet,
    Tensor, TensorData, TypeInfo, TypeKind, Value, ValueInfo,
};
use crate::runtime::{self, InputShapes, Sample};
use anyhow::{Context, Result};
use std::collections::HashSet;

/// Loads a model into tract with `extra_outputs` (intermediate values) exposed.
pub fn load(
    model: &Model,
    shapes: &InputShapes,
    extra_outputs: &[String],
) -> Result<runtime::Model> {
    let bytes = crate::onnx::encode(&for_tract(model))?;
    runtime::Model::load(&bytes, shapes, extra_outputs)
}

/// ONNX allows several nodes of one name (silero's openvino export has 98
/// `F0::anon`); tract does not, so duplicates get a `#k` suffix. Only the
/// copy handed to tract changes.
fn for_tract(model: &Model) -> Model {
    let mut m = model.clone();
    let mut seen = HashSet::new();
    let _ = m.graph.visit_graphs_mut(&mut |g| {
        let ids: Vec<NodeId> = g.node_ids().collect();
        for id in ids {
            if let Some(name) = g.node_mut(id).name.as_mut().filter(|n| !n.is_empty()) {
                let base = name.clone();
                let mut k = 1;
                while !seen.insert(name.clone()) {
                    *name = format!("{base}#{k}");
                    k += 1;
                }
            }
        }
        Ok(())
    });
    m
}

/// Evaluates one operator of `g` whose inputs are the given constants (one
/// per declared slot, `None` for omitted ones); returns one tensor per
/// output (`None` for omitted outputs).
pub fn evaluate_node(
    model: &Model,
    g: &Graph,
    id: NodeId,
    inputs: &[Option<&Tensor>],
) -> Result<Vec<Option<Tensor>>> {
    let node = g.node(id);
    let mut mini = Graph::default();
    let op_node = mini.add_node(Node {
        name: node.name.clone(),
        kind: node.kind.clone(),
        outputs: node
            .outputs
            .iter()
            .enumerate()
            .map(|(k, v)| {
                Value::named(if v.name.is_empty() {
                    String::new()
                } else {
                    format!("out{k}")
                })
            })
            .collect(),
    });
    for (slot, t) in inputs.iter().enumerate() {
        if let Some(t) = t {
            let c = mini.add_node(Node {
                name: None,
                kind: NodeKind::Initializer((*t).clone()),
                outputs: vec![Value::named(format!("in{slot}"))],
            });
            mini.connect(Outlet::new(c, 0), op_node, slot);
        }
    }
    for (k, v) in node.outputs.iter().enumerate() {
        if !v.name.is_empty() {
            mini.outputs.push(GraphOutput {
                outlet: Outlet::new(op_node, k),
                info: ValueInfo::default(),
            });
        }
    }
    let mini_model = Model {
        graph: mini,
        ..model.clone_header()
    };
    let rt = load(&mini_model, &InputShapes::new(), &[])?;
    let outputs = rt.run(&Sample::new("constants"))?;
    let mut values = outputs.iter().map(|(_, t)| from_runtime(t));
    node.outputs
        .iter()
        .map(|v| {
            if v.name.is_empty() {
                Ok(None)
            } else {
                values.next().context("missing output")?.map(Some)
            }
        })
        .collect()
}

/// A runtime tensor as an IR tensor (little-endian raw data).
pub fn from_runtime(t: &runtime::Tensor) -> Result<Tensor> {
    let dims = t.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::new(
        DataType(t.elem_type().onnx_code()),
        dims,
        TensorData::Raw(t.to_le_bytes()?.into()),
    ))
}

/// What tract's analysis infers of the types of the main graph's values, by
/// name, with the declared input shapes (see [`runtime::infer_types`]).
pub fn infer_types(model: &Model) -> Result<runtime::InferredTypes> {
    runtime::infer_types(&inference_bytes(model)?)
}

/// The model as `runtime::infer_types` takes it (weights as typed inputs),
/// for callers that run the inference on another thread.
pub fn inference_bytes(model: &Model) -> Result<Vec<u8>> {
    inference_bytes_of(model.clone())
}

/// [`inference_bytes`] of a model the caller hands over (a copy it made for
/// another thread): no second copy.
pub fn inference_bytes_of(model: Model) -> Result<Vec<u8>> {
    crate::onnx::encode(&weights_as_inputs(model))
}

/// Large float initializers become typed graph inputs: shape inference needs
/// their shapes, never their values (shapes are computed from integer
/// tensors), and tract then parses kilobytes instead of the whole model
/// (PP-OCRv4 rec: 47 ms → see benches/vs_onnxsim.py).
fn weights_as_inputs(mut m: Model) -> Model {
    const KEEP_BELOW: usize = 4096;
    let g = &mut m.graph;
    let weights: Vec<NodeId> = g
        .node_ids()
        .filter(|&id| !g.is_graph_input(id))
        .filter(|&id| matches!(&g.node(id).kind, NodeKind::Initializer(t) if t.dtype.is_float() && t.byte_len() >= KEEP_BELOW))
        .collect();
    for id in weights {
        let NodeKind::Initializer(t) = std::mem::replace(&mut g.node_mut(id).kind, NodeKind::Input)
        else {
            unreachable!("filtered above")
        };
        let info = ValueInfo {
            ty: Some(TypeInfo::tensor(t.dtype, &t.dims)),
            ..ValueInfo::default()
        };
        g.inputs.push(GraphInput { node: id, info });
    }
    m
}

/// An inferred type as an IR tensor type.
pub fn type_info(t: &runtime::ValueType) -> TypeInfo {
    let dim = |d: &runtime::Dim| Dim {
        value: match d {
            runtime::Dim::Fixed(n) => DimValue::Known(*n as i64),
            runtime::Dim::Symbolic(s) => DimValue::Param(s.clone()),
            runtime::Dim::Unknown => DimValue::Unknown,
        },
        denotation: None,
    };
    TypeInfo {
        kind: TypeKind::Tensor {
            elem: Some(DataType(t.elem_type.onnx_code())),
            shape: t.dims.as_ref().map(|dims| dims.iter().map(dim).collect()),
        },
        denotation: None,
    }
}

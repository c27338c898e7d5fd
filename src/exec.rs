//! The bridge from IR models to the runtimes: encode, load, run. Passes
//! that evaluate or calibrate and the CLI's verify/bench all go through here.
//! Constant folding and type inference always use tract; running a whole
//! model can use ONNX Runtime too ([`load_in`], [`load_any`]).

use crate::ir::{
    AttrValue, Attribute, DataType, Dim, DimValue, Graph, GraphInput, GraphOutput, Model, Node,
    NodeId, NodeKind, Outlet, Tensor, TensorData, TypeInfo, TypeKind, Value, ValueInfo,
};
use crate::runtime::{self, Engine, InputShapes, Runner, Sample};
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};

/// Loads a model into tract with `extra_outputs` (intermediate values)
/// exposed. Its weights are read from the input file where they still lie
/// there (`encode_for_runtime`): no encoded copy of them is made.
pub fn load(
    model: &Model,
    shapes: &InputShapes,
    extra_outputs: &[String],
) -> Result<runtime::Model> {
    let (bytes, dir) = crate::onnx::encode_for_runtime(&for_tract(model)?)?;
    runtime::Model::load_owned(bytes, dir.as_deref(), shapes, extra_outputs)
}

/// The ONNX bytes of the model tract runs (see [`for_tract`]), every
/// tensor inline, as a file holds them.
pub fn tract_bytes(model: &Model) -> Result<Vec<u8>> {
    crate::onnx::encode(&for_tract(model)?)
}

/// The inputs `model` declares (see [`runtime::declared_inputs`]).
pub fn declared_inputs(model: &Model, shapes: &InputShapes) -> Result<Vec<runtime::InputSpec>> {
    let (bytes, _) = crate::onnx::encode_for_runtime(&for_tract(model)?)?;
    runtime::declared_inputs(&bytes, shapes)
}

/// Loads a model into `engine` with `extra_outputs` exposed; `options` are
/// ONNX Runtime's session settings.
pub fn load_in(
    engine: Engine,
    model: &Model,
    shapes: &InputShapes,
    extra_outputs: &[String],
    options: &runtime::ort::Options,
) -> Result<Runner> {
    match engine {
        Engine::Tract => Ok(Runner::Tract(load(model, shapes, extra_outputs)?)),
        // ONNX Runtime takes the model as written: duplicate node names and
        // sparse initializers are fine there.
        // Its weights are read from the input file where they still lie
        // there (`encode_for_runtime`).
        Engine::Ort => {
            let (bytes, dir) = crate::onnx::encode_for_runtime(model)?;
            let load = |bytes: &[u8], dir| {
                runtime::ort::Session::load(bytes, dir, shapes, extra_outputs, options)
            };
            let session = match load(&bytes, dir.as_deref()) {
                // A reference this ONNX Runtime could not follow (one older
                // than the folder setting, a folder it refuses): the
                // weights are copied, as they always were.
                Err(_) if dir.is_some() => load(&crate::onnx::encode(model)?, None),
                other => other,
            }?;
            Ok(Runner::Ort(session))
        }
    }
}

/// Loads a model into tract, or into ONNX Runtime when tract cannot run it
/// and ONNX Runtime is installed (e.g. silero's `If` variants).
pub fn load_any(model: &Model, shapes: &InputShapes, extra_outputs: &[String]) -> Result<Runner> {
    let e = match load(model, shapes, extra_outputs) {
        Ok(m) => return Ok(Runner::Tract(m)),
        Err(e) => e,
    };
    if !runtime::refusal(&e).is_some_and(|r| r.is_tract()) || runtime::ort::environment().is_err() {
        return Err(e);
    }
    let options = runtime::ort::Options::default();
    load_in(Engine::Ort, model, shapes, extra_outputs, &options).map_err(|ort_err| {
        // Still tract's refusal (a panic stays one), with ONNX Runtime's
        // reason after tract's.
        match runtime::RuntimeError::split(e) {
            Ok((kind, why)) => kind.because(anyhow::anyhow!(
                "{why:#}; ONNX Runtime cannot run it either: {ort_err:#}"
            )),
            Err(e) => anyhow::anyhow!("{e:#}; ONNX Runtime cannot run it either: {ort_err:#}"),
        }
    })
}

/// ONNX allows several nodes of one name (silero's openvino export has 98
/// `F0::anon`); tract does not, so duplicates get a `#k` suffix. tract does
/// not read sparse initializers: they go to it dense. Defaults tract reads
/// otherwise are written out ([`spell_out_defaults`]). Only the copy handed
/// to tract changes.
fn for_tract(model: &Model) -> Result<Model> {
    let mut m = model.clone();
    let mut seen = HashSet::new();
    m.graph.visit_graphs_mut(&mut |g| {
        spell_out_defaults(g);
        let ids: Vec<NodeId> = g.node_ids().collect();
        for &id in &ids {
            if let NodeKind::SparseInitializer(sparse) = &g.node(id).kind {
                let dense = crate::onnx::densify(sparse)?;
                g.node_mut(id).kind = NodeKind::Initializer(dense);
            }
        }
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
    })?;
    Ok(m)
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
    let slots = g.inputs(id);
    let constant = |o: Outlet| {
        let slot = slots.iter().position(|s| *s == Some(o))?;
        inputs.get(slot).copied().flatten()
    };
    Ok(evaluate_nodes(model, g, &[id], &constant)?.remove(0))
}

/// Evaluates the operators `ids` of `g` (in topological order) as one tract
/// model: an input produced by one of them is wired to it, any other input
/// is the tensor `constant` gives for it. Returns, per operator, one tensor
/// per output (`None` for omitted outputs). One model for a whole constant
/// region, instead of a model per node: tract folds it operator by operator
/// as it loads it, so the values are the ones each node alone would give.
pub fn evaluate_nodes<'t>(
    model: &Model,
    g: &Graph,
    ids: &[NodeId],
    constant: &dyn Fn(Outlet) -> Option<&'t Tensor>,
) -> Result<Vec<Vec<Option<Tensor>>>> {
    let mut mini = Graph::default();
    let mut copies: HashMap<NodeId, NodeId> = HashMap::with_capacity(ids.len());
    let mut constants: HashMap<Outlet, NodeId> = HashMap::new();
    for (k, &id) in ids.iter().enumerate() {
        let node = g.node(id);
        let copy = mini.add_node(Node {
            name: node.name.clone(),
            kind: node.kind.clone(),
            // Omitted optional outputs keep their empty names.
            outputs: node
                .outputs
                .iter()
                .enumerate()
                .map(|(slot, v)| {
                    Value::named(if v.name.is_empty() {
                        String::new()
                    } else {
                        format!("n{k}_{slot}")
                    })
                })
                .collect(),
        });
        for (slot, input) in g.inputs(id).into_iter().enumerate() {
            let Some(input) = input else { continue };
            let from = match copies.get(&input.node) {
                Some(&producer) => Outlet::new(producer, input.slot),
                None => {
                    let name = format!("c{}", constants.len());
                    let c = match constants.get(&input) {
                        Some(&c) => c,
                        None => {
                            let t = constant(input).context("an input is not constant")?;
                            let c = mini.add_node(Node {
                                name: None,
                                kind: NodeKind::Initializer(t.clone()),
                                outputs: vec![Value::named(name)],
                            });
                            constants.insert(input, c);
                            c
                        }
                    };
                    Outlet::new(c, 0)
                }
            };
            mini.connect(from, copy, slot);
        }
        copies.insert(id, copy);
        for (slot, v) in node.outputs.iter().enumerate() {
            if !v.name.is_empty() {
                mini.outputs.push(GraphOutput {
                    outlet: Outlet::new(copy, slot),
                    info: ValueInfo::default(),
                });
            }
        }
    }
    let mini_model = Model {
        graph: mini,
        ..model.clone_header()
    };
    let rt = load(&mini_model, &InputShapes::new(), &[])?;
    let outputs = rt.run(&Sample::new("constants"))?;
    let mut values = outputs.iter().map(|(_, t)| from_runtime(t));
    ids.iter()
        .map(|&id| {
            g.node(id)
                .outputs
                .iter()
                .map(|v| {
                    if v.name.is_empty() {
                        Ok(None)
                    } else {
                        values.next().context("missing output")?.map(Some)
                    }
                })
                .collect()
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
pub fn inference_bytes_of(mut model: Model) -> Result<Vec<u8>> {
    model.graph.visit_graphs_mut(&mut |g| {
        spell_out_defaults(g);
        Ok(())
    })?;
    crate::onnx::encode(&weights_as_inputs(model))
}

/// Writes out the defaults tract reads differently from ONNX: a
/// ConstantOfShape without `value` makes f32 zeros in ONNX and f64 zeros in
/// tract-onnx 0.23 (`rctensor0(0.0)`), so folding it, or inferring the types
/// after it, gave f64 where the model says f32 (found by benches/fuzz.rs:
/// `fuse` then wrote a model onnx's checker refuses).
fn spell_out_defaults(g: &mut Graph) {
    let ids: Vec<NodeId> = g.node_ids().collect();
    for id in ids {
        if let NodeKind::Op(op) = &mut g.node_mut(id).kind {
            if op.is("ConstantOfShape") && op.attr("value").is_none() {
                let zero = Tensor::from_f32(vec![1], &[0.0]);
                op.set_attr(Attribute::new("value", AttrValue::Tensor(zero)));
            }
        }
    }
}

/// Large float initializers become typed graph inputs: shape inference needs
/// their shapes, never their values (shapes are computed from integer
/// tensors), and tract then parses kilobytes instead of the whole model
/// (PP-OCRv4 rec: 47 ms → see benches/vs_onnxsim.py). Small float
/// initializers (biases, BatchNorm parameters, scalars) become inputs too
/// when their values cannot reach any type: every use is by an operator
/// whose output type depends on its inputs' types only and which also reads
/// a value computed from the graph inputs, so tract never knows that
/// operator's output value either (PP-OCRv4 rec: 378 small constants parsed
/// and analysed by tract → 101).
fn weights_as_inputs(m: Model) -> Model {
    as_inputs(m, true, true)
}

/// [`weights_as_inputs`]; `small` says whether small float initializers
/// whose values reach no type become inputs too, `share` whether weights of
/// one type read one input (the test compares).
fn as_inputs(mut m: Model, small: bool, share: bool) -> Model {
    const KEEP_BELOW: usize = 4096;
    let g = &mut m.graph;
    let varying = if small {
        varying_operators(g)
    } else {
        HashSet::new()
    };
    let weights: Vec<NodeId> = g
        .node_ids()
        .filter(|&id| !g.is_graph_input(id))
        .filter(|&id| match &g.node(id).kind {
            NodeKind::Initializer(t) if t.dtype.is_float() => {
                t.byte_len() >= KEEP_BELOW || (small && only_type_blind_uses(g, id, &varying))
            }
            _ => false,
        })
        .collect();
    // One input per (element type, shape): tract reads a type from it, and
    // every weight of that type may read the same one (PP-OCRv4 rec: 304
    // weights, 40 types).
    let mut input_of: HashMap<(DataType, Vec<i64>), NodeId> = HashMap::new();
    for id in weights {
        let NodeKind::Initializer(t) = &g.node(id).kind else {
            unreachable!("filtered above")
        };
        let key = (t.dtype, t.dims.clone());
        let out = Outlet::new(id, 0);
        if let Some(&shared) = input_of.get(&key).filter(|_| share) {
            if only_plain_uses(g, out) {
                for (user, slot) in g.consumers(out) {
                    g.connect(Outlet::new(shared, 0), user, slot);
                }
                g.remove_node(id);
                continue;
            }
        }
        let NodeKind::Initializer(t) = std::mem::replace(&mut g.node_mut(id).kind, NodeKind::Input)
        else {
            unreachable!("filtered above")
        };
        let info = ValueInfo {
            ty: Some(TypeInfo::tensor(t.dtype, &t.dims)),
            ..ValueInfo::default()
        };
        g.inputs.push(GraphInput { node: id, info });
        input_of.entry(key).or_insert(id);
    }
    m
}

/// Is `out` no graph output, and read only through declared input slots of
/// operators that own no subgraph? (A value read so may come from another
/// outlet of its type.)
fn only_plain_uses(g: &Graph, out: Outlet) -> bool {
    !g.is_graph_output(out)
        && g.consumers(out).iter().all(|&(user, slot)| {
            g.op(user)
                .is_some_and(|op| !op.has_subgraphs() && slot < op.arity)
        })
}

/// Operators whose output types follow from their inputs' types alone,
/// whatever the values (elementwise arithmetic broadcasts by shape; the
/// weights of these layers are checked by shape).
const TYPE_BLIND: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Gemm",
    "MatMul",
];

/// Operators that read, directly or not, a graph input (an initializer
/// declared as an input included): tract cannot know their output values.
fn varying_operators(g: &Graph) -> HashSet<NodeId> {
    let mut varying: HashSet<NodeId> = g.inputs.iter().map(|i| i.node).collect();
    let Ok(order) = g.topo_order() else {
        return HashSet::new();
    };
    for id in order {
        if g.op(id).is_some()
            && g.inputs(id)
                .into_iter()
                .flatten()
                .chain(g.implicit_inputs(id))
                .any(|o| varying.contains(&o.node))
        {
            varying.insert(id);
        }
    }
    varying
}

/// Is every use of initializer `id` by a [`TYPE_BLIND`] operator of the
/// ONNX domain that is [`varying_operators`]? (Not a graph output.)
fn only_type_blind_uses(g: &Graph, id: NodeId, varying: &HashSet<NodeId>) -> bool {
    let out = Outlet::new(id, 0);
    let users = g.consumers(out);
    !users.is_empty()
        && !g.is_graph_output(out)
        && users.iter().all(|&(user, _)| {
            varying.contains(&user)
                && g.op(user).is_some_and(|op| {
                    op.is_default_domain()
                        && !op.has_subgraphs()
                        && TYPE_BLIND.contains(&op.op_type.as_str())
                })
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;

    /// A weight still in the mapped input file reaches the runtimes as a
    /// reference into it, and they compute what they compute from a copy;
    /// a weight the passes made, or a file replaced since, is copied.
    #[test]
    fn weights_in_the_input_file_are_passed_by_reference() {
        use crate::ir::build::ModelBuilder;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.onnx");
        let (k, n) = (1024, 512); // 2 MiB of weights: the file is mapped
        let weights: Vec<f32> = (0..k * n)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[1, k as i64]);
        let w = b.init("w", Tensor::from_f32(vec![k as i64, n as i64], &weights));
        let y = b.op("MatMul", &[x, w], vec![], "y");
        b.output(y, DataType::FLOAT);
        crate::onnx::save(&b.build().unwrap(), &path, &Default::default()).unwrap();
        let model = crate::onnx::load(&path).unwrap();

        let (bytes, folder) = crate::onnx::encode_for_runtime(&model).unwrap();
        assert!(
            bytes.len() < 4096,
            "{} bytes: the weight was copied",
            bytes.len()
        );
        assert_eq!(folder, Some(dir.path().canonicalize().unwrap()));

        let sample =
            runtime::Sample::random(&declared_inputs(&model, &InputShapes::new()).unwrap(), 0)
                .unwrap();
        let inline = runtime::Model::load(
            &crate::onnx::encode(&model).unwrap(),
            &InputShapes::new(),
            &[],
        )
        .unwrap()
        .run(&sample)
        .unwrap();
        let referenced = load(&model, &InputShapes::new(), &[])
            .unwrap()
            .run(&sample)
            .unwrap();
        assert_eq!(referenced, inline);
        if runtime::ort::environment().is_ok() {
            let ort = load_in(
                Engine::Ort,
                &model,
                &InputShapes::new(),
                &[],
                &Default::default(),
            )
            .unwrap()
            .run(&sample)
            .unwrap();
            let max = crate::runtime::compare(&ort, &inline).unwrap();
            assert!(max.iter().all(|o| o.max_rel_err < 1e-5), "{max:?}");
        }

        // A weight the passes made is not in the file.
        let mut changed = model.clone();
        let w = changed.graph.find_value("w").unwrap();
        let scaled: Vec<f32> = weights.iter().map(|v| v * 2.0).collect();
        changed.graph.node_mut(w.node).kind =
            NodeKind::Initializer(Tensor::from_f32(vec![k as i64, n as i64], &scaled));
        let (bytes, folder) = crate::onnx::encode_for_runtime(&changed).unwrap();
        assert!(bytes.len() > k * n * 4 && folder.is_none());

        // The file replaced since it was mapped: its bytes are not named.
        // (Replaced, not truncated: a mapped file truncated faults on read.)
        let other = dir.path().join("other.onnx");
        std::fs::write(&other, b"replaced").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let (bytes, folder) = crate::onnx::encode_for_runtime(&model).unwrap();
        assert!(bytes.len() > k * n * 4 && folder.is_none());
    }

    /// ONNX's ConstantOfShape without `value` makes f32 zeros; tract-onnx
    /// alone makes f64, which folding and inference then wrote into models.
    #[test]
    fn constant_of_shape_defaults_to_f32_in_folding_and_inference() {
        use crate::ir::build::ModelBuilder;
        let mut b = ModelBuilder::new(13);
        let x = b.input("x", DataType::FLOAT, &[2, 3]);
        let shape = b.init("shape", Tensor::from_i64(vec![2], &[2, 3]));
        let k = b.op("ConstantOfShape", &[shape], vec![], "k");
        let y = b.op("Add", &[x, k], vec![], "y");
        b.output(y, DataType::FLOAT);
        let m = b.build().unwrap();
        let id = m
            .graph
            .node_ids()
            .find(|&id| m.graph.node(id).outputs[0].name == "k")
            .unwrap();
        let shape_value = Tensor::from_i64(vec![2], &[2, 3]);
        let folded = evaluate_node(&m, &m.graph, id, &[Some(&shape_value)]).unwrap();
        let folded = folded[0].as_ref().unwrap();
        assert_eq!(
            (folded.dtype, folded.dims.clone()),
            (DataType::FLOAT, vec![2, 3])
        );
        let types = infer_types(&m).unwrap();
        let (_, k_type) = types
            .types
            .iter()
            .find(|(n, _)| n == "k")
            .expect("k inferred");
        assert_eq!(type_info(k_type).tensor_elem(), Some(DataType::FLOAT));
    }

    /// Every model the repo has.
    fn model_files() -> Vec<std::path::PathBuf> {
        let files = crate::onnx::tests::suite_files();
        assert!(!files.is_empty(), "no models found under models/");
        files
    }

    fn lift(m: &mut Model) {
        Pipeline::parse("lift-constants")
            .unwrap()
            .run(m, &Default::default(), &mut |_| {})
            .unwrap();
    }

    /// `why` without tract's node numbers (`node #561`).
    fn unnumbered(why: String) -> String {
        why.split("node #")
            .enumerate()
            .map(|(k, part)| match k {
                0 => part.to_string(),
                _ => part
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .to_string(),
            })
            .collect::<Vec<_>>()
            .join("node #")
    }

    /// Small float constants handed to tract as inputs, and weights of one
    /// type sharing one input, change nothing it infers, on every model the
    /// repo has (as `fuse` sees it: constants lifted).
    #[test]
    fn small_and_shared_weights_as_inputs_keep_every_inferred_type() {
        for path in model_files() {
            let mut m = crate::onnx::load(&path).unwrap();
            lift(&mut m);
            let infer = |small: bool, share: bool| {
                let bytes = crate::onnx::encode(&as_inputs(m.clone(), small, share)).unwrap();
                runtime::infer_types(&bytes).map(|r| (r.types, r.incomplete))
            };
            let plain = infer(false, false);
            for (small, share) in [(true, false), (true, true)] {
                match (&plain, infer(small, share)) {
                    (Ok((types_a, inc_a)), Ok((types_b, inc_b))) => {
                        // tract numbers its nodes: inputs and constants differ.
                        assert_eq!(
                            inc_a.clone().map(unnumbered),
                            inc_b.map(unnumbered),
                            "{}",
                            path.display()
                        );
                        // Every value's type is the same; a shared weight's
                        // own name is no longer reported (no operator output
                        // is one).
                        let a: HashMap<_, _> = types_a.iter().cloned().collect();
                        let b: HashMap<_, _> = types_b.into_iter().collect();
                        for (name, ty) in &a {
                            match b.get(name) {
                                Some(t) => assert_eq!(t, ty, "{}: {name}", path.display()),
                                None => {
                                    assert!(share, "{}: {name}", path.display());
                                    let o = m.graph.find_value(name).unwrap();
                                    assert!(
                                        matches!(
                                            m.graph.node(o.node).kind,
                                            NodeKind::Initializer(_)
                                        ),
                                        "{}: {name}",
                                        path.display()
                                    );
                                }
                            }
                        }
                        assert!(b.keys().all(|n| a.contains_key(n)), "{}", path.display());
                    }
                    (Err(a), Err(b)) => assert_eq!(format!("{a:#}"), format!("{b:#}")),
                    (a, b) => panic!("{}: {:?} vs {:?}", path.display(), a.is_ok(), b.is_ok()),
                }
            }
        }
    }
}

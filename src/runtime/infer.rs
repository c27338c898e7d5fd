//! Type and shape inference: what tract's analysis knows of every value of a
//! model, with the input shapes the file declares (nothing pinned).

use super::load::{decode_model, graph_of_mut, Dim};
use super::tensor::ElemType;
use super::{catch_tract_panic, tract_panicked, Refusal};
use anyhow::{anyhow, Result};
use std::collections::HashSet;
use tract_onnx::pb;
use tract_onnx::prelude::{InferenceFact, InferenceModelExt, TDim};
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid};

/// What inference knows of one value's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueType {
    pub elem_type: ElemType,
    /// `None`: rank unknown. A dim is [`Dim::Symbolic`] only when it is
    /// exactly a `dim_param` of a graph input (never a symbol tract made up).
    pub dims: Option<Vec<Dim>>,
}

/// The result of [`infer_types`].
#[derive(Clone, Debug, Default)]
pub struct InferredTypes {
    /// Every value of the main graph whose element type is known, by ONNX
    /// name, in file order: graph inputs, initializers, node outputs.
    pub types: Vec<(String, ValueType)>,
    /// Why the analysis stopped short, if it did: operators tract does not
    /// know, and its first failure. The types are then what it found around
    /// those nodes.
    pub incomplete: Option<String>,
    /// The analysis stopped on a panic caught inside tract (then named in
    /// `incomplete`): the model is likely malformed.
    pub tract_panicked: bool,
}

/// Infers the element type and shape of every value of the main graph of an
/// ONNX model (its bytes), by tract's analysis.
///
/// Input shapes are the declared ones: symbolic dims stay symbolic, so a dim
/// is known only when the model fixes it. Output shapes and `value_info` in
/// the file are ignored (a wrong annotation must not propagate). When the
/// analysis fails on some nodes, the types found elsewhere are still
/// returned, with the reason in [`InferredTypes::incomplete`]; an error means
/// tract could not even read the model.
///
/// Three things tract would assume that ONNX does not promise are left out:
/// nodes with subgraphs (`If`, `Loop`, `Scan`), whose outputs (and what only
/// they determine) stay unknown, since tract's `If` assumes both branches give
/// the same shape and pushes one branch's shape onto the outer graph; a
/// Squeeze without axes on a symbolic dim (see [`cut_guessed_nodes`]); and the
/// values of initializers that are also graph inputs (a caller may override
/// them), which count as inputs of their declared type. Subgraph values are
/// not reported.
pub fn infer_types(bytes: &[u8]) -> Result<InferredTypes> {
    let mut result = None;
    infer_types_then(bytes, |r| result = Some(r));
    result.expect("infer_types_then delivers once")
}

/// [`infer_types`], handing the result to `deliver` before tract's copies of
/// the model are freed: a caller waiting on another thread gets it sooner.
pub fn infer_types_then(bytes: &[u8], deliver: impl FnOnce(Result<InferredTypes>)) {
    let framework = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true);
    let mut proto = match decode_model(bytes) {
        Ok(proto) => proto,
        Err(e) => return deliver(Err(e)),
    };
    let graph = graph_of_mut(&mut proto);
    cut_guessed_nodes(graph);
    let inputs: HashSet<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    graph.initializer.retain(|t| !inputs.contains(&t.name));
    let parsed = catch_tract_panic("reading the model", || {
        framework
            .parse(&proto, None)
            .map_err(|e| Refusal::TractCannotRun.because(e))
    });
    let mut parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return deliver(Err(e)),
    };
    let graph = proto.graph.as_ref().expect("checked above");
    deliver(analyse(&framework, graph, &mut parsed));
    // `proto` and `parsed` are freed only now.
}

/// Runs tract's analysis on the parsed model; collects what it found.
fn analyse(
    framework: &tract_onnx::Onnx,
    graph: &pb::GraphProto,
    parsed: &mut tract_onnx::model::ParseResult,
) -> Result<InferredTypes> {
    let model = &mut parsed.model;
    let analysis = catch_tract_panic("analysing the model", || {
        model.analyse(true).map_err(|e| anyhow!("{e:#}"))
    });
    let panicked = analysis.as_ref().err().is_some_and(tract_panicked);
    let mut unknown_ops: Vec<&str> = graph
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .filter(|op| !framework.op_register.0.contains_key(*op))
        .collect();
    unknown_ops.sort();
    unknown_ops.dedup();
    let notes: Vec<String> = (!unknown_ops.is_empty())
        .then(|| format!("operators tract does not know: {}", unknown_ops.join(", ")))
        .into_iter()
        .chain(analysis.err().map(|e| format!("{e:#}")))
        .collect();
    let incomplete = (!notes.is_empty()).then(|| notes.join("; "));

    let declared = declared_symbols(graph);
    let unresolved: HashSet<&str> = parsed
        .unresolved_inputs
        .iter()
        .map(|s| s.as_str())
        .collect();
    let mut seen = HashSet::new();
    let mut types = vec![];
    for name in value_names(graph) {
        if name.is_empty() || unresolved.contains(name) || !seen.insert(name) {
            continue;
        }
        let Some(&outlet) = parsed.outlets_by_name.get(name) else {
            continue;
        };
        let fact = parsed.model.outlet_fact(outlet)?;
        if let Some(ty) = value_type(fact, &declared) {
            types.push((name.to_string(), ty));
        }
    }
    Ok(InferredTypes {
        types,
        incomplete,
        tract_panicked: panicked,
    })
}

/// Removes the nodes whose outputs tract would guess, and the graph outputs
/// they make: their outputs become unresolved inputs, which tract knows
/// nothing of. Those are the nodes that own subgraphs (see [`infer_types`])
/// and, when some input dim is not fixed, a Squeeze without axes: tract takes
/// a symbolic dim for one that is not 1 and keeps it, where a run with it at
/// 1 squeezes it (plcmos: `[batch, 1]` squeezed is `[]`, not `[batch]`).
fn cut_guessed_nodes(graph: &mut pb::GraphProto) {
    let has_subgraph = |n: &pb::NodeProto| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    };
    let open_inputs = has_open_input_dims(graph);
    let squeezes_all = |n: &pb::NodeProto| {
        n.op_type == "Squeeze"
            && !n.attribute.iter().any(|a| a.name == "axes")
            && n.input.get(1).is_none_or(|a| a.is_empty())
    };
    let guessed = |n: &pb::NodeProto| has_subgraph(n) || (open_inputs && squeezes_all(n));
    let cut: HashSet<String> = graph
        .node
        .iter()
        .filter(|n| guessed(n))
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    graph.node.retain(|n| !guessed(n));
    graph.output.retain(|o| !cut.contains(&o.name));
}

/// Whether a graph input (not an initializer) has a dim that is not a fixed
/// number, or no shape at all.
fn has_open_input_dims(graph: &pb::GraphProto) -> bool {
    use pb::tensor_shape_proto::dimension::Value;
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .any(|i| match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t.shape.as_ref().is_none_or(|s| {
                s.dim
                    .iter()
                    .any(|d| !matches!(d.value, Some(Value::DimValue(_))))
            }),
            _ => true,
        })
}

/// Names of the main graph's values, in file order.
fn value_names(graph: &pb::GraphProto) -> impl Iterator<Item = &str> {
    graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(
            graph
                .node
                .iter()
                .flat_map(|n| n.output.iter().map(|o| o.as_str())),
        )
}

/// The `dim_param`s of the graph inputs: the only symbols worth reporting.
fn declared_symbols(graph: &pb::GraphProto) -> HashSet<String> {
    use pb::tensor_shape_proto::dimension::Value;
    graph
        .input
        .iter()
        .filter_map(|i| match i.r#type.as_ref()?.value.as_ref()? {
            pb::type_proto::Value::TensorType(t) => t.shape.as_ref(),
        })
        .flat_map(|s| s.dim.iter())
        .filter_map(|d| match &d.value {
            Some(Value::DimParam(p)) if !p.is_empty() && p != "?" => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn value_type(fact: &InferenceFact, declared: &HashSet<String>) -> Option<ValueType> {
    let elem_type = ElemType::from_datum(fact.datum_type.concretize()?).ok()?;
    let dims = (!fact.shape.is_open()).then(|| {
        fact.shape
            .dims()
            .map(|d| match d {
                GenericFactoid::Only(d) => dim(d, declared),
                GenericFactoid::Any => Dim::Unknown,
            })
            .collect()
    });
    Some(ValueType { elem_type, dims })
}

fn dim(d: &TDim, declared: &HashSet<String>) -> Dim {
    match d {
        TDim::Sym(s) => {
            let name = s.to_string();
            if declared.contains(&name) {
                Dim::Symbolic(name)
            } else {
                Dim::Unknown
            }
        }
        _ => match d.to_i64() {
            Ok(v) if v >= 0 => Dim::Fixed(v as usize),
            _ => Dim::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn infer(g: pb::GraphProto) -> InferredTypes {
        infer_types(&encode(&model_proto(g))).unwrap()
    }

    fn type_of<'a>(r: &'a InferredTypes, name: &str) -> Option<&'a ValueType> {
        r.types.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    fn sym(s: &str) -> Dim {
        Dim::Symbolic(s.into())
    }

    #[test]
    fn mlp_keeps_the_batch_symbolic() {
        let r = infer_types(&mlp()).unwrap();
        assert!(r.incomplete.is_none(), "{:?}", r.incomplete);
        let names: Vec<&str> = r.types.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x", "W", "b", "mm", "pre", "y"]);
        let f32_of = |dims: Vec<Dim>| ValueType {
            elem_type: ElemType::F32,
            dims: Some(dims),
        };
        assert_eq!(
            type_of(&r, "x"),
            Some(&f32_of(vec![sym("batch"), Dim::Fixed(4)]))
        );
        assert_eq!(
            type_of(&r, "W"),
            Some(&f32_of(vec![Dim::Fixed(4), Dim::Fixed(3)]))
        );
        for v in ["mm", "pre", "y"] {
            assert_eq!(
                type_of(&r, v),
                Some(&f32_of(vec![sym("batch"), Dim::Fixed(3)])),
                "{v}"
            );
        }
    }

    #[test]
    fn shapes_are_int64_and_made_up_symbols_are_unknown() {
        // s = Shape(x), c = Cast(s) to f32, nz = NonZero(x), d = Concat(x, x)
        let g = graph(
            vec![
                node("Shape", &["x"], &["s"]),
                pb::NodeProto {
                    attribute: vec![pb::AttributeProto {
                        name: "to".into(),
                        r#type: 2,
                        i: FLOAT as i64,
                        ..Default::default()
                    }],
                    ..node("Cast", &["s"], &["c"])
                },
                node("NonZero", &["x"], &["nz"]),
                pb::NodeProto {
                    attribute: vec![pb::AttributeProto {
                        name: "axis".into(),
                        r#type: 2,
                        i: 0,
                        ..Default::default()
                    }],
                    ..node("Concat", &["x", "x"], &["d"])
                },
            ],
            vec![value_info("x", FLOAT, Some(&["n", "3"]))],
            vec![
                value_info("c", FLOAT, None),
                value_info("nz", INT64, None),
                value_info("d", FLOAT, None),
            ],
            vec![],
        );
        let r = infer(g);
        let s = type_of(&r, "s").unwrap();
        assert_eq!(s.elem_type, ElemType::I64);
        assert_eq!(s.dims, Some(vec![Dim::Fixed(2)]));
        assert_eq!(type_of(&r, "c").unwrap().elem_type, ElemType::F32);
        // NonZero's count is a symbol tract invents: not reported as one.
        let nz = type_of(&r, "nz").unwrap();
        assert_eq!(nz.elem_type, ElemType::I64);
        for d in nz.dims.iter().flatten() {
            assert!(!matches!(d, Dim::Symbolic(_)), "{nz:?}");
        }
        // 2*n is no dim_param of the model: unknown.
        let d = type_of(&r, "d").unwrap();
        assert_eq!(d.dims, Some(vec![Dim::Unknown, Dim::Fixed(3)]));
    }

    #[test]
    fn squeeze_without_axes_is_a_guess_only_on_symbolic_dims() {
        // y = Squeeze(x) then Relu: [n, 1] squeezes to [] when n is 1, which
        // tract would report as [n]; with x fixed at [3, 1], y is [3].
        let nodes = || {
            vec![
                node("Squeeze", &["x"], &["s"]),
                node("Relu", &["s"], &["y"]),
            ]
        };
        let outputs = || vec![value_info("y", FLOAT, None)];
        let symbolic = infer(graph(
            nodes(),
            vec![value_info("x", FLOAT, Some(&["n", "1"]))],
            outputs(),
            vec![],
        ));
        for v in ["s", "y"] {
            assert!(
                type_of(&symbolic, v).is_none_or(|t| t.dims.is_none()),
                "{v}: {:?}",
                type_of(&symbolic, v)
            );
        }
        let fixed = infer(graph(
            nodes(),
            vec![value_info("x", FLOAT, Some(&["3", "1"]))],
            outputs(),
            vec![],
        ));
        assert_eq!(
            type_of(&fixed, "y").and_then(|t| t.dims.clone()),
            Some(vec![Dim::Fixed(3)])
        );
    }

    #[test]
    fn a_failing_node_leaves_the_rest_typed() {
        let g = graph(
            vec![
                node("Relu", &["x"], &["a"]),
                node("FrobnicateX", &["a"], &["b"]),
                node("Relu", &["b"], &["c"]),
                node("Squeeze", &["x", "axes"], &["bad"]),
                node("Relu", &["x"], &["d"]),
            ],
            vec![value_info("x", FLOAT, Some(&["2"]))],
            vec![
                value_info("c", FLOAT, None),
                value_info("bad", FLOAT, None),
                value_info("d", FLOAT, None),
            ],
            vec![i64_tensor("axes", &[1], &[0])],
        );
        let r = infer(g);
        let why = r.incomplete.as_deref().unwrap_or("");
        assert!(
            why.contains("does not know: FrobnicateX") && why.contains("squeeze"),
            "{why}"
        );
        for v in ["a", "d"] {
            let t = type_of(&r, v).unwrap();
            assert_eq!(t.dims, Some(vec![Dim::Fixed(2)]), "{v}");
        }
        assert!(type_of(&r, "b").is_none());
    }

    #[test]
    fn unresolved_names_are_not_reported() {
        let g = graph(
            vec![node("Add", &["x", "ghost"], &["y"])],
            vec![value_info("x", FLOAT, Some(&["2"]))],
            vec![value_info("y", FLOAT, None)],
            vec![],
        );
        let r = infer(g);
        assert!(type_of(&r, "ghost").is_none());
        assert_eq!(type_of(&r, "x").unwrap().elem_type, ElemType::F32);
    }

    #[test]
    fn if_branches_do_not_constrain_the_outer_graph() {
        // then: Identity(x) (x of any shape); else: a constant f32[3].
        // tract's If unifies both branches, which would make x, y and z f32[3].
        let then_branch = pb::GraphProto {
            name: "then".into(),
            node: vec![node("Identity", &["x"], &["t"])],
            output: vec![value_info("t", FLOAT, None)],
            ..Default::default()
        };
        let else_branch = pb::GraphProto {
            name: "else".into(),
            node: vec![pb::NodeProto {
                attribute: vec![pb::AttributeProto {
                    name: "value".into(),
                    r#type: 4,
                    t: Some(f32_tensor("", &[3], &[1.0, 2.0, 3.0])),
                    ..Default::default()
                }],
                ..node("Constant", &[], &["e"])
            }],
            output: vec![value_info("e", FLOAT, None)],
            ..Default::default()
        };
        let g = graph(
            vec![
                node("Relu", &["x"], &["r"]),
                pb::NodeProto {
                    attribute: vec![
                        pb::AttributeProto {
                            name: "then_branch".into(),
                            r#type: 5,
                            g: Some(then_branch),
                            ..Default::default()
                        },
                        pb::AttributeProto {
                            name: "else_branch".into(),
                            r#type: 5,
                            g: Some(else_branch),
                            ..Default::default()
                        },
                    ],
                    ..node("If", &["c"], &["y"])
                },
                node("Relu", &["y"], &["z"]),
            ],
            vec![
                value_info("c", BOOL, Some(&[])),
                value_info("x", FLOAT, None),
            ],
            vec![value_info("z", FLOAT, None), value_info("r", FLOAT, None)],
            vec![],
        );
        let r = infer(g);
        assert!(type_of(&r, "y").is_none());
        for v in ["x", "r"] {
            let t = type_of(&r, v).unwrap();
            assert_eq!(t.elem_type, ElemType::F32);
            assert_eq!(t.dims, None, "{v}");
        }
        if let Some(z) = type_of(&r, "z") {
            assert_eq!(z.dims, None);
        }
    }

    #[test]
    fn overridable_initializers_are_not_constants() {
        // y = Reshape(x, shape), shape an initializer and a graph input.
        let g = graph(
            vec![node("Reshape", &["x", "shape"], &["y"])],
            vec![
                value_info("x", FLOAT, Some(&["6"])),
                value_info("shape", INT64, Some(&["2"])),
            ],
            vec![value_info("y", FLOAT, None)],
            vec![i64_tensor("shape", &[2], &[2, 3])],
        );
        let r = infer(g);
        let y = type_of(&r, "y").unwrap();
        assert!(y.dims.iter().flatten().all(|d| *d == Dim::Unknown), "{y:?}");
        // A plain initializer is a constant.
        let g = graph(
            vec![node("Reshape", &["x", "shape"], &["y"])],
            vec![value_info("x", FLOAT, Some(&["6"]))],
            vec![value_info("y", FLOAT, None)],
            vec![i64_tensor("shape", &[2], &[2, 3])],
        );
        let y = type_of(&infer(g), "y").unwrap().clone();
        assert_eq!(y.dims, Some(vec![Dim::Fixed(2), Dim::Fixed(3)]));
    }

    #[test]
    fn garbage_is_an_error() {
        let e = infer_types(b"not a model").unwrap_err();
        assert!(format!("{e:#}").contains("not a valid ONNX model"), "{e:#}");
    }
}
